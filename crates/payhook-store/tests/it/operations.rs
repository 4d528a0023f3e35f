//! Registration, status reports (transitions, idempotency, data, seq), the events feed, and
//! supersede at report time.

use crate::fixtures::*;
use payhook_core::model::DeliveryState;
use payhook_core::status::Status;
use payhook_store::{NextStep, Registered, Store, StoreError};
use serde_json::json;
use std::sync::Arc;

pub async fn register_is_idempotent(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let first = add_operation(s, &m, "order-1").await;
    assert_eq!((first.status, first.seq, first.created_at), (Status::Created, 0, T0));
    assert!(first.number > 0);

    match s.register_operation(new_operation(&m, "order-1"), at(5)).await.expect("register") {
        Registered::Existing(op) => assert_eq!(op, first),
        other => panic!("same request should find the operation: {other:?}"),
    }
    let mut changed = new_operation(&m, "order-1");
    changed.request_hash = "another body".into();
    match s.register_operation(changed, at(5)).await.expect("register") {
        Registered::Conflict(op) => assert_eq!(op.id, first.id),
        other => panic!("a different request should conflict: {other:?}"),
    }

    let created = s.events(&m.id, 0, 10).await.expect("events");
    assert_eq!(created.len(), 1, "registration records the created event");
    let e = &created[0];
    assert_eq!((e.seq, e.status, e.previous_status), (0, Status::Created, Status::Created));
    assert_eq!((e.operation_id.clone(), e.operation.clone()), (first.id.clone(), first.clone()));

    let second = add_operation(s, &m, "order-2").await;
    assert!(second.number > first.number, "numbers grow in creation order");
    assert_eq!(s.get_operation(&first.id).await.expect("get"), Some(first.clone()));
    assert_eq!(s.find_operation(&m.id, "order-1").await.expect("find"), Some(first));
    assert_eq!(s.find_operation(&m.id, "order-9").await.expect("find"), None);
}

pub async fn invalid_transition_stores_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    report(s, &op, Status::Failed, at(1)).await;

    let err = s.report_status(status_report(&op, Status::Success), at(2)).await.expect_err("409");
    assert!(matches!(err, StoreError::InvalidTransition(_)), "{err:?}");
    let now = s.get_operation(&op.id).await.expect("get").expect("exists");
    assert_eq!((now.status, now.seq), (Status::Failed, 1));
    assert_eq!(s.events(&m.id, 0, 100).await.expect("events").len(), 2, "created, failed");
    assert_eq!(s.deliveries_of(&op.id).await.expect("deliveries").len(), 1);
}

pub async fn event_key_is_idempotent(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let mut pending = status_report(&op, Status::Pending);
    pending.event_key = Some("k1".into());

    let first = s.report_status(pending.clone(), at(1)).await.expect("report");
    assert!(!first.duplicate && first.delivery.is_some());
    assert_eq!(first.event.event_key.as_deref(), Some("k1"));
    let again = s.report_status(pending.clone(), at(2)).await.expect("report again");
    assert!(again.duplicate && again.delivery.is_none());
    assert_eq!(again.event, first.event);

    let mut other = status_report(&op, Status::Success);
    other.event_key = Some("k1".into());
    let err = s.report_status(other, at(3)).await.expect_err("key reused for another status");
    assert!(matches!(err, StoreError::EventKeyConflict(ref k) if k == "k1"), "{err:?}");
    let now = s.get_operation(&op.id).await.expect("get").expect("exists");
    assert_eq!((now.status, now.seq), (Status::Pending, 1));
    assert_eq!(s.deliveries_of(&op.id).await.expect("deliveries").len(), 1);
}

