//! Claims, attempt records and resends on PostgreSQL: the delivery's side of the lifecycle.
//! Claims lock their candidates with `FOR UPDATE SKIP LOCKED`, so two nodes never lease the
//! same delivery and neither waits for the other; `lifecycle::choose` decides what a claim
//! takes and `lifecycle::settle` the state after an attempt.

use super::health;
use super::rows::*;
use crate::seal::Sealer;
use crate::{ClaimRequest, Claimed, DeliveryStateChange, HealthPolicy, NextStep, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::ids::{DeliveryId, MerchantId, OperationId};
use payhook_core::lifecycle::merchant::HOLDS_DELIVERIES;
use payhook_core::lifecycle::{self, recovery, Candidate};
use payhook_core::model::{Attempt, Delivery, DeliveryState, Event, Merchant};
use payhook_core::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio_postgres::types::ToSql;

/// Starts a new attempt series now, unless a newer delivery of the operation exists or the
/// delivery is being attempted.
pub(super) async fn resend_in<C: GenericClient>(
    tx: &C,
    id: &DeliveryId,
    now: Timestamp,
) -> Result<Delivery, StoreError> {
    let d = load_delivery(tx, id.as_str(), false).await?.ok_or(StoreError::NotFound)?;
    // Lock the operation as a report does, so no newer event can appear between the check
    // below and the commit.
    query_operation(tx, "WHERE id = $1 FOR UPDATE", &[&d.operation_id.as_str()]).await?;
    if newer_delivery_exists(tx, &d.operation_id, d.seq).await? {
        return Err(StoreError::Superseded);
    }
    let row = query_opt(
        tx,
        "SELECT lease_until FROM deliveries WHERE id = $1 FOR UPDATE",
        &[&id.as_str()],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    if row.get::<_, Option<i64>>(0).is_some_and(|until| until > now.0) {
        return Err(StoreError::Conflict("the delivery is being attempted now".into()));
    }
    exec(
        tx,
        "UPDATE deliveries SET state = 'pending', series_attempts = 0,
           next_attempt_at = $2, updated_at = $2 WHERE id = $1",
        &[&id.as_str(), &now.0],
    )
    .await?;
    load_delivery(tx, id.as_str(), false).await?.ok_or(StoreError::NotFound)
}

/// A claim in a fixed number of round trips, whatever its size: one query locks the
/// candidates and answers the order questions for all of them, `lifecycle::choose` decides,
/// one statement each supersedes and leases, and two queries load what the dispatcher needs.
pub(super) async fn claim_in<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    claim: &ClaimRequest<'_>,
) -> Result<Vec<Claimed>, StoreError> {
    let busy = lifecycle::busy_hosts(claim.in_flight, claim.per_host_limit);
    let lease_until = claim.now.plus(claim.lease);
    let candidates = due_candidates(tx, claim.now, &busy, claim.limit + 16).await?;
    let choice = lifecycle::choose(candidates, claim.in_flight, claim.per_host_limit, claim.limit);
    let supersede = async {
        if choice.superseded.is_empty() {
            return Ok(0);
        }
        exec(
            tx,
            "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = $2
             WHERE id = ANY($1)",
            &[&choice.superseded, &claim.now.0],
        )
        .await
    };
    let lease = async {
        if choice.leased.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE deliveries SET lease_until = $2, leased_by = $3 WHERE id = ANY($1)
             RETURNING {DELIVERY_COLUMNS}"
        );
        query(tx, &sql, &[&choice.leased, &lease_until.0, &claim.node]).await
    };
    let (_, leased) = tokio::try_join!(supersede, lease)?;
    if leased.is_empty() {
        return Ok(Vec::new());
    }
    let mut deliveries: HashMap<String, Delivery> = HashMap::with_capacity(leased.len());
    for row in &leased {
        let d = delivery_from_row(row)?;
        deliveries.insert(d.id.as_str().to_owned(), d);
    }
    let event_ids: Vec<&str> = deliveries.values().map(|d| d.event_id.as_str()).collect();
    let mut merchant_ids: Vec<&str> = deliveries.values().map(|d| d.merchant_id.as_str()).collect();
    merchant_ids.sort_unstable();
    merchant_ids.dedup();
    let events_sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1)");
    let merchants_sql = format!("SELECT {MERCHANT_COLUMNS} FROM merchants WHERE id = ANY($1)");
    let (event_params, merchant_params): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
        ([&event_ids], [&merchant_ids]);
    let (event_rows, merchant_rows) = tokio::try_join!(
        query(tx, &events_sql, &event_params),
        query(tx, &merchants_sql, &merchant_params),
    )?;
    let mut events: HashMap<String, Event> = HashMap::with_capacity(event_rows.len());
    for row in &event_rows {
        let e = event_from_row(row)?;
        events.insert(e.id.as_str().to_owned(), e);
    }
    let mut merchants: HashMap<String, Arc<Merchant>> = HashMap::with_capacity(merchant_rows.len());
    for row in &merchant_rows {
        let m = merchant_from(sealer, row)?;
        merchants.insert(m.id.as_str().to_owned(), Arc::new(m));
    }
    let mut claimed = Vec::with_capacity(choice.leased.len());
    for id in &choice.leased {
        let delivery = deliveries.remove(id).ok_or(StoreError::NotFound)?;
        let event = events.get(delivery.event_id.as_str()).cloned().ok_or(StoreError::NotFound)?;
        let merchant =
            merchants.get(delivery.merchant_id.as_str()).cloned().ok_or(StoreError::NotFound)?;
        claimed.push(Claimed { delivery, event: Arc::new(event), merchant });
    }
    Ok(claimed)
}

