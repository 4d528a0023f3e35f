//! PostgreSQL's disk fills up (issue 26, part 3, on the shared store): the server's data
//! directory on a 48 MiB tmpfs the test mounts, filled to the last byte while a node takes
//! reports. PostgreSQL fails what needs a new page with SQLSTATE 53100 (`could not extend
//! file`) and stays up; what fits in the pages it has may still commit. Every report is
//! answered 202 (stored, its callback delivered in the end) or 503 `storage_full` (nothing
//! stored), never anything else; once the filler is removed the refused reports are accepted
//! with no restart of either the node or the server.

use crate::disk::fill;
use crate::figures::Figures;
use crate::netns::require_namespace;
use crate::postgres::OwnPostgres;
use crate::support::{wait_for, Admin, Database, Node, Receiver, ADMIN};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Enough that the reports after the fill need new pages, whatever room the last ones had.
const OPERATIONS: usize = 300;
const BEFORE: usize = 10;
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a fault scenario: scripts/faults runs it inside its own network namespace"]
async fn database_disk_full_refuses_with_storage_full_and_loses_nothing() {
    require_namespace();
    let pg = OwnPostgres::on_tmpfs(48);
    let db = Database::on(pg.url()).await;
    let rx = Receiver::start(None, Duration::ZERO).await;
    let node = Node::start("disk", &db.url(), &["--request-timeout", "2s"]);
    let base = node.base.clone().expect("API on");
    let admin = Admin::new(vec![base.clone()]);
    let retry = json!({"interval": "200ms", "max_attempts": 100});
    let (merchant, _) = admin.merchant(&format!("{}/m/0", rx.base), retry).await;
    let mut ops = Vec::with_capacity(OPERATIONS);
    for i in 0..OPERATIONS {
        ops.push(admin.register(0, &merchant, &format!("order-{i}")).await);
    }
    let mut accepted = BTreeSet::new();
    for op in &ops[..BEFORE] {
        admin.report(0, op, "success", &format!("{op}-success")).await;
        accepted.insert(op.clone());
    }
    wait_for("the first callbacks", WAIT, || async {
        (delivered(&rx).is_superset(&accepted)).then_some(())
    })
    .await;

    let filler = fill(&pg.data());
    let mut refused = Vec::new();
    for op in &ops[BEFORE..] {
        match report(&admin, op).await {
            (202, _) => drop(accepted.insert(op.clone())),
            (503, code) if code == "storage_full" => refused.push(op.clone()),
            (status, code) => panic!("a report on a full disk answered {status} {code}"),
        }
    }
    let accepted_while_full = accepted.len() - BEFORE;
    assert!(!refused.is_empty(), "no report was refused on a full disk");
    for op in &refused {
        let (status, v) = get(&base, &format!("/v1/operations/{op}")).await;
        assert_eq!(status, 200, "{v}");
        assert_ne!(v["status"], "success", "a report answered 503 was stored");
    }

    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    for op in &refused {
        wait_for("a refused report to be accepted", WAIT, || async {
            (report(&admin, op).await.0 == 202).then_some(())
        })
        .await;
        accepted.insert(op.clone());
    }
    let recovered = freed.elapsed();
    wait_for("every accepted report's callback", WAIT, || async {
        delivered(&rx).is_superset(&accepted).then_some(())
    })
    .await;

    let mut f = Figures::new("database-disk-full");
    f.expected = accepted.len();
    f.delivered = delivered(&rx).intersection(&accepted).count();
    f.duplicates = rx.hits().iter().filter(|h| h.answered == 200).count() - f.delivered;
    f.note("accepted_while_full", accepted_while_full).note("refused_storage_full", refused.len());
    f.note_duration("all_accepted_after_freeing", recovered);
    f.print();
    assert_eq!(f.lost(), 0);
    assert_eq!(accepted.len(), OPERATIONS, "every report ends accepted");
    drop(node);
    db.drop().await;
}

/// A status report's (status, error code), whatever it is.
async fn report(admin: &Admin, op: &str) -> (u16, Value) {
    let body = json!({"status": "success", "event_key": format!("{op}-success")});
    let (status, v) = admin.post(0, &format!("/v1/operations/{op}/status"), &body).await;
    (status, v["error"]["code"].clone())
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("the node answers");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The operations whose `success` callback the receiver answered 200.
fn delivered(rx: &Receiver) -> BTreeSet<String> {
    rx.hits()
        .into_iter()
        .filter(|h| h.answered == 200 && h.status == "success")
        .map(|h| h.operation_id)
        .collect()
}
