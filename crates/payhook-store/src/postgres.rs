//! The PostgreSQL store: the one several `payhook serve` nodes share.
//!
//! Semantics are those of [`crate::sqlite`], method for method; what differs is how they hold
//! with many writers at once:
//! - `report_status` locks the operation row (`SELECT … FOR UPDATE`), so concurrent reports of
//!   one operation serialise, on any node.
//! - `claim_due` takes its candidates with `FOR UPDATE SKIP LOCKED`: two nodes never lease the
//!   same delivery, and neither waits for the other. A lease is a time (`lease_until`): a node
//!   that dies mid-attempt loses nothing, its leases expire and another node retries.
//! - Events take their feed position under a per-merchant advisory lock held to commit, so
//!   positions become visible in order and a reader's cursor never skips a late commit.
//! - Commits are durable: the server's default `synchronous_commit = on` is left alone.
//!
//! Connections come from a deadpool pool; every statement is prepared once per connection
//! (`prepare_cached`). Migrations run at connect under a transaction-scoped advisory lock, so
//! nodes starting together do not race.

mod group;
mod migrate;
mod record;
mod rows;
mod watch;

use crate::seal::{self, Sealer};
use crate::{
    destination_host, mint_id, new_delivery, ClaimRequest, Claimed, ClaimedWatch,
    DeliveryStateChange, Handoff, HandoffTarget, MerchantDeliveryStats, NewOperation, NextStep,
    PendingSummary, PollClaim, PollNext, Registered, Reported, Slot, StatusReport, Store,
    StoreError,
};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::{join_all, try_join_all};
use payhook_core::dialect::effective_dialect;
use payhook_core::ids::{DeliveryId, MerchantId, OperationId};
use payhook_core::model::{
    Attempt, Delivery, DeliveryKind, DeliveryState, Event, Merchant, Operation, Poll, Watch,
};
use payhook_core::status::Status;
use payhook_core::Timestamp;
use rows::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

pub use migrate::{drop_schema, vacuum_analyze};

/// Connections per node. The API's handlers and the dispatcher's claims and records share
/// them; a transaction holds one for a few round trips only.
const POOL_SIZE: usize = 16;
/// How long opening a connection may take before the store reports the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
        let config = migrate::config(url, schema)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?;
        let handoff = HandoffTarget::default();
        let feed = group::FeedWriter::start(pool.clone(), sealer.clone(), handoff.clone());
        let records = record::RecordWriter::start(pool.clone());
        let store = PgStore { pool, sealer, feed, records, handoff };
        let mut client = store.client().await?;
        migrate::apply(&mut client).await?;
        store.check_master_key(&mut client).await?;
        Ok(store)
    }

    /// Records the master key's check value on first use (two nodes racing at first start agree
    /// on one: `ON CONFLICT DO NOTHING`, then read back), and refuses a key that does not match.
    async fn check_master_key(
        &self,
        client: &mut deadpool_postgres::Client,
    ) -> Result<(), StoreError> {
        let tx = client.transaction().await.map_err(pg)?;
        let sealed_exists = query_opt(
            &tx,
            "SELECT 1 FROM merchants WHERE signing_secret LIKE $1 LIMIT 1",
            &[&format!("{}%", seal::PREFIX)],
        )
        .await?
        .is_some();
        let inserted = exec(
            &tx,
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&seal::CHECK_SETTING, &self.sealer.check_value()],
        )
        .await?;
        if inserted == 1 && sealed_exists {
            return Err(StoreError::MasterKey(
                "the database holds sealed secrets but no master key check".into(),
            ));
        }
        let row =
            query_opt(&tx, "SELECT value FROM settings WHERE key = $1", &[&seal::CHECK_SETTING])
                .await?
                .ok_or_else(|| StoreError::Backend("the master key check vanished".into()))?;
        if !self.sealer.verify_check(row.get::<_, &str>(0)) {
            return Err(StoreError::MasterKey(
                "the master key does not open this database's sealed secrets".into(),
            ));
        }
        tx.commit().await.map_err(pg)
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
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg(e),
            other => StoreError::Backend(format!("PostgreSQL pool: {}", with_sources(&other))),
        })
    }
}

