//! Retention as an operator sees it: the real server on a manual clock, a real SQLite file,
//! callbacks to a real receiver, then the purge — the events feed after it, the metrics, the
//! settings refused at start, and the file's size over fill → purge → refill cycles.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinSet;

const HOUR: Duration = Duration::from_secs(3600);

/// Registers `n` operations of `merchant` (external ids `{prefix}-{i}`) and reports each one
/// `success`, 16 at a time; returns the operation ids.
async fn fill(app: &TestApp, merchant: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (http, base) = (app.http.clone(), app.base.clone());
        let body = json!({"merchant_id": merchant, "external_id": format!("{prefix}-{i}"),
            "amount": 12_345, "currency": "UAH", "kind": "purchase",
            "data": {"rrn": format!("{i:012}"), "card": "4111********1111"}});
        tasks.spawn(async move {
            let op: Value = http
                .post(format!("{base}/v1/operations"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .expect("register")
                .json()
                .await
                .expect("json");
            let id = op["id"].as_str().expect("id").to_owned();
            let r = http
                .post(format!("{base}/v1/operations/{id}/status"))
                .bearer_auth(ADMIN)
                .json(&json!({"status": "success"}))
                .send()
                .await
                .expect("report");
            assert_eq!(r.status(), 202);
            id
        });
        if tasks.len() == 16 {
            ids.push(tasks.join_next().await.expect("task").expect("join"));
        }
    }
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("join"));
    }
    ids
}

/// Runs the dispatcher until nothing is pending (every callback answered 200).
async fn deliver_all(app: &TestApp) {
    wait_for("every callback delivered", Duration::from_secs(120), || async {
        app.dispatcher.run_once().await;
        let pending = app.store.pending_deliveries().await.expect("backlog");
        (pending.count == 0).then_some(())
    })
    .await;
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The database file's and its WAL's sizes.
fn sizes(app: &TestApp) -> (u64, u64) {
    let db = app.dir().join("payhook.db");
    (file_size(&db), file_size(&app.dir().join("payhook.db-wal")))
}

#[tokio::test]
async fn the_feed_refuses_a_cursor_into_purged_history_and_after_zero_reads_what_is_kept() {
    let app = spawn_app_with(Mode::Manual, |c| {
        c.retention = payhook_core::lifecycle::Retention::new(HOUR, Duration::ZERO).expect("ok");
    })
    .await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id").to_owned();
    let old = fill(&app, &mid, "old", 3).await;
    deliver_all(&app).await;
    app.advance(2 * HOUR);
    let young = fill(&app, &mid, "young", 1).await;
    let feed = app.admin("GET", &format!("/v1/events?merchant_id={mid}"), None).await;
    let first = feed.body["data"][0]["position"].as_i64().expect("a position");

    let run = app.purger.run_once().await.expect("purge");
    assert_eq!((run.rows.events, run.rows.deliveries, run.rows.attempts), (6, 3, 3));
    let expired =
        app.admin("GET", &format!("/v1/events?merchant_id={mid}&after={first}"), None).await;
    assert_eq!(expired.status, 410, "{:?}", expired.body);
    assert_eq!(expired.body["error"]["code"], "cursor_expired");
    assert_eq!(expired.body["error"]["field"], "after");
    let kept = app.admin("GET", &format!("/v1/events?merchant_id={mid}&after=0"), None).await;
    let oldest = kept.body["data"][0]["position"].as_i64().expect("a kept event");
    let message = expired.body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&format!("oldest position still available is {oldest}")), "{message}");
    let ops: Vec<&str> = kept.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["operation_id"].as_str().expect("operation id"))
        .collect();
    assert_eq!(ops, [young[0].as_str(), young[0].as_str()], "the young registration and report");
    let status = app.admin("GET", &format!("/v1/operations/{}", old[0]), None).await;
    assert_eq!(status.body["status"], "success", "the operation and its status are kept");
    assert_eq!(app.deliveries(&old[0]).await, Vec::<Value>::new(), "its ended history is gone");

    let scrape = app.http.get(format!("{}/metrics", app.base)).send().await.expect("scrape");
    let text = scrape.text().await.expect("text");
    for name in [
        "payhook_purged_rows_total{table=\"events\"}",
        "payhook_purge_last_run_timestamp_seconds",
        "payhook_oldest_event_age_seconds",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing from:\n{text}");
    }
}

