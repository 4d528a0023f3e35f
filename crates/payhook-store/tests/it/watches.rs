//! The re-poll watchdog's records: watches started at registration, claimed with leases,
//! moved on by polls, finished by final statuses, and the ws2mpi poll-timeout callback.

use crate::fixtures::*;
use payhook_core::dialect::Dialect;
use payhook_core::model::{DeliveryKind, DeliveryState, WatchState};
use payhook_core::status::Status;
use payhook_store::{ClaimedWatch, PollClaim, PollNext, Store};
use std::collections::HashSet;
use std::sync::Arc;

async fn claim_polls(s: &dyn Store, node: &str, now: i64, limit: usize) -> Vec<ClaimedWatch> {
    let claim = PollClaim { node, now: at(now), lease: LEASE, limit };
    s.claim_polls(&claim).await.expect("claim polls")
}

fn watched(claimed: &[ClaimedWatch]) -> Vec<String> {
    claimed.iter().map(|c| c.watch.operation_id.to_string()).collect()
}

pub async fn registration_starts_a_watch(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    assert_eq!(s.next_poll_at().await.expect("next poll"), None);
    let op = add_watched_operation(s, &m, "order-1").await;
    let (w, polls) = s.watch_of(&op.id).await.expect("watch").expect("a watch exists");
    assert_eq!((w.state, w.polls, w.next_poll_at), (WatchState::Active, 0, Some(at(5_000))));
    assert_eq!((w.merchant_id.clone(), w.created_at), (m.id.clone(), T0));
    assert_eq!(w.source.url, "https://psp.example/status");
    assert!(polls.is_empty());
    assert_eq!(s.next_poll_at().await.expect("next poll"), Some(at(5_000)));

    let plain = add_operation(s, &m, "order-2").await;
    assert!(s.watch_of(&plain.id).await.expect("watch").is_none(), "no source, no watch");
}

pub async fn due_watches_are_leased(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let a = add_watched_operation(s, &m, "a").await;
    let b = add_watched_operation(s, &m, "b").await;
    assert!(claim_polls(s, "n1", 4_999, 10).await.is_empty(), "not due yet");
    let first = claim_polls(s, "n1", 5_000, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].operation.id, first[0].watch.operation_id);
    let second = claim_polls(s, "n2", 5_000, 10).await;
    let both: HashSet<String> = watched(&first).into_iter().chain(watched(&second)).collect();
    assert_eq!(both, HashSet::from([a.id.to_string(), b.id.to_string()]));
    assert!(claim_polls(s, "n3", 5_001, 10).await.is_empty(), "both are leased");
    let expired = 5_000 + LEASE.as_millis() as i64;
    assert_eq!(claim_polls(s, "n3", expired, 10).await.len(), 2, "leases expire");
}

pub async fn polls_move_the_watch_on(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_watched_operation(s, &m, "order-1").await;
    claim_polls(s, "n1", 5_000, 1).await;
    let first = poll(&op, 1, at(5_000));
    s.record_poll(&first, PollNext::At(at(15_000)), at(5_010)).await.expect("record poll");
    let (w, polls) = s.watch_of(&op.id).await.expect("watch").expect("exists");
    assert_eq!((w.state, w.polls, w.next_poll_at), (WatchState::Active, 1, Some(at(15_000))));
    assert_eq!(polls, vec![first]);
    assert!(claim_polls(s, "n1", 14_999, 1).await.is_empty());
    assert_eq!(claim_polls(s, "n2", 15_000, 1).await.len(), 1, "the lease was released");

    s.record_poll(&poll(&op, 2, at(15_000)), PollNext::Finished, at(15_010)).await.expect("rec");
    let (w, polls) = s.watch_of(&op.id).await.expect("watch").expect("exists");
    assert_eq!((w.state, w.polls, w.next_poll_at), (WatchState::Finished, 2, None));
    assert_eq!(polls.len(), 2);
    assert_eq!(s.next_poll_at().await.expect("next poll"), None);
}

pub async fn a_final_status_finishes_the_watch(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_watched_operation(s, &m, "order-1").await;
    claim_polls(s, "n1", 5_000, 1).await;
    report(s, &op, Status::Pending, at(5_001)).await;
    let (w, _) = s.watch_of(&op.id).await.expect("watch").expect("exists");
    assert_eq!(w.state, WatchState::Active, "pending is not final");
    report(s, &op, Status::Success, at(5_002)).await;

    // The poll that was in flight when the status arrived is logged; the watch stays finished.
    let late = poll(&op, 1, at(5_000));
    s.record_poll(&late, PollNext::At(at(15_000)), at(5_010)).await.expect("record poll");
    let (w, polls) = s.watch_of(&op.id).await.expect("watch").expect("exists");
    assert_eq!((w.state, w.next_poll_at), (WatchState::Finished, None));
    assert_eq!(polls, vec![late]);
}

pub async fn an_exhausted_ws2mpi_watch_sends_a_poll_timeout(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut m = merchant("https://shop.example/ws2mpi");
    m.dialect = Dialect::Ws2mpi;
    s.create_merchant(&m, &payhook_store::NewApiKey::minted("key-ws2mpi", "pk_", m.created_at))
        .await
        .expect("create merchant");
    let op = add_watched_operation(s, &m, "order-1").await;
    claim_polls(s, "n1", 5_000, 1).await;
    s.record_poll(&poll(&op, 1, at(5_000)), PollNext::Exhausted, at(5_010)).await.expect("rec");

    let (w, _) = s.watch_of(&op.id).await.expect("watch").expect("exists");
    assert_eq!((w.state, w.next_poll_at), (WatchState::Exhausted, None));
    let deliveries = s.deliveries_of(&op.id).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let d = &deliveries[0].0;
    assert_eq!((d.kind, d.state, d.seq), (DeliveryKind::PollTimeout, DeliveryState::Pending, 0));
    assert_eq!(d.url, "https://shop.example/ws2mpi");
    let created = &s.events(&m.id, 0, 10).await.expect("events")[0];
    assert_eq!(d.event_id, created.id, "it rides on the latest event");
    let claimed = claim(s, "n1", at(5_010), 10).await;
    assert_eq!(claimed[0].delivery.kind, DeliveryKind::PollTimeout, "and is dispatched");

    // A standard-dialect operation has no such callback.
    let std = add_merchant(s, "https://std.example/cb").await;
    let quiet = add_watched_operation(s, &std, "order-2").await;
    claim_polls(s, "n1", 5_000, 10).await;
    s.record_poll(&poll(&quiet, 1, at(5_000)), PollNext::Exhausted, at(5_010)).await.expect("r");
    assert!(s.deliveries_of(&quiet.id).await.expect("deliveries").is_empty());
}

pub async fn concurrent_poll_claims_never_share_a_watch(store: Arc<dyn Store>) {
    let m = add_merchant(store.as_ref(), "https://shop.example/cb").await;
    for i in 0..30 {
        add_watched_operation(store.as_ref(), &m, &format!("order-{i}")).await;
    }
    let claimers: Vec<_> = (0..10)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let got = claim_polls(store.as_ref(), &format!("n{n}"), 5_000, 4).await;
                watched(&got)
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await.expect("claimer task") {
            assert!(seen.insert(id.clone()), "watch of {id} was claimed twice");
        }
    }
    for id in watched(&claim_polls(store.as_ref(), "last", 5_000, 100).await) {
        assert!(seen.insert(id.clone()), "watch of {id} was claimed twice");
    }
    assert_eq!(seen.len(), 30);
}
