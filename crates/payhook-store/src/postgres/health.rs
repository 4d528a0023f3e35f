//! Destinations' health and the operator alerts' queue on PostgreSQL. A record locks the
//! health rows of its destinations (in key order, after its deliveries) so nodes recording
//! attempts to one destination at once count every one of them.

use super::claim::disable_destination;
use super::rows::{exec, query, query_opt};
use crate::columns::parse_id;
use crate::health::{alert_columns, by_merchant, health_alert, hours_from, hours_text, NewAlert};
use crate::{AlertOutcome, DestinationHealth, HealthPolicy, OpsAlert, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::health::{self, Health};
use payhook_core::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::Row;

/// A destination: (merchant id, URL).
pub(super) type Destination = (String, String);

const HEALTH_COLUMNS: &str =
    "consecutive_failures, failing_since, last_success_at, last_failure_at, alerted, hours";

fn health_from(r: &Row, first: usize) -> Result<Health, StoreError> {
    let t = |i: usize| r.get::<_, Option<i64>>(first + i).map(Timestamp);
    Ok(Health {
        consecutive_failures: u32::try_from(r.get::<_, i64>(first)).unwrap_or(u32::MAX),
        failing_since: t(1),
        last_success_at: t(2),
        last_failure_at: t(3),
        alerted: r.get(first + 4),
        hours: hours_from(r.get(first + 5))?,
    })
}

/// Locks (creating where missing) the health rows of `destinations` and reads them: two
/// statements whatever their number, the rows locked in key order.
pub(super) async fn lock<C: GenericClient>(
    tx: &C,
    destinations: &BTreeSet<Destination>,
) -> Result<BTreeMap<Destination, Health>, StoreError> {
    if destinations.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (merchants, urls): (Vec<&str>, Vec<&str>) =
        destinations.iter().map(|(m, u)| (m.as_str(), u.as_str())).unzip();
    exec(
        tx,
        "INSERT INTO destination_health (merchant_id, url, consecutive_failures, alerted, hours)
         SELECT m, u, 0, false, '[]' FROM unnest($1::text[], $2::text[]) AS d(m, u)
         ORDER BY m, u
         ON CONFLICT DO NOTHING",
        &[&merchants, &urls],
    )
    .await?;
    let sql = format!(
        "SELECT merchant_id, url, {HEALTH_COLUMNS} FROM destination_health
         WHERE (merchant_id, url) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ORDER BY merchant_id, url
         FOR UPDATE"
    );
    let mut out = BTreeMap::new();
    for r in query(tx, &sql, &[&merchants, &urls]).await? {
        out.insert((r.get(0), r.get(1)), health_from(&r, 2)?);
    }
    Ok(out)
}

/// Moves a locked destination's health on after an attempt (in `healths`), queues the
/// alert it raises and disables the destination when `lifecycle::health` says so. Returns
/// whether it did.
pub(super) async fn after_attempt<C: GenericClient>(
    tx: &C,
    policy: &HealthPolicy,
    healths: &mut BTreeMap<Destination, Health>,
    destination: &Destination,
    delivered: bool,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let prev = healths.get(destination).cloned().unwrap_or_default();
    let change = health::after_attempt(prev, delivered, now, &policy.rules);
    let merchant: MerchantId = parse_id(&destination.0)?;
    if let Some(alert) = health_alert(policy, &change, &merchant, &destination.1) {
        enqueue(tx, &alert, now).await?;
    }
    if change.disable {
        disable_destination(tx, &merchant, &destination.1, now).await?;
    }
    healths.insert(destination.clone(), change.health);
    Ok(change.disable)
}

/// Writes back the healths `lock` read and `after_attempt` moved on, in one statement.
pub(super) async fn save<C: GenericClient>(
    tx: &C,
    healths: &BTreeMap<Destination, Health>,
) -> Result<(), StoreError> {
    if healths.is_empty() {
        return Ok(());
    }
    let time = |t: Option<Timestamp>| t.map(|t| t.0);
    let (mut m, mut u, mut f, mut fs, mut ls, mut lf, mut a, mut h) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for ((merchant, url), health) in healths {
        m.push(merchant.as_str());
        u.push(url.as_str());
        f.push(i64::from(health.consecutive_failures));
        fs.push(time(health.failing_since));
        ls.push(time(health.last_success_at));
        lf.push(time(health.last_failure_at));
        a.push(health.alerted);
        h.push(hours_text(&health.hours));
    }
    exec(
        tx,
        "UPDATE destination_health d SET consecutive_failures = v.f, failing_since = v.fs,
           last_success_at = v.ls, last_failure_at = v.lf, alerted = v.a, hours = v.h
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bool[], $8::text[]) AS v(m, u, f, fs, ls, lf, a, h)
         WHERE d.merchant_id = v.m AND d.url = v.u",
        &[&m, &u, &f, &fs, &ls, &lf, &a, &h],
    )
    .await?;
    Ok(())
}

