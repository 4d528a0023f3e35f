//! Claiming due deliveries: order, leases, per-host limits, supersede at claim time, and
//! concurrent claimers.

use crate::fixtures::*;
use payhook_core::model::DeliveryState;
use payhook_core::status::Status;
use payhook_store::{destination_host, NextStep, Store};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub async fn claims_oldest_due_first(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let mut due = Vec::new();
    for (i, t) in [(1, 30), (2, 10), (3, 20)] {
        let op = add_operation(s, &m, &format!("order-{i}")).await;
        due.push((t, report(s, &op, Status::Pending, at(t)).await));
    }
    assert!(claim(s, "n1", at(5), 10).await.is_empty(), "nothing is due yet");
    let first = claim(s, "n1", at(100), 2).await;
    assert_eq!(ids(&first), vec![due[1].1.id.to_string(), due[2].1.id.to_string()]);
    let c = &first[0];
    assert_eq!((c.event.id.clone(), c.merchant.id.clone()), (due[1].1.event_id.clone(), m.id));
    assert_eq!(c.event.seq, 1);
    assert_eq!(ids(&claim(s, "n1", at(100), 2).await), vec![due[0].1.id.to_string()]);
}

pub async fn older_in_flight_blocks_newer(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d1 = report(s, &op, Status::Pending, at(1)).await;
    claim(s, "n1", at(1), 10).await;
    let d2 = report(s, &op, Status::Requires3ds, at(2)).await;
    assert!(claim(s, "n2", at(3), 10).await.is_empty());

    // A retry of the older one turns it superseded (a newer one exists) and frees the newer.
    let state = record(s, &d1, 500, NextStep::RetryAt(at(1_000)), at(4)).await;
    assert_eq!(state, DeliveryState::Superseded);
    assert_eq!(ids(&claim(s, "n2", at(5), 10).await), vec![d2.id.to_string()]);
}

pub async fn expired_lease_is_reclaimable(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Pending, at(1)).await;
    assert_eq!(claim(s, "dead-node", at(1), 10).await.len(), 1);
    let lease_ms = LEASE.as_millis() as i64;
    assert!(claim(s, "n2", at(lease_ms), 10).await.is_empty(), "the lease still holds");
    let again = claim(s, "n2", at(1 + lease_ms), 10).await;
    assert_eq!(ids(&again), vec![d.id.to_string()]);
    assert_eq!(again[0].delivery.attempts, 0, "the dead node recorded nothing");
}

pub async fn per_host_limit_is_respected(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    for i in 0..5 {
        let op = add_operation(s, &m, &format!("order-{i}")).await;
        report(s, &op, Status::Pending, at(i)).await;
    }
    let host = destination_host("https://shop.example/cb");
    assert_eq!(claim_with(s, "n1", at(10), 10, 2, &HashMap::new()).await.len(), 2);
    let one_busy = HashMap::from([(host.clone(), 1)]);
    assert_eq!(claim_with(s, "n2", at(10), 10, 2, &one_busy).await.len(), 1);
    let full = HashMap::from([(host, 2)]);
    assert!(claim_with(s, "n3", at(10), 10, 2, &full).await.is_empty());
    assert_eq!(claim(s, "n4", at(10), 10).await.len(), 2, "the rest is still there");
}

pub async fn busy_hosts_are_excluded(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let slow = add_merchant(s, "https://slow.example/cb").await;
    let fast = add_merchant(s, "http://fast.example:8080/cb").await;
    for i in 0..3 {
        let op = add_operation(s, &slow, &format!("slow-{i}")).await;
        report(s, &op, Status::Pending, at(i)).await;
    }
    let op = add_operation(s, &fast, "fast-1").await;
    let quick = report(s, &op, Status::Pending, at(5)).await;
    let busy = HashMap::from([(destination_host("https://slow.example/cb"), 4)]);
    let got = claim_with(s, "n1", at(10), 1, 4, &busy).await;
    assert_eq!(ids(&got), vec![quick.id.to_string()], "the slow host waits, the fast one goes");
}

pub async fn superseded_at_claim_when_newer_exists(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d1 = report(s, &op, Status::Pending, at(1)).await;
    claim(s, "n1", at(1), 10).await;
    let d2 = report(s, &op, Status::Success, at(2)).await;
    // n1 died: its lease expires with d1 still pending, older than d2.
    let later = at(2 + LEASE.as_millis() as i64);
    assert_eq!(ids(&claim(s, "n2", later, 10).await), vec![d2.id.to_string()]);
    assert_eq!(delivery(s, &d1).await.state, DeliveryState::Superseded);
}