/// Begins a transaction on a pooled connection: `let mut c = …; let tx = begin(&mut c)`.
async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client.transaction().await.map_err(pg)
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        query_opt(&client, "SELECT 1", &[]).await.map(|_| ())
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

    async fn create_merchant(&self, m: &Merchant, api_key_hash: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        insert_merchant(&tx, &self.sealer, m).await?;
        exec(
            &tx,
            "INSERT INTO api_keys (key_hash, merchant_id, created_at) VALUES ($1, $2, $3)",
            &[&api_key_hash, &m.id.as_str(), &m.created_at.0],
        )
        .await?;
        tx.commit().await.map_err(pg)
    }

    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        load_merchant(&self.client().await?, &self.sealer, id).await
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
        }
        tx.commit().await.map_err(pg)
    }

    async fn merchant_by_api_key(&self, key_hash: &str) -> Result<Option<MerchantId>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT merchant_id FROM api_keys WHERE key_hash = $1";
        let row = query_opt(&client, sql, &[&key_hash]).await?;
        row.map(|r| parse_id(r.get::<_, &str>(0))).transpose()
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
        let mut client = self.client().await?;
        // First without savepoints (a refused item has written nothing); if an item fails
        // after its checks, the batch is rolled back and run again with a savepoint per item.
        // A rolled-back run's hand-offs are dropped with its `Seen`: their slots go back.
        let tx = begin(&mut client).await?;
        let mut seen = Seen::new(self.handoff.get());
        match apply_reports(&tx, &self.sealer, &mut seen, reports.clone(), now, Items::Checked)
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
            apply_reports(&tx, &self.sealer, &mut seen, reports, now, Items::Savepoints).await?;
        tx.commit().await.map_err(pg)?;
        seen.hand_over(results.iter().flatten());
        Ok(results)
    }

    async fn events(
        &self,
        merchant: &MerchantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
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
        let d = resend_in(&tx, id, now).await?;
        tx.commit().await.map_err(pg)?;
        Ok(d)
    }

    async fn claim_due(&self, claim: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let claimed = claim_in(&tx, &self.sealer, claim).await?;
        tx.commit().await.map_err(pg)?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        attempt: &Attempt,
        next: NextStep,
        now: Timestamp,
    ) -> Result<DeliveryStateChange, StoreError> {
        self.records.record(attempt, next, now).await
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending' AND lease_until IS NULL";
        let row = query_opt(&client, sql, &[]).await?;
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
        let sql = "SELECT MIN(next_poll_at) FROM watches WHERE state = 'active'";
        let row = query_opt(&client, sql, &[]).await?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(Timestamp))
    }

    async fn delivery_stats(&self) -> Result<Vec<MerchantDeliveryStats>, StoreError> {
        let client = self.client().await?;
        let rows = query(&client, DELIVERY_STATS, &[]).await?;
        rows.iter().map(stats_from_row).collect()
    }

    async fn pending_deliveries(&self) -> Result<PendingSummary, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'pending'";
        let row = query_opt(&client, sql, &[]).await?.ok_or(StoreError::NotFound)?;
        let count: i64 = row.try_get(0).map_err(pg)?;
        let oldest: Option<i64> = row.try_get(1).map_err(pg)?;
        Ok(PendingSummary {
            count: u64::try_from(count).unwrap_or(0),
            oldest_created_at: oldest.map(Timestamp),
        })
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
        Ok(n)
    }
}

/// Registers idempotently: `ON CONFLICT` waits for a concurrent registration of the same
/// external id to commit, so exactly one request creates (with its `created` event and, for
/// a status source, its watch) and the others find its row.
async fn register_in<C: GenericClient>(
    tx: &C,
    new: &NewOperation,
    now: Timestamp,
) -> Result<Registered, StoreError> {
    let (registered, event) = prepare_register(tx, new, now).await?;
    if let Some(mut event) = event {
        lock_feed(tx, &event.merchant_id).await?;
        store_event(tx, &mut event).await?;
    }
    Ok(registered)
}

