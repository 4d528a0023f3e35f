//! The values that cross the [`crate::Store`] interface.

use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::Refusal;
pub use payhook_core::lifecycle::{NextStep, PollNext, StatusReport};
use payhook_core::model::{CallbackSettings, Delivery, DeliveryState, Event, Merchant, Operation};
use payhook_core::status::InvalidTransition;
use payhook_core::Timestamp;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    #[error("event key {0:?} was already used for a different status")]
    EventKeyConflict(String),
    #[error("a newer delivery of this operation exists")]
    Superseded,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store failure: {0}")]
    Backend(String),
    /// A write failed because the disk holding the store is full (SQLite's `SQLITE_FULL`):
    /// nothing of it was stored, and writes will fail until space is freed.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The database cannot be reached or went away mid-call (PostgreSQL: connection refused,
    /// closed or reset, no answer within the store's time bounds, the server shutting down or
    /// starting up). Whether a write that failed so was stored is unknown; sending it again is
    /// safe (reports are idempotent by event key, registrations by external id).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The master key is missing or is not the one the stored secrets were sealed with.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A feed cursor below what retention purged for the merchant (see
    /// `payhook_core::lifecycle::retention::check_cursor`).
    #[error(
        "events up to position {purged_through} have been purged; the oldest position still \
         available is {}", oldest_kept.map_or("none (no events are kept)".to_owned(), |p| p.to_string())
    )]
    CursorExpired { purged_through: i64, oldest_kept: Option<i64> },
    /// A key change `payhook_core::lifecycle::keys` refuses.
    #[error(transparent)]
    KeyRefused(#[from] payhook_core::lifecycle::KeyRefusal),
}

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> StoreError {
        match r {
            Refusal::InvalidTransition(t) => StoreError::InvalidTransition(t),
            Refusal::EventKeyConflict(key) => StoreError::EventKeyConflict(key),
        }
    }
}

/// An operation to register, already validated by the API.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub merchant_id: MerchantId,
    pub external_id: String,
    pub amount: i64,
    pub currency: String,
    pub kind: String,
    pub callback: CallbackSettings,
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Fingerprint of the registration request: the same body registers idempotently,
    /// a different one under the same external id conflicts.
    pub request_hash: String,
}

#[derive(Debug, Clone)]
pub enum Registered {
    Created(Operation),
    /// Same request as before: the existing operation.
    Existing(Operation),
    /// Same external id, different request.
    Conflict(Operation),
}

#[derive(Debug, Clone)]
pub struct Reported {
    /// Shared with the hand-off: the dispatcher renders the callback from the same event.
    pub event: Arc<Event>,
    /// True when the event key had been seen: nothing new was stored.
    pub duplicate: bool,
    /// The delivery planned for the event, if the dialect sends one.
    pub delivery: Option<Delivery>,
    /// True when the store leased the delivery at planning time and handed it straight to
    /// this node's dispatcher (see [`Handoff`]): there is nothing left for a claim to find.
    pub handed_off: bool,
}

/// A place among this node's attempts in flight, reserved for one delivery; given back when
/// dropped (after the attempt's response, or at once if the reservation came to nothing).
///
/// A slot may also be a place in the host's line ([`Slot::queued`]): the dispatcher then
/// holds the delivery until one of the host's slots is free.
pub struct Slot {
    give_back: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// For a place in line: the host whose line it is.
    queued: Option<String>,
}

impl Slot {
    pub fn new(give_back: impl FnOnce() + Send + Sync + 'static) -> Slot {
        Slot { give_back: Some(Box::new(give_back)), queued: None }
    }

    /// A place in `host`'s line instead of a slot; `give_back` frees the place.
    pub fn queued(host: &str, give_back: impl FnOnce() + Send + Sync + 'static) -> Slot {
        Slot { give_back: Some(Box::new(give_back)), queued: Some(host.to_owned()) }
    }

