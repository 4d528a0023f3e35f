//! Builders for the records the cases store: merchants, operations, reports, claims and
//! attempts, in one line each.

use payhook_core::dialect::Dialect;
use payhook_core::ids::MerchantId;
use payhook_core::model::{
    Attempt, AttemptOutcome, Delivery, ErrorKind, Merchant, Operation, Poll, PollOutcome,
};
use payhook_core::retry::RetryPolicy;
use payhook_core::signing::SigningSecret;
use payhook_core::status::Status;
use payhook_core::Timestamp;
use payhook_store::{
    mint_id, ClaimRequest, Claimed, NewOperation, NextStep, Registered, Reported, StatusReport,
    Store,
};
use std::collections::HashMap;
use std::time::Duration;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);
pub const LEASE: Duration = Duration::from_secs(30);

pub fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

/// A standard-dialect merchant with its callbacks going to `url`.
pub fn merchant(url: &str) -> Merchant {
    Merchant {
        retry: Some(RetryPolicy::every(Duration::from_secs(1), 3)),
        ..Merchant::new(
            mint_id(MerchantId::PREFIX).parse().expect("minted ids parse"),
            "Test shop",
            Dialect::Standard,
            Some(url.into()),
            SigningSecret::from_key(&[7u8; 32]),
            T0,
        )
    }
}

/// Stores a merchant (API key hash `key-<id>`) calling back to `url`.
pub async fn add_merchant(store: &dyn Store, url: &str) -> Merchant {
    let m = merchant(url);
    store
        .create_merchant(
            &m,
            &payhook_store::NewApiKey::minted(&format!("key-{}", m.id), "pk_", m.created_at),
        )
        .await
        .expect("create merchant");
    m
}

pub fn new_operation(m: &Merchant, external_id: &str) -> NewOperation {
    NewOperation {
        merchant_id: m.id.clone(),
        external_id: external_id.into(),
        amount: 10_000,
        currency: "UAH".into(),
        kind: "purchase".into(),
        callback: Default::default(),
        data: Default::default(),
        request_hash: format!("hash-{external_id}"),
    }
}

/// Registers a new operation for `m`.
pub async fn add_operation(store: &dyn Store, m: &Merchant, external_id: &str) -> Operation {
    match store.register_operation(new_operation(m, external_id), T0).await {
        Ok(Registered::Created(op)) => op,
        other => panic!("expected a new operation, got {other:?}"),
    }
}

/// Registers `n` new operations for `m` (`order-0`, `order-1`, …).
pub async fn add_operations(store: &dyn Store, m: &Merchant, n: usize) -> Vec<Operation> {
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        ops.push(add_operation(store, m, &format!("order-{i}")).await);
    }
    ops
}

pub fn status_report(op: &Operation, status: Status) -> StatusReport {
    StatusReport { operation_id: op.id.clone(), status, data: Default::default(), event_key: None }
}

/// Reports `status` at `now`, expecting it to be accepted with a delivery.
pub async fn report(store: &dyn Store, op: &Operation, status: Status, now: Timestamp) -> Delivery {
    let reported: Reported =
        store.report_status(status_report(op, status), now).await.expect("report accepted");
    reported.delivery.expect("the standard dialect plans a delivery")
}

/// Claims for `node` at `now` with no per-host pressure.
pub async fn claim(store: &dyn Store, node: &str, now: Timestamp, limit: usize) -> Vec<Claimed> {
    claim_with(store, node, now, limit, 100, &HashMap::new()).await
}

pub async fn claim_with(
    store: &dyn Store,
    node: &str,
    now: Timestamp,
    limit: usize,
    per_host_limit: usize,
    in_flight: &HashMap<String, usize>,
) -> Vec<Claimed> {
    let req = ClaimRequest { node, now, lease: LEASE, limit, in_flight, per_host_limit };
    store.claim_due(&req).await.expect("claim")
}

pub fn ids(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.delivery.id.to_string()).collect()
}

/// The attempt that follows `d`'s last one, answered with `status`.
pub fn attempt(d: &Delivery, now: Timestamp, status: u16) -> Attempt {
    let ok = (200..300).contains(&status);
    Attempt {
        delivery_id: d.id.clone(),
        number: d.attempts + 1,
        started_at: now,
        duration_ms: 12,
        request: format!("POST {}", d.url),
        response_status: Some(status),
        response_body: Some(if ok { "ok" } else { "try later" }.into()),
        outcome: if ok { AttemptOutcome::Delivered } else { AttemptOutcome::Retry },
        error_kind: (!ok).then_some(ErrorKind::HttpStatus),
        error: (!ok).then(|| format!("HTTP {status}")),
    }
}

/// Records an attempt of `d` with the given next step; returns the delivery's new state.
pub async fn record(
    store: &dyn Store,
    d: &Delivery,
    status: u16,
    next: NextStep,
    now: Timestamp,
) -> payhook_core::model::DeliveryState {
    let change = store.record_attempt(&attempt(d, now, status), next, now).await;
    change.expect("record attempt").state
}

pub async fn delivery(store: &dyn Store, d: &Delivery) -> Delivery {
    store.get_delivery(&d.id).await.expect("get delivery").expect("delivery exists")
}

/// A status source polled 5 s and then 10 s after registration (a budget of two polls).
pub fn status_source() -> serde_json::Value {
    serde_json::json!({"url": "https://psp.example/status", "schedule": ["5s", "10s"]})
}

/// Registers an operation watched through [`status_source`].
pub async fn add_watched_operation(
    store: &dyn Store,
    m: &Merchant,
    external_id: &str,
) -> Operation {
    let mut new = new_operation(m, external_id);
    new.callback.status_source = Some(status_source());
    match store.register_operation(new, T0).await {
        Ok(Registered::Created(op)) => op,
        other => panic!("expected a new operation, got {other:?}"),
    }
}

/// Poll number `number` of `op`, which read nothing usable.
pub fn poll(op: &Operation, number: u32, now: Timestamp) -> Poll {
    Poll {
        operation_id: op.id.clone(),
        number,
        started_at: now,
        duration_ms: 7,
        request: "GET https://psp.example/status".into(),
        response_status: Some(200),
        response_body: Some("{\"orderStatus\":\"0\"}".into()),
        read: Some("0".into()),
        mapped: None,
        outcome: PollOutcome::Failed,
        error_kind: Some(ErrorKind::Unmapped),
        error: Some("0 is not in the status map".into()),
    }
}

/// An admin's audit entry about merchant `m` at `now` (the action matters only to tests of
/// the audit log, which build their own).
pub fn audit(m: &MerchantId, now: Timestamp) -> payhook_store::AuditEntry {
    payhook_store::AuditEntry {
        at: now,
        actor: payhook_store::Actor::Admin,
        action: payhook_core::model::AuditAction::MerchantPaused,
        merchant: m.clone(),
        detail: serde_json::json!({}),
    }
}
