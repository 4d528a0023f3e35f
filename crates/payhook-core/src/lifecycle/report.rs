//! A status report against an operation: replay by event key, the transition check, the new
//! event, and what the change does to the operation's older deliveries and its watch.

use crate::ids::{EventId, OperationId};
use crate::model::{Event, Operation};
use crate::status::{InvalidTransition, Status};
use crate::Timestamp;

/// A status change the payment core reports for one operation.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub operation_id: OperationId,
    pub status: Status,
    /// Merged into the operation's data (top-level keys replace).
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Makes the report idempotent: a second report with the same key is the first again.
    pub event_key: Option<String>,
}

/// A report the rules refuse; nothing is stored for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    #[error("event key {0:?} was already used for a different status")]
    EventKeyConflict(String),
}

/// The replay rule of event keys. `earlier` is the operation's event that carries the report's
/// key: the report is that event again (nothing new is stored) when it asks for the same
/// status, and refused when it asks for another.
pub fn replay(earlier: Event, report: &StatusReport) -> Result<Event, Refusal> {
    if earlier.status == report.status {
        return Ok(earlier);
    }
    Err(Refusal::EventKeyConflict(earlier.event_key.unwrap_or_default()))
}

/// Which of the operation's older deliveries a change supersedes: those still pending with a
/// `seq` below `seq_below` and no lease alive at `at` (a delivery in flight finishes its
/// attempt; if that fails, the record supersedes it — see [`super::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supersede {
    pub seq_below: i64,
    pub at: Timestamp,
}

/// An accepted report, not stored yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The new event (position 0 until the store assigns one); its `operation` is the
    /// operation after the change, which the store saves.
    pub event: Event,
    /// The report carried data, so the operation's data must be written.
    pub data_changed: bool,
    pub supersede: Supersede,
    /// The operation reached a final status and is watched: its watch is finished in the
    /// same transaction.
    pub finishes_watch: bool,
}

/// Applies `report` to `op` (as stored, locked by the caller): checks the transition, merges
/// the data, moves `seq` on and builds the event `event_id` at `now`.
pub fn apply_report(
    mut op: Operation,
    report: &StatusReport,
    event_id: EventId,
    now: Timestamp,
) -> Result<Change, Refusal> {
    op.status.check_transition(report.status)?;
    let previous_status = op.status;
    op.data.extend(report.data.iter().map(|(k, v)| (k.clone(), v.clone())));
    op.status = report.status;
    op.seq += 1;
    op.updated_at = now;
    let finishes_watch = op.status.is_final() && op.callback.status_source.is_some();
    let supersede = Supersede { seq_below: op.seq, at: now };
    let event = event_of(op, previous_status, report.event_key.clone(), event_id, now);
    Ok(Change { event, data_changed: !report.data.is_empty(), supersede, finishes_watch })
}

/// The `created` event (seq 0) a registration records in the feed; it owes no callback.
pub fn registration_event(op: Operation, event_id: EventId, now: Timestamp) -> Event {
    event_of(op, Status::Created, None, event_id, now)
}

fn event_of(
    op: Operation,
    previous_status: Status,
    event_key: Option<String>,
    id: EventId,
    now: Timestamp,
) -> Event {
    Event {
        id,
        position: 0,
        operation_id: op.id.clone(),
        merchant_id: op.merchant_id.clone(),
        seq: op.seq,
        status: op.status,
        previous_status,
        event_key,
        created_at: now,
        operation: op,
    }
}

/// Why the payer's browser cannot be sent back yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReturn {
    /// The operation was registered without a `return_url`.
    NoUrl,
    /// The payment has no final status yet.
    NotFinal,
}

/// Where the payer's browser goes back to (XPAY's `CallbackURL`): the operation's
/// `return_url`, once its status is final.
pub fn return_target(op: &Operation) -> Result<&str, NoReturn> {
    let url = op.callback.return_url.as_deref().ok_or(NoReturn::NoUrl)?;
    if !op.status.is_final() {
        return Err(NoReturn::NotFinal);
    }
    Ok(url)
}
