//! Response shapes. Times leave as RFC 3339 strings; secrets never leave here.

use payhook_core::dialect::effective_dialect;
use payhook_core::model::{ApiKey, Attempt, Delivery, Event, Merchant, Operation, Poll, Watch};
use payhook_core::status::Status;
use payhook_core::Timestamp;
use serde::Serialize;
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
        "state": m.state.as_str(),
        "created_at": time(m.created_at),
        "updated_at": time(m.updated_at),
    })
}

/// One of a merchant's API keys: never the key itself.
pub fn api_key(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "prefix": k.prefix,
        "created_at": time(k.created_at),
        "last_used_at": k.last_used_at.map(time),
    })
}

/// An entry of the audit log.
pub fn audit_record(r: &payhook_store::AuditRecord) -> Value {
    let e = &r.entry;
    json!({
        "position": r.position,
        "at": time(e.at),
        "actor": e.actor.as_str(),
        "action": e.action.as_str(),
        "merchant_id": e.merchant,
        "detail": e.detail,
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

/// `body` as a JSON response with `status`.
pub fn json<T: Serialize>(
    status: axum::http::StatusCode,
    body: &T,
) -> Result<axum::response::Response, crate::error::ApiError> {
    use axum::response::IntoResponse;
    let bytes = serde_json::to_vec(body).map_err(crate::error::ApiError::internal)?;
    let json = axum::http::HeaderValue::from_static("application/json");
    Ok((status, [(axum::http::header::CONTENT_TYPE, json)], bytes).into_response())
}

/// A status report's answer: the event's view (the keys of [`event`], in its order), then
/// whether it was a duplicate and the delivery it planned. Typed and borrowed: status reports
/// are the hot path, and a `Value` tree costs an allocation per key.
#[derive(Serialize)]
pub struct Reported<'a> {
    id: &'a str,
    position: i64,
    operation_id: &'a str,
    merchant_id: &'a str,
    seq: i64,
    status: Status,
    previous_status: Status,
    event_key: Option<&'a str>,
    created_at: String,
    duplicate: bool,
    delivery_id: Option<&'a str>,
}

impl<'a> Reported<'a> {
    pub fn of(r: &'a payhook_store::Reported) -> Self {
        let e = &r.event;
        Reported {
            id: e.id.as_str(),
            position: e.position,
            operation_id: e.operation_id.as_str(),
            merchant_id: e.merchant_id.as_str(),
            seq: e.seq,
            status: e.status,
            previous_status: e.previous_status,
            event_key: e.event_key.as_deref(),
            created_at: time(e.created_at),
            duplicate: r.duplicate,
            delivery_id: r.delivery.as_ref().map(|d| d.id.as_str()),
        }
    }
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

/// An answer that shows a secret once (a new merchant's API key and signing secret, a rotated
/// secret): `Cache-Control: no-store`, so no cache between the caller and payhook keeps it.
/// Every answer that shows a secret goes through this.
pub struct ShownOnce<T>(pub T);

impl<T: axum::response::IntoResponse> axum::response::IntoResponse for ShownOnce<T> {
    fn into_response(self) -> axum::response::Response {
        let mut response = self.0.into_response();
        let no_store = axum::http::HeaderValue::from_static("no-store");
        response.headers_mut().insert(axum::http::header::CACHE_CONTROL, no_store);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(event_key: Option<&str>, planned: bool) -> payhook_store::Reported {
        let op = json!({
            "id": "op_1", "number": 1, "merchant_id": "mer_1", "external_id": "x-1",
            "amount": 100, "currency": "UAH", "kind": "purchase", "status": "success", "seq": 1,
            "data": {}, "created_at": 1_700_000_000_000_i64, "updated_at": 1_700_000_000_500_i64,
        });
        let event = json!({
            "id": "evt_1", "position": 7, "operation_id": "op_1", "merchant_id": "mer_1",
            "seq": 1, "status": "success", "previous_status": "created", "event_key": event_key,
            "created_at": 1_700_000_000_500_i64, "operation": op,
        });
        let delivery = json!({
            "id": "dlv_1", "event_id": "evt_1", "operation_id": "op_1", "merchant_id": "mer_1",
            "seq": 1, "dialect": "standard", "url": "http://127.0.0.1/cb", "state": "pending",
            "attempts": 0, "series_attempts": 0, "next_attempt_at": null,
            "policy": {"schedule": ["5s"], "jitter": 0.0},
            "created_at": 1_700_000_000_500_i64, "updated_at": 1_700_000_000_500_i64,
        });
        payhook_store::Reported {
            event: std::sync::Arc::new(serde_json::from_value(event).expect("event")),
            duplicate: event_key.is_some(),
            delivery: planned.then(|| serde_json::from_value(delivery).expect("delivery")),
            handed_off: false,
        }
    }

    /// The typed answer writes what the event view plus two keys wrote, byte for byte.
    #[test]
    fn a_report_answer_is_the_event_view_with_duplicate_and_delivery_id() {
        for (key, delivery) in [(None, true), (Some("k-1"), false)] {
            let r = reported(key, delivery);
            let mut expected = event(&r.event);
            expected["duplicate"] = json!(r.duplicate);
            expected["delivery_id"] = json!(r.delivery.as_ref().map(|d| &d.id));
            let typed = serde_json::to_string(&Reported::of(&r)).expect("serialize");
            assert_eq!(typed, expected.to_string());
        }
    }
}
