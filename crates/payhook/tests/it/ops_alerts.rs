//! Operator alerts end to end: a real server, merchants' receivers and the ops webhook's
//! receiver on loopback, the manual clock, and the ops notifier driven by `run_once`.

use crate::helpers::*;
use payhook::config::{Config, OpsWebhook};
use payhook_core::lifecycle::{delivery, recovery};
use payhook_core::signing::SigningSecret;
use payhook_core::Timestamp;
use payhook_receiver::standard::Webhook;
use serde_json::{json, Value};
use std::time::Duration;

const OPS_SECRET: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";
const WAIT: Duration = Duration::from_secs(20);

/// An app in Manual mode whose alerts go to `ops_rx`, with settings adjusted by `tune`.
async fn ops_app(ops_rx: &TestReceiver, tune: impl FnOnce(&mut Config)) -> TestApp {
    let hook = ops_hook(ops_rx);
    spawn_app_with(Mode::Manual, move |c| {
        c.ops_webhook = Some(hook);
        tune(c);
    })
    .await
}

fn ops_hook(rx: &TestReceiver) -> OpsWebhook {
    let secret = SigningSecret::parse(OPS_SECRET).expect("a valid secret");
    OpsWebhook { url: format!("{}/alerts", rx.url), secret }
}

fn now(app: &TestApp) -> Timestamp {
    payhook_core::clock::Clock::now(app.clock.as_ref().expect("a Manual-mode app").as_ref())
}

/// One alert as the ops webhook got it, its signature checked.
#[derive(Debug)]
struct Alert {
    id: String,
    kind: String,
    body: Value,
}

/// Runs the ops notifier once; returns the requests it made to `rx`, each checked: a JSON
/// POST signed with [`OPS_SECRET`] at the app's time, refused under another secret.
async fn send_alerts(app: &TestApp, rx: &TestReceiver) -> Vec<Alert> {
    let before = rx.received().len();
    let sent = app.ops.as_ref().expect("the app has an ops webhook").run_once().await;
    let got = rx.wait_for(before + sent, WAIT).await;
    assert_eq!(got.len(), before + sent, "one request per send");
    let at = now(app).unix_seconds();
    let ours = Webhook::new(OPS_SECRET).expect("verifier");
    let other = Webhook::new("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==").expect("verifier");
    got[before..]
        .iter()
        .map(|r| {
            assert_eq!((r.method.as_str(), r.uri.as_str()), ("POST", "/alerts"));
            assert_eq!(r.header("content-type"), "application/json");
            let id = ours.check_at(&r.headers, &r.body, at).expect("signed with the ops secret");
            assert!(other.check_at(&r.headers, &r.body, at).is_err(), "another secret fails");
            let body = r.json();
            let kind = body["type"].as_str().expect("type").to_owned();
            Alert { id, kind, body }
        })
        .collect()
}

fn kinds(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.kind.as_str()).collect()
}

/// Whether every operation's latest delivery is in `state`.
async fn all_latest(app: &TestApp, ops: &[String], state: &str) -> bool {
    for id in ops {
        let list = app.deliveries(id).await;
        if list.last().is_none_or(|d| d["state"] != state) {
            return false;
        }
    }
    true
}

/// Registers `n` operations for `mid`, each reported `statuses` in order.
async fn operations(app: &TestApp, mid: &str, n: usize, statuses: &[&str]) -> Vec<String> {
    let mut ops = Vec::new();
    for i in 0..n {
        let op = app.operation(mid, &format!("order-{i}"), json!({})).await;
        let id = op["id"].as_str().expect("id").to_owned();
        for status in statuses {
            assert_eq!(app.report(&id, status).await.status, 202);
        }
        ops.push(id);
    }
    ops
}

