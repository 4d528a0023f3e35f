//! Retention on PostgreSQL: one purge batch is one transaction, taken by one node at a time
//! (a transaction-scoped advisory lock; a node that finds it held skips the batch). Which rows
//! may go is `payhook_core::lifecycle::retention`'s, bound here as arrays (see `crate::purge`).
//!
//! Other nodes write meanwhile, so every delete repeats the condition on the row it deletes:
//! a delivery that a resend made pending again between the batch's read and its delete stays,
//! and the event it refers to then stays too (its foreign key fails the batch, which the next
//! run retries). Operations are locked `FOR UPDATE SKIP LOCKED`, the lock a report takes.

use super::rows::*;
use crate::purge::{ended, finals, window, ACTIVE_WATCH};
use crate::{PurgeBatch, PurgeTarget, Purged, PurgedRows, StoreError};
use deadpool_postgres::Transaction;
use payhook_core::Timestamp;

/// Runs one purge batch in `tx`; [`Purged::busy`] when another node holds the purge.
pub(super) async fn purge_in(
    tx: &Transaction<'_>,
    batch: &PurgeBatch,
) -> Result<Purged, StoreError> {
    let lock = "SELECT pg_try_advisory_xact_lock(hashtext('payhook.purge'),
                                                hashtext(current_setting('search_path')))";
    let held = query_opt(tx, lock, &[]).await?.is_some_and(|r| r.get::<_, bool>(0));
    if !held {
        return Ok(Purged { busy: true, next_after: batch.after, ..Purged::default() });
    }
    match batch.target {
        PurgeTarget::History { before } => history(tx, batch, before).await,
        PurgeTarget::Operations { before } => operations(tx, batch, before).await,
        PurgeTarget::Polls { before } => polls(tx, batch.limit, before).await,
    }
}

async fn walk(
    tx: &Transaction<'_>,
    sql: &str,
    batch: &PurgeBatch,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let rows = query(tx, sql, &[&batch.after, &i64::from(batch.limit)]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn history(
    tx: &Transaction<'_>,
    batch: &PurgeBatch,
    before: Timestamp,
) -> Result<Purged, StoreError> {
    let sql =
        "SELECT position, created_at FROM events WHERE position > $1 ORDER BY position LIMIT $2";
    let (to, done) = window(&walk(tx, sql, batch).await?, batch.after, before, batch.limit);
    let mut purged = Purged { next_after: to, done, ..Purged::default() };
    let ended = ended();
    let events = query(
        tx,
        "SELECT e.position, e.id, e.merchant_id FROM events e
         WHERE e.position > $1 AND e.position <= $2 AND e.created_at < $3
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id
               AND (d.state <> ALL($4) OR d.updated_at >= $3))",
        &[&batch.after, &to, &before.0, &ended],
    )
    .await?;
    if events.is_empty() {
        return Ok(purged);
    }
    let positions: Vec<i64> = events.iter().map(|r| r.get(0)).collect();
    let ids: Vec<String> = events.iter().map(|r| r.get(1)).collect();
    let merchants: Vec<String> = events.iter().map(|r| r.get(2)).collect();
    let of_events = "event_id = ANY($1) AND state = ANY($2) AND updated_at < $3";
    let p: Params<'_> = &[&ids, &ended, &before.0];
    purged.rows.attempts = exec(
        tx,
        &format!("DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE {of_events})"),
        p,
    )
    .await?;
    purged.rows.deliveries =
        exec(tx, &format!("DELETE FROM deliveries WHERE {of_events}"), p).await?;
    raise_horizons(tx, &merchants, &positions).await?;
    purged.rows.events =
        exec(tx, "DELETE FROM events WHERE position = ANY($1)", &[&positions]).await?;
    Ok(purged)
}

/// Moves each merchant's feed horizon up to the highest position purged (never down).
async fn raise_horizons(
    tx: &Transaction<'_>,
    merchants: &[String],
    positions: &[i64],
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO feed_horizons (merchant_id, purged_through)
         SELECT m, MAX(p) FROM unnest($1::text[], $2::bigint[]) AS t(m, p) GROUP BY m
         ON CONFLICT (merchant_id) DO UPDATE
         SET purged_through = GREATEST(feed_horizons.purged_through, excluded.purged_through)",
        &[&merchants, &positions],
    )
    .await?;
    Ok(())
}

async fn operations(
    tx: &Transaction<'_>,
    batch: &PurgeBatch,
    before: Timestamp,
) -> Result<Purged, StoreError> {
    let sql =
        "SELECT number, created_at FROM operations WHERE number > $1 ORDER BY number LIMIT $2";
    let (to, done) = window(&walk(tx, sql, batch).await?, batch.after, before, batch.limit);
    let mut purged = Purged { next_after: to, done, ..Purged::default() };
    let (ended, finals) = (ended(), finals());
    let rows = query(
        tx,
        "SELECT o.id FROM operations o
         WHERE o.number > $1 AND o.number <= $2 AND o.updated_at < $3 AND o.status = ANY($5)
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.operation_id = o.id
               AND (d.state <> ALL($4) OR d.updated_at >= $3))
           AND NOT EXISTS (SELECT 1 FROM watches w WHERE w.operation_id = o.id AND w.state = $6)
         FOR UPDATE SKIP LOCKED",
        &[&batch.after, &to, &before.0, &ended, &finals, &ACTIVE_WATCH.as_str()],
    )
    .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if ids.is_empty() {
        return Ok(purged);
    }
    let of_ops = "SELECT id FROM deliveries WHERE operation_id = ANY($1)";
    purged.rows.attempts =
        exec(tx, &format!("DELETE FROM attempts WHERE delivery_id IN ({of_ops})"), &[&ids]).await?;
    purged.rows.deliveries =
        exec(tx, "DELETE FROM deliveries WHERE operation_id = ANY($1)", &[&ids]).await?;
    let events =
        query(tx, "SELECT merchant_id, position FROM events WHERE operation_id = ANY($1)", &[&ids])
            .await?;
    let merchants: Vec<String> = events.iter().map(|r| r.get(0)).collect();
    let positions: Vec<i64> = events.iter().map(|r| r.get(1)).collect();
    raise_horizons(tx, &merchants, &positions).await?;
    let p: Params<'_> = &[&ids];
    purged.rows.events = exec(tx, "DELETE FROM events WHERE operation_id = ANY($1)", p).await?;
    purged.rows.polls = exec(tx, "DELETE FROM polls WHERE operation_id = ANY($1)", p).await?;
    purged.rows.watches = exec(tx, "DELETE FROM watches WHERE operation_id = ANY($1)", p).await?;
    purged.rows.operations = exec(tx, "DELETE FROM operations WHERE id = ANY($1)", p).await?;
    Ok(purged)
}

async fn polls(tx: &Transaction<'_>, limit: u32, before: Timestamp) -> Result<Purged, StoreError> {
    let n = exec(
        tx,
        "DELETE FROM polls WHERE ctid IN
         (SELECT ctid FROM polls WHERE started_at < $1 ORDER BY started_at LIMIT $2)",
        &[&before.0, &i64::from(limit)],
    )
    .await?;
    let rows = PurgedRows { polls: n, ..PurgedRows::default() };
    Ok(Purged { rows, done: n < u64::from(limit), ..Purged::default() })
}
