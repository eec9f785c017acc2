//! Wall-clock helpers. Stored times are Unix milliseconds (INTEGER columns); the API shows
//! them as `google.protobuf.Timestamp`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// `Some(timestamp)` for a set time, `None` for 0 / NULL.
pub fn opt_timestamp(ms: Option<i64>) -> Option<prost_types::Timestamp> {
    ms.filter(|&m| m > 0).map(timestamp_from_ms)
}

pub fn ms_from_timestamp(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}
