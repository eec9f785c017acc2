//! Wall-clock helpers. Stored times are Unix milliseconds (INTEGER columns); the API shows
//! them as `google.protobuf.Timestamp`.
//!
//! Every seconds → milliseconds conversion is checked: a `Timestamp` whose milliseconds do not
//! fit an `i64` (seconds = `i64::MAX`) or that lies outside the years -9999..=9999 (what `jiff`,
//! and a ticket, can show) is an error from [`try_ms_from_timestamp`], in debug and release
//! builds alike. The edges (`SubmitOrder`, the Wix mapping, `SubmitLocalOrder`) refuse such a
//! time with [`TimeError`]; code behind them may use the saturating [`ms_from_timestamp`].
//!
//! Wall-clock time is for what is shown and stored. Deadlines and timeouts are measured with a
//! monotonic clock (`tokio::time::Instant`); a stored wall-clock deadline is only a hint (see
//! wix-ingest's outbox and held events), because a Raspberry Pi without a real-time clock steps
//! its wall clock at boot.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 before 1970, `i64::MAX` past year 292 million).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// A `Duration` in whole milliseconds as `i64`, saturating (never wraps).
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// `Some(timestamp)` for a set time, `None` for 0 / NULL.
pub fn opt_timestamp(ms: Option<i64>) -> Option<prost_types::Timestamp> {
    ms.filter(|&m| m > 0).map(timestamp_from_ms)
}

/// Why a `google.protobuf.Timestamp` is not a usable time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("nanos {nanos} is outside 0..=999999999")]
    Nanos { nanos: i32 },
    #[error("seconds {seconds} is outside the years -9999..=9999 (milliseconds would overflow or no date can show it)")]
    OutOfRange { seconds: i64 },
}

/// Milliseconds of a timestamp, or why it has none: nanos outside `0..1e9`, or an instant
/// outside what `jiff` can represent (years -9999..=9999), which also keeps the milliseconds
/// far from `i64` overflow. Checked arithmetic, so no panic and no wrap in any build.
pub fn try_ms_from_timestamp(ts: &prost_types::Timestamp) -> Result<i64, TimeError> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(TimeError::Nanos { nanos: ts.nanos });
    }
    let out_of_range = TimeError::OutOfRange { seconds: ts.seconds };
    jiff::Timestamp::new(ts.seconds, ts.nanos).map_err(|_| out_of_range.clone())?;
    ts.seconds.checked_mul(1000).and_then(|ms| ms.checked_add(i64::from(ts.nanos) / 1_000_000)).ok_or(out_of_range)
}

/// Milliseconds of a timestamp already checked at the edge ([`try_ms_from_timestamp`]);
/// saturates instead of overflowing for one that was not (never panics, never wraps).
pub fn ms_from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    try_ms_from_timestamp(ts).unwrap_or_else(|_| {
        ts.seconds.saturating_mul(1000).saturating_add(i64::from(ts.nanos.clamp(0, 999_999_999)) / 1_000_000)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    #[test]
    fn milliseconds_round_trip_and_overflow_is_an_error_not_a_panic() {
        let ts = Timestamp { seconds: 1_758_738_240, nanos: 123_456_789 };
        assert_eq!(try_ms_from_timestamp(&ts), Ok(1_758_738_240_123));
        assert_eq!(timestamp_from_ms(-1), Timestamp { seconds: -1, nanos: 999_000_000 });
        assert_eq!(try_ms_from_timestamp(&timestamp_from_ms(-1)), Ok(-1));
        for seconds in [i64::MAX, i64::MIN, i64::MAX / 1000 + 1, 253_402_300_800] {
            let ts = Timestamp { seconds, nanos: 0 };
            assert_eq!(try_ms_from_timestamp(&ts), Err(TimeError::OutOfRange { seconds }), "{seconds}");
            let saturated = ms_from_timestamp(&ts);
            assert_eq!(saturated.signum(), seconds.signum(), "saturates, never wraps: {seconds}");
        }
        assert_eq!(ms_from_timestamp(&Timestamp { seconds: i64::MAX, nanos: 999_999_999 }), i64::MAX);
        assert_eq!(try_ms_from_timestamp(&Timestamp { seconds: 0, nanos: -1 }), Err(TimeError::Nanos { nanos: -1 }));
        assert!(TimeError::OutOfRange { seconds: i64::MAX }.to_string().contains("9223372036854775807"));
        // The last second jiff can show (late on 9999-12-30 UTC) is fine.
        let last = jiff::Timestamp::MAX.as_second();
        assert_eq!(try_ms_from_timestamp(&Timestamp { seconds: last, nanos: 0 }), Ok(last * 1000));
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_ms(std::time::Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(std::time::Duration::MAX), i64::MAX);
        assert!(now_ms() > 1_600_000_000_000);
    }
}