pub async fn concurrent_claims_never_share_a_delivery(store: Arc<dyn Store>) {
    let m = add_merchant(store.as_ref(), "https://shop.example/cb").await;
    let total = 60;
    for i in 0..total {
        let op = add_operation(store.as_ref(), &m, &format!("order-{i}")).await;
        report(store.as_ref(), &op, Status::Pending, at(i)).await;
    }
    let claimers: Vec<_> = (0..12)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..3 {
                    got.extend(ids(&claim(store.as_ref(), &format!("n{n}"), at(100), 4).await));
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await.expect("claimer task") {
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    let rest = claim(store.as_ref(), "last", at(100), total as usize).await;
    for id in ids(&rest) {
        assert!(seen.insert(id.clone()), "{id} was claimed twice");
    }
    assert_eq!(seen.len(), total as usize, "every delivery was claimed exactly once");
}

pub async fn next_due_at_follows_the_queue(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(s.next_due_at().await.expect("next due"), None);
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Pending, at(7)).await;
    assert_eq!(s.next_due_at().await.expect("next due"), Some(at(7)));
    claim(s, "n1", at(7), 1).await;
    record(s, &d, 503, NextStep::RetryAt(at(5_000)), at(8)).await;
    assert_eq!(s.next_due_at().await.expect("next due"), Some(at(5_000)));
    claim(s, "n1", at(5_000), 1).await;
    record(s, &delivery(s, &d).await, 200, NextStep::Delivered, at(5_001)).await;
    assert_eq!(s.next_due_at().await.expect("next due"), None);
}

pub async fn released_leases_are_claimable_again(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let d = report(s, &op, Status::Pending, at(1)).await;
    claim(s, "node-a", at(1), 1).await;
    assert!(claim(s, "node-a", at(2), 1).await.is_empty());
    assert_eq!(s.release_leases("node-a").await.expect("release"), 1);
    assert_eq!(ids(&claim(s, "node-a", at(2), 1).await), vec![d.id.to_string()]);
}

pub async fn a_paused_merchants_deliveries_wait_until_it_is_resumed(store: Arc<dyn Store>) {
    use payhook_core::model::MerchantState;
    let s = store.as_ref();
    let paused = add_merchant(s, "https://paused.example/cb").await;
    let other = add_merchant(s, "https://other.example/cb").await;
    s.set_merchant_state(&paused.id, MerchantState::Paused, &audit(&paused.id, at(0)))
        .await
        .expect("pause");
    let held = report(s, &add_operation(s, &paused, "held").await, Status::Success, at(1)).await;
    assert_eq!(s.next_due_at().await.expect("next due"), None, "nothing is due while paused");
    let free = report(s, &add_operation(s, &other, "free").await, Status::Success, at(2)).await;
    assert_eq!(ids(&claim(s, "n1", at(5), 10).await), [free.id.to_string()]);

    let mut renamed = s.get_merchant(&paused.id).await.expect("read").expect("exists");
    assert_eq!(renamed.state, MerchantState::Paused);
    renamed.state = MerchantState::Active;
    renamed.name = "Renamed".into();
    s.update_merchant(&renamed, false).await.expect("update");
    let read = s.get_merchant(&paused.id).await.expect("read").expect("exists");
    assert_eq!(
        (read.name.as_str(), read.state),
        ("Renamed", MerchantState::Paused),
        "a settings change keeps the state"
    );
    assert!(claim(s, "n1", at(6), 10).await.is_empty());

    s.set_merchant_state(&paused.id, MerchantState::Active, &audit(&paused.id, at(7)))
        .await
        .expect("resume");
    assert_eq!(s.next_due_at().await.expect("next due"), Some(at(1)));
    assert_eq!(ids(&claim(s, "n1", at(8), 10).await), [held.id.to_string()], "no budget was spent");
    assert_eq!(delivery(s, &held).await.attempts, 0);
    let missing = "mer_missing".parse().expect("id");
    let gone = s.set_merchant_state(&missing, MerchantState::Paused, &audit(&missing, at(9))).await;
    assert!(matches!(gone, Err(payhook_store::StoreError::NotFound)), "{gone:?}");
}
