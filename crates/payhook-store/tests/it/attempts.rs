//! Recording attempts and what follows from them, and resends.

use crate::fixtures::*;
use payhook_core::lifecycle::CancelReason;
use payhook_core::model::DeliveryState;
use payhook_core::status::Status;
use payhook_store::{NextStep, Store, StoreError};
use std::sync::Arc;

pub async fn delivered_is_final_and_logged(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Success, at(1)).await;
    claim(s, "n1", at(1), 1).await;
    let a = attempt(&d, at(2), 200);
    let change = s.record_attempt(&a, NextStep::Delivered, at(3)).await.expect("record");
    assert_eq!(change.state, DeliveryState::Delivered);

    let now = delivery(s, &d).await;
    assert_eq!((now.state, now.attempts, now.series_attempts), (DeliveryState::Delivered, 1, 1));
    assert_eq!((now.next_attempt_at, now.updated_at), (None, at(3)));
    let log = s.deliveries_of(&op.id).await.expect("deliveries");
    assert_eq!(log, vec![(now, vec![a])], "the attempt is logged as recorded");
    assert!(claim(s, "n1", at(100_000), 1).await.is_empty());
}

pub async fn retry_waits_for_its_time(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Success, at(1)).await;
    claim(s, "n1", at(1), 1).await;
    let state = record(s, &d, 503, NextStep::RetryAt(at(5_000)), at(2)).await;
    assert_eq!(state, DeliveryState::Pending);
    let now = delivery(s, &d).await;
    assert_eq!(now.next_attempt_at, Some(at(5_000)));
    assert_eq!(now.last_error.as_deref(), Some("HTTP 503"));

    assert!(claim(s, "n2", at(4_999), 1).await.is_empty(), "not before its time");
    let again = claim(s, "n2", at(5_000), 1).await;
    assert_eq!(ids(&again), vec![d.id.to_string()], "the same delivery id on every attempt");
    assert_eq!((again[0].delivery.attempts, again[0].delivery.series_attempts), (1, 1));
}

pub async fn exhausted_is_final(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Success, at(1)).await;
    claim(s, "n1", at(1), 1).await;
    assert_eq!(record(s, &d, 500, NextStep::Exhausted, at(2)).await, DeliveryState::Exhausted);
    assert_eq!(delivery(s, &d).await.next_attempt_at, None);
    assert!(claim(s, "n1", at(100_000), 1).await.is_empty());
}

pub async fn gone_disables_the_destination(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Pending, at(1)).await;
    claim(s, "n1", at(1), 1).await;
    let state = record(s, &d, 410, NextStep::Cancel(CancelReason::Gone), at(2)).await;
    assert_eq!(state, DeliveryState::Cancelled);

    let next = report(s, &op, Status::Success, at(3)).await;
    assert_eq!((next.state, next.next_attempt_at), (DeliveryState::Cancelled, None));
    assert!(next.last_error.as_deref().is_some_and(|e| e.contains("410")));
    assert_eq!(delivery(s, &next).await.state, DeliveryState::Cancelled);

    s.update_merchant(&m, true).await.expect("re-enable");
    let refund = report(s, &op, Status::Refunded, at(4)).await;
    assert_eq!(refund.state, DeliveryState::Pending, "the operator re-enabled the endpoint");
}

pub async fn retry_becomes_superseded(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d1 = report(s, &op, Status::Pending, at(1)).await;
    claim(s, "n1", at(1), 1).await;
    report(s, &op, Status::Success, at(2)).await;
    let state = record(s, &d1, 500, NextStep::RetryAt(at(3_000)), at(3)).await;
    assert_eq!(state, DeliveryState::Superseded);
    assert_eq!(delivery(s, &d1).await.next_attempt_at, None);
}

pub async fn resend_starts_a_new_series(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Success, at(1)).await;
    claim(s, "n1", at(1), 1).await;
    record(s, &d, 200, NextStep::Delivered, at(2)).await;

    let again = s.resend(&d.id, at(10)).await.expect("resend");
    assert_eq!((again.id.clone(), again.state), (d.id.clone(), DeliveryState::Pending));
    assert_eq!((again.attempts, again.series_attempts), (1, 0));
    assert_eq!(again.next_attempt_at, Some(at(10)));
    let claimed = claim(s, "n1", at(10), 1).await;
    assert_eq!(ids(&claimed), vec![d.id.to_string()]);
}

