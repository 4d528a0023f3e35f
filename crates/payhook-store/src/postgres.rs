//! The PostgreSQL store: the one several `payhook serve` nodes share.
//!
//! The same outline as `sqlite.rs`: this file connects and maps each [`Store`] method onto
//! its module — `report` (registrations and status reports: check → apply → store), `plan`
//! (the delivery a change owes), `claim` (claims, attempt records, resends), `watch` (the
//! re-poll watchdog) — with `rows` mapping this backend's rows, `group` and `record` the
//! group commits, and `migrate` the schema. Every payment decision is
//! `payhook_core::lifecycle`'s. What differs from SQLite is how it holds with many writers:
//! - a report locks the operation row (`SELECT … FOR UPDATE`), so concurrent reports of one
//!   operation serialise, on any node;
//! - claims take their candidates with `FOR UPDATE SKIP LOCKED`; a lease is a time
//!   (`lease_until`): a node that dies mid-attempt loses nothing, its leases expire and
//!   another node retries;
//! - events take their feed position under a per-merchant advisory lock held to commit, so
//!   positions become visible in order and a reader's cursor never skips a late commit;
//! - commits are durable: the server's default `synchronous_commit = on` is left alone.
//!
//! Connections come from a deadpool pool; every statement is prepared once per connection
//! (`prepare_cached`). Migrations run at connect under a transaction-scoped advisory lock, so
//! nodes starting together do not race.

mod bounds;
mod claim;
mod group;
mod health;
mod keys;
mod migrate;
mod plan;
mod purge;
mod record;
mod report;
mod rows;
mod watch;

use crate::columns::{stats_from, DELIVERY_STATS, NEXT_DUE, NEXT_POLL, PENDING_SUMMARY};
use crate::purge::cursor_expired;
use crate::seal::{self, KeyCheck, Sealer};
use crate::{
    AlertOutcome, AuditEntry, AuditQuery, AuditRecord, ClaimRequest, Claimed, ClaimedWatch,
    DeliveryStateChange, DestinationHealth, Handoff, HandoffTarget, HealthPolicy, KeyOwner,
    MerchantDeliveryStats, MerchantQuery, NewApiKey, NewOperation, NextStep, OpsAlert,
    PendingSummary, PollClaim, PollNext, PurgeBatch, PurgePace, Purged, Registered, Reported,
    StatusReport, Store, StoreError,
};
use async_trait::async_trait;
use bounds::{bound, CONNECT_TIMEOUT, LONG_STATEMENT_TIMEOUT, POOL_WAIT};
pub(crate) use bounds::{bounded, driver_error, each_caller, pool_error, CALL_TIMEOUT};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use payhook_core::ids::{ApiKeyId, DeliveryId, MerchantId, OperationId};
use payhook_core::lifecycle::check_cursor;
use payhook_core::lifecycle::merchant::HOLDS_DELIVERIES;
use payhook_core::model::{
    ApiKey, Attempt, Delivery, Event, Merchant, MerchantState, Operation, Poll, Watch,
};
use payhook_core::Timestamp;
use plan::Seen;
use report::Items;
use rows::*;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::NoTls;

pub use migrate::{drop_schema, schema_bytes, vacuum_analyze};

/// Connections per node. The API's handlers and the dispatcher's claims and records share
/// them; a transaction holds one for a few round trips only.
const POOL_SIZE: usize = 16;