/// A registration up to its `created` event, which the caller stores after taking the feed
/// lock (`None` when nothing was created).
async fn prepare_register<C: GenericClient>(
    tx: &C,
    new: &NewOperation,
    now: Timestamp,
) -> Result<(Registered, Option<Event>), StoreError> {
    let id = mint_id(OperationId::PREFIX);
    let created = insert_operation(tx, &id, new, now).await?;
    let (op, hash) = query_operation(
        tx,
        "WHERE merchant_id = $1 AND external_id = $2",
        &[&new.merchant_id.as_str(), &new.external_id],
    )
    .await?
    .ok_or_else(|| StoreError::Backend("registered operation vanished".into()))?;
    if !created {
        let registered = if hash == new.request_hash {
            Registered::Existing(op)
        } else {
            Registered::Conflict(op)
        };
        return Ok((registered, None));
    }
    if let Some(source) = watch::status_source_of(&op)? {
        insert_watch(tx, &op, &source, now).await?;
    }
    let event = new_event(&op, Status::Created, None, now)?;
    Ok((Registered::Created(op), Some(event)))
}

async fn apply_report<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    report: StatusReport,
    now: Timestamp,
) -> Result<Reported, StoreError> {
    let mut reported = prepare_report(tx, sealer, seen, report, now).await?;
    if reported.duplicate {
        return Ok(reported);
    }
    lock_feed(tx, &reported.event.merchant_id).await?;
    store_event(tx, Arc::make_mut(&mut reported.event)).await?;
    Ok(reported)
}

/// Everything of a status change but the event insert: the caller takes the feed lock and
/// stores `reported.event` (positions come last, see [`lock_feed`]).
async fn change_status<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    mut op: Operation,
    report: StatusReport,
    now: Timestamp,
) -> Result<Reported, StoreError> {
    let event = apply_change(&mut op, report, now)?;
    save_operation_status(tx, &op).await?;
    // The delivery refers to the event before it is inserted: the foreign key is deferred to
    // commit, so the feed lock is held only for the event insert and the commit.
    let (delivery, handed_off) = plan_delivery(tx, sealer, seen, &op, &event, now).await?;
    watch::finish_if_final(tx, &op, now).await?;
    Ok(Reported { event: Arc::new(event), duplicate: false, delivery, handed_off })
}

/// Applies an accepted report to the (locked) operation in memory and builds its event, not
/// stored yet.
fn apply_change(
    op: &mut Operation,
    report: StatusReport,
    now: Timestamp,
) -> Result<Event, StoreError> {
    op.status.check_transition(report.status)?;
    let previous_status = op.status;
    op.data.extend(report.data);
    op.status = report.status;
    op.seq += 1;
    op.updated_at = now;
    new_event(op, previous_status, report.event_key, now)
}

/// How a batch runs its items.
#[derive(Clone, Copy)]
enum Items {
    /// No savepoints: an item refused by its checks has written nothing. Anything failing
    /// after an item's checks fails the batch (`Err`: the caller rolls back and runs it again
    /// with [`Items::Savepoints`]).
    Checked,
    /// A savepoint per item: a failing item is rolled back alone and the others go on.
    Savepoints,
}

/// The changes of a batch, in one transaction. Locks are taken in one global order — operation
/// rows sorted by id, then the feed locks of the merchants sorted — the order every single
/// report also follows (row, then feed), so batches and reports cannot deadlock. A refused item
/// changes nothing and the others go on.
async fn apply_reports(
    tx: &deadpool_postgres::Transaction<'_>,
    sealer: &Sealer,
    seen: &mut Seen,
    reports: Vec<StatusReport>,
    now: Timestamp,
    items: Items,
) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
    let (order, mut slots, mut results) = by_operation(reports);
    let ids = order.iter().filter_map(|&i| slots[i].as_ref().map(|r| &r.operation_id));
    if matches!(items, Items::Checked) && distinct_operations(ids) {
        let items = order.iter().map(|&i| (slots[i].take().expect("each item once"), now));
        let outcomes = pipelined_reports(tx, sealer, seen, items.collect()).await?;
        for (&i, outcome) in order.iter().zip(outcomes) {
            results[i] = Some(outcome);
        }
    } else {
        for i in order {
            let report = slots[i].take().expect("each item once");
            results[i] = Some(match items {
                Items::Checked => checked_report(tx, sealer, seen, report, now).await?,
                Items::Savepoints => {
                    exec(tx, "SAVEPOINT item", &[]).await?;
                    let outcome = prepare_report(tx, sealer, seen, report, now).await;
                    let undo = if outcome.is_ok() {
                        "RELEASE SAVEPOINT item"
                    } else {
                        "ROLLBACK TO SAVEPOINT item"
                    };
                    exec(tx, undo, &[]).await?;
                    outcome
                }
            });
        }
    }
    store_report_events(tx, &mut results).await?;
    Ok(results.into_iter().map(|r| r.expect("every item has a result")).collect())
}

