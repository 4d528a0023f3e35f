//! payhook-api: the HTTP API (SPEC §3), built on axum.
//!
//! [`router`] takes an [`AppState`] and returns the whole API. Modules, one per resource:
//! [`merchants`], [`operations`], [`deliveries`], [`events`], [`health`]; cross-cutting:
//! [`auth`] (admin token and merchant API keys), [`limits`] (per-caller rate limits),
//! [`error`] (the one `ApiError`), [`extract`] (JSON bodies: size, depth, errors in the spec's
//! form), [`validate`] (input rules), [`views`] (response shapes).

pub mod auth;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod limits;
pub mod merchants;
pub mod operations;
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
    /// Per-caller rate limits, checked after authentication.
    pub limits: Arc<limits::RateLimits>,
}

impl AppState {
    pub(crate) fn wake_dispatcher(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/merchants", post(merchants::create))
        .route("/v1/merchants/{id}", get(merchants::read).patch(merchants::patch))
        .route("/v1/merchants/{id}/rotate-secret", post(merchants::rotate_secret))
        .route("/v1/operations", post(operations::register).get(operations::find))
        .route("/v1/operations/{id}", get(operations::read))
        .route("/v1/operations/{id}/status", post(operations::report_status))
        .route("/v1/operations/{id}/deliveries", get(deliveries::of_operation))
        .route("/v1/operations/{id}/return", get(operations::client_return))
        .route("/v1/operations/{id}/polls", get(operations::polls))
        .route("/v1/deliveries/{id}/resend", post(deliveries::resend))
        .route("/v1/events", get(events::feed))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
