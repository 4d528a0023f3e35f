//! Registrations and status reports on SQLite, each inside a writer job. A report is
//! check (the operation, its event key, the lifecycle's verdict; nothing written) → apply
//! (the operation's row, the event, the delivery it owes, the watch it ends). A delivery due
//! now is leased to this node's dispatcher in the same job and handed over after the commit.

use super::cache::{is_disabled, writer_merchant};
use super::rows::*;
use crate::columns::{parse_id, status_source_of};
use crate::seal::Sealer;
use crate::{
    destination_host, mint_id, Claimed, Handoff, NewOperation, Registered, Reported, Slot,
    StatusReport, StoreError,
};
use payhook_core::ids::{DeliveryId, EventId, OperationId};
use payhook_core::lifecycle::{self, delivery, Change, Supersede};
use payhook_core::model::{Delivery, DeliveryKind, Event, Merchant};
use payhook_core::Timestamp;
use rusqlite::params;
use std::sync::Arc;

/// A delivery leased at planning time (the report's delivery), with its merchant and slot, to
/// give the dispatcher once the commit is done.
pub(super) type Handed = Option<(Arc<Merchant>, Slot)>;

/// After the commit: the leased delivery goes to the dispatcher (dropping it instead would
/// only give the slot back; the lease then expires and a claim finds the delivery). The copies
/// the dispatcher keeps are made here, off the writer thread.
pub(super) fn hand_over(handoff: Option<&dyn Handoff>, reported: &Reported, handed: Handed) {
    if let (Some(h), Some(delivery), Some((merchant, slot))) = (handoff, &reported.delivery, handed)
    {
        let claimed =
            Claimed { delivery: delivery.clone(), event: reported.event.clone(), merchant };
        h.deliver(claimed, slot);
    }
}

/// Registers idempotently on (merchant, external id), with the `created` event and, for an
/// operation with a status source, its watch.
pub(super) fn register(
    tx: &impl Statements,
    new: &NewOperation,
    now: Timestamp,
) -> Result<Registered, StoreError> {
    let c = tx.connection();
    let existing = query_operation(
        c,
        "WHERE merchant_id = ?1 AND external_id = ?2",
        params![new.merchant_id.as_str(), new.external_id],
    )?;
    if let Some((op, hash)) = existing {
        let same = hash == new.request_hash;
        return Ok(if same { Registered::Existing(op) } else { Registered::Conflict(op) });
    }
    let id = mint_id(OperationId::PREFIX);
    insert_operation(c, &id, new, now)?;
    let (op, _) = operation_by_id(tx, &id)?
        .ok_or_else(|| StoreError::Backend("inserted operation vanished".into()))?;
    let event = lifecycle::registration_event(op, parse_id(&mint_id(EventId::PREFIX))?, now);
    let op = insert_event(tx, event)?.operation;
    if let Some(source) = status_source_of(&op)? {
        insert_watch(c, &op, &source, now)?;
    }
    Ok(Registered::Created(op))
}

/// One report: check, then apply. A report refused by its check has written nothing.
pub(super) fn report(
    tx: &impl Statements,
    sealer: &Sealer,
    handoff: Option<&dyn Handoff>,
    report: &StatusReport,
    now: Timestamp,
) -> Result<(Reported, Handed), StoreError> {
    match check(tx, report, now)? {
        Checked::Replay(event) => {
            let event = Arc::new(event);
            Ok((Reported { event, duplicate: true, delivery: None, handed_off: false }, None))
        }
        Checked::Change(change) => apply(tx, sealer, handoff, change, now),
    }
}

/// A report after its check.
enum Checked {
    /// The event key was seen: the earlier event, nothing to store.
    Replay(Event),
    /// The lifecycle accepted the change.
    Change(Change),
}

fn check(
    tx: &impl Statements,
    report: &StatusReport,
    now: Timestamp,
) -> Result<Checked, StoreError> {
    let (op, _) = operation_by_id(tx, report.operation_id.as_str())?.ok_or(StoreError::NotFound)?;
    if let Some(key) = &report.event_key {
        if let Some(earlier) = event_by_key(tx.connection(), &op.id, key)? {
            return Ok(Checked::Replay(lifecycle::replay(earlier, report)?));
        }
    }
    let event_id = parse_id(&mint_id(EventId::PREFIX))?;
    Ok(Checked::Change(lifecycle::apply_report(op, report, event_id, now)?))
}

