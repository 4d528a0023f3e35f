//! SPEC §1 guarantees 1 and 2 against a real `payhook serve` process: statuses acknowledged
//! with 2xx survive SIGKILL, and every pending delivery is delivered after the restart.

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(db: &Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_payhook"))
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-private-targets"])
            .arg("--database")
            .arg(db)
            .env("PAYHOOK_ADMIN_TOKEN", ADMIN)
            .env("PAYHOOK_POLL_INTERVAL", "50ms")
            .env("PAYHOOK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("payhook binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("payhook listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(30)).expect("payhook prints its address");
        Serve { child, base }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        self.child.wait().expect("reaped");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, format!("{base}{path}")).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pending_deliveries_survive_sigkill_and_are_delivered_after_restart() {
    const OPS: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let rx = TestReceiver::start().await;
    rx.set_default(500, "merchant down");
    let http = reqwest::Client::new();
    let mut node = Serve::start(&db);
    let base = node.base.clone();
    let post = reqwest::Method::POST;

    let (s, m) = call(&http, &base, post.clone(), "/v1/merchants", Some(json!({
        "name": "Shop", "callback_url": rx.url, "retry": {"interval": "200ms", "max_attempts": 1000}}))).await;
    assert_eq!(s, 201);
    let mid = m["id"].as_str().expect("id").to_owned();
    let mut ops = Vec::new();
    for i in 0..OPS {
        let (s, op) = call(
            &http,
            &base,
            post.clone(),
            "/v1/operations",
            Some(json!({
            "merchant_id": mid, "external_id": format!("crash-{i}"), "amount": 100 + i,
            "currency": "UAH", "kind": "purchase"})),
        )
        .await;
        assert_eq!(s, 201);
        let id = op["id"].as_str().expect("id").to_owned();
        let (s, _) = call(
            &http,
            &base,
            post.clone(),
            &format!("/v1/operations/{id}/status"),
            Some(json!({"status": "success"})),
        )
        .await;
        assert_eq!(s, 202, "acknowledged: must survive the crash");
        ops.push(id);
    }
    // The merchant is failing: wait until retries are under way, then pull the plug.
    wait_for("every delivery attempted once", Duration::from_secs(30), || {
        let ids: std::collections::HashSet<String> =
            rx.received().iter().map(|r| r.header("webhook-id").to_owned()).collect();
        std::future::ready((ids.len() == OPS).then_some(()))
    })
    .await;
    node.kill9();
    assert!(http.get(format!("{base}/healthz")).send().await.is_err(), "the node is dead");

    rx.set_default(200, "");
    let node = Serve::start(&db);
    let base = node.base.clone();
    for id in &ops {
        let list = wait_for("delivery after restart", Duration::from_secs(60), || {
            let (http, base, id) = (http.clone(), base.clone(), id.clone());
            async move {
                let (_, body) = call(
                    &http,
                    &base,
                    reqwest::Method::GET,
                    &format!("/v1/operations/{id}/deliveries"),
                    None,
                )
                .await;
                let list = body["data"].as_array().cloned().unwrap_or_default();
                (list.len() == 1 && list[0]["state"] == "delivered").then_some(list)
            }
        })
        .await;
        let delivered_id = list[0]["id"].as_str().expect("id");
        let ok =
            rx.received().into_iter().filter(|r| r.header("webhook-id") == delivered_id).count();
        assert!(ok >= 2, "{delivered_id}: failed before the crash and retried after it");
    }
    let (_, op) =
        call(&http, &base, reqwest::Method::GET, &format!("/v1/operations/{}", ops[0]), None).await;
    assert_eq!((op["status"].as_str(), op["seq"].as_i64()), (Some("success"), Some(1)));
}
