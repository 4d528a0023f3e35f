//! `xpay`: XPAY's SuccessCallback / FailedCallback (seed 000) — a bare `GET` with `state` and
//! `xrayOperationID` in the query, sent only for final outcomes.

use super::{Method, Outgoing, RenderError, RenderInput};
use crate::model::{Merchant, Operation};
use crate::retry::RetryPolicy;
use crate::status::Status;
use std::time::Duration;
use url::form_urlencoded;
use url::Url;

/// XPAY's `state` for a successfully completed operation.
const STATE_SUCCESS: u32 = 10;
/// XPAY's `state` for a failed operation.
const STATE_FAILED: u32 = 21;

/// The `state` for a status, `None` where XPAY sends nothing (only final outcomes are sent;
/// reversals and refunds have no XPAY callback).
fn state(status: Status) -> Option<u32> {
    match status {
        Status::Success => Some(STATE_SUCCESS),
        Status::Failed | Status::Expired => Some(STATE_FAILED),
        _ => None,
    }
}

/// `success_url` for a success, `fail_url` for a failure or expiry; either falls back to the
/// callback URL (the operation's, else the merchant's) so a merchant with one URL still hears.
/// The query parameters are added by [`render`], so allowlists and the SSRF guard see the
/// merchant's URL as configured.
pub(super) fn destination(merchant: &Merchant, op: &Operation) -> Option<String> {
    let own = match state(op.status)? {
        STATE_SUCCESS => op.callback.success_url.clone(),
        _ => op.callback.fail_url.clone(),
    };
    own.or_else(|| super::callback_url(merchant, op))
}

/// Three retries 20 s apart, then every 10 minutes while the next one still falls within 24 h of
/// the first attempt: 3 + 143 = 146 retries (147 attempts), the last at 23 h 51 min. No jitter,
/// so the merchant sees XPAY's own cadence.
pub(super) fn default_policy() -> RetryPolicy {
    let mut delays = vec![Duration::from_secs(20); 3];
    delays.extend(vec![Duration::from_secs(600); 143]);
    RetryPolicy::fixed(delays)
}

pub(super) fn render(input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
    let status = input.event.status;
    let state = state(status).ok_or_else(|| super::unmapped(super::Dialect::Xpay, status))?;
    let number = input.event.operation.number.to_string();
    let url =
        with_params(input.url, &[("state", &state.to_string()), ("xrayOperationID", &number)])?;
    Ok(Outgoing { method: Method::Get, url, headers: Vec::new(), body: Vec::new() })
}

/// `url` with `params` appended, URL-encoded. Existing parameters are kept byte for byte, except
/// those with the name of one of `params`, which are replaced.
fn with_params(url: &str, params: &[(&str, &str)]) -> Result<String, RenderError> {
    let mut parsed = Url::parse(url).map_err(|e| RenderError::Invalid(format!("{url}: {e}")))?;
    let mut pieces: Vec<String> = parsed
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|piece| !piece.is_empty() && !names_one_of(piece, params))
        .map(str::to_owned)
        .collect();
    let mut added = form_urlencoded::Serializer::new(String::new());
    added.extend_pairs(params);
    pieces.push(added.finish());
    parsed.set_query(Some(&pieces.join("&")));
    Ok(parsed.into())
}

/// Whether the raw query piece `name=value` carries one of the names in `params`.
fn names_one_of(piece: &str, params: &[(&str, &str)]) -> bool {
    let raw_name = piece.split('=').next().unwrap_or(piece);
    let name: String =
        form_urlencoded::parse(raw_name.as_bytes()).map(|(k, _)| k.into_owned()).collect();
    params.iter().any(|(p, _)| *p == name)
}

#[cfg(test)]
mod tests {
    use crate::dialect::{Dialect, RenderInput, Reply, Verdict};
    use crate::fixtures::{event, merchant, operation, T0};
    use crate::ids::DeliveryId;
    use crate::model::Operation;
    use crate::status::Status;

