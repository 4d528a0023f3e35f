//! What every phase drives: the callback receiver, the `payhook serve` child under test, the
//! admin API client, and a bounded fan-out of requests.

use super::{ADMIN, MASTER_KEY};
use anyhow::{bail, Context};
use axum::body::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

/// The callback receiver: counts callbacks, and in latency mode notes when each operation's
/// callback arrived.
#[derive(Default)]
pub(super) struct Receiver {
    pub(super) count: AtomicU64,
    pub(super) target: AtomicU64,
    pub(super) done: Notify,
    pub(super) arrivals: Mutex<Option<HashMap<String, Instant>>>,
}

pub(super) async fn start_receiver() -> anyhow::Result<(String, Arc<Receiver>)> {
    let rx = Arc::new(Receiver::default());
    let state = rx.clone();
    let url = serve_receiver(move |body| {
        state.arrived(&body);
        axum::http::StatusCode::OK
    })
    .await?;
    Ok((url, rx))
}

/// An HTTP receiver on loopback answering every request with `answer(body)`'s status (and
/// the body "ok"); returns its callback URL.
pub(super) async fn serve_receiver<F>(answer: F) -> anyhow::Result<String>
where
    F: Fn(Bytes) -> axum::http::StatusCode + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let answer = answer.clone();
        async move { (answer(body), "ok") }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/callback", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The operation id of a callback body (`data.id`).
pub(super) fn callback_operation_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
}

impl Receiver {
    pub(super) fn arrived(&self, body: &[u8]) {
        if let Some(map) = self.arrivals.lock().expect("arrivals mutex").as_mut() {
            if let Some(id) = callback_operation_id(body) {
                map.entry(id).or_insert_with(Instant::now);
            }
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.target.load(Ordering::SeqCst) {
            self.done.notify_waiters();
        }
    }

    /// Waits until `n` callbacks in all have arrived, or fails after `deadline`.
    pub(super) async fn wait_for(&self, n: u64, deadline: Duration) -> anyhow::Result<()> {
        self.target.store(n, Ordering::SeqCst);
        let start = Instant::now();
        while self.count.load(Ordering::SeqCst) < n {
            let left =
                deadline.checked_sub(start.elapsed()).context("callbacks did not all arrive")?;
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(200)), self.done.notified())
                    .await;
        }
        Ok(())
    }
}

/// A `payhook serve` child process.
pub(super) struct Server {
    pub(super) child: Child,
    pub(super) base: String,
}

impl Server {
    pub(super) fn start(database: &str) -> anyhow::Result<Server> {
        Server::start_with(database, &[])
    }

    /// A server with `extra` flags after the bench's own.
    pub(super) fn start_with(database: &str, extra: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the payhook binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-private-targets"])
            .args(["--max-in-flight", "256", "--per-host-limit", "256"])
            .args(["--database", database])
            .args(extra)
            .env("PAYHOOK_ADMIN_TOKEN", ADMIN)
            .env("PAYHOOK_MASTER_KEY", MASTER_KEY.as_str())
            .env("PAYHOOK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting payhook serve")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("payhook listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).context("server did not start")?;
        Ok(Server { child, base })
    }

    /// CPU time (user + system, all threads) the server has used so far, in seconds. Read
    /// per callback it is the cost of the delivery path, which other load on the machine
    /// does not change the way it changes a rate.
    pub(super) fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 14th and
        // 15th fields of the line, in USER_HZ (100 per second on Linux).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Peak resident set (VmHWM) of the server process, in MiB.
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
}

impl Api {
    /// Posts a body serialized beforehand and reads the answer without parsing it: the load
    /// generator shares the machine with the server, so it spends no more per request than
    /// the bare phase's client does.
    pub(super) async fn post_raw(&self, path: &str, body: String) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let answer = resp.bytes().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }

    pub(super) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {value}");
        }
        Ok(value)
    }
}

pub(super) fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?)
}

/// Runs `total` jobs with at most `concurrency` in flight.
pub(super) async fn fan_out<F, Fut>(total: usize, concurrency: usize, job: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let permit = permits.clone().acquire_owned().await?;
        let fut = job(i);
        tasks.spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