/// True when no two reports are for the same operation; `sorted` yields their operation ids
/// in lock order, so equal ids are neighbours.
fn distinct_operations<'a>(mut sorted: impl Iterator<Item = &'a OperationId>) -> bool {
    let mut last = None;
    sorted.all(|id| last.replace(id) != Some(id))
}

/// [`Items::Checked`] for reports that are all for different operations, in lock order (a
/// batch's items, or a group's single reports, each with its own `now`), pipelined on the
/// connection instead of three round trips per report one after the other:
///
/// 1. every report's row lock and read are sent at once, in lock order (PostgreSQL runs one
///    connection's statements in the order they were sent, so the locks are taken in the
///    order a one-by-one run takes them);
/// 2. each accepted change is applied in memory and its delivery built (merchants and
///    disabled URLs read once per transaction, as one by one);
/// 3. every change's operation UPDATE and delivery statement are sent at once.
///
/// The outcomes come back in the order of `reports`, their events not stored yet: the caller
/// takes the feed locks and stores them, as after a one-by-one run. As in that run, a report
/// refused by its checks has written nothing, and anything failing after the checks is `Err`
/// (the caller rolls back).
async fn pipelined_reports<C: GenericClient + Sync>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    reports: Vec<(StatusReport, Timestamp)>,
) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
    let mut results: Vec<Option<Result<Reported, StoreError>>> = Vec::new();
    results.resize_with(reports.len(), || None);
    let (reports, times): (Vec<StatusReport>, Vec<Timestamp>) = reports.into_iter().unzip();
    let checks = join_all(reports.into_iter().map(|report| check_report(tx, report))).await;
    let mut changes = Vec::with_capacity(results.len());
    for (i, checked) in checks.into_iter().enumerate() {
        match checked {
            Err(e) if is_refusal(&e) => results[i] = Some(Err(e)),
            Err(e) => return Err(e),
            Ok(Checked::Duplicate(earlier)) => results[i] = Some(Ok(*earlier)),
            Ok(Checked::Change(change)) => changes.push((i, change)),
        }
    }
    let mut planned = Vec::with_capacity(changes.len());
    for (i, change) in changes {
        let ((mut op, report), now) = (*change, times[i]);
        let event = apply_change(&mut op, report, now)?;
        let plan = prepare_delivery(tx, sealer, seen, &op, &event, now).await?;
        planned.push((i, op, event, plan));
    }
    let leased = try_join_all(planned.iter().map(|(_, op, _, plan)| async move {
        let insert = async {
            match plan {
                Some(plan) => plan.insert(tx).await,
                None => Ok(false),
            }
        };
        let ((), leased) = tokio::try_join!(save_operation_status(tx, op), insert)?;
        Ok::<_, StoreError>(leased)
    }))
    .await?;
    for ((i, op, event, plan), leased) in planned.into_iter().zip(leased) {
        let (delivery, handed_off) = match plan {
            Some(plan) => plan.finish(seen, leased),
            None => (None, false),
        };
        watch::finish_if_final(tx, &op, times[i]).await?;
        results[i] =
            Some(Ok(Reported { event: Arc::new(event), duplicate: false, delivery, handed_off }));
    }
    Ok(results.into_iter().map(|r| r.expect("every report has a result")).collect())
}

