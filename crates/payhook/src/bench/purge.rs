//! Phase 6: report→callback latency while the retention purge deletes a large backlog of old
//! history, against the same run on the same backlog with retention off.
//!
//! Both databases get the same backlog, written straight through the store 40 days in the
//! past: paid operations whose callbacks were delivered (one attempt each). One server keeps
//! history for ever; the other keeps 30 days and purges every second, so it starts deleting
//! the backlog as the offered load begins; the rows it deleted by the end of the run, and
//! their rate from the server's start, are reported. The phase also sizes the store: its
//! bytes after the backlog's fill (per operation), and at the end of the run.

use super::{fan_out, fill, latency, BenchArgs, Server, MASTER_KEY};
use payhook_core::clock::{Clock, SystemClock};
use payhook_core::model::{Attempt, AttemptOutcome};
use payhook_core::Timestamp;
use payhook_store::{ClaimRequest, NextStep, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far in the past the backlog was written: past the default 30-day history retention.
const BACKLOG_AGE: Duration = Duration::from_secs(40 * 86_400);

/// Runs both servers; `database` makes a new database for each.
pub(super) async fn purge(
    args: &BenchArgs,
    mut database: impl FnMut(&str) -> String,
) -> anyhow::Result<Value> {
    let n = args.purge_backlog;
    let mut result = serde_json::Map::new();
    let runs: [(&str, &[&str]); 2] = [
        ("without_purge", &["--retention-history", "0"]),
        ("with_purge", &["--retention-history", "30d", "--purge-interval", "1s"]),
    ];
    for (name, retention) in runs {
        let db = database(name);
        let started = Instant::now();
        backdated_history(&db, n).await?;
        let fill_s = started.elapsed().as_secs_f64();
        let filled = store_bytes(args, &db).await?;
        super::progress(&format!("purge phase: {name}"));
        let started = Instant::now();
        let (mut r, server) = latency(args, &db, retention).await?;
        r["backlog_operations"] = json!(n);
        r["backlog_fill_s"] = json!((fill_s * 10.0).round() / 10.0);
        r["store_bytes_after_fill"] = json!(filled);
        r["store_bytes_per_operation"] = json!(filled / n.max(1) as u64);
        let purged = purged_rows(&server).await?;
        r["rows_purged_during_run"] = json!(purged);
        r["rows_purged_per_s"] = json!((purged as f64 / started.elapsed().as_secs_f64()).round());
        drop(server);
        r["store_bytes_at_end"] = json!(store_bytes(args, &db).await?);
        result.insert(name.into(), r);
    }
    let p99 = |name: &str| result[name]["p99_ms"].as_f64().unwrap_or(0.0);
    let ratio = p99("with_purge") / p99("without_purge").max(1e-9);
    result.insert("p99_ratio".into(), json!((ratio * 100.0).round() / 100.0));
    Ok(Value::Object(result))
}

/// The bytes the store takes on disk: the SQLite file and its WAL, or the PostgreSQL
/// schema's tables (the URL's `search_path`).
async fn store_bytes(args: &BenchArgs, database: &str) -> anyhow::Result<u64> {
    if let Some((_, schema)) = database.rsplit_once("search_path%3D") {
        return Ok(payhook_store::postgres::schema_bytes(&args.postgres, schema).await? as u64);
    }
    let len = |p: String| std::fs::metadata(p).map_or(0, |m| m.len());
    Ok(len(database.to_owned()) + len(format!("{database}-wal")))
}

/// `n` operations registered, reported `success` and delivered, all [`BACKLOG_AGE`] ago.
async fn backdated_history(database: &str, n: usize) -> anyhow::Result<()> {
    let store = crate::app::open_store(database, Some(MASTER_KEY.as_str())).await?.store;
    let then = Timestamp(SystemClock.now().0 - BACKLOG_AGE.as_millis() as i64);
    let mut mids = Vec::new();
    for _ in 0..super::BACKLOG_MERCHANTS {
        mids.push(super::bench_merchant(store.as_ref(), then).await?);
    }
    fill(&store, &mids, 0, n, then).await?;
    let in_flight = HashMap::new();
    loop {
        let req = ClaimRequest {
            node: "bench-fill",
            now: then,
            lease: Duration::from_secs(30),
            limit: 512,
            in_flight: &in_flight,
            per_host_limit: 512,
        };
        let claimed = Arc::new(store.claim_due(&req).await?);
        if claimed.is_empty() {
            return Ok(());
        }
        let list = claimed.clone();
        fan_out(list.len(), 512, |i| {
            let (store, claimed) = (store.clone(), list.clone());
            async move { delivered(store.as_ref(), &claimed[i].delivery.id, then).await }
        })
        .await?;
    }
}

async fn delivered(
    store: &dyn Store,
    id: &payhook_core::ids::DeliveryId,
    at: Timestamp,
) -> anyhow::Result<()> {
    let attempt = Attempt {
        delivery_id: id.clone(),
        number: 1,
        started_at: at,
        duration_ms: 3,
        request: "POST http://127.0.0.1:9/down".into(),
        response_status: Some(200),
        response_body: Some("ok".into()),
        outcome: AttemptOutcome::Delivered,
        error_kind: None,
        error: None,
    };
    store.record_attempt(&attempt, NextStep::Delivered, at).await?;
    Ok(())
}

/// `payhook_purged_rows_total`, every table, from the server's `/metrics`.
async fn purged_rows(server: &Server) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", server.base)).await?.text().await?;
    let rows = text
        .lines()
        .filter(|l| l.starts_with("payhook_purged_rows_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>();
    Ok(rows as u64)
}
