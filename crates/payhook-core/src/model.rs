//! The records payhook keeps: merchants, operations, events, deliveries and attempts.

use crate::dialect::Dialect;
use crate::ids::{ApiKeyId, DeliveryId, EventId, MerchantId, OperationId};
use crate::retry::RetryPolicy;
use crate::signing::SigningSecret;
use crate::status::Status;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// `as_str`, `parse` and `ALL` for an enum stored and shown as snake_case text.
macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }
    };
}

/// A tenant of the payment processor.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    /// Used for operations that do not name their own dialect.
    pub dialect: Dialect,
    /// The merchant-level callback URL (WS2MPI configures one per client system).
    pub callback_url: Option<String>,
    /// URL prefixes the merchant approved in advance; empty means "any".
    pub allowed_callback_urls: Vec<String>,
    /// Overrides the dialect's default retry policy.
    pub retry: Option<RetryPolicy>,
    /// The merchant's public key (a JWK) for encrypted dialects.
    pub encryption_key: Option<serde_json::Value>,
    /// Dialect-specific switches (e.g. ECOM's `ecom_operations_field`).
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub signing_secret: SigningSecret,
    /// The secret before the last rotation, signing beside the new one until it expires.
    pub previous_secret: Option<(SigningSecret, Timestamp)>,
    /// Whether its callbacks go out (`active`), wait (`paused`), or it takes no new
    /// operations (`archived`); see `lifecycle::merchant`.
    pub state: MerchantState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a merchant stands with the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MerchantState {
    #[default]
    Active,
    /// Reports are accepted; its deliveries wait, unattempted, until it is resumed.
    Paused,
    /// No new operations; what exists is still read, reported and delivered.
    Archived,
}

text_enum!(MerchantState {
    Active => "active",
    Paused => "paused",
    Archived => "archived",
});

/// One of a merchant's API keys, as it may be shown: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    /// The key's first characters (`pk_` and a few more), to tell keys apart.
    pub prefix: String,
    pub created_at: Timestamp,
    /// The hour the key was last used in (`lifecycle::keys::use_hour`), never finer.
    pub last_used_at: Option<Timestamp>,
}

/// An operator's or a merchant's action, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    MerchantPaused,
    MerchantResumed,
    MerchantArchived,
    MerchantRecovered,
    KeyCreated,
    KeyRevoked,
}

text_enum!(AuditAction {
    MerchantPaused => "merchant.paused",
    MerchantResumed => "merchant.resumed",
    MerchantArchived => "merchant.archived",
    MerchantRecovered => "merchant.recovered",
    KeyCreated => "key.created",
    KeyRevoked => "key.revoked",
});

impl Merchant {
    /// A merchant with nothing configured beyond its dialect, its callback URL and its signing
    /// secret: any callback URL allowed, the dialect's retry policy, no encryption key, no
    /// settings, no previous secret; created and updated at `now`.
    pub fn new(
        id: MerchantId,
        name: &str,
        dialect: Dialect,
        callback_url: Option<String>,
        signing_secret: SigningSecret,
        now: Timestamp,
    ) -> Merchant {
        Merchant {
            id,
            name: name.to_owned(),
            dialect,
            callback_url,
            allowed_callback_urls: vec![],
            retry: None,
            encryption_key: None,
            settings: Default::default(),
            signing_secret,
            previous_secret: None,
            state: MerchantState::Active,
            created_at: now,
            updated_at: now,
        }
    }

    /// The secrets that sign at `now`: the current one, then the previous one while it lives.
    pub fn active_secrets(&self, now: Timestamp) -> Vec<&SigningSecret> {
        let mut secrets = vec![&self.signing_secret];
        if let Some((old, expires)) = &self.previous_secret {
            if now < *expires {
                secrets.push(old);
            }
        }
        secrets
    }

    /// Whether `url` is under one of the approved prefixes (or no list is configured).
    ///
    /// Both sides are compared in the normalized form the sender will use (WHATWG URL
    /// parsing: scheme and host lowercased, default port dropped, `.`/`..` segments and their
    /// percent-encoded forms resolved, `/` after the host), then as text. So a prefix that ends
    /// at the host (`https://shop.example`) approves that host and port only — not
    /// `https://shop.example.evil.net`, `https://shop.example@evil.net` or
    /// `https://shop.example:8443` — and `https://b.example/cb/../admin` is not under
    /// `https://b.example/cb`. A URL that does not parse is never allowed.
    pub fn allows_url(&self, url: &str) -> bool {
        if self.allowed_callback_urls.is_empty() {
            return true;
        }
        let Some(url) = normalized(url) else { return false };
        self.allowed_callback_urls
            .iter()
            .filter_map(|p| normalized(p))
            .any(|prefix| url.starts_with(&prefix))
    }
}