/// One report without a savepoint: `Ok(Err(_))` when its checks refuse it (it wrote nothing),
/// `Err` when anything fails after them (the whole transaction must be rolled back).
async fn checked_report<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    report: StatusReport,
    now: Timestamp,
) -> Result<Result<Reported, StoreError>, StoreError> {
    Ok(match check_report(tx, report).await {
        Err(e) if is_refusal(&e) => Err(e),
        Err(e) => return Err(e),
        Ok(Checked::Duplicate(r)) => Ok(*r),
        Ok(Checked::Change(change)) => {
            let (op, report) = *change;
            Ok(change_status(tx, sealer, seen, op, report, now).await?)
        }
    })
}

/// The items of a batch in lock order (operation id), each to be taken once, and a result
/// place per item in the caller's order.
type Ordered = (Vec<usize>, Vec<Option<StatusReport>>, Vec<Option<Result<Reported, StoreError>>>);

fn by_operation(reports: Vec<StatusReport>) -> Ordered {
    let mut order: Vec<usize> = (0..reports.len()).collect();
    order.sort_by(|a, b| reports[*a].operation_id.cmp(&reports[*b].operation_id));
    let mut results = Vec::new();
    results.resize_with(reports.len(), || None);
    (order, reports.into_iter().map(Some).collect(), results)
}

/// A report refused by its checks, as opposed to a failure of the database (which may have
/// aborted the transaction).
fn is_refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound | StoreError::InvalidTransition(_) | StoreError::EventKeyConflict(_)
    )
}

/// Takes the feed locks of the merchants of `results`' new events (sorted), then inserts the
/// events in item order with one statement.
async fn store_report_events<C: GenericClient>(
    tx: &C,
    results: &mut [Option<Result<Reported, StoreError>>],
) -> Result<(), StoreError> {
    let mut merchants: Vec<MerchantId> = results
        .iter()
        .flatten()
        .filter_map(|r| {
            r.as_ref().ok().filter(|r| !r.duplicate).map(|r| r.event.merchant_id.clone())
        })
        .collect();
    merchants.sort();
    merchants.dedup();
    for m in &merchants {
        lock_feed(tx, m).await?;
    }
    let mut events: Vec<&mut Event> = results
        .iter_mut()
        .flatten()
        .flatten()
        .filter(|r| !r.duplicate)
        .map(|r| Arc::make_mut(&mut r.event)) // not shared yet: no copy
        .collect();
    store_events(tx, &mut events).await
}

/// One report up to its event insert (duplicates by event key come back complete).
async fn prepare_report<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    report: StatusReport,
    now: Timestamp,
) -> Result<Reported, StoreError> {
    match check_report(tx, report).await? {
        Checked::Duplicate(reported) => Ok(*reported),
        Checked::Change(change) => {
            let (op, report) = *change;
            change_status(tx, sealer, seen, op, report, now).await
        }
    }
}

/// A report after its checks, which write nothing.
enum Checked {
    /// The event key was seen: the earlier event, nothing to store.
    Duplicate(Box<Reported>),
    /// An accepted change of the (now row-locked) operation.
    Change(Box<(Operation, StatusReport)>),
}

/// Locks the operation row and checks the report: unknown operation, event key seen before
/// (duplicate or conflict), transition not allowed. Writes nothing, so a refused report needs
/// no rollback.
async fn check_report<C: GenericClient>(
    tx: &C,
    report: StatusReport,
) -> Result<Checked, StoreError> {
    let (op, _) = query_operation(tx, "WHERE id = $1 FOR UPDATE", &[&report.operation_id.as_str()])
        .await?
        .ok_or(StoreError::NotFound)?;
    if let Some(key) = &report.event_key {
        if let Some(event) = event_by_key(tx, &op.id, key).await? {
            if event.status != report.status {
                return Err(StoreError::EventKeyConflict(key.clone()));
            }
            let earlier = Reported {
                event: Arc::new(event),
                duplicate: true,
                delivery: None,
                handed_off: false,
            };
            return Ok(Checked::Duplicate(Box::new(earlier)));
        }
    }
    op.status.check_transition(report.status)?;
    Ok(Checked::Change(Box::new((op, report))))
}