pub async fn seq_grows_and_data_merges(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let mut r = status_report(&op, Status::Pending);
    r.data = json!({"rrn": "111", "approvalCode": "A1"}).as_object().cloned().expect("object");
    let pending = s.report_status(r, at(1)).await.expect("report");
    let mut r = status_report(&op, Status::Success);
    r.data = json!({"rrn": "222", "cardNumberMask": "4111**1111"}).as_object().cloned().expect("o");
    let success = s.report_status(r, at(2)).await.expect("report");

    assert_eq!((pending.event.seq, success.event.seq), (1, 2));
    assert_eq!(success.event.previous_status, Status::Pending);
    assert_eq!(pending.event.operation.data["rrn"], "111", "the snapshot is as of its seq");
    let now = s.get_operation(&op.id).await.expect("get").expect("exists");
    assert_eq!((now.status, now.seq, now.updated_at), (Status::Success, 2, at(2)));
    let expected = json!({"rrn": "222", "approvalCode": "A1", "cardNumberMask": "4111**1111"});
    assert_eq!(serde_json::Value::Object(now.data.clone()), expected);
    assert_eq!(success.event.operation, now);
    let partial_refund = report(s, &op, Status::Success, at(3)).await;
    assert_eq!(partial_refund.seq, 3, "a partial refund keeps success with a new seq");
    let after = s.get_operation(&op.id).await.expect("get").expect("exists");
    assert_eq!((after.status, after.seq, after.updated_at), (Status::Success, 3, at(3)));
    assert_eq!(serde_json::Value::Object(after.data), expected, "a report without data keeps it");
}

/// An event read back — from the feed, from the operation's events, or claimed with its
/// delivery — carries the operation exactly as it was right after that event, whatever
/// changed later (the SQLite store rebuilds it from the event and the operation's row).
pub async fn events_read_back_as_they_were(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let mut new = new_operation(&m, "order-1");
    new.callback.callback_url = Some("https://shop.example/order-1".into());
    new.callback.return_url = Some("https://shop.example/back".into());
    new.data = json!({"basket": [1, 2]}).as_object().cloned().expect("object");
    let Registered::Created(op) = s.register_operation(new, at(1)).await.expect("register") else {
        panic!("a new operation")
    };
    let mut r = status_report(&op, Status::Pending);
    r.data = json!({"rrn": "111"}).as_object().cloned().expect("object");
    let pending = s.report_status(r, at(2)).await.expect("report");
    let mut r = status_report(&op, Status::Success);
    r.data = json!({"rrn": "222", "approvalCode": "A1"}).as_object().cloned().expect("object");
    let success = s.report_status(r, at(3)).await.expect("report");

    let expected = [op.clone(), pending.event.operation.clone(), success.event.operation.clone()];
    assert_eq!(expected[1].data["rrn"], "111");
    assert_eq!((expected[2].updated_at, expected[2].seq), (at(3), 2));
    let of_operation = s.operation_events(&op.id).await.expect("events");
    let read: Vec<_> = of_operation.iter().map(|e| e.operation.clone()).collect();
    assert_eq!(read, expected, "the operation's events");
    let feed = s.events(&m.id, 0, 10).await.expect("feed");
    assert_eq!(feed, of_operation, "the feed");
    assert_eq!(*success.event, of_operation[2], "the whole event, as reported");

    let claimed = claim(s, "node-a", at(4), 10).await;
    assert_eq!(ids(&claimed), [success.delivery.expect("planned").id.to_string()]);
    assert_eq!(*claimed[0].event, *success.event, "the claimed delivery's event");
}

pub async fn events_feed_in_order_by_cursor(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m1 = add_merchant(s, "https://one.example/cb").await;
    let m2 = add_merchant(s, "https://two.example/cb").await;
    let a = add_operation(s, &m1, "a").await;
    let b = add_operation(s, &m2, "b").await;
    let c = add_operation(s, &m1, "c").await;
    for (op, status, t) in
        [(&a, Status::Pending, 1), (&b, Status::Pending, 2), (&c, Status::Pending, 3)]
    {
        report(s, op, status, at(t)).await;
    }
    report(s, &a, Status::Success, at(4)).await;

    let feed = s.events(&m1.id, 0, 100).await.expect("events");
    let seen: Vec<_> = feed.iter().map(|e| (e.operation_id.clone(), e.seq)).collect();
    let expected = [(&a, 0), (&c, 0), (&a, 1), (&c, 1), (&a, 2)];
    assert_eq!(seen, expected.map(|(op, seq)| (op.id.clone(), seq)).to_vec());
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    assert!(feed.iter().all(|e| e.merchant_id == m1.id));

    let page = s.events(&m1.id, feed[0].position, 1).await.expect("events");
    assert_eq!(page, vec![feed[1].clone()]);
    let rest = s.events(&m1.id, feed[2].position, 10).await.expect("events");
    assert_eq!(rest, feed[3..].to_vec());
    assert!(s.events(&m1.id, feed[4].position, 10).await.expect("events").is_empty());
    assert_eq!(s.events(&m2.id, 0, 10).await.expect("events").len(), 2);
}

