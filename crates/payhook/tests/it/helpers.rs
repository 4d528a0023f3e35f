//! Test helpers: a real payhook on port 0 with a fresh SQLite file, a typed client, and a real
//! HTTP receiver on loopback that records what arrives and answers as told.

use payhook::app;
use payhook::config::Config;
use payhook_core::clock::{Clock, ManualClock, SystemClock};
use payhook_core::Timestamp;
use payhook_dispatch::Dispatcher;
use payhook_store::Store;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "test-admin-token-0123456789";

/// Where the suite's databases live: SQLite files by default; a fresh PostgreSQL schema per
/// test when `PAYHOOK_TEST_BACKEND=postgres` (scripts/test runs the suite both ways).
pub struct TestDb {
    pub database: String,
    /// The SQLite file's directory, removed on drop.
    _dir: tempfile::TempDir,
    /// (server URL, schema) to drop afterwards.
    schema: Option<(String, String)>,
}

/// The master key of PostgreSQL test databases (a shared database has no key file).
static PG_MASTER_KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(payhook_store::seal::Sealer::generate_key);

impl TestDb {
    /// A SQLite file, whatever the suite's backend (for tests of SQLite's own behaviour).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("payhook.db").to_string_lossy().into_owned();
        TestDb { database, _dir: dir, schema: None }
    }

    fn new() -> TestDb {
        if std::env::var("PAYHOOK_TEST_BACKEND").as_deref() != Ok("postgres") {
            return TestDb::sqlite();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let url = std::env::var("PAYHOOK_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = payhook_store::mint_schema_name("payhook_e2e_");
        let database = format!("{url}?options=-csearch_path%3D{schema}");
        TestDb { database, _dir: dir, schema: Some((url, schema)) }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((url, schema)) = self.schema.take() else { return };
        // Dropped inside the test's runtime, possibly while the app's tasks still hold a
        // transaction on that runtime: waiting here would stop them from finishing and the
        // DROP SCHEMA would wait for them forever. So clean up on a thread of its own, without
        // waiting; once the test's runtime ends, its connections close and the drop proceeds.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(payhook_store::postgres::drop_schema(&url, &schema))
                .map_err(std::io::Error::other)
        });
    }
}

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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the app under test keeps time and dispatches.
pub enum Mode {
    /// Wall clock, dispatcher loop running: the real thing.
    Live,
    /// A manual clock and no dispatcher loop: the test calls `run_once` and moves time.
    Manual,
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub dispatcher: Arc<Dispatcher>,
    pub watchdog: Arc<payhook_dispatch::Watchdog>,
    pub purger: Arc<payhook_dispatch::Purger>,
    /// The operator alerts' sender, when the app has an ops webhook (`config.ops_webhook`).
    pub ops: Option<Arc<payhook_dispatch::OpsNotifier>>,
    pub clock: Option<Arc<ManualClock>>,
    pub shutdown: CancellationToken,
    /// Keeps the database alive for the test's duration (moved on `restart`).
    dir: Option<TestDb>,
}

pub async fn spawn_app(mode: Mode) -> TestApp {
    spawn_app_with(mode, |_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `tune`.
pub async fn spawn_app_with(mode: Mode, tune: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(TestDb::new(), mode, tune).await
}

/// Like [`spawn_app_with`], on the given database.
pub async fn spawn_app_on(dir: TestDb, mode: Mode, tune: impl FnOnce(&mut Config)) -> TestApp {
    let clock = match mode {
        Mode::Live => None,
        Mode::Manual => Some(Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)))),
    };
    start(dir, clock, tune).await
}

/// Starts payhook on the database in `dir`; with a manual clock, the dispatcher, watchdog and
/// ops notifier loops stay off (the test drives them).
async fn start(
    dir: TestDb,
    manual: Option<Arc<ManualClock>>,
    tune: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = Config::defaults();
    config.database = dir.database.clone();
    if dir.schema.is_some() {
        config.master_key = Some(PG_MASTER_KEY.clone());
    }
    config.admin_token = Some(ADMIN.into());
    config.allow_private_targets = true;
    config.request_timeout = Duration::from_secs(5);
    config.poll_interval = Duration::from_millis(50);
    let clock: Arc<dyn Clock> = match &manual {
        None => Arc::new(SystemClock),
        Some(c) => c.clone(),
    };
    config.dispatch = manual.is_none();
    if manual.is_some() {
        // The test runs the purge itself (`purger.run_once`), at the times it sets.
        config.purge_interval = Duration::from_secs(24 * 3600);
    }
    tune(&mut config);
    let services = app::build_with_lookup(&config, clock, test_lookup()).await.expect("app builds");
    let (store, dispatcher) = (services.store.clone(), services.dispatcher.clone());
    let watchdog = services.watchdog.clone();
    let purger = services.purger.clone();
    let ops = services.ops.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move { app::serve(listener, services, &config, token).await });
    TestApp {
        base,
        http: reqwest::Client::new(),
        store,
        dispatcher,
        watchdog,
        purger,
        ops,
        clock: manual,
        shutdown,
        dir: Some(dir),
    }
}

impl TestApp {
    /// The directory holding a SQLite database (and its master key file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("the app owns its directory")._dir.path()
    }

    /// Stops this app and starts a new one on the same database (and the same manual clock),
    /// as a restart of the process would.
    pub async fn restart(mut self, tune: impl FnOnce(&mut Config)) -> TestApp {
        self.shutdown.cancel();
        let dir = self.dir.take().expect("the app owns its directory");
        start(dir, self.clock.clone(), tune).await
    }
}

