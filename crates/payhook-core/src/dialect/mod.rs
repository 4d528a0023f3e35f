//! Dialects: what goes on the wire for each callback protocol, and how its answers are read.
//!
//! Each dialect is a pure pair: [`Dialect::render`] turns an event into an [`Outgoing`] request,
//! [`Dialect::classify`] turns the merchant's [`Reply`] into a [`Verdict`]. [`Dialect::destination`]
//! says whether an event produces a callback at all, and where to.

pub mod ecom;
mod standard;
mod uapay;
pub mod ws2mpi;
mod xpay;

use crate::ids::DeliveryId;
use crate::model::{Event, Merchant, Operation};
use crate::retry::RetryPolicy;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use crate::model::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Standard Webhooks 1.0, the default.
    Standard,
    /// XPAY success/fail redirect-style callbacks: `GET` with `state` and `xrayOperationID`.
    Xpay,
    /// Ukrcard WS2MPI callback service: minimal JSON, acknowledged in the response body.
    Ws2mpi,
    /// Bank Alliance ECOM `notificationUrl` callbacks, optionally JWE-encrypted.
    Ecom,
    /// UAPAY callbacks: `{"token": <HS256 JWS>}`.
    Uapay,
}

impl Dialect {
    pub const ALL: [Dialect; 5] =
        [Dialect::Standard, Dialect::Xpay, Dialect::Ws2mpi, Dialect::Ecom, Dialect::Uapay];

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Standard => "standard",
            Dialect::Xpay => "xpay",
            Dialect::Ws2mpi => "ws2mpi",
            Dialect::Ecom => "ecom",
            Dialect::Uapay => "uapay",
        }
    }

    /// Where this event's callback goes, or `None` when the dialect sends nothing for the
    /// operation's (new) status or no URL is configured.
    pub fn destination(self, merchant: &Merchant, op: &Operation) -> Option<String> {
        match self {
            Dialect::Standard => standard::destination(merchant, op),
            Dialect::Xpay => xpay::destination(merchant, op),
            Dialect::Ws2mpi => ws2mpi::destination(merchant, op),
            Dialect::Ecom => ecom::destination(merchant, op),
            Dialect::Uapay => uapay::destination(merchant, op),
        }
    }

    /// The request for one attempt. Called anew for every attempt (timestamps, fresh tokens).
    pub fn render(self, input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
        match self {
            Dialect::Standard => standard::render(input),
            Dialect::Xpay => xpay::render(input),
            Dialect::Ws2mpi => ws2mpi::render(input),
            Dialect::Ecom => ecom::render(input),
            Dialect::Uapay => uapay::render(input),
        }
    }

    /// The callback that tells the merchant the re-poll watchdog gave up (`DeliveryKind::
    /// PollTimeout`). Only ws2mpi defines one (`respStatus` 408); other dialects send nothing.
    pub fn render_poll_timeout(self, input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
        match self {
            Dialect::Ws2mpi => Ok(ws2mpi::render_timeout(input)),
            other => Err(RenderError::Invalid(format!("{other} has no poll-timeout callback"))),
        }
    }

    /// Where the poll-timeout callback goes, or `None` when the dialect sends none.
    pub fn poll_timeout_destination(self, merchant: &Merchant, op: &Operation) -> Option<String> {
        match self {
            Dialect::Ws2mpi => callback_url(merchant, op),
            _ => None,
        }
    }

    /// Reads the merchant's answer.
    pub fn classify(self, reply: &Reply<'_>) -> Verdict {
        match self {
            Dialect::Standard | Dialect::Xpay => classify_2xx(reply),
            Dialect::Ws2mpi => ws2mpi::classify(reply),
            Dialect::Ecom | Dialect::Uapay => classify_exactly_200(reply),
        }
    }

    /// The protocol's own retry schedule.
    pub fn default_policy(self) -> RetryPolicy {
        match self {
            Dialect::Standard => standard::default_policy(),
            Dialect::Xpay => xpay::default_policy(),
            Dialect::Ws2mpi => ws2mpi::default_policy(),
            Dialect::Ecom => ecom::default_policy(),
            Dialect::Uapay => uapay::default_policy(),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dialect {0:?}")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, UnknownDialect> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDialect(s.to_owned()))
    }
}

/// The dialect an operation's callbacks use.
pub fn effective_dialect(merchant: &Merchant, op: &Operation) -> Dialect {
    op.callback.dialect.unwrap_or(merchant.dialect)
}

/// The retry policy of a new delivery: the operation's, else the merchant's, else the dialect's.
pub fn effective_policy(merchant: &Merchant, op: &Operation, dialect: Dialect) -> RetryPolicy {
    op.callback
        .retry
        .clone()
        .or_else(|| merchant.retry.clone())
        .unwrap_or_else(|| dialect.default_policy())
}

/// Everything needed to build one attempt's request.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub delivery_id: &'a DeliveryId,
    pub url: &'a str,
    pub event: &'a Event,
    pub merchant: &'a Merchant,
    /// The time of this attempt.
    pub now: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One outgoing HTTP request, fully built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the merchant has no encryption key")]
    MissingKey,
    #[error("cannot build the callback: {0}")]
    Invalid(String),
}

/// The merchant's answer, as the classifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub status: u16,
    /// The body of the request this answers, as sent: WS2MPI's acknowledgement must echo the
    /// `orderNumber` we sent, and the classifier stays pure by reading it from here.
    pub request_body: &'a [u8],
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<&'a str>,
    pub body: &'a [u8],
    /// The time the answer arrived, to read HTTP-date `Retry-After` values.
    pub now: Timestamp,
}