#[tokio::test]
async fn pause_and_resume_reach_the_ops_webhook_once_each_in_order_and_signed() {
    let ops_rx = TestReceiver::start().await;
    let app = ops_app(&ops_rx, |_| {}).await;
    let m =
        app.merchant(json!({"name": "Moving", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    for action in ["pause", "resume"] {
        let r = app.admin("POST", &format!("/v1/merchants/{mid}/{action}"), None).await;
        assert_eq!(r.status, 200, "{action}: {:?}", r.body);
    }
    let sent = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&sent), ["merchant.paused", "merchant.resumed"]);
    for a in &sent {
        assert_eq!(a.body["data"], json!({"merchant_id": mid}), "{a:?}");
        let at = a.body["timestamp"].as_str().expect("timestamp");
        assert_eq!(Timestamp::parse_rfc3339(at), Some(now(&app)), "raised at the action's time");
        assert!(a.id.starts_with("evt_"), "{a:?}");
    }
    assert_ne!(sent[0].id, sent[1].id);
    app.advance(Duration::from_secs(3 * 3600));
    assert!(send_alerts(&app, &ops_rx).await.is_empty(), "each alert goes once");
    assert_eq!(ops_rx.received().len(), 2);
}

/// Live: the notifier's own loop sends an alert queued by the API, with no test driving it.
#[tokio::test]
async fn a_running_node_sends_alerts_by_itself() {
    let ops_rx = TestReceiver::start().await;
    let hook = ops_hook(&ops_rx);
    let app = spawn_app_with(Mode::Live, move |c| c.ops_webhook = Some(hook)).await;
    let m = app.merchant(json!({"name": "Live", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    app.admin("POST", &format!("/v1/merchants/{mid}/pause"), None).await;
    let got = ops_rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["type"], "merchant.paused");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time");
    let webhook = Webhook::new(OPS_SECRET).expect("verifier");
    webhook.check_at(&got[0].headers, &got[0].body, now.as_secs() as i64).expect("signed");
}

#[tokio::test]
async fn without_an_ops_webhook_no_alert_is_queued() {
    let rx = TestReceiver::start().await;
    rx.set_default(500, "down");
    let app = spawn_app_with(Mode::Manual, |c| c.health.alert_after_failures = 1).await;
    assert!(app.ops.is_none(), "no notifier without an ops webhook");
    let m = app.merchant(json!({"name": "Quiet", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id");
    for action in ["pause", "resume"] {
        assert_eq!(
            app.admin("POST", &format!("/v1/merchants/{mid}/{action}"), None).await.status,
            200
        );
    }
    operations(&app, mid, 1, &["success"]).await;
    assert_eq!(app.dispatcher.run_once().await, 1, "a failed attempt at the destination");
    let later = now(&app).plus(Duration::from_secs(86_400));
    let queued = app.store.claim_alerts("probe", later, Duration::from_secs(60), 100).await;
    assert_eq!(queued.expect("claim"), [], "nothing was queued");
}

#[tokio::test]
async fn a_refused_alert_is_retried_after_its_backoff_and_a_queued_one_survives_a_restart() {
    let ops_rx = TestReceiver::start().await;
    ops_rx.script(&[(500, "busy")]);
    let app = ops_app(&ops_rx, |_| {}).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id").to_owned();
    for action in ["pause", "resume"] {
        app.admin("POST", &format!("/v1/merchants/{mid}/{action}"), None).await;
    }
    let first = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&first), ["merchant.paused"], "refused with 500; resumed waits behind it");
    app.advance(Duration::from_millis(4_900));
    assert!(send_alerts(&app, &ops_rx).await.is_empty(), "not before its backoff (5 s)");
    app.advance(Duration::from_millis(100));
    let again = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&again), ["merchant.paused", "merchant.resumed"], "still in order");
    assert_eq!(again[0].id, first[0].id, "the same webhook-id on every attempt");
    app.advance(Duration::from_secs(3600));
    assert!(send_alerts(&app, &ops_rx).await.is_empty(), "delivered once, not again");

    // Refused, then the process restarts before its retry: the queue is in the database.
    ops_rx.script(&[(503, "restarting")]);
    app.admin("POST", &format!("/v1/merchants/{mid}/pause"), None).await;
    let refused = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&refused), ["merchant.paused"]);
    let hook = ops_hook(&ops_rx);
    let app = app.restart(move |c| c.ops_webhook = Some(hook)).await;
    app.advance(Duration::from_secs(5));
    let after = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&after), ["merchant.paused"], "delivered after the restart");
    assert_eq!(after[0].id, refused[0].id);
    app.advance(Duration::from_secs(3600));
    assert!(send_alerts(&app, &ops_rx).await.is_empty());
    assert_eq!(ops_rx.received().len(), 5, "1 refused + 2, then 1 refused + 1");
}

