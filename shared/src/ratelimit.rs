//! Log lines that an attacker can provoke (refused webhooks, refused gRPC calls) are
//! rate-limited: at most `per_window` lines per window, then one line saying further ones are
//! suppressed, and the count of suppressed ones on the first line of the next window. A flood
//! of forged requests costs a bounded number of journal lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the caller should do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDecision {
    /// Log it; `suppressed` events of the previous window were not logged (0 when none).
    Log { suppressed: u64 },
    /// Log it, and say that further events of this window are suppressed.
    LogLast,
    /// Do not log it (counted).
    Suppress,
}

#[derive(Debug)]
struct State {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
    carried: u64,
}

/// A fixed-window limiter of log lines; cheap, shared by reference.
#[derive(Debug)]
pub struct LogLimiter {
    per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

impl LogLimiter {
    /// At most `per_window` lines (at least 1) per `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window: per_window.max(1),
            window,
            state: Mutex::new(State { window_start: Instant::now(), logged: 0, suppressed: 0, carried: 0 }),
        }
    }

    /// Ten lines a minute: the default for refusals.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(per_minute, Duration::from_secs(60))
    }

    pub fn check(&self) -> LogDecision {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> LogDecision {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(s.window_start) >= self.window {
            s.carried += s.suppressed;
            s.window_start = now;
            s.logged = 0;
            s.suppressed = 0;
        }
        if s.logged < self.per_window {
            s.logged += 1;
            if s.logged == self.per_window {
                return LogDecision::LogLast;
            }
            let suppressed = std::mem::take(&mut s.carried);
            return LogDecision::Log { suppressed };
        }
        s.suppressed += 1;
        LogDecision::Suppress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_a_bounded_number_of_lines_and_the_next_window_reports_the_rest() {
        let l = LogLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let decisions: Vec<_> = (0..1000).map(|_| l.check_at(t0)).collect();
        assert_eq!(
            decisions[..3],
            [LogDecision::Log { suppressed: 0 }, LogDecision::Log { suppressed: 0 }, LogDecision::LogLast]
        );
        assert!(decisions[3..].iter().all(|d| *d == LogDecision::Suppress));
        assert_eq!(l.check_at(t0 + Duration::from_secs(61)), LogDecision::Log { suppressed: 997 });
        assert_eq!(l.check_at(t0 + Duration::from_secs(61)), LogDecision::Log { suppressed: 0 });
    }
}
