//! Destinations' health kept with every attempt record, the alerts it queues, the
//! destination disabled after days of failures, and the alerts' queue itself.

use crate::fixtures::*;
use payhook_core::lifecycle::health::HealthRules;
use payhook_core::lifecycle::recovery;
use payhook_core::model::{DeliveryState, MerchantState};
use payhook_core::status::Status;
use payhook_store::{AlertOutcome, HealthPolicy, NextStep, Store};
use std::sync::Arc;
use std::time::Duration;

fn policy(alert_after_failures: u32, disable_after: Duration, alerts: bool) -> HealthPolicy {
    HealthPolicy { rules: HealthRules { alert_after_failures, disable_after }, alerts }
}

/// One attempt of a fresh delivery of `m` answered `status` at `t` ms, retried later.
async fn attempt_once(
    s: &dyn Store,
    m: &payhook_core::model::Merchant,
    n: usize,
    status: u16,
    t: i64,
) {
    let op = add_operation(s, m, &format!("order-{n}")).await;
    let d = report(s, &op, Status::Success, at(t)).await;
    assert_eq!(claim(s, "n1", at(t), 10).await.len(), 1, "claimed {n}");
    let next =
        if status == 200 { NextStep::Delivered } else { NextStep::RetryAt(at(t + 86_400_000)) };
    record(s, &d, status, next, at(t)).await;
}

async fn kinds(s: &dyn Store, t: i64) -> Vec<String> {
    let claimed = s.claim_alerts("n1", at(t), LEASE, 10).await.expect("claim alerts");
    for a in &claimed {
        s.record_alert("n1", &a.id, &AlertOutcome::Delivered, at(t)).await.expect("record alert");
    }
    claimed.into_iter().map(|a| a.kind).collect()
}

pub async fn attempts_move_the_health_on_and_alert_at_the_threshold(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.set_health_policy(policy(3, Duration::from_secs(86_400), true));
    let m = add_merchant(s, "https://shop.example/cb").await;
    for n in 0..4 {
        attempt_once(s, &m, n, 500, n as i64 * 1000).await;
    }
    let all = s.destination_health(None).await.expect("health");
    let d = &all[&m.id][0];
    assert_eq!((d.url.as_str(), d.disabled), ("https://shop.example/cb", false));
    assert_eq!((d.health.consecutive_failures, d.health.failing_since), (4, Some(at(0))));
    assert_eq!(kinds(s, 4_000).await, ["merchant.endpoint_failing"], "once, at the third");
    attempt_once(s, &m, 9, 200, 5_000).await;
    let d =
        &s.destination_health(Some(std::slice::from_ref(&m.id))).await.expect("health")[&m.id][0];
    assert_eq!((d.health.consecutive_failures, d.health.last_success_at), (0, Some(at(5_000))));
    assert_eq!(kinds(s, 6_000).await, ["merchant.endpoint_recovered"]);
    assert_eq!(kinds(s, 7_000).await, Vec::<String>::new(), "each alert once");
}

pub async fn without_an_ops_webhook_nothing_is_queued(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.set_health_policy(policy(1, Duration::from_secs(86_400), false));
    let m = add_merchant(s, "https://shop.example/cb").await;
    attempt_once(s, &m, 0, 500, 0).await;
    s.set_merchant_state(&m.id, MerchantState::Paused, &audit(&m.id, at(1))).await.expect("pause");
    assert_eq!(s.next_alert_at().await.expect("next"), None);
    assert_eq!(kinds(s, 2).await, Vec::<String>::new());
    let health = s.destination_health(None).await.expect("health");
    assert_eq!(health[&m.id][0].health.consecutive_failures, 1, "health is kept all the same");
}

pub async fn days_of_failures_disable_the_destination_until_recovery(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.set_health_policy(policy(100, Duration::from_secs(3_600), true));
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Success, at(0)).await;
    claim(s, "n1", at(0), 10).await;
    let later = |t: i64| NextStep::RetryAt(at(t + 600_000));
    assert_eq!(
        record(s, &delivery(s, &d).await, 500, later(0), at(0)).await,
        DeliveryState::Pending
    );
    claim(s, "n1", at(3_599_999), 10).await;
    assert_eq!(
        record(s, &delivery(s, &d).await, 500, later(3_599_999), at(3_599_999)).await,
        DeliveryState::Pending
    );
    claim(s, "n1", at(3_600_000), 10).await;
    let ended = record(s, &delivery(s, &d).await, 500, later(3_600_000), at(3_600_000)).await;
    assert_eq!(ended, DeliveryState::Cancelled, "an hour of nothing but failures");
    assert_eq!(delivery(s, &d).await.last_error.as_deref(), Some(recovery::UNHEALTHY));
    assert_eq!(kinds(s, 3_600_001).await, ["merchant.endpoint_disabled"]);
    let health = s.destination_health(None).await.expect("health");
    assert!(health[&m.id][0].disabled);

    let next =
        report(s, &add_operation(s, &m, "order-2").await, Status::Success, at(3_700_000)).await;
    assert_eq!(delivery(s, &next).await.state, DeliveryState::Cancelled, "disabled: at once");
    let queued = s.recover(&m.id, at(0), &audit(&m.id, at(3_800_000))).await.expect("recover");
    assert_eq!(queued, 2, "both come back");
    let health = s.destination_health(None).await.expect("health");
    let back = &health[&m.id][0];
    assert_eq!((back.disabled, back.health.failing_since), (false, None), "starts over");
    claim(s, "n1", at(3_800_000), 10).await;
    let again = record(s, &delivery(s, &d).await, 500, later(3_800_000), at(3_800_000)).await;
    assert_eq!(again, DeliveryState::Pending, "one failure after recovery does not disable");
}

