//! Opening an SQLite database: the schema migrations (history in `migrations/README.md`) and
//! the master-key check, each in its own transaction before the store serves anything.

use super::rows::{backend, exec};
use crate::columns::SEALED_MERCHANT_COLUMNS;
use crate::seal::{self, KeyCheck, Sealer};
use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_watchdog.sql")),
    (3, include_str!("../../migrations/sqlite/0003_event_key_index.sql")),
    (4, include_str!("../../migrations/sqlite/0004_event_own_part.sql")),
    (5, include_str!("../../migrations/sqlite/0005_policies.sql")),
    (6, include_str!("../../migrations/sqlite/0006_integer_refs.sql")),
    (7, include_str!("../../migrations/sqlite/0007_retention.sql")),
    (8, include_str!("../../migrations/sqlite/0008_merchant_state.sql")),
    (9, include_str!("../../migrations/sqlite/0009_keys_and_audit.sql")),
    (10, include_str!("../../migrations/sqlite/0010_health_and_alerts.sql")),
];

/// Applies the migrations not applied yet, each in its own transaction. Foreign keys are off
/// meanwhile, as SQLite's procedure for rebuilding a table asks (migrations 3 and 6 rebuild
/// tables others refer to), and checked before each commit instead: a migration that would
/// leave a dangling reference is rolled back.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(backend)?;
    refuse_newer_schema(conn)?;
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(backend)?;
    let applied = apply_migrations(conn);
    conn.execute_batch("PRAGMA foreign_keys = ON").map_err(backend)?;
    applied
}

/// Refuses a database a newer payhook has migrated: this one might misread what that one wrote
/// (v4 changed what an event stores, for one).
fn refuse_newer_schema(conn: &Connection) -> Result<(), StoreError> {
    let newest: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get(0))
        .map_err(backend)?;
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    match newest {
        Some(v) if v > known => Err(StoreError::Backend(format!(
            "the database has schema v{v}, newer than this payhook's v{known}: \
             run the payhook version that last opened it, or a newer one"
        ))),
        _ => Ok(()),
    }
}

fn apply_migrations(conn: &mut Connection) -> Result<(), StoreError> {
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let done: bool = tx
            .query_row("SELECT 1 FROM schema_migrations WHERE version = ?1", [version], |_| {
                Ok(true)
            })
            .optional()
            .map_err(backend)?
            .unwrap_or(false);
        if !done {
            tx.execute_batch(sql).map_err(backend)?;
            let dangling: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            if let Some(table) = dangling {
                return Err(StoreError::Backend(format!(
                    "after migration {version}, rows of {table} refer to rows that do not \
                     exist; the migration was rolled back"
                )));
            }
            exec(
                &tx,
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
                [version],
            )
            .map_err(backend)?;
            tracing::info!(version, "applied SQLite migration");
        }
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

/// Refuses a master key other than the one the database's secrets were sealed with (the rule
/// is [`seal::check_master_key`]), records the check value on first use, and seals secrets
/// left in plain text by versions before sealing — all in one transaction.
pub(super) fn check_master_key(conn: &mut Connection, sealer: &Sealer) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
    let stored: Option<String> = tx
        .query_row("SELECT value FROM settings WHERE key = ?1", [seal::CHECK_SETTING], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    let any_sealed = stored.is_none() && any_sealed(&tx)?;
    if let KeyCheck::Record(check) = seal::check_master_key(sealer, stored.as_deref(), any_sealed)?
    {
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)",
            params![seal::CHECK_SETTING, check],
        )
        .map_err(backend)?;
    }
    let sealed = seal_plaintext_secrets(&tx, sealer)?;
    if sealed > 0 {
        tracing::info!(sealed, "sealed merchant secrets stored in plain text by an older version");
    }
    tx.commit().map_err(backend)
}

fn any_sealed(tx: &Transaction<'_>) -> Result<bool, StoreError> {
    let like = format!("{}%", seal::PREFIX);
    for column in SEALED_MERCHANT_COLUMNS {
        let mut stmt = tx
            .prepare(&format!("SELECT 1 FROM merchants WHERE {column} LIKE ?1 LIMIT 1"))
            .map_err(backend)?;
        if stmt.exists([&like]).map_err(backend)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Seals every secret column still in plain text; returns how many values it sealed.
fn seal_plaintext_secrets(tx: &Transaction<'_>, sealer: &Sealer) -> Result<usize, StoreError> {
    let like = format!("{}%", seal::PREFIX);
    let mut count = 0;
    for column in SEALED_MERCHANT_COLUMNS {
        let plain: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT id, {column} FROM merchants
                     WHERE {column} IS NOT NULL AND {column} NOT LIKE ?1"
                ))
                .map_err(backend)?;
            let rows = stmt.query_map([&like], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)?
        };
        for (id, value) in plain {
            tx.execute(
                &format!("UPDATE merchants SET {column} = ?2 WHERE id = ?1"),
                params![id, sealer.seal(&value)],
            )
            .map_err(backend)?;
            count += 1;
        }
    }
    Ok(count)
}
