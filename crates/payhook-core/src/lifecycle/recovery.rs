//! Bulk recovery after a merchant's outage: which ended deliveries are queued again.
//!
//! A delivery is recoverable when it is its operation's latest, ended at or after the
//! operator's `since`, and ended because the merchant could not take it: its retry policy was
//! spent (`exhausted`), or it was cancelled because its destination was disabled (a 410 Gone
//! answer, failing for days, or created while the destination was disabled). Recovery re-enables the merchant's
//! destinations and starts a new attempt series for each, at once; a recovered delivery is
//! pending, so a repeated recovery does not queue it twice.

use crate::model::DeliveryState;
use crate::Timestamp;

/// The error a delivery keeps when a 410 Gone answer cancelled it.
pub const GONE: &str = "410 Gone: destination disabled";

/// The error a delivery keeps when its destination was disabled for failing too long
/// (`lifecycle::health`).
pub const UNHEALTHY: &str = "destination disabled after failing for days";

/// The ended states recovery takes up: `exhausted`, and `cancelled` with one of
/// [`cancelled_errors`].
pub const EXHAUSTED: DeliveryState = DeliveryState::Exhausted;
pub const CANCELLED: DeliveryState = DeliveryState::Cancelled;

/// The errors of a delivery cancelled because its destination was disabled.
pub fn cancelled_errors() -> [&'static str; 3] {
    [GONE, UNHEALTHY, super::delivery::DISABLED_DESTINATION]
}

/// Whether a delivery in `state` with `last_error` may be recovered (its being the latest of
/// its operation and its end time are the store's to check).
pub fn is_recoverable(state: DeliveryState, last_error: Option<&str>) -> bool {
    state == EXHAUSTED
        || (state == CANCELLED && last_error.is_some_and(|e| cancelled_errors().contains(&e)))
}

/// A `since` after now: nothing could have ended then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("since is in the future")]
pub struct SinceInFuture;

pub fn check_since(since: Timestamp, now: Timestamp) -> Result<(), SinceInFuture> {
    if since > now {
        Err(SinceInFuture)
    } else {
        Ok(())
    }
}
