//! What the SQLite writer thread spends per status report and attempt record, without HTTP:
//! registers N operations (default 3,000), reports `success` for them in batches of 100, then
//! records one delivered attempt per delivery, and prints the writer thread's CPU time per
//! operation for the two steps. With `register-only` it stops after the registrations.
//!
//! CPU time moves with whatever else the machine does; for a figure that does not, count
//! instructions with callgrind: `scripts/writer-cost` (BENCHMARKS.md, "Levers").

use payhook_core::ids::OperationId;
use payhook_core::model::{Attempt, AttemptOutcome, CallbackSettings, Delivery, Merchant};
use payhook_core::status::Status;
use payhook_core::Timestamp;
use payhook_store::seal::Sealer;
use payhook_store::sqlite::SqliteStore;
use payhook_store::{mint_id, NewOperation, NextStep, Registered, StatusReport, Store};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// CPU time the writer thread has used, in nanoseconds (`/proc/self/task/*/schedstat`).
fn writer_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("payhook-sqlite"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

fn now() -> Timestamp {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    Timestamp(since.map(|d| d.as_millis() as i64).unwrap_or(0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(3_000);
    let register_only = std::env::args().nth(2).as_deref() == Some("register-only");
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("cost.db"), Sealer::random())?);
    let t = now();
    let merchant = Merchant::new(
        mint_id("mer_").parse()?,
        "writer-cost",
        payhook_core::dialect::Dialect::Standard,
        Some("http://127.0.0.1:9/callback".into()),
        payhook_core::signing::SigningSecret::from_key(&[7u8; 32]),
        t,
    );
    let key = payhook_store::NewApiKey::minted(&mint_id("key_"), "pk_", merchant.created_at);
    store.create_merchant(&merchant, &key).await?;

    let ids: Arc<Mutex<Vec<OperationId>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for lane in 0..64 {
        let (store, mid, ids) = (store.clone(), merchant.id.clone(), ids.clone());
        tasks.spawn(async move {
            for i in (lane..n).step_by(64) {
                let new = NewOperation {
                    merchant_id: mid.clone(),
                    external_id: format!("ext-{i}"),
                    amount: 1_000 + i as i64,
                    currency: "UAH".into(),
                    kind: "purchase".into(),
                    callback: CallbackSettings::default(),
                    data: Default::default(),
                    request_hash: String::new(),
                };
                match store.register_operation(new, now()).await? {
                    Registered::Created(op) => ids.lock().expect("ids").push(op.id),
                    _ => return Err("operation existed".into()),
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e| e.to_string())?;
    }
    if register_only {
        return Ok(());
    }

    let before_reports = writer_cpu_ns();
    let batches: Vec<Vec<OperationId>> =
        ids.lock().expect("ids").chunks(100).map(<[_]>::to_vec).collect();
    let batches = Arc::new(Mutex::new(batches));
    let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let (store, batches, deliveries) = (store.clone(), batches.clone(), deliveries.clone());
        tasks.spawn(async move {
            loop {
                let Some(batch) = batches.lock().expect("batches").pop() else { return Ok(()) };
                let reports = batch
                    .into_iter()
                    .map(|operation_id| StatusReport {
                        operation_id,
                        status: Status::Success,
                        data: Default::default(),
                        event_key: None,
                    })
                    .collect();
                for outcome in store.report_statuses(reports, now()).await? {
                    if let Some(d) = outcome?.delivery {
                        deliveries.lock().expect("deliveries").push(d);
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e: payhook_store::StoreError| e.to_string())?;
    }

    let before_records = writer_cpu_ns();
    let request = format!("POST http://127.0.0.1:9/callback\n\n{}", "x".repeat(400));
    let mut tasks = JoinSet::new();
    for _ in 0..256 {
        let (store, deliveries, request) = (store.clone(), deliveries.clone(), request.clone());
        tasks.spawn(async move {
            loop {
                let Some(d) = deliveries.lock().expect("deliveries").pop() else { return Ok(()) };
                let attempt = Attempt {
                    delivery_id: d.id,
                    number: 1,
                    started_at: now(),
                    duration_ms: 1,
                    request: request.clone(),
                    response_status: Some(200),
                    response_body: Some("ok".into()),
                    outcome: AttemptOutcome::Delivered,
                    error_kind: None,
                    error: None,
                };
                store.record_attempt(&attempt, NextStep::Delivered, now()).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e: payhook_store::StoreError| e.to_string())?;
    }
    let end = writer_cpu_ns();
    let per_op = |ns: u64| ns as f64 / 1_000.0 / n as f64;
    println!(
        "{n} operations; writer CPU per operation: report {:.1} µs, record {:.1} µs",
        per_op(before_records - before_reports),
        per_op(end - before_records)
    );
    Ok(())
}
