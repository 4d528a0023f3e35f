//! Hand-off (both stores): a delivery due at once is leased to this node's dispatcher in the
//! transaction that creates it, and given to it after the commit; anything that must wait is
//! left for a claim exactly as before.

use crate::fixtures::*;
use payhook_core::status::Status;
use payhook_store::{Claimed, Handoff, Slot, Store};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A dispatcher stand-in: `capacity` slots, and the deliveries it was handed.
pub struct Fake {
    capacity: usize,
    pub taken: Arc<AtomicUsize>,
    reserves: AtomicUsize,
    handed: Mutex<Vec<(Claimed, Slot)>>,
}

impl Fake {
    pub fn new(capacity: usize) -> Arc<Fake> {
        Arc::new(Fake {
            capacity,
            taken: Arc::new(AtomicUsize::new(0)),
            reserves: AtomicUsize::new(0),
            handed: Mutex::new(Vec::new()),
        })
    }

    pub fn install(self: &Arc<Self>, store: &Arc<dyn Store>) {
        let handoff: Arc<dyn Handoff> = self.clone();
        store.set_handoff(Arc::downgrade(&handoff));
    }

    pub fn handed_ids(&self) -> Vec<String> {
        let handed = self.handed.lock().expect("handed");
        handed.iter().map(|(c, _)| c.delivery.id.to_string()).collect()
    }
}

impl Handoff for Fake {
    fn node(&self) -> &str {
        "n1"
    }
    fn lease(&self) -> Duration {
        LEASE
    }
    fn reserve(&self, _host: &str) -> Option<Slot> {
        self.reserves.fetch_add(1, Ordering::SeqCst);
        if self.taken.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.taken.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let taken = self.taken.clone();
        Some(Slot::new(move || {
            taken.fetch_sub(1, Ordering::SeqCst);
        }))
    }
    fn deliver(&self, claimed: Claimed, slot: Slot) {
        self.handed.lock().expect("handed").push((claimed, slot));
    }
}

pub async fn a_due_delivery_is_handed_over_leased(store: Arc<dyn Store>) {
    let fake = Fake::new(10);
    fake.install(&store);
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let reported =
        s.report_status(status_report(&op, Status::Success), at(1)).await.expect("reported");
    assert!(reported.handed_off);
    let d = reported.delivery.expect("a delivery");
    assert_eq!(fake.handed_ids(), vec![d.id.to_string()]);
    {
        let handed = fake.handed.lock().expect("handed");
        let c = &handed[0].0;
        assert_eq!((c.event.seq, c.event.status), (1, Status::Success));
        assert_eq!(c.merchant.id, m.id);
        assert_eq!(c.event.operation.status, Status::Success);
        assert_eq!(c.event.position, reported.event.position);
        assert!(c.event.position > 0, "handed over with its feed position");
    }
    assert_eq!(fake.taken.load(Ordering::SeqCst), 1, "the slot travels with the delivery");
    // Leased in the file: no claim takes it while the lease holds, one does after.
    assert!(claim(s, "n2", at(2), 10).await.is_empty(), "a handed-off delivery is leased");
    let lease_ms = LEASE.as_millis() as i64;
    assert_eq!(ids(&claim(s, "n2", at(2 + lease_ms), 10).await), vec![d.id.to_string()]);
    fake.handed.lock().expect("handed").clear();
    assert_eq!(fake.taken.load(Ordering::SeqCst), 0, "dropping the hand-off gives the slot back");
}

pub async fn without_a_free_slot_the_delivery_is_left_for_a_claim(store: Arc<dyn Store>) {
    let fake = Fake::new(2);
    fake.install(&store);
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let mut reports = Vec::new();
    for i in 0..5 {
        let op = add_operation(s, &m, &format!("order-{i}")).await;
        reports.push(status_report(&op, Status::Success));
    }
    let outcomes = s.report_statuses(reports, at(1)).await.expect("batch stored");
    let flags: Vec<bool> =
        outcomes.iter().map(|o| o.as_ref().expect("item accepted").handed_off).collect();
    assert_eq!(flags, vec![true, true, false, false, false]);
    assert_eq!(fake.handed_ids().len(), 2);
    let left = claim(s, "n1", at(2), 10).await;
    let expected: Vec<String> = outcomes[2..]
        .iter()
        .map(|o| o.as_ref().expect("ok").delivery.as_ref().expect("delivery").id.to_string())
        .collect();
    assert_eq!(ids(&left), expected, "the three without a slot are claimable");
}

