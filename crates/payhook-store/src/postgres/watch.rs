//! The re-poll watchdog's tables on PostgreSQL: watches claimed like deliveries (`FOR UPDATE
//! SKIP LOCKED` and a lease), polls logged like attempts. Semantics as in `sqlite.rs`.

use super::rows::*;
use crate::seal::Sealer;
use crate::{new_delivery, ClaimedWatch, PollClaim, PollNext, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::dialect::effective_dialect;
use payhook_core::ids::OperationId;
use payhook_core::model::WatchState;
use payhook_core::model::{DeliveryKind, Operation, Poll, Watch};
use payhook_core::status_source::StatusSource;
use payhook_core::Timestamp;

/// The operation's status source, parsed (the API validated it at registration).
pub(super) fn status_source_of(op: &Operation) -> Result<Option<StatusSource>, StoreError> {
    op.callback
        .status_source
        .as_ref()
        .map(|v| StatusSource::from_json(v).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
}

/// After a status change: when `op` reached a final status, its active watch has nothing left
/// to find out. Only an operation registered with a status source has a watch, so the others
/// cost no statement.
pub(super) async fn finish_if_final<C: GenericClient>(
    tx: &C,
    op: &Operation,
    now: Timestamp,
) -> Result<(), StoreError> {
    if !op.status.is_final() || op.callback.status_source.is_none() {
        return Ok(());
    }
    exec(
        tx,
        "UPDATE watches SET state = 'finished', next_poll_at = NULL, updated_at = $2
         WHERE operation_id = $1 AND state = 'active'",
        &[&op.id.as_str(), &now.0],
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
        let watch = watch_from_row(row)?;
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
    let (state, next_at) = match next {
        PollNext::At(at) => (WatchState::Active, Some(at.0)),
        PollNext::Finished => (WatchState::Finished, None),
        PollNext::Exhausted => (WatchState::Exhausted, None),
    };
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
    if changed == 1 && state == WatchState::Exhausted {
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
    let dialect = effective_dialect(&merchant, &op);
    let Some(url) = dialect.poll_timeout_destination(&merchant, &op) else { return Ok(()) };
    let sql = "SELECT id FROM events WHERE operation_id = $1 ORDER BY seq DESC LIMIT 1";
    let row = query_opt(tx, sql, &[&op.id.as_str()]).await?.ok_or(StoreError::NotFound)?;
    let delivery = new_delivery(
        &merchant,
        &op,
        parse_id(row.get::<_, &str>(0))?,
        url,
        DeliveryKind::PollTimeout,
        false,
        now,
    )?;
    insert_delivery(tx, &delivery, None).await
}

pub(super) async fn watch_of<C: GenericClient>(
    c: &C,
    op: &OperationId,
) -> Result<Option<(Watch, Vec<Poll>)>, StoreError> {
    let sql = format!("SELECT {WATCH_COLUMNS} FROM watches WHERE operation_id = $1");
    let Some(row) = query_opt(c, &sql, &[&op.as_str()]).await? else { return Ok(None) };
    Ok(Some((watch_from_row(&row)?, load_polls(c, op.as_str()).await?)))
}
