//! Phase 7, run only when named (`--only soak`): a long run at a steady offered rate against a
//! receiver that fails every tenth request with 500, sampling the server's health as it goes.
//!
//! One `payhook serve` child on a fresh SQLite file, keeping history and operations for
//! `--soak-retention` and purging every 10 s, so the store can level off within the run. Each
//! tick of `--soak-rate` registers an operation and reports `success` for it. The merchant's
//! retry policy is [`RETRY`], so a failed callback is retried within seconds. Every
//! `--soak-sample-every`, and at the end, a sample: the server's RSS (`VmRSS`) and open file
//! descriptors, report→callback latency over the window since the last sample, callbacks
//! delivered against reports, the backlog (reported, not delivered yet), and the store's bytes
//! on disk (file, `-wal`, `-shm`). After the load stops, the backlog has [`DRAIN`] to drain;
//! what is left is `undelivered`.

use super::{client, percentile, progress, serve_receiver, Api, BenchArgs, Server};
use anyhow::Context;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The receiver answers every `FAIL_EVERY`th request (retries included) with 500.
const FAIL_EVERY: u64 = 10;
/// How long the backlog may take to drain after the load stops.
const DRAIN: Duration = Duration::from_secs(30);

/// The soak merchant's retry policy: a second apart, so a failure is retried in the window.
fn retry_policy() -> Value {
    json!({"interval": "1s", "max_attempts": 20})
}

/// A reported operation whose callback has not been delivered yet.
struct Pending {
    reported: Instant,
    first_attempt: Option<Duration>,
}

/// Latencies of the callbacks delivered since the last sample.
#[derive(Default)]
struct Window {
    first_attempt: Vec<Duration>,
    delivered: Vec<Duration>,
}

/// The load generator's and the receiver's shared bookkeeping.
#[derive(Default)]
struct Soak {
    pending: Mutex<HashMap<String, Pending>>,
    window: Mutex<Window>,
    requests: AtomicU64,
    failed: AtomicU64,
    delivered: AtomicU64,
    unexpected: AtomicU64,
    reported: AtomicU64,
    errors: AtomicU64,
}

/// What a sample reads besides the bookkeeping.
struct Probe {
    pid: u32,
    database: String,
    started: Instant,
}

impl Soak {
    /// Notes a report about to be sent (before it is, so its callback cannot come first).
    fn reporting(&self, id: String) {
        let p = Pending { reported: Instant::now(), first_attempt: None };
        self.pending.lock().expect("pending").insert(id, p);
        self.reported.fetch_add(1, Ordering::SeqCst);
    }

