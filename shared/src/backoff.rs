//! Exponential backoff with full jitter, validated at construction.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Fraction of the delay that is randomised, 0.0..=1.0.
    jitter: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackoffError {
    #[error("backoff minimum {min:?} is greater than maximum {max:?}")]
    MinAboveMax { min: Duration, max: Duration },
    #[error("backoff minimum must be greater than zero")]
    ZeroMin,
    #[error("backoff jitter {0} is outside 0.0..=1.0")]
    Jitter(f64),
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if min.is_zero() {
            return Err(BackoffError::ZeroMin);
        }
        if min > max {
            return Err(BackoffError::MinAboveMax { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::Jitter(jitter));
        }
        Ok(Self { min, max, jitter })
    }

    /// Delay before retry number `attempt` (1 = first retry): min·2^(attempt-1), capped at max,
    /// minus a random share of up to `jitter` of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let cut = rand::random::<f64>() * self.jitter;
        base.mul_f64(1.0 - cut).max(self.min.min(base))
    }

    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_min_above_max() {
        assert!(matches!(
            Backoff::new(Duration::from_secs(2), Duration::from_secs(1), 0.1),
            Err(BackoffError::MinAboveMax { .. })
        ));
        assert_eq!(Backoff::new(Duration::from_secs(1), Duration::from_secs(2), 1.5), Err(BackoffError::Jitter(1.5)));
    }

    #[test]
    fn grows_exponentially_and_stays_within_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 0.0).unwrap();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(3), Duration::from_millis(400));
        assert_eq!(b.delay(60), Duration::from_secs(2));
        let j = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 0.5).unwrap();
        for a in 1..20 {
            let d = j.delay(a);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(2), "{d:?}");
        }
    }
}
