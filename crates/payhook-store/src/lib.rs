//! payhook-store: where payhook keeps its records.
//!
//! [`Store`] is the one interface the API and the dispatcher use. Implementations:
//! - [`sqlite::SqliteStore`]: embedded, the default (`./payhook.db`, WAL, `synchronous=FULL`).
//! - [`postgres::PgStore`]: shared by several nodes (`FOR UPDATE SKIP LOCKED` claims with
//!   expiring leases), pooled, migrated at connect.
//!
//! [`seal`] holds the [`seal::Sealer`]: merchants' secrets are sealed with the master key in
//! every store's row mapping, never written in plain text.
//!
//! Every method that answers `Ok` for a write has committed it durably: the API may answer 2xx
//! on the strength of it. A store persists and leases; every payment decision (transitions,
//! supersede, the delivery an event owes, the state after an attempt, what a claim takes) is
//! `payhook_core::lifecycle`'s, applied inside the store's transaction so concurrent reports
//! on one operation cannot interleave. What both backends share lives in `columns` (row
//! mapping of the tables they store alike, the queries they phrase alike) and `seal`.

mod admin;
mod columns;
mod health;
pub mod postgres;
mod purge;
pub mod seal;
pub mod sqlite;
mod types;

pub use admin::*;
pub use types::*;

use async_trait::async_trait;
use payhook_core::ids::{ApiKeyId, DeliveryId, MerchantId, OperationId};
use payhook_core::model::{
    ApiKey, Attempt, Delivery, Event, Merchant, MerchantState, Operation, Poll, Watch,
};
use payhook_core::Timestamp;
use std::collections::HashMap;
use std::time::Duration;

