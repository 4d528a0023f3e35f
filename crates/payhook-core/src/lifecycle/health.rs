//! A destination's health — per (merchant, callback URL): failures in a row, since when,
//! the last success, success rates over the last hour and day — and what it leads to: an
//! alert to the operator when failures pile up or stop, and the destination disabled
//! (like a 410 Gone) after a long stretch of nothing but failures.
//!
//! Every attempt's outcome moves the health on ([`after_attempt`]); the store keeps it with
//! the attempt's record, in the same transaction. Rates come from hourly counts, the oldest
//! hour weighted by how much of it is still inside the window (a sliding-window estimate:
//! exact when traffic is even within the hour).

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
/// Hourly counts kept: a day, and the hour the day's window starts in.
const HOURS_KEPT: usize = 25;

/// The operator's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRules {
    /// Failures in a row that raise `merchant.endpoint_failing`.
    pub alert_after_failures: u32,
    /// How long nothing but failures disables the destination (Svix: 5 days).
    pub disable_after: Duration,
}

impl Default for HealthRules {
    fn default() -> Self {
        HealthRules { alert_after_failures: 10, disable_after: Duration::from_secs(5 * 86_400) }
    }
}

/// Attempts that started in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCount {
    /// The hour's start, unix milliseconds.
    pub hour: i64,
    pub ok: u32,
    pub failed: u32,
}

/// One destination's health as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub consecutive_failures: u32,
    /// The first failure of the current run of failures; `None` after a success.
    pub failing_since: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    /// Whether `merchant.endpoint_failing` went out for the current run of failures.
    pub alerted: bool,
    /// Oldest first.
    pub hours: Vec<HourCount>,
}

/// What the operator is told about a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthAlert {
    Failing,
    Recovered,
    Disabled,
}

impl HealthAlert {
    /// The ops webhook's event type.
    pub fn event_type(self) -> &'static str {
        match self {
            HealthAlert::Failing => "merchant.endpoint_failing",
            HealthAlert::Recovered => "merchant.endpoint_recovered",
            HealthAlert::Disabled => "merchant.endpoint_disabled",
        }
    }
}

/// The ops webhook's event for an admin action, if it has one.
pub fn action_alert(action: crate::model::AuditAction) -> Option<&'static str> {
    use crate::model::AuditAction::*;
    match action {
        MerchantPaused => Some("merchant.paused"),
        MerchantResumed => Some("merchant.resumed"),
        _ => None,
    }
}

/// An attempt's effect on its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub health: Health,
    pub alert: Option<HealthAlert>,
    /// Disable the destination now: it has answered nothing but failures for
    /// `disable_after` (every failure past it says so; only the first raises the alert).
    pub disable: bool,
}

/// The health after an attempt at `now` that `delivered` or not.
pub fn after_attempt(
    prev: Health,
    delivered: bool,
    now: Timestamp,
    rules: &HealthRules,
) -> HealthChange {
    let mut h = prev;
    count(&mut h.hours, delivered, now);
    if delivered {
        let alert = h.alerted.then_some(HealthAlert::Recovered);
        h.consecutive_failures = 0;
        h.failing_since = None;
        h.last_success_at = Some(now);
        h.alerted = false;
        return HealthChange { health: h, alert, disable: false };
    }
    h.consecutive_failures = h.consecutive_failures.saturating_add(1);
    let since = *h.failing_since.get_or_insert(now);
    let past_period = |t: Timestamp| t >= since && t.since(since) >= rules.disable_after;
    // Told once: a failure already past the period (another delivery in flight) disabled it.
    let newly_disabled = past_period(now) && !h.last_failure_at.is_some_and(past_period);
    h.last_failure_at = Some(now);
    let disable = past_period(now);
    let alert = if newly_disabled {
        // Raised, so that the next success is told as a recovery.
        h.alerted = true;
        Some(HealthAlert::Disabled)
    } else if disable {
        None
    } else if !h.alerted && h.consecutive_failures >= rules.alert_after_failures {
        h.alerted = true;
        Some(HealthAlert::Failing)
    } else {
        None
    };
    HealthChange { health: h, alert, disable }
}

/// The health when an operator re-enables the destination: its run of failures starts over
/// for the disabling period (a first failure does not disable it again at once), while a
/// raised alert stays raised so its recovery is still told.
pub fn reenabled(h: Health) -> Health {
    Health { failing_since: None, ..h }
}

fn hour_of(t: Timestamp) -> i64 {
    t.0 - t.0.rem_euclid(HOUR_MS)
}

fn count(hours: &mut Vec<HourCount>, delivered: bool, now: Timestamp) {
    let hour = hour_of(now);
    match hours.iter_mut().find(|c| c.hour == hour) {
        Some(c) => *c = bump(*c, delivered),
        None => {
            hours.push(bump(HourCount { hour, ok: 0, failed: 0 }, delivered));
            hours.sort_by_key(|c| c.hour);
        }
    }
    hours.retain(|c| c.hour > hour - HOURS_KEPT as i64 * HOUR_MS);
}

fn bump(c: HourCount, delivered: bool) -> HourCount {
    match delivered {
        true => HourCount { ok: c.ok.saturating_add(1), ..c },
        false => HourCount { failed: c.failed.saturating_add(1), ..c },
    }
}

/// The share of attempts that delivered in the `window` before `now`; `None` without
/// attempts in it.
pub fn success_rate(h: &Health, now: Timestamp, window: Duration) -> Option<f64> {
    let start = now.0 - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let (mut ok, mut all) = (0.0, 0.0);
    for c in &h.hours {
        let end = c.hour + HOUR_MS;
        if end <= start || c.hour > now.0 {
            continue;
        }
        let inside = if c.hour >= start { 1.0 } else { (end - start) as f64 / HOUR_MS as f64 };
        ok += f64::from(c.ok) * inside;
        all += f64::from(c.ok + c.failed) * inside;
    }
    (all > 0.0).then(|| ok / all)
}

/// A merchant's health at a glance, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// A destination is disabled (a 410, or failing for `disable_after`).
    Disabled,
    /// A destination's last attempt failed.
    Failing,
    /// Every destination's last attempt delivered.
    Healthy,
    /// No attempt yet.
    Unknown,
}

impl HealthState {
    pub const ALL: [HealthState; 4] =
        [HealthState::Disabled, HealthState::Failing, HealthState::Healthy, HealthState::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Disabled => "disabled",
            HealthState::Failing => "failing",
            HealthState::Healthy => "healthy",
            HealthState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<HealthState> {
        HealthState::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

/// The state of a merchant whose destinations have these healths (`true`: disabled).
pub fn merchant_state<'a>(
    destinations: impl IntoIterator<Item = (&'a Health, bool)>,
) -> HealthState {
    let mut state = HealthState::Unknown;
    for (h, disabled) in destinations {
        let this = if disabled {
            HealthState::Disabled
        } else if h.consecutive_failures > 0 {
            HealthState::Failing
        } else if h.last_success_at.is_some() {
            HealthState::Healthy
        } else {
            HealthState::Unknown
        };
        state = worse(state, this);
    }
    state
}

fn worse(a: HealthState, b: HealthState) -> HealthState {
    let rank = |s| HealthState::ALL.iter().position(|x| *x == s).unwrap_or(usize::MAX);
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
