//! What follows a poll of the re-poll watchdog, and the watch's state after it.

use crate::model::{Operation, Poll, PollOutcome, WatchState};
use crate::status_source::{Reading, StatusSource};
use crate::Timestamp;

use super::StatusReport;

/// What follows a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollNext {
    /// Poll again at this time.
    At(Timestamp),
    /// A final status was reached.
    Finished,
    /// The budget is spent: the watch ends (and ws2mpi sends its 408 callback).
    Exhausted,
}

impl PollNext {
    /// The watch's state and next poll time after this step.
    pub fn watch_state(self) -> (WatchState, Option<Timestamp>) {
        match self {
            PollNext::At(at) => (WatchState::Active, Some(at)),
            PollNext::Finished => (WatchState::Finished, None),
            PollNext::Exhausted => (WatchState::Exhausted, None),
        }
    }

    /// Whether the watch gave up: the dialect's poll-timeout callback is owed.
    pub fn owes_poll_timeout(self) -> bool {
        self == PollNext::Exhausted
    }
}

/// After `poll` (finished at `now`): a final status seen ends the watch; otherwise the next
/// poll follows the source's schedule until its budget is spent.
pub fn after_poll(source: &StatusSource, poll: &Poll, now: Timestamp) -> PollNext {
    let final_seen =
        poll.outcome != PollOutcome::Failed && poll.mapped.is_some_and(|s| s.is_final());
    if final_seen {
        return PollNext::Finished;
    }
    match source.delay_before(poll.number + 1) {
        Some(wait) => PollNext::At(now.plus(wait)),
        None => PollNext::Exhausted,
    }
}

/// The report a reading makes of `op`, or `None` when the source says what the operation
/// says already. Keyed by the poll's number, so a poll recorded twice reports once.
pub fn report_of(op: &Operation, reading: &Reading, poll_number: u32) -> Option<StatusReport> {
    (reading.status != op.status).then(|| StatusReport {
        operation_id: op.id.clone(),
        status: reading.status,
        data: Default::default(),
        event_key: Some(format!("status_source:poll:{poll_number}")),
    })
}
