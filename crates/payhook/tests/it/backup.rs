//! `payhook backup` and `payhook check` as an operator runs them: the real binary copying the
//! SQLite file of a running node while a load generator reports statuses, the copy checked,
//! then served by a node of its own that delivers what was pending.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn payhook(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_payhook"))
            .args(&args)
            .env_remove("PAYHOOK_MASTER_KEY")
            .env_remove("PAYHOOK_CONFIG")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("payhook runs")
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Registers and reports operations until `stop`, recording each acknowledged report's
/// operation id and when the 202 came back.
fn load(app: &TestApp, mid: String, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<(String, Instant)>>> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (http, base, out) = (app.http.clone(), app.base.clone(), acked.clone());
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let body = json!({"merchant_id": mid, "external_id": format!("load-{n}"),
                "amount": 100, "currency": "UAH", "kind": "purchase"});
            let r = http.post(format!("{base}/v1/operations")).bearer_auth(ADMIN).json(&body);
            let op: Value = r.send().await.expect("register").json().await.expect("json");
            let id = op["id"].as_str().expect("id").to_owned();
            let r = http.post(format!("{base}/v1/operations/{id}/status")).bearer_auth(ADMIN);
            let r = r.json(&json!({"status": "success"})).send().await.expect("report");
            if r.status() == 202 {
                out.lock().expect("lock").push((id, Instant::now()));
            }
        }
    });
    acked
}

async fn wait_acked(acked: &Mutex<Vec<(String, Instant)>>, n: usize) {
    wait_for("acknowledged reports", Duration::from_secs(30), || {
        std::future::ready((acked.lock().expect("lock").len() >= n).then_some(()))
    })
    .await;
}

#[tokio::test]
async fn a_backup_under_load_holds_every_acknowledged_report_and_its_copy_delivers_them() {
    let db = TestDb::sqlite();
    let source = db.database.clone();
    // Manual: the node delivers nothing, so every reported status stays pending in the file.
    let app = spawn_app_on(db, Mode::Manual, |_| {}).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = load(&app, m["id"].as_str().expect("id").to_owned(), stop.clone());
    wait_acked(&acked, 20).await;

    let backups = tempfile::tempdir().expect("temp dir");
    let to = backups.path().join("nightly");
    let began = Instant::now();
    let out =
        payhook(args(&["backup", "--database", &source, "--to", to.to_str().expect("utf-8")]))
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = acked.lock().expect("lock").len();
    wait_acked(&acked, seen + 20).await; // the node kept answering during and after the copy
    stop.store(true, Ordering::Relaxed);

    let copy = to.join("payhook.db");
    let key = to.join("payhook.db.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    let out = payhook(args(&["check", "--database", copy.to_str().expect("utf-8")])).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("integrity ok"), "{said}");

    // Every report acknowledged before the backup began is in the copy, and a node started on
    // the copy delivers each of them.
    let before: BTreeSet<String> = acked
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(before.len() >= 20);
    let mut on_copy = TestDb::sqlite();
    on_copy.database = copy.to_string_lossy().into_owned();
    let restored = spawn_app_on(on_copy, Mode::Live, |_| {}).await;
    wait_for(
        "callbacks of every report acknowledged before the backup",
        Duration::from_secs(60),
        || {
            let delivered: BTreeSet<String> = rx
                .received()
                .iter()
                .filter_map(|c| serde_json::from_slice::<Value>(&c.body).ok())
                .filter_map(|b| b["data"]["id"].as_str().map(str::to_owned))
                .collect();
            std::future::ready(before.is_subset(&delivered).then_some(()))
        },
    )
    .await;
    drop(restored);
}

#[tokio::test]
async fn a_backup_into_an_existing_directory_is_refused_and_changes_nothing() {
    let db = TestDb::sqlite();
    let source = db.database.clone();
    let app = spawn_app_on(db, Mode::Manual, |_| {}).await;
    let backups = tempfile::tempdir().expect("temp dir");
    std::fs::write(backups.path().join("keep.txt"), "mine").expect("a file of the operator's");
    let to = backups.path().to_str().expect("utf-8").to_owned();
    let out = payhook(args(&["backup", "--database", &source, "--to", &to])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exist"));
    let kept = std::fs::read_to_string(backups.path().join("keep.txt")).expect("still there");
    assert_eq!(kept, "mine");
    assert!(!backups.path().join("payhook.db").exists(), "nothing was written there");
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    assert!(m["id"].is_string(), "the node goes on serving");
    let missing = Path::new(&to).join("nope.db");
    let out = payhook(args(&["check", "--database", missing.to_str().expect("utf-8")])).await;
    assert!(!out.status.success(), "checking a file that is not there fails");
}
