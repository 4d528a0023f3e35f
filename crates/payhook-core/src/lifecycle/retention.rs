//! Retention: how long finished history and finished operations are kept, what a purge may
//! take, and what the events feed answers once part of it is gone.
//!
//! - History (events, deliveries that ended, their attempts, the watchdog's polls) goes
//!   `history` after it ended: an event once every delivery it owes has ended that long ago.
//! - An operation with a final status goes `operations` after its last change, with all it
//!   still has, once nothing of it is pending and its watch is not active.
//! - Nothing pending, in flight or leased is ever taken: a delivery is purgeable only in one
//!   of the [`ENDED`] states, whatever its age.
//! - The events feed keeps, per merchant, the highest position it purged. A cursor below it
//!   would silently skip purged events, so it is refused ([`check_cursor`]); `after = 0`
//!   still reads from the oldest event kept.

use crate::model::DeliveryState;
use crate::status::Status;
use crate::Timestamp;
use std::time::Duration;

/// The delivery states a purge may take: every state but `pending`.
pub const ENDED: [DeliveryState; 4] = [
    DeliveryState::Delivered,
    DeliveryState::Superseded,
    DeliveryState::Exhausted,
    DeliveryState::Cancelled,
];

/// The statuses that let an operation go: the payment's outcome is known.
pub fn final_statuses() -> Vec<Status> {
    Status::ALL.into_iter().filter(|s| s.is_final()).collect()
}

/// The operator's retention settings; `None` keeps for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    history: Option<Duration>,
    operations: Option<Duration>,
}

/// Retention settings payhook refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error("{setting} must be 0 (keep for ever) or at least 1s, not {value:?}")]
    BelowOneSecond { setting: &'static str, value: Duration },
    #[error(
        "retention_operations ({operations:?}) is shorter than retention_history ({history:?}): \
         an operation would go before its own history; make it at least as long, or 0 to keep \
         operations for ever"
    )]
    OperationsBeforeHistory { operations: Duration, history: Option<Duration> },
}

impl Retention {
    /// Keeps everything for ever.
    pub const FOREVER: Retention = Retention { history: None, operations: None };

    /// Checks the settings; a zero duration means "for ever".
    pub fn new(history: Duration, operations: Duration) -> Result<Retention, RetentionError> {
        let history = Self::setting("retention_history", history)?;
        let operations = Self::setting("retention_operations", operations)?;
        if let Some(ops) = operations {
            if history.is_none_or(|h| ops < h) {
                return Err(RetentionError::OperationsBeforeHistory { operations: ops, history });
            }
        }
        Ok(Retention { history, operations })
    }

    fn setting(setting: &'static str, value: Duration) -> Result<Option<Duration>, RetentionError> {
        match value {
            v if v.is_zero() => Ok(None),
            v if v < Duration::from_secs(1) => {
                Err(RetentionError::BelowOneSecond { setting, value })
            }
            v => Ok(Some(v)),
        }
    }

    /// What may go at `now`: history and operations that ended before these times.
    pub fn plan(&self, now: Timestamp) -> PurgePlan {
        let before = |d: Duration| Timestamp(now.0.saturating_sub(d.as_millis() as i64));
        PurgePlan {
            history_before: self.history.map(before),
            operations_before: self.operations.map(before),
        }
    }
}

/// One purge run's cut-off times; `None`: that part is kept for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePlan {
    /// Events, ended deliveries, attempts and polls that ended before this go.
    pub history_before: Option<Timestamp>,
    /// Operations with a final status, unchanged since before this, go with all they have.
    pub operations_before: Option<Timestamp>,
}

/// A feed cursor that points before what was purged for its merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorExpired {
    /// The highest position purged for the merchant: the cursor is below it.
    pub purged_through: i64,
}

/// Refuses a feed cursor that would skip purged events: `after` below the highest purged
/// position means some event after the cursor is gone. `after = 0` reads from the oldest kept.
pub fn check_cursor(after: i64, purged_through: i64) -> Result<(), CursorExpired> {
    if after > 0 && after < purged_through {
        Err(CursorExpired { purged_through })
    } else {
        Ok(())
    }
}
