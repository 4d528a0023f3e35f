//! `ws2mpi`: Ukrcard WS2MPI's callback status re-poll service (seed 001) — a four-field JSON POST,
//! acknowledged only by `{"orderNumber":<same>,"applicationStatus":200}` in an HTTP 200 answer.

use super::{ErrorKind, Method, Outgoing, RenderError, RenderInput, Reply, Verdict};
use crate::model::{Merchant, Operation};
use crate::retry::RetryPolicy;
use crate::status::Status;
use serde_json::{json, Value};
use std::time::Duration;

/// The most characters of an `orderNumber` (the operation's `external_id`): the seed types it
/// ANS 1..32. The API refuses longer ids for ws2mpi operations at registration.
pub const MAX_ORDER_NUMBER: usize = 32;

/// `respStatus` of a callback that carries an order status.
const RESP_OK: u16 = 200;
/// `respStatus` when the re-poll budget was spent without a final status.
const RESP_TIMEOUT: u16 = 408;

/// Ukrcard's `orderStatus` for a canonical status; `None` where WS2MPI sends nothing (it calls
/// back only once the outcome is final).
fn order_status(status: Status, op: &Operation) -> Option<u8> {
    match status {
        Status::Success if super::is_two_phase(op) => Some(1),
        Status::Success => Some(2),
        Status::Failed | Status::Expired => Some(6),
        Status::Reversed => Some(3),
        Status::Refunded => Some(4),
        Status::Created | Status::Pending | Status::Requires3ds => None,
    }
}

/// The operation's callback URL, else the merchant's (WS2MPI configures one per client system),
/// for final statuses only.
pub(super) fn destination(merchant: &Merchant, op: &Operation) -> Option<String> {
    order_status(op.status, op)?;
    super::callback_url(merchant, op)
}

/// h = 30 000 ms, k = 40 requests in all (39 retries): the 20-minute life of a WS2MPI request.
/// No jitter: the seed describes a fixed cadence.
pub(super) fn default_policy() -> RetryPolicy {
    RetryPolicy::every(Duration::from_secs(30), 39)
}

pub(super) fn render(input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
    let op = &input.event.operation;
    let status = input.event.status;
    let order_status =
        order_status(status, op).ok_or_else(|| super::unmapped(super::Dialect::Ws2mpi, status))?;
    let body = json!({
        "orderNumber": op.external_id,
        "respStatus": RESP_OK,
        "orderStatus": order_status,
        "orderId": op.id,
    });
    Ok(post(input.url, super::json_bytes(&body)?))
}

/// The body of the callback sent when the re-poll watchdog spent its budget without a final
/// status: `respStatus` 408 and, as the seed requires for a non-200 `respStatus`, no
/// `orderStatus`. For the dispatcher's watchdog.
pub fn timeout_body(external_id: &str, op_id: &str) -> Vec<u8> {
    let body = json!({"orderNumber": external_id, "respStatus": RESP_TIMEOUT, "orderId": op_id});
    serde_json::to_vec(&body).expect("a JSON object of strings and a number serializes")
}

/// The poll-timeout callback for one operation.
pub(super) fn render_timeout(input: &RenderInput<'_>) -> Outgoing {
    let op = &input.event.operation;
    post(input.url, timeout_body(&op.external_id, op.id.as_str()))
}

/// A WS2MPI callback request: JSON, no signature (the seed defines none).
fn post(url: &str, body: Vec<u8>) -> Outgoing {
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    Outgoing { method: Method::Post, url: url.to_owned(), headers, body }
}

/// Delivered only on HTTP 200 whose JSON body has `applicationStatus` 200 and the `orderNumber`
/// we sent. Everything else is repeated on the fixed cadence — including 410 and 429/503 with
/// `Retry-After`, because the seed knows no other answer than "repeat every h ms".
pub(super) fn classify(reply: &Reply<'_>) -> Verdict {
    if reply.status != 200 {
        return retry(ErrorKind::HttpStatus, format!("HTTP {}", reply.status));
    }
    match check_ack(reply.request_body, reply.body) {
        Ok(()) => Verdict::Delivered,
        Err(why) => retry(ErrorKind::AckRejected, why),
    }
}

fn retry(kind: ErrorKind, detail: String) -> Verdict {
    Verdict::Retry { kind, detail, retry_after: None }
}

/// Checks the acknowledgement body against the request we sent; `Err` says what was wrong.
fn check_ack(request: &[u8], answer: &[u8]) -> Result<(), String> {
    let sent: Value = serde_json::from_slice(request).map_err(|_| "request body is not JSON")?;
    let sent = sent.get("orderNumber").and_then(as_text).ok_or("request has no orderNumber")?;
    let ack: Value = serde_json::from_slice(answer).map_err(|_| "answer is not JSON")?;
    let status = ack.get("applicationStatus").and_then(as_text);
    if status.as_deref() != Some("200") {
        return Err(format!("applicationStatus is {}", shown(ack.get("applicationStatus"))));
    }
    let number = ack.get("orderNumber").and_then(as_text);
    if number.as_deref() != Some(sent.as_str()) {
        return Err(format!("orderNumber is {}, sent {sent:?}", shown(ack.get("orderNumber"))));
    }
    Ok(())
}

