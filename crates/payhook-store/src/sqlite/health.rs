//! Destinations' health and the operator alerts' queue on SQLite: the writer's jobs (an
//! attempt's effect on its destination, queuing, leasing and settling alerts) and the
//! readers' queries.

use super::cache::disable_destination;
use super::rows::{backend, exec, exec_prepared, query_rows, Statements};
use crate::columns::parse_id;
use crate::health::{alert_columns, by_merchant, health_alert, hours_from, hours_text, NewAlert};
use crate::{AlertOutcome, DestinationHealth, HealthPolicy, OpsAlert, StoreError};
use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::health::{self, Health};
use payhook_core::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::cell::RefCell;
use std::collections::HashMap;

fn health_from(r: &Row<'_>, first: usize) -> rusqlite::Result<(Health, String)> {
    let t = |i: usize| r.get::<_, Option<i64>>(first + i).map(|v| v.map(Timestamp));
    let health = Health {
        consecutive_failures: r.get(first)?,
        failing_since: t(1)?,
        last_success_at: t(2)?,
        last_failure_at: t(3)?,
        alerted: r.get(first + 4)?,
        hours: Vec::new(),
    };
    Ok((health, r.get(first + 5)?))
}

const HEALTH_COLUMNS: &str =
    "consecutive_failures, failing_since, last_success_at, last_failure_at, alerted, hours";

/// A destination's health in the writer thread's cache: its row (`None` until inserted) and
/// whether it differs from the row.
#[derive(Clone)]
struct Cached {
    rowid: Option<i64>,
    health: Health,
    dirty: bool,
}

type Key = (String, String);

thread_local! {
    /// Destinations' health as the writer thread last saw it: an attempt's record reads
    /// nothing, and on the fast run its write waits for the group's commit ([`flush`]), so
    /// a group's attempts to one destination write its row once. Cleared with the writer's
    /// other caches on every rollback (`forget_health`); re-enabling a merchant forgets its
    /// entries after writing them.
    static HEALTH: RefCell<HashMap<Key, Cached>> = RefCell::new(HashMap::new());
}

/// Forgets the cached health (the writer calls it on every rollback).
pub(crate) fn forget_health() {
    HEALTH.with(|cache| cache.borrow_mut().clear());
}

/// A destination's health, from the cache or its row.
fn load(tx: &impl Statements, key: &Key) -> Result<Cached, StoreError> {
    if let Some(hit) = HEALTH.with(|cache| cache.borrow().get(key).cloned()) {
        return Ok(hit);
    }
    let found = tx
        .with_sql(
            "SELECT rowid, consecutive_failures, failing_since, last_success_at, last_failure_at,
                    alerted, hours
             FROM destination_health WHERE merchant_id = ?1 AND url = ?2",
            |stmt| {
                stmt.query_row([&key.0, &key.1], |r| Ok((r.get::<_, i64>(0)?, health_from(r, 1)?)))
                    .optional()
            },
        )
        .map_err(backend)?;
    let Some((rowid, (mut health, hours))) = found else {
        return Ok(Cached { rowid: None, health: Health::default(), dirty: false });
    };
    health.hours = hours_from(&hours)?;
    Ok(Cached { rowid: Some(rowid), health, dirty: false })
}

/// Writes a cached health to its row (inserting it the first time).
fn write(tx: &impl Statements, key: &Key, entry: &mut Cached) -> Result<(), StoreError> {
    let h = &entry.health;
    let (failing, success, failure) = (
        h.failing_since.map(|t| t.0),
        h.last_success_at.map(|t| t.0),
        h.last_failure_at.map(|t| t.0),
    );
    let (hours, failures) = (hours_text(&h.hours), h.consecutive_failures);
    match entry.rowid {
        Some(rowid) => exec_prepared(
            tx,
            "UPDATE destination_health SET consecutive_failures = ?2, failing_since = ?3,
               last_success_at = ?4, last_failure_at = ?5, alerted = ?6, hours = ?7
             WHERE rowid = ?1",
            params![rowid, failures, failing, success, failure, h.alerted, hours],
        )
        .map(drop),
        None => exec_prepared(
            tx,
            "INSERT INTO destination_health (merchant_id, url, consecutive_failures,
               failing_since, last_success_at, last_failure_at, alerted, hours)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![key.0, key.1, failures, failing, success, failure, h.alerted, hours],
        )
        .map(|_| entry.rowid = Some(tx.connection().last_insert_rowid())),
    }
    .map_err(backend)?;
    entry.dirty = false;
    Ok(())
}

/// Caches a destination's new health; writes it now unless `tx` defers merged writes.
fn save(tx: &impl Statements, key: Key, mut entry: Cached) -> Result<(), StoreError> {
    entry.dirty = true;
    if !tx.defers_merged_writes() {
        write(tx, &key, &mut entry)?;
    }
    HEALTH.with(|cache| cache.borrow_mut().insert(key, entry));
    Ok(())
}

/// Writes every health the group changed (the writer calls it before COMMIT).
pub(super) fn flush(tx: &impl Statements) -> Result<(), StoreError> {
    let dirty: Vec<(Key, Cached)> = HEALTH.with(|cache| {
        let cache = cache.borrow();
        cache.iter().filter(|(_, e)| e.dirty).map(|(k, e)| (k.clone(), e.clone())).collect()
    });
    for (key, mut entry) in dirty {
        write(tx, &key, &mut entry)?;
        HEALTH.with(|cache| cache.borrow_mut().insert(key, entry));
    }
    Ok(())
}

