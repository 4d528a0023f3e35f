//! payhook-api: the HTTP API (SPEC §3), built on axum.
//!
//! [`router`] takes an [`AppState`] and returns the whole API. Modules, one per resource:
//! [`merchants`], [`operations`], [`deliveries`], [`events`], [`stats`], [`health`]; for
//! operators: [`dashboard`] (the static UI at `/ui`) and [`metrics`] (`/metrics`, and the
//! request observer that counts and logs each request by route); cross-cutting: [`auth`] (admin
//! token and merchant API keys), [`error`] (the one `ApiError`), [`extract`] (JSON bodies with
//! errors in the spec's form), [`validate`] (input rules), [`views`] (response shapes).

pub mod auth;
pub mod dashboard;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod merchants;
pub mod metrics;
pub mod operations;
pub mod stats;
pub mod validate;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use payhook_core::clock::Clock;
use payhook_store::Store;
use std::sync::Arc;
use tokio::sync::Notify;

/// Request bodies over this size are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Hex SHA-256 of the admin token; the token itself is never kept.
    pub admin_token_hash: Arc<String>,
    /// Wakes this node's dispatcher when new work is stored (absent on `--no-dispatch`
    /// nodes: other nodes find the work by polling).
    pub wake: Option<Arc<Notify>>,
}

impl AppState {
    pub(crate) fn wake_dispatcher(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }
}

/// The whole API, the dashboard and `/metrics`, every request observed (see [`metrics`]).
pub fn router(state: AppState) -> Router {
    metrics::install();
    Router::new()
        .route("/v1/merchants", post(merchants::create))
        .route("/v1/merchants/{id}", get(merchants::read).patch(merchants::patch))
        .route("/v1/merchants/{id}/rotate-secret", post(merchants::rotate_secret))
        .route("/v1/operations", post(operations::register).get(operations::find_or_list))
        .route("/v1/operations/status:batch", post(operations::report_status_batch))
        .route("/v1/operations/{id}", get(operations::read))
        .route("/v1/operations/{id}/status", post(operations::report_status))
        .route("/v1/operations/{id}/deliveries", get(deliveries::of_operation))
        .route("/v1/operations/{id}/return", get(operations::client_return))
        .route("/v1/operations/{id}/polls", get(operations::polls))
        .route("/v1/operations/{id}/events", get(operations::events))
        .route("/v1/deliveries/{id}/resend", post(deliveries::resend))
        .route("/v1/events", get(events::feed))
        .route("/v1/stats/deliveries", get(stats::deliveries))
        .route("/metrics", get(metrics::scrape))
        .route("/ui", get(dashboard::index))
        .route("/ui/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::app_js))
        .route("/ui/style.css", get(dashboard::style))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(metrics::observe))
        .with_state(state)
}