pub struct PgStore {
    pool: Pool,
    /// Seals merchants' secrets on write and opens them on read (see [`crate::seal`]).
    sealer: Sealer,
    /// Registrations and single reports, committed in groups (see [`group`]).
    feed: group::FeedWriter,
    /// Attempt records, committed in groups (see [`record`]).
    records: record::RecordWriter,
    /// This node's dispatcher, to lease deliveries due at once to as they are created.
    handoff: HandoffTarget,
    /// Health thresholds and whether alerts are queued (`set_health_policy`).
    health: std::sync::Mutex<HealthPolicy>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`, libpq keywords such as
    /// `?options=-csearch_path%3Dxyz` included) and applies pending migrations. `schema`, when
    /// given, becomes the `search_path` of every connection; the schema is created if missing
    /// (tests use a fresh one each for isolation).
    ///
    /// `sealer` must hold the master key the database's secrets were sealed with (every node
    /// of a cluster is given the same key): another key is refused with
    /// [`StoreError::MasterKey`] before anything is read.
    ///
    /// Starts the store's writer tasks (group commit, see `postgres/group.rs` and
    /// `postgres/record.rs`) on the current tokio runtime: use the store on that runtime.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        sealer: Sealer,
    ) -> Result<PgStore, StoreError> {
        let mut config = migrate::config(url, schema)?;
        bound(&mut config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?;
        let handoff = HandoffTarget::default();
        let feed = group::FeedWriter::start(pool.clone(), sealer.clone(), handoff.clone());
        let records = record::RecordWriter::start(pool.clone());
        let health = std::sync::Mutex::new(HealthPolicy::default());
        let store = PgStore { pool, sealer, feed, records, handoff, health };
        let mut client = store.client().await?;
        // A migration may rewrite a large table, and waits for another node's: no statement
        // timeout for it (restored for the connection's next users).
        client.batch_execute("SET statement_timeout = 0").await.map_err(pg)?;
        migrate::apply(&mut client).await?;
        client.batch_execute("RESET statement_timeout").await.map_err(pg)?;
        store.check_master_key(&mut client).await?;
        Ok(store)
    }

    /// Applies the master-key rule ([`seal::check_master_key`]). Two nodes racing at first
    /// start agree on one check value (`ON CONFLICT DO NOTHING`, then read back and checked).
    async fn check_master_key(
        &self,
        client: &mut deadpool_postgres::Client,
    ) -> Result<(), StoreError> {
        let tx = client.transaction().await.map_err(pg)?;
        let stored = self.check_value(&tx).await?;
        let sealed = format!("{}%", seal::PREFIX);
        let sql = "SELECT 1 FROM merchants WHERE signing_secret LIKE $1 LIMIT 1";
        let any_sealed = stored.is_none() && query_opt(&tx, sql, &[&sealed]).await?.is_some();
        if let KeyCheck::Record(check) =
            seal::check_master_key(&self.sealer, stored.as_deref(), any_sealed)?
        {
            exec(
                &tx,
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&seal::CHECK_SETTING, &check],
            )
            .await?;
            let recorded = self.check_value(&tx).await?;
            seal::check_master_key(&self.sealer, recorded.as_deref(), false)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn check_value(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Option<String>, StoreError> {
        let sql = "SELECT value FROM settings WHERE key = $1";
        Ok(query_opt(tx, sql, &[&seal::CHECK_SETTING]).await?.map(|r| r.get(0)))
    }

    /// The schema version after migrations.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = query_opt(&client, "SELECT MAX(version) FROM schema_migrations", &[]).await?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0))
    }

    /// How many deliveries are in each state (operators' queue depth; tests wait on it).
    pub async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let client = self.client().await?;
        let rows =
            query(&client, "SELECT state, COUNT(*) FROM deliveries GROUP BY state", &[]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The live leases `node` holds at `now`: the attempts it has in flight.
    pub async fn leases_held_by(&self, node: &str, now: Timestamp) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT COUNT(*) FROM deliveries
             WHERE leased_by = $1 AND state = 'pending' AND lease_until > $2",
            &[&node, &now.0],
        )
        .await?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Begins a transaction on a pooled connection: `let mut c = …; let tx = begin(&mut c)`.
async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client.transaction().await.map_err(pg)
}

/// [`begin`], with [`LONG_STATEMENT_TIMEOUT`] for its statements (`SET LOCAL`: it ends with
/// the transaction).
async fn begin_long(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = begin(client).await?;
    let ms = LONG_STATEMENT_TIMEOUT.as_millis();
    tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}")).await.map_err(pg)?;
    Ok(tx)
}

impl PgStore {
    fn health_policy(&self) -> HealthPolicy {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        bounded(async {
            let client = self.client().await?;
            query_opt(&client, "SELECT 1", &[]).await.map(|_| ())
        })
        .await
    }

    async fn database_time(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";
        let row = query_opt(&client, sql, &[]).await?;
        Ok(row.map(|r| Timestamp(r.get(0))))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(&client, "SELECT value FROM settings WHERE key = $1", &[&key]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let client = self.client().await?;
        exec(
            &client,
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .await?;
        let row = query_opt(&client, "SELECT value FROM settings WHERE key = $1", &[&key]).await?;
        row.map(|r| r.get(0)).ok_or(StoreError::NotFound)
    }

    async fn create_merchant(&self, m: &Merchant, key: &NewApiKey) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        insert_merchant(&tx, &self.sealer, m).await?;
        keys::insert_key(&tx, &m.id, key).await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        load_merchant(&self.client().await?, &self.sealer, id).await
    }

    async fn set_merchant_state(
        &self,
        id: &MerchantId,
        state: MerchantState,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let sql = "UPDATE merchants SET state = $2, updated_at = $3 WHERE id = $1";
        if exec(&tx, sql, &[&id.as_str(), &state.as_str(), &audit.at.0]).await? == 0 {
            return Err(StoreError::NotFound);
        }
        if let Some(alert) = crate::health::action_alert(&self.health_policy(), audit) {
            health::enqueue(&tx, &alert, audit.at).await?;
        }
        keys::write_audit(&tx, audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn list_merchants(&self, q: &MerchantQuery) -> Result<Vec<Merchant>, StoreError> {
        let client = self.client().await?;
        // COLLATE "C": ids sort by creation in byte order, which the database's collation
        // need not follow.
        let sql = format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants
             WHERE ($1::text IS NULL OR id COLLATE \"C\" > $1)
               AND ($2::text IS NULL OR strpos(lower(name), lower($2)) > 0)
               AND ($3::text IS NULL OR dialect = $3)
             ORDER BY id COLLATE \"C\" LIMIT $4"
        );
        let dialect = q.dialect.map(|d| d.as_str());
        let p: Params<'_> = &[&q.after, &q.name, &dialect, &i64::from(q.limit)];
        let rows = query(&client, &sql, p).await?;
        rows.iter().map(|r| merchant_from(&self.sealer, r)).collect()
    }

    async fn update_merchant(&self, m: &Merchant, reenable: bool) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        if update_merchant_row(&tx, &self.sealer, m).await? == 0 {
            return Err(StoreError::NotFound);
        }
        if reenable {
            exec(
                &tx,
                "DELETE FROM disabled_destinations WHERE merchant_id = $1",
                &[&m.id.as_str()],
            )
            .await?;
            health::reenable(&tx, &m.id).await?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn merchant_by_api_key(&self, key_hash: &str) -> Result<Option<KeyOwner>, StoreError> {
        keys::owner(&self.client().await?, key_hash).await
    }

    async fn touch_api_key(
        &self,
        key: &ApiKeyId,
        hour: Timestamp,
        prefix: &str,
    ) -> Result<(), StoreError> {
        keys::touch(&self.client().await?, key, hour, prefix).await
    }

    async fn api_keys(&self, merchant: &MerchantId) -> Result<Vec<ApiKey>, StoreError> {
        keys::list(&self.client().await?, merchant).await
    }

    async fn add_api_key(
        &self,
        merchant: &MerchantId,
        key: &NewApiKey,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        keys::add(&tx, merchant, key, audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn revoke_api_key(
        &self,
        merchant: &MerchantId,
        key: &ApiKeyId,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        keys::revoke(&tx, merchant, key, audit).await?;
        tx.commit().await.map_err(pg)
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        keys::audit_page(&self.client().await?, query).await
    }

    async fn register_operation(
        &self,
        new: NewOperation,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        self.feed.register(new, now).await
    }

    async fn get_operation(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        let client = self.client().await?;
        let found = query_operation(&client, "WHERE id = $1", &[&id.as_str()]).await?;
        Ok(found.map(|(op, _)| op))
    }

    async fn find_operation(
        &self,
        merchant: &MerchantId,
        external_id: &str,
    ) -> Result<Option<Operation>, StoreError> {
        let client = self.client().await?;
        let found = query_operation(
            &client,
            "WHERE merchant_id = $1 AND external_id = $2",
            &[&merchant.as_str(), &external_id],
        )
        .await?;
        Ok(found.map(|(op, _)| op))
    }

    async fn report_status(
        &self,
        report: StatusReport,
        now: Timestamp,
    ) -> Result<Reported, StoreError> {
        self.feed.report(report, now).await
    }

    fn set_handoff(&self, handoff: std::sync::Weak<dyn Handoff>) {
        self.handoff.set(handoff);
    }

    async fn report_statuses(
        &self,
        reports: Vec<StatusReport>,
        now: Timestamp,
    ) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
        // Bounded like a single report: the hand-offs it makes are leased from `now`.
        bounded(async move {
            let mut client = self.client().await?;
            // First without savepoints (a refused item has written nothing); if an item fails
            // after its checks, the batch is rolled back and run again with a savepoint per item.
            // A rolled-back run's hand-offs are dropped with its `Seen`: their slots go back.
            let tx = begin(&mut client).await?;
            let mut seen = Seen::new(self.handoff.get());
            let items: Vec<_> = reports.into_iter().map(|r| (r, now)).collect();
            match report::report_batch(&tx, &self.sealer, &mut seen, items.clone(), Items::Plain)
                .await
            {
                Ok(results) => {
                    tx.commit().await.map_err(pg)?;
                    seen.hand_over(results.iter().flatten());
                    return Ok(results);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a batch failed after its checks; again, per item");
                    drop(tx);
                }
            }
            let tx = begin(&mut client).await?;
            let mut seen = Seen::new(self.handoff.get());
            let results =
                report::report_batch(&tx, &self.sealer, &mut seen, items, Items::Savepoints)
                    .await?;
            tx.commit().await.map_err(pg)?;
            seen.hand_over(results.iter().flatten());
            Ok(results)
        })
        .await
    }

    async fn events(
        &self,
        merchant: &MerchantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT purged_through FROM feed_horizons WHERE merchant_id = $1";
        let horizon = query_opt(&client, sql, &[&merchant.as_str()]).await?;
        if let Err(expired) = check_cursor(after, horizon.map_or(0, |r| r.get(0))) {
            let sql = "SELECT MIN(position) FROM events WHERE merchant_id = $1";
            let oldest = query_opt(&client, sql, &[&merchant.as_str()]).await?;
            return Err(cursor_expired(expired, oldest.and_then(|r| r.get(0))));
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE merchant_id = $1 AND position > $2 ORDER BY position LIMIT $3"
        );
        let rows = query(&client, &sql, &[&merchant.as_str(), &after, &i64::from(limit)]).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn list_operations(
        &self,
        merchant: Option<&MerchantId>,
        after_number: i64,
        limit: u32,
    ) -> Result<Vec<Operation>, StoreError> {
        let client = self.client().await?;
        let merchant = merchant.map(MerchantId::as_str);
        query_operations(
            &client,
            "WHERE ($1::text IS NULL OR merchant_id = $1) AND number > $2 ORDER BY number LIMIT $3",
            &[&merchant, &after_number, &i64::from(limit)],
        )
        .await
    }

    async fn operation_events(&self, op: &OperationId) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE operation_id = $1 ORDER BY seq");
        let rows = query(&client, &sql, &[&op.as_str()]).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        load_delivery(&self.client().await?, id.as_str(), false).await
    }

    async fn deliveries_of(
        &self,
        op: &OperationId,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE operation_id = $1 ORDER BY seq"
        );
        let rows = query(&client, &sql, &[&op.as_str()]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let d = delivery_from_row(row)?;
            let attempts = load_attempts(&client, d.id.as_str()).await?;
            out.push((d, attempts));
        }
        Ok(out)
    }

    async fn resend(&self, id: &DeliveryId, now: Timestamp) -> Result<Delivery, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let d = claim::resend_in(&tx, id, now).await?;
        tx.commit().await.map_err(pg)?;
        Ok(d)
    }

    async fn recover(
        &self,
        merchant: &MerchantId,
        since: Timestamp,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let queued = claim::recover_in(&tx, merchant, since, audit.at).await?;
        keys::write_audit(&tx, audit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(queued)
    }

    async fn claim_due(&self, claim: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let claimed = claim::claim_in(&tx, &self.sealer, claim).await?;
        tx.commit().await.map_err(pg)?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        attempt: &Attempt,
        next: NextStep,
        now: Timestamp,
    ) -> Result<DeliveryStateChange, StoreError> {
        self.records.record(attempt, next, now, self.health_policy()).await
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(&client, NEXT_DUE, &[&HOLDS_DELIVERIES.as_str()]).await?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(Timestamp))
    }

    async fn claim_polls(&self, claim: &PollClaim<'_>) -> Result<Vec<ClaimedWatch>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let claimed = watch::claim_in(&tx, claim).await?;
        tx.commit().await.map_err(pg)?;
        Ok(claimed)
    }

    async fn record_poll(
        &self,
        poll: &Poll,
        next: PollNext,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        watch::record_in(&tx, &self.sealer, poll, next, now).await?;
        tx.commit().await.map_err(pg)
    }

    async fn watch_of(&self, op: &OperationId) -> Result<Option<(Watch, Vec<Poll>)>, StoreError> {
        watch::watch_of(&self.client().await?, op).await
    }

    async fn next_poll_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(&client, NEXT_POLL, &[]).await?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(Timestamp))
    }

    async fn delivery_stats(&self) -> Result<Vec<MerchantDeliveryStats>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin_long(&mut client).await?;
        let rows = query(&tx, DELIVERY_STATS, &[]).await?;
        rows.iter().map(stats_from).collect()
    }

    async fn pending_deliveries(&self) -> Result<PendingSummary, StoreError> {
        let client = self.client().await?;
        let row = query_opt(&client, PENDING_SUMMARY, &[]).await?.ok_or(StoreError::NotFound)?;
        let count: i64 = row.try_get(0).map_err(pg)?;
        let oldest: Option<i64> = row.try_get(1).map_err(pg)?;
        Ok(PendingSummary {
            count: u64::try_from(count).unwrap_or(0),
            oldest_created_at: oldest.map(Timestamp),
        })
    }

    async fn purge(&self, batch: &PurgeBatch) -> Result<Purged, StoreError> {
        let mut client = self.client().await?;
        let tx = begin_long(&mut client).await?;
        let purged = purge::purge_in(&tx, batch).await?;
        tx.commit().await.map_err(pg)?;
        Ok(purged)
    }

    /// Writers do not wait for one another here (row locks, MVCC): larger batches, whose
    /// round trips dominate their time, and a pause as long as the batch.
    fn purge_pace(&self) -> PurgePace {
        PurgePace { batch: 256, yield_factor: 1 }
    }

    async fn oldest_event_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT created_at FROM events ORDER BY position LIMIT 1";
        Ok(query_opt(&client, sql, &[]).await?.map(|r| Timestamp(r.get(0))))
    }

    fn set_health_policy(&self, policy: HealthPolicy) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    async fn destination_health(
        &self,
        merchants: Option<&[MerchantId]>,
    ) -> Result<HashMap<MerchantId, Vec<DestinationHealth>>, StoreError> {
        health::of_merchants(&self.client().await?, merchants).await
    }

    async fn claim_alerts(
        &self,
        node: &str,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OpsAlert>, StoreError> {
        let until = now.plus(lease);
        health::claim_alerts(&self.client().await?, node, now, until, limit).await
    }

    async fn record_alert(
        &self,
        node: &str,
        id: &str,
        outcome: &AlertOutcome,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        health::record_alert(&self.client().await?, node, id, outcome).await
    }

    async fn next_alert_at(&self) -> Result<Option<Timestamp>, StoreError> {
        health::next_alert_at(&self.client().await?).await
    }

    async fn release_leases(&self, node: &str) -> Result<u64, StoreError> {
        // Other nodes may be alive: only `node`'s own leases (a previous run under the same
        // node id) are freed. Leases of nodes that died under other ids simply expire.
        let client = self.client().await?;
        let n = exec(
            &client,
            "UPDATE deliveries SET lease_until = NULL, leased_by = NULL WHERE leased_by = $1",
            &[&node],
        )
        .await?;
        exec(
            &client,
            "UPDATE watches SET lease_until = NULL, leased_by = NULL WHERE leased_by = $1",
            &[&node],
        )
        .await?;
        exec(
            &client,
            "UPDATE ops_alerts SET lease_until = NULL, leased_by = NULL WHERE leased_by = $1",
            &[&node],
        )
        .await?;
        Ok(n)
    }
}
