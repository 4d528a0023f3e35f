//! Retry policies: how long to wait after each failed attempt, and when to stop.
//!
//! A policy is a list of delays, one per retry after the first attempt, and a jitter fraction.
//! Merchants write it as `{"schedule":["5s","5m"]}` or `{"interval":"500ms","max_attempts":10}`
//! (humantime durations), optionally with `"jitter": 0.2`. The arithmetic takes `now` and a
//! jitter sample from the caller, so it is deterministic under test.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Upper bounds that keep a policy sane: a merchant cannot schedule a million retries or a
/// retry next year.
pub const MAX_RETRIES: usize = 1_000;
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_JITTER: f64 = 0.5;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before retry *n* (index 0 is the wait after the first attempt).
    pub delays: Vec<Duration>,
    /// Each delay is stretched by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error(
        "retry policy must be {{\"schedule\":[…]}} or {{\"interval\":…,\"max_attempts\":…}}: {0}"
    )]
    Shape(String),
    #[error("invalid duration {0:?} (use humantime form such as \"500ms\", \"5m\", \"2h\")")]
    Duration(String),
    #[error("retry policy is out of bounds: {0}")]
    Bounds(&'static str),
}

/// The JSON forms merchants write.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Wire {
    Schedule {
        schedule: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jitter: Option<f64>,
    },
    Interval {
        interval: String,
        max_attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jitter: Option<f64>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, RetryPolicyError> {
    humantime::parse_duration(s).map_err(|_| RetryPolicyError::Duration(s.to_owned()))
}

impl RetryPolicy {
    /// A fixed schedule without jitter.
    pub fn fixed(delays: Vec<Duration>) -> Self {
        RetryPolicy { delays, jitter: 0.0 }
    }

    /// `count` retries, `interval` apart.
    pub fn every(interval: Duration, count: usize) -> Self {
        RetryPolicy::fixed(vec![interval; count])
    }

    /// Total attempts, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// Parses a merchant's JSON policy and checks its bounds.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, RetryPolicyError> {
        let wire: Wire = serde_json::from_value(value.clone())
            .map_err(|e| RetryPolicyError::Shape(e.to_string()))?;
        let policy = match wire {
            Wire::Schedule { schedule, jitter } => RetryPolicy {
                delays: schedule.iter().map(|s| parse_duration(s)).collect::<Result<_, _>>()?,
                jitter: jitter.unwrap_or(0.0),
            },
            Wire::Interval { interval, max_attempts, jitter } => {
                if max_attempts == 0 {
                    return Err(RetryPolicyError::Bounds("max_attempts must be at least 1"));
                }
                let retries = max_attempts as usize - 1;
                if retries > MAX_RETRIES {
                    return Err(RetryPolicyError::Bounds("at most 1000 retries"));
                }
                RetryPolicy {
                    delays: vec![parse_duration(&interval)?; retries],
                    jitter: jitter.unwrap_or(0.0),
                }
            }
        };
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), RetryPolicyError> {
        if self.delays.len() > MAX_RETRIES {
            return Err(RetryPolicyError::Bounds("at most 1000 retries"));
        }
        if self.delays.iter().any(|d| *d > MAX_DELAY) {
            return Err(RetryPolicyError::Bounds("a delay may be at most 7 days"));
        }
        if !(0.0..=MAX_JITTER).contains(&self.jitter) {
            return Err(RetryPolicyError::Bounds("jitter must be between 0 and 0.5"));
        }
        Ok(())
    }

    /// The policy as JSON, always in the `schedule` form.
    pub fn to_json(&self) -> serde_json::Value {
        let schedule =
            self.delays.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
        let jitter = (self.jitter > 0.0).then_some(self.jitter);
        serde_json::to_value(Wire::Schedule { schedule, jitter }).expect("plain JSON")
    }

    /// When to try again after `attempts_made` attempts of this series, or `None` when the
    /// policy is spent. `jitter_sample` is uniform in `[-1, 1]`, supplied by the caller.
    pub fn next_attempt_at(
        &self,
        attempts_made: u32,
        now: Timestamp,
        jitter_sample: f64,
    ) -> Option<Timestamp> {
        let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
        let base = *self.delays.get(index)?;
        let factor = 1.0 + self.jitter * jitter_sample.clamp(-1.0, 1.0);
        Some(now.plus(base.mul_f64(factor.max(0.0))))
    }
}

impl Serialize for RetryPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        RetryPolicy::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn parses_both_forms() {
        let p = RetryPolicy::from_json(&json!({"schedule":["5s","5m"]})).expect("valid");
        assert_eq!(p.delays, vec![S(5), S(300)]);
        assert_eq!(p.max_attempts(), 3);
        let p =
            RetryPolicy::from_json(&json!({"interval":"500ms","max_attempts":10})).expect("valid");
        assert_eq!(p.delays, vec![Duration::from_millis(500); 9]);
        assert_eq!(p.max_attempts(), 10);
    }

    #[test]
    fn refuses_bad_policies() {
        for bad in [
            json!({"schedule":["5 parsecs"]}),
            json!({"interval":"1s","max_attempts":0}),
            json!({"interval":"1s","max_attempts":5000}),
            json!({"schedule":["30d"]}),
            json!({"schedule":["1s"],"jitter":0.9}),
            json!({"every":"1s"}),
            json!(["1s"]),
        ] {
            assert!(RetryPolicy::from_json(&bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let p = RetryPolicy::from_json(&json!({"schedule":["5s","1h 30m"],"jitter":0.2}))
            .expect("valid");
        assert_eq!(RetryPolicy::from_json(&p.to_json()), Ok(p));
    }

    #[test]
    fn schedule_arithmetic_without_jitter() {
        let p = RetryPolicy::fixed(vec![S(5), S(300)]);
        let now = Timestamp(1_000_000);
        assert_eq!(p.next_attempt_at(0, now, 0.0), None);
        assert_eq!(p.next_attempt_at(1, now, 1.0), Some(now.plus(S(5))));
        assert_eq!(p.next_attempt_at(2, now, -1.0), Some(now.plus(S(300))));
        assert_eq!(p.next_attempt_at(3, now, 0.0), None, "spent after 3 attempts");
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = RetryPolicy { delays: vec![S(100)], jitter: 0.2 };
        let now = Timestamp(0);
        assert_eq!(p.next_attempt_at(1, now, -1.0), Some(Timestamp(80_000)));
        assert_eq!(p.next_attempt_at(1, now, 1.0), Some(Timestamp(120_000)));
        assert_eq!(p.next_attempt_at(1, now, 5.0), Some(Timestamp(120_000)), "clamped");
    }
}
