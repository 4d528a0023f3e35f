//! What the delivery loop and the watchdog count, through the `metrics` facade: a no-op until
//! the binary installs a recorder (payhook-api's Prometheus exporter serves it at `/metrics`).
//! The metric names live here, next to the only code that records them.

use payhook_core::dialect::Dialect;
use payhook_core::model::{Attempt, DeliveryState, Poll};

/// Counter `{dialect, outcome}`: every attempt, `delivered` / `retry` / `permanent`.
pub const ATTEMPTS: &str = "payhook_delivery_attempts_total";
/// Counter `{dialect, state}`: deliveries an attempt ended (`delivered`, `exhausted`,
/// `cancelled`, `superseded`).
pub const DELIVERIES_ENDED: &str = "payhook_deliveries_total";
/// Histogram `{dialect}`: the HTTP exchange of one attempt, in seconds.
pub const ATTEMPT_SECONDS: &str = "payhook_delivery_attempt_duration_seconds";
/// Counter `{via}`: deliveries taken up for an attempt, `handoff` (leased as the report was
/// stored; it may wait in its host's line for a slot) or `claim` (found by the delivery loop:
/// retries, work left when the lines were full, other nodes' work).
pub const STARTED: &str = "payhook_delivery_attempts_started_total";
/// Counter `{outcome}`: re-polls of status sources, `changed` / `unchanged` / `failed`.
pub const POLLS: &str = "payhook_polls_total";

/// Counts one recorded attempt and, when it ended the delivery, the delivery.
pub fn attempt(dialect: Dialect, attempt: &Attempt, state: DeliveryState) {
    let dialect = dialect.as_str();
    let outcome = attempt.outcome.as_str();
    metrics::counter!(ATTEMPTS, "dialect" => dialect, "outcome" => outcome).increment(1);
    let seconds = attempt.duration_ms as f64 / 1000.0;
    metrics::histogram!(ATTEMPT_SECONDS, "dialect" => dialect).record(seconds);
    if state != DeliveryState::Pending {
        metrics::counter!(DELIVERIES_ENDED, "dialect" => dialect, "state" => state.as_str())
            .increment(1);
    }
}

/// Counts one poll of a status source.
pub fn poll(poll: &Poll) {
    metrics::counter!(POLLS, "outcome" => poll.outcome.as_str()).increment(1);
}

/// Counts `n` deliveries taken up for an attempt, by how they reached the dispatcher.
pub fn started(via: &'static str, n: usize) {
    metrics::counter!(STARTED, "via" => via).increment(n as u64);
}