    /// The receiver: every [`FAIL_EVERY`]th request fails; a success delivers its operation.
    fn callback(&self, body: &[u8]) -> StatusCode {
        let now = Instant::now();
        let fail = (self.requests.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(FAIL_EVERY);
        let answer = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        let id = super::harness::callback_operation_id(body).unwrap_or_default();
        let mut pending = self.pending.lock().expect("pending");
        let Some(p) = pending.get_mut(&id) else {
            // Delivered already (a duplicate), or not an operation of this run.
            self.unexpected.fetch_add(1, Ordering::SeqCst);
            return answer;
        };
        let first = *p.first_attempt.get_or_insert(now - p.reported);
        if fail {
            return answer;
        }
        let reported = p.reported;
        pending.remove(&id);
        drop(pending);
        self.delivered.fetch_add(1, Ordering::SeqCst);
        let mut window = self.window.lock().expect("window");
        window.first_attempt.push(first);
        window.delivered.push(now - reported);
        answer
    }

    fn backlog(&self) -> usize {
        self.pending.lock().expect("pending").len()
    }

    /// A sample of the window that began at `since`; the window starts over.
    fn sample(&self, probe: &Probe, since: Instant) -> Value {
        let Window { mut first_attempt, mut delivered } =
            std::mem::take(&mut *self.window.lock().expect("window"));
        first_attempt.sort();
        delivered.sort();
        let ms = |v: &[Duration], p: f64| (percentile(v, p) * 100.0).round() / 100.0;
        let count = |c: &AtomicU64| c.load(Ordering::SeqCst);
        json!({
            "minute": (probe.started.elapsed().as_secs_f64() / 6.0).round() / 10.0,
            "server_rss_mib": rss_mib(probe.pid),
            "server_open_fds": open_fds(probe.pid),
            "window_callbacks": delivered.len(),
            "window_callbacks_per_s": (delivered.len() as f64
                / since.elapsed().as_secs_f64().max(1e-9)).round(),
            "first_attempt_p50_ms": ms(&first_attempt, 0.50),
            "first_attempt_p99_ms": ms(&first_attempt, 0.99),
            "delivered_p50_ms": ms(&delivered, 0.50),
            "delivered_p99_ms": ms(&delivered, 0.99),
            "delivered_max_ms": ms(&delivered, 1.0),
            "reported": count(&self.reported),
            "delivered": count(&self.delivered),
            "backlog": self.backlog(),
            "failed_answers": count(&self.failed),
            "request_errors": count(&self.errors),
            "store_bytes": sqlite_bytes(&probe.database),
        })
    }
}

/// The resident set (`VmRSS`) of process `pid`, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// The open file descriptors of process `pid` (entries of `/proc/<pid>/fd`).
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The SQLite database's bytes on disk: the file, its WAL and its shared-memory index.
fn sqlite_bytes(database: &str) -> u64 {
    let len = |p: String| std::fs::metadata(p).map_or(0, |m| m.len());
    len(database.to_owned()) + len(format!("{database}-wal")) + len(format!("{database}-shm"))
}

/// Runs the soak on a fresh SQLite `database`.
pub(super) async fn soak(args: &BenchArgs, database: &str) -> anyhow::Result<Value> {
    let retention = args.soak_retention.as_str();
    let flags = ["--retention-history", retention, "--retention-operations", retention];
    let server =
        Server::start_with(database, &[&flags[..], &["--purge-interval", "10s"]].concat())?;
    let pid = server.child.id();
    let state = Arc::new(Soak::default());
    let rx = state.clone();
    let url = serve_receiver(move |body| rx.callback(&body)).await?;
    let api = Arc::new(Api { http: client(64)?, base: server.base.clone() });
    let m = api
        .post(
            "/v1/merchants",
            &json!({"name": "soak", "callback_url": url, "retry": retry_policy()}),
        )
        .await?;
    let mid = m["id"].as_str().context("merchant id")?.to_owned();
    progress(&format!(
        "soak: {} reports/s for {}, a sample every {} (server pid {pid}: RSS and open files \
         are that process's, not the bench's)",
        args.soak_rate,
        humantime::format_duration(args.soak_duration),
        humantime::format_duration(args.soak_sample_every),
    ));
    let probe = Probe { pid, database: database.to_owned(), started: Instant::now() };
    let (mut samples, since) = offer(args, &api, &state, &mid, &probe).await;
    drain(&state).await;
    samples.push(state.sample(&probe, since));
    progress(&format!("soak: after the drain: {}", samples.last().expect("a sample")));
    Ok(result(args, &state, samples, &server))
}

/// Offers the load until `--soak-duration` is over, sampling as it goes; returns the samples
/// and when the last window (not sampled yet) began.
async fn offer(
    args: &BenchArgs,
    api: &Arc<Api>,
    state: &Arc<Soak>,
    mid: &str,
    probe: &Probe,
) -> (Vec<Value>, Instant) {
    let every = args.soak_sample_every.max(Duration::from_millis(100));
    let end = probe.started + args.soak_duration;
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.soak_rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let (mut samples, mut since) = (Vec::new(), probe.started);
    let mut i = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        tasks.spawn(one_operation(api.clone(), state.clone(), mid.to_owned(), i));
        i += 1;
        while tasks.try_join_next().is_some() {}
        if since.elapsed() >= every && Instant::now() < end {
            samples.push(state.sample(probe, since));
            since = Instant::now();
            progress(&format!("soak sample: {}", samples.last().expect("a sample")));
        }
    }
    while tasks.join_next().await.is_some() {}
    (samples, since)
}