/// A JSON string or number as text: `200` and `"200"` are the same answer (WS2MPI's Java
/// stack reads either), so a merchant is not retried 40 times over a quoting difference.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "missing".to_owned(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::timeout_body;
    use crate::dialect::{Dialect, ErrorKind, RenderInput, Reply, Verdict};
    use crate::fixtures::{event, merchant, operation, T0};
    use crate::ids::DeliveryId;
    use crate::model::Operation;
    use crate::status::Status;
    use serde_json::json;

    /// The seed's request body: exactly these keys, in this order, with these JSON types.
    const SEED_KEYS: [&str; 4] = ["orderNumber", "respStatus", "orderStatus", "orderId"];

    fn render(op: Operation) -> Vec<u8> {
        let m = merchant(Dialect::Ws2mpi);
        let url = Dialect::Ws2mpi.destination(&m, &op).expect("final status calls back");
        let ev = event(op, Status::Pending);
        let id = DeliveryId::from_suffix("w");
        let input = RenderInput { delivery_id: &id, url: &url, event: &ev, merchant: &m, now: T0 };
        let out = Dialect::Ws2mpi.render(&input).expect("renders");
        assert_eq!(out.method.as_str(), "POST");
        assert_eq!(out.url, "https://merchant.example/cb");
        assert_eq!(out.headers, [("content-type".to_owned(), "application/json".to_owned())]);
        out.body
    }

    fn check_body(op: Operation, order_status: u8) {
        let body = render(op);
        let expect = format!(
            r#"{{"orderNumber":"order-1","respStatus":200,"orderStatus":{order_status},"orderId":"op_0f91bb90"}}"#
        );
        assert_eq!(String::from_utf8(body.clone()).expect("utf-8"), expect);
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&body).expect("json object");
        assert_eq!(parsed.keys().map(String::as_str).collect::<Vec<_>>(), SEED_KEYS);
        assert!(parsed["orderNumber"].is_string() && parsed["orderId"].is_string());
        assert!(parsed["respStatus"].is_u64() && parsed["orderStatus"].is_u64());
    }

    #[test]
    fn seed_001_body_per_status() {
        check_body(operation(Status::Success), 2);
        check_body(operation(Status::Failed), 6);
        check_body(operation(Status::Expired), 6);
        check_body(operation(Status::Reversed), 3);
        check_body(operation(Status::Refunded), 4);
        let mut held = operation(Status::Success);
        held.data.insert("two_phase".into(), json!(true));
        check_body(held, 1);
    }

    #[test]
    fn no_callback_before_the_outcome_is_final() {
        let m = merchant(Dialect::Ws2mpi);
        for status in [Status::Created, Status::Pending, Status::Requires3ds] {
            assert_eq!(Dialect::Ws2mpi.destination(&m, &operation(status)), None, "{status}");
        }
    }

    #[test]
    fn operation_url_overrides_the_merchant_url() {
        let m = merchant(Dialect::Ws2mpi);
        let mut op = operation(Status::Success);
        op.callback.callback_url = Some("https://other.example/cb".into());
        let dest = Dialect::Ws2mpi.destination(&m, &op);
        assert_eq!(dest.as_deref(), Some("https://other.example/cb"));
    }

    #[test]
    fn timeout_body_has_no_order_status() {
        let body = String::from_utf8(timeout_body("order-1", "op_1")).expect("utf-8");
        assert_eq!(body, r#"{"orderNumber":"order-1","respStatus":408,"orderId":"op_1"}"#);
    }

    const SENT: &[u8] =
        br#"{"orderNumber":"order-1","respStatus":200,"orderStatus":2,"orderId":"op_1"}"#;

    fn classify(status: u16, body: &str) -> Verdict {
        let reply =
            Reply { status, retry_after: None, request_body: SENT, body: body.as_bytes(), now: T0 };
        Dialect::Ws2mpi.classify(&reply)
    }

    fn check_rejected(status: u16, body: &str, kind: ErrorKind) {
        match classify(status, body) {
            Verdict::Retry { kind: got, retry_after: None, .. } => assert_eq!(got, kind, "{body}"),
            other => panic!("{status} {body}: expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn acknowledgement_accepted() {
        for ack in [
            r#"{"orderNumber":"order-1","applicationStatus":200}"#,
            r#"{"applicationStatus":"200","orderNumber":"order-1","extra":true}"#,
        ] {
            assert_eq!(classify(200, ack), Verdict::Delivered, "{ack}");
        }
    }

    #[test]
    fn anything_else_is_repeated() {
        use ErrorKind::{AckRejected, HttpStatus};
        check_rejected(200, r#"{"orderNumber":"order-1","applicationStatus":500}"#, AckRejected);
        check_rejected(200, r#"{"orderNumber":"order-2","applicationStatus":200}"#, AckRejected);
        check_rejected(200, r#"{"applicationStatus":200}"#, AckRejected);
        check_rejected(200, r#"{"orderNumber":"order-1"}"#, AckRejected);
        check_rejected(200, "OK", AckRejected);
        check_rejected(200, "", AckRejected);
        let ack = r#"{"orderNumber":"order-1","applicationStatus":200}"#;
        check_rejected(500, ack, HttpStatus);
        check_rejected(201, ack, HttpStatus);
        check_rejected(410, ack, HttpStatus);
    }

    #[test]
    fn default_policy_is_40_requests_30_s_apart() {
        let p = Dialect::Ws2mpi.default_policy();
        assert_eq!(p.max_attempts(), 40);
        assert!(p.delays.iter().all(|d| d.as_millis() == 30_000));
        assert_eq!(p.jitter, 0.0);
    }
}