/// Fills the node with `n` paid operations `cycles` times, moving the clock past both
/// retention windows and purging between fills; returns the size (file + WAL) after each
/// fill and the operations registered.
async fn cycles(app: &TestApp, mid: &str, n: usize, cycles: usize) -> Vec<(u64, u64)> {
    let mut peaks = Vec::new();
    for cycle in 0..cycles {
        fill(app, mid, &format!("c{cycle}"), n).await;
        deliver_all(app).await;
        peaks.push(sizes(app));
        app.advance(3 * HOUR);
        app.purger.run_once().await.expect("purge");
    }
    peaks
}

/// With both retentions set, the file stops growing once the window is full: SQLite puts the
/// pages a purge frees on its free list and the next fill takes them from there; the WAL is
/// reset at each checkpoint (every 1,000 pages) and so never passes the largest stretch
/// between two. Margin: every later peak of each within 10% of its first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_retentions_the_file_stays_at_its_first_peak() {
    // SQLite's own behaviour: a SQLite file whatever the suite's backend.
    let app = spawn_app_on(TestDb::sqlite(), Mode::Manual, |c| {
        c.retention = payhook_core::lifecycle::Retention::new(HOUR, 2 * HOUR).expect("valid");
    })
    .await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let peaks = cycles(&app, m["id"].as_str().expect("id"), 1_000, 4).await;
    println!("db + wal after each fill of 1,000 operations: {peaks:?}");
    let (db0, wal0) = peaks[0];
    assert!(db0 > 0 && wal0 > 0, "the sizes were read: {peaks:?}");
    for (db, wal) in &peaks[1..] {
        assert!(db * 10 <= db0 * 11, "the file grew past its first peak: {peaks:?}");
        assert!(wal * 10 <= wal0 * 11, "the WAL grew past its first peak: {peaks:?}");
    }
}

/// With operations kept for ever, each cycle adds only what an operation keeps once its
/// history is gone (its row and indexes), a fraction of what a fill first takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_operations_kept_the_file_grows_only_by_the_kept_operations() {
    let app = spawn_app_on(TestDb::sqlite(), Mode::Manual, |c| {
        c.retention = payhook_core::lifecycle::Retention::new(HOUR, Duration::ZERO).expect("ok");
    })
    .await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let n = 1_000;
    let peaks = cycles(&app, m["id"].as_str().expect("id"), n, 4).await;
    let dbs: Vec<u64> = peaks.iter().map(|(db, _)| *db).collect();
    assert!(dbs[0] > 0, "the sizes were read: {dbs:?}");
    let per_cycle = (dbs[3] - dbs[1]) / 2 / n as u64;
    println!("db after each fill of {n} operations: {dbs:?}; {per_cycle} bytes per kept operation");
    assert!(
        per_cycle * 3 < dbs[0] / n as u64,
        "a kept operation costs less than a third of a full one"
    );
}

#[tokio::test]
async fn operations_kept_shorter_than_their_history_are_refused_at_start() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_payhook"))
            .args(["serve", "--database", "/nonexistent/never-opened.db"])
            .args(["--retention-history", "30d", "--retention-operations", "7d"])
            .env("RUST_BACKTRACE", "0")
            .env_remove("PAYHOOK_CONFIG")
            .output()
            .expect("payhook runs")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("retention_operations")
            && stderr.contains("shorter than retention_history"),
        "{stderr}"
    );
}