/// Re-enabling a merchant's destinations starts their runs of failures over.
pub(super) async fn reenable<C: GenericClient>(
    c: &C,
    merchant: &MerchantId,
) -> Result<(), StoreError> {
    let sql = "UPDATE destination_health SET failing_since = NULL WHERE merchant_id = $1";
    exec(c, sql, &[&merchant.as_str()]).await?;
    Ok(())
}

pub(super) async fn enqueue<C: GenericClient>(
    c: &C,
    a: &NewAlert,
    now: Timestamp,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO ops_alerts (id, kind, merchant_id, data, created_at, state, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $5)",
        &[&a.id, &a.kind, &a.merchant.as_str(), &a.data, &now.0],
    )
    .await?;
    Ok(())
}

/// The destinations of `merchants` (or of all): every URL with a health row or disabled.
pub(super) async fn of_merchants<C: GenericClient>(
    c: &C,
    merchants: Option<&[MerchantId]>,
) -> Result<HashMap<MerchantId, Vec<DestinationHealth>>, StoreError> {
    let ids: Option<Vec<&str>> = merchants.map(|m| m.iter().map(MerchantId::as_str).collect());
    let among = "($1::text[] IS NULL OR merchant_id = ANY($1))";
    let sql =
        format!("SELECT merchant_id, url, {HEALTH_COLUMNS} FROM destination_health WHERE {among}");
    let healths = query(c, &sql, &[&ids])
        .await?
        .iter()
        .map(|r| Ok(((r.get(0), r.get(1)), health_from(r, 2)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let sql = format!("SELECT merchant_id, url FROM disabled_destinations WHERE {among}");
    let disabled = query(c, &sql, &[&ids]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
    by_merchant(healths, disabled)
}

pub(super) async fn claim_alerts<C: GenericClient>(
    c: &C,
    node: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<OpsAlert>, StoreError> {
    let sql = "UPDATE ops_alerts SET lease_until = $3, leased_by = $2
               WHERE id IN (SELECT id FROM ops_alerts
                            WHERE state = 'pending' AND next_attempt_at <= $1
                              AND (lease_until IS NULL OR lease_until <= $1)
                              AND NOT EXISTS (SELECT 1 FROM ops_alerts o
                                WHERE o.merchant_id = ops_alerts.merchant_id
                                  AND o.state = 'pending'
                                  AND (o.created_at < ops_alerts.created_at
                                       OR (o.created_at = ops_alerts.created_at
                                           AND o.id < ops_alerts.id)))
                            ORDER BY next_attempt_at, created_at, id LIMIT $4
                            FOR UPDATE SKIP LOCKED)
               RETURNING id, kind, merchant_id, data, created_at, attempts";
    let rows = query(c, sql, &[&now.0, &node, &lease_until.0, &i64::from(limit)]).await?;
    let mut alerts = rows
        .iter()
        .map(|r| {
            Ok(OpsAlert {
                id: r.get(0),
                kind: r.get(1),
                merchant: parse_id(r.get::<_, &str>(2))?,
                data: serde_json::from_str(r.get(3))
                    .map_err(|_| StoreError::Backend("malformed alert data".into()))?,
                created_at: Timestamp(r.get(4)),
                attempts: u32::try_from(r.get::<_, i64>(5)).unwrap_or(u32::MAX),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    alerts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(alerts)
}

pub(super) async fn record_alert<C: GenericClient>(
    c: &C,
    node: &str,
    id: &str,
    outcome: &AlertOutcome,
) -> Result<(), StoreError> {
    let (state, next, error) = alert_columns(outcome);
    let sql = "UPDATE ops_alerts SET state = $2, next_attempt_at = $3, last_error = $4,
                 attempts = attempts + 1, lease_until = NULL, leased_by = NULL
               WHERE id = $1 AND leased_by = $5";
    match exec(c, sql, &[&id, &state, &next, &error, &node]).await? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub(super) async fn next_alert_at<C: GenericClient>(
    c: &C,
) -> Result<Option<Timestamp>, StoreError> {
    let sql = "SELECT min(next_attempt_at) FROM ops_alerts
               WHERE state = 'pending' AND lease_until IS NULL";
    let row = query_opt(c, sql, &[]).await?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(Timestamp))
}
