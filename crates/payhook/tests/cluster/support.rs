//! Helpers of the cluster tests: a fresh PostgreSQL schema, `payhook serve` processes on it,
//! an admin client that fails over between nodes, and a recording receiver.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use payhook_store::postgres::{drop_schema, PgStore};
use serde_json::{json, Value};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "cluster-admin-token-0123456789";

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The master key every node of a test cluster shares (and the test's own store view).
pub static MASTER_KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(payhook_store::seal::Sealer::generate_key);

/// A schema of its own on the test server (`PAYHOOK_TEST_DATABASE_URL`, default the local
/// `test` database), migrated, and dropped when the test ends.
pub struct Database {
    base: String,
    schema: String,
    /// The test's own view of the store, to watch the queue and the leases.
    pub store: PgStore,
}

impl Database {
    pub async fn fresh() -> Database {
        let base = std::env::var("PAYHOOK_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        Database::on(base).await
    }

    /// A fresh schema on the server at `base`.
    pub async fn on(base: String) -> Database {
        let schema = payhook_store::mint_schema_name("payhook_c_");
        let sealer = payhook_store::seal::Sealer::from_base64(&MASTER_KEY).expect("test key");
        let store = match PgStore::connect(&base, Some(&schema), sealer).await {
            Ok(s) => s,
            Err(e) => panic!(
                "the cluster tests need PostgreSQL at {base} \
                 (set PAYHOOK_TEST_DATABASE_URL to use another): {e}"
            ),
        };
        Database { base, schema, store }
    }

    /// The URL nodes get: the schema rides in the connection options.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.schema)
    }

    pub async fn drop(self) {
        drop(self.store);
        drop_schema(&self.base, &self.schema).await.expect("drop the test schema");
    }
}

/// One `payhook serve` process.
pub struct Node {
    pub name: String,
    /// `http://addr` of its API; `None` on a `--no-api` node.
    pub base: Option<String>,
    child: Child,
}

impl Node {
    /// Starts a node named `name` on `database` with extra flags, and waits until it says it is
    /// up (it prints `payhook listening on http://ADDR`, or the dispatch-only line).
    pub fn start(name: &str, database: &str, extra: &[&str]) -> Node {
        Node::start_with_env(name, database, extra, &[])
    }

    /// [`Node::start`] with more environment variables (a preloaded library, say).
    pub fn start_with_env(
        name: &str,
        database: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_payhook"))
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-private-targets"])
            .args(["--node-id", name])
            .args(extra)
            .env("PAYHOOK_DATABASE", database)
            .env("PAYHOOK_ADMIN_TOKEN", ADMIN)
            .env("PAYHOOK_MASTER_KEY", MASTER_KEY.as_str())
            .env("PAYHOOK_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the payhook binary starts");
        let base = ready_line(&mut child, name);
        Node { name: name.to_owned(), base, child }
    }

    /// SIGKILL: no drain, no lease release, nothing flushed.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }
}

/// Reads the child's stdout until its ready line; keeps draining it afterwards.
fn ready_line(child: &mut Child, name: &str) -> Option<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("payhook listening on ") {
                let _ = tx.send(Some(addr.to_owned()));
            } else if line.starts_with("payhook dispatching") {
                let _ = tx.send(None);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("node {name} did not report ready within 60 s"))
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The payment core's side: admin calls spread over the API nodes, failing over to the next
/// node when one does not answer (it may have been killed).
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    nodes: Arc<Vec<(String, AtomicBool)>>,
}

impl Admin {
    pub fn new(bases: Vec<String>) -> Admin {
        let nodes = bases.into_iter().map(|b| (b, AtomicBool::new(true))).collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Admin { http, nodes: Arc::new(nodes) }
    }

    /// Stops sending to node `i` (the test is about to kill it).
    pub fn forget(&self, i: usize) {
        self.nodes[i].1.store(false, Ordering::SeqCst);
    }

