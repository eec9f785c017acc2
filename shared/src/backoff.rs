//! Exponential backoff with jitter, validated at construction: `Backoff::new` (factor 2, a
//! random share of up to `jitter` taken off) and `Backoff::exponential` (any factor, `±jitter`
//! around the delay: the retry policies of issue 11, e.g. print jobs 1 s × 2 up to 300 s ± 25 %).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Fraction of the delay that is randomised, 0.0..=1.0.
    jitter: f64,
    /// Growth per attempt (≥ 1.0).
    factor: f64,
    /// `±jitter` around the delay (true) or up to `jitter` taken off (false).
    symmetric: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackoffError {
    #[error("backoff minimum {min:?} is greater than maximum {max:?}")]
    MinAboveMax { min: Duration, max: Duration },
    #[error("backoff minimum must be greater than zero")]
    ZeroMin,
    #[error("backoff jitter {0} is outside 0.0..=1.0")]
    Jitter(f64),
    #[error("backoff factor {0} is outside 1.0..=10.0")]
    Factor(f64),
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
        Ok(Self { min, max, jitter, factor: 2.0, symmetric: false })
    }

    /// `first`·`factor`^(attempt−1), capped at `max`, then `±jitter` of it at random (never
    /// above `max`, never below `first`·(1−jitter)).
    pub fn exponential(first: Duration, factor: f64, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if !(1.0..=10.0).contains(&factor) {
            return Err(BackoffError::Factor(factor));
        }
        let b = Self::new(first, max, jitter)?;
        Ok(Self { factor, symmetric: true, ..b })
    }

    /// Delay before retry number `attempt` (1 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }

    /// [`delay`](Self::delay) with the random draw `u` in 0.0..1.0 given (tests, benchmarks).
    pub fn delay_with(&self, attempt: u32, u: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(60) as i32;
        let grown = self.min.as_secs_f64() * self.factor.powi(exp);
        let base =
            if grown.is_finite() && grown < self.max.as_secs_f64() { Duration::from_secs_f64(grown) } else { self.max };
        if self.jitter == 0.0 {
            return base;
        }
        if self.symmetric {
            let spread = (u * 2.0 - 1.0) * self.jitter;
            return base.mul_f64(1.0 + spread).min(self.max).max(self.min.mul_f64(1.0 - self.jitter));
        }
        let cut = u * self.jitter;
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

    #[test]
    fn exponential_follows_its_factor_with_symmetric_jitter() {
        // Print jobs: 1 s, × 2, at most 300 s, ± 25 %.
        let p = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(300), 0.25).unwrap();
        assert_eq!(p.delay_with(1, 0.5), Duration::from_secs(1));
        assert_eq!(p.delay_with(4, 0.5), Duration::from_secs(8));
        assert_eq!(p.delay_with(1, 0.0), Duration::from_millis(750));
        assert_eq!(p.delay_with(3, 0.999_999).as_millis(), 4_999);
        assert_eq!(p.delay_with(30, 0.5), Duration::from_secs(300));
        assert_eq!(p.delay_with(30, 0.99), Duration::from_secs(300), "never above the maximum");
        assert_eq!(p.delay_with(30, 0.0), Duration::from_secs(225));
        // Wix API: 0.5 s, × 1.5, at most 60 s, ± 20 %.
        let w = Backoff::exponential(Duration::from_millis(500), 1.5, Duration::from_secs(60), 0.2).unwrap();
        assert_eq!(w.delay_with(3, 0.5), Duration::from_millis(1125));
        assert_eq!(w.delay_with(u32::MAX, 0.5), Duration::from_secs(60));
        assert_eq!(
            Backoff::exponential(Duration::from_secs(1), 0.5, Duration::from_secs(2), 0.1),
            Err(BackoffError::Factor(0.5))
        );
    }
}