/// What a transaction has already read of merchants: a group of reports for one merchant
/// loads (and unseals) it once, and asks once per URL whether it is disabled. It also holds
/// the deliveries the transaction leased to this node's dispatcher, to hand over once the
/// transaction has committed; dropped instead (a rollback), their slots go back.
#[derive(Default)]
struct Seen {
    merchants: HashMap<MerchantId, Arc<Merchant>>,
    disabled: HashMap<(MerchantId, String), bool>,
    handoff: Option<Arc<dyn Handoff>>,
    handed: Vec<(DeliveryId, Arc<Merchant>, Slot)>,
}

impl Seen {
    fn new(handoff: Option<Arc<dyn Handoff>>) -> Seen {
        Seen { handoff, ..Seen::default() }
    }

    /// After the commit: gives the dispatcher each delivery leased to it, with the event as
    /// stored (its feed position included). A leased delivery whose item was rolled back to
    /// its savepoint is not among `reported`; its slot goes back.
    fn hand_over<'a>(self, reported: impl Iterator<Item = &'a Reported>) {
        let (Some(h), false) = (self.handoff, self.handed.is_empty()) else { return };
        let mut stored: HashMap<&str, &Reported> =
            reported.filter_map(|r| r.delivery.as_ref().map(|d| (d.id.as_str(), r))).collect();
        for (id, merchant, slot) in self.handed {
            let Some(r) = stored.remove(id.as_str()) else { continue };
            let Some(delivery) = r.delivery.clone() else { continue };
            h.deliver(Claimed { delivery, event: r.event.clone(), merchant }, slot);
        }
    }
}

/// Serialises the merchant's event inserts until commit (taken as late as possible). A sequence hands out positions in
/// call order but transactions commit in any order; without this a feed reader could see
/// position 11, move its cursor past it, and never see 10 commit a moment later.
async fn lock_feed<C: GenericClient>(tx: &C, merchant: &MerchantId) -> Result<(), StoreError> {
    query_opt(
        tx,
        "SELECT pg_advisory_xact_lock(hashtext('payhook.events'), hashtext($1))",
        &[&merchant.as_str()],
    )
    .await
    .map(|_| ())
}

/// Supersedes the operation's older pending deliveries (those not in flight) and creates the
/// event's delivery, if its dialect sends one. The delivery is leased to this node's
/// dispatcher (true in the answer) when it is due now, nothing older of the operation is in
/// flight, and the dispatcher has a slot or a place in the host's line.
async fn plan_delivery<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    op: &Operation,
    event: &Event,
    now: Timestamp,
) -> Result<(Option<Delivery>, bool), StoreError> {
    let Some(plan) = prepare_delivery(tx, sealer, seen, op, event, now).await? else {
        return Ok((None, false));
    };
    let leased = plan.insert(tx).await?;
    Ok(plan.finish(seen, leased))
}

/// A status change's delivery, built and (when due now) with a slot of this node's dispatcher
/// reserved, but not stored yet: [`PlannedDelivery::insert`], then
/// [`PlannedDelivery::finish`].
struct PlannedDelivery {
    delivery: Delivery,
    host: String,
    merchant: Arc<Merchant>,
    /// The dispatcher's node and lease, with the slot reserved for it.
    lease: Option<(String, Timestamp, Slot)>,
}

impl PlannedDelivery {
    /// Supersedes the operation's older pending deliveries and inserts this one (one
    /// statement); true when it was inserted leased.
    async fn insert<C: GenericClient>(&self, tx: &C) -> Result<bool, StoreError> {
        let lease = self.lease.as_ref().map(|(node, until, _)| (node.as_str(), *until));
        supersede_and_insert(tx, &self.delivery, self.host.clone(), lease).await
    }

    /// The delivery, and whether it goes to the dispatcher after the commit: when it was
    /// inserted leased, its slot is kept in `seen` for the hand-over; otherwise the slot goes
    /// back here.
    fn finish(self, seen: &mut Seen, leased: bool) -> (Option<Delivery>, bool) {
        match self.lease.filter(|_| leased) {
            Some((_, _, slot)) => {
                seen.handed.push((self.delivery.id.clone(), self.merchant, slot));
                (Some(self.delivery), true)
            }
            None => (Some(self.delivery), false),
        }
    }
}

