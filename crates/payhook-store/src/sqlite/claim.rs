//! Claims, attempt records and resends on SQLite: the delivery's side of the lifecycle. The
//! claim asks one query for the due candidates and what per-operation order says of each, and
//! `lifecycle::choose` decides; a record writes the state `lifecycle::settle` gives.

use super::cache::{disable_destination, forget_merchant};
use super::health;
use super::rows::*;
use crate::columns::parse_id;
use crate::seal::Sealer;
use crate::{Claimed, DeliveryStateChange, HealthPolicy, NextStep, StoreError};
use payhook_core::ids::{DeliveryId, MerchantId};
use payhook_core::lifecycle::merchant::HOLDS_DELIVERIES;
use payhook_core::lifecycle::{self, recovery, Candidate, Settled};
use payhook_core::model::{Attempt, Delivery, DeliveryState, Merchant};
use payhook_core::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::Arc;

/// A claim, owned, to move onto the writer thread.
pub(super) struct ClaimPlan {
    pub node: String,
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub limit: usize,
    pub in_flight: HashMap<String, usize>,
    pub per_host_limit: usize,
}

/// Leases due deliveries as `lifecycle::choose` decides; returns their ids.
pub(super) fn claim_in(tx: &Connection, plan: &ClaimPlan) -> Result<Vec<String>, StoreError> {
    let busy = lifecycle::busy_hosts(&plan.in_flight, plan.per_host_limit);
    let busy = serde_json::to_string(&busy).expect("strings serialize");
    let candidates = due_candidates(tx, plan.now, &busy, plan.limit + 16)?;
    let choice = lifecycle::choose(candidates, &plan.in_flight, plan.per_host_limit, plan.limit);
    for id in &choice.superseded {
        exec(
            tx,
            "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = ?2
             WHERE id = ?1",
            params![id, plan.now.0],
        )
        .map_err(backend)?;
    }
    for id in &choice.leased {
        exec(
            tx,
            "UPDATE deliveries SET lease_until = ?2, leased_by = ?3 WHERE id = ?1",
            params![id, plan.lease_until.0, plan.node],
        )
        .map_err(backend)?;
    }
    Ok(choice.leased)
}