/// Neither a closed port nor an answer slower than the request timeout counts as sent: both
/// are retried on the schedule (5 s, 30 s, 2 min, …) until the webhook takes the alert.
#[tokio::test]
async fn an_unreachable_or_slow_ops_webhook_is_retried_on_the_schedule() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}/alerts", closed.local_addr().expect("addr"));
    drop(closed);
    let secret = SigningSecret::parse(OPS_SECRET).expect("a valid secret");
    let hook = OpsWebhook { url: dead, secret };
    let app = spawn_app_with(Mode::Manual, move |c| c.ops_webhook = Some(hook)).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    app.admin("POST", &format!("/v1/merchants/{mid}/pause"), None).await;
    let ops = app.ops.clone().expect("the app has an ops webhook");
    assert_eq!(ops.run_once().await, 1, "refused: nobody listens");
    app.advance(Duration::from_millis(4_900));
    assert_eq!(ops.run_once().await, 0, "not before 5 s");
    app.advance(Duration::from_millis(100));
    assert_eq!(ops.run_once().await, 1, "refused again");

    let ops_rx = TestReceiver::start().await;
    let slow = Duration::from_secs(2);
    ops_rx.script_answer(Answer { status: 200, delay: slow, ..Answer::default() });
    let hook = ops_hook(&ops_rx);
    let app = app
        .restart(move |c| {
            c.ops_webhook = Some(hook);
            c.request_timeout = Duration::from_millis(300);
        })
        .await;
    app.advance(Duration::from_secs(29));
    assert!(send_alerts(&app, &ops_rx).await.is_empty(), "not before 30 s");
    app.advance(Duration::from_secs(1));
    let late = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&late), ["merchant.paused"], "answered after the timeout");
    app.advance(Duration::from_secs(119));
    assert!(send_alerts(&app, &ops_rx).await.is_empty(), "not before 2 min");
    app.advance(Duration::from_secs(1));
    let taken = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&taken), ["merchant.paused"]);
    assert_eq!(taken[0].id, late[0].id);
    app.advance(Duration::from_secs(3600));
    assert!(send_alerts(&app, &ops_rx).await.is_empty(), "taken at last: sent no more");
}

/// A merchant's outage end to end: its server fails, every delivery is exhausted and the
/// operator hears of it once; the server is fixed, one recovery delivers each operation's
/// latest status once, and the operator hears of the recovery once.
#[tokio::test]
async fn an_outage_raises_one_failing_alert_and_its_recovery_one_recovered_alert() {
    let (ops_rx, rx) = (TestReceiver::start().await, TestReceiver::start().await);
    rx.set_default(500, "down");
    let app = ops_app(&ops_rx, |c| c.health.alert_after_failures = 3).await;
    let since = now(&app).rfc3339_millis();
    let m = app
        .merchant(json!({"name": "Outage", "callback_url": rx.url,
            "retry": {"interval": "1s", "max_attempts": 2}}))
        .await;
    let mid = m["id"].as_str().expect("id");
    let ops = operations(&app, mid, 5, &["pending"]).await;
    assert_eq!(app.dispatcher.run_once().await, 5, "each pending status fails once");
    for id in &ops {
        assert_eq!(app.report(id, "success").await.status, 202, "and is superseded");
    }
    wait_for("every delivery exhausted", WAIT, || async {
        app.dispatcher.run_once().await;
        app.advance(Duration::from_secs(2));
        all_latest(&app, &ops, "exhausted").await.then_some(())
    })
    .await;
    let failing = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&failing), ["merchant.endpoint_failing"], "once, not per failure");
    let data = &failing[0].body["data"];
    assert_eq!((data["merchant_id"].as_str(), data["url"].as_str()), (Some(mid), Some(&*rx.url)));
    assert_eq!(data["consecutive_failures"], 3, "raised at the third failure: {data}");

    rx.set_default(200, "ok");
    let before = rx.received().len();
    let path = format!("/v1/merchants/{mid}/recover");
    let r = app.admin("POST", &path, Some(json!({"since": since}))).await;
    assert_eq!((r.status, &r.body), (200, &json!({"queued": 5})));
    let again = app.admin("POST", &path, Some(json!({"since": since}))).await;
    assert_eq!(again.body, json!({"queued": 0}), "nothing is queued twice");
    wait_for("every recovered delivery delivered", WAIT, || async {
        app.dispatcher.run_once().await;
        all_latest(&app, &ops, "delivered").await.then_some(())
    })
    .await;
    let after: Vec<Value> = rx.received()[before..].iter().map(|c| c.json()).collect();
    assert_eq!(after.len(), 5, "one callback per operation: {after:?}");
    for id in &ops {
        let sent: Vec<&Value> = after.iter().filter(|b| b["data"]["id"] == id.as_str()).collect();
        assert_eq!(sent.len(), 1, "{id}");
        assert_eq!(sent[0]["data"]["status"], "success", "the latest status, never the stale one");
    }
    let recovered = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&recovered), ["merchant.endpoint_recovered"]);
    assert_eq!(recovered[0].body["data"]["consecutive_failures"], 0);
    let r = app.admin("POST", &path, Some(json!({"since": since}))).await;
    assert_eq!(r.body, json!({"queued": 0}), "delivered deliveries are not queued again");
    app.advance(Duration::from_secs(3600));
    assert!(send_alerts(&app, &ops_rx).await.is_empty());
}

