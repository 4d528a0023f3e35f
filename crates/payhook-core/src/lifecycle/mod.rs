//! The payment lifecycle: every decision payhook makes about an operation and its callbacks,
//! as pure functions that return plans. The stores persist what these decide and the
//! dispatcher transports it; neither decides anything of its own.
//!
//! - [`report`]: a status report against an operation — the event key's replay rule, the
//!   transition check, the new event, which older deliveries it supersedes, whether it ends
//!   the operation's watch.
//! - [`delivery`]: the delivery an event owes the merchant (destination, dialect, policy,
//!   due time, or cancelled at once when the destination is disabled).
//! - [`attempt`]: an attempt's verdict → the attempt's outcome and the next step; the next
//!   step → the delivery's state after the record.
//! - [`claim`]: which due deliveries a claim leases, supersedes or leaves waiting.
//! - [`merchant`]: pause, resume and archive, and what they mean for deliveries.
//! - [`health`]: a destination's health after each attempt, the operator's alerts, and when
//!   failing for days disables it.
//! - [`keys`]: how many API keys a merchant holds, which may be revoked, and how finely
//!   their use is recorded.
//! - [`recovery`]: which ended deliveries a merchant's bulk recovery queues again.
//! - [`register`]: the dialects' rules for registering merchants and operations.
//! - [`watch`]: what follows a poll of the re-poll watchdog.
//! - [`retention`]: how long history and operations are kept, what a purge may take, and the
//!   events feed's rule for cursors into purged history.
//!
//! Ids, time and randomness come in as arguments; nothing here reads a clock or an RNG.

pub mod attempt;
pub mod claim;
pub mod delivery;
pub mod health;
pub mod keys;
pub mod merchant;
pub mod recovery;
pub mod register;
pub mod report;
pub mod retention;
pub mod watch;

pub use attempt::{
    judge, settle, transport_failure, unsent, with_health, CancelReason, Judgement, NextStep,
    Settled,
};
pub use claim::{busy_hosts, choose, Candidate, ClaimChoice};
pub use delivery::{new_delivery, NewDelivery};
pub use keys::KeyRefusal;
pub use merchant::{accepts_operations, change_state, may_hand_off, Archived, MerchantAction};
pub use register::{check_merchant, check_operation, RuleViolation};
pub use report::{
    apply_report, registration_event, replay, return_target, Change, NoReturn, Refusal,
    StatusReport, Supersede,
};
pub use retention::{check_cursor, CursorExpired, PurgePlan, Retention, RetentionError};
pub use watch::{after_poll, PollNext};

#[cfg(test)]
mod tests;
