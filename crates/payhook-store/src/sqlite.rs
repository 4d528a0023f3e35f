//! The embedded SQLite store: one file, WAL journal, `synchronous=FULL`, so a commit is on disk
//! before the API answers. Writes go to one writer thread that commits them in groups
//! (`sqlite/writer.rs`); reads go to a few reader connections on blocking threads. SQLite
//! serialises writers anyway, and it keeps the store a single-node store by design.
//!
//! The same outline as `postgres.rs`: this file opens the store and maps each [`Store`]
//! method onto its module — `report` (registrations and status reports), `claim` (claims,
//! attempt records, resends), `watch` (the re-poll watchdog) — with `rows` mapping this
//! backend's rows, `cache` the writer thread's caches and `migrate` the schema. Every payment
//! decision is `payhook_core::lifecycle`'s.

mod backup;
mod cache;
mod claim;
mod health;
mod keys;
mod migrate;
mod purge;
mod report;
mod rows;
mod watch;
mod writer;

#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod writer_cache_tests;

use crate::columns::{
    merchant_from, stats_from, DELIVERY_STATS, MERCHANT_COLUMNS, NEXT_DUE, NEXT_POLL,
    PENDING_SUMMARY, WATCH_COLUMNS,
};
use crate::purge::cursor_expired;
use crate::seal::Sealer;
use crate::{
    AlertOutcome, AuditEntry, AuditQuery, AuditRecord, ClaimRequest, Claimed, ClaimedWatch,
    DeliveryStateChange, DestinationHealth, Handoff, HandoffTarget, HealthPolicy, KeyOwner,
    MerchantDeliveryStats, MerchantQuery, NewApiKey, NewOperation, NextStep, OpsAlert,
    PendingSummary, PollClaim, PollNext, PurgeBatch, PurgePace, Purged, Registered, Reported,
    StatusReport, Store, StoreError,
};
use async_trait::async_trait;
pub use backup::{backup, check, CheckReport};
use cache::forget_merchant;
pub(crate) use cache::forget_writer_caches;
use claim::ClaimPlan;
use migrate::{check_master_key, migrate};
use payhook_core::ids::{ApiKeyId, DeliveryId, MerchantId, OperationId};
use payhook_core::lifecycle::check_cursor;
use payhook_core::lifecycle::merchant::HOLDS_DELIVERIES;
use payhook_core::model::{
    ApiKey, Attempt, Delivery, Event, Merchant, MerchantState, Operation, Poll, Watch,
};
use payhook_core::Timestamp;
use report::hand_over;
use rows::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

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
    /// Health thresholds and whether alerts are queued (`set_health_policy`).
    health: Mutex<HealthPolicy>,
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
            health: Mutex::new(HealthPolicy::default()),
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

impl SqliteStore {
    fn health_policy(&self) -> HealthPolicy {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.writer.check_space().await?;
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

    async fn create_merchant(&self, m: &Merchant, key: &NewApiKey) -> Result<(), StoreError> {
        let (m, key, sealer) = (m.clone(), key.clone(), self.sealer.clone());
        self.write(move |tx| {
            insert_merchant(tx, &sealer, &m)?;
            keys::insert_key(tx, &m.id, &key)
        })
        .await
    }

    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        let id = id.clone();
        let sealer = self.sealer.clone();
        self.run(move |c| load_merchant(c, &sealer, &id)).await
    }

    async fn set_merchant_state(
        &self,
        id: &MerchantId,
        state: MerchantState,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let (id, audit, policy) = (id.clone(), audit.clone(), self.health_policy());
        self.write(move |tx| {
            forget_merchant(&id);
            let sql = "UPDATE merchants SET state = ?2, updated_at = ?3 WHERE id = ?1";
            if exec(tx, sql, params![id.as_str(), state.as_str(), audit.at.0]).map_err(backend)?
                == 0
            {
                return Err(StoreError::NotFound);
            }
            if let Some(alert) = crate::health::action_alert(&policy, &audit) {
                health::enqueue(tx, &alert, audit.at)?;
            }
            keys::write_audit(tx, &audit)
        })
        .await
    }

