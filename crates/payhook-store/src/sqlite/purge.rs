//! Retention on SQLite: one purge batch is one writer job, so it commits with the group it
//! lands in and never holds the writer longer than its few hundred rows take. Which rows may
//! go is `payhook_core::lifecycle::retention`'s, bound here as lists (see `crate::purge`).

use super::rows::*;
use crate::purge::{ended_json, finals_json, window, ACTIVE_WATCH};
use crate::{PurgeBatch, PurgeTarget, Purged, PurgedRows, StoreError};
use payhook_core::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

/// The events of a window that may go: created before `?3`, every delivery they owe ended
/// (`?4`) before `?3`. (`?1`, `?2`]: the window's positions.
const PURGEABLE_EVENTS: &str = "SELECT e.position, e.merchant_id FROM events e
    WHERE e.position > ?1 AND e.position <= ?2 AND e.created_at < ?3
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_position = e.position
            AND (d.state NOT IN (SELECT value FROM json_each(?4)) OR d.updated_at >= ?3))";

/// The operations of a window that may go: a final status (`?5`) unchanged since before `?3`,
/// every delivery ended (`?4`) before `?3`, no watch in state `?6`.
const PURGEABLE_OPERATIONS: &str = "SELECT o.number, o.id FROM operations o
    WHERE o.number > ?1 AND o.number <= ?2 AND o.updated_at < ?3
      AND o.status IN (SELECT value FROM json_each(?5))
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.operation_number = o.number
          AND (d.state NOT IN (SELECT value FROM json_each(?4)) OR d.updated_at >= ?3))
      AND NOT EXISTS (SELECT 1 FROM watches w WHERE w.operation_id = o.id AND w.state = ?6)";

/// Runs one purge batch in the writer's transaction.
pub(super) fn purge_in(tx: &Connection, batch: &PurgeBatch) -> Result<Purged, StoreError> {
    match batch.target {
        PurgeTarget::History { before } => history(tx, batch, before),
        PurgeTarget::Operations { before } => operations(tx, batch, before),
        PurgeTarget::Polls { before } => polls(tx, batch.limit, before),
    }
}

/// The next rows of a walk, `(key, created_at)`.
fn walk(c: &Connection, sql: &str, after: i64, limit: u32) -> Result<Vec<(i64, i64)>, StoreError> {
    query_all(c, sql, params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))
}

fn history(tx: &Connection, batch: &PurgeBatch, before: Timestamp) -> Result<Purged, StoreError> {
    let sql =
        "SELECT position, created_at FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";
    let rows = walk(tx, sql, batch.after, batch.limit)?;
    let (to, done) = window(&rows, batch.after, before, batch.limit);
    let mut purged = Purged { next_after: to, done, ..Purged::default() };
    if to == batch.after {
        return Ok(purged);
    }
    let ended = ended_json();
    let p = params![batch.after, to, before.0, ended];
    let of_events = format!(
        "SELECT id FROM deliveries WHERE event_position IN (SELECT position FROM ({PURGEABLE_EVENTS}))"
    );
    let run = |sql: String| exec(tx, &sql, p).map(|n| n as u64).map_err(backend);
    purged.rows = PurgedRows {
        attempts: run(format!("DELETE FROM attempts WHERE delivery_id IN ({of_events})"))?,
        deliveries: run(format!("DELETE FROM deliveries WHERE id IN ({of_events})"))?,
        ..PurgedRows::default()
    };
    run(format!(
        "{RAISE_HORIZONS} SELECT merchant_id, MAX(position) FROM ({PURGEABLE_EVENTS}) WHERE true {GROUPED}"
    ))?;
    purged.rows.events = run(format!(
        "DELETE FROM events WHERE position IN (SELECT position FROM ({PURGEABLE_EVENTS}))"
    ))?;
    Ok(purged)
}

/// Moves each merchant's feed horizon up to the highest position purged (never down).
const RAISE_HORIZONS: &str = "INSERT INTO feed_horizons (merchant_id, purged_through)";
/// The tail of a horizon upsert. Its SELECT needs a WHERE (`WHERE true` at least), which keeps
/// SQLite from reading `ON CONFLICT` as a join's `ON`.
const GROUPED: &str = "GROUP BY merchant_id
    ON CONFLICT (merchant_id) DO UPDATE SET purged_through = MAX(purged_through, excluded.purged_through)";

