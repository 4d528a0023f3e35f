//! A PostgreSQL node backed up and restored with the standard tools, as docs/operations.md
//! tells operators to: `pg_dump -Fc` of a database holding pending deliveries, `pg_restore`
//! into a new database, and a node on the restore (same master key) delivering each of them.
//! Runs against the local server (`-h 127.0.0.1 -U postgres`, trust auth), in databases of its
//! own that it drops afterwards, also when it fails.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

const HOST: &str = "127.0.0.1";
const USER: &str = "postgres";

/// Runs a PostgreSQL client tool against the test server; fails the test unless it succeeds.
fn pg_tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(["-h", HOST, "-U", USER])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (PostgreSQL's client tools needed): {e}"));
    assert!(
        out.status.success(),
        "{program} -h {HOST} -U {USER} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// The databases this test created, each dropped on drop (`dropdb --if-exists --force`, which
/// ends the connections a node still holds), also when the test panics.
#[derive(Default)]
struct Databases {
    names: Vec<String>,
}

impl Databases {
    /// `createdb` of a new database named `prefix` and a random suffix; returns its name.
    fn create(&mut self, prefix: &str) -> String {
        let name = payhook_store::mint_schema_name(prefix);
        self.names.push(name.clone());
        pg_tool("createdb", &[&name]);
        name
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        for name in self.names.drain(..) {
            let out = Command::new("dropdb")
                .args(["-h", HOST, "-U", USER, "--if-exists", "--force", &name])
                .env("PGCONNECT_TIMEOUT", "10")
                .output();
            if matches!(&out, Ok(o) if o.status.success()) {
                continue;
            }
            let said = format!("dropdb --if-exists --force {name} failed: {out:?}");
            if std::thread::panicking() {
                eprintln!("{said}");
            } else {
                panic!("{said}");
            }
        }
    }
}

fn url_of(name: &str) -> String {
    format!("postgres://{USER}@{HOST}:5432/{name}")
}

/// A node's database: the PostgreSQL one at `url` (the SQLite directory `TestDb` makes stays
/// unused).
fn on(url: String) -> TestDb {
    let mut db = TestDb::sqlite();
    db.database = url;
    db
}

#[tokio::test]
async fn a_pg_dump_restored_into_a_new_database_delivers_each_pending_status_once() {
    let mut databases = Databases::default();
    let source = databases.create("payhook_dump_src_");
    let key = payhook_store::seal::Sealer::generate_key();
    let keyed = |key: &String| {
        let key = key.clone();
        move |c: &mut payhook::config::Config| c.master_key = Some(key)
    };
    let rx = TestReceiver::start().await;

    // Manual: the node dispatches nothing, so every reported status stays pending.
    let app = spawn_app_on(on(url_of(&source)), Mode::Manual, keyed(&key)).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id");
    let histories: [&[&str]; 6] = [
        &["success"],
        &["pending", "success"],
        &["pending", "requires_3ds", "success"],
        &["pending", "failed"],
        &["pending"],
        &["pending", "requires_3ds"],
    ];
    let mut latest = BTreeMap::new();
    let mut pending = 0;
    for n in 0..9 {
        let op = app.operation(mid, &format!("order-{n}"), json!({})).await;
        let id = op["id"].as_str().expect("id").to_owned();
        let history = histories[n % histories.len()];
        for status in history {
            let r = app.report(&id, status).await;
            assert_eq!(r.status, 202, "report {status} of {id}: {:?}", r.body);
        }
        // A newer status supersedes the older ones not yet sent: one delivery per operation
        // is left pending, of its latest status.
        let list = app.deliveries(&id).await;
        assert_eq!(list.len(), history.len(), "{list:?}");
        let (newest, older) = list.split_last().expect("deliveries");
        assert_eq!(newest["state"], "pending", "{list:?}");
        assert!(older.iter().all(|d| d["state"] == "superseded"), "{list:?}");
        pending += 1;
        latest.insert(id, history[history.len() - 1]);
    }
    assert_eq!(pending, 9);
    app.shutdown.cancel();
    drop(app);

    let dumps = tempfile::tempdir().expect("temp dir");
    let dump = dumps.path().join("payhook.dump");
    let dump = dump.to_str().expect("utf-8");
    pg_tool("pg_dump", &["-Fc", "-f", dump, &source]);
    let restored = databases.create("payhook_dump_dst_");
    pg_tool("pg_restore", &["-d", &restored, dump]);
    assert!(rx.received().is_empty(), "nothing was delivered before the restore");

    let node = spawn_app_on(on(url_of(&restored)), Mode::Live, keyed(&key)).await;
    // Per operation, the pending delivery is delivered; the superseded ones stay so.
    for (id, status) in &latest {
        let list = node.settled(id).await;
        let states: Vec<&str> = list.iter().filter_map(|d| d["state"].as_str()).collect();
        let (newest, older) = states.split_last().expect("deliveries");
        assert_eq!(*newest, "delivered", "{id} ({status}): {list:?}");
        assert!(older.iter().all(|s| *s == "superseded"), "{id}: {list:?}");
    }
    let got = rx.wait_for(latest.len(), Duration::from_secs(30)).await;
    let mut delivered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for callback in &got {
        let body: Value = callback.json();
        let id = body["data"]["id"].as_str().expect("the operation's id").to_owned();
        let status = body["data"]["status"].as_str().expect("a status").to_owned();
        delivered.entry(id).or_default().push(status);
    }
    let expected: BTreeMap<String, Vec<String>> =
        latest.iter().map(|(id, s)| (id.clone(), vec![(*s).to_owned()])).collect();
    assert_eq!(delivered, expected, "each operation's latest status, exactly once");
    node.shutdown.cancel();
    drop(node);
}