/// Registers operation `i` and reports `success` for it; a failed request is counted (and the
/// first few shown), not fatal: an hour's run should not end on one.
async fn one_operation(api: Arc<Api>, state: Arc<Soak>, mid: String, i: u64) {
    let run = async {
        let body = json!({"merchant_id": mid, "external_id": format!("soak-{i}"),
                          "amount": 100, "currency": "UAH", "kind": "purchase"});
        let op = api.post("/v1/operations", &body).await?;
        let id = op["id"].as_str().context("operation id")?.to_owned();
        state.reporting(id.clone());
        let path = format!("/v1/operations/{id}/status");
        api.post_raw(&path, r#"{"status":"success"}"#.into()).await
    };
    if let Err(e) = run.await {
        if state.errors.fetch_add(1, Ordering::SeqCst) < 5 {
            progress(&format!("soak: request failed: {e:#}"));
        }
    }
}

/// Waits up to [`DRAIN`] for every reported operation's callback.
async fn drain(state: &Soak) {
    let start = Instant::now();
    while state.backlog() > 0 && start.elapsed() < DRAIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The phase's figures: totals, every sample, and the first sample against the last.
fn result(args: &BenchArgs, state: &Soak, samples: Vec<Value>, server: &Server) -> Value {
    let count = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let keys = ["server_rss_mib", "server_open_fds", "first_attempt_p99_ms", "store_bytes"];
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let first_vs_last: serde_json::Map<String, Value> =
        keys.iter().map(|k| (k.to_string(), json!([first[*k], last[*k]]))).collect();
    json!({
        "offered_per_s": args.soak_rate,
        "seconds": args.soak_duration.as_secs_f64(),
        "receiver_fails_every": FAIL_EVERY,
        "retry_policy": retry_policy(),
        "retention": args.soak_retention,
        "rss_and_fds_of": format!("the payhook serve child process (pid {})", server.child.id()),
        "reported": count(&state.reported),
        "delivered": count(&state.delivered),
        "undelivered": state.backlog(),
        "callback_requests": count(&state.requests),
        "failed_answers": count(&state.failed),
        "duplicate_or_unknown_callbacks": count(&state.unexpected),
        "request_errors": count(&state.errors),
        "server_peak_rss_mib": server.peak_rss_mib(),
        "first_vs_last_sample": first_vs_last,
        "samples": samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(i: usize) -> Vec<u8> {
        json!({"type": "operation.status_changed", "data": {"id": format!("op{i}")}})
            .to_string()
            .into_bytes()
    }

    /// Every tenth request fails, its retry delivers, a duplicate is counted apart, and a
    /// sample sees it all with nothing left behind.
    #[test]
    fn every_tenth_callback_fails_and_its_retry_delivers() {
        let soak = Soak::default();
        for i in 0..20 {
            soak.reporting(format!("op{i}"));
        }
        let answers: Vec<StatusCode> = (0..20).map(|i| soak.callback(&body(i))).collect();
        let failed: Vec<usize> = (0..20).filter(|&i| answers[i] != StatusCode::OK).collect();
        assert_eq!(failed, [9, 19]);
        assert_eq!(soak.backlog(), 2, "the failed two wait for their retry");
        assert_eq!(soak.callback(&body(9)), StatusCode::OK);
        assert_eq!(soak.callback(&body(19)), StatusCode::OK);
        assert_eq!(soak.callback(&body(3)), StatusCode::OK, "a duplicate");
        let probe = Probe {
            pid: std::process::id(),
            database: "/nonexistent/soak.db".into(),
            started: Instant::now(),
        };
        let s = soak.sample(&probe, Instant::now());
        assert_eq!(s["window_callbacks"], json!(20));
        assert_eq!((s["reported"].clone(), s["delivered"].clone()), (json!(20), json!(20)));
        assert_eq!((s["backlog"].clone(), s["failed_answers"].clone()), (json!(0), json!(2)));
        assert_eq!(soak.unexpected.load(Ordering::SeqCst), 1);
        assert!(s["server_rss_mib"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
        assert!(s["server_open_fds"].as_u64().unwrap_or(0) > 0, "{s}");
        assert_eq!(s["store_bytes"], json!(0));
        let next = soak.sample(&probe, Instant::now());
        assert_eq!(next["window_callbacks"], json!(0), "the window starts over");
    }
}
