//! `GET /metrics` (Prometheus text format) and the request observer that counts and logs every
//! API request by its route template.
//!
//! The `metrics` facade records; the Prometheus recorder is installed once per process, on the
//! first [`router`](crate::router) built. The dispatcher's counters live in
//! `payhook_dispatch::metrics`; the backlog gauges are read from the store at scrape time, so
//! every node reports the shared store's truth.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use tracing::Instrument;

/// Counter `{route, method, status}`: API requests by route template (never the raw path, so
/// ids do not explode the series).
pub const API_REQUESTS: &str = "payhook_api_requests_total";
/// Gauge: pending deliveries, read from the store at scrape time.
pub const PENDING: &str = "payhook_deliveries_pending";
/// Gauge: age in seconds of the oldest pending delivery (0 when none), at scrape time.
pub const OLDEST_PENDING_AGE: &str = "payhook_oldest_pending_delivery_age_seconds";

/// Gauge: age in seconds of the oldest event kept (0 when none), at scrape time: above the
/// history retention plus the purge interval, the purge is not keeping up.
pub const OLDEST_EVENT_AGE: &str = "payhook_oldest_event_age_seconds";

/// Gauge: this node's clock minus the database's, in seconds, as last measured (a node on a
/// shared PostgreSQL reads time corrected by it: docs/cluster.md "Clocks"). Absent on SQLite.
pub const CLOCK_OFFSET: &str = "payhook_clock_offset_seconds";

/// Histogram buckets (seconds) for attempt latency: 5 ms … the 15 s request timeout and beyond.
const BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0];

/// The process's recorder; `None` when another recorder was installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(build).as_ref()
}

fn build() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .expect("the bucket list is not empty");
    match builder.install_recorder() {
        Ok(handle) => {
            describe();
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics answers 503");
            None
        }
    }
}

fn describe() {
    use payhook_dispatch_names::*;
    metrics::describe_counter!(API_REQUESTS, "API requests by route template, method and status");
    metrics::describe_gauge!(PENDING, "Deliveries waiting to be delivered");
    metrics::describe_gauge!(OLDEST_PENDING_AGE, "Age of the oldest pending delivery, seconds");
    metrics::describe_counter!(ATTEMPTS, "Delivery attempts by dialect and outcome");
    metrics::describe_counter!(ENDED, "Deliveries ended by an attempt, by dialect and state");
    metrics::describe_histogram!(ATTEMPT_SECONDS, "Duration of one delivery attempt, seconds");
    metrics::describe_counter!(POLLS, "Re-polls of status sources by outcome");
    metrics::describe_counter!(STARTED, "Attempts started, by how the delivery was found");
    metrics::describe_gauge!(OLDEST_EVENT_AGE, "Age of the oldest event kept, seconds");
    metrics::describe_gauge!(
        CLOCK_OFFSET,
        "This node's clock minus the database's, seconds (corrected for; a large one means NTP is off)"
    );
    {
        use crate::merchant_health::{CONSECUTIVE_FAILURES, DISABLED, SUCCESS_RATE};
        metrics::describe_gauge!(
            CONSECUTIVE_FAILURES,
            "Most failures in a row of any of the merchant's destinations"
        );
        metrics::describe_gauge!(DISABLED, "The merchant's disabled destinations");
        metrics::describe_gauge!(
            SUCCESS_RATE,
            "Share of the merchant's attempts that delivered, over the window"
        );
    }
    metrics::describe_counter!(PURGED, "Rows the retention purge deleted, by table");
    metrics::describe_gauge!(
        PURGE_LAST_RUN,
        "When this node last finished a purge run, unix seconds"
    );
}

/// The dispatcher's metric names, repeated here so payhook-api does not depend on
/// payhook-dispatch; `tests/it/tools.rs` scrapes them all.
mod payhook_dispatch_names {
    pub const ATTEMPTS: &str = "payhook_delivery_attempts_total";
    pub const ENDED: &str = "payhook_deliveries_total";
    pub const ATTEMPT_SECONDS: &str = "payhook_delivery_attempt_duration_seconds";
    pub const POLLS: &str = "payhook_polls_total";
    pub const STARTED: &str = "payhook_delivery_attempts_started_total";
    pub const PURGED: &str = "payhook_purged_rows_total";
    pub const PURGE_LAST_RUN: &str = "payhook_purge_last_run_timestamp_seconds";
}

/// `GET /metrics`: sets the backlog gauges from the store, then renders everything.
pub async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = install() else {
        return Ok(
            (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable").into_response()
        );
    };
    let pending = state.store.pending_deliveries().await?;
    let age = pending.oldest_created_at.map_or(0.0, |t| state.clock.now().since(t).as_secs_f64());
    metrics::gauge!(PENDING).set(pending.count as f64);
    metrics::gauge!(OLDEST_PENDING_AGE).set(age);
    let oldest = state.store.oldest_event_at().await?;
    let age = oldest.map_or(0.0, |t| state.clock.now().since(t).as_secs_f64());
    metrics::gauge!(OLDEST_EVENT_AGE).set(age);
    crate::merchant_health::gauges(&state).await?;
    handle.run_upkeep();
    let content_type = [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    Ok((content_type, handle.render()).into_response())
}

/// The ids a route carries, for the request's span: `{id}` under `/v1/operations/` is an
/// operation id, under `/v1/deliveries/` a delivery id.
fn ids(route: &str, params: Option<&RawPathParams>) -> (Option<String>, Option<String>) {
    let id = params.and_then(|p| p.iter().find(|(k, _)| *k == "id").map(|(_, v)| v.to_owned()));
    if route.starts_with("/v1/operations/{id}") {
        (id, None)
    } else if route.starts_with("/v1/deliveries/{id}") {
        (None, id)
    } else {
        (None, None)
    }
}

/// Middleware: runs the request inside an `api` span (method, route template, operation and
/// delivery ids — handlers add the ids they create), then counts and logs it.
pub async fn observe(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let (mut parts, body) = req.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &()).await.ok();
    let (operation_id, delivery_id) = ids(&route, params.as_ref());
    let span = tracing::info_span!(
        "api", %method, %route,
        operation_id = tracing::field::Empty, delivery_id = tracing::field::Empty,
    );
    if let Some(id) = &operation_id {
        span.record("operation_id", id.as_str());
    }
    if let Some(id) = &delivery_id {
        span.record("delivery_id", id.as_str());
    }
    let started = Instant::now();
    let resp = next.run(Request::from_parts(parts, body)).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    metrics::counter!(API_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    let ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| match route.as_str() {
        "/healthz" | "/readyz" | "/metrics" => tracing::debug!(status, ms, "api request"),
        _ => tracing::info!(status, ms, "api request"),
    });
    resp
}
