//! The embedded SQLite store: one file, WAL journal, `synchronous=FULL`, so a commit is on disk
//! before the API answers. Writes go to one writer thread that commits them in groups
//! (`sqlite/writer.rs`); reads go to a few reader connections on blocking threads. SQLite serialises
//! writers anyway, and it keeps the store a single-node store by design.

mod rows;
mod writer;

use crate::seal::{self, Sealer};
use crate::{
    destination_host, mint_id, new_delivery, ClaimRequest, Claimed, ClaimedWatch,
    DeliveryStateChange, Handoff, HandoffTarget, MerchantDeliveryStats, NewOperation, NextStep,
    PendingSummary, PollClaim, PollNext, Registered, Reported, Slot, StatusReport, Store,
    StoreError,
};
use async_trait::async_trait;
use payhook_core::dialect::effective_dialect;
use payhook_core::ids::{DeliveryId, MerchantId, OperationId};
use payhook_core::model::{
    Attempt, Delivery, DeliveryKind, DeliveryState, Event, Merchant, Operation, Poll, Watch,
    WatchState,
};
use payhook_core::status::Status;
use payhook_core::status_source::StatusSource;
use payhook_core::Timestamp;
use rows::*;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_watchdog.sql")),
    (3, include_str!("../migrations/sqlite/0003_event_key_index.sql")),
    (4, include_str!("../migrations/sqlite/0004_event_own_part.sql")),
    (5, include_str!("../migrations/sqlite/0005_policies.sql")),
    (6, include_str!("../migrations/sqlite/0006_integer_refs.sql")),
];

pub struct SqliteStore {
    /// Writes go to one writer thread, which commits them in groups (see `sqlite/writer.rs`).
    writer: writer::Writer,
    /// Read-only connections; WAL lets them read while the writer commits. Each std mutex is
    /// held only inside `spawn_blocking`, never across an await.
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    /// Seals merchants' secrets on write and opens them on read (see [`crate::seal`]).
    sealer: Sealer,
    /// This node's dispatcher, to lease deliveries due at once to as they are created.
    handoff: HandoffTarget,
}

/// Read connections per store: enough for the API's reads to run beside the dispatcher's.
const READERS: usize = 4;

/// The write connection's page cache, in KiB (SQLite's default is 2,000). A group commit
/// touches a few pages per status report; with the default cache a busy group spilled dirty
/// pages into the WAL before its commit (written twice) and read the operations' pages back
/// from the file. Only the writer gets it: the readers' caches start over after every
/// commit anyway, and five large caches would show in the RSS.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies pending migrations, and checks
    /// that `sealer` holds the master key the database's secrets were sealed with: a wrong
    /// key is refused with [`StoreError::MasterKey`] before anything else happens. Secrets
    /// stored in plain text by versions before sealing are sealed in place.
    pub fn open(path: &Path, sealer: Sealer) -> Result<Self, StoreError> {
        let mut conn = connect(path)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(backend)?;
        migrate(&mut conn)?;
        check_master_key(&mut conn, &sealer)?;
        let readers =
            (0..READERS).map(|_| connect(path).map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(SqliteStore {
            writer: writer::Writer::start(conn)?,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            sealer,
            handoff: HandoffTarget::default(),
        })
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.readers[0].lock().expect("sqlite mutex poisoned by a panic");
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get(0))
            .map_err(backend)
    }

    /// Runs a read on one of the reader connections.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().expect("sqlite mutex poisoned by a panic");
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// The dispatcher to hand due deliveries to, if one is running.
    fn handoff(&self) -> Option<Arc<dyn Handoff>> {
        self.handoff.get()
    }

    /// Runs `f` in the writer's current transaction and returns once that transaction is
    /// durably committed. `f` may run twice (see `sqlite/writer.rs`); only its last run counts.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&writer::Tx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.submit(f).await
    }
}

/// Applies the migrations not applied yet, each in its own transaction. Foreign keys are off
/// meanwhile, as SQLite's procedure for rebuilding a table asks (migration 3 rebuilds
/// `events`, which deliveries refer to), and checked before each commit instead: a
/// migration that would leave a dangling reference is rolled back.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