    async fn list_merchants(&self, q: &MerchantQuery) -> Result<Vec<Merchant>, StoreError> {
        let (q, sealer) = (q.clone(), self.sealer.clone());
        self.run(move |c| {
            let sql = format!(
                "SELECT {MERCHANT_COLUMNS} FROM merchants
                 WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR instr(lower(name), lower(?2)) > 0)
                   AND (?3 IS NULL OR dialect = ?3)
                 ORDER BY id LIMIT ?4"
            );
            let dialect = q.dialect.map(|d| d.as_str());
            let p = params![q.after, q.name, dialect, q.limit];
            query_rows(c, &sql, p, |r| merchant_from(&sealer, r))
        })
        .await
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
                health::reenable(tx, &m.id)?;
            }
            Ok(())
        })
        .await
    }

    async fn merchant_by_api_key(&self, key_hash: &str) -> Result<Option<KeyOwner>, StoreError> {
        let hash = key_hash.to_owned();
        self.run(move |c| keys::owner(c, &hash)).await
    }

    async fn touch_api_key(
        &self,
        key: &ApiKeyId,
        hour: Timestamp,
        prefix: &str,
    ) -> Result<(), StoreError> {
        let (key, prefix) = (key.clone(), prefix.to_owned());
        self.write(move |tx| keys::touch(tx, &key, hour, &prefix)).await
    }

    async fn api_keys(&self, merchant: &MerchantId) -> Result<Vec<ApiKey>, StoreError> {
        let m = merchant.clone();
        self.run(move |c| keys::list(c, &m)).await
    }

    async fn add_api_key(
        &self,
        merchant: &MerchantId,
        key: &NewApiKey,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let (m, key, audit) = (merchant.clone(), key.clone(), audit.clone());
        self.write(move |tx| keys::add(tx, &m, &key, &audit)).await
    }

    async fn revoke_api_key(
        &self,
        merchant: &MerchantId,
        key: &ApiKeyId,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let (m, key, audit) = (merchant.clone(), key.clone(), audit.clone());
        self.write(move |tx| keys::revoke(tx, &m, &key, &audit)).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let q = query.clone();
        self.run(move |c| keys::audit_page(c, &q)).await
    }

    async fn register_operation(
        &self,
        new: NewOperation,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        self.write(move |tx| report::register(tx, &new, now)).await
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
            self.write(move |tx| report::report(tx, &sealer, h.as_deref(), &report, now)).await?;
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
                        let outcome = report::report(tx, &sealer, h, report, now);
                        if outcome.is_err() && tx.changes() != before {
                            return Err(StoreError::Backend(
                                "a batch item failed after writing".into(),
                            ));
                        }
                        outcomes.push(outcome);
                        continue;
                    }
                    exec(tx, "SAVEPOINT item", []).map_err(backend)?;
                    let outcome = report::report(tx, &sealer, h, report, now);
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
            let purged_through = purge::horizon(c, merchant.as_str())?;
            if let Err(expired) = check_cursor(after, purged_through) {
                let oldest_kept = purge::oldest_position(c, merchant.as_str())?;
                return Err(cursor_expired(expired, oldest_kept));
            }
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
        self.write(move |tx| claim::resend_in(tx, &id, now)).await
    }

    async fn recover(
        &self,
        merchant: &MerchantId,
        since: Timestamp,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        // The candidates are found on a reader (a scan of the merchant's deliveries must not
        // hold the writer); the writer re-checks each as it queues it.
        let m = merchant.clone();
        let ids = self.run(move |c| claim::recoverable(c, &m, since)).await?;
        let (merchant, audit) = (merchant.clone(), audit.clone());
        self.write(move |tx| {
            let queued = claim::recover_in(tx, &merchant, &ids, audit.at)?;
            keys::write_audit(tx, &audit)?;
            Ok(queued)
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
        let ids = self.write(move |tx| claim::claim_in(tx, &plan)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The leases are committed: load the rows on a reader, off the writer thread.
        let sealer = self.sealer.clone();
        self.run(move |c| {
            let mut merchants = HashMap::new();
            ids.iter().map(|id| claim::load_claimed(c, &sealer, id, &mut merchants)).collect()
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
        let policy = self.health_policy();
        self.write(move |tx| claim::record_in(tx, &attempt, next.clone(), now, &policy)).await
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.run(|c| {
            let held = HOLDS_DELIVERIES.as_str();
            let at = c
                .prepare_cached(NEXT_DUE)
                .and_then(|mut s| s.query_row([held], |r| r.get(0)).optional());
            Ok(at.map_err(backend)?.map(Timestamp))
        })
        .await
    }

    async fn claim_polls(&self, claim: &PollClaim<'_>) -> Result<Vec<ClaimedWatch>, StoreError> {
        let (node, now, limit) = (claim.node.to_owned(), claim.now, claim.limit);
        let lease_until = now.plus(claim.lease);
        self.write(move |tx| watch::claim_in(tx, &node, now, lease_until, limit)).await
    }

    async fn record_poll(
        &self,
        poll: &Poll,
        next: PollNext,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let poll = poll.clone();
        let sealer = self.sealer.clone();
        self.write(move |tx| watch::record_in(tx, &sealer, &poll, next, now)).await
    }

    async fn watch_of(&self, op: &OperationId) -> Result<Option<(Watch, Vec<Poll>)>, StoreError> {
        let op = op.clone();
        self.run(move |c| {
            let sql = format!("SELECT {WATCH_COLUMNS} FROM watches WHERE operation_id = ?1");
            match query_rows(c, &sql, [op.as_str()], |r| crate::columns::watch_from(r))?.pop() {
                Some(w) => Ok(Some((w, load_polls(c, op.as_str())?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn next_poll_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.run(|c| earliest(c, NEXT_POLL)).await
    }

    async fn delivery_stats(&self) -> Result<Vec<MerchantDeliveryStats>, StoreError> {
        self.run(|c| query_rows(c, DELIVERY_STATS, [], |r| stats_from(r))).await
    }

    async fn pending_deliveries(&self) -> Result<PendingSummary, StoreError> {
        self.run(|c| {
            c.query_row(PENDING_SUMMARY, [], |r| {
                let count: i64 = r.get(0)?;
                let oldest: Option<i64> = r.get(1)?;
                Ok(PendingSummary {
                    count: u64::try_from(count).unwrap_or(0),
                    oldest_created_at: oldest.map(Timestamp),
                })
            })
            .map_err(backend)
        })
        .await
    }

    async fn purge(&self, batch: &PurgeBatch) -> Result<Purged, StoreError> {
        let batch = *batch;
        self.write(move |tx| purge::purge_in(tx, &batch)).await
    }

    /// Every batch holds the one writer every report waits for: small ones, far apart.
    /// Measured by `payhook bench --only purge` (BENCHMARKS.md), deleting 100,000 old
    /// operations beside 500 reports/s: batches back to back tripled the report→callback
    /// p99; these keep it within the run without purging and still delete ~4,900 rows/s,
    /// far above what a steady load leaves (a million operations a day: ~50 rows/s).
    fn purge_pace(&self) -> PurgePace {
        PurgePace { batch: 32, yield_factor: 3 }
    }

    async fn oldest_event_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.run(purge::oldest_event_at).await
    }

    fn set_health_policy(&self, policy: HealthPolicy) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    async fn destination_health(
        &self,
        merchants: Option<&[MerchantId]>,
    ) -> Result<HashMap<MerchantId, Vec<DestinationHealth>>, StoreError> {
        let m = merchants.map(<[MerchantId]>::to_vec);
        self.run(move |c| health::of_merchants(c, m.as_deref())).await
    }

    async fn claim_alerts(
        &self,
        node: &str,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OpsAlert>, StoreError> {
        let node = node.to_owned();
        let until = now.plus(lease);
        self.write(move |tx| health::claim_alerts(tx, &node, now, until, limit)).await
    }

    async fn record_alert(
        &self,
        node: &str,
        id: &str,
        outcome: &AlertOutcome,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        let (node, id, outcome) = (node.to_owned(), id.to_owned(), outcome.clone());
        self.write(move |tx| health::record_alert(tx, &node, &id, &outcome)).await
    }

    async fn next_alert_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.run(health::next_alert_at).await
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
            exec(
                tx,
                "UPDATE ops_alerts SET lease_until = NULL, leased_by = NULL
                 WHERE lease_until IS NOT NULL",
                [],
            )
            .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }
}

/// The time one `SELECT MIN(…)` answers.
fn earliest(c: &Connection, sql: &str) -> Result<Option<Timestamp>, StoreError> {
    let at: Option<i64> = c.query_row(sql, [], |r| r.get(0)).map_err(backend)?;
    Ok(at.map(Timestamp))
}