pub async fn resend_is_refused_when_stale_or_in_flight(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d1 = report(s, &op, Status::Pending, at(1)).await;
    let d2 = report(s, &op, Status::Success, at(2)).await;
    let err = s.resend(&d1.id, at(3)).await.expect_err("a newer delivery exists");
    assert!(matches!(err, StoreError::Superseded), "{err:?}");

    claim(s, "n1", at(3), 1).await;
    let err = s.resend(&d2.id, at(4)).await.expect_err("being attempted");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let unknown = "dlv_0000".parse().expect("valid id");
    let err = s.resend(&unknown, at(4)).await.expect_err("no such delivery");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn an_attempt_of_an_unknown_delivery_is_not_found_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Success, at(1)).await;
    let mut ghost = d.clone();
    ghost.id = "dlv_0000".parse().expect("valid id");
    for next in [NextStep::Delivered, NextStep::RetryAt(at(60_000))] {
        let err = s
            .record_attempt(&attempt(&ghost, at(2), 200), next, at(3))
            .await
            .expect_err("no such delivery");
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
    let log = s.deliveries_of(&op.id).await.expect("deliveries");
    assert_eq!(log, vec![(delivery(s, &d).await, vec![])], "the real delivery is untouched");
    assert_eq!(log[0].0.state, DeliveryState::Pending);
}

pub async fn recovery_queues_each_operations_latest_ended_delivery_once(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let ended = |name: &'static str, next: NextStep, t: i64| {
        let m = m.clone();
        async move {
            let op = add_operation(s, &m, name).await;
            let d = report(s, &op, Status::Success, at(t)).await;
            claim(s, "n1", at(t), 10).await;
            // The error the dispatcher's judgement gives each ending (`lifecycle::judge`).
            let mut a = attempt(&d, at(t), 500);
            if next == NextStep::Cancel(CancelReason::Gone) {
                a.error = Some(payhook_core::lifecycle::recovery::GONE.into());
            }
            s.record_attempt(&a, next, at(t)).await.expect("record");
            d
        }
    };
    let exhausted = ended("exhausted", NextStep::Exhausted, 1).await;
    let gone = ended("gone", NextStep::Cancel(CancelReason::Gone), 3).await;
    let cancelled_at_once =
        report(s, &add_operation(s, &m, "after-gone").await, Status::Success, at(4)).await;
    assert_eq!(delivery(s, &cancelled_at_once).await.state, DeliveryState::Cancelled);
    let blocked = ended("blocked", NextStep::Cancel(CancelReason::BlockedTarget), 5).await;
    let paid = add_operation(s, &m, "delivered").await;
    let ok = report(s, &paid, Status::Success, at(6)).await;
    claim(s, "n1", at(6), 10).await;
    record(s, &ok, 200, NextStep::Delivered, at(6)).await;

    assert_eq!(
        s.recover(&m.id, at(3), &audit(&m.id, at(10))).await.expect("recover"),
        2,
        "ended at or after 3 ms"
    );
    assert_eq!(
        s.recover(&m.id, at(0), &audit(&m.id, at(11))).await.expect("recover"),
        1,
        "the rest"
    );
    assert_eq!(
        s.recover(&m.id, at(0), &audit(&m.id, at(12))).await.expect("recover"),
        0,
        "nothing twice"
    );
    for d in [&exhausted, &gone, &cancelled_at_once] {
        let now = delivery(s, d).await;
        assert_eq!((now.state, now.series_attempts), (DeliveryState::Pending, 0), "{}", d.id);
    }
    for d in [&blocked, &ok] {
        assert_ne!(delivery(s, d).await.state, DeliveryState::Pending, "not recoverable");
    }
    let claimed = claim(s, "n1", at(12), 10).await;
    assert_eq!(claimed.len(), 3);
    let refund = report(s, &paid, Status::Refunded, at(13)).await;
    assert_eq!(
        delivery(s, &refund).await.state,
        DeliveryState::Pending,
        "the destination is enabled again"
    );
}
