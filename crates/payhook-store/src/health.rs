//! What both stores share for destinations' health and the operator alerts' queue: the
//! stored form of the hourly counts, and the alert an attempt or an admin action queues.

use crate::{AlertOutcome, DestinationHealth, HealthPolicy, StoreError};
use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::health::{Health, HealthAlert, HealthChange, HourCount};
use payhook_core::Timestamp;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

pub(crate) fn hours_text(hours: &[HourCount]) -> String {
    serde_json::to_string(hours).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn hours_from(text: &str) -> Result<Vec<HourCount>, StoreError> {
    serde_json::from_str(text)
        .map_err(|_| StoreError::Backend("malformed hourly counts in destination_health".into()))
}

/// An alert to queue: its id, type and data.
pub(crate) struct NewAlert {
    pub id: String,
    pub kind: &'static str,
    pub merchant: MerchantId,
    pub data: String,
}

impl NewAlert {
    fn new(kind: &'static str, merchant: &MerchantId, data: Value) -> NewAlert {
        let id = crate::mint_id("evt_");
        NewAlert { id, kind, merchant: merchant.clone(), data: data.to_string() }
    }
}

/// The alert `change` raises for the destination, when alerts are queued at all.
pub(crate) fn health_alert(
    policy: &HealthPolicy,
    change: &HealthChange,
    merchant: &MerchantId,
    url: &str,
) -> Option<NewAlert> {
    let alert: HealthAlert = change.alert.filter(|_| policy.alerts)?;
    let h = &change.health;
    let time = |t: Option<Timestamp>| t.map(Timestamp::rfc3339_millis);
    let data = json!({
        "merchant_id": merchant,
        "url": url,
        "consecutive_failures": h.consecutive_failures,
        "failing_since": time(h.failing_since),
        "last_success_at": time(h.last_success_at),
        "last_failure_at": time(h.last_failure_at),
    });
    Some(NewAlert::new(alert.event_type(), merchant, data))
}

/// The alert an admin action raises, when alerts are queued at all.
pub(crate) fn action_alert(policy: &HealthPolicy, audit: &crate::AuditEntry) -> Option<NewAlert> {
    let kind = payhook_core::lifecycle::health::action_alert(audit.action)?;
    policy
        .alerts
        .then(|| NewAlert::new(kind, &audit.merchant, json!({ "merchant_id": audit.merchant })))
}

/// An alert's columns after a send: its state, when it is next due, and the error.
pub(crate) fn alert_columns(outcome: &AlertOutcome) -> (&'static str, Option<i64>, Option<&str>) {
    match outcome {
        AlertOutcome::Delivered => ("delivered", None, None),
        AlertOutcome::RetryAt(at, e) => ("pending", Some(at.0), Some(e.as_str())),
        AlertOutcome::Exhausted(e) => ("exhausted", None, Some(e.as_str())),
    }
}

/// Health rows and disabled destinations, keyed by (merchant id, URL), merged into each
/// merchant's destinations: a disabled URL without a health row has a default health.
pub(crate) fn by_merchant(
    healths: Vec<((String, String), Health)>,
    disabled: Vec<(String, String)>,
) -> Result<HashMap<MerchantId, Vec<DestinationHealth>>, StoreError> {
    let mut all: BTreeMap<(String, String), DestinationHealth> = BTreeMap::new();
    for (key, health) in healths {
        all.insert(key.clone(), DestinationHealth { url: key.1, health, disabled: false });
    }
    for key in disabled {
        let url = key.1.clone();
        all.entry(key)
            .or_insert(DestinationHealth { url, health: Health::default(), disabled: true })
            .disabled = true;
    }
    let mut out: HashMap<MerchantId, Vec<DestinationHealth>> = HashMap::new();
    for ((merchant, _), d) in all {
        out.entry(crate::columns::parse_id(&merchant)?).or_default().push(d);
    }
    Ok(out)
}
