//! The operator's dashboard at `/ui`: static HTML, JS and CSS compiled into the binary
//! (`include_str!`), no build step. The page logs in with the admin token (kept in the tab's
//! sessionStorage) and calls the JSON API with it, like any other client.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_FRAME_OPTIONS};
use axum::response::IntoResponse;

/// Only payhook's own script, styles and API; never framed (the Resend button acts with the
/// admin token, so a page that framed the dashboard could click it).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const MERCHANTS_JS: &str = include_str!("../ui/merchants.js");
const STYLE: &str = include_str!("../ui/style.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers = [
        (CONTENT_TYPE, content_type),
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_FRAME_OPTIONS, "DENY"),
    ];
    (headers, body)
}

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn merchants_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", MERCHANTS_JS)
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