    /// Renders the callback of `op` (no destination: `None`) and returns its URL.
    fn url_for(op: Operation) -> Option<String> {
        let m = merchant(Dialect::Xpay);
        let url = Dialect::Xpay.destination(&m, &op)?;
        let ev = event(op, Status::Pending);
        let id = DeliveryId::from_suffix("x");
        let input = RenderInput { delivery_id: &id, url: &url, event: &ev, merchant: &m, now: T0 };
        let out = Dialect::Xpay.render(&input).expect("renders");
        assert_eq!(out.method.as_str(), "GET");
        assert!(out.body.is_empty() && out.headers.is_empty(), "bare GET, no signature");
        Some(out.url)
    }

    fn op_with(status: Status, success_url: &str, fail_url: &str) -> Operation {
        let mut op = operation(status);
        op.callback.success_url = Some(success_url.into());
        op.callback.fail_url = Some(fail_url.into());
        op
    }

    fn check(status: Status, success_url: &str, fail_url: &str, expect: Option<&str>) {
        let got = url_for(op_with(status, success_url, fail_url));
        assert_eq!(got.as_deref(), expect, "{status}: {success_url} | {fail_url}");
    }

    #[test]
    fn seed_000_urls() {
        let (ok, fail) = ("https://partner.host/cb_success", "https://partner.host/cb_fail");
        let seed_ok = "https://partner.host/cb_success?state=10&xrayOperationID=245786";
        let seed_fail = "https://partner.host/cb_fail?state=21&xrayOperationID=245786";
        check(Status::Success, ok, fail, Some(seed_ok));
        check(Status::Failed, ok, fail, Some(seed_fail));
        check(Status::Expired, ok, fail, Some(seed_fail));
    }

    #[test]
    fn only_final_outcomes_call_back() {
        let (ok, fail) = ("https://partner.host/cb_success", "https://partner.host/cb_fail");
        for status in [
            Status::Created,
            Status::Pending,
            Status::Requires3ds,
            Status::Reversed,
            Status::Refunded,
        ] {
            check(status, ok, fail, None);
        }
    }

    #[test]
    fn query_parameters_are_kept_and_same_names_replaced() {
        let fail = "https://p.host/f";
        for (success_url, expect) in [
            (
                "https://p.host/ok?shop=7&lang=uk",
                "https://p.host/ok?shop=7&lang=uk&state=10&xrayOperationID=245786",
            ),
            (
                "https://p.host/ok?state=99&a=b%20c&xrayOperationID=1",
                "https://p.host/ok?a=b%20c&state=10&xrayOperationID=245786",
            ),
            ("https://p.host/ok?", "https://p.host/ok?state=10&xrayOperationID=245786"),
            (
                "https://p.host/ok?x=1#frag",
                "https://p.host/ok?x=1&state=10&xrayOperationID=245786#frag",
            ),
        ] {
            check(Status::Success, success_url, fail, Some(expect));
        }
    }

    #[test]
    fn rendering_twice_does_not_duplicate_parameters() {
        let op = op_with(Status::Success, "https://p.host/ok?state=10&xrayOperationID=245786", "");
        let expect = "https://p.host/ok?state=10&xrayOperationID=245786";
        assert_eq!(url_for(op).as_deref(), Some(expect));
    }

    #[test]
    fn falls_back_to_the_callback_url() {
        let op = operation(Status::Failed);
        let expect = "https://merchant.example/cb?state=21&xrayOperationID=245786";
        assert_eq!(url_for(op).as_deref(), Some(expect));
    }

    #[test]
    fn any_2xx_acknowledges() {
        let reply =
            |status| Reply { status, retry_after: None, request_body: b"", body: b"", now: T0 };
        assert_eq!(Dialect::Xpay.classify(&reply(200)), Verdict::Delivered);
        assert_eq!(Dialect::Xpay.classify(&reply(204)), Verdict::Delivered);
        assert!(matches!(Dialect::Xpay.classify(&reply(302)), Verdict::Retry { .. }));
        assert!(matches!(Dialect::Xpay.classify(&reply(500)), Verdict::Retry { .. }));
    }

    #[test]
    fn default_policy_stays_within_24_hours() {
        let p = Dialect::Xpay.default_policy();
        let secs: Vec<u64> = p.delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(&secs[..4], [20, 20, 20, 600]);
        assert_eq!(p.max_attempts(), 147);
        let total: u64 = secs.iter().sum();
        assert!(total <= 24 * 3600 && total + 600 > 24 * 3600, "last retry at {total} s");
        assert_eq!(p.jitter, 0.0);
    }
}