/// Due, unleased deliveries, oldest due first, except those for `busy` hosts (a JSON array),
/// each with its per-operation order flags (see [`Candidate`]).
fn due_candidates(
    tx: &Connection,
    now: Timestamp,
    busy: &str,
    n: usize,
) -> Result<Vec<Candidate>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "WITH c AS MATERIALIZED (
               SELECT id, operation_number, seq, host, next_attempt_at FROM deliveries
               WHERE state = 'pending' AND next_attempt_at <= ?1
                 AND (lease_until IS NULL OR lease_until <= ?1)
                 AND host NOT IN (SELECT value FROM json_each(?2))
                 AND NOT EXISTS (SELECT 1 FROM merchants m
                                 WHERE m.id = deliveries.merchant_id AND m.state = ?4)
               ORDER BY next_attempt_at LIMIT ?3
             )
             SELECT c.id, c.host,
               EXISTS (SELECT 1 FROM deliveries n
                       WHERE n.operation_number = c.operation_number AND n.seq > c.seq),
               EXISTS (SELECT 1 FROM deliveries o
                       WHERE o.operation_number = c.operation_number AND o.seq < c.seq
                         AND o.state = 'pending' AND o.id NOT IN (SELECT id FROM c))
             FROM c ORDER BY c.next_attempt_at, c.id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![now.0, busy, n as i64, HOLDS_DELIVERIES.as_str()], |r| {
            Ok(Candidate {
                id: r.get(0)?,
                host: r.get(1)?,
                newer: r.get(2)?,
                older_pending: r.get(3)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

/// A claimed delivery with its event and merchant (merchants loaded once per batch).
pub(super) fn load_claimed(
    c: &Connection,
    sealer: &Sealer,
    id: &str,
    merchants: &mut HashMap<MerchantId, Arc<Merchant>>,
) -> Result<Claimed, StoreError> {
    let delivery = load_delivery(c, id)?.ok_or(StoreError::NotFound)?;
    let event = load_event(c, delivery.event_id.as_str())?.ok_or(StoreError::NotFound)?;
    let merchant = match merchants.get(&delivery.merchant_id) {
        Some(m) => m.clone(),
        None => {
            let m = load_merchant(c, sealer, &delivery.merchant_id)?.ok_or(StoreError::NotFound)?;
            let m = Arc::new(m);
            merchants.insert(m.id.clone(), m.clone());
            m
        }
    };
    Ok(Claimed { delivery, event: Arc::new(event), merchant })
}

/// Records `attempt` and the state `next` leaves its delivery in, releasing the lease.
pub(super) fn record_in(
    tx: &impl Statements,
    attempt: &Attempt,
    next: NextStep,
    now: Timestamp,
    policy: &HealthPolicy,
) -> Result<DeliveryStateChange, StoreError> {
    if next == NextStep::Delivered {
        // The common case needs nothing from the row before: end it (its merchant and URL
        // come back for the health), then add the attempt; a missing delivery writes nothing.
        let settled = lifecycle::settle(&next, false);
        let (merchant, url) = end_delivery(tx, attempt, settled, now)?;
        insert_attempt(tx, attempt)?;
        health::after_attempt(tx, policy, &merchant, &url, true, now)?;
        return Ok(DeliveryStateChange { state: settled.state });
    }
    // Only what settling needs, not the whole row (this runs per attempt).
    let (operation, seq, merchant_id, url): (i64, i64, String, String) = tx
        .with_sql(
            "SELECT operation_number, seq, merchant_id, url FROM deliveries WHERE id = ?1",
            |stmt| {
                stmt.query_row([attempt.delivery_id.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
            },
        )
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    insert_attempt(tx, attempt)?;
    let disabled = health::after_attempt(tx, policy, &merchant_id, &url, false, now)?;
    let next = lifecycle::with_health(next, disabled);
    let newer = next.asks_for_newer() && newer_delivery_exists(tx, operation, seq)?;
    let settled = lifecycle::settle(&next, newer);
    if settled.disable_destination {
        disable_destination(tx.connection(), &parse_id(&merchant_id)?, &url, now)?;
    }
    end_delivery(tx, attempt, settled, now)?;
    Ok(DeliveryStateChange { state: settled.state })
}

/// Writes the delivery's state after `attempt` and releases its lease; returns its merchant
/// and URL. `NotFound` (having written nothing) when there is no such delivery.
fn end_delivery(
    tx: &impl Statements,
    attempt: &Attempt,
    settled: Settled,
    now: Timestamp,
) -> Result<(String, String), StoreError> {
    tx.with_sql(
        "UPDATE deliveries SET state = ?2, attempts = MAX(attempts, ?3),
           series_attempts = series_attempts + 1, next_attempt_at = ?4,
           lease_until = NULL, leased_by = NULL, last_error = ?5, updated_at = ?6
         WHERE id = ?1
         RETURNING merchant_id, url",
        |stmt| {
            stmt.query_row(
                params![
                    attempt.delivery_id.as_str(),
                    settled.state.as_str(),
                    attempt.number,
                    settled.next_attempt_at.map(|t| t.0),
                    settled.last_error.or(attempt.error.as_deref()),
                    now.0
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        },
    )
    .map_err(backend)?
    .ok_or(StoreError::NotFound)
}

/// Starts a new attempt series now, unless a newer delivery of the operation exists or the
/// delivery is being attempted.
pub(super) fn resend_in(
    tx: &Connection,
    id: &DeliveryId,
    now: Timestamp,
) -> Result<Delivery, StoreError> {
    let (operation, seq, leased): (i64, i64, Option<i64>) = tx
        .query_row(
            "SELECT operation_number, seq, lease_until FROM deliveries WHERE id = ?1",
            [id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    if newer_delivery_exists(tx, operation, seq)? {
        return Err(StoreError::Superseded);
    }
    if leased.is_some_and(|until| until > now.0) {
        return Err(StoreError::Conflict("the delivery is being attempted now".into()));
    }
    exec(
        tx,
        "UPDATE deliveries SET state = 'pending', series_attempts = 0,
           next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1",
        params![id.as_str(), now.0],
    )
    .map_err(backend)?;
    load_delivery(tx, id.as_str())?.ok_or(StoreError::NotFound)
}

fn newer_delivery_exists(c: &impl Statements, op: i64, seq: i64) -> Result<bool, StoreError> {
    c.with_sql(
        "SELECT 1 FROM deliveries WHERE operation_number = ?1 AND seq > ?2 LIMIT 1",
        |stmt| stmt.exists(params![op, seq]),
    )
    .map_err(backend)
}

/// Recoverable, and the latest of its operation (`lifecycle::recovery`): `?3` exhausted, or
/// `?4` cancelled with error `?5`, `?6` or `?7`.
const RECOVERABLE: &str = "(state = ?3 OR (state = ?4 AND last_error IN (?5, ?6, ?7)))
    AND NOT EXISTS (SELECT 1 FROM deliveries n
                    WHERE n.operation_number = deliveries.operation_number
                      AND n.seq > deliveries.seq)";

/// The merchant's deliveries that recovery would queue, ended at or after `since`.
pub(super) fn recoverable(
    c: &Connection,
    merchant: &MerchantId,
    since: Timestamp,
) -> Result<Vec<String>, StoreError> {
    let [gone, unhealthy, disabled] = recovery::cancelled_errors();
    let (exhausted, cancelled) = (recovery::EXHAUSTED.as_str(), recovery::CANCELLED.as_str());
    let sql = format!(
        "SELECT id FROM deliveries WHERE merchant_id = ?1 AND updated_at >= ?2 AND {RECOVERABLE}"
    );
    let p = params![merchant.as_str(), since.0, exhausted, cancelled, gone, unhealthy, disabled];
    query_all(c, &sql, p, |r| r.get(0))
}

/// Re-enables the merchant's destinations and queues each delivery of `ids` that is still
/// recoverable; returns how many it queued.
pub(super) fn recover_in(
    tx: &Connection,
    merchant: &MerchantId,
    ids: &[String],
    now: Timestamp,
) -> Result<u64, StoreError> {
    forget_merchant(merchant);
    let sql = "DELETE FROM disabled_destinations WHERE merchant_id = ?1";
    exec(tx, sql, [merchant.as_str()]).map_err(backend)?;
    health::reenable(tx, merchant)?;
    let [gone, unhealthy, disabled] = recovery::cancelled_errors();
    let (exhausted, cancelled) = (recovery::EXHAUSTED.as_str(), recovery::CANCELLED.as_str());
    let pending = DeliveryState::Pending.as_str();
    let sql = format!(
        "UPDATE deliveries SET state = ?8, series_attempts = 0, next_attempt_at = ?2,
           last_error = NULL, updated_at = ?2
         WHERE id = ?1 AND {RECOVERABLE}"
    );
    let mut queued = 0;
    for id in ids {
        let p = params![id, now.0, exhausted, cancelled, gone, unhealthy, disabled, pending];
        queued += exec(tx, &sql, p).map_err(backend)? as u64;
    }
    Ok(queued)
}
