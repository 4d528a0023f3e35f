//! payhook-api: the HTTP API (SPEC §3), built on axum.
//!
//! [`router`] takes an [`AppState`] and returns the whole API. Modules, one per resource:
//! [`merchants`], [`operations`], [`deliveries`], [`events`], [`stats`], [`health`]; for
//! operators: [`dashboard`] (the static UI at `/ui`) and [`metrics`] (`/metrics`, and the
//! request observer that counts and logs each request by route); cross-cutting: [`auth`] (admin
//! token and merchant API keys), [`limits`] (per-caller rate limits), [`error`] (the one
//! `ApiError`), [`extract`] (JSON bodies: size, depth, errors in the spec's form), [`openapi`]
//! (the generated document), [`validate`] (input rules), [`views`] (response shapes).

pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod keys;
pub mod limits;
pub mod merchant_health;
pub mod merchant_state;
pub mod merchants;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod stats;
pub mod validate;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;
use payhook_core::clock::Clock;
use payhook_store::Store;
use std::sync::Arc;
use std::sync::LazyLock;
use tokio::sync::Notify;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies over this size are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Hex SHA-256 of the admin token; the token itself is never kept.
    pub admin_token_hash: Arc<String>,
    /// The outbound targets the operator allows: callback URLs, status sources and allowed
    /// prefixes whose literal host it forbids are refused at registration.
    pub targets: Arc<payhook_core::target::TargetPolicy>,
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

/// The documented routes: each comes with its `#[utoipa::path]`, so the router and the
/// OpenAPI document cannot disagree.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(merchants::create, merchants::list))
        .routes(routes!(merchants::read, merchants::patch))
        .routes(routes!(merchants::rotate_secret))
        .routes(routes!(merchant_state::pause))
        .routes(routes!(merchant_state::resume))
        .routes(routes!(merchant_state::archive))
        .routes(routes!(merchant_state::recover))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(audit::read))
        .routes(routes!(operations::register, operations::find_or_list))
        .routes(routes!(operations::report_status_batch))
        .routes(routes!(operations::read))
        .routes(routes!(operations::report_status))
        .routes(routes!(operations::events))
        .routes(routes!(deliveries::of_operation))
        .routes(routes!(operations::client_return))
        .routes(routes!(operations::polls))
        .routes(routes!(deliveries::resend))
        .routes(routes!(events::feed))
        .routes(routes!(stats::deliveries))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(openapi::serve))
}

/// The OpenAPI 3 document of [`router`].
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// [`openapi_document`] as JSON, built once.
pub fn openapi_value() -> serde_json::Value {
    static DOC: LazyLock<serde_json::Value> = LazyLock::new(|| {
        let mut doc =
            serde_json::to_value(openapi_document()).expect("the OpenAPI document serializes");
        openapi::refine(&mut doc);
        doc
    });
    DOC.clone()
}

/// The whole API, the dashboard and `/metrics`, every request observed (see [`metrics`]).
/// The dashboard's static files and `/metrics` are not JSON API routes and stay out of the
/// OpenAPI document.
pub fn router(state: AppState) -> Router {
    metrics::install();
    let (router, _) = documented().split_for_parts();
    router
        .route("/metrics", get(metrics::scrape))
        .route("/ui", get(dashboard::index))
        .route("/ui/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::app_js))
        .route("/ui/merchants.js", get(dashboard::merchants_js))
        .route("/ui/style.css", get(dashboard::style))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(metrics::observe))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .with_state(state)
}