/// What an answer means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again per the policy, or after `retry_after` when the merchant asked for it.
    Retry {
        kind: ErrorKind,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// `410 Gone`: the destination is disabled; no more attempts.
    Gone,
    /// Give up now.
    Permanent {
        kind: ErrorKind,
        detail: String,
    },
}

/// `Retry-After` is honoured within these bounds.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` (delta-seconds or an HTTP date) and clamps it.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
            .ok()?;
        let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
        Timestamp(at_ms).since(now)
    };
    Some(wait.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX))
}

fn status_failure(reply: &Reply<'_>) -> Verdict {
    let retry_after = match reply.status {
        429 | 503 => reply.retry_after.and_then(|v| parse_retry_after(v, reply.now)),
        _ => None,
    };
    Verdict::Retry {
        kind: ErrorKind::HttpStatus,
        detail: format!("HTTP {}", reply.status),
        retry_after,
    }
}

/// Any 2xx delivers; 410 disables; everything else (3xx included: redirects are never
/// followed) is retried, honouring `Retry-After` on 429 and 503.
pub fn classify_2xx(reply: &Reply<'_>) -> Verdict {
    match reply.status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        _ => status_failure(reply),
    }
}

/// Only `200` delivers (ECOM, UAPAY); 410 disables; the rest is retried.
pub fn classify_exactly_200(reply: &Reply<'_>) -> Verdict {
    match reply.status {
        200 => Verdict::Delivered,
        410 => Verdict::Gone,
        _ => status_failure(reply),
    }
}

/// The operation's own callback URL, else the merchant's: where the dialects that POST to one
/// fixed URL (ws2mpi, ecom, uapay) send.
fn callback_url(merchant: &Merchant, op: &Operation) -> Option<String> {
    op.callback.callback_url.clone().or_else(|| merchant.callback_url.clone())
}

/// Serializes a body. `serde_json` keeps map keys in insertion order (`preserve_order`), which
/// is what lets the dialects reproduce the providers' field order.
fn json_bytes(value: &serde_json::Value) -> Result<Vec<u8>, RenderError> {
    serde_json::to_vec(value).map_err(|e| RenderError::Invalid(e.to_string()))
}

/// Whether a `success` is only an amount held (two-phase payment), as the payment core says
/// with `data.two_phase: true`.
fn is_two_phase(op: &Operation) -> bool {
    op.data.get("two_phase").and_then(serde_json::Value::as_bool) == Some(true)
}

/// Copies the provider fields `keys` that `data` carries into `out`, in the order of `keys`.
fn copy_from_data(
    out: &mut serde_json::Map<String, serde_json::Value>,
    data: &serde_json::Map<String, serde_json::Value>,
    keys: &[&str],
) {
    for key in keys {
        if let Some(value) = data.get(*key) {
            out.insert((*key).to_owned(), value.clone());
        }
    }
}

/// A status the dialect has no callback for reached `render`: `destination` should have
/// stopped it, so this is a caller bug reported as a render error rather than a panic.
fn unmapped(dialect: Dialect, status: crate::status::Status) -> RenderError {
    RenderError::Invalid(format!("{dialect} sends no callback for status {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, retry_after: Option<&str>) -> Reply<'_> {
        Reply {
            status,
            retry_after,
            request_body: b"",
            body: b"",
            now: Timestamp(1_700_000_000_000),
        }
    }

    #[test]
    fn classify_2xx_table() {
        assert_eq!(classify_2xx(&reply(200, None)), Verdict::Delivered);
        assert_eq!(classify_2xx(&reply(204, None)), Verdict::Delivered);
        assert_eq!(classify_2xx(&reply(410, None)), Verdict::Gone);
        for status in [301, 302, 400, 404, 500] {
            assert!(
                matches!(
                    classify_2xx(&reply(status, None)),
                    Verdict::Retry { retry_after: None, .. }
                ),
                "{status} retries"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_clamped() {
        let wait = |s, ra| match classify_2xx(&reply(s, Some(ra))) {
            Verdict::Retry { retry_after, .. } => retry_after,
            other => panic!("expected retry, got {other:?}"),
        };
        assert_eq!(wait(429, "7"), Some(Duration::from_secs(7)));
        assert_eq!(wait(503, "0"), Some(RETRY_AFTER_MIN));
        assert_eq!(wait(503, "999999"), Some(RETRY_AFTER_MAX));
        assert_eq!(wait(500, "7"), None);
        assert_eq!(wait(429, "soon"), None);
        // 2023-11-14T22:13:20Z is now; one minute later:
        assert_eq!(wait(429, "Tue, 14 Nov 2023 22:14:20 GMT"), Some(Duration::from_secs(60)));
    }

    #[test]
    fn dialect_names_round_trip() {
        for d in Dialect::ALL {
            assert_eq!(d.as_str().parse::<Dialect>(), Ok(d));
            let json = serde_json::to_string(&d).expect("serializes");
            assert_eq!(json, format!("\"{d}\""));
            assert_eq!(serde_json::from_str::<Dialect>(&json).expect("parses"), d);
        }
        assert!("alb".parse::<Dialect>().is_err());
    }

    #[test]
    fn exactly_200() {
        assert_eq!(classify_exactly_200(&reply(200, None)), Verdict::Delivered);
        assert!(matches!(classify_exactly_200(&reply(201, None)), Verdict::Retry { .. }));
        assert!(matches!(classify_exactly_200(&reply(204, None)), Verdict::Retry { .. }));
    }
}