/// A destination that answers nothing but failures for `disable_after` is disabled: its
/// delivery is cancelled, the operator is told once, new reports are cancelled at once, and
/// recovery re-enables it and queues them.
#[tokio::test]
async fn a_destination_failing_for_the_disable_period_is_disabled_until_recovered() {
    let (ops_rx, rx) = (TestReceiver::start().await, TestReceiver::start().await);
    rx.set_default(500, "down");
    let app = ops_app(&ops_rx, |c| c.health.disable_after = Duration::from_secs(3600)).await;
    let since = now(&app).rfc3339_millis();
    let m = app
        .merchant(json!({"name": "Gone quiet", "callback_url": rx.url,
            "retry": {"interval": "10m", "max_attempts": 100}}))
        .await;
    let mid = m["id"].as_str().expect("id");
    let mut ops = operations(&app, mid, 1, &["success"]).await;
    wait_for("the delivery cancelled", WAIT, || async {
        app.dispatcher.run_once().await;
        if all_latest(&app, &ops, "cancelled").await {
            return Some(());
        }
        app.advance(Duration::from_secs(600));
        None
    })
    .await;
    let list = app.deliveries(&ops[0]).await;
    assert_eq!(list[0]["last_error"], recovery::UNHEALTHY, "{list:?}");
    assert_eq!(list[0]["attempts"].as_array().map(Vec::len), Some(7), "0, 10, …, 60 minutes");
    let sent = send_alerts(&app, &ops_rx).await;
    assert_eq!(kinds(&sent), ["merchant.endpoint_disabled"], "10 failures were not reached");
    assert_eq!(sent[0].body["data"]["url"], rx.url.as_str());

    let attempts = rx.received().len();
    let newer = app.operation(mid, "later", json!({})).await;
    let newer = newer["id"].as_str().expect("id").to_owned();
    assert_eq!(app.report(&newer, "success").await.status, 202);
    let list = app.deliveries(&newer).await;
    assert_eq!(
        (&list[0]["state"], &list[0]["last_error"]),
        (&json!("cancelled"), &json!(delivery::DISABLED_DESTINATION))
    );
    assert_eq!(app.dispatcher.run_once().await, 0);
    assert_eq!(rx.received().len(), attempts, "nothing is sent to a disabled destination");
    ops.push(newer);

    rx.set_default(200, "ok");
    let r = app
        .admin("POST", &format!("/v1/merchants/{mid}/recover"), Some(json!({"since": since})))
        .await;
    assert_eq!((r.status, &r.body), (200, &json!({"queued": 2})));
    wait_for("both delivered after recovery", WAIT, || async {
        app.dispatcher.run_once().await;
        all_latest(&app, &ops, "delivered").await.then_some(())
    })
    .await;
    assert_eq!(rx.received().len(), attempts + 2, "one callback each");
}

/// Two deliveries to one destination fail past `disable_after` in the same round: the
/// destination is disabled once, and the operator is told once.
#[tokio::test]
async fn a_destination_disabled_with_two_deliveries_in_flight_is_reported_once() {
    let (ops_rx, rx) = (TestReceiver::start().await, TestReceiver::start().await);
    rx.set_default(500, "down");
    let app = ops_app(&ops_rx, |c| {
        c.health.disable_after = Duration::from_secs(3600);
        c.health.alert_after_failures = 100;
    })
    .await;
    let m = app
        .merchant(json!({"name": "Two", "callback_url": rx.url,
            "retry": {"interval": "10m", "max_attempts": 100}}))
        .await;
    let ops = operations(&app, m["id"].as_str().expect("id"), 2, &["success"]).await;
    wait_for("both deliveries cancelled", WAIT, || async {
        app.dispatcher.run_once().await;
        if all_latest(&app, &ops, "cancelled").await {
            return Some(());
        }
        app.advance(Duration::from_secs(600));
        None
    })
    .await;
    assert_eq!(kinds(&send_alerts(&app, &ops_rx).await), ["merchant.endpoint_disabled"]);
}

/// A merchant's alerts reach the operator in the order they were raised, even when the
/// first is refused and waits for its retry.
#[tokio::test]
async fn a_later_alert_does_not_overtake_an_earlier_one_waiting_for_its_retry() {
    let ops_rx = TestReceiver::start().await;
    ops_rx.script(&[(500, "busy")]);
    let app = ops_app(&ops_rx, |_| {}).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    app.admin("POST", &format!("/v1/merchants/{mid}/pause"), None).await;
    assert_eq!(kinds(&send_alerts(&app, &ops_rx).await), ["merchant.paused"], "refused");
    app.advance(Duration::from_secs(1));
    app.admin("POST", &format!("/v1/merchants/{mid}/resume"), None).await;
    let mut sent = send_alerts(&app, &ops_rx).await;
    app.advance(Duration::from_secs(5));
    sent.extend(send_alerts(&app, &ops_rx).await);
    assert_eq!(kinds(&sent), ["merchant.paused", "merchant.resumed"]);
}