fn operations(
    tx: &Connection,
    batch: &PurgeBatch,
    before: Timestamp,
) -> Result<Purged, StoreError> {
    let sql =
        "SELECT number, created_at FROM operations WHERE number > ?1 ORDER BY number LIMIT ?2";
    let rows = walk(tx, sql, batch.after, batch.limit)?;
    let (to, done) = window(&rows, batch.after, before, batch.limit);
    let mut purged = Purged { next_after: to, done, ..Purged::default() };
    if to == batch.after {
        return Ok(purged);
    }
    let (ended, finals) = (ended_json(), finals_json());
    let p = params![batch.after, to, before.0, ended, finals, ACTIVE_WATCH.as_str()];
    let run = |sql: String| exec(tx, &sql, p).map(|n| n as u64).map_err(backend);
    let numbers = format!("SELECT number FROM ({PURGEABLE_OPERATIONS})");
    let ids = format!("SELECT id FROM ({PURGEABLE_OPERATIONS})");
    let deliveries = format!("SELECT id FROM deliveries WHERE operation_number IN ({numbers})");
    purged.rows = PurgedRows {
        attempts: run(format!("DELETE FROM attempts WHERE delivery_id IN ({deliveries})"))?,
        deliveries: run(format!("DELETE FROM deliveries WHERE operation_number IN ({numbers})"))?,
        ..PurgedRows::default()
    };
    run(format!(
        "{RAISE_HORIZONS} SELECT merchant_id, MAX(position) FROM events
         WHERE operation_number IN ({numbers}) {GROUPED}"
    ))?;
    purged.rows.events = run(format!("DELETE FROM events WHERE operation_number IN ({numbers})"))?;
    purged.rows.polls = run(format!("DELETE FROM polls WHERE operation_id IN ({ids})"))?;
    purged.rows.watches = run(format!("DELETE FROM watches WHERE operation_id IN ({ids})"))?;
    purged.rows.operations = run(format!("DELETE FROM operations WHERE number IN ({numbers})"))?;
    Ok(purged)
}

fn polls(tx: &Connection, limit: u32, before: Timestamp) -> Result<Purged, StoreError> {
    let n = exec(
        tx,
        "DELETE FROM polls WHERE rowid IN
         (SELECT rowid FROM polls WHERE started_at < ?1 ORDER BY started_at LIMIT ?2)",
        params![before.0, limit],
    )
    .map_err(backend)? as u64;
    let rows = PurgedRows { polls: n, ..PurgedRows::default() };
    Ok(Purged { rows, done: n < u64::from(limit), ..Purged::default() })
}

/// The highest position purged for `merchant` (0: none).
pub(super) fn horizon(c: &Connection, merchant: &str) -> Result<i64, StoreError> {
    let sql = "SELECT purged_through FROM feed_horizons WHERE merchant_id = ?1";
    let h =
        c.prepare_cached(sql).and_then(|mut s| s.query_row([merchant], |r| r.get(0)).optional());
    Ok(h.map_err(backend)?.unwrap_or(0))
}

/// The oldest position kept for `merchant`.
pub(super) fn oldest_position(c: &Connection, merchant: &str) -> Result<Option<i64>, StoreError> {
    let sql = "SELECT MIN(position) FROM events WHERE merchant_id = ?1";
    c.prepare_cached(sql).and_then(|mut s| s.query_row([merchant], |r| r.get(0))).map_err(backend)
}

/// When the oldest event kept was created.
pub(super) fn oldest_event_at(c: &Connection) -> Result<Option<Timestamp>, StoreError> {
    let sql = "SELECT created_at FROM events ORDER BY position LIMIT 1";
    let t = c.prepare_cached(sql).and_then(|mut s| s.query_row([], |r| r.get(0)).optional());
    Ok(t.map_err(backend)?.map(Timestamp))
}
