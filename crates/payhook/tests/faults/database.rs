//! The database goes away (issue 26, part 2): three `payhook serve` nodes on a PostgreSQL of
//! the scenario's own take a steady load of status reports, spread over the nodes, while the
//! server goes away for 15 s and comes back — once stopped (`pg_ctl stop -m fast`: sessions
//! cut, connections refused), once black-holed (iptables drops its packets both ways: no
//! refusal, no reset, every wait has to end by a timeout).
//!
//! Every answer is recorded: status, error code, `Retry-After`, how long it took. What holds:
//! - no report sent while the server is gone is answered 2xx;
//! - every refusal is 503 `store_unavailable` with `Retry-After` (a report in flight at the
//!   moment the fault begins may meet it mid-transaction: counted apart, and it too must be a
//!   503 `store_unavailable` — anything else is printed and fails);
//! - every answer comes within [`ANSWER_BOUND`] (the store's client-side bound on a report,
//!   8 s, plus slack), and `/readyz` says `store_unavailable` on every node while it is gone;
//! - afterwards every report answered 2xx is delivered (lost = 0), a callback arrives twice
//!   only when its first attempt's record was lost to the fault and its lease ran out, and
//!   every node answers 2xx again with no restart (times to recover printed).

use crate::figures::Figures;
use crate::netns::{self, Rule};
use crate::postgres::OwnPostgres;
use crate::support::{wait_for, Admin, Database, Node, ADMIN};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 3;
/// How long the server is gone.
const OUTAGE: Duration = Duration::from_secs(15);
/// Reports per second offered, whatever the answers (an open loop: a slow answer does not
/// slow the load down).
const RATE: u32 = 30;
/// Load before the fault.
const WARM_UP: Duration = Duration::from_secs(3);
/// Load after every node has answered 2xx again.
const COOL_DOWN: Duration = Duration::from_secs(2);
/// Operations registered up front, one report each: enough for the whole load.
const OPERATIONS: usize = 1500;
/// The longest any answer may take: the store bounds a report's wait by 8 s
/// (`CALL_TIMEOUT` in payhook-store's postgres.rs), whatever the network does.
const ANSWER_BOUND: Duration = Duration::from_secs(10);
/// `--request-timeout`; a lease is that plus 15 s (`payhook_store::lease_for`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// `pg_ctl stop -m fast`, later `pg_ctl start`.
    Stop,
    /// Every packet to and from the server's port dropped, later let through again.
    BlackHole,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a fault scenario: scripts/faults runs it inside its own network namespace"]