/// Due, unleased deliveries, oldest due first, except those for `busy` hosts, each with its
/// per-operation order flags. The rows are locked for this transaction; rows another node is
/// claiming right now are skipped, not waited for. An older pending delivery that is itself a
/// candidate does not hold a newer one back: the claim supersedes it (it has a newer one).
async fn due_candidates<C: GenericClient>(
    tx: &C,
    now: Timestamp,
    busy: &[String],
    n: usize,
) -> Result<Vec<Candidate>, StoreError> {
    let rows = query(
        tx,
        "WITH c AS (
           SELECT id, operation_id, seq, host, next_attempt_at FROM deliveries
           WHERE state = 'pending' AND next_attempt_at <= $1
             AND (lease_until IS NULL OR lease_until <= $1)
             AND host <> ALL($2)
             AND NOT EXISTS (SELECT 1 FROM merchants m
                             WHERE m.id = deliveries.merchant_id AND m.state = $4)
           ORDER BY next_attempt_at LIMIT $3
           FOR UPDATE SKIP LOCKED
         )
         SELECT c.id, c.host,
           EXISTS (SELECT 1 FROM deliveries n
                   WHERE n.operation_id = c.operation_id AND n.seq > c.seq),
           EXISTS (SELECT 1 FROM deliveries o
                   WHERE o.operation_id = c.operation_id AND o.seq < c.seq
                     AND o.state = 'pending' AND o.id NOT IN (SELECT id FROM c))
         FROM c ORDER BY c.next_attempt_at, c.id",
        &[&now.0, &busy, &i64::try_from(n).unwrap_or(i64::MAX), &HOLDS_DELIVERIES.as_str()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                id: r.try_get(0).map_err(pg)?,
                host: r.try_get(1).map_err(pg)?,
                newer: r.try_get(2).map_err(pg)?,
                older_pending: r.try_get(3).map_err(pg)?,
            })
        })
        .collect()
}

/// Records `attempt` and the state `next` leaves its delivery in (`lifecycle::settle`),
/// releasing the lease.
pub(super) async fn record_in<C: GenericClient>(
    tx: &C,
    attempt: &Attempt,
    next: NextStep,
    now: Timestamp,
    policy: &HealthPolicy,
) -> Result<DeliveryStateChange, StoreError> {
    let d =
        load_delivery(tx, attempt.delivery_id.as_str(), true).await?.ok_or(StoreError::NotFound)?;
    insert_attempt(tx, attempt).await?;
    let destination = (d.merchant_id.to_string(), d.url.clone());
    let mut healths = health::lock(tx, &BTreeSet::from([destination.clone()])).await?;
    let delivered = next == NextStep::Delivered;
    let disabled =
        health::after_attempt(tx, policy, &mut healths, &destination, delivered, now).await?;
    health::save(tx, &healths).await?;
    let next = lifecycle::with_health(next, disabled);
    let newer = next.asks_for_newer() && newer_delivery_exists(tx, &d.operation_id, d.seq).await?;
    let settled = lifecycle::settle(&next, newer);
    if settled.disable_destination {
        disable_destination(tx, &d.merchant_id, &d.url, now).await?;
    }
    exec(
        tx,
        "UPDATE deliveries SET state = $2, attempts = GREATEST(attempts, $3),
           series_attempts = series_attempts + 1, next_attempt_at = $4,
           lease_until = NULL, leased_by = NULL, last_error = $5, updated_at = $6
         WHERE id = $1",
        &[
            &d.id.as_str(),
            &settled.state.as_str(),
            &attempt_number(attempt.number),
            &settled.next_attempt_at.map(|t| t.0),
            &settled.last_error.or(attempt.error.as_deref()),
            &now.0,
        ],
    )
    .await?;
    Ok(DeliveryStateChange { state: settled.state })
}

pub(super) async fn newer_delivery_exists<C: GenericClient>(
    c: &C,
    op: &OperationId,
    seq: i64,
) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM deliveries WHERE operation_id = $1 AND seq > $2 LIMIT 1";
    exists(c, sql, &[&op.as_str(), &seq]).await
}

pub(super) async fn disable_destination<C: GenericClient>(
    c: &C,
    merchant: &MerchantId,
    url: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO disabled_destinations (merchant_id, url, disabled_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&merchant.as_str(), &url, &now.0],
    )
    .await
    .map(|_| ())
}

/// Re-enables the merchant's destinations and queues its recoverable deliveries
/// (`lifecycle::recovery`) that ended at or after `since`; returns how many. A delivery being
/// recovered is locked by the UPDATE, so two recoveries at once queue it once.
pub(super) async fn recover_in(
    tx: &deadpool_postgres::Transaction<'_>,
    merchant: &MerchantId,
    since: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let sql = "DELETE FROM disabled_destinations WHERE merchant_id = $1";
    exec(tx, sql, &[&merchant.as_str()]).await?;
    health::reenable(tx, merchant).await?;
    let [gone, unhealthy, disabled] = recovery::cancelled_errors();
    let (exhausted, cancelled) = (recovery::EXHAUSTED.as_str(), recovery::CANCELLED.as_str());
    exec(
        tx,
        "UPDATE deliveries d SET state = $8, series_attempts = 0, next_attempt_at = $3,
           last_error = NULL, updated_at = $3
         WHERE d.merchant_id = $1 AND d.updated_at >= $2
           AND (d.state = $4 OR (d.state = $5 AND d.last_error IN ($6, $7, $9)))
           AND NOT EXISTS (SELECT 1 FROM deliveries n
                           WHERE n.operation_id = d.operation_id AND n.seq > d.seq)",
        &[
            &merchant.as_str(),
            &since.0,
            &now.0,
            &exhausted,
            &cancelled,
            &gone,
            &disabled,
            &DeliveryState::Pending.as_str(),
            &unhealthy,
        ],
    )
    .await
}
