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
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("exists already: back up into a new directory"));
    let kept = std::fs::read_to_string(backups.path().join("keep.txt")).expect("still there");
    assert_eq!(kept, "mine");
    assert!(!backups.path().join("payhook.db").exists(), "nothing was written there");
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    assert!(m["id"].is_string(), "the node goes on serving");
    let missing = Path::new(&to).join("nope.db");
    let out = payhook(args(&["check", "--database", missing.to_str().expect("utf-8")])).await;
    assert!(!out.status.success(), "checking a file that is not there fails");
}

/// A tmpfs mounted on a temp dir of its own (`mount -t tmpfs -o OPTIONS tmpfs DIR`), unmounted
/// on drop, also when the test panics. Mounting needs root, as CI runs the suite: where it is
/// not permitted the test fails, it does not skip.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        let uid = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self").expect("/proc/self"),
        );
        assert!(
            out.status.success(),
            "mount -t tmpfs -o {options} tmpfs {} failed as uid {uid}: {}\nthis test needs \
             root (CI runs it as root)",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Unmounted before the temp dir (a field, dropped after this) is removed.
        let path = self.dir.path();
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(path).output()
        };
        let first = umount(false);
        if matches!(&first, Ok(o) if o.status.success()) {
            return;
        }
        // Still busy: detach it now, so that it goes once the last user lets go.
        let lazy = umount(true);
        let said = format!("umount {} failed: {first:?}, then umount -l: {lazy:?}", path.display());
        // Panicking again while the test panics would abort the run: say it instead.
        if matches!(&lazy, Ok(o) if o.status.success()) || std::thread::panicking() {
            eprintln!("{said}");
        } else {
            panic!("{said}");
        }
    }
}

/// Every file beside the SQLite database with its bytes, but the shared-memory index (`-shm`),
/// which readers write to by design.
fn files_of(database: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = database.parent().expect("the database's directory");
    std::fs::read_dir(dir)
        .expect("read the database's directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.to_string_lossy().ends_with("-shm"))
        .map(|p| (p.to_string_lossy().into_owned(), std::fs::read(&p).expect("read a file")))
        .collect()
}

/// Registers an operation and reports its status on the node, then delivers what is due:
/// the node answers 202 and the callback reaches `rx`.
async fn serves_a_report(app: &TestApp, rx: &TestReceiver, mid: &str, external_id: &str) {
    let op = app.operation(mid, external_id, json!({})).await;
    let id = op["id"].as_str().expect("id").to_owned();
    let r = app.report(&id, "success").await;
    assert_eq!(r.status, 202, "the node answers reports: {:?}", r.body);
    app.dispatcher.run_once().await;
    let list = app.deliveries(&id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "delivered", "{list:?}");
    let arrived = rx.received().iter().any(|c| {
        let body = c.json();
        body["data"]["id"] == id.as_str() && body["data"]["status"] == "success"
    });
    assert!(arrived, "the callback of {id} reached the receiver");
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_backup_into_a_read_only_directory_fails_naming_the_path_and_the_node_goes_on_serving() {
    let db = TestDb::sqlite();
    let source = db.database.clone();
    let app = spawn_app_on(db, Mode::Manual, |_| {}).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id").to_owned();
    let op = app.operation(&mid, "before", json!({})).await;
    assert_eq!(app.report(op["id"].as_str().expect("id"), "success").await.status, 202);

    // Root writes through file modes: a read-only mount is read-only for root too.
    let ro = Tmpfs::mount("ro,size=1m");
    let to = ro.path().join("nightly");
    let before = files_of(Path::new(&source));
    let out =
        payhook(args(&["backup", "--database", &source, "--to", to.to_str().expect("utf-8")]))
            .await;
    let said = stderr_of(&out);
    assert!(!out.status.success(), "the backup fails: {said}");
    assert!(said.contains(to.to_str().expect("utf-8")), "the error names the target: {said}");
    assert!(said.contains("Read-only file system"), "the error says why: {said}");
    assert!(!to.exists());
    assert_eq!(std::fs::read_dir(ro.path()).expect("the mount").count(), 0);
    assert!(files_of(Path::new(&source)) == before, "the source database is untouched");

    serves_a_report(&app, &rx, &mid, "after").await;
}

#[tokio::test]
async fn a_backup_onto_a_full_disk_fails_clearly_removes_its_directory_and_the_node_goes_on_serving(
) {
    const DISK: u64 = 64 * 1024;
    let db = TestDb::sqlite();
    let source = db.database.clone();
    let app = spawn_app_on(db, Mode::Manual, |_| {}).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id").to_owned();
    // A database several times the disk: operations carrying 8 KB of data each (data strings
    // are limited to 2048 characters).
    let part = "x".repeat(2000);
    let data = json!({"a": part, "b": part, "c": part, "d": part});
    for n in 0..40 {
        app.operation(&mid, &format!("filler-{n}"), json!({"data": data})).await;
    }
    // Its size as a copy: a backup where there is room.
    let roomy = tempfile::tempdir().expect("temp dir");
    let fits = roomy.path().join("nightly");
    let out =
        payhook(args(&["backup", "--database", &source, "--to", fits.to_str().expect("utf-8")]))
            .await;
    assert!(out.status.success(), "{}", stderr_of(&out));
    let size = std::fs::metadata(fits.join("payhook.db")).expect("the copy").len();
    assert!(size > 4 * DISK, "the database ({size} bytes) is several times the disk");

    let disk = Tmpfs::mount(&format!("size={DISK}"));
    let to = disk.path().join("nightly");
    let before = files_of(Path::new(&source));
    let out =
        payhook(args(&["backup", "--database", &source, "--to", to.to_str().expect("utf-8")]))
            .await;
    let said = stderr_of(&out);
    assert!(!out.status.success(), "the backup fails: {said}");
    assert!(!to.exists(), "the partial copy's directory is removed");
    assert_eq!(std::fs::read_dir(disk.path()).expect("the mount").count(), 0);
    assert!(files_of(Path::new(&source)) == before, "the source database is untouched");
    serves_a_report(&app, &rx, &mid, "after").await;
    assert!(
        said.contains("disk is full") || said.contains("No space left on device"),
        "the error says the disk is full: {said}"
    );
}