async fn database_stopped_for_15s_under_load() {
    scenario("database-stopped", Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a fault scenario: scripts/faults runs it inside its own network namespace"]
async fn database_black_holed_for_15s_under_load() {
    scenario("database-black-holed", Fault::BlackHole).await;
}

/// One answer of the API to one report.
#[derive(Debug, Clone)]
struct Answer {
    node: usize,
    op: usize,
    sent: Instant,
    took: Duration,
    /// 0 when no HTTP answer came at all.
    status: u16,
    code: String,
    retry_after: bool,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn at(&self) -> Instant {
        self.sent + self.took
    }

    fn unavailable(&self) -> bool {
        self.status == 503 && self.code == "store_unavailable" && self.retry_after
    }
}

/// When the fault began and ended, on the test's clock.
struct Window {
    /// Just before the stop (or the rule) was applied.
    begin: Instant,
    /// The server is gone: `pg_ctl stop` returned, or the rules are in.
    gone: Instant,
    /// Just before it was started again (or the rules removed).
    back_begin: Instant,
    /// `pg_ctl start` returned (accepting connections), or the rules are out.
    back: Instant,
}

async fn scenario(name: &'static str, fault: Fault) {
    netns::require_namespace();
    let started = Instant::now();
    let pg = OwnPostgres::start();
    let db = Database::on(pg.url()).await;
    let rx = Arrivals::start().await;
    let timeout = format!("{}s", REQUEST_TIMEOUT.as_secs());
    let flags = ["--poll-interval", "100ms", "--request-timeout", &timeout];
    let nodes: Vec<Node> =
        (0..NODES).map(|i| Node::start(&format!("{name}-{i}"), &db.url(), &flags)).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone().expect("API on")).collect();
    let admin = Admin::new(bases.clone());
    let retry = json!({"interval": "200ms", "max_attempts": 100});
    let (merchant, _) = admin.merchant(&format!("{}/m/0", rx.base), retry).await;
    let ops = Arc::new(register(&admin, &merchant).await);
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");

    // The load, then the fault.
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        http.clone(),
        bases.clone(),
        ops.clone(),
        answers.clone(),
        stop.clone(),
    ));
    let warm_2xx = wait_for("2xx answers before the fault", Duration::from_secs(30), || async {
        let n = answers.lock().expect("answers").iter().filter(|a| a.ok()).count();
        (n >= (WARM_UP.as_secs() * u64::from(RATE)) as usize).then_some(n)
    })
    .await;
    let begin = Instant::now();
    let mut rules = Vec::new();
    match fault {
        Fault::Stop => pg.stop(),
        Fault::BlackHole => {
            for dir in ["--dport", "--sport"] {
                rules.push(Rule::add(&format!("INPUT -i lo -p tcp {dir} {} -j DROP", pg.port)));
            }
        }
    }
    let gone = Instant::now();

    // While it is gone: every node's /readyz says so, each within the bound.
    let readyz =
        futures_join(bases.iter().map(|b| readyz_unavailable(http.clone(), b.clone()))).await;
    let readyz_max = readyz.iter().map(|r| r.0).max().unwrap_or_default();
    let remaining = OUTAGE.saturating_sub(gone.elapsed());
    assert!(remaining > Duration::ZERO, "/readyz took the whole outage: {readyz:?}");
    tokio::time::sleep(remaining).await; // the fault's length, not a guess at an outcome

    let back_begin = Instant::now();
    match fault {
        Fault::Stop => pg.start_again(),
        Fault::BlackHole => rules.clear(),
    }
    let back = Instant::now();
    let w = Window { begin, gone, back_begin, back };

    // Recovery: each node answers 2xx again to a report sent after the server came back.
    let recovered: Vec<Duration> =
        wait_for("every node answering 2xx again", Duration::from_secs(60), || async {
            let answers = answers.lock().expect("answers");
            let firsts: Vec<Option<Duration>> = (0..NODES)
                .map(|n| {
                    answers
                        .iter()
                        .filter(|a| a.node == n && a.ok() && a.sent >= back)
                        .map(|a| a.at().duration_since(back))
                        .min()
                })
                .collect();
            firsts.into_iter().collect::<Option<Vec<_>>>()
        })
        .await;
    for base in &bases {
        wait_for("/readyz ready again", Duration::from_secs(30), || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }
    tokio::time::sleep(COOL_DOWN).await; // more load on the recovered cluster
    stop.store(true, Ordering::SeqCst);
    load.await.expect("the load");
    let answers = answers.lock().expect("answers").clone();
    assert!(
        answers.len() < OPERATIONS,
        "the load ran out of operations: raise OPERATIONS ({} answers)",
        answers.len()
    );

    // Every report answered 2xx is delivered; then the queue drains (resends of attempts
    // whose record was lost come after their lease).
    let acked: HashSet<usize> = answers.iter().filter(|a| a.ok()).map(|a| a.op).collect();
    let want: HashSet<String> = acked.iter().map(|&i| ops[i].clone()).collect();
    wait_for("every acknowledged callback", Duration::from_secs(60), || {
        let (rx, want) = (&rx, &want);
        async move {
            let got = delivered_ops(&rx.hits());
            want.iter().all(|op| got.contains(op)).then_some(())
        }
    })
    .await;
    let lease = REQUEST_TIMEOUT + Duration::from_secs(15);
    wait_for("an empty queue", lease + Duration::from_secs(40), || async {
        let c = db.store.delivery_counts().await.ok()?;
        (!c.contains_key("pending")).then_some(())
    })
    .await;

    let hits = rx.hits();
    let got = delivered_ops(&hits);
    // The backlog: from the server's return to the last callback of a report sent before it
    // (and answered 2xx) — later reports are the recovered cluster's ordinary traffic.
    let backlog: HashSet<&str> =
        answers.iter().filter(|a| a.ok() && a.sent < w.back).map(|a| ops[a.op].as_str()).collect();
    let mut first_arrival: HashMap<&str, Instant> = HashMap::new();
    for h in &hits {
        first_arrival.entry(h.operation_id.as_str()).or_insert(h.at);
    }
    let backlog_delivered = backlog
        .iter()
        .filter_map(|op| first_arrival.get(op))
        .map(|at| at.saturating_duration_since(w.back))
        .max()
        .unwrap_or_default();
    let mut figures = Figures::new(name);
    figures.expected = want.len();
    figures.delivered = want.iter().filter(|op| got.contains(*op)).count();
    let dups = duplicates(&hits);
    figures.duplicates = dups.len();

    // The answers, by kind and by when they were sent.
    let in_flight_at_fault = |a: &Answer| a.sent < w.gone && a.at() > w.begin;
    let during = |a: &Answer| a.sent >= w.gone && a.at() <= w.back_begin;
    let ok_during: Vec<&Answer> = answers.iter().filter(|a| during(a) && a.ok()).collect();
    // Sent while it was gone, answered 2xx once it was back: they waited within the bound.
    let ok_after_waiting =
        answers.iter().filter(|a| a.ok() && a.sent >= w.gone && a.sent < w.back_begin).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| !a.ok()).collect();
    let mut others: BTreeMap<String, usize> = BTreeMap::new();
    let mut others_in_flight = 0;
    for a in refused.iter().filter(|a| !a.unavailable()) {
        let ra = if a.retry_after { ", Retry-After" } else { "" };
        *others.entry(format!("{} {}{ra}", a.status, a.code)).or_default() += 1;
        if in_flight_at_fault(a) {
            others_in_flight += 1;
        }
    }
    let unavailable = refused.iter().filter(|a| a.unavailable()).count();
    let unavailable_in_flight =
        refused.iter().filter(|a| a.unavailable() && in_flight_at_fault(a)).count();
    let max_took = answers.iter().map(|a| a.took).max().unwrap_or_default();
    let max_took_refused = refused.iter().map(|a| a.took).max().unwrap_or_default();
    let refused_ops: HashSet<String> = refused.iter().map(|a| ops[a.op].clone()).collect();
    let stored_anyway = refused_ops.iter().filter(|op| got.contains(*op)).count();
    let min_dup_gap = dups.iter().map(|d| d.gap).min();

    figures
        .note("reports", answers.len())
        .note("answered_2xx", acked.len())
        .note("of_them_sent_while_gone", ok_after_waiting)
        .note("store_unavailable", unavailable)
        .note("of_them_in_flight_at_fault", unavailable_in_flight)
        .note("other_refusals", refused.len() - unavailable)
        .note_duration("outage", w.back_begin.duration_since(w.begin))
        .note("max_answer_ms", max_took.as_millis())
        .note("max_refusal_ms", max_took_refused.as_millis())
        .note("readyz_max_ms", readyz_max.as_millis())
        .note("recover_first_2xx_ms", recovered.iter().min().expect("nodes").as_millis())
        .note("recover_all_nodes_ms", recovered.iter().max().expect("nodes").as_millis())
        .note("recover_backlog_delivered_ms", backlog_delivered.as_millis())
        .note("refused_but_stored", stored_anyway)
        .note("min_duplicate_gap_ms", min_dup_gap.map_or("-".into(), |g| g.as_millis().to_string()))
        .note_duration("wall", started.elapsed());
    figures.print();
    eprintln!(
        "{name}: warm-up {warm_2xx} 2xx; stop/rules took {:?}, start/removal {:?}; \
         other refusals {others:?} ({others_in_flight} in flight at the fault); \
         2xx sent while gone: {}; recovered per node {recovered:?}; /readyz while gone \
         {readyz:?}; duplicates {:?}",
        w.gone.duration_since(w.begin),
        w.back.duration_since(w.back_begin),
        ok_during.len(),
        dups.iter().map(|d| (&d.webhook_id, d.gap)).collect::<Vec<_>>(),
    );

    assert!(ok_during.is_empty(), "2xx while the server was gone: {ok_during:?}");
    assert!(others.is_empty(), "refusals other than 503 store_unavailable: {others:?}");
    assert!(unavailable > 0, "no report met the fault: the scenario proved nothing");
    assert!(max_took <= ANSWER_BOUND, "an answer took {max_took:?} (> {ANSWER_BOUND:?})");
    assert!(readyz_max <= ANSWER_BOUND, "/readyz took {readyz_max:?}");
    assert_eq!(figures.lost(), 0, "acknowledged reports never delivered");
    for d in &dups {
        // A second send comes only after the first attempt's record was lost (during the
        // fault, or its bound after it) and its lease ran out: never two at once.
        let first_in_fault = d.first + ANSWER_BOUND >= w.begin && d.first <= w.back + ANSWER_BOUND;
        assert!(first_in_fault, "a duplicate whose first send was not near the fault: {d:?}");
        assert!(d.gap >= lease / 2, "a duplicate {:?} after the first, within its lease", d.gap);
    }

    drop(nodes);
    drop(db);
    drop(pg);
}