/// A response: status code and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the app");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        Resp { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// Creates a merchant; returns its JSON (with `api_key` and `signing_secret`).
    pub async fn merchant(&self, body: Value) -> Value {
        let r = self.admin("POST", "/v1/merchants", Some(body)).await;
        assert_eq!(r.status, 201, "create merchant: {:?}", r.body);
        r.body
    }

    /// Registers an operation for `merchant` with `external_id`; extra fields merged in.
    pub async fn operation(&self, merchant: &str, external_id: &str, extra: Value) -> Value {
        let mut body = json!({
            "merchant_id": merchant, "external_id": external_id,
            "amount": 12_345, "currency": "UAH", "kind": "purchase",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.admin("POST", "/v1/operations", Some(body)).await;
        assert_eq!(r.status, 201, "register operation: {:?}", r.body);
        r.body
    }

    pub async fn report(&self, op: &str, status: &str) -> Resp {
        self.admin("POST", &format!("/v1/operations/{op}/status"), Some(json!({"status": status})))
            .await
    }

    pub async fn deliveries(&self, op: &str) -> Vec<Value> {
        let r = self.admin("GET", &format!("/v1/operations/{op}/deliveries"), None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["data"].as_array().expect("data array").clone()
    }

    /// Waits until every delivery of `op` has left `pending`; returns them.
    pub async fn settled(&self, op: &str) -> Vec<Value> {
        wait_for("deliveries to settle", Duration::from_secs(20), || async {
            let list = self.deliveries(op).await;
            (!list.is_empty() && list.iter().all(|d| d["state"] != "pending")).then_some(list)
        })
        .await
    }

    pub fn advance(&self, d: Duration) {
        self.clock.as_ref().expect("a Manual-mode app").advance(d);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// A scripted answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    /// Held this long before answering (to provoke client timeouts).
    pub delay: Duration,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Answers to give, in order; when empty, `default` is used.
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
    arrived: Notify,
}

/// A real HTTP server on loopback that records every request.
#[derive(Clone)]
pub struct TestReceiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl TestReceiver {
    pub async fn start() -> TestReceiver {
        let state = Arc::new(ReceiverState::default());
        *state.default.lock().expect("lock") = Answer { status: 200, ..Answer::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |req: axum::extract::Request| {
                let state = state.clone();
                async move { answer(state, req).await }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestReceiver { url, state }
    }

    /// The next answers, in order.
    pub fn script(&self, answers: &[(u16, &str)]) {
        let mut s = self.state.script.lock().expect("lock");
        s.extend(answers.iter().map(|(c, b)| Answer {
            status: *c,
            body: (*b).to_owned(),
            ..Answer::default()
        }));
    }

    /// The next answer, with headers.
    pub fn script_answer(&self, answer: Answer) {
        self.state.script.lock().expect("lock").push_back(answer);
    }

    /// The answer once the script is spent.
    pub fn set_default(&self, status: u16, body: &str) {
        *self.state.default.lock().expect("lock") =
            Answer { status, body: body.to_owned(), ..Answer::default() };
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let notified = self.state.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            let left = deadline.checked_sub(start.elapsed()).unwrap_or_default();
            assert!(!left.is_zero(), "timed out waiting for {n} callbacks, got {}", got.len());
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

async fn answer(
    state: Arc<ReceiverState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.expect("body").to_vec();
    let got = Received {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    let reply = {
        let next = state.script.lock().expect("lock").pop_front();
        next.unwrap_or_else(|| state.default.lock().expect("lock").clone())
    };
    state.received.lock().expect("lock").push(got);
    state.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp =
        (axum::http::StatusCode::from_u16(reply.status).expect("valid status"), reply.body)
            .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(k, v.parse().expect("header value"));
    }
    resp
}

/// Host names the tests' outbound requests resolve as the system would not: a name that
/// resolves to a forbidden address passes registration (its host is no literal address) and
/// must be refused by the dispatcher after DNS. Every other name goes to the system resolver.
/// - `loopback.test` and any name under it: 127.0.0.1;
/// - `mapped.test`: `::ffff:127.0.0.1`; `v6loopback.test`: `::1`;
/// - `metadata.test`: 169.254.169.254 (the cloud metadata address).
pub fn test_lookup() -> payhook_dispatch::sender::Lookup {
    let system = payhook_dispatch::sender::system_lookup();
    std::sync::Arc::new(move |host: &str| {
        let fixed: Option<&str> = match host {
            "loopback.test" => Some("127.0.0.1"),
            h if h.ends_with(".loopback.test") => Some("127.0.0.1"),
            "mapped.test" => Some("::ffff:127.0.0.1"),
            "v6loopback.test" => Some("::1"),
            "metadata.test" => Some("169.254.169.254"),
            _ => None,
        };
        match fixed {
            Some(ip) => {
                let ip: std::net::IpAddr = ip.parse().expect("a test address");
                Box::pin(async move { Ok(vec![ip]) })
            }
            None => system(host),
        }
    })
}

/// `rx`'s URL with its host written as `name` (one of [`test_lookup`]'s names).
pub fn via_name(rx: &TestReceiver, name: &str) -> String {
    rx.url.replace("127.0.0.1", name)
}
