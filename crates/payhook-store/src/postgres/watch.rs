//! The re-poll watchdog's tables on PostgreSQL: watches claimed like deliveries (`FOR UPDATE
//! SKIP LOCKED` and a lease), polls logged like attempts, and the poll-timeout callback a
//! spent watch owes.

use super::rows::*;
use crate::seal::Sealer;
use crate::{mint_id, ClaimedWatch, PollClaim, PollNext, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::ids::{DeliveryId, OperationId};
use payhook_core::lifecycle::{self, delivery, NewDelivery};
use payhook_core::model::{DeliveryKind, Poll, Watch};
use payhook_core::Timestamp;

/// Finishes the operation's active watch: a final status leaves it nothing to find out.
pub(super) async fn finish<C: GenericClient>(
    tx: &C,
    op: &OperationId,
    now: Timestamp,
) -> Result<(), StoreError> {
    exec(
        tx,
        "UPDATE watches SET state = 'finished', next_poll_at = NULL, updated_at = $2
         WHERE operation_id = $1 AND state = 'active'",
        &[&op.as_str(), &now.0],
    )
    .await
    .map(|_| ())
}

/// Leases due active watches, oldest due first; rows another node is claiming are skipped.
pub(super) async fn claim_in<C: GenericClient>(
    tx: &C,
    claim: &PollClaim<'_>,
) -> Result<Vec<ClaimedWatch>, StoreError> {
    let sql = format!(
        "SELECT {WATCH_COLUMNS} FROM watches
         WHERE state = 'active' AND next_poll_at <= $1
           AND (lease_until IS NULL OR lease_until <= $1)
         ORDER BY next_poll_at LIMIT $2
         FOR UPDATE SKIP LOCKED"
    );
    let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
    let rows = query(tx, &sql, &[&claim.now.0, &limit]).await?;
    let lease_until = claim.now.plus(claim.lease);
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let watch = watch_from(row)?;
        exec(
            tx,
            "UPDATE watches SET lease_until = $2, leased_by = $3 WHERE operation_id = $1",
            &[&watch.operation_id.as_str(), &lease_until.0, &claim.node],
        )
        .await?;
        let (operation, _) = query_operation(tx, "WHERE id = $1", &[&watch.operation_id.as_str()])
            .await?
            .ok_or(StoreError::NotFound)?;
        claimed.push(ClaimedWatch { watch, operation });
    }
    Ok(claimed)
}

/// Logs the poll and moves the watch on; a watch a final status finished meanwhile stays
/// finished (the update only touches active watches).
pub(super) async fn record_in<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    poll: &Poll,
    next: PollNext,
    now: Timestamp,
) -> Result<(), StoreError> {
    insert_poll(tx, poll).await?;
    let (state, next_at) = next.watch_state();
    let next_at = next_at.map(|t| t.0);
    let changed = exec(
        tx,
        "UPDATE watches SET polls = GREATEST(polls, $2), state = $3, next_poll_at = $4,
           lease_until = NULL, leased_by = NULL, updated_at = $5
         WHERE operation_id = $1 AND state = 'active'",
        &[
            &poll.operation_id.as_str(),
            &attempt_number(poll.number),
            &state.as_str(),
            &next_at,
            &now.0,
        ],
    )
    .await?;
    if changed == 1 && next.owes_poll_timeout() {
        plan_poll_timeout(tx, sealer, &poll.operation_id, now).await?;
    }
    Ok(())
}

/// The callback telling the merchant the watchdog gave up, for dialects that define one
/// (ws2mpi's `respStatus` 408). It rides on the operation's latest event. The operation row is
/// read, not locked: a report holds that lock while it finishes watches, and taking the two in
/// the other order here could deadlock.
async fn plan_poll_timeout<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    op_id: &OperationId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (op, _) = query_operation(tx, "WHERE id = $1", &[&op_id.as_str()])
        .await?
        .ok_or(StoreError::NotFound)?;
    let merchant = load_merchant(tx, sealer, &op.merchant_id).await?.ok_or(StoreError::NotFound)?;
    let Some(url) = delivery::destination(&merchant, &op, DeliveryKind::PollTimeout) else {
        return Ok(());
    };
    let sql = "SELECT id FROM events WHERE operation_id = $1 ORDER BY seq DESC LIMIT 1";
    let row = query_opt(tx, sql, &[&op.id.as_str()]).await?.ok_or(StoreError::NotFound)?;
    let delivery = lifecycle::new_delivery(NewDelivery {
        id: parse_id::<DeliveryId>(&mint_id(DeliveryId::PREFIX))?,
        merchant: &merchant,
        operation: &op,
        event_id: parse_id(row.get::<_, &str>(0))?,
        url,
        kind: DeliveryKind::PollTimeout,
        disabled: false,
        now,
    });
    insert_delivery(tx, &delivery, None).await
}

pub(super) async fn watch_of<C: GenericClient>(
    c: &C,
    op: &OperationId,
) -> Result<Option<(Watch, Vec<Poll>)>, StoreError> {
    let sql = format!("SELECT {WATCH_COLUMNS} FROM watches WHERE operation_id = $1");
    let Some(row) = query_opt(c, &sql, &[&op.as_str()]).await? else { return Ok(None) };
    Ok(Some((watch_from(&row)?, load_polls(c, op.as_str()).await?)))
}
