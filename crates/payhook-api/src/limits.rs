//! Per-caller rate limits: a GCRA bucket (the `governor` crate) per merchant — shared by its
//! API keys — and one for the admin token, checked right after authentication. Over the limit
//! the answer is 429 `rate_limited` with `Retry-After`. Keys are authenticated identities, so
//! the table is bounded by the number of merchants; unauthenticated requests are refused (401)
//! before they reach it, and public routes are not limited (per-address limits belong to the
//! reverse proxy in front).

use crate::auth::Caller;
use crate::error::ApiError;
use axum::http::StatusCode;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;

/// Sustained requests per second, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` requests a second with bursts of `burst`; `None` when `per_second` is 0
    /// (no limit). A `burst` of 0 means twice the rate.
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(per_second)?;
        let twice = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let burst = NonZeroU32::new(burst).unwrap_or(twice);
        Some(RateLimit { per_second, burst })
    }

    fn limiter(self) -> DefaultKeyedRateLimiter<String> {
        DefaultKeyedRateLimiter::keyed(Quota::per_second(self.per_second).allow_burst(self.burst))
    }
}

/// The limiters of one API node.
pub struct RateLimits {
    merchants: Option<DefaultKeyedRateLimiter<String>>,
    admin: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    pub fn new(merchants: Option<RateLimit>, admin: Option<RateLimit>) -> RateLimits {
        RateLimits {
            merchants: merchants.map(RateLimit::limiter),
            admin: admin.map(RateLimit::limiter),
        }
    }

    pub fn unlimited() -> RateLimits {
        RateLimits::new(None, None)
    }

    /// Counts one request of `caller`; 429 when over its limit.
    pub fn check(&self, caller: &Caller) -> Result<(), ApiError> {
        let (limiter, key) = match caller {
            Caller::Admin => (&self.admin, "admin".to_owned()),
            Caller::Merchant(m) => (&self.merchants, m.to_string()),
        };
        let Some(limiter) = limiter else { return Ok(()) };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this token: slow down and retry after the given seconds",
            )
            .with_retry_after(secs.max(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_429_with_retry_after_and_other_callers_are_unaffected() {
        let limits = RateLimits::new(RateLimit::new(1, 3), None);
        let a = Caller::Merchant("mer_a".parse().expect("id"));
        let b = Caller::Merchant("mer_b".parse().expect("id"));
        for _ in 0..3 {
            assert!(limits.check(&a).is_ok());
        }
        let e = limits.check(&a).expect_err("over the burst");
        assert_eq!((e.status.as_u16(), e.code, e.retry_after), (429, "rate_limited", Some(1)));
        assert!(limits.check(&b).is_ok(), "each merchant has its own bucket");
        for _ in 0..100 {
            assert!(limits.check(&Caller::Admin).is_ok(), "the admin is not limited here");
        }
    }

    #[test]
    fn zero_means_no_limit_and_burst_defaults_to_twice_the_rate() {
        assert_eq!(RateLimit::new(0, 5), None);
        let l = RateLimit::new(10, 0).expect("limit");
        assert_eq!((l.per_second.get(), l.burst.get()), (10, 20));
    }
}
