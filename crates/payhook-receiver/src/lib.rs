//! payhook-receiver: the merchant side of payhook. It verifies, decrypts and parses the callbacks
//! of every dialect into typed values, and builds the answers the dialects expect.
//!
//! It depends on no other payhook crate, so a merchant's Rust service can use it alone; the
//! sender (payhook-core) takes its Standard Webhooks signing from [`signing`], so both sides
//! share one implementation.
//!
//! Main modules, one per dialect:
//! - [`standard`]: Standard Webhooks 1.0 → [`standard::StandardEvent`].
//! - [`xpay`]: the query string of XPAY's GET → [`xpay::XpayCallback`] (unsigned).
//! - [`ws2mpi`]: Ukrcard's four fields → [`ws2mpi::Ws2mpiCallback`], and the acknowledgement.
//! - [`ecom`]: ALB's order, Standard Webhooks-signed, optionally a JWE → [`ecom::EcomOrder`].
//! - [`uapay`]: `{"token": <HS256 JWS>}` → [`uapay::UapayPayment`].
//!
//! [`Receiver`] puts them behind one call for tools that take any dialect (`payhook listen`).

pub mod ecom;
mod error;
pub mod signing;
pub mod standard;
pub mod uapay;
pub mod ws2mpi;
pub mod xpay;

pub use error::ReceiveError;

use http::HeaderMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The callback protocols payhook speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Standard,
    Xpay,
    Ws2mpi,
    Ecom,
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
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dialect {
    type Err = ReceiveError;
    fn from_str(s: &str) -> Result<Self, ReceiveError> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| ReceiveError::Config(format!("unknown dialect {s:?}")))
    }
}

/// One HTTP request as it arrived, borrowed from whatever server the merchant runs.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The query string without `?` (XPAY's parameters), if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A verified callback of any dialect.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    Standard(standard::StandardEvent),
    /// An operator alert of payhook's ops webhook (Standard Webhooks, the ops secret).
    Alert(standard::OpsAlert),
    Xpay(xpay::XpayCallback),
    Ws2mpi(ws2mpi::Ws2mpiCallback),
    Ecom(Box<ecom::EcomOrder>),
    Uapay(uapay::UapayPayment),
}

/// What to answer so the dialect counts the callback as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// A JSON body (WS2MPI's acknowledgement), or none.
    pub body: Option<Vec<u8>>,
}

impl Callback {
    pub fn dialect(&self) -> Dialect {
        match self {
            Callback::Standard(_) | Callback::Alert(_) => Dialect::Standard,
            Callback::Xpay(_) => Dialect::Xpay,
            Callback::Ws2mpi(_) => Dialect::Ws2mpi,
            Callback::Ecom(_) => Dialect::Ecom,
            Callback::Uapay(_) => Dialect::Uapay,
        }
    }

    /// The acknowledgement: `200` for every dialect (exactly 200 for ECOM and UAPAY), and for
    /// WS2MPI the body `{"orderNumber":<same>,"applicationStatus":200}`.
    pub fn answer(&self) -> Answer {
        let body = match self {
            Callback::Ws2mpi(cb) => Some(cb.acknowledgement()),
            _ => None,
        };
        Answer { status: 200, body }
    }
}

/// Verifies and parses callbacks of one dialect with one merchant's credentials.
#[derive(Debug, Clone)]
pub struct Receiver {
    dialect: Dialect,
    /// The merchant's secret as given (UAPAY keys its HMAC with these bytes).
    secret: Option<Secret>,
    /// The merchant's private P-384 JWK (ECOM encrypted bodies).
    key: Option<ecom::PrivateKey>,
    /// How far `webhook-timestamp` may be from now (Standard Webhooks: 5 minutes).
    tolerance_secs: i64,
}

/// A secret `Debug` cannot print.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Receiver {
    /// A receiver of `dialect` callbacks. XPAY and WS2MPI carry no signature; the others need
    /// [`Receiver::with_secret`].
    pub fn new(dialect: Dialect) -> Self {
        Receiver {
            dialect,
            secret: None,
            key: None,
            tolerance_secs: standard::DEFAULT_TOLERANCE_SECS,
        }
    }

    /// The merchant's `whsec_…` secret: Standard Webhooks key for `standard` and `ecom`, the
    /// HS256 key (its UTF-8 bytes) for `uapay`.
    pub fn with_secret(mut self, secret: &str) -> Result<Self, ReceiveError> {
        if matches!(self.dialect, Dialect::Standard | Dialect::Ecom) {
            signing::SigningSecret::parse(secret)
                .map_err(|e| ReceiveError::Config(e.to_string()))?;
        }
        self.secret = Some(Secret(secret.to_owned()));
        Ok(self)
    }

    /// The merchant's private EC P-384 JWK, to decrypt ECOM bodies sent as JWE.
    pub fn with_private_key(mut self, jwk: &serde_json::Value) -> Result<Self, ReceiveError> {
        self.key = Some(ecom::PrivateKey::from_jwk(jwk)?);
        Ok(self)
    }

    /// Accepts `webhook-timestamp` values this many seconds from now (default 300).
    pub fn with_tolerance(mut self, seconds: i64) -> Self {
        self.tolerance_secs = seconds;
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Verifies and parses one callback against the wall clock.
    pub fn receive(&self, req: &Incoming<'_>) -> Result<Callback, ReceiveError> {
        self.receive_at(req, unix_now())
    }

    /// [`Receiver::receive`] at a given time (unix seconds), for tests and replays.
    pub fn receive_at(&self, req: &Incoming<'_>, now: i64) -> Result<Callback, ReceiveError> {
        let secret = || self.secret.as_ref().map(|s| s.0.as_str()).ok_or(ReceiveError::NoSecret);
        let webhook = || -> Result<standard::Webhook, ReceiveError> {
            Ok(standard::Webhook::new(secret()?)?.with_tolerance(self.tolerance_secs))
        };
        Ok(match self.dialect {
            Dialect::Standard if standard::Webhook::is_alert(req.body) => {
                Callback::Alert(webhook()?.verify_alert_at(req.headers, req.body, now)?)
            }
            Dialect::Standard => {
                Callback::Standard(webhook()?.verify_at(req.headers, req.body, now)?)
            }
            Dialect::Xpay => {
                Callback::Xpay(xpay::XpayCallback::from_query(req.query.unwrap_or(""))?)
            }
            Dialect::Ws2mpi => Callback::Ws2mpi(ws2mpi::Ws2mpiCallback::from_body(req.body)?),
            Dialect::Ecom => {
                let order =
                    ecom::receive_at(&webhook()?, self.key.as_ref(), req.headers, req.body, now)?;
                Callback::Ecom(Box::new(order))
            }
            Dialect::Uapay => Callback::Uapay(uapay::verify(secret()?, req.body)?),
        })
    }
}

fn unix_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// A header's value as text, `None` when absent or not visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