/// Moves the destination's health on after an attempt, queues the alert it raises, and
/// disables the destination when `lifecycle::health` says so. Returns whether it did.
pub(super) fn after_attempt(
    tx: &impl Statements,
    policy: &HealthPolicy,
    merchant: &str,
    url: &str,
    delivered: bool,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let key: Key = (merchant.to_owned(), url.to_owned());
    let mut entry = load(tx, &key)?;
    let change = health::after_attempt(entry.health, delivered, now, &policy.rules);
    entry.health = change.health.clone();
    save(tx, key, entry)?;
    let id: MerchantId = parse_id(merchant)?;
    if let Some(alert) = health_alert(policy, &change, &id, url) {
        enqueue(tx.connection(), &alert, now)?;
    }
    if change.disable {
        disable_destination(tx.connection(), &id, url, now)?;
    }
    Ok(change.disable)
}

/// Re-enabling a merchant's destinations starts their runs of failures over
/// (`health::reenabled`).
pub(super) fn reenable(c: &Connection, merchant: &MerchantId) -> Result<(), StoreError> {
    flush(c)?;
    HEALTH.with(|cache| cache.borrow_mut().retain(|(m, _), _| m != merchant.as_str()));
    let sql = "UPDATE destination_health SET failing_since = NULL WHERE merchant_id = ?1";
    exec(c, sql, [merchant.as_str()]).map_err(backend)?;
    Ok(())
}

pub(super) fn enqueue(c: &Connection, a: &NewAlert, now: Timestamp) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO ops_alerts (id, kind, merchant_id, data, created_at, state, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
        params![a.id, a.kind, a.merchant.as_str(), a.data, now.0],
    )
    .map_err(backend)?;
    Ok(())
}

/// The destinations of `merchants` (or of all): every URL with a health row or disabled.
pub(super) fn of_merchants(
    c: &Connection,
    merchants: Option<&[MerchantId]>,
) -> Result<HashMap<MerchantId, Vec<DestinationHealth>>, StoreError> {
    let ids = merchants.map(|m| serde_json::json!(m).to_string());
    let among = "(?1 IS NULL OR merchant_id IN (SELECT value FROM json_each(?1)))";
    let sql =
        format!("SELECT merchant_id, url, {HEALTH_COLUMNS} FROM destination_health WHERE {among}");
    let healths = query_rows(c, &sql, [&ids], |r| {
        let key: (String, String) = (r.get(0).map_err(backend)?, r.get(1).map_err(backend)?);
        let (mut health, hours) = health_from(r, 2).map_err(backend)?;
        health.hours = hours_from(&hours)?;
        Ok((key, health))
    })?;
    let sql = format!("SELECT merchant_id, url FROM disabled_destinations WHERE {among}");
    let disabled = query_rows(c, &sql, [&ids], |r| {
        Ok((r.get::<_, String>(0).map_err(backend)?, r.get::<_, String>(1).map_err(backend)?))
    })?;
    by_merchant(healths, disabled)
}

pub(super) fn claim_alerts(
    c: &Connection,
    node: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<OpsAlert>, StoreError> {
    let sql = "UPDATE ops_alerts SET lease_until = ?3, leased_by = ?2
               WHERE id IN (SELECT id FROM ops_alerts
                            WHERE state = 'pending' AND next_attempt_at <= ?1
                              AND (lease_until IS NULL OR lease_until <= ?1)
                              AND NOT EXISTS (SELECT 1 FROM ops_alerts o
                                WHERE o.merchant_id = ops_alerts.merchant_id
                                  AND o.state = 'pending'
                                  AND (o.created_at < ops_alerts.created_at
                                       OR (o.created_at = ops_alerts.created_at
                                           AND o.id < ops_alerts.id)))
                            ORDER BY next_attempt_at, created_at, id LIMIT ?4)
               RETURNING id, kind, merchant_id, data, created_at, attempts";
    let mut alerts = query_rows(c, sql, params![now.0, node, lease_until.0, limit], |r| {
        let text = |i| r.get::<_, String>(i).map_err(backend);
        Ok(OpsAlert {
            id: text(0)?,
            kind: text(1)?,
            merchant: parse_id(&text(2)?)?,
            data: serde_json::from_str(&text(3)?)
                .map_err(|_| StoreError::Backend("malformed alert data".into()))?,
            created_at: Timestamp(r.get(4).map_err(backend)?),
            attempts: r.get(5).map_err(backend)?,
        })
    })?;
    alerts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(alerts)
}

pub(super) fn record_alert(
    c: &Connection,
    node: &str,
    id: &str,
    outcome: &AlertOutcome,
) -> Result<(), StoreError> {
    let (state, next, error) = alert_columns(outcome);
    let sql = "UPDATE ops_alerts SET state = ?2, next_attempt_at = ?3, last_error = ?4,
                 attempts = attempts + 1, lease_until = NULL, leased_by = NULL
               WHERE id = ?1 AND leased_by = ?5";
    match exec(c, sql, params![id, state, next, error, node]).map_err(backend)? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub(super) fn next_alert_at(c: &Connection) -> Result<Option<Timestamp>, StoreError> {
    let sql = "SELECT min(next_attempt_at) FROM ops_alerts
               WHERE state = 'pending' AND lease_until IS NULL";
    let at: Option<i64> = c.query_row(sql, [], |r| r.get(0)).map_err(backend)?;
    Ok(at.map(Timestamp))
}
