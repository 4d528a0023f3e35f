//! The re-poll watchdog's tables on SQLite: watches claimed with a lease like deliveries,
//! polls logged like attempts, and the poll-timeout callback a spent watch owes.

use super::cache::writer_merchant;
use super::rows::*;
use crate::columns::{parse_id, watch_from, WATCH_COLUMNS};
use crate::seal::Sealer;
use crate::{destination_host, mint_id, ClaimedWatch, PollNext, StoreError};
use payhook_core::ids::{DeliveryId, OperationId};
use payhook_core::lifecycle::{self, delivery, NewDelivery};
use payhook_core::model::{DeliveryKind, Poll};
use payhook_core::Timestamp;
use rusqlite::{params, Connection};

/// Leases up to `limit` active watches due at `now`, oldest due first.
pub(super) fn claim_in(
    tx: &Connection,
    node: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Vec<ClaimedWatch>, StoreError> {
    let watches = query_rows(
        tx,
        &format!(
            "SELECT {WATCH_COLUMNS} FROM watches
             WHERE state = 'active' AND next_poll_at <= ?1
               AND (lease_until IS NULL OR lease_until <= ?1)
             ORDER BY next_poll_at LIMIT ?2"
        ),
        params![now.0, limit as i64],
        |r| watch_from(r),
    )?;
    let mut claimed = Vec::with_capacity(watches.len());
    for watch in watches {
        exec(
            tx,
            "UPDATE watches SET lease_until = ?2, leased_by = ?3 WHERE operation_id = ?1",
            params![watch.operation_id.as_str(), lease_until.0, node],
        )
        .map_err(backend)?;
        let (operation, _) =
            operation_by_id(tx, watch.operation_id.as_str())?.ok_or(StoreError::NotFound)?;
        claimed.push(ClaimedWatch { watch, operation });
    }
    Ok(claimed)
}

/// Logs the poll and moves the watch on; a watch a final status finished meanwhile stays
/// finished (the update only touches active watches).
pub(super) fn record_in(
    tx: &Connection,
    sealer: &Sealer,
    poll: &Poll,
    next: PollNext,
    now: Timestamp,
) -> Result<(), StoreError> {
    insert_poll(tx, poll)?;
    let (state, next_at) = next.watch_state();
    let changed = exec(
        tx,
        "UPDATE watches SET polls = MAX(polls, ?2), state = ?3, next_poll_at = ?4,
               lease_until = NULL, leased_by = NULL, updated_at = ?5
             WHERE operation_id = ?1 AND state = 'active'",
        params![
            poll.operation_id.as_str(),
            poll.number,
            state.as_str(),
            next_at.map(|t| t.0),
            now.0
        ],
    )
    .map_err(backend)?;
    if changed == 1 && next.owes_poll_timeout() {
        plan_poll_timeout(tx, sealer, &poll.operation_id, now)?;
    }
    Ok(())
}

/// The callback telling the merchant the watchdog gave up, for dialects that define one
/// (ws2mpi's `respStatus` 408). It rides on the operation's latest event.
fn plan_poll_timeout(
    tx: &Connection,
    sealer: &Sealer,
    op_id: &OperationId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (op, _) = operation_by_id(tx, op_id.as_str())?.ok_or(StoreError::NotFound)?;
    let merchant = writer_merchant(tx, sealer, &op.merchant_id)?;
    let Some(url) = delivery::destination(&merchant, &op, DeliveryKind::PollTimeout) else {
        return Ok(());
    };
    let (event_id, event_position): (String, i64) = tx
        .query_row(
            "SELECT id, position FROM events WHERE operation_number = ?1
             ORDER BY seq DESC LIMIT 1",
            [op.number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend)?;
    let delivery = lifecycle::new_delivery(NewDelivery {
        id: parse_id::<DeliveryId>(&mint_id(DeliveryId::PREFIX))?,
        merchant: &merchant,
        operation: &op,
        event_id: parse_id(&event_id)?,
        url,
        kind: DeliveryKind::PollTimeout,
        disabled: false,
        now,
    });
    let refs = Refs { event_position, operation_number: op.number };
    insert_leased_delivery(tx, &delivery, refs, &destination_host(&delivery.url), None)
}