/// Persistence for merchants, operations, events, deliveries and attempts.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// The database server's own clock, for stores that several nodes share: each node reads
    /// time as its own clock corrected to this one, so that what one node writes (a lease's
    /// end, a retry's due time) means the same moment to the others. `None` for a store only
    /// one process opens.
    async fn database_time(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(None)
    }

    /// A value from the installation's settings table (e.g. the admin token hash).
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a setting unless it is already set; returns the value in force.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Creates a merchant with its first API key.
    async fn create_merchant(&self, m: &Merchant, key: &NewApiKey) -> Result<(), StoreError>;
    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError>;
    /// Saves changed settings/secrets, and forgets the merchant's disabled destinations when
    /// `reenable` is set (the operator fixed the endpoint).
    async fn update_merchant(&self, m: &Merchant, reenable: bool) -> Result<(), StoreError>;
    /// Sets a merchant's state (pause, resume, archive), effective for the next claim and
    /// report on every node. `update_merchant` never changes the state, so a settings change
    /// racing a pause cannot undo it.
    async fn set_merchant_state(
        &self,
        id: &MerchantId,
        state: MerchantState,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// A page of merchants in creation order (their ids sort by creation).
    async fn list_merchants(&self, query: &MerchantQuery) -> Result<Vec<Merchant>, StoreError>;
    /// The key with this hash and the merchant owning it.
    async fn merchant_by_api_key(&self, key_hash: &str) -> Result<Option<KeyOwner>, StoreError>;
    /// Records a key's use: the hour it was used in and its prefix (which a migrated key
    /// shows only from its first use on). Not audited.
    async fn touch_api_key(
        &self,
        key: &ApiKeyId,
        hour: Timestamp,
        prefix: &str,
    ) -> Result<(), StoreError>;
    /// A merchant's keys, oldest first.
    async fn api_keys(&self, merchant: &MerchantId) -> Result<Vec<ApiKey>, StoreError>;
    /// Adds a key unless `lifecycle::keys` refuses ([`StoreError::KeyRefused`]), checked
    /// against the keys held in the same transaction.
    async fn add_api_key(
        &self,
        merchant: &MerchantId,
        key: &NewApiKey,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Revokes a key unless it is the merchant's last ([`StoreError::KeyRefused`]);
    /// [`StoreError::NotFound`] when the merchant holds no such key.
    async fn revoke_api_key(
        &self,
        merchant: &MerchantId,
        key: &ApiKeyId,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// A page of the audit log.
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Registers an operation, idempotently on (merchant, external id), with its `created`
    /// event (seq 0, no callback) and, when it has a status source, its watch.
    async fn register_operation(
        &self,
        new: NewOperation,
        now: Timestamp,
    ) -> Result<Registered, StoreError>;
    async fn get_operation(&self, id: &OperationId) -> Result<Option<Operation>, StoreError>;
    async fn find_operation(
        &self,
        merchant: &MerchantId,
        external_id: &str,
    ) -> Result<Option<Operation>, StoreError>;
    /// Lets the store lease deliveries that are due at once to this node's dispatcher as it
    /// creates them (see [`Handoff`]). The store keeps only a weak reference. Stores that do
    /// not support it ignore the call; their deliveries are all found by `claim_due`.
    fn set_handoff(&self, _handoff: std::sync::Weak<dyn Handoff>) {}

    /// Applies a status change: checks the transition, records the event, supersedes stale
    /// deliveries and plans the new one, and finishes the watch on a final status, in one
    /// durable transaction.
    async fn report_status(
        &self,
        report: StatusReport,
        now: Timestamp,
    ) -> Result<Reported, StoreError>;
    /// Applies many status changes at once (`POST /v1/operations/status:batch`): each item
    /// succeeds or fails on its own, with its own result, and the successful ones commit
    /// together. `Err` only when the batch as a whole could not be stored.
    async fn report_statuses(
        &self,
        reports: Vec<StatusReport>,
        now: Timestamp,
    ) -> Result<Vec<Result<Reported, StoreError>>, StoreError>;
    /// A merchant's events after `after` (a feed position), oldest first.
    /// [`StoreError::CursorExpired`] when a purge took events after `after` (`after = 0`
    /// reads from the oldest kept).
    async fn events(
        &self,
        merchant: &MerchantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// Operations in `number` order (creation order) with `number > after_number`, at most
    /// `limit`, of one merchant or (`None`) of all: the dashboard's list, paged by cursor.
    async fn list_operations(
        &self,
        merchant: Option<&MerchantId>,
        after_number: i64,
        limit: u32,
    ) -> Result<Vec<Operation>, StoreError>;
    /// An operation's events (its `created` registration included), in `seq` order.
    async fn operation_events(&self, op: &OperationId) -> Result<Vec<Event>, StoreError>;

    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError>;
    /// An operation's deliveries, oldest first, each with its attempts.
    async fn deliveries_of(
        &self,
        op: &OperationId,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, StoreError>;
    /// Starts a new attempt series now. Refused when a newer delivery of the operation exists
    /// (sending this one would hand the merchant a stale status).
    async fn resend(&self, id: &DeliveryId, now: Timestamp) -> Result<Delivery, StoreError>;

    /// Bulk recovery after the merchant's outage (`lifecycle::recovery`): re-enables its
    /// disabled destinations and starts a new attempt series, due `now`, for the latest
    /// delivery of each of its operations that ended recoverably at or after `since`.
    /// Returns how many were queued; a repeat queues none of those again while they wait.
    async fn recover(
        &self,
        merchant: &MerchantId,
        since: Timestamp,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError>;

    /// Leases up to `limit` due deliveries to `node` for `lease`, oldest due first, keeping
    /// each destination host within `per_host_limit` and skipping any delivery whose operation
    /// has an older delivery still in flight (per-operation order).
    async fn claim_due(&self, claim: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError>;
    /// Records one attempt and what follows from it, and releases the lease.
    async fn record_attempt(
        &self,
        attempt: &Attempt,
        next: NextStep,
        now: Timestamp,
    ) -> Result<DeliveryStateChange, StoreError>;
    /// When the earliest pending delivery that no node holds falls due (for the dispatcher's
    /// sleep). Deliveries in flight are left out: their completion wakes the dispatcher, and an
    /// expired lease of a dead node is found by the next poll.
    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Leases up to `limit` active watches whose next poll is due.
    async fn claim_polls(&self, claim: &PollClaim<'_>) -> Result<Vec<ClaimedWatch>, StoreError>;
    /// Records one poll and what follows it, and releases the watch's lease. A watch that a
    /// final status finished meanwhile stays finished.
    async fn record_poll(
        &self,
        poll: &Poll,
        next: PollNext,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// An operation's watch with every poll, oldest first.
    async fn watch_of(&self, op: &OperationId) -> Result<Option<(Watch, Vec<Poll>)>, StoreError>;
    /// When the earliest active watch is due.
    async fn next_poll_at(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Per merchant (every merchant, in creation order): deliveries by state and the oldest
    /// pending one. Scans the deliveries: for the operator's dashboard, not for hot paths.
    async fn delivery_stats(&self) -> Result<Vec<MerchantDeliveryStats>, StoreError>;
    /// The number of pending deliveries and the creation time of the oldest (metrics, computed
    /// at scrape time).
    async fn pending_deliveries(&self) -> Result<PendingSummary, StoreError>;

    /// Deletes one batch of what retention lets go (see [`PurgeTarget`]); the caller walks
    /// on from `next_after` until `done`. Never takes anything pending or leased. Events it
    /// deletes move their merchant's feed horizon (`events` then refuses older cursors).
    async fn purge(&self, batch: &PurgeBatch) -> Result<Purged, StoreError>;
    /// How the purge should pace its batches on this store.
    fn purge_pace(&self) -> PurgePace;
    /// When the oldest event still kept was created (the retention gauge).
    async fn oldest_event_at(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Sets the health thresholds and whether alerts are queued (at start, before any
    /// attempt is recorded). Until then: the defaults, no alerts.
    fn set_health_policy(&self, policy: HealthPolicy);
    /// The destinations that have been attempted or disabled, with their health, by merchant:
    /// of `merchants`, or (`None`) of every merchant. A merchant with none is left out.
    async fn destination_health(
        &self,
        merchants: Option<&[MerchantId]>,
    ) -> Result<HashMap<MerchantId, Vec<DestinationHealth>>, StoreError>;
    /// Leases up to `limit` due operator alerts to `node` for `lease`, oldest first, and of
    /// each merchant only its oldest pending one (a merchant's alerts reach the operator in
    /// the order they were raised, a retry holding the later ones back).
    async fn claim_alerts(
        &self,
        node: &str,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OpsAlert>, StoreError>;
    /// Records how sending alert `id` went and releases its lease; [`StoreError::NotFound`]
    /// (and nothing written) unless `node` still holds the lease.
    async fn record_alert(
        &self,
        node: &str,
        id: &str,
        outcome: &AlertOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// When the earliest pending alert that no node holds falls due.
    async fn next_alert_at(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Frees the leases held by `node` (or, for a single-node store, all of them) at start-up:
    /// deliveries', watches' and operator alerts'.
    async fn release_leases(&self, node: &str) -> Result<u64, StoreError>;
}

/// The lease a node takes when claiming; longer than the request timeout.
pub fn lease_for(timeout: Duration) -> Duration {
    timeout + Duration::from_secs(15)
}
