//! An attempt's verdict → the attempt's outcome and the delivery's next step; the next step →
//! the delivery's state once the attempt is recorded.

use crate::dialect::Verdict;
use crate::model::{AttemptOutcome, Delivery, DeliveryState, ErrorKind};
use crate::Timestamp;
use std::time::Duration;

/// What follows an attempt, as the dispatcher decides it from the verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Delivered,
    RetryAt(Timestamp),
    /// The retry policy is used up.
    Exhausted,
    /// Stop for good.
    Cancel(CancelReason),
}

/// Why a delivery stops for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The merchant answered 410 Gone: the destination is disabled, and later deliveries to
    /// it are cancelled at once until an operator re-enables it.
    Gone,
    /// The target address is forbidden (SSRF guard) or off the merchant's allow-list.
    BlockedTarget,
    /// Any other failure that retrying cannot fix (a callback that cannot be built, a
    /// dialect's permanent refusal).
    Permanent,
    /// The destination answered nothing but failures for `HealthRules::disable_after`
    /// (`lifecycle::health`): disabled like a 410.
    Unhealthy,
}

/// An attempt's outcome, its error, and the delivery's next step.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub outcome: AttemptOutcome,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    pub next: NextStep,
}

/// Judges attempt number `series_attempts + 1` of the current series of `d`, answered with
/// `verdict` at `now`. A retry waits what the policy says (stretched by a sample of `jitter`,
/// in `[-1, 1]`, drawn only for a retry), or what the merchant's `Retry-After` asked; with the
/// policy spent, the delivery is exhausted.
pub fn judge(
    verdict: &Verdict,
    d: &Delivery,
    now: Timestamp,
    jitter: impl FnOnce() -> f64,
) -> Judgement {
    match verdict {
        Verdict::Delivered => Judgement {
            outcome: AttemptOutcome::Delivered,
            error_kind: None,
            error: None,
            next: NextStep::Delivered,
        },
        Verdict::Gone => {
            cancelled(ErrorKind::HttpStatus, super::recovery::GONE.into(), CancelReason::Gone)
        }
        Verdict::Permanent { kind, detail } => cancelled(*kind, detail.clone(), reason_for(*kind)),
        Verdict::Retry { kind, detail, retry_after } => {
            let next = retry_at(d, *retry_after, now, jitter());
            let outcome = match next {
                NextStep::Exhausted => AttemptOutcome::Permanent,
                _ => AttemptOutcome::Retry,
            };
            Judgement { outcome, error_kind: Some(*kind), error: Some(detail.clone()), next }
        }
    }
}

/// A delivery that ends without a request being sent (the URL left the allow-list, the
/// callback could not be built).
pub fn unsent(kind: ErrorKind, why: String) -> Judgement {
    cancelled(kind, why, reason_for(kind))
}

/// The verdict on an exchange that got no answer: a forbidden target is final, any other
/// transport failure is worth a retry.
pub fn transport_failure(kind: ErrorKind, detail: String) -> Verdict {
    match kind {
        ErrorKind::BlockedTarget => Verdict::Permanent { kind, detail },
        _ => Verdict::Retry { kind, detail, retry_after: None },
    }
}

fn reason_for(kind: ErrorKind) -> CancelReason {
    match kind {
        ErrorKind::BlockedTarget => CancelReason::BlockedTarget,
        _ => CancelReason::Permanent,
    }
}

fn cancelled(kind: ErrorKind, error: String, reason: CancelReason) -> Judgement {
    Judgement {
        outcome: AttemptOutcome::Permanent,
        error_kind: Some(kind),
        error: Some(error),
        next: NextStep::Cancel(reason),
    }
}

fn retry_at(d: &Delivery, retry_after: Option<Duration>, now: Timestamp, jitter: f64) -> NextStep {
    match d.policy.next_attempt_at(d.series_attempts + 1, now, jitter) {
        None => NextStep::Exhausted,
        Some(at) => NextStep::RetryAt(retry_after.map_or(at, |wait| now.plus(wait))),
    }
}

/// The delivery after its attempt is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub state: DeliveryState,
    pub next_attempt_at: Option<Timestamp>,
    /// The (merchant, URL) destination is disabled in the same transaction.
    pub disable_destination: bool,
    /// The delivery's `last_error` instead of the attempt's error (recovery knows a delivery
    /// cancelled by a disabled destination by it).
    pub last_error: Option<&'static str>,
}

impl NextStep {
    /// Whether [`settle`] needs to know if a newer delivery of the operation exists (only a
    /// retry does: a retry of a stale status would be sent after a newer one).
    pub fn asks_for_newer(&self) -> bool {
        matches!(self, NextStep::RetryAt(_))
    }
}

/// The state `next` leaves the delivery in; `newer_exists` says whether the operation has a
/// newer delivery (read only when [`NextStep::asks_for_newer`]). A retry of a superseded
/// status is not scheduled: the delivery is superseded instead.
pub fn settle(next: &NextStep, newer_exists: bool) -> Settled {
    let ended = |state| Settled {
        state,
        next_attempt_at: None,
        disable_destination: false,
        last_error: None,
    };
    match next {
        NextStep::Delivered => ended(DeliveryState::Delivered),
        NextStep::RetryAt(_) if newer_exists => ended(DeliveryState::Superseded),
        NextStep::RetryAt(at) => Settled {
            state: DeliveryState::Pending,
            next_attempt_at: Some(*at),
            disable_destination: false,
            last_error: None,
        },
        NextStep::Exhausted => ended(DeliveryState::Exhausted),
        NextStep::Cancel(reason) => Settled {
            disable_destination: matches!(reason, CancelReason::Gone | CancelReason::Unhealthy),
            last_error: (*reason == CancelReason::Unhealthy).then_some(super::recovery::UNHEALTHY),
            ..ended(DeliveryState::Cancelled)
        },
    }
}

/// The next step once the destination's health is known: a destination disabled for failing
/// too long (`health::HealthChange::disable`) ends a delivery that would have been retried
/// or exhausted, as a 410 does.
pub fn with_health(next: NextStep, disable: bool) -> NextStep {
    match next {
        NextStep::RetryAt(_) | NextStep::Exhausted if disable => {
            NextStep::Cancel(CancelReason::Unhealthy)
        }
        other => other,
    }
}

/// Whether recording an attempt may have made work due at once: a retry was scheduled, or the
/// delivery ended undelivered (superseded, exhausted, cancelled), which may free the
/// operation's next delivery. The dispatcher looks again instead of sleeping to its next due
/// time.
pub fn may_free_work(next: &NextStep, state: DeliveryState) -> bool {
    next.asks_for_newer() || state != DeliveryState::Delivered
}
