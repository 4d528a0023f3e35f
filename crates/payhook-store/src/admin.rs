//! What crosses the [`crate::Store`] interface for merchants' API keys and the audit log.

use payhook_core::ids::{ApiKeyId, MerchantId};
use payhook_core::model::AuditAction;
use payhook_core::Timestamp;

/// A key to store: its id, the hash the caller will be found by, and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    /// Hex SHA-256 of the `pk_…` key; the key itself is never stored.
    pub hash: String,
    pub prefix: String,
    pub created_at: Timestamp,
}

impl NewApiKey {
    /// A key under a freshly minted id.
    pub fn minted(hash: &str, prefix: &str, created_at: Timestamp) -> NewApiKey {
        let id = crate::mint_id(ApiKeyId::PREFIX).parse().expect("a minted id parses");
        NewApiKey { id, hash: hash.to_owned(), prefix: prefix.to_owned(), created_at }
    }
}

/// The key a caller presented, found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub merchant: MerchantId,
    pub key: ApiKeyId,
    pub prefix: String,
    pub last_used_at: Option<Timestamp>,
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Merchant,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Admin => "admin",
            Actor::Merchant => "merchant",
        }
    }

    pub fn parse(s: &str) -> Option<Actor> {
        [Actor::Admin, Actor::Merchant].into_iter().find(|a| a.as_str() == s)
    }
}

/// An entry for the audit log, written in the transaction of the action it records.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: Actor,
    pub action: AuditAction,
    pub merchant: MerchantId,
    /// What the action was about (a key's id, recovery's `since`), as JSON.
    pub detail: serde_json::Value,
}

/// An audit entry as stored: its place in the log first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub position: i64,
    pub entry: AuditEntry,
}

/// A page of the audit log, oldest first, after `after` (a position; 0 from the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub after: i64,
    pub merchant: Option<MerchantId>,
    pub limit: u32,
}

/// What the store does with destinations' health (`payhook_core::lifecycle::health`): the
/// operator's thresholds, and whether alerts are queued for an ops webhook at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthPolicy {
    pub rules: payhook_core::lifecycle::health::HealthRules,
    /// Queue `merchant.*` alerts (an ops webhook is configured); without one none are kept.
    pub alerts: bool,
}

/// One destination of a merchant and its health.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationHealth {
    pub url: String,
    pub health: payhook_core::lifecycle::health::Health,
    pub disabled: bool,
}

/// An operator alert waiting in the store's queue, leased to a node to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsAlert {
    /// `evt_…`: the Standard Webhooks `webhook-id`, the same on every attempt.
    pub id: String,
    /// `merchant.endpoint_failing`, `merchant.endpoint_recovered`, `merchant.endpoint_disabled`,
    /// `merchant.paused`, `merchant.resumed`.
    pub kind: String,
    pub merchant: MerchantId,
    /// The event's `data`.
    pub data: serde_json::Value,
    pub created_at: Timestamp,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// How sending an alert went.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOutcome {
    Delivered,
    RetryAt(Timestamp, String),
    /// Given up: its retries are spent.
    Exhausted(String),
}
