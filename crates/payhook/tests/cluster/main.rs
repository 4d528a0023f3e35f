//! End to end on PostgreSQL, with real `payhook serve` processes: one node delivering a signed
//! callback, API-only and dispatch-only nodes splitting the work, and three nodes sharing
//! 5,000 operations while one of them is killed with SIGKILL (SPEC §1 guarantees 2 and 3,
//! §4 "several nodes").
//!
//! Run just these with `cargo test -p payhook --test cluster`.

mod support;

use payhook_core::Timestamp;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;
use tokio::sync::Semaphore;

/// Fast retries, so the receiver's failures cost milliseconds, not minutes.
fn fast_retry() -> serde_json::Value {
    json!({"interval": "200ms", "max_attempts": 100})
}

fn now() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
    Timestamp(i64::try_from(ms).expect("ms fit in i64"))
}

/// Waits until the receiver holds a 2xx-answered callback of every `(operation, seq)`.
async fn wait_for_callbacks(rx: &Receiver, want: &[(String, i64)], deadline: Duration) {
    wait_for("the callbacks", deadline, || async {
        let got: HashSet<(String, i64)> = rx
            .hits()
            .into_iter()
            .filter(|h| h.answered == 200)
            .map(|h| (h.operation_id, h.seq))
            .collect();
        want.iter().all(|w| got.contains(w)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_on_postgres_delivers_a_signed_callback() {
    let db = Database::fresh().await;
    let rx = Receiver::start(None, Duration::ZERO).await;
    let node = Node::start("solo", &db.url(), &["--poll-interval", "50ms"]);
    let admin = Admin::new(vec![node.base.clone().expect("API on")]);
    let (merchant, secret) = admin.merchant(&format!("{}/m/0", rx.base), fast_retry()).await;
    let op = admin.register(0, &merchant, "order-1").await;
    admin.report(0, &op, "success", "order-1-success").await;

    wait_for_callbacks(&rx, &[(op.clone(), 1)], Duration::from_secs(30)).await;
    let hit = rx.hits().into_iter().find(|h| h.operation_id == op).expect("a callback");
    let wh = standardwebhooks::Webhook::new(&secret).expect("the merchant's secret");
    wh.verify(&hit.body, &hit.headers).expect("the signature verifies");
    assert_eq!((hit.status.as_str(), hit.path.as_str()), ("success", "/m/0"));
    assert!(hit.webhook_id.starts_with("dlv_"), "{}", hit.webhook_id);
    drop(node);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_only_and_dispatch_only_nodes_split_the_work() {
    let db = Database::fresh().await;
    let rx = Receiver::start(None, Duration::ZERO).await;
    let api = Node::start("api-only", &db.url(), &["--no-dispatch"]);
    let admin = Admin::new(vec![api.base.clone().expect("API on")]);
    let (merchant, _) = admin.merchant(&format!("{}/m/0", rx.base), fast_retry()).await;
    let op = admin.register(0, &merchant, "order-1").await;
    admin.report(0, &op, "success", "order-1-success").await;

    // Nothing dispatches yet. An absence can only be seen over a window: five of the
    // dispatcher's default poll intervals would have been enough for a node that delivers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 0, "an API-only node sent a callback");
    let counts = db.store.delivery_counts().await.expect("counts");
    assert_eq!(counts.get("pending"), Some(&1), "{counts:?}");

    let worker = Node::start("dispatch-only", &db.url(), &["--no-api", "--poll-interval", "50ms"]);
    assert!(worker.base.is_none(), "a --no-api node serves no API");
    wait_for_callbacks(&rx, &[(op, 1)], Duration::from_secs(30)).await;
    drop((api, worker));
    db.drop().await;
}

const OPS: usize = 5_000;
const MERCHANTS: usize = 10;
/// Admin calls in flight at once, over all nodes.
const PARALLEL: usize = 24;
/// Per node. With the deliveries waiting in its lines (leased to it as they were handed over)
/// it bounds what a killed node can leave half-done.
const MAX_IN_FLIGHT: usize = 8;

/// Registers every operation and reports `pending` then `success`, spreading the calls over
/// the nodes; counts finished operations in `done`. Returns the operation ids.
async fn drive(admin: Admin, merchants: Vec<String>, done: Arc<AtomicUsize>) -> Vec<String> {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..OPS {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        let (admin, merchant, done) =
            (admin.clone(), merchants[i % MERCHANTS].clone(), done.clone());
        tasks.spawn(async move {
            let ext = format!("order-{i}");
            let op = admin.register(i, &merchant, &ext).await;
            admin.report(i + 1, &op, "pending", &format!("{ext}-pending")).await;
            admin.report(i + 2, &op, "success", &format!("{ext}-success")).await;
            done.fetch_add(1, Ordering::SeqCst);
            drop(permit);
            op
        });
    }
    let mut ops = Vec::with_capacity(OPS);
    while let Some(op) = tasks.join_next().await {
        ops.push(op.expect("driver task"));
    }
    ops
}

/// Per operation, the seqs in arrival order never go down (a duplicate repeats one).
fn assert_no_stale_after_newer(hits: &[Hit]) {
    let mut newest: HashMap<&str, i64> = HashMap::new();
    for h in hits {
        let seen = newest.entry(h.operation_id.as_str()).or_insert(h.seq);
        assert!(h.seq >= *seen, "{} got seq {} after seq {}", h.operation_id, h.seq, *seen);
        *seen = h.seq;
    }
}

/// Extra 2xx-answered arrivals of one delivery id: the duplicates a merchant deduplicates.
fn duplicates(hits: &[Hit]) -> usize {
    let mut acked: HashMap<&str, usize> = HashMap::new();
    for h in hits.iter().filter(|h| h.answered == 200) {
        *acked.entry(h.webhook_id.as_str()).or_default() += 1;
    }
    acked.values().map(|n| n - 1).sum()
}

/// SIGKILLs node 0 (index 0 of `admin`) as soon as it is seen holding leases, so it dies
/// with attempts in flight: the case where leases must expire and another node take over.
async fn kill_mid_attempt(db: &Database, admin: &Admin, node: &mut Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.store.leases_held_by(&node.name, now()).await.expect("leases") < 2 {
        assert!(Instant::now() < deadline, "{} never had two attempts in flight", node.name);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    admin.forget(0);
    node.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_when_one_is_killed() {
    let started = Instant::now();
    let db = Database::fresh().await;
    let rx = Receiver::start(Some(5), Duration::from_millis(20)).await;
    let max = MAX_IN_FLIGHT.to_string();
    let flags = ["--max-in-flight", &max, "--per-host-limit", &max, "--poll-interval", "100ms"];
    let mut nodes: Vec<Node> =
        (0..3).map(|i| Node::start(&format!("node-{i}"), &db.url(), &flags)).collect();
    let admin = Admin::new(nodes.iter().map(|n| n.base.clone().expect("API on")).collect());
    let mut merchants = Vec::new();
    for m in 0..MERCHANTS {
        merchants.push(admin.merchant(&format!("{}/m/{m}", rx.base), fast_retry()).await.0);
    }

    let done = Arc::new(AtomicUsize::new(0));
    let driver = tokio::spawn(drive(admin.clone(), merchants, done.clone()));
    wait_for("40% of the operations", Duration::from_secs(120), || async {
        (done.load(Ordering::SeqCst) >= OPS * 2 / 5).then_some(())
    })
    .await;
    kill_mid_attempt(&db, &admin, &mut nodes[0]).await;
    let killed_at = started.elapsed();
    let leases = db.store.leases_held_by(&nodes[0].name, now()).await.expect("leases");
    assert!(leases > 0, "node-0 died holding no lease: the test proved no takeover");
    let ops = driver.await.expect("driver");
    let driven = started.elapsed();

    let finals: Vec<(String, i64)> = ops.iter().map(|op| (op.clone(), 2)).collect();
    wait_for_callbacks(&rx, &finals, Duration::from_secs(120)).await;
    let counts = wait_for("an empty queue", Duration::from_secs(60), || async {
        let c = db.store.delivery_counts().await.expect("counts");
        (!c.contains_key("pending")).then_some(c)
    })
    .await;

    let hits = rx.hits();
    let dups = duplicates(&hits);
    eprintln!(
        "cluster: {OPS} operations, {} callbacks received ({} answered 500), \
         deliveries {counts:?}; node-0 killed at {killed_at:?} holding {leases} leases; \
         {dups} duplicates; driven in {driven:?}, all delivered in {:?}",
        hits.len(),
        hits.iter().filter(|h| h.answered != 200).count(),
        started.elapsed()
    );
    assert_no_stale_after_newer(&hits);
    assert!(dups as i64 <= leases, "{dups} duplicates but the killed node held {leases} leases");
    // In flight, plus the hand-offs waiting in the node's lines (leased when handed over).
    let bound = MAX_IN_FLIGHT * (1 + payhook_dispatch::dispatcher::LINE_FACTOR);
    assert!(leases <= bound as i64, "{leases} leases > {bound} (in flight and in line)");
    let settled = counts.get("delivered").copied().unwrap_or(0)
        + counts.get("superseded").copied().unwrap_or(0);
    assert_eq!(settled, counts.values().sum::<i64>(), "nothing exhausted or cancelled");
    drop(nodes);
    db.drop().await;
}

/// Nodes correct their clocks to the database's (`cluster_clock`); the store reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tells_its_own_time_and_sqlite_has_none_to_tell() {
    use payhook_store::Store;
    let db = Database::fresh().await;
    let before = now();
    let at = db.store.database_time().await.expect("read").expect("PostgreSQL has a clock");
    let after = now();
    // The same machine's clock: within the round trip, give or take the clocks' resolution.
    assert!(before.0 - 5 <= at.0 && at.0 <= after.0 + 5, "{before:?} <= {at:?} <= {after:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let sealer = payhook_store::seal::Sealer::from_base64(&MASTER_KEY).expect("key");
    let sqlite = payhook_store::sqlite::SqliteStore::open(&dir.path().join("p.db"), sealer)
        .expect("open SQLite");
    assert_eq!(sqlite.database_time().await.expect("read"), None);
    db.drop().await;
}