pub async fn alerts_wait_for_their_retry_and_go_to_one_node(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.set_health_policy(policy(1, Duration::from_secs(86_400), true));
    let m = add_merchant(s, "https://shop.example/cb").await;
    s.set_merchant_state(&m.id, MerchantState::Paused, &audit(&m.id, at(0))).await.expect("pause");
    assert_eq!(s.next_alert_at().await.expect("next"), Some(at(0)));
    let first = s.claim_alerts("n1", at(0), LEASE, 10).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].kind.as_str(), first[0].attempts), ("merchant.paused", 0));
    assert_eq!(first[0].data["merchant_id"], m.id.as_str());
    assert!(s.claim_alerts("n2", at(1), LEASE, 10).await.expect("claim").is_empty(), "leased");
    let retry = AlertOutcome::RetryAt(at(5_000), "HTTP 500".into());
    s.record_alert("n1", &first[0].id, &retry, at(1)).await.expect("record");
    assert_eq!(s.next_alert_at().await.expect("next"), Some(at(5_000)));
    assert!(s.claim_alerts("n2", at(4_999), LEASE, 10).await.expect("claim").is_empty());
    let again = s.claim_alerts("n2", at(5_000), LEASE, 10).await.expect("claim");
    assert_eq!((again[0].id.clone(), again[0].attempts), (first[0].id.clone(), 1), "same id");
    s.record_alert("n2", &again[0].id, &AlertOutcome::Exhausted("gave up".into()), at(5_001))
        .await
        .expect("record");
    assert_eq!(s.next_alert_at().await.expect("next"), None);
    let missing = s.record_alert("n2", "evt_missing", &AlertOutcome::Delivered, at(6)).await;
    assert!(matches!(missing, Err(payhook_store::StoreError::NotFound)));
}

pub async fn a_merchants_alerts_keep_their_order_and_their_lease(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.set_health_policy(policy(1, Duration::from_secs(86_400), true));
    let (a, b) = (
        add_merchant(s, "https://a.example/cb").await,
        add_merchant(s, "https://b.example/cb").await,
    );
    for (m, t) in [(&a, 0), (&a, 1), (&b, 2)] {
        let (state, action) = match t {
            1 => (MerchantState::Active, payhook_core::model::AuditAction::MerchantResumed),
            _ => (MerchantState::Paused, payhook_core::model::AuditAction::MerchantPaused),
        };
        let entry = payhook_store::AuditEntry { action, ..audit(&m.id, at(t)) };
        s.set_merchant_state(&m.id, state, &entry).await.expect("state");
    }
    let first = s.claim_alerts("n1", at(10), LEASE, 10).await.expect("claim");
    let seen: Vec<_> = first.iter().map(|x| (x.merchant.clone(), x.kind.as_str())).collect();
    assert_eq!(
        seen,
        [(a.id.clone(), "merchant.paused"), (b.id.clone(), "merchant.paused")],
        "a's oldest only"
    );
    let stolen = s.record_alert("n2", &first[0].id, &AlertOutcome::Delivered, at(11)).await;
    assert!(matches!(stolen, Err(payhook_store::StoreError::NotFound)), "n2 holds no lease");
    let retry = AlertOutcome::RetryAt(at(1_000), "HTTP 500".into());
    s.record_alert("n1", &first[0].id, &retry, at(11)).await.expect("record");
    s.record_alert("n1", &first[1].id, &AlertOutcome::Delivered, at(11)).await.expect("record");
    assert!(
        s.claim_alerts("n1", at(12), LEASE, 10).await.expect("claim").is_empty(),
        "resumed waits"
    );
    let again = s.claim_alerts("n1", at(1_000), LEASE, 10).await.expect("claim");
    assert_eq!(again.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>(), ["merchant.paused"]);
    s.release_leases("n1").await.expect("release");
    let after_restart = s.claim_alerts("n1", at(1_001), LEASE, 10).await.expect("claim");
    assert_eq!(after_restart.len(), 1, "a restart frees the node's alert leases");
    s.record_alert("n1", &after_restart[0].id, &AlertOutcome::Delivered, at(1_002))
        .await
        .expect("record");
    let last = s.claim_alerts("n1", at(1_003), LEASE, 10).await.expect("claim");
    assert_eq!(last.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>(), ["merchant.resumed"]);
}