fn apply(
    tx: &impl Statements,
    sealer: &Sealer,
    handoff: Option<&dyn Handoff>,
    change: Change,
    now: Timestamp,
) -> Result<(Reported, Handed), StoreError> {
    save_operation_status(tx, &change.event.operation, change.data_changed)?;
    let event = insert_event(tx, change.event)?;
    let (delivery, handed) = plan_delivery(tx, sealer, handoff, &event, change.supersede)?;
    if change.finishes_watch {
        exec_prepared(
            tx,
            "UPDATE watches SET state = 'finished', next_poll_at = NULL, updated_at = ?2
             WHERE operation_id = ?1 AND state = 'active'",
            params![event.operation_id.as_str(), now.0],
        )
        .map_err(backend)?;
    }
    let handed_off = handed.is_some();
    let event = Arc::new(event);
    Ok((Reported { event, duplicate: false, delivery, handed_off }, handed))
}

/// Supersedes what the change supersedes and stores the event's delivery, if its dialect
/// sends one; leased to this node's dispatcher when it is due now, nothing older of the
/// operation is in flight, and the dispatcher has a slot or a place in the host's line.
fn plan_delivery(
    tx: &impl Statements,
    sealer: &Sealer,
    handoff: Option<&dyn Handoff>,
    event: &Event,
    supersede: Supersede,
) -> Result<(Option<Delivery>, Handed), StoreError> {
    let (op, now) = (&event.operation, supersede.at);
    let merchant = writer_merchant(tx.connection(), sealer, &op.merchant_id)?;
    let Some(url) = delivery::destination(&merchant, op, DeliveryKind::Status) else {
        return Ok((None, None));
    };
    // Most operations have nothing pending when a status arrives: one lookup then replaces
    // both the supersede UPDATE and the check for an older delivery in flight.
    let any_pending = pending_exists(tx, op.number)?;
    if any_pending {
        supersede_older(tx, op.number, supersede)?;
    }
    let disabled = is_disabled(tx, &merchant.id, &url)?;
    let id = parse_id(&mint_id(DeliveryId::PREFIX))?;
    let delivery = delivery::of_event(id, &merchant, event, url, disabled);
    let host = destination_host(&delivery.url);
    let slot = match handoff {
        Some(h)
            if lifecycle::may_hand_off(&merchant, &delivery, now)
                && !(any_pending && older_pending_exists(tx, op.number, delivery.seq)?) =>
        {
            h.reserve(&host)
        }
        _ => None,
    };
    let refs = Refs::of(event);
    let Some((h, slot)) = handoff.zip(slot) else {
        insert_leased_delivery(tx, &delivery, refs, &host, None)?;
        return Ok((Some(delivery), None));
    };
    let lease = (h.node(), now.plus(h.lease()));
    insert_leased_delivery(tx, &delivery, refs, &host, Some(lease))?;
    Ok((Some(delivery), Some((merchant, slot))))
}

fn supersede_older(tx: &impl Statements, op: i64, s: Supersede) -> Result<(), StoreError> {
    exec_prepared(
        tx,
        "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = ?2
         WHERE operation_number = ?1 AND state = 'pending' AND seq < ?3
           AND (lease_until IS NULL OR lease_until <= ?2)",
        params![op, s.at.0, s.seq_below],
    )
    .map_err(backend)?;
    Ok(())
}

fn pending_exists(c: &impl Statements, op: i64) -> Result<bool, StoreError> {
    c.with_sql(
        "SELECT 1 FROM deliveries WHERE operation_number = ?1 AND state = 'pending' LIMIT 1",
        |stmt| stmt.exists([op]),
    )
    .map_err(backend)
}

fn older_pending_exists(c: &impl Statements, op: i64, seq: i64) -> Result<bool, StoreError> {
    c.with_sql(
        "SELECT 1 FROM deliveries
         WHERE operation_number = ?1 AND seq < ?2 AND state = 'pending' LIMIT 1",
        |stmt| stmt.exists(params![op, seq]),
    )
    .map_err(backend)
}