/// Builds the event's delivery, if its dialect sends one: the merchant and whether the URL is
/// disabled are read once per transaction (kept in `seen`); a slot is reserved when the
/// delivery is due now and the dispatcher has room.
async fn prepare_delivery<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    op: &Operation,
    event: &Event,
    now: Timestamp,
) -> Result<Option<PlannedDelivery>, StoreError> {
    if !seen.merchants.contains_key(&op.merchant_id) {
        let m = load_merchant(tx, sealer, &op.merchant_id).await?.ok_or(StoreError::NotFound)?;
        seen.merchants.insert(op.merchant_id.clone(), Arc::new(m));
    }
    let merchant = &seen.merchants[&op.merchant_id];
    let dialect = effective_dialect(merchant, op);
    let Some(url) = dialect.destination(merchant, op) else { return Ok(None) };
    let key = (merchant.id.clone(), url);
    let disabled = match seen.disabled.get(&key) {
        Some(d) => *d,
        None => {
            let d = is_disabled(tx, &key.0, &key.1).await?;
            seen.disabled.insert(key.clone(), d);
            d
        }
    };
    let merchant = seen.merchants[&op.merchant_id].clone();
    let delivery =
        new_delivery(&merchant, op, event.id.clone(), key.1, DeliveryKind::Status, disabled, now)?;
    let due_now = delivery.state == DeliveryState::Pending
        && delivery.next_attempt_at.is_some_and(|at| at <= now);
    // The slot is reserved before the statement learns whether an older delivery is in
    // flight (rare); the delivery is then inserted unleased and the slot goes back.
    let host = destination_host(&delivery.url);
    let handoff = seen.handoff.clone().filter(|_| due_now);
    let lease = handoff.and_then(|h| {
        let slot = h.reserve(&host)?;
        Some((h.node().to_owned(), now.plus(h.lease()), slot))
    });
    Ok(Some(PlannedDelivery { delivery, host, merchant, lease }))
}

async fn resend_in<C: GenericClient>(
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

/// A due, unleased delivery the claim query locked, with what per-operation order says of it.
struct Candidate {
    id: String,
    host: String,
    /// A newer delivery of the operation exists: this one is superseded on the spot.
    newer: bool,
    /// An older delivery of the operation is still pending (in flight, or waiting for its
    /// retry) and is not one of this claim's candidates: this one waits its turn.
    older_pending: bool,
}

/// A claim in a fixed number of round trips, whatever its size (it used to take six per
/// delivery, one after another, which capped a node at about 1,000 claims/s): one query locks
/// the candidates and answers the order questions for all of them, one statement each
/// supersedes and leases, and two queries load what the dispatcher needs.
async fn claim_in<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    claim: &ClaimRequest<'_>,
) -> Result<Vec<Claimed>, StoreError> {
    let mut in_flight: HashMap<String, usize> = claim.in_flight.clone();
    let busy: Vec<String> = in_flight
        .iter()
        .filter(|(_, n)| **n >= claim.per_host_limit)
        .map(|(h, _)| h.clone())
        .collect();
    let lease_until = claim.now.plus(claim.lease);
    let candidates = due_candidates(tx, claim.now, &busy, claim.limit + 16).await?;
    let mut superseded: Vec<&str> = Vec::new();
    let mut chosen: Vec<&str> = Vec::new();
    for c in &candidates {
        if c.newer {
            superseded.push(&c.id);
            continue;
        }
        if chosen.len() >= claim.limit || c.older_pending {
            continue;
        }
        let n = in_flight.entry(c.host.clone()).or_insert(0);
        if *n >= claim.per_host_limit {
            continue;
        }
        *n += 1;
        chosen.push(&c.id);
    }
    let supersede = async {
        if superseded.is_empty() {
            return Ok(0);
        }
        exec(
            tx,
            "UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL, updated_at = $2
             WHERE id = ANY($1)",
            &[&superseded, &claim.now.0],
        )
        .await
    };
    let lease = async {
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE deliveries SET lease_until = $2, leased_by = $3 WHERE id = ANY($1)
             RETURNING {DELIVERY_COLUMNS}"
        );
        query(tx, &sql, &[&chosen, &lease_until.0, &claim.node]).await
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
        let m = merchant_from_row(sealer, row)?;
        merchants.insert(m.id.as_str().to_owned(), Arc::new(m));
    }
    let mut claimed = Vec::with_capacity(chosen.len());
    for id in chosen {
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
        &[&now.0, &busy, &i64::try_from(n).unwrap_or(i64::MAX)],
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

async fn record_in<C: GenericClient>(
    tx: &C,
    attempt: &Attempt,
    next: NextStep,
    now: Timestamp,
) -> Result<DeliveryStateChange, StoreError> {
    let d =
        load_delivery(tx, attempt.delivery_id.as_str(), true).await?.ok_or(StoreError::NotFound)?;
    insert_attempt(tx, attempt).await?;
    let (state, next_at) = match next {
        NextStep::Delivered => (DeliveryState::Delivered, None),
        NextStep::RetryAt(_) if newer_delivery_exists(tx, &d.operation_id, d.seq).await? => {
            (DeliveryState::Superseded, None)
        }
        NextStep::RetryAt(at) => (DeliveryState::Pending, Some(at.0)),
        NextStep::Exhausted => (DeliveryState::Exhausted, None),
        NextStep::Cancel { disable } => {
            if disable {
                disable_destination(tx, &d.merchant_id, &d.url, now).await?;
            }
            (DeliveryState::Cancelled, None)
        }
    };
    exec(
        tx,
        "UPDATE deliveries SET state = $2, attempts = GREATEST(attempts, $3),
           series_attempts = series_attempts + 1, next_attempt_at = $4,
           lease_until = NULL, leased_by = NULL, last_error = $5, updated_at = $6
         WHERE id = $1",
        &[
            &d.id.as_str(),
            &state.as_str(),
            &attempt_number(attempt.number),
            &next_at,
            &attempt.error,
            &now.0,
        ],
    )
    .await?;
    Ok(DeliveryStateChange { state })
}

async fn newer_delivery_exists<C: GenericClient>(
    c: &C,
    op: &OperationId,
    seq: i64,
) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM deliveries WHERE operation_id = $1 AND seq > $2 LIMIT 1";
    exists(c, sql, &[&op.as_str(), &seq]).await
}

