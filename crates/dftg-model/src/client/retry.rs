//! Retry policy: capped exponential backoff with full jitter, and `Retry-After`.

use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Attempts per request at most, whatever the policy says: a hostile or mistyped
/// `max_attempts = 4294967295` must not retry for ever.
pub const MAX_ATTEMPTS: u32 = 10;

/// How often and how patiently a failed request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (0 is treated as 1, more than [`MAX_ATTEMPTS`]
    /// as [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Backoff ceiling for the first retry; doubles per attempt.
    pub base_delay: Duration,
    /// No wait is longer than this, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.max_attempts.clamp(1, MAX_ATTEMPTS)
    }

    /// The wait after failed attempt `failed` (1-based). A server's `Retry-After` wins (capped);
    /// otherwise full jitter: uniform in `[0, min(max_delay, base_delay * 2^(failed-1))]`, so
    /// many workers that failed together do not retry together.
    pub(crate) fn delay<R: Rng>(&self, failed: u32, retry_after: Option<Duration>, rng: &mut R) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exp = failed.saturating_sub(1).min(31);
        let ceiling = self.base_delay.checked_mul(1u32 << exp).unwrap_or(self.max_delay).min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }
}

/// The jitter source shared by all callers of one client.
pub(crate) struct Jitter(Mutex<ChaCha8Rng>);

impl Jitter {
    /// A fixed seed makes tests reproducible; without one, entropy, because workers sharing a
    /// seed would retry in lockstep and defeat the jitter.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_entropy(),
        };
        Jitter(Mutex::new(rng))
    }

    pub(crate) fn delay(&self, policy: &RetryPolicy, failed: u32, retry_after: Option<Duration>) -> Duration {
        // A panic while holding this lock cannot leave the RNG invalid, so poisoning is ignored.
        let mut rng = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        policy.delay(failed, retry_after, &mut *rng)
    }
}

/// `Retry-After` in seconds (integer or decimal). HTTP dates are ignored: model servers send
/// seconds, and a date would need a trusted clock.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) }
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_cap() {
        let p = policy();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for failed in 1..=40u32 {
            let cap = (Duration::from_millis(100) * 2u32.pow(failed.saturating_sub(1).min(20))).min(p.max_delay);
            for _ in 0..50 {
                assert!(p.delay(failed, None, &mut rng) <= cap, "attempt {failed}");
            }
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_range() {
        let p = policy();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(5, None, &mut rng)).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_millis(300)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(700)));
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(p.delay(1, Some(Duration::from_millis(700)), &mut rng), Duration::from_millis(700));
        assert_eq!(p.delay(1, Some(Duration::from_secs(120)), &mut rng), Duration::from_secs(1));
        assert_eq!(p.delay(1, Some(Duration::ZERO), &mut rng), Duration::ZERO);
    }

    #[test]
    fn zero_base_delay_means_no_wait() {
        let p = RetryPolicy { base_delay: Duration::ZERO, ..policy() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(p.delay(3, None, &mut rng), Duration::ZERO);
    }

    #[test]
    fn same_seed_same_delays() {
        let p = policy();
        let a = Jitter::new(Some(42));
        let b = Jitter::new(Some(42));
        for failed in 1..6 {
            assert_eq!(a.delay(&p, failed, None), b.delay(&p, failed, None));
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1e400"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn zero_attempts_means_one_and_attempts_are_capped() {
        assert_eq!(RetryPolicy { max_attempts: 0, ..policy() }.attempts(), 1);
        assert_eq!(RetryPolicy { max_attempts: u32::MAX, ..policy() }.attempts(), MAX_ATTEMPTS);
    }

    #[test]
    fn hostile_delays_do_not_panic() {
        let p = RetryPolicy { max_attempts: u32::MAX, base_delay: Duration::MAX, max_delay: Duration::MAX };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for failed in [0, 1, 31, 32, 64, u32::MAX] {
            let _ = p.delay(failed, None, &mut rng);
            assert_eq!(p.delay(failed, Some(Duration::MAX), &mut rng), Duration::MAX);
        }
    }
}
