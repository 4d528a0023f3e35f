//! A merchant's standing with the operator: pause, resume, archive, and what each means for
//! its operations and its deliveries.
//!
//! - `paused`: reports are accepted and their deliveries stored, but none is handed to a
//!   dispatcher or claimed, so nothing is attempted and no retry budget is spent. A newer
//!   report supersedes an older waiting one as ever, so on resume each operation's latest
//!   status goes out, in per-operation order.
//! - `archived`: no new operations ([`accepts_operations`]); reads, reports on existing
//!   operations and their deliveries go on, and its history ages out with retention. An
//!   archived merchant is neither paused nor resumed.

use crate::model::{Delivery, Merchant, MerchantState};
use crate::Timestamp;

/// What the operator asks of a merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantAction {
    Pause,
    Resume,
    Archive,
}

/// A change refused because the merchant is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the merchant is archived: it takes no new operations and is neither paused nor resumed")]
pub struct Archived;

/// The state `action` leads to from `state`. Asking for the state the merchant is in
/// already changes nothing and is not an error (a retried request succeeds).
pub fn change_state(
    state: MerchantState,
    action: MerchantAction,
) -> Result<MerchantState, Archived> {
    use MerchantAction::*;
    use MerchantState::*;
    match (state, action) {
        (Archived, Archive) => Ok(Archived),
        (Archived, Pause | Resume) => Err(self::Archived),
        (_, Pause) => Ok(Paused),
        (_, Resume) => Ok(Active),
        (_, Archive) => Ok(Archived),
    }
}

/// Refuses a new operation for an archived merchant.
pub fn accepts_operations(merchant: &Merchant) -> Result<(), Archived> {
    match merchant.state {
        MerchantState::Archived => Err(Archived),
        _ => Ok(()),
    }
}

/// Whether a store may hand `d` to this node's dispatcher as it creates it: due now, and
/// its merchant not paused (claims skip a paused merchant's deliveries likewise).
pub fn may_hand_off(merchant: &Merchant, d: &Delivery, now: Timestamp) -> bool {
    merchant.state != MerchantState::Paused && super::delivery::is_due(d, now)
}

/// The merchant state whose deliveries no claim takes.
pub const HOLDS_DELIVERIES: MerchantState = MerchantState::Paused;