async fn is_disabled<C: GenericClient>(
    c: &C,
    merchant: &MerchantId,
    url: &str,
) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM disabled_destinations WHERE merchant_id = $1 AND url = $2";
    exists(c, sql, &[&merchant.as_str(), &url]).await
}

async fn disable_destination<C: GenericClient>(
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

/// Every merchant with its deliveries counted by state (the same SQL as SQLite's).
const DELIVERY_STATS: &str = "
    SELECT m.id, m.name,
      COALESCE(SUM(CASE WHEN d.state = 'delivered' THEN 1 ELSE 0 END), 0)::BIGINT,
      COALESCE(SUM(CASE WHEN d.state = 'pending' THEN 1 ELSE 0 END), 0)::BIGINT,
      COALESCE(SUM(CASE WHEN d.state = 'exhausted' THEN 1 ELSE 0 END), 0)::BIGINT,
      COALESCE(SUM(CASE WHEN d.state = 'cancelled' THEN 1 ELSE 0 END), 0)::BIGINT,
      COALESCE(SUM(CASE WHEN d.state = 'superseded' THEN 1 ELSE 0 END), 0)::BIGINT,
      MIN(CASE WHEN d.state = 'pending' THEN d.created_at END)
    FROM merchants m LEFT JOIN deliveries d ON d.merchant_id = m.id
    GROUP BY m.id, m.name, m.created_at
    ORDER BY m.created_at, m.id";

fn stats_from_row(r: &tokio_postgres::Row) -> Result<MerchantDeliveryStats, StoreError> {
    let count = |i: usize| -> Result<u64, StoreError> {
        let n: i64 = r.try_get(i).map_err(pg)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let oldest: Option<i64> = r.try_get(7).map_err(pg)?;
    Ok(MerchantDeliveryStats {
        merchant_id: parse_id(&r.try_get::<_, String>(0).map_err(pg)?)?,
        merchant_name: r.try_get(1).map_err(pg)?,
        delivered: count(2)?,
        pending: count(3)?,
        exhausted: count(4)?,
        cancelled: count(5)?,
        superseded: count(6)?,
        oldest_pending_at: oldest.map(Timestamp),
    })
}