/// The URL as the sender will see it, or `None` when it does not parse.
fn normalized(url: &str) -> Option<String> {
    url::Url::parse(url.trim()).ok().map(String::from)
}

/// Where and how an operation's callbacks go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackSettings {
    /// `None`: the merchant's default dialect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<Dialect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(default)]
    pub encrypt: bool,
    /// Re-poll settings (the watchdog), kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_source: Option<serde_json::Value>,
    /// Per-operation retry override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

/// One payment operation, as of its latest status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: OperationId,
    /// Positive, unique in the installation, in creation order.
    pub number: i64,
    pub merchant_id: MerchantId,
    pub external_id: String,
    /// In minor units.
    pub amount: i64,
    pub currency: String,
    pub kind: String,
    pub status: Status,
    /// Grows by one with each status change; 0 at registration.
    pub seq: i64,
    #[serde(flatten)]
    pub callback: CallbackSettings,
    pub data: serde_json::Map<String, serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One status change of one operation, with the operation as it was right after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// Cursor in the installation-wide events feed.
    pub position: i64,
    pub operation_id: OperationId,
    pub merchant_id: MerchantId,
    pub seq: i64,
    pub status: Status,
    pub previous_status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    pub created_at: Timestamp,
    /// Snapshot of the operation at this `seq`.
    pub operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// The retry policy was used up without an acknowledgement.
    Exhausted,
    /// A newer event of the same operation made this one pointless.
    Superseded,
    /// Stopped for good: blocked target, destination gone (410), or cancelled by an operator.
    Cancelled,
}

text_enum!(DeliveryState {
    Pending => "pending",
    Delivered => "delivered",
    Exhausted => "exhausted",
    Superseded => "superseded",
    Cancelled => "cancelled",
});

/// One event owed to one destination under one dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable across attempts: the idempotency key the receiver sees (`webhook-id`).
    pub id: DeliveryId,
    pub event_id: EventId,
    pub operation_id: OperationId,
    pub merchant_id: MerchantId,
    pub seq: i64,
    pub dialect: Dialect,
    #[serde(default)]
    pub kind: DeliveryKind,
    pub url: String,
    pub state: DeliveryState,
    /// All attempts ever made.
    pub attempts: u32,
    /// Attempts of the current series (a resend starts a new series).
    pub series_attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub policy: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why an attempt did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Dns,
    Connect,
    Tls,
    Timeout,
    HttpStatus,
    AckRejected,
    BlockedTarget,
    /// The callback could not be built (e.g. a missing encryption key).
    Render,
    /// A status source answered something that is not JSON.
    Malformed,
    /// A status source's answer has nothing at the status pointer.
    MissingField,
    /// A status source's value is not in the status map.
    Unmapped,
    /// A status source reported a status the transition rules refuse.
    InvalidTransition,
}

text_enum!(ErrorKind {
    Dns => "dns",
    Connect => "connect",
    Tls => "tls",
    Timeout => "timeout",
    HttpStatus => "http_status",
    AckRejected => "ack_rejected",
    BlockedTarget => "blocked_target",
    Render => "render",
    Malformed => "malformed",
    MissingField => "missing_field",
    Unmapped => "unmapped",
    InvalidTransition => "invalid_transition",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Permanent,
}

text_enum!(AttemptOutcome {
    Delivered => "delivered",
    Retry => "retry",
    Permanent => "permanent",
});

/// Response bodies are kept up to this many bytes in the attempt log.
pub const ATTEMPT_BODY_LIMIT: usize = 4096;

/// One HTTP exchange of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub delivery_id: DeliveryId,
    /// 1-based, over the whole life of the delivery.
    pub number: u32,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    /// `METHOD url`.
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    /// The first 4 KiB of the response body, lossily decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a delivery carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// The event's status (every dialect).
    #[default]
    Status,
    /// The re-poll watchdog spent its budget without a final status (ws2mpi: `respStatus` 408).
    PollTimeout,
}

