//! What the delivery loop and the watchdog count, through the `metrics` facade: a no-op until
//! the binary installs a recorder (payhook-api's Prometheus exporter serves it at `/metrics`).
//! The metric names live here, next to the only code that records them.

use metrics::{Counter, Histogram};
use payhook_core::dialect::Dialect;
use payhook_core::model::{Attempt, AttemptOutcome, DeliveryState, Poll};

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

/// Counter `{table}`: rows the retention purge deleted.
pub const PURGED: &str = "payhook_purged_rows_total";
/// Gauge: when this node last finished a purge run, unix seconds (0 before its first).
pub const PURGE_LAST_RUN: &str = "payhook_purge_last_run_timestamp_seconds";

/// The delivery loop's metric handles, registered once instead of looked up by name and
/// labels on every attempt (building the key and the registry lookup were ≈ 1.5% of the
/// server's CPU per callback). Registered at a dispatcher's first use, so the binary must have
/// installed its recorder before the dispatcher starts: handles taken earlier are no-ops.
pub struct Handles {
    /// `[dialect][outcome]`, in `Dialect::ALL` × `AttemptOutcome::ALL` order.
    attempts: Vec<Counter>,
    /// `[dialect]`.
    seconds: Vec<Histogram>,
    /// `[dialect][state]`, in `Dialect::ALL` × `DeliveryState::ALL` order; none for
    /// `pending`, which ends nothing.
    ended: Vec<Option<Counter>>,
    started_handoff: Counter,
    started_claim: Counter,
}

impl Handles {
    pub fn register() -> Handles {
        let mut attempts = Vec::new();
        let mut seconds = Vec::new();
        let mut ended = Vec::new();
        for dialect in Dialect::ALL.map(Dialect::as_str) {
            for outcome in AttemptOutcome::ALL.iter().map(|o| o.as_str()) {
                attempts
                    .push(metrics::counter!(ATTEMPTS, "dialect" => dialect, "outcome" => outcome));
            }
            seconds.push(metrics::histogram!(ATTEMPT_SECONDS, "dialect" => dialect));
            for state in DeliveryState::ALL {
                ended.push((*state != DeliveryState::Pending).then(|| {
                    let state = state.as_str();
                    metrics::counter!(DELIVERIES_ENDED, "dialect" => dialect, "state" => state)
                }));
            }
        }
        Handles {
            attempts,
            seconds,
            ended,
            started_handoff: metrics::counter!(STARTED, "via" => "handoff"),
            started_claim: metrics::counter!(STARTED, "via" => "claim"),
        }
    }

    /// Counts one recorded attempt and, when it ended the delivery, the delivery.
    pub fn attempt(&self, dialect: Dialect, attempt: &Attempt, state: DeliveryState) {
        let d = position(&Dialect::ALL, dialect);
        let outcomes = AttemptOutcome::ALL.len();
        self.attempts[d * outcomes + position(AttemptOutcome::ALL, attempt.outcome)].increment(1);
        self.seconds[d].record(attempt.duration_ms as f64 / 1000.0);
        let states = DeliveryState::ALL.len();
        if let Some(ended) = &self.ended[d * states + position(DeliveryState::ALL, state)] {
            ended.increment(1);
        }
    }

    /// Counts `n` deliveries taken up for an attempt, by how they reached the dispatcher.
    pub fn started(&self, via: Via, n: usize) {
        let counter = match via {
            Via::Handoff => &self.started_handoff,
            Via::Claim => &self.started_claim,
        };
        counter.increment(n as u64);
    }
}

/// How a delivery reached the dispatcher (the `via` label of [`STARTED`]).
#[derive(Debug, Clone, Copy)]
pub enum Via {
    /// Leased as the report was stored (it may wait in its host's line for a slot).
    Handoff,
    /// Found by the delivery loop.
    Claim,
}

fn position<T: PartialEq + Copy>(all: &[T], value: T) -> usize {
    all.iter().position(|v| *v == value).expect("every variant is in its ALL list")
}

/// Counts one poll of a status source.
pub fn poll(poll: &Poll) {
    metrics::counter!(POLLS, "outcome" => poll.outcome.as_str()).increment(1);
}

/// Counts the rows one purge batch deleted.
pub fn purged(rows: &payhook_store::PurgedRows) {
    for (table, n) in rows.by_table() {
        metrics::counter!(PURGED, "table" => table).increment(n);
    }
}

/// Marks when a purge run finished.
pub fn purge_finished(at: payhook_core::Timestamp) {
    metrics::gauge!(PURGE_LAST_RUN).set(at.0 as f64 / 1000.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use payhook_core::Timestamp;

    fn attempt(outcome: AttemptOutcome) -> Attempt {
        Attempt {
            delivery_id: "dlv_test".parse().expect("id"),
            number: 1,
            started_at: Timestamp(0),
            duration_ms: 250,
            request: "POST http://shop.example/cb".into(),
            response_status: Some(200),
            response_body: None,
            outcome,
            error_kind: None,
            error: None,
        }
    }

    /// Every handle carries the labels of the attempt it counts: each dialect, outcome and
    /// ending state is counted under its own labels, exactly once.
    #[test]
    fn each_attempt_is_counted_under_its_own_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let handles = Handles::register();
            for (i, dialect) in Dialect::ALL.into_iter().enumerate() {
                for outcome in AttemptOutcome::ALL {
                    // A different number of attempts per dialect, so a mixed-up index shows.
                    for _ in 0..=i {
                        handles.attempt(dialect, &attempt(*outcome), DeliveryState::Pending);
                    }
                }
                for state in DeliveryState::ALL {
                    handles.attempt(dialect, &attempt(AttemptOutcome::Delivered), *state);
                }
            }
            handles.started(Via::Handoff, 3);
            handles.started(Via::Claim, 2);
        });
        let text = scrape.render();
        let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            text.lines().find_map(|line| {
                let (series, v) = line.rsplit_once(' ')?;
                let ok = series.starts_with(&format!("{name}{{"))
                    && labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
                ok.then(|| v.parse().ok()).flatten()
            })
        };
        let states = DeliveryState::ALL.len() as f64;
        for (i, dialect) in Dialect::ALL.into_iter().enumerate() {
            let d = dialect.as_str();
            for outcome in AttemptOutcome::ALL {
                let mut want = (i + 1) as f64;
                if *outcome == AttemptOutcome::Delivered {
                    want += states;
                }
                let labels = [("dialect", d), ("outcome", outcome.as_str())];
                assert_eq!(value(ATTEMPTS, &labels), Some(want), "{d} {outcome:?}: {text}");
            }
            for state in DeliveryState::ALL {
                let labels = [("dialect", d), ("state", state.as_str())];
                let want = (*state != DeliveryState::Pending).then_some(1.0);
                let got = value(DELIVERIES_ENDED, &labels);
                assert_eq!(got, want, "{d} {state:?}: {text}");
            }
            let count = value(&format!("{ATTEMPT_SECONDS}_count"), &[("dialect", d)]);
            let attempts = (AttemptOutcome::ALL.len() * (i + 1)) as f64 + states;
            assert_eq!(count, Some(attempts), "{d}: {text}");
        }
        assert_eq!(value(STARTED, &[("via", "handoff")]), Some(3.0));
        assert_eq!(value(STARTED, &[("via", "claim")]), Some(2.0));
    }
}
