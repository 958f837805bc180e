//! When to retry a failed call and how long to wait, as the official SDKs do.
//!
//! The order of authority: a quota, spend-limit or auth failure is never retried; otherwise an
//! `x-should-retry` header decides; otherwise the error's kind does (408, 409, 429, 5xx, 529,
//! connection failures, timeouts, broken streams). The wait is the server's `retry-after-ms`,
//! else its `retry-after` (seconds or an HTTP date) when that is in (0, 60] seconds, else an
//! exponential backoff from `initial` doubling up to `max`, shortened by up to a quarter at
//! random so that many clients do not retry in step.

use std::time::{Duration, SystemTime};

use missions_core::model::ModelError;
use reqwest::header::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 2, initial: Duration::from_millis(500), max: Duration::from_secs(8) }
    }
}

/// What the server said about retrying, read from the response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryHints {
    pub should_retry: Option<bool>,
    pub retry_after: Option<Duration>,
}

impl RetryHints {
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> RetryHints {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let should_retry = match header("x-should-retry") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let retry_after = header("retry-after-ms")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .or_else(|| header("retry-after").and_then(|v| parse_retry_after(v, now)))
            .filter(|d| *d > Duration::ZERO && *d <= Duration::from_secs(60));
        RetryHints { should_retry, retry_after }
    }
}

/// `retry-after` is either a number of seconds or an HTTP date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    date.duration_since(now).ok()
}

impl RetryPolicy {
    /// Whether to try again after failing attempt number `attempt` (1-based), and after how
    /// long. `None` means give up and return the error.
    pub fn next_delay(&self, attempt: u32, error: &ModelError, hints: RetryHints) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        let never = matches!(error, ModelError::QuotaExhausted { .. } | ModelError::Auth { .. });
        let retry = !never && hints.should_retry.unwrap_or_else(|| error.is_retryable());
        if !retry {
            return None;
        }
        if let Some(after) = hints.retry_after {
            return Some(after);
        }
        Some(self.backoff(attempt))
    }

    /// Exponential backoff for the retry after attempt `attempt`, with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1));
        let base = self.initial.saturating_mul(doubling).min(self.max);
        base.mul_f64(1.0 - 0.25 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn hints(pairs: &[(&str, &str)]) -> RetryHints {
        RetryHints::from_headers(&headers(pairs), SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    #[test]
    fn retry_after_ms_wins_then_retry_after_seconds_then_date() {
        assert_eq!(
            hints(&[("retry-after-ms", "250"), ("retry-after", "3")]).retry_after,
            Some(Duration::from_millis(250))
        );
        assert_eq!(hints(&[("retry-after", "3")]).retry_after, Some(Duration::from_secs(3)));
        assert_eq!(hints(&[("retry-after", "1.5")]).retry_after, Some(Duration::from_millis(1500)));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            hints(&[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")]).retry_after,
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn retry_after_outside_zero_to_sixty_seconds_is_ignored() {
        assert_eq!(hints(&[("retry-after", "0")]).retry_after, None);
        assert_eq!(hints(&[("retry-after", "61")]).retry_after, None);
        assert_eq!(hints(&[("retry-after", "-1")]).retry_after, None);
        assert_eq!(hints(&[("retry-after", "soon")]).retry_after, None);
        assert_eq!(hints(&[("retry-after", "Tue, 14 Nov 2023 22:13:00 GMT")]).retry_after, None, "a date in the past");
    }

    #[test]
    fn x_should_retry_overrides_the_status_but_never_quota_or_auth() {
        let policy = RetryPolicy::default();
        let bad_request = ModelError::InvalidRequest { status: 400, message: "x".into() };
        let overloaded = ModelError::Overloaded { message: "x".into() };
        assert!(policy.next_delay(1, &bad_request, hints(&[])).is_none());
        assert!(policy.next_delay(1, &bad_request, hints(&[("x-should-retry", "true")])).is_some());
        assert!(policy.next_delay(1, &overloaded, hints(&[])).is_some());
        assert!(policy.next_delay(1, &overloaded, hints(&[("x-should-retry", "false")])).is_none());
        let quota = ModelError::QuotaExhausted { message: "x".into() };
        let auth = ModelError::Auth { status: 401, message: "x".into() };
        assert!(policy.next_delay(1, &quota, hints(&[("x-should-retry", "true")])).is_none());
        assert!(policy.next_delay(1, &auth, hints(&[("x-should-retry", "true")])).is_none());
    }

    #[test]
    fn attempts_are_bounded_and_backoff_doubles_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let overloaded = ModelError::Overloaded { message: "x".into() };
        assert!(policy.next_delay(2, &overloaded, RetryHints::default()).is_some());
        assert!(policy.next_delay(3, &overloaded, RetryHints::default()).is_none());
        for (attempt, base_ms) in [(1u32, 500u64), (2, 1000), (3, 2000), (4, 4000), (5, 8000), (9, 8000)] {
            for _ in 0..50 {
                let delay = policy.backoff(attempt);
                let base = Duration::from_millis(base_ms);
                assert!(delay <= base && delay >= base.mul_f64(0.75), "attempt {attempt}: {delay:?}");
            }
        }
    }
}