    /// True for a place in the host's line: the attempt starts when a slot is free.
    pub fn is_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// The host whose line this place is in (`None` for a slot).
    pub fn line(&self) -> Option<&str> {
        self.queued.as_deref()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(f) = self.give_back.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// The dispatcher of this node, as a store sees it when it plans a delivery that is due now.
///
/// Instead of leaving the delivery for the next claim (a second write, a read of the rows
/// just written, and a wake-up), the store can lease it to this node in the same transaction
/// that creates it, if the dispatcher has a free slot for its host or a place in that host's
/// (bounded) line, and after the commit hand it over with its event and merchant. Deliveries
/// that must wait (per-operation order, disabled destination, the line full) are planned
/// unleased as before.
pub trait Handoff: Send + Sync {
    /// The lease holder name of this node's claims.
    fn node(&self) -> &str;
    /// How long a lease lasts.
    fn lease(&self) -> Duration;
    /// A slot for one more attempt to `host`, a place in the host's line
    /// ([`Slot::queued`]), or `None` to leave the delivery to a claim. Called inside the
    /// store's transaction: must not block.
    fn reserve(&self, host: &str) -> Option<Slot>;
    /// The committed, leased delivery, to attempt now (or, with a queued slot, when the
    /// host has room).
    fn deliver(&self, claimed: Claimed, slot: Slot);
}

/// Where a store finds this node's dispatcher to hand deliveries to: set once, when the
/// dispatcher starts, and held weakly, so a store outliving its dispatcher hands nothing over.
#[derive(Clone, Default)]
pub(crate) struct HandoffTarget(Arc<std::sync::RwLock<Option<std::sync::Weak<dyn Handoff>>>>);

impl HandoffTarget {
    pub(crate) fn set(&self, handoff: std::sync::Weak<dyn Handoff>) {
        *self.0.write().expect("handoff lock") = Some(handoff);
    }

    /// The dispatcher, if one is running.
    pub(crate) fn get(&self) -> Option<Arc<dyn Handoff>> {
        self.0.read().expect("handoff lock").as_ref().and_then(std::sync::Weak::upgrade)
    }
}

#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub node: &'a str,
    pub now: Timestamp,
    pub lease: Duration,
    pub limit: usize,
    /// Deliveries this node has in flight per destination host (`host:port`).
    pub in_flight: &'a std::collections::HashMap<String, usize>,
    /// At most this many concurrent attempts per destination host on this node: work for a
    /// host at its limit is left for later, so a slow merchant delays no other.
    pub per_host_limit: usize,
}

/// A leased delivery with what the dispatcher needs to render it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub event: Arc<Event>,
    /// Shared: many deliveries of one merchant are in flight at once.
    pub merchant: Arc<Merchant>,
}

/// The state a delivery ended in after `record_attempt` (a retry may turn into `superseded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStateChange {
    pub state: DeliveryState,
}

/// A node asking for due polls of the re-poll watchdog.
#[derive(Debug, Clone)]
pub struct PollClaim<'a> {
    pub node: &'a str,
    pub now: Timestamp,
    pub lease: Duration,
    pub limit: usize,
}

/// A leased watch with the operation it watches.
#[derive(Debug, Clone)]
pub struct ClaimedWatch {
    pub watch: payhook_core::model::Watch,
    pub operation: Operation,
}

/// The host part of a URL (`host:port`), the unit of per-destination concurrency.
///
/// Each thread remembers the last URL it parsed: a burst of reports mostly goes to one
/// merchant URL, and parsing it again for every delivery was ≈ 1% of the server's CPU.
pub fn destination_host(url: &str) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(String, String)> = const {
            std::cell::RefCell::new((String::new(), String::new()))
        };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != url {
            let host = match url::Url::parse(url) {
                Ok(u) => format!(
                    "{}:{}",
                    u.host_str().unwrap_or_default(),
                    u.port_or_known_default().unwrap_or(0)
                ),
                Err(_) => String::new(),
            };
            *last = (url.to_owned(), host);
        }
        last.1.clone()
    })
}

/// A fresh id: the prefix and a UUIDv7 (time-ordered) written in base 62, always 22
/// characters (`op_` ids: 25). The digits are `0-9A-Za-z`, in ASCII order, so ids minted
/// this way sort by creation. Every copy of an id in the store's rows and indexes is 10
/// bytes shorter than 32 hex digits would be in every row and index that holds one; ids in
/// the older 32-hex-digit form pass the same check (letters and digits, at most 36
/// characters).
pub fn mint_id(prefix: &str) -> String {
    let digits = base62(uuid::Uuid::now_v7().as_u128());
    let mut id = String::with_capacity(prefix.len() + digits.len());
    id.push_str(prefix);
    id.extend(digits.iter().map(|&d| char::from(d)));
    id
}

/// A fresh PostgreSQL schema name for a test or a bench phase: a minted id in lower case
/// (ids mix cases; PostgreSQL's unquoted names are lower case).
pub fn mint_schema_name(prefix: &str) -> String {
    mint_id(prefix).to_lowercase()
}

/// `n` in base 62, fixed width, most significant digit first.
fn base62(mut n: u128) -> [u8; 22] {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    /// 62^10, the most base-62 digits a `u64` holds: two 128-bit divisions, then `u64` ones.
    const CHUNK: u128 = 839_299_365_868_340_224;
    let mut digits = [b'0'; 22];
    for chunk in digits.rchunks_mut(10) {
        let mut part = (n % CHUNK) as u64;
        n /= CHUNK;
        for digit in chunk.iter_mut().rev() {
            *digit = DIGITS[(part % 62) as usize];
            part /= 62;
        }
    }
    digits
}

/// One merchant's deliveries by state, for the dashboard (`Store::delivery_stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantDeliveryStats {
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    pub delivered: u64,
    pub pending: u64,
    pub exhausted: u64,
    pub cancelled: u64,
    pub superseded: u64,
    /// When the oldest pending delivery was created (how long the merchant has been waiting).
    pub oldest_pending_at: Option<Timestamp>,
}

impl MerchantDeliveryStats {
    /// Delivered among the deliveries that ended (delivered, exhausted, cancelled); superseded
    /// ones are left out (nothing was owed any more). `None` before any ended.
    pub fn success_rate(&self) -> Option<f64> {
        let ended = self.delivered + self.exhausted + self.cancelled;
        (ended > 0).then(|| self.delivered as f64 / ended as f64)
    }
}

