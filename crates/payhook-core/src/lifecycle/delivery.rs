//! The delivery an event owes the merchant: where it goes, in which dialect, on which retry
//! policy, and whether it starts pending or cancelled.

use crate::dialect::{effective_dialect, effective_policy};
use crate::ids::{DeliveryId, EventId};
use crate::model::{Delivery, DeliveryKind, DeliveryState, Event, Merchant, Operation};
use crate::Timestamp;

/// Why a delivery to a disabled destination is cancelled at once.
pub const DISABLED_DESTINATION: &str = "destination disabled after 410 Gone";

/// Where `op`'s delivery of `kind` goes, or `None` when its dialect sends none (a status the
/// dialect does not call back for, or a poll timeout the dialect has no message for).
pub fn destination(merchant: &Merchant, op: &Operation, kind: DeliveryKind) -> Option<String> {
    let dialect = effective_dialect(merchant, op);
    match kind {
        DeliveryKind::Status => dialect.destination(merchant, op),
        DeliveryKind::PollTimeout => dialect.poll_timeout_destination(merchant, op),
    }
}

/// What a new delivery is made of; `url` comes from [`destination`], `disabled` from the
/// store's record of destinations a 410 Gone disabled.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub id: DeliveryId,
    pub merchant: &'a Merchant,
    /// The operation as of the event (its `seq` is the delivery's).
    pub operation: &'a Operation,
    pub event_id: EventId,
    pub url: String,
    pub kind: DeliveryKind,
    pub disabled: bool,
    pub now: Timestamp,
}

/// A new delivery: pending and due at `now`, or cancelled at once when its destination is
/// disabled. Its policy is the operation's, else the merchant's, else the dialect's.
pub fn new_delivery(new: NewDelivery<'_>) -> Delivery {
    let NewDelivery { id, merchant, operation: op, event_id, url, kind, disabled, now } = new;
    let dialect = effective_dialect(merchant, op);
    Delivery {
        id,
        event_id,
        operation_id: op.id.clone(),
        merchant_id: op.merchant_id.clone(),
        seq: op.seq,
        dialect,
        kind,
        url,
        state: if disabled { DeliveryState::Cancelled } else { DeliveryState::Pending },
        attempts: 0,
        series_attempts: 0,
        next_attempt_at: (!disabled).then_some(now),
        policy: effective_policy(merchant, op, dialect),
        last_error: disabled.then(|| DISABLED_DESTINATION.to_owned()),
        created_at: now,
        updated_at: now,
    }
}

/// The delivery `event` owes at `url`, as of the event's time: what a status change plans.
pub fn of_event(
    id: DeliveryId,
    merchant: &Merchant,
    event: &Event,
    url: String,
    disabled: bool,
) -> Delivery {
    new_delivery(NewDelivery {
        id,
        merchant,
        operation: &event.operation,
        event_id: event.id.clone(),
        url,
        kind: DeliveryKind::Status,
        disabled,
        now: event.created_at,
    })
}

/// Whether `d` is pending and due at `now`: a store may then lease it to this node's
/// dispatcher in the transaction that creates it (the hand-off).
pub fn is_due(d: &Delivery, now: Timestamp) -> bool {
    d.state == DeliveryState::Pending && d.next_attempt_at.is_some_and(|at| at <= now)
}
