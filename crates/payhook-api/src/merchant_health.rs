//! Merchants with their destinations' health (`payhook_core::lifecycle::health`): the
//! `health` of `GET /v1/merchants/{id}` and of each merchant in `GET /v1/merchants`, the
//! list's `health` filter, and the per-merchant health gauges of `/metrics`.

use crate::error::ApiError;
use crate::{views, AppState};
use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::health::{self, HealthState};
use payhook_core::model::Merchant;
use payhook_core::Timestamp;
use payhook_store::{DestinationHealth, MerchantQuery};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

/// A merchant's health state from its destinations.
pub fn state_of(destinations: &[DestinationHealth]) -> HealthState {
    health::merchant_state(destinations.iter().map(|d| (&d.health, d.disabled)))
}

/// The `health` object of a merchant's view.
pub fn view(destinations: &[DestinationHealth], now: Timestamp) -> Value {
    let time = |t: Option<Timestamp>| t.map(Timestamp::rfc3339_millis);
    let list: Vec<Value> = destinations
        .iter()
        .map(|d| {
            let h = &d.health;
            json!({
                "url": d.url,
                "consecutive_failures": h.consecutive_failures,
                "failing_since": time(h.failing_since),
                "last_success_at": time(h.last_success_at),
                "last_failure_at": time(h.last_failure_at),
                "success_rate_1h": health::success_rate(h, now, HOUR),
                "success_rate_24h": health::success_rate(h, now, DAY),
                "disabled": d.disabled,
            })
        })
        .collect();
    json!({ "state": state_of(destinations).as_str(), "destinations": list })
}

/// A merchant's view with its health.
pub async fn merchant(state: &AppState, m: &Merchant) -> Result<Value, ApiError> {
    let mut all = state.store.destination_health(Some(std::slice::from_ref(&m.id))).await?;
    let destinations = all.remove(&m.id).unwrap_or_default();
    let mut v = views::merchant(m);
    v["health"] = view(&destinations, state.clock.now());
    Ok(v)
}

/// How many merchants one scan reads while filtering by health.
const SCAN: u32 = 500;

/// A page of merchants with their health, at most `query.limit`, of the health state
/// `wanted` when given. Filtering reads on through the list in creation order until the
/// page is full or the list ends; the cursor is the last merchant shown.
pub async fn page(
    state: &AppState,
    mut query: MerchantQuery,
    wanted: Option<HealthState>,
) -> Result<Vec<Value>, ApiError> {
    let limit = query.limit as usize;
    if wanted.is_some() {
        query.limit = SCAN;
    }
    let now = state.clock.now();
    let mut out = Vec::new();
    loop {
        let merchants = state.store.list_merchants(&query).await?;
        let ids: Vec<MerchantId> = merchants.iter().map(|m| m.id.clone()).collect();
        let mut healths = state.store.destination_health(Some(&ids)).await?;
        for m in &merchants {
            let destinations = healths.remove(&m.id).unwrap_or_default();
            if wanted.is_none_or(|w| w == state_of(&destinations)) {
                let mut v = views::merchant(m);
                v["health"] = view(&destinations, now);
                out.push(v);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if merchants.len() < query.limit as usize {
            return Ok(out);
        }
        query.after = ids.last().map(ToString::to_string);
    }
}

/// Sets the per-merchant health gauges (labelled by merchant id, never by URL).
pub async fn gauges(state: &AppState) -> Result<(), ApiError> {
    let all: HashMap<MerchantId, Vec<DestinationHealth>> =
        state.store.destination_health(None).await?;
    let now = state.clock.now();
    for (merchant, destinations) in &all {
        let id = merchant.to_string();
        let failures = destinations.iter().map(|d| d.health.consecutive_failures).max();
        let disabled = destinations.iter().filter(|d| d.disabled).count();
        metrics::gauge!(CONSECUTIVE_FAILURES, "merchant" => id.clone())
            .set(f64::from(failures.unwrap_or(0)));
        metrics::gauge!(DISABLED, "merchant" => id.clone()).set(disabled as f64);
        for (window, span) in [("1h", HOUR), ("24h", DAY)] {
            if let Some(rate) = overall_rate(destinations, now, span) {
                metrics::gauge!(SUCCESS_RATE, "merchant" => id.clone(), "window" => window)
                    .set(rate);
            }
        }
    }
    Ok(())
}

/// The merchant's success rate over all its destinations, weighted by their attempts.
fn overall_rate(
    destinations: &[DestinationHealth],
    now: Timestamp,
    window: Duration,
) -> Option<f64> {
    let merged = health::Health {
        hours: destinations.iter().flat_map(|d| d.health.hours.iter().copied()).collect(),
        ..health::Health::default()
    };
    health::success_rate(&merged, now, window)
}

pub const CONSECUTIVE_FAILURES: &str = "payhook_merchant_consecutive_failures";
pub const DISABLED: &str = "payhook_merchant_disabled_destinations";
pub const SUCCESS_RATE: &str = "payhook_merchant_success_rate";