text_enum!(DeliveryKind {
    Status => "status",
    PollTimeout => "poll_timeout",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchState {
    /// Polling on schedule.
    Active,
    /// A final status arrived (from the source or the API).
    Finished,
    /// The poll budget was spent without a final status.
    Exhausted,
}

text_enum!(WatchState {
    Active => "active",
    Finished => "finished",
    Exhausted => "exhausted",
});

/// The re-poll watchdog's record for one operation registered with a `status_source`.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub operation_id: OperationId,
    pub merchant_id: MerchantId,
    pub source: crate::status_source::StatusSource,
    /// Polls made so far (the budget is the schedule's length).
    pub polls: u32,
    pub next_poll_at: Option<Timestamp>,
    pub state: WatchState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollOutcome {
    /// The source reported a new status; it was recorded as an event.
    Changed,
    /// The source reported the status the operation already has.
    Unchanged,
    /// No usable answer (network, HTTP status, malformed, missing, unmapped, refused).
    Failed,
}

text_enum!(PollOutcome {
    Changed => "changed",
    Unchanged => "unchanged",
    Failed => "failed",
});

/// One request of the watchdog to a status source, logged like a delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poll {
    pub operation_id: OperationId,
    /// 1-based.
    pub number: u32,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    /// `METHOD url`.
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// The value found at the status pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// The canonical status it maps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped: Option<Status>,
    pub outcome: PollOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::dialect::Dialect;
    use crate::fixtures::merchant;

    /// The stored text of every enum is its serde name, so API and database agree.
    #[test]
    fn text_names_match_serde_names() {
        fn check<T: serde::Serialize + Copy>(all: &[T], name: impl Fn(T) -> &'static str) {
            for v in all {
                let json = serde_json::to_value(v).expect("serializes");
                assert_eq!(json.as_str(), Some(name(*v)));
            }
        }
        check(super::DeliveryState::ALL, super::DeliveryState::as_str);
        check(super::ErrorKind::ALL, super::ErrorKind::as_str);
        check(super::AttemptOutcome::ALL, super::AttemptOutcome::as_str);
        check(super::DeliveryKind::ALL, super::DeliveryKind::as_str);
        check(super::WatchState::ALL, super::WatchState::as_str);
        check(super::PollOutcome::ALL, super::PollOutcome::as_str);
        assert_eq!(
            super::ErrorKind::parse("blocked_target"),
            Some(super::ErrorKind::BlockedTarget)
        );
        assert_eq!(super::ErrorKind::parse("nope"), None);
    }

    #[test]
    fn allow_list_prefixes_end_at_the_host() {
        let mut m = merchant(Dialect::Uapay);
        assert!(m.allows_url("https://anything.example/"), "no list: any URL");
        m.allowed_callback_urls =
            vec!["https://shop.example".into(), "https://b.example/cb".into()];
        for ok in [
            "https://shop.example",
            "https://shop.example/",
            "https://shop.example/uapay/cb",
            "https://shop.example?x=1",
            "https://shop.example#f",
            "https://b.example/cb",
            "https://b.example/cb/1",
            "https://b.example/cb2",
        ] {
            assert!(m.allows_url(ok), "{ok}");
        }
        for refused in [
            "https://shop.example.evil.net/cb",
            "https://shop.example@evil.net/cb",
            "https://shop.example:8443/cb",
            "https://shop.examples/",
            "http://shop.example/",
            "https://b.example/",
            "https://evil.net/https://shop.example",
            "https://b.example/cb/../admin",
            "https://b.example/cb/%2e%2e/admin",
            "https://b.example/cb/%2E%2E/%2e%2e/admin",
            "https://b.example/cb/./../admin",
            "not a url",
        ] {
            assert!(!m.allows_url(refused), "{refused}");
        }
    }

    #[test]
    fn allow_list_hosts_compare_case_insensitively_in_normal_form() {
        let mut m = merchant(Dialect::Uapay);
        m.allowed_callback_urls = vec!["HTTPS://Shop.Example/CB".into()];
        for ok in [
            "https://shop.example/CB",
            "https://SHOP.EXAMPLE/CB/1",
            "HTTPS://shop.example:443/CB?x=1",
            "https://shop.example/x/../CB",
        ] {
            assert!(m.allows_url(ok), "{ok}");
        }
        for refused in ["https://shop.example/cb", "https://shop.example:444/CB"] {
            assert!(!m.allows_url(refused), "paths stay case-sensitive, ports exact: {refused}");
        }
    }
}