/// Registers [`OPERATIONS`] operations of `merchant`, 16 at a time over the nodes.
async fn register(admin: &Admin, merchant: &str) -> Vec<String> {
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..OPERATIONS {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        let (admin, merchant) = (admin.clone(), merchant.to_owned());
        tasks.spawn(async move {
            let op = admin.register(i, &merchant, &format!("order-{i}")).await;
            drop(permit);
            (i, op)
        });
    }
    let mut ops = vec![String::new(); OPERATIONS];
    while let Some(done) = tasks.join_next().await {
        let (i, op) = done.expect("registration task");
        ops[i] = op;
    }
    ops
}

/// Reports `success` for one operation after another at [`RATE`] a second, round robin over
/// the nodes, each in a task of its own, until `stop`; records every answer.
async fn run_load(
    http: reqwest::Client,
    bases: Vec<String>,
    ops: Arc<Vec<String>>,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, op) in ops.iter().enumerate() {
        tick.tick().await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let node = i % bases.len();
        let url = format!("{}/v1/operations/{op}/status", bases[node]);
        let (http, answers) = (http.clone(), answers.clone());
        tasks.spawn(async move {
            let body = json!({"status": "success", "event_key": format!("order-{i}-success")});
            let sent = Instant::now();
            let answer = http.post(url).bearer_auth(ADMIN).json(&body).send().await;
            let (status, code, retry_after) = match answer {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r.headers().contains_key("retry-after");
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let code = v["error"]["code"].as_str().unwrap_or_default().to_owned();
                    (status, code, retry_after)
                }
                Err(e) => (0, format!("no answer: {e}"), false),
            };
            let took = sent.elapsed();
            let a = Answer { node, op: i, sent, took, status, code, retry_after };
            answers.lock().expect("answers").push(a);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a report task");
    }
}

