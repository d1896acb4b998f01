//! One service's request discipline, for every HTTP client (model, judge, writer, detector):
//! bounded in-flight attempts, a timeout per attempt, a time budget per request, retries of
//! transient failures with the shared [`RetryPolicy`] and full jitter.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

pub(crate) use super::retry::parse_retry_after;
use super::retry::{Jitter, RetryPolicy};
use super::ModelError;

/// A request's time budget: the configured one, else [`super::DEFAULT_BUDGET_TIMEOUTS`] request
/// timeouts; `None` when that overflows.
pub(crate) fn request_budget(configured: Option<Duration>, request_timeout: Duration) -> Option<Duration> {
    configured.or_else(|| request_timeout.checked_mul(super::DEFAULT_BUDGET_TIMEOUTS))
}

/// Runs requests to one service. Shared by all callers of that service's client.
pub(crate) struct Caller {
    /// One permit per attempt in flight; never held across a backoff sleep.
    slots: Semaphore,
    max_in_flight: usize,
    retry: RetryPolicy,
    jitter: Jitter,
    request_timeout: Duration,
    budget: Option<Duration>,
}

impl Caller {
    /// `budget`: over all attempts and waits of one request, counted from the moment its first
    /// attempt gets a slot (queueing for a slot is not the service's fault); `None`: no budget.
    /// `max_in_flight` must be in `1..=Semaphore::MAX_PERMITS` (checked by the configs).
    pub(crate) fn new(
        max_in_flight: usize,
        retry: RetryPolicy,
        jitter_seed: Option<u64>,
        request_timeout: Duration,
        budget: Option<Duration>,
    ) -> Self {
        Caller { slots: Semaphore::new(max_in_flight), max_in_flight, retry, jitter: Jitter::new(jitter_seed), request_timeout, budget }
    }

    /// The time budget of one request, if any.
    #[cfg(test)]
    pub(crate) fn budget(&self) -> Option<Duration> {
        self.budget
    }

    /// Attempts in flight right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.slots.available_permits())
    }

    /// Runs `attempt(timeout)` while holding a slot, until it succeeds, fails for good, or
    /// the policy's attempts or the budget run out. Returns the value and the attempts used;
    /// an error carries the attempts too. `what` names the service in messages.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<(T, u32), ModelError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let max_attempts = self.retry.attempts();
        let mut deadline: Option<Instant> = None;
        let mut n: u32 = 0;
        loop {
            n += 1;
            let result = {
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| ModelError::unreachable(format!("client for {what} is closed")).with_attempts(n))?;
                let now = Instant::now();
                if n == 1 {
                    deadline = self.budget.and_then(|b| now.checked_add(b));
                }
                let timeout = match deadline {
                    Some(d) => d.saturating_duration_since(now).min(self.request_timeout),
                    None => self.request_timeout,
                };
                if timeout.is_zero() {
                    Err(ModelError::timeout(format!("request budget for {what} spent before attempt {n}")))
                } else {
                    attempt(timeout).await
                }
            };
            let e = match result {
                Ok(value) => return Ok((value, n)),
                Err(e) => e,
            };
            if !e.retryable() || n >= max_attempts {
                tracing::warn!(service = what, reason = e.reason(), error = %e.message(), attempts = n, "request failed");
                return Err(e.with_attempts(n));
            }
            let delay = self.jitter.delay(&self.retry, n, e.retry_after());
            if deadline.is_some_and(|d| Instant::now().checked_add(delay).is_none_or(|at| at >= d)) {
                tracing::warn!(service = what, reason = e.reason(), attempts = n, "request failed, budget spent");
                return Err(e.with_attempts(n).with_note("request budget spent"));
            }
            tracing::debug!(service = what, attempt = n, reason = e.reason(), delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::client::ModelErrorKind;

    fn caller(max_attempts: u32, budget: Option<Duration>) -> Caller {
        let retry = RetryPolicy { max_attempts, base_delay: Duration::ZERO, max_delay: Duration::ZERO };
        Caller::new(2, retry, Some(1), Duration::from_secs(5), budget)
    }

    /// Fails with `errors` in order, then succeeds with the attempt number.
    async fn run(c: &Caller, errors: Vec<ModelError>) -> (Result<(u32, u32), ModelError>, u32) {
        let calls = Arc::new(AtomicU32::new(0));
        let result = c
            .call("test service", |_timeout| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let outcome = errors.get(n as usize).cloned();
                async move {
                    match outcome {
                        Some(e) => Err(e),
                        None => Ok(n + 1),
                    }
                }
            })
            .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_counted() {
        let c = caller(4, None);
        let (r, calls) = run(&c, vec![ModelError::http_5xx(503, "busy"), ModelError::timeout("slow")]).await;
        assert_eq!(r.unwrap(), (3, 3));
        assert_eq!(calls, 3);
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let c = caller(4, None);
        let (r, calls) = run(&c, vec![ModelError::rejected("bad image")]).await;
        let e = r.unwrap_err();
        assert_eq!((e.kind(), e.attempts(), calls), (ModelErrorKind::Rejected, 1, 1));
    }

    #[tokio::test]
    async fn attempts_stop_at_the_policy() {
        let c = caller(2, None);
        let (r, calls) = run(&c, vec![ModelError::malformed("x"); 5]).await;
        let e = r.unwrap_err();
        assert_eq!((e.kind(), e.attempts(), calls), (ModelErrorKind::MalformedResponse, 2, 2));
    }

    #[tokio::test]
    async fn a_spent_budget_stops_retries() {
        // a retry-after longer than the budget: the wait would end past the deadline
        let retry = RetryPolicy { max_attempts: 5, base_delay: Duration::ZERO, max_delay: Duration::from_secs(60) };
        let c = Caller::new(1, retry, Some(1), Duration::from_secs(5), Some(Duration::from_secs(1)));
        let wait = ModelError::rate_limited("slow down").with_retry_after(Some(Duration::from_secs(30)));
        let (r, calls) = run(&c, vec![wait; 5]).await;
        let e = r.unwrap_err();
        assert_eq!((e.kind(), e.attempts(), calls), (ModelErrorKind::RateLimited, 1, 1));
        assert!(e.message().ends_with("request budget spent"), "{}", e.message());
    }

    #[tokio::test]
    async fn attempt_timeouts_never_exceed_the_budget_or_the_request_timeout() {
        let c = Caller::new(1, RetryPolicy::none(), None, Duration::from_secs(5), Some(Duration::from_secs(2)));
        let (seen, _) = c.call("t", |timeout| async move { Ok::<_, ModelError>(timeout) }).await.unwrap();
        assert!(seen <= Duration::from_secs(2) && seen > Duration::from_secs(1), "{seen:?}");
        let c = Caller::new(1, RetryPolicy::none(), None, Duration::from_secs(5), None);
        let (seen, _) = c.call("t", |timeout| async move { Ok::<_, ModelError>(timeout) }).await.unwrap();
        assert_eq!(seen, Duration::from_secs(5));
    }
}