    /// `POST path` with `body`, first to node `first % n`, then to the others when a node
    /// does not answer at all (killed mid-call): safe because every call the tests make is
    /// idempotent (registration by external id, reports by event key). Any answer, 5xx
    /// included, is returned as it is.
    pub async fn post(&self, first: usize, path: &str, body: &Value) -> (u16, Value) {
        let n = self.nodes.len();
        let mut last = String::new();
        for round in 0..(4 * n) {
            let (base, alive) = &self.nodes[(first + round) % n];
            if !alive.load(Ordering::SeqCst) {
                continue;
            }
            let sent = self.http.post(format!("{base}{path}")).bearer_auth(ADMIN).json(body);
            match sent.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    return (status, r.json().await.unwrap_or(Value::Null));
                }
                Err(e) => last = format!("{base}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20 * round as u64)).await;
        }
        panic!("POST {path} failed on every node: {last}");
    }

    /// Creates a standard-dialect merchant; returns its id and signing secret.
    pub async fn merchant(&self, callback_url: &str, retry: Value) -> (String, String) {
        let body = json!({"name": "shop", "dialect": "standard",
                          "callback_url": callback_url, "retry": retry});
        let (status, v) = self.post(0, "/v1/merchants", &body).await;
        assert_eq!(status, 201, "create merchant: {v}");
        (str_field(&v, "id"), str_field(&v, "signing_secret"))
    }

    /// Registers (idempotently) an operation; returns its id.
    pub async fn register(&self, node: usize, merchant: &str, external_id: &str) -> String {
        let body = json!({"merchant_id": merchant, "external_id": external_id,
                          "amount": 1500, "currency": "UAH", "kind": "purchase"});
        let (status, v) = self.post(node, "/v1/operations", &body).await;
        assert!(status == 201 || status == 200, "register {external_id}: {status} {v}");
        str_field(&v, "id")
    }

    /// Reports a status with an event key (so a retry after a lost answer is harmless).
    pub async fn report(&self, node: usize, op: &str, status: &str, key: &str) {
        let body = json!({"status": status, "event_key": key});
        let (code, v) = self.post(node, &format!("/v1/operations/{op}/status"), &body).await;
        assert_eq!(code, 202, "report {status} for {op}: {v}");
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}")).to_owned()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub webhook_id: String,
    pub operation_id: String,
    pub seq: i64,
    pub status: String,
    /// What the receiver answered.
    pub answered: u16,
}

/// A merchant endpoint on loopback that records every request in arrival order, fails every
/// `fail_every`-th one with 500 (deterministic, so runs are comparable), and takes `delay` to
/// answer (so attempts stay in flight long enough to be caught by a kill).
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    fail_every: Option<usize>,
    delay: Duration,
    count: AtomicUsize,
    /// Arrival order is the order of this vector: pushes happen under the lock.
    hits: Mutex<Vec<Hit>>,
}

impl Receiver {
    pub async fn start(fail_every: Option<usize>, delay: Duration) -> Receiver {
        let state = Arc::new(ReceiverState {
            fail_every,
            delay,
            count: AtomicUsize::new(0),
            hits: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/m/{merchant}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("receiver address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, state }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("hits lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.hits.lock().expect("hits lock").len()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(merchant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = state.count.fetch_add(1, Ordering::SeqCst) + 1;
    let fail = state.fail_every.is_some_and(|every| n % every == 0);
    let answered = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let data = &v["data"];
    let hit = Hit {
        path: format!("/m/{merchant}"),
        webhook_id: header(&headers, "webhook-id"),
        operation_id: data["id"].as_str().unwrap_or_default().to_owned(),
        seq: data["seq"].as_i64().unwrap_or(-1),
        status: data["status"].as_str().unwrap_or_default().to_owned(),
        answered: answered.as_u16(),
        headers,
        body,
    };
    state.hits.lock().expect("hits lock").push(hit);
    tokio::time::sleep(state.delay).await;
    answered
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}
