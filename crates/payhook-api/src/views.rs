//! Response shapes. Times leave as RFC 3339 strings; secrets never leave here.

use payhook_core::dialect::effective_dialect;
use payhook_core::model::{Attempt, Delivery, Event, Merchant, Operation, Poll, Watch};
use payhook_core::Timestamp;
use serde_json::{json, Value};

fn time(t: Timestamp) -> String {
    t.rfc3339_millis()
}

/// A merchant without its secrets.
pub fn merchant(m: &Merchant) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "dialect": m.dialect,
        "callback_url": m.callback_url,
        "allowed_callback_urls": m.allowed_callback_urls,
        "retry": m.retry,
        "has_encryption_key": m.encryption_key.is_some(),
        "settings": m.settings,
        "secret_rotation_ends_at": m.previous_secret.as_ref().map(|(_, exp)| time(*exp)),
        "created_at": time(m.created_at),
        "updated_at": time(m.updated_at),
    })
}

/// An operation; `merchant` (when known) fills in the effective dialect.
pub fn operation(op: &Operation, merchant: Option<&Merchant>) -> Value {
    let dialect = merchant.map(|m| effective_dialect(m, op)).or(op.callback.dialect);
    json!({
        "id": op.id,
        "number": op.number,
        "merchant_id": op.merchant_id,
        "external_id": op.external_id,
        "amount": op.amount,
        "currency": op.currency,
        "kind": op.kind,
        "status": op.status,
        "seq": op.seq,
        "dialect": dialect,
        "callback_url": op.callback.callback_url,
        "success_url": op.callback.success_url,
        "fail_url": op.callback.fail_url,
        "return_url": op.callback.return_url,
        "encrypt": op.callback.encrypt,
        "status_source": op.callback.status_source,
        "retry": op.callback.retry,
        "data": op.data,
        "created_at": time(op.created_at),
        "updated_at": time(op.updated_at),
    })
}

pub fn event(e: &Event) -> Value {
    json!({
        "id": e.id,
        "position": e.position,
        "operation_id": e.operation_id,
        "merchant_id": e.merchant_id,
        "seq": e.seq,
        "status": e.status,
        "previous_status": e.previous_status,
        "event_key": e.event_key,
        "created_at": time(e.created_at),
    })
}

pub fn attempt(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "started_at": time(a.started_at),
        "duration_ms": a.duration_ms,
        "request": a.request,
        "response_status": a.response_status,
        "response_body": a.response_body,
        "outcome": a.outcome,
        "error_kind": a.error_kind,
        "error": a.error,
    })
}

pub fn delivery(d: &Delivery, attempts: Option<&[Attempt]>) -> Value {
    let mut v = json!({
        "id": d.id,
        "event_id": d.event_id,
        "operation_id": d.operation_id,
        "merchant_id": d.merchant_id,
        "seq": d.seq,
        "dialect": d.dialect,
        "kind": d.kind,
        "url": d.url,
        "state": d.state,
        "attempt_count": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(time),
        "last_error": d.last_error,
        "created_at": time(d.created_at),
        "updated_at": time(d.updated_at),
    });
    if let Some(list) = attempts {
        v["attempts"] = list.iter().map(attempt).collect();
    }
    v
}

pub fn poll(p: &Poll) -> Value {
    json!({
        "number": p.number,
        "started_at": time(p.started_at),
        "duration_ms": p.duration_ms,
        "request": p.request,
        "response_status": p.response_status,
        "response_body": p.response_body,
        "read": p.read,
        "mapped_status": p.mapped,
        "outcome": p.outcome,
        "error_kind": p.error_kind,
        "error": p.error,
    })
}

pub fn watch(w: &Watch, polls: &[Poll]) -> Value {
    json!({
        "operation_id": w.operation_id,
        "state": w.state,
        "polls_made": w.polls,
        "poll_budget": w.source.schedule.len(),
        "next_poll_at": w.next_poll_at.map(time),
        "source": w.source.to_json(),
        "data": polls.iter().map(poll).collect::<Vec<_>>(),
    })
}
