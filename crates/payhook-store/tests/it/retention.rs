//! Retention: what a purge takes, what it leaves, and the feed's answer afterwards.

use crate::fixtures::*;
use payhook_core::model::{Delivery, Operation};
use payhook_core::status::Status;
use payhook_store::{
    NextStep, PollClaim, PollNext, PurgeBatch, PurgeTarget, PurgedRows, Registered, Store,
    StoreError,
};
use std::sync::Arc;

/// Walks a purge target to its end in batches of 2 (so the walk crosses batches).
async fn purge(s: &dyn Store, target: PurgeTarget) -> PurgedRows {
    let mut batch = PurgeBatch { target, after: 0, limit: 2 };
    let mut rows = PurgedRows::default();
    for _ in 0..1_000 {
        let purged = s.purge(&batch).await.expect("purge");
        assert!(!purged.busy, "no other node purges here");
        rows.add(purged.rows);
        if purged.done {
            return rows;
        }
        batch.after = purged.next_after;
    }
    panic!("the purge walk did not end");
}

/// Reports success at 1 ms and records one attempt at 2 ms with `next`.
async fn reported(
    s: &dyn Store,
    m: &payhook_core::model::Merchant,
    ext: &str,
    next: Option<NextStep>,
) -> (Operation, Delivery) {
    let op = add_operation(s, m, ext).await;
    let d = report(s, &op, Status::Success, at(1)).await;
    if let Some(next) = next {
        claim(s, "n1", at(1), 10).await;
        let status = if next == NextStep::Delivered { 200 } else { 500 };
        record(s, &d, status, next, at(2)).await;
    }
    (op, d)
}

pub async fn history_goes_after_its_window_and_nothing_pending_does(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let (delivered, d1) = reported(s, &m, "delivered", Some(NextStep::Delivered)).await;
    let (exhausted, d2) = reported(s, &m, "exhausted", Some(NextStep::Exhausted)).await;
    let (in_flight, d3) = reported(s, &m, "in-flight", None).await;
    claim(s, "n1", at(1), 10).await;
    let (waiting, d4) = reported(s, &m, "waiting", None).await;

    let young = purge(s, PurgeTarget::History { before: at(2) }).await;
    // The four registrations at T0 owe no delivery; the deliveries ended at 2 ms, not before.
    assert_eq!(young, PurgedRows { events: 4, ..PurgedRows::default() });
    assert!(delivery_exists(s, &d1).await && delivery_exists(s, &d2).await);

    let rows = purge(s, PurgeTarget::History { before: at(10) }).await;
    // The two success events whose deliveries ended, with those deliveries.
    let expect = PurgedRows { events: 2, deliveries: 2, attempts: 2, ..PurgedRows::default() };
    assert_eq!(rows, expect);
    for (op, d) in [(&delivered, &d1), (&exhausted, &d2)] {
        assert!(!delivery_exists(s, d).await);
        assert!(s.operation_events(&op.id).await.expect("events").is_empty());
        let kept = s.get_operation(&op.id).await.expect("read").expect("the operation is kept");
        assert_eq!(kept.status, Status::Success, "its current status is kept");
    }
    for (op, d) in [(&in_flight, &d3), (&waiting, &d4)] {
        assert!(delivery_exists(s, d).await, "pending or leased: never purged");
        let seqs: Vec<i64> =
            s.operation_events(&op.id).await.expect("events").iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![d.seq], "the event a pending delivery owes stays");
    }
    assert_eq!(purge(s, PurgeTarget::History { before: at(10) }).await, PurgedRows::default());
}

async fn delivery_exists(s: &dyn Store, d: &Delivery) -> bool {
    s.get_delivery(&d.id).await.expect("read").is_some()
}

pub async fn the_feed_refuses_a_cursor_into_purged_history(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let other = add_merchant(s, "https://other.example/cb").await;
    for i in 0..3 {
        reported(s, &m, &format!("old-{i}"), Some(NextStep::Delivered)).await;
    }
    let (young, _) = reported(s, &m, "young", None).await;
    add_operation(s, &other, "theirs").await;
    let before: Vec<i64> =
        s.events(&m.id, 0, 100).await.expect("feed").iter().map(|e| e.position).collect();
    assert_eq!(before.len(), 8);

    purge(s, PurgeTarget::History { before: at(10) }).await;
    let kept = s.events(&m.id, 0, 100).await.expect("after=0 reads from the oldest kept");
    assert_eq!(
        kept.iter().map(|e| (e.operation_id.clone(), e.seq)).collect::<Vec<_>>(),
        vec![(young.id.clone(), 1)]
    );
    let purged_through = before[6];
    match s.events(&m.id, before[0], 100).await {
        Err(StoreError::CursorExpired { purged_through: p, oldest_kept }) => {
            assert_eq!((p, oldest_kept), (purged_through, Some(kept[0].position)));
        }
        other => panic!("expected CursorExpired, got {other:?}"),
    }
    let from_horizon = s.events(&m.id, purged_through, 100).await.expect("at the horizon");
    assert_eq!(from_horizon.len(), 1);
    let theirs = s.events(&other.id, 0, 100).await.expect("another merchant's feed");
    assert!(theirs.is_empty(), "its registration at T0 was purged too");
}

pub async fn operations_go_with_all_they_have_once_final_and_quiet(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let (done, _) = reported(s, &m, "done", Some(NextStep::Delivered)).await;
    let (owed, _) = reported(s, &m, "owed", None).await;
    let open = add_operation(s, &m, "open").await;
    let d = report(s, &open, Status::Pending, at(1)).await;
    claim(s, "n1", at(1), 10).await;
    record(s, &d, 200, NextStep::Delivered, at(2)).await;
    let watched = add_watched_operation(s, &m, "watched").await;

    let rows = purge(s, PurgeTarget::Operations { before: at(10) }).await;
    let expect = PurgedRows {
        operations: 1,
        events: 2,
        deliveries: 1,
        attempts: 1,
        ..PurgedRows::default()
    };
    assert_eq!(rows, expect);
    assert!(s.get_operation(&done.id).await.expect("read").is_none());
    for kept in [&owed, &open, &watched] {
        assert!(s.get_operation(&kept.id).await.expect("read").is_some(), "{}", kept.external_id);
    }
    let again = s.register_operation(new_operation(&m, "done"), at(20)).await.expect("register");
    assert!(matches!(again, Registered::Created(_)), "a purged external id is new again");
}

pub async fn old_polls_go_and_the_watch_stays(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_watched_operation(s, &m, "watched").await;
    for (n, t) in [(1, 5_000), (2, 15_000)] {
        let claim = PollClaim { node: "n1", now: at(t), lease: LEASE, limit: 1 };
        assert_eq!(s.claim_polls(&claim).await.expect("claim").len(), 1);
        let next = if n == 1 { PollNext::At(at(15_000)) } else { PollNext::Finished };
        s.record_poll(&poll(&op, n, at(t)), next, at(t + 5)).await.expect("record poll");
    }
    let rows = purge(s, PurgeTarget::Polls { before: at(10_000) }).await;
    assert_eq!(rows, PurgedRows { polls: 1, ..PurgedRows::default() });
    let (watch, polls) = s.watch_of(&op.id).await.expect("read").expect("the watch stays");
    assert_eq!((watch.polls, polls.iter().map(|p| p.number).collect::<Vec<_>>()), (2, vec![2]));
}
