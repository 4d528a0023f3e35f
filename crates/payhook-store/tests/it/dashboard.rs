//! What the dashboard and `/metrics` read: operations by cursor, an operation's events,
//! per-merchant delivery stats and the pending backlog.

use crate::fixtures::*;
use payhook_core::status::Status;
use payhook_store::{NextStep, PendingSummary, Store};
use std::sync::Arc;

fn externals(ops: &[payhook_core::model::Operation]) -> Vec<&str> {
    ops.iter().map(|o| o.external_id.as_str()).collect()
}

pub async fn operations_are_listed_by_cursor(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (a, b) = (
        add_merchant(s, "https://a.example/cb").await,
        add_merchant(s, "https://b.example/cb").await,
    );
    for (m, id) in [(&a, "a-1"), (&b, "b-1"), (&a, "a-2"), (&a, "a-3")] {
        add_operation(s, m, id).await;
    }
    let first = s.list_operations(None, 0, 2).await.expect("list");
    assert_eq!(externals(&first), ["a-1", "b-1"]);
    let rest = s.list_operations(None, first[1].number, 10).await.expect("list");
    assert_eq!(externals(&rest), ["a-2", "a-3"]);
    let only_a = s.list_operations(Some(&a.id), 0, 10).await.expect("list");
    assert_eq!(externals(&only_a), ["a-1", "a-2", "a-3"]);
    let after = s.list_operations(Some(&a.id), only_a[1].number, 10).await.expect("list");
    assert_eq!(externals(&after), ["a-3"]);
    let none = s.list_operations(Some(&b.id), only_a[2].number, 10).await.expect("list");
    assert!(none.is_empty());
}

pub async fn operation_events_in_seq_order(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let other = add_operation(s, &m, "order-2").await;
    report(s, &op, Status::Pending, at(1)).await;
    report(s, &other, Status::Pending, at(2)).await;
    report(s, &op, Status::Success, at(3)).await;
    let events = s.operation_events(&op.id).await.expect("events");
    let seen: Vec<_> = events.iter().map(|e| (e.seq, e.status)).collect();
    assert_eq!(seen, [(0, Status::Created), (1, Status::Pending), (2, Status::Success)]);
    assert!(events.iter().all(|e| e.operation_id == op.id));
}

pub async fn delivery_stats_count_states_per_merchant(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let busy = add_merchant(s, "https://busy.example/cb").await;
    let idle = add_merchant(s, "https://idle.example/cb").await;
    let (o1, o2, o3) = (
        add_operation(s, &busy, "o-1").await,
        add_operation(s, &busy, "o-2").await,
        add_operation(s, &busy, "o-3").await,
    );
    let d1 = report(s, &o1, Status::Success, at(1)).await;
    let d2 = report(s, &o2, Status::Success, at(2)).await;
    report(s, &o3, Status::Pending, at(3)).await; // superseded by the next report
    report(s, &o3, Status::Success, at(4)).await; // pending since at(4)
    claim(s, "n1", at(10), 10).await;
    record(s, &d1, 200, NextStep::Delivered, at(11)).await;
    record(s, &d2, 500, NextStep::Exhausted, at(12)).await;

    let stats = s.delivery_stats().await.expect("stats");
    let ids: Vec<_> = stats.iter().map(|r| r.merchant_id.clone()).collect();
    assert_eq!(ids, [busy.id.clone(), idle.id.clone()], "every merchant, in creation order");
    let b = &stats[0];
    assert_eq!(b.merchant_name, "Test shop");
    assert_eq!((b.delivered, b.exhausted, b.cancelled, b.superseded), (1, 1, 0, 1));
    assert_eq!((b.pending, b.oldest_pending_at), (1, Some(at(4))));
    assert_eq!(b.success_rate(), Some(0.5));
    let i = &stats[1];
    assert_eq!((i.delivered, i.pending, i.oldest_pending_at, i.success_rate()), (0, 0, None, None));
}

pub async fn pending_backlog_counts_and_finds_the_oldest(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(s.pending_deliveries().await.expect("backlog"), PendingSummary::default());
    let m = add_merchant(s, "https://shop.example/cb").await;
    let (o1, o2) = (add_operation(s, &m, "o-1").await, add_operation(s, &m, "o-2").await);
    let d1 = report(s, &o1, Status::Success, at(5)).await;
    report(s, &o2, Status::Success, at(7)).await;
    let backlog = s.pending_deliveries().await.expect("backlog");
    assert_eq!(backlog, PendingSummary { count: 2, oldest_created_at: Some(at(5)) });
    claim(s, "n1", at(10), 10).await;
    record(s, &d1, 200, NextStep::Delivered, at(11)).await;
    let backlog = s.pending_deliveries().await.expect("backlog");
    assert_eq!(backlog, PendingSummary { count: 1, oldest_created_at: Some(at(7)) });
}