pub async fn report_supersedes_pending_deliveries(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d1 = report(s, &op, Status::Pending, at(1)).await;
    let d2 = report(s, &op, Status::Success, at(2)).await;

    assert_eq!(delivery(s, &d1).await.state, DeliveryState::Superseded);
    assert_eq!(delivery(s, &d1).await.next_attempt_at, None);
    assert_eq!((d2.state, d2.seq, d2.next_attempt_at), (DeliveryState::Pending, 2, Some(at(2))));
    let all = s.deliveries_of(&op.id).await.expect("deliveries");
    let states: Vec<_> = all.iter().map(|(d, a)| (d.seq, d.state, a.len())).collect();
    assert_eq!(states, vec![(1, DeliveryState::Superseded, 0), (2, DeliveryState::Pending, 0)]);
    assert_eq!(ids(&claim(s, "n1", at(3), 10).await), vec![d2.id.to_string()]);
}

pub async fn report_keeps_a_delivery_in_flight(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d1 = report(s, &op, Status::Pending, at(1)).await;
    assert_eq!(ids(&claim(s, "n1", at(1), 10).await), vec![d1.id.to_string()]);
    let d2 = report(s, &op, Status::Success, at(2)).await;

    assert_eq!(delivery(s, &d1).await.state, DeliveryState::Pending, "in flight: not touched");
    assert!(claim(s, "n2", at(3), 10).await.is_empty(), "the newer one waits for the older");
    let state = record(s, &d1, 200, NextStep::Delivered, at(4)).await;
    assert_eq!(state, DeliveryState::Delivered);
    assert_eq!(ids(&claim(s, "n2", at(5), 10).await), vec![d2.id.to_string()]);
}

pub async fn no_delivery_without_destination(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut m = merchant("https://unused.example/cb");
    m.callback_url = None;
    s.create_merchant(&m, &payhook_store::NewApiKey::minted("key-x", "pk_", m.created_at))
        .await
        .expect("create");
    let op = add_operation(s, &m, "order-1").await;
    let r = s.report_status(status_report(&op, Status::Success), at(1)).await.expect("report");
    assert!(r.delivery.is_none() && !r.duplicate);
    assert_eq!(r.event.seq, 1);
    assert!(s.deliveries_of(&op.id).await.expect("deliveries").is_empty());
}

/// A batch naming one operation twice applies its items in order (the second sees the first),
/// and an unknown operation or a refused transition fails alone.
pub async fn a_batch_applies_one_operations_items_in_order(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let done = add_operation(s, &m, "order-2").await;
    report(s, &done, Status::Failed, at(1)).await;
    let mut unknown = status_report(&op, Status::Success);
    unknown.operation_id = "op_0000000000000000000000000000dead".parse().expect("an id");
    let items = vec![
        status_report(&op, Status::Pending),
        status_report(&done, Status::Success),
        unknown,
        status_report(&op, Status::Success),
    ];
    let out = s.report_statuses(items, at(2)).await.expect("the batch commits");
    let seqs: Vec<Option<i64>> = out.iter().map(|r| r.as_ref().ok().map(|r| r.event.seq)).collect();
    assert_eq!(seqs, vec![Some(1), None, None, Some(2)], "{out:?}");
    assert!(matches!(out[1], Err(StoreError::InvalidTransition(_))), "{:?}", out[1]);
    assert!(matches!(out[2], Err(StoreError::NotFound)), "{:?}", out[2]);
    let after = s.get_operation(&op.id).await.expect("get").expect("exists");
    assert_eq!((after.status, after.seq), (Status::Success, 2));
    let still = s.get_operation(&done.id).await.expect("get").expect("exists");
    assert_eq!((still.status, still.seq), (Status::Failed, 1));
    let states: Vec<DeliveryState> =
        s.deliveries_of(&op.id).await.expect("deliveries").iter().map(|(d, _)| d.state).collect();
    assert_eq!(states, vec![DeliveryState::Superseded, DeliveryState::Pending]);
}