/// Refuses a master key other than the one the database's secrets were sealed with (the check
/// value in `settings` tells), records the check value on first use, and seals secrets left
/// in plain text by versions before sealing — all in one transaction.
fn check_master_key(conn: &mut Connection, sealer: &Sealer) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
    let check: Option<String> = tx
        .query_row("SELECT value FROM settings WHERE key = ?1", [seal::CHECK_SETTING], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    match check {
        Some(check) if !sealer.verify_check(&check) => {
            return Err(StoreError::MasterKey(
                "the master key does not open this database's sealed secrets".into(),
            ));
        }
        Some(_) => {}
        None => {
            if any_sealed(&tx)? {
                return Err(StoreError::MasterKey(
                    "the database holds sealed secrets but no master key check".into(),
                ));
            }
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                params![seal::CHECK_SETTING, sealer.check_value()],
            )
            .map_err(backend)?;
        }
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

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend)).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.run(move |c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )
            .map_err(backend)?;
            tx.query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| r.get(0))
                .map_err(backend)
        })
        .await
    }

    async fn create_merchant(&self, m: &Merchant, api_key_hash: &str) -> Result<(), StoreError> {
        let (m, hash, sealer) = (m.clone(), api_key_hash.to_owned(), self.sealer.clone());
        self.write(move |tx| {
            insert_merchant(tx, &sealer, &m)?;
            exec(
                tx,
                "INSERT INTO api_keys (key_hash, merchant_id, created_at) VALUES (?1, ?2, ?3)",
                params![hash, m.id.as_str(), m.created_at.0],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        let id = id.clone();
        let sealer = self.sealer.clone();
        self.run(move |c| load_merchant(c, &sealer, &id)).await
    }

    async fn update_merchant(&self, m: &Merchant, reenable: bool) -> Result<(), StoreError> {
        let (m, sealer) = (m.clone(), self.sealer.clone());
        self.write(move |tx| {
            forget_merchant(&m.id);
            let n = update_merchant_row(tx, &sealer, &m)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            if reenable {
                exec(
                    tx,
                    "DELETE FROM disabled_destinations WHERE merchant_id = ?1",
                    [m.id.as_str()],
                )
                .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn merchant_by_api_key(&self, key_hash: &str) -> Result<Option<MerchantId>, StoreError> {
        let hash = key_hash.to_owned();
        self.run(move |c| {
            let id: Option<String> = c
                .query_row("SELECT merchant_id FROM api_keys WHERE key_hash = ?1", [hash], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?;
            id.map(|s| parse_id(&s)).transpose()
        })
        .await
    }

    async fn register_operation(
        &self,
        new: NewOperation,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        self.write(move |tx| {
            let existing = query_operation(
                tx,
                "WHERE merchant_id = ?1 AND external_id = ?2",
                params![new.merchant_id.as_str(), new.external_id],
            )?;
            if let Some((op, hash)) = existing {
                return Ok(if hash == new.request_hash {
                    Registered::Existing(op)
                } else {
                    Registered::Conflict(op)
                });
            }
            let id = mint_id(OperationId::PREFIX);
            insert_operation(tx, &id, &new, now)?;
            let (op, _) = operation_by_id(tx, &id)?
                .ok_or_else(|| StoreError::Backend("inserted operation vanished".into()))?;
            let op = insert_event(tx, op, Status::Created, None, now)?.operation;
            if let Some(source) = status_source_of(&op)? {
                insert_watch(tx, &op, &source, now)?;
            }
            Ok(Registered::Created(op))
        })
        .await
    }

    async fn get_operation(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        let id = id.clone();
        self.run(move |c| Ok(operation_by_id(c, id.as_str())?.map(|(op, _)| op))).await
    }

    async fn find_operation(
        &self,
        merchant: &MerchantId,
        external_id: &str,
    ) -> Result<Option<Operation>, StoreError> {
        let (merchant, external_id) = (merchant.clone(), external_id.to_owned());
        self.run(move |c| {
            let found = query_operation(
                c,
                "WHERE merchant_id = ?1 AND external_id = ?2",
                params![merchant.as_str(), external_id],
            )?;
            Ok(found.map(|(op, _)| op))
        })
        .await
    }

    async fn report_status(
        &self,
        report: StatusReport,
        now: Timestamp,
    ) -> Result<Reported, StoreError> {
        let (sealer, handoff) = (self.sealer.clone(), self.handoff());
        let h = handoff.clone();
        let (reported, handed) =
            self.write(move |tx| apply_report(tx, &sealer, h.as_deref(), &report, now)).await?;
        hand_over(handoff.as_deref(), &reported, handed);
        Ok(reported)
    }

    fn set_handoff(&self, handoff: Weak<dyn Handoff>) {
        self.handoff.set(handoff);
    }

    async fn report_statuses(
        &self,
        reports: Vec<StatusReport>,
        now: Timestamp,
    ) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
        let (sealer, handoff) = (self.sealer.clone(), self.handoff());
        let h = handoff.clone();
        let outcomes = self
            .write(move |tx| {
                let h = h.as_deref();
                let mut outcomes = Vec::with_capacity(reports.len());
                for report in &reports {
                    // Each item is all-or-nothing. An item that fails before writing needs no
                    // undo; one that fails after writing poisons the job, and the careful re-run
                    // gives every item its own savepoint.
                    if !tx.careful() {
                        let before = tx.changes();
                        let outcome = apply_report(tx, &sealer, h, report, now);
                        if outcome.is_err() && tx.changes() != before {
                            return Err(StoreError::Backend(
                                "a batch item failed after writing".into(),
                            ));
                        }
                        outcomes.push(outcome);
                        continue;
                    }
                    exec(tx, "SAVEPOINT item", []).map_err(backend)?;
                    let outcome = apply_report(tx, &sealer, h, report, now);
                    let undo =
                        if outcome.is_ok() { Ok(0) } else { tx.roll_back_to("ROLLBACK TO item") };
                    undo.and_then(|_| exec(tx, "RELEASE item", [])).map_err(backend)?;
                    outcomes.push(outcome);
                }
                Ok(outcomes)
            })
            .await?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map(|(reported, handed)| {
                    hand_over(handoff.as_deref(), &reported, handed);
                    reported
                })
            })
            .collect())
    }

    async fn events(
        &self,
        merchant: &MerchantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let merchant = merchant.clone();
        self.run(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM {EVENTS_JOINED}
                 WHERE e.merchant_id = ?1 AND e.position > ?2 ORDER BY e.position LIMIT ?3"
            );
            query_all(c, &sql, params![merchant.as_str(), after, limit], event_from_row)
        })
        .await
    }

    async fn list_operations(
        &self,
        merchant: Option<&MerchantId>,
        after_number: i64,
        limit: u32,
    ) -> Result<Vec<Operation>, StoreError> {
        let merchant = merchant.map(|m| m.as_str().to_owned());
        self.run(move |c| {
            query_operations(
                c,
                "WHERE (?1 IS NULL OR merchant_id = ?1) AND number > ?2 ORDER BY number LIMIT ?3",
                params![merchant, after_number, limit],
            )
        })
        .await
    }

    async fn operation_events(&self, op: &OperationId) -> Result<Vec<Event>, StoreError> {
        let op = op.clone();
        self.run(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM {EVENTS_JOINED} WHERE o.id = ?1 ORDER BY e.seq"
            );
            query_all(c, &sql, [op.as_str()], event_from_row)
        })
        .await
    }

    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let id = id.clone();
        self.run(move |c| load_delivery(c, id.as_str())).await
    }

    async fn deliveries_of(
        &self,
        op: &OperationId,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, StoreError> {
        let op = op.clone();
        self.run(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE operation_number = (SELECT number FROM operations WHERE id = ?1)
                     ORDER BY seq"
                ))
                .map_err(backend)?;
            let deliveries = stmt
                .query_map([op.as_str()], delivery_from_row)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            deliveries
                .into_iter()
                .map(|d| {
                    let attempts = load_attempts(c, d.id.as_str())?;
                    Ok((d, attempts))
                })
                .collect()
        })
        .await
    }

    async fn resend(&self, id: &DeliveryId, now: Timestamp) -> Result<Delivery, StoreError> {
        let id = id.clone();
        self.write(move |tx| {
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
        })
        .await
    }

    async fn claim_due(&self, claim: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let plan = ClaimPlan {
            node: claim.node.to_owned(),
            now: claim.now,
            lease_until: claim.now.plus(claim.lease),
            limit: claim.limit,
            in_flight: claim.in_flight.clone(),
            per_host_limit: claim.per_host_limit,
        };
        let ids = self.write(move |tx| claim_in(tx, &plan)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The leases are committed: load the rows on a reader, off the writer thread.
        let sealer = self.sealer.clone();
        self.run(move |c| {
            let mut merchants = HashMap::new();
            ids.iter().map(|id| load_claimed(c, &sealer, id, &mut merchants)).collect()
        })
        .await
    }

    async fn record_attempt(
        &self,
        attempt: &Attempt,
        next: NextStep,
        now: Timestamp,
    ) -> Result<DeliveryStateChange, StoreError> {
        let attempt = attempt.clone();
        self.write(move |tx| record_in(tx, &attempt, next.clone(), now)).await
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.run(|c| {
            let at: Option<i64> = c
                .query_row(
                    "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending' AND lease_until IS NULL",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(at.map(Timestamp))
        })
        .await
    }

    async fn claim_polls(&self, claim: &PollClaim<'_>) -> Result<Vec<ClaimedWatch>, StoreError> {
        let (node, now, limit) = (claim.node.to_owned(), claim.now, claim.limit);
        let lease_until = now.plus(claim.lease);
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {WATCH_COLUMNS} FROM watches
                     WHERE state = 'active' AND next_poll_at <= ?1
                       AND (lease_until IS NULL OR lease_until <= ?1)
                     ORDER BY next_poll_at LIMIT ?2"
                ))
                .map_err(backend)?;
            let watches = stmt
                .query_map(params![now.0, limit as i64], watch_from_row)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            let mut claimed = Vec::with_capacity(watches.len());
            for watch in watches {
                exec(
                    tx,
                    "UPDATE watches SET lease_until = ?2, leased_by = ?3 WHERE operation_id = ?1",
                    params![watch.operation_id.as_str(), lease_until.0, node],
                )
                .map_err(backend)?;
                let (operation, _) = operation_by_id(tx, watch.operation_id.as_str())?
                    .ok_or(StoreError::NotFound)?;
                claimed.push(ClaimedWatch { watch, operation });
            }
            Ok(claimed)
        })
        .await
    }

    async fn record_poll(
        &self,
        poll: &Poll,
        next: PollNext,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let poll = poll.clone();
        let sealer = self.sealer.clone();
        self.write(move |tx| record_poll_in(tx, &sealer, &poll, next, now)).await
    }

    async fn watch_of(&self, op: &OperationId) -> Result<Option<(Watch, Vec<Poll>)>, StoreError> {
        let op = op.clone();
        self.run(move |c| {
            let watch = c
                .query_row(
                    &format!("SELECT {WATCH_COLUMNS} FROM watches WHERE operation_id = ?1"),
                    [op.as_str()],
                    watch_from_row,
                )
                .optional()
                .map_err(backend)?;
            match watch {
                Some(w) => Ok(Some((w, load_polls(c, op.as_str())?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn next_poll_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.run(|c| {
            let at: Option<i64> = c
                .query_row(
                    "SELECT MIN(next_poll_at) FROM watches WHERE state = 'active'",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(at.map(Timestamp))
        })
        .await
    }

    async fn delivery_stats(&self) -> Result<Vec<MerchantDeliveryStats>, StoreError> {
        self.run(|c| query_all(c, DELIVERY_STATS, [], stats_from_row)).await
    }

    async fn pending_deliveries(&self) -> Result<PendingSummary, StoreError> {
        self.run(|c| {
            c.query_row(
                "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'pending'",
                [],
                |r| {
                    let count: i64 = r.get(0)?;
                    let oldest: Option<i64> = r.get(1)?;
                    Ok(PendingSummary {
                        count: u64::try_from(count).unwrap_or(0),
                        oldest_created_at: oldest.map(Timestamp),
                    })
                },
            )
            .map_err(backend)
        })
        .await
    }

    async fn release_leases(&self, _node: &str) -> Result<u64, StoreError> {
        // SQLite is a single-node store: every lease in the file was ours.
        self.write(|tx| {
            let n = exec(
                tx,
                "UPDATE deliveries SET lease_until = NULL, leased_by = NULL
                     WHERE lease_until IS NOT NULL",
                [],
            )
            .map_err(backend)?;
            exec(
                tx,
                "UPDATE watches SET lease_until = NULL, leased_by = NULL
                 WHERE lease_until IS NOT NULL",
                [],
            )
            .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }
}

/// A delivery leased at planning time (the report's delivery), with its merchant and slot, to
/// give the dispatcher once the commit is done.
type Handed = Option<(Arc<Merchant>, Slot)>;

/// After the commit: the leased delivery goes to the dispatcher (dropping it instead would
/// only give the slot back; the lease then expires and a claim finds the delivery). The copies
/// the dispatcher keeps are made here, off the writer thread.
fn hand_over(handoff: Option<&dyn Handoff>, reported: &Reported, handed: Handed) {
    if let (Some(h), Some(delivery), Some((merchant, slot))) = (handoff, &reported.delivery, handed)
    {
        let claimed =
            Claimed { delivery: delivery.clone(), event: reported.event.clone(), merchant };
        h.deliver(claimed, slot);
    }
}

fn apply_report(
    tx: &impl Statements,
    sealer: &Sealer,
    handoff: Option<&dyn Handoff>,
    report: &StatusReport,
    now: Timestamp,
) -> Result<(Reported, Handed), StoreError> {
    let (mut op, _) =
        operation_by_id(tx, report.operation_id.as_str())?.ok_or(StoreError::NotFound)?;
    if let Some(key) = &report.event_key {
        if let Some(event) = event_by_key(tx.connection(), &op.id, key)? {
            if event.status != report.status {
                return Err(StoreError::EventKeyConflict(key.clone()));
            }
            let reported = Reported {
                event: Arc::new(event),
                duplicate: true,
                delivery: None,
                handed_off: false,
            };
            return Ok((reported, None));
        }
    }
    op.status.check_transition(report.status)?;
    let previous_status = op.status;
    op.data.extend(report.data.iter().map(|(k, v)| (k.clone(), v.clone())));
    op.status = report.status;
    op.seq += 1;
    op.updated_at = now;
    save_operation_status(tx, &op, !report.data.is_empty())?;
    let event = insert_event(tx, op, previous_status, report.event_key.clone(), now)?;
    let op = &event.operation;
    let (delivery, handed) = plan_delivery(tx, sealer, handoff, op, &event, now)?;
    // Only operations with a status source have a watch to end.
    if op.status.is_final() && op.callback.status_source.is_some() {
        exec_prepared(
            tx,
            "UPDATE watches SET state = 'finished', next_poll_at = NULL, updated_at = ?2
             WHERE operation_id = ?1 AND state = 'active'",
            params![op.id.as_str(), now.0],
        )
        .map_err(backend)?;
    }
    let handed_off = handed.is_some();
    let event = Arc::new(event);
    Ok((Reported { event, duplicate: false, delivery, handed_off }, handed))
}

/// Supersedes the operation's older pending deliveries (those not in flight) and creates the
/// event's delivery, if its dialect sends one; leased to this node's dispatcher when it is
/// due now, nothing older of the operation is in flight, and the dispatcher has a slot or a
/// place in the host's line.
fn plan_delivery(
    tx: &impl Statements,
    sealer: &Sealer,
    handoff: Option<&dyn Handoff>,
    op: &Operation,
    event: &Event,
    now: Timestamp,
) -> Result<(Option<Delivery>, Handed), StoreError> {
    let merchant = writer_merchant(tx.connection(), sealer, &op.merchant_id)?;
    let dialect = effective_dialect(&merchant, op);
    let Some(url) = dialect.destination(&merchant, op) else { return Ok((None, None)) };
    // Most operations have nothing pending when a status arrives: one lookup then replaces
    // both the supersede UPDATE and the check for an older delivery in flight.
    let any_pending = pending_exists(tx, op.number)?;
    if any_pending {
        exec_prepared(
            tx,
            "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = ?2
             WHERE operation_number = ?1 AND state = 'pending'
               AND (lease_until IS NULL OR lease_until <= ?2)",
            params![op.number, now.0],
        )
        .map_err(backend)?;
    }
    let disabled = is_disabled(tx, &merchant.id, &url)?;
    let delivery =
        new_delivery(&merchant, op, event.id.clone(), url, DeliveryKind::Status, disabled, now)?;
    let host = host_of(&delivery.url);
    let due_now = delivery.state == DeliveryState::Pending
        && delivery.next_attempt_at.is_some_and(|at| at <= now);
    let slot = match handoff {
        Some(h)
            if due_now && !(any_pending && older_pending_exists(tx, op.number, delivery.seq)?) =>
        {
            h.reserve(&host)
        }
        _ => None,
    };
    let refs = Refs::of(event);
    let Some((h, slot)) = handoff.zip(slot) else {
        insert_leased_delivery(tx, &delivery, refs, &host, None)?;
        return Ok((Some(delivery), None));
    };
    let lease = (h.node(), now.plus(h.lease()));
    insert_leased_delivery(tx, &delivery, refs, &host, Some(lease))?;
    Ok((Some(delivery), Some((merchant, slot))))
}

thread_local! {
    /// Merchants as the writer thread last read them. Only writer jobs use it, and they run
    /// one at a time on that thread, so invalidating in the update job keeps it exact.
    static MERCHANTS: RefCell<HashMap<MerchantId, Arc<Merchant>>> = RefCell::new(HashMap::new());
    /// Each merchant's disabled destinations (URLs a 410 Gone disabled) as the writer thread
    /// last read them, so that planning a delivery needs no lookup; nearly every merchant has
    /// none. Only writer jobs disable or re-enable destinations, and they take the merchant
    /// out first.
    static DISABLED: RefCell<HashMap<MerchantId, HashSet<String>>> = RefCell::new(HashMap::new());
}

/// Forgets what the writer thread caches. The writer calls it whenever it rolls work back:
/// a job may have read, and cached, rows that the rollback takes away again.
pub(super) fn forget_writer_caches() {
    MERCHANTS.with(|cache| cache.borrow_mut().clear());
    DISABLED.with(|cache| cache.borrow_mut().clear());
    forget_policy_refs();
}

/// A merchant, from the writer thread's cache (status reports need it on every call).
fn writer_merchant(
    c: &Connection,
    sealer: &Sealer,
    id: &MerchantId,
) -> Result<Arc<Merchant>, StoreError> {
    if let Some(m) = MERCHANTS.with(|cache| cache.borrow().get(id).cloned()) {
        return Ok(m);
    }
    let m = Arc::new(load_merchant(c, sealer, id)?.ok_or(StoreError::NotFound)?);
    MERCHANTS.with(|cache| cache.borrow_mut().insert(id.clone(), m.clone()));
    Ok(m)
}

/// Forgets a merchant and its disabled destinations (an update may re-enable them).
fn forget_merchant(id: &MerchantId) {
    MERCHANTS.with(|cache| cache.borrow_mut().remove(id));
    DISABLED.with(|cache| cache.borrow_mut().remove(id));
}

/// A [`ClaimRequest`] owned, to move into the blocking thread.
struct ClaimPlan {
    node: String,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
    in_flight: HashMap<String, usize>,
    per_host_limit: usize,
}

/// The operation's status source, parsed (the API validated it at registration).
fn status_source_of(op: &Operation) -> Result<Option<StatusSource>, StoreError> {
    op.callback
        .status_source
        .as_ref()
        .map(|v| StatusSource::from_json(v).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
}

fn record_poll_in(
    tx: &Connection,
    sealer: &Sealer,
    poll: &Poll,
    next: PollNext,
    now: Timestamp,
) -> Result<(), StoreError> {
    insert_poll(tx, poll)?;
    let (state, next_at) = match next {
        PollNext::At(at) => (WatchState::Active, Some(at.0)),
        PollNext::Finished => (WatchState::Finished, None),
        PollNext::Exhausted => (WatchState::Exhausted, None),
    };
    let changed = exec(
        tx,
        "UPDATE watches SET polls = MAX(polls, ?2), state = ?3, next_poll_at = ?4,
               lease_until = NULL, leased_by = NULL, updated_at = ?5
             WHERE operation_id = ?1 AND state = 'active'",
        params![poll.operation_id.as_str(), poll.number, state.as_str(), next_at, now.0],
    )
    .map_err(backend)?;
    if changed == 1 && state == WatchState::Exhausted {
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
    let dialect = effective_dialect(&merchant, &op);
    let Some(url) = dialect.poll_timeout_destination(&merchant, &op) else { return Ok(()) };
    let (event_id, event_position): (String, i64) = tx
        .query_row(
            "SELECT id, position FROM events WHERE operation_number = ?1
             ORDER BY seq DESC LIMIT 1",
            [op.number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend)?;
    let delivery = new_delivery(
        &merchant,
        &op,
        parse_id(&event_id)?,
        url,
        DeliveryKind::PollTimeout,
        false,
        now,
    )?;
    let refs = Refs { event_position, operation_number: op.number };
    insert_leased_delivery(tx, &delivery, refs, &host_of(&delivery.url), None)
}

/// Leases due deliveries; returns their ids.
fn claim_in(tx: &Connection, plan: &ClaimPlan) -> Result<Vec<String>, StoreError> {
    let mut in_flight = plan.in_flight.clone();
    let busy: Vec<&String> =
        in_flight.iter().filter(|(_, n)| **n >= plan.per_host_limit).map(|(h, _)| h).collect();
    let busy = serde_json::to_string(&busy).expect("strings serialize");
    let now = plan.now;
    let candidates = due_candidates(tx, now, &busy, plan.limit + 16)?;
    let mut claimed = Vec::new();
    for (id, operation, seq, host) in candidates {
        if claimed.len() >= plan.limit {
            break;
        }
        let host_in_flight = in_flight.entry(host).or_insert(0);
        if *host_in_flight >= plan.per_host_limit {
            continue;
        }
        if newer_delivery_exists(tx, operation, seq)? {
            mark_superseded(tx, &id, now)?;
            continue;
        }
        if older_pending_exists(tx, operation, seq)? {
            continue; // keep per-operation order: the older one is still in flight
        }
        exec(
            tx,
            "UPDATE deliveries SET lease_until = ?2, leased_by = ?3 WHERE id = ?1",
            params![id, plan.lease_until.0, plan.node],
        )
        .map_err(backend)?;
        *host_in_flight += 1;
        claimed.push(id);
    }
    Ok(claimed)
}

/// Due, unleased deliveries, oldest due first, except those for `busy` hosts (a JSON array).
fn due_candidates(
    tx: &Connection,
    now: Timestamp,
    busy: &str,
    n: usize,
) -> Result<Vec<(String, i64, i64, String)>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, operation_number, seq, host FROM deliveries
             WHERE state = 'pending' AND next_attempt_at <= ?1
               AND (lease_until IS NULL OR lease_until <= ?1)
               AND host NOT IN (SELECT value FROM json_each(?2))
             ORDER BY next_attempt_at LIMIT ?3",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![now.0, busy, n as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

/// A claimed delivery with its event and merchant (merchants loaded once per batch).
fn load_claimed(
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

fn record_in(
    tx: &impl Statements,
    attempt: &Attempt,
    next: NextStep,
    now: Timestamp,
) -> Result<DeliveryStateChange, StoreError> {
    if next == NextStep::Delivered {
        // The common case needs nothing from the row: end it, then add the attempt (the
        // UPDATE's count is the existence check, and a missing delivery writes nothing).
        end_delivery(tx, attempt, DeliveryState::Delivered, None, now)?;
        insert_attempt(tx, attempt)?;
        return Ok(DeliveryStateChange { state: DeliveryState::Delivered });
    }
    // Only what deciding the next state needs, not the whole row (this runs per attempt).
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
    let (state, next_at) = match next {
        NextStep::Delivered => (DeliveryState::Delivered, None),
        NextStep::RetryAt(at) if newer_delivery_exists(tx, operation, seq)? => {
            let _ = at;
            (DeliveryState::Superseded, None)
        }
        NextStep::RetryAt(at) => (DeliveryState::Pending, Some(at.0)),
        NextStep::Exhausted => (DeliveryState::Exhausted, None),
        NextStep::Cancel { disable } => {
            if disable {
                disable_destination(tx.connection(), &parse_id(&merchant_id)?, &url, now)?;
            }
            (DeliveryState::Cancelled, None)
        }
    };
    end_delivery(tx, attempt, state, next_at, now)?;
    Ok(DeliveryStateChange { state })
}

/// Writes the delivery's state after `attempt` and releases its lease; `NotFound` (having
/// written nothing) when there is no such delivery.
fn end_delivery(
    tx: &impl Statements,
    attempt: &Attempt,
    state: DeliveryState,
    next_at: Option<i64>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let changed = exec_prepared(
        tx,
        "UPDATE deliveries SET state = ?2, attempts = MAX(attempts, ?3),
           series_attempts = series_attempts + 1, next_attempt_at = ?4,
           lease_until = NULL, leased_by = NULL, last_error = ?5, updated_at = ?6
         WHERE id = ?1",
        params![
            attempt.delivery_id.as_str(),
            state.as_str(),
            attempt.number,
            next_at,
            attempt.error,
            now.0
        ],
    )
    .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

// The delivery lookups below take the operation's `number`, which deliveries refer to it by
// (schema v6).

fn newer_delivery_exists(c: &impl Statements, op: i64, seq: i64) -> Result<bool, StoreError> {
    exists(c, "SELECT 1 FROM deliveries WHERE operation_number = ?1 AND seq > ?2 LIMIT 1", op, seq)
}

fn pending_exists(c: &impl Statements, op: i64) -> Result<bool, StoreError> {
    c.with_sql(
        "SELECT 1 FROM deliveries WHERE operation_number = ?1 AND state = 'pending' LIMIT 1",
        |stmt| stmt.exists([op]),
    )
    .map_err(backend)
}

fn older_pending_exists(c: &impl Statements, op: i64, seq: i64) -> Result<bool, StoreError> {
    exists(
        c,
        "SELECT 1 FROM deliveries
         WHERE operation_number = ?1 AND seq < ?2 AND state = 'pending' LIMIT 1",
        op,
        seq,
    )
}

fn exists(c: &impl Statements, sql: &'static str, op: i64, seq: i64) -> Result<bool, StoreError> {
    c.with_sql(sql, |stmt| stmt.exists(params![op, seq])).map_err(backend)
}

fn mark_superseded(tx: &Connection, id: &str, now: Timestamp) -> Result<(), StoreError> {
    exec(
        tx,
        "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = ?2
         WHERE id = ?1",
        params![id, now.0],
    )
    .map_err(backend)?;
    Ok(())
}

/// Whether deliveries to `url` are disabled for `merchant`, from the writer thread's
/// [`DISABLED`] cache: the merchant's disabled destinations are read once, then kept.
fn is_disabled(c: &impl Statements, merchant: &MerchantId, url: &str) -> Result<bool, StoreError> {
    if let Some(hit) = DISABLED.with(|known| known.borrow().get(merchant).map(|u| u.contains(url)))
    {
        return Ok(hit);
    }
    let urls = c
        .with_sql("SELECT url FROM disabled_destinations WHERE merchant_id = ?1", |stmt| {
            stmt.query_map([merchant.as_str()], |r| r.get(0))?.collect::<Result<HashSet<_>, _>>()
        })
        .map_err(backend)?;
    let hit = urls.contains(url);
    DISABLED.with(|known| known.borrow_mut().insert(merchant.clone(), urls));
    Ok(hit)
}

fn disable_destination(
    c: &Connection,
    merchant: &MerchantId,
    url: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    DISABLED.with(|known| known.borrow_mut().remove(merchant));
    exec(
        c,
        "INSERT INTO disabled_destinations (merchant_id, url, disabled_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![merchant.as_str(), url, now.0],
    )
    .map_err(backend)?;
    Ok(())
}

/// Every merchant with its deliveries counted by state (portable SQL: `SUM(CASE …)`).
const DELIVERY_STATS: &str = "
    SELECT m.id, m.name,
      COALESCE(SUM(CASE WHEN d.state = 'delivered' THEN 1 ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN d.state = 'pending' THEN 1 ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN d.state = 'exhausted' THEN 1 ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN d.state = 'cancelled' THEN 1 ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN d.state = 'superseded' THEN 1 ELSE 0 END), 0),
      MIN(CASE WHEN d.state = 'pending' THEN d.created_at END)
    FROM merchants m LEFT JOIN deliveries d ON d.merchant_id = m.id
    GROUP BY m.id, m.name, m.created_at
    ORDER BY m.created_at, m.id";

fn stats_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MerchantDeliveryStats> {
    let count = |i: usize| r.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
    let id: String = r.get(0)?;
    Ok(MerchantDeliveryStats {
        merchant_id: id.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        merchant_name: r.get(1)?,
        delivered: count(2)?,
        pending: count(3)?,
        exhausted: count(4)?,
        cancelled: count(5)?,
        superseded: count(6)?,
        oldest_pending_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
    })
}

/// Used by the row helpers for hosts of new deliveries.
pub(crate) fn host_of(url: &str) -> String {
    destination_host(url)
}

#[cfg(test)]
mod tests {
    //! Secrets at rest in the SQLite file: sealed, opened only with the right master key.

    use super::*;
    use payhook_core::dialect::Dialect;
    use payhook_core::signing::SigningSecret;
    use serde_json::json;

    const SECRET: &str = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk=";
    const OLD: &str = "whsec_b2xkLXNpZ25pbmcta2V5LTAxMjM0NTY3ODk=";

    /// The one integer a query answers (a count, a version, a setting).
    pub(super) fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    pub(super) fn merchant() -> Merchant {
        Merchant {
            encryption_key: Some(json!({"kty": "EC", "crv": "P-384", "x": "XKEY", "y": "YKEY"})),
            previous_secret: Some((SigningSecret::parse(OLD).expect("old"), Timestamp(9))),
            ..Merchant::new(
                "mer_sealed".parse().expect("id"),
                "Shop",
                Dialect::Ecom,
                Some("https://shop.example/cb".into()),
                SigningSecret::parse(SECRET).expect("secret"),
                Timestamp(1),
            )
        }
    }

    /// The secret columns exactly as stored in the file.
    fn raw_columns(path: &Path) -> Vec<Option<String>> {
        let c = Connection::open(path).expect("open raw");
        c.query_row(
            "SELECT signing_secret, previous_secret, encryption_key FROM merchants",
            [],
            |r| Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?]),
        )
        .expect("one merchant")
    }

    #[tokio::test]
    async fn secrets_are_sealed_in_the_file_and_open_with_the_right_key_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.db");
        let key = Sealer::generate_key();
        let store =
            SqliteStore::open(&path, Sealer::from_base64(&key).expect("key")).expect("open");
        store.create_merchant(&merchant(), "hash").await.expect("create");
        drop(store);

        for value in raw_columns(&path) {
            let value = value.expect("every secret column is set");
            assert!(seal::is_sealed(&value), "{value}");
            for plain in [SECRET, OLD, "XKEY", "c2VjcmV0", "b2xk"] {
                assert!(!value.contains(plain), "{plain} in plain text: {value}");
            }
        }
        let file = std::fs::read(&path).expect("read db");
        let text = String::from_utf8_lossy(&file);
        assert!(!text.contains(SECRET) && !text.contains(OLD), "a secret in the file");

        match SqliteStore::open(&path, Sealer::random()) {
            Err(StoreError::MasterKey(why)) => assert!(why.contains("does not open"), "{why}"),
            Err(e) => panic!("expected MasterKey, got {e}"),
            Ok(_) => panic!("expected MasterKey, got a store"),
        }
        let store =
            SqliteStore::open(&path, Sealer::from_base64(&key).expect("key")).expect("open");
        let m = store.get_merchant(&merchant().id).await.expect("read").expect("found");
        assert_eq!(m.signing_secret.expose(), SECRET);
        assert_eq!(m.previous_secret.as_ref().map(|(s, _)| s.expose()), Some(OLD));
        assert_eq!(m.encryption_key, merchant().encryption_key);
    }

    #[tokio::test]
    async fn secrets_written_in_plain_text_by_older_versions_are_sealed_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.db");
        let sealer = Sealer::random();
        let store = SqliteStore::open(&path, sealer.clone()).expect("open");
        store.create_merchant(&merchant(), "hash").await.expect("create");
        drop(store);
        // What a version before sealing left behind: plain columns, no check value.
        let c = Connection::open(&path).expect("raw");
        c.execute(
            "UPDATE merchants SET signing_secret = ?1, previous_secret = ?2, encryption_key = ?3",
            params![SECRET, OLD, r#"{"kty":"EC","crv":"P-384","x":"XKEY","y":"YKEY"}"#],
        )
        .expect("downgrade");
        c.execute("DELETE FROM settings WHERE key = ?1", [seal::CHECK_SETTING]).expect("no check");
        drop(c);

        let store = SqliteStore::open(&path, sealer).expect("open upgrades");
        assert!(raw_columns(&path).iter().flatten().all(|v| seal::is_sealed(v)));
        let m = store.get_merchant(&merchant().id).await.expect("read").expect("found");
        assert_eq!(m.signing_secret.expose(), SECRET);
        assert_eq!(m.encryption_key, merchant().encryption_key);
    }

    #[tokio::test]
    async fn sealed_secrets_without_a_check_value_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payhook.db");
        let store = SqliteStore::open(&path, Sealer::random()).expect("open");
        store.create_merchant(&merchant(), "hash").await.expect("create");
        drop(store);
        let c = Connection::open(&path).expect("raw");
        c.execute("DELETE FROM settings WHERE key = ?1", [seal::CHECK_SETTING]).expect("no check");
        drop(c);
        assert!(matches!(
            SqliteStore::open(&path, Sealer::random()),
            Err(StoreError::MasterKey(_))
        ));
    }
}

#[cfg(test)]
mod writer_cache_tests {
    //! The writer thread's cache of disabled destinations stays true to the database:
    //! disabling, re-enabling and a rollback all invalidate it.

    use super::*;

    const URL: &str = "https://shop.example/cb";

    async fn store() -> (tempfile::TempDir, SqliteStore, MerchantId) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            SqliteStore::open(&dir.path().join("cache.db"), Sealer::random()).expect("open");
        let m = super::tests::merchant();
        store.create_merchant(&m, "hash").await.expect("create");
        (dir, store, m.id)
    }

    /// Disables `URL` for the merchant, as a 410 Gone does.
    async fn disable(store: &SqliteStore, id: &MerchantId) {
        let id = id.clone();
        store
            .write(move |tx| disable_destination(tx.connection(), &id, URL, Timestamp(5)))
            .await
            .expect("disable");
    }

    async fn disabled(store: &SqliteStore, id: &MerchantId) -> bool {
        let id = id.clone();
        store.write(move |tx| is_disabled(tx, &id, URL)).await.expect("lookup")
    }

    #[tokio::test]
    async fn disabling_a_destination_of_a_cached_merchant_is_seen() {
        let (_dir, store, id) = store().await;
        assert!(!disabled(&store, &id).await, "nothing disabled yet");
        disable(&store, &id).await;
        assert!(disabled(&store, &id).await, "the new disabled destination must be seen");
    }

    #[tokio::test]
    async fn re_enabling_a_merchants_destinations_is_seen() {
        let (_dir, store, id) = store().await;
        disable(&store, &id).await;
        assert!(disabled(&store, &id).await, "disabled, and now cached");
        store.update_merchant(&super::tests::merchant(), true).await.expect("re-enable");
        assert!(!disabled(&store, &id).await, "the re-enabled destination must be seen");
    }

    #[tokio::test]
    async fn what_a_rolled_back_job_read_is_not_remembered() {
        let (_dir, store, id) = store().await;
        disable(&store, &id).await;
        // A job that deletes the merchant's disabled destinations, looks (and so would
        // remember that it has none), then fails after writing: it is rolled back, once with
        // its group and once alone in its savepoint.
        let m = id.clone();
        let failed = store
            .write(move |tx| {
                exec(tx, "DELETE FROM disabled_destinations WHERE merchant_id = ?1", [m.as_str()])
                    .map_err(backend)?;
                assert!(!is_disabled(tx, &m, URL)?, "inside the job the row is gone");
                Err::<(), _>(StoreError::Backend("fails after writing".into()))
            })
            .await;
        assert!(failed.is_err());
        assert!(disabled(&store, &id).await, "the rollback brought the disabled row back");
    }
}

#[cfg(test)]
mod policy_tests {
    //! Schema v5: deliveries refer to one `policies` row per distinct retry policy; the
    //! writer thread's ids of those rows never outlive a rollback.

    use super::tests::count;
    use super::*;
    use payhook_core::retry::RetryPolicy;
    use std::time::Duration;

    #[tokio::test]
    async fn deliveries_refer_to_one_row_per_policy_and_older_rows_keep_their_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("policies.db");
        let store = SqliteStore::open(&path, Sealer::random()).expect("open");
        let m = super::tests::merchant();
        store.create_merchant(&m, "hash").await.expect("create");
        let mut planned = Vec::new();
        for external_id in ["a", "b"] {
            let new = NewOperation {
                merchant_id: m.id.clone(),
                external_id: external_id.into(),
                amount: 100,
                currency: "UAH".into(),
                kind: "purchase".into(),
                callback: Default::default(),
                data: Default::default(),
                request_hash: external_id.into(),
            };
            let Registered::Created(op) =
                store.register_operation(new, Timestamp(2)).await.expect("register")
            else {
                panic!("a new operation")
            };
            let report = StatusReport {
                operation_id: op.id,
                status: Status::Success,
                data: Default::default(),
                event_key: None,
            };
            let reported = store.report_status(report, Timestamp(3)).await.expect("report");
            planned.push(reported.delivery.expect("a delivery"));
        }
        let c = Connection::open(&path).expect("open raw");
        assert_eq!(count(&c, "SELECT COUNT(*) FROM policies"), 1, "one row for both");
        assert_eq!(
            count(&c, "SELECT COUNT(*) FROM deliveries WHERE policy = '' AND policy_id = 1"),
            2
        );
        for d in &planned {
            let read = store.get_delivery(&d.id).await.expect("get").expect("exists");
            assert_eq!(read.policy, d.policy, "read back through the policies row");
        }
        // A delivery as v4 wrote it: its own policy, no reference.
        let own = RetryPolicy { delays: vec![Duration::from_secs(7)], jitter: 0.0 };
        let json = serde_json::to_string(&own).expect("json");
        c.execute(
            "UPDATE deliveries SET policy = ?1, policy_id = NULL WHERE id = ?2",
            params![json, planned[1].id.as_str()],
        )
        .expect("v4 row");
        let read = store.get_delivery(&planned[1].id).await.expect("get").expect("exists");
        assert_eq!(read.policy, own);
    }

    #[tokio::test]
    async fn a_policy_row_a_rollback_took_away_is_not_remembered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("p.db"), Sealer::random()).expect("open");
        let policy = RetryPolicy { delays: vec![Duration::from_secs(9)], jitter: 0.1 };
        let p = policy.clone();
        let failed = store
            .write(move |tx| {
                policy_ref(tx, &p)?;
                Err::<(), _>(StoreError::Backend("fails after writing".into()))
            })
            .await;
        assert!(failed.is_err());
        let rows = store
            .write(move |tx| {
                let id = policy_ref(tx, &policy)?;
                tx.query_row("SELECT COUNT(*) FROM policies WHERE id = ?1", [id], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(backend)
            })
            .await
            .expect("second job");
        assert_eq!(rows, 1, "the id names a row that exists");
    }
}

#[cfg(test)]
mod migration_tests {
    //! Migration 3 rebuilds `events` around a partial event-key index; a database at v2 must
    //! come through with the same rows, the same rules and positions that never repeat.

    use super::tests::count;
    use super::*;

    /// A database at schema v2 with one operation, three events (one with a key, positions
    /// 1, 2 and 5; the counter at 9, past a row since deleted) and a delivery of event 2.
    fn v2_database(path: &Path) {
        let mut c = Connection::open(path).expect("open");
        c.execute_batch(
            "CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .expect("migrations table");
        let tx = c.transaction().expect("tx");
        for (version, sql) in &MIGRATIONS[..2] {
            tx.execute_batch(sql).expect("v1, v2");
            tx.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).expect("v");
        }
        tx.execute_batch(
            "INSERT INTO merchants (id, name, dialect, allowed_callback_urls, settings,
                                    signing_secret, created_at, updated_at)
             VALUES ('mer_1', 'Shop', 'standard', '[]', '{}', 'secret', 1, 1);
             INSERT INTO operations (id, merchant_id, external_id, amount, currency, kind,
                                     status, seq, callback, data, request_hash, created_at,
                                     updated_at)
             VALUES ('op_1', 'mer_1', 'ext', 100, 'UAH', 'purchase', 'success', 2, '{}', '{}',
                     '', 1, 1);
             INSERT INTO events (position, id, operation_id, merchant_id, seq, status,
                                 previous_status, event_key, created_at, snapshot)
             VALUES (1, 'evt_1', 'op_1', 'mer_1', 0, 'created', 'created', NULL, 1, '{}'),
                    (2, 'evt_2', 'op_1', 'mer_1', 1, 'processing', 'created', 'k1', 2, '{}'),
                    (5, 'evt_5', 'op_1', 'mer_1', 2, 'success', 'processing', NULL, 3, '{}');
             UPDATE sqlite_sequence SET seq = 9 WHERE name = 'events';
             INSERT INTO deliveries (id, event_id, operation_id, merchant_id, seq, dialect, url,
                                     host, state, policy, created_at, updated_at)
             VALUES ('dlv_1', 'evt_2', 'op_1', 'mer_1', 1, 'standard', 'https://a.example/cb',
                     'a.example', 'delivered', '{}', 2, 2);",
        )
        .expect("rows");
        tx.commit().expect("commit");
    }

    fn events(c: &Connection) -> Vec<(i64, String, i64, Option<String>)> {
        let mut s = c
            .prepare("SELECT position, id, seq, event_key FROM events ORDER BY position")
            .expect("prepare");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn v2_events_come_through_with_their_rules_and_the_position_counter() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v2.db");
        v2_database(&path);
        let before = events(&Connection::open(&path).expect("open"));

        let mut c = connect(&path).expect("connect");
        migrate(&mut c).expect("migrate");
        assert_eq!(version(&c), MIGRATIONS.last().expect("migrations").0);
        assert_eq!(events(&c), before, "same rows, same positions");
        let fk = count(&c, "PRAGMA foreign_keys");
        assert_eq!(fk, 1, "foreign keys are back on after migrating");

        // Keyless events write no index entry; the keyed one is in the partial index.
        let indexed = count(
            &c,
            "SELECT COUNT(*) FROM events INDEXED BY events_by_key
                 WHERE operation_number = 1 AND event_key IS NOT NULL",
        );
        assert_eq!(indexed, 1);

        let insert = "INSERT INTO events (id, operation_number, merchant_id, seq, status,
                                          previous_status, event_key, created_at, snapshot)
                      VALUES (?1, 1, 'mer_1', ?2, 'success', 'success', ?3, 4, '{}')";
        // One event per operation and key, as before.
        let dup = c.execute(insert, params!["evt_dup", 3, "k1"]);
        assert!(
            matches!(&dup, Err(e) if e.to_string().contains("UNIQUE")),
            "a second event with key k1 must be refused: {dup:?}"
        );
        // One event per operation and seq, as before.
        let dup = c.execute(insert, params!["evt_seq", 2, Option::<String>::None]);
        assert!(matches!(&dup, Err(e) if e.to_string().contains("UNIQUE")), "{dup:?}");
        // Two keyless events of one operation are fine, and positions go on past the counter.
        c.execute(insert, params!["evt_new", 3, Option::<String>::None]).expect("keyless");
        let position = count(&c, "SELECT position FROM events WHERE id = 'evt_new'");
        assert_eq!(position, 10, "positions are never reused");

        // Deliveries still refer to the (rebuilt) events table.
        let dangling = c.execute(
            "INSERT INTO deliveries (id, event_position, operation_number, merchant_id, seq,
                                     dialect, url, host, state, policy, created_at, updated_at)
             VALUES ('dlv_2', 99, 1, 'mer_1', 3, 'standard', 'https://a/cb',
                     'a', 'pending', '{}', 4, 4)",
            [],
        );
        assert!(
            matches!(&dangling, Err(e) if e.to_string().contains("FOREIGN KEY")),
            "{dangling:?}"
        );
        // Migrating again changes nothing.
        migrate(&mut c).expect("migrate again");
        assert_eq!(events(&c).len(), 4);
    }

    /// A delivery of an event that does not exist, as a database before v6 lets in only with
    /// foreign keys off.
    fn add_dangling_delivery(path: &Path) {
        let c = Connection::open(path).expect("open");
        c.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO deliveries (id, event_id, operation_id, merchant_id, seq, dialect, url,
                                     host, state, policy, created_at, updated_at)
             VALUES ('dlv_x', 'evt_gone', 'op_1', 'mer_1', 9, 'standard', 'https://a/cb', 'a',
                     'pending', '{}', 4, 4);",
        )
        .expect("dangling row");
    }

    #[test]
    fn a_migration_leaving_a_dangling_reference_is_rolled_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v2.db");
        v2_database(&path);
        add_dangling_delivery(&path);
        let mut c = connect(&path).expect("connect");
        let err = migrate(&mut c).expect_err("the check refuses");
        assert!(err.to_string().contains("deliveries"), "{err}");
        assert_eq!(version(&c), 2, "migration 3 rolled back");
        let autoindex = count(
            &c,
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'sqlite_autoindex_events_3'",
        );
        assert_eq!(autoindex, 1, "the old events table is still there");
    }

    /// The operation as v3 stored it in every event: the whole of it, as JSON.
    fn whole_snapshot(seq: i64, status: Status, data: serde_json::Value) -> Operation {
        Operation {
            id: "op_1".parse().expect("id"),
            number: 1,
            merchant_id: "mer_1".parse().expect("id"),
            external_id: "ext".into(),
            amount: 100,
            currency: "UAH".into(),
            kind: "purchase".into(),
            status,
            seq,
            callback: Default::default(),
            data: data.as_object().cloned().expect("object"),
            created_at: Timestamp(1),
            // Not the event's time: read from the row, this would differ.
            updated_at: Timestamp(1000 + seq),
        }
    }

    #[tokio::test]
    async fn events_written_before_v4_are_read_from_their_whole_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v2.db");
        v2_database(&path);
        // Snapshots that differ from the operation's row (whose data is `{}`), so that reading
        // them from the row instead would show.
        let old = [
            whole_snapshot(0, Status::Created, serde_json::json!({"basket": 1})),
            whole_snapshot(1, Status::Pending, serde_json::json!({"rrn": "111"})),
            whole_snapshot(2, Status::Success, serde_json::json!({"rrn": "222"})),
        ];
        let c = Connection::open(&path).expect("open");
        for op in &old {
            let json = serde_json::to_string(op).expect("json");
            c.execute(
                "UPDATE events SET snapshot = ?1, status = ?2,
                   previous_status = CASE seq WHEN 2 THEN 'pending' ELSE previous_status END
                 WHERE seq = ?3",
                params![json, op.status.as_str(), op.seq],
            )
            .expect("snapshot");
        }
        // The fixture's merchant, with a secret a status report can sign with.
        c.execute(
            "UPDATE merchants SET signing_secret = ?1",
            ["whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk="],
        )
        .expect("secret");
        drop(c);

        let store = SqliteStore::open(&path, Sealer::random()).expect("open and migrate");
        let op_id: OperationId = "op_1".parse().expect("id");
        let read = store.operation_events(&op_id).await.expect("events");
        let ops: Vec<_> = read.iter().map(|e| e.operation.clone()).collect();
        assert_eq!(ops, old, "read from the whole snapshots");

        // A new event of the same operation stores only its own part, and reads back whole.
        let report = StatusReport {
            operation_id: op_id.clone(),
            status: Status::Success,
            data: Default::default(),
            event_key: None,
        };
        let new = store.report_status(report, Timestamp(50)).await.expect("report");
        let read = store.operation_events(&op_id).await.expect("events");
        assert_eq!(read.len(), 4);
        assert_eq!(read[3], *new.event);
        drop(store);
        let c = Connection::open(&path).expect("open");
        let stored: String = c
            .query_row("SELECT snapshot FROM events WHERE seq = 3", [], |r| r.get(0))
            .expect("snapshot");
        assert_eq!(stored, r#"{"data":{}}"#, "only the event's own part is stored");
    }

    /// The v2 fixture taken to schema v5, the last before events and deliveries referred to
    /// their operation and event by text id.
    fn v5_database(path: &Path) {
        v2_database(path);
        let mut c = Connection::open(path).expect("open");
        c.execute_batch("PRAGMA foreign_keys = OFF").expect("fk off");
        let tx = c.transaction().expect("tx");
        for (version, sql) in &MIGRATIONS[2..5] {
            tx.execute_batch(sql).expect("v3 to v5");
            tx.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).expect("v");
        }
        // Events as v4 and v5 store them (their own part of the operation), with statuses a
        // reader knows.
        tx.execute_batch(
            r#"UPDATE events SET snapshot = '{"data":{}}',
                 status = CASE seq WHEN 0 THEN 'created' WHEN 1 THEN 'pending' ELSE 'success' END,
                 previous_status = CASE seq WHEN 2 THEN 'pending' ELSE 'created' END"#,
        )
        .expect("own parts");
        tx.execute_batch(r#"UPDATE deliveries SET policy = '{"schedule":["5s"]}'"#)
            .expect("a policy");
        tx.commit().expect("commit");
    }

    fn version(c: &Connection) -> i64 {
        count(c, "SELECT MAX(version) FROM schema_migrations")
    }

    #[tokio::test]
    async fn v6_refers_by_number_and_reads_back_the_same_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v5.db");
        v5_database(&path);
        let before = events(&Connection::open(&path).expect("open"));

        let store = SqliteStore::open(&path, Sealer::random()).expect("open and migrate");
        let op_id: OperationId = "op_1".parse().expect("id");
        let read = store.operation_events(&op_id).await.expect("events");
        let ids: Vec<_> = read.iter().map(|e| (e.position, e.id.to_string())).collect();
        let expected: Vec<_> = before.iter().map(|(p, id, _, _)| (*p, id.clone())).collect();
        assert_eq!(ids, expected, "same events, same positions");
        assert!(read.iter().all(|e| e.operation_id == op_id && e.operation.id == op_id));

        let deliveries = store.deliveries_of(&op_id).await.expect("deliveries");
        assert_eq!(deliveries.len(), 1);
        let d = &deliveries[0].0;
        assert_eq!((d.id.as_str(), d.event_id.as_str()), ("dlv_1", "evt_2"));
        assert_eq!(d.operation_id, op_id);
        drop(store);

        let c = Connection::open(&path).expect("open");
        assert_eq!(version(&c), 6);
        let refs: (i64, i64) = c
            .query_row(
                "SELECT event_position, operation_number FROM deliveries WHERE id = 'dlv_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("refs");
        assert_eq!(refs, (2, 1), "the event's position and the operation's number");
        let counter = count(&c, "SELECT seq FROM sqlite_sequence WHERE name = 'events'");
        assert_eq!(counter, 9, "the position counter came through");
        let rows = count(&c, "SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'events'");
        assert_eq!(rows, 1, "one counter row for events");
    }

    #[test]
    fn v6_stops_rather_than_drop_a_delivery_whose_event_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v5.db");
        v5_database(&path);
        add_dangling_delivery(&path);
        let mut c = connect(&path).expect("connect");
        let err = migrate(&mut c).expect_err("refused");
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert_eq!(version(&c), 5, "migration 6 rolled back");
        let kept = count(&c, "SELECT COUNT(*) FROM deliveries WHERE event_id = 'evt_gone'");
        assert_eq!(kept, 1, "the v5 deliveries table, row and all, is still there");
    }

    #[test]
    fn a_database_a_newer_payhook_migrated_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("newer.db");
        drop(SqliteStore::open(&path, Sealer::random()).expect("create"));
        let c = Connection::open(&path).expect("open");
        c.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)", [])
            .expect("a newer version");
        drop(c);
        let err = SqliteStore::open(&path, Sealer::random()).err().expect("refused");
        assert!(err.to_string().contains("schema v99, newer than"), "{err}");
    }
}
