//! Retry schedules on an injected clock: the dispatcher is driven with `run_once` while the
//! test moves time, so no test waits for a real retry delay.

use crate::helpers::*;
use payhook_core::Timestamp;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn next_at(delivery: &serde_json::Value) -> Option<i64> {
    let text = delivery["next_attempt_at"].as_str()?;
    Some(Timestamp::parse_rfc3339(text).expect("RFC 3339").millis())
}

async fn only_delivery(app: &TestApp, op: &str) -> serde_json::Value {
    let list = app.deliveries(op).await;
    assert_eq!(list.len(), 1);
    list[0].clone()
}

fn now_ms(app: &TestApp) -> i64 {
    use payhook_core::clock::Clock;
    app.clock.as_ref().expect("manual clock").now().millis()
}

#[tokio::test]
async fn merchant_schedule_is_followed_exactly_then_exhausted() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    rx.set_default(500, "nope");
    let m = app
        .merchant(
            json!({"name": "Shop", "callback_url": rx.url, "retry": {"schedule": ["5s", "5m"]}}),
        )
        .await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    app.report(id, "success").await;

    assert_eq!(app.dispatcher.run_once().await, 1);
    let d = only_delivery(&app, id).await;
    assert_eq!(next_at(&d), Some(now_ms(&app) + 5_000));
    app.advance(Duration::from_millis(4_999));
    assert_eq!(app.dispatcher.run_once().await, 0, "not due before 5 s");
    app.advance(Duration::from_millis(1));
    assert_eq!(app.dispatcher.run_once().await, 1);
    assert_eq!(next_at(&only_delivery(&app, id).await), Some(now_ms(&app) + 300_000));
    app.advance(Duration::from_secs(300));
    assert_eq!(app.dispatcher.run_once().await, 1);
    let d = only_delivery(&app, id).await;
    assert_eq!((d["state"].as_str(), d["attempt_count"].as_u64()), (Some("exhausted"), Some(3)));
    app.advance(Duration::from_secs(86_400));
    assert_eq!(app.dispatcher.run_once().await, 0, "nothing after exhaustion");
    assert_eq!(rx.received().len(), 3);
}

#[tokio::test]
async fn default_schedule_has_twenty_percent_jitter() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    rx.set_default(500, "");
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    app.report(id, "success").await;
    let expected_secs = [5, 300, 1_800, 7_200, 18_000, 36_000, 50_400, 72_000, 86_400];
    for (i, secs) in expected_secs.iter().enumerate() {
        let sample = if i % 2 == 0 { 1.0 } else { -1.0 };
        app.dispatcher.set_jitter(Arc::new(move || sample));
        assert_eq!(app.dispatcher.run_once().await, 1, "attempt {}", i + 1);
        let factor = if sample > 0.0 { 1.2 } else { 0.8 };
        let wait = (*secs as f64 * 1000.0 * factor).round() as i64;
        let d = only_delivery(&app, id).await;
        assert_eq!(next_at(&d), Some(now_ms(&app) + wait), "retry {} after {secs}s ±20%", i + 1);
        app.advance(Duration::from_millis(wait as u64));
    }
    assert_eq!(app.dispatcher.run_once().await, 1, "the tenth and last attempt");
    assert_eq!(only_delivery(&app, id).await["state"], "exhausted");
}

#[tokio::test]
async fn retry_after_is_honoured_and_clamped() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url, "retry": {"interval": "10s", "max_attempts": 5}})).await;
    let mid = m["id"].as_str().expect("id");
    for (i, (status, header, expect_ms)) in
        [(429, "120", 120_000), (503, "999999", 3_600_000), (500, "120", 10_000)]
            .into_iter()
            .enumerate()
    {
        let op = app.operation(mid, &format!("o-{i}"), json!({})).await;
        let id = op["id"].as_str().expect("id");
        app.report(id, "success").await;
        rx.script_answer(Answer {
            status,
            headers: vec![("retry-after", header.to_owned())],
            ..Answer::default()
        });
        assert_eq!(app.dispatcher.run_once().await, 1);
        let d = only_delivery(&app, id).await;
        assert_eq!(
            next_at(&d),
            Some(now_ms(&app) + expect_ms),
            "{status} with Retry-After {header}"
        );
    }
}