/// Asks `base`'s `/readyz` until it answers 503 `store_unavailable` (with `Retry-After`);
/// returns how long that answer took, and its message.
async fn readyz_unavailable(http: reqwest::Client, base: String) -> (Duration, String) {
    wait_for("/readyz: store_unavailable", OUTAGE, || async {
        let sent = Instant::now();
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        let (status, retry_after) = (r.status().as_u16(), r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.ok()?;
        let took = sent.elapsed();
        let code = v["error"]["code"].as_str().unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default().to_owned();
        (status == 503 && code == "store_unavailable" && retry_after).then_some((took, message))
    })
    .await
}

/// Runs the futures together; their outputs in order.
async fn futures_join<T: Send + 'static, F: std::future::Future<Output = T> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a readiness check"));
    }
    out
}

/// The merchant: answers every callback 200 at once and records when each arrived.
#[derive(Clone, Default)]
struct Arrivals {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

#[derive(Debug, Clone)]
struct Hit {
    webhook_id: String,
    operation_id: String,
    at: Instant,
}

impl Arrivals {
    async fn start() -> Arrivals {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/m/{merchant}", axum::routing::post(arrive))
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("receiver address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Arrivals { base, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }
}

async fn arrive(State(hits): State<Arc<Mutex<Vec<Hit>>>>, headers: HeaderMap, body: Bytes) {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hit = Hit {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        operation_id: v["data"]["id"].as_str().unwrap_or_default().to_owned(),
        at: Instant::now(),
    };
    hits.lock().expect("hits").push(hit);
}

/// Operations with a callback the receiver got (every one is answered 200).
fn delivered_ops(hits: &[Hit]) -> HashSet<String> {
    hits.iter().map(|h| h.operation_id.clone()).collect()
}

/// A callback the receiver got (and answered 2xx) more than once.
#[derive(Debug)]
struct Duplicate {
    webhook_id: String,
    /// The first 2xx arrival, and the time from it to the next.
    first: Instant,
    gap: Duration,
}

fn duplicates(hits: &[Hit]) -> Vec<Duplicate> {
    let mut seen: HashMap<&str, Instant> = HashMap::new();
    let mut dups = Vec::new();
    for h in hits {
        match seen.get(h.webhook_id.as_str()) {
            Some(&first) => dups.push(Duplicate {
                webhook_id: h.webhook_id.clone(),
                first,
                gap: h.at.duration_since(first),
            }),
            None => {
                seen.insert(&h.webhook_id, h.at);
            }
        }
    }
    dups
}