pub async fn a_newer_event_waits_for_the_older_in_flight(store: Arc<dyn Store>) {
    let fake = Fake::new(10);
    fake.install(&store);
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let first = s.report_status(status_report(&op, Status::Pending), at(1)).await.expect("ok");
    assert!(first.handed_off);
    let reserves = fake.reserves.load(Ordering::SeqCst);
    let second =
        s.report_status(status_report(&op, Status::Success), at(2)).await.expect("reported");
    assert!(!second.handed_off, "the older delivery is in flight: order comes first");
    // SQLite does not even ask for a slot; PostgreSQL learns of the older delivery in the
    // statement that inserts the newer one, so it may ask and give the slot back.
    assert!(fake.reserves.load(Ordering::SeqCst) <= reserves + 1);
    assert_eq!(fake.taken.load(Ordering::SeqCst), 1, "only the first holds a slot");
    assert_eq!(fake.handed_ids().len(), 1);
}

pub async fn nothing_is_handed_over_once_the_dispatcher_is_gone(store: Arc<dyn Store>) {
    let fake = Fake::new(10);
    fake.install(&store);
    drop(fake); // the store holds only a weak reference
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-1").await;
    let reported = s.report_status(status_report(&op, Status::Success), at(1)).await.expect("ok");
    assert!(!reported.handed_off);
    assert_eq!(claim(s, "n1", at(2), 10).await.len(), 1);
}

/// Reports stored together (concurrent single reports share a group commit on PostgreSQL)
/// are each handed over once, with the event as stored: its feed position is the one the
/// merchant's feed shows.
pub async fn grouped_reports_are_handed_over_with_their_feed_positions(store: Arc<dyn Store>) {
    let fake = Fake::new(100);
    fake.install(&store);
    let m = add_merchant(store.as_ref(), "https://shop.example/cb").await;
    let ops = add_operations(store.as_ref(), &m, 20).await;
    let mut reports = tokio::task::JoinSet::new();
    for op in &ops {
        let store = store.clone();
        let report = status_report(op, Status::Success);
        reports.spawn(async move { store.report_status(report, at(1)).await });
    }
    let mut delivered = Vec::new();
    while let Some(r) = reports.join_next().await {
        let reported = r.expect("task").expect("reported");
        assert!(reported.handed_off);
        delivered.push(reported.delivery.expect("a delivery").id.to_string());
    }
    let mut handed = fake.handed_ids();
    handed.sort();
    delivered.sort();
    assert_eq!(handed, delivered, "each delivery handed over once");
    let feed = store.events(&m.id, 0, 100).await.expect("feed");
    let handed = fake.handed.lock().expect("handed");
    for (c, _) in handed.iter() {
        let stored = feed.iter().find(|e| e.id == c.event.id).expect("in the feed");
        assert_eq!(c.event.position, stored.position);
    }
}

pub async fn a_paused_merchants_delivery_is_not_handed_over(store: Arc<dyn Store>) {
    let fake = Fake::new(10);
    fake.install(&store);
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    s.set_merchant_state(&m.id, payhook_core::model::MerchantState::Paused, &audit(&m.id, at(0)))
        .await
        .expect("pause");
    let op = add_operation(s, &m, "order-1").await;
    let reported =
        s.report_status(status_report(&op, Status::Success), at(1)).await.expect("reported");
    assert!(!reported.handed_off && fake.handed_ids().is_empty(), "held back while paused");
    assert!(reported.delivery.is_some(), "the delivery is stored, waiting");
}