/// The pending backlog of the whole installation (the metrics gauges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingSummary {
    pub count: u64,
    /// Creation time of the oldest pending delivery.
    pub oldest_created_at: Option<Timestamp>,
}

/// A page of merchants (`GET /v1/merchants`): in creation order, after `after` (a merchant
/// id; `None` from the first), at most `limit`, filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerchantQuery {
    pub after: Option<String>,
    /// A part of the name, matched case-insensitively (ASCII letters).
    pub name: Option<String>,
    pub dialect: Option<payhook_core::dialect::Dialect>,
    pub limit: u32,
}

/// What one purge batch takes (see `payhook_core::lifecycle::retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeTarget {
    /// Events created before this whose deliveries all ended before it, with those deliveries
    /// and their attempts; walked by event position.
    History { before: Timestamp },
    /// Polls started before this.
    Polls { before: Timestamp },
    /// Operations with a final status unchanged since before this, nothing pending and no
    /// active watch, with everything they still have; walked by operation number.
    Operations { before: Timestamp },
}

/// One batch of a purge: the next `limit` rows of the walk after `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeBatch {
    pub target: PurgeTarget,
    /// Where the walk stands (an event position or operation number; 0 at the start).
    pub after: i64,
    pub limit: u32,
}

/// Rows one purge batch deleted, by table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgedRows {
    pub operations: u64,
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub watches: u64,
    pub polls: u64,
}

impl PurgedRows {
    pub fn add(&mut self, other: PurgedRows) {
        self.operations += other.operations;
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.watches += other.watches;
        self.polls += other.polls;
    }

    pub fn total(&self) -> u64 {
        self.operations + self.events + self.deliveries + self.attempts + self.watches + self.polls
    }

    /// `(table, rows)` pairs, for metrics and logs.
    pub fn by_table(&self) -> [(&'static str, u64); 6] {
        [
            ("operations", self.operations),
            ("events", self.events),
            ("deliveries", self.deliveries),
            ("attempts", self.attempts),
            ("watches", self.watches),
            ("polls", self.polls),
        ]
    }
}

/// How a store wants the purge to pace itself: rows per batch, and a pause between batches
/// of `yield_factor` times what the batch took (the purge then holds the store at most
/// 1 / (1 + `yield_factor`) of the time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePace {
    pub batch: u32,
    pub yield_factor: u32,
}

/// What a purge batch did and where the walk goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub rows: PurgedRows,
    /// The `after` of the next batch.
    pub next_after: i64,
    /// The walk reached rows too young to go (or the end): this run is over for the target.
    pub done: bool,
    /// Another node holds the purge (PostgreSQL): nothing was done; try at the next run.
    pub busy: bool,
}

#[cfg(test)]
mod tests {
    use super::{base62, destination_host, mint_id};
    use payhook_core::ids::{DeliveryId, OperationId};

    fn text(n: u128) -> String {
        String::from_utf8(base62(n).to_vec()).expect("ASCII")
    }

    #[test]
    fn base62_is_fixed_width_and_keeps_the_order() {
        assert_eq!(text(0), "0000000000000000000000");
        assert_eq!(text(62), "0000000000000000000010");
        assert_eq!(text(u128::MAX), "7n42DGM5Tflk9n8mt7Fhc7");
        assert_eq!(text(0x0193_abcd_ef01_2345_6789_abcd_ef01_2345), "02yTeFdCjYqrtKrtUkvPwz");
        let mut numbers = vec![0, 1, 61, 62, 3843, 3844, 1 << 64, u128::MAX - 1, u128::MAX];
        numbers.extend(
            (0..200u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        );
        let mut by_number = numbers.clone();
        by_number.sort();
        let mut by_text = numbers;
        by_text.sort_by_key(|&n| text(n));
        assert_eq!(by_text, by_number);
    }

    #[test]
    fn minted_ids_are_short_valid_and_sort_by_creation() {
        let ids: Vec<String> = (0..100).map(|_| mint_id(DeliveryId::PREFIX)).collect();
        for id in &ids {
            assert_eq!(id.len(), 4 + 22, "{id}");
            assert!(id.parse::<DeliveryId>().is_ok(), "{id}");
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "later ids sort after earlier ones");
        assert!(mint_id(OperationId::PREFIX).parse::<OperationId>().is_ok());
    }

    #[test]
    fn the_host_of_each_url_whatever_came_before() {
        // The thread's memo of the last URL must never answer for another one.
        let cases = [
            ("https://shop.example/cb", "shop.example:443"),
            ("https://shop.example/cb", "shop.example:443"),
            ("http://shop.example/cb", "shop.example:80"),
            ("http://127.0.0.1:8080/x?y=1", "127.0.0.1:8080"),
            ("not a url", ""),
            ("", ""),
            ("https://other.example:9443/", "other.example:9443"),
            ("https://shop.example/cb", "shop.example:443"),
        ];
        for (url, host) in cases {
            assert_eq!(destination_host(url), host, "{url}");
        }
    }
}
