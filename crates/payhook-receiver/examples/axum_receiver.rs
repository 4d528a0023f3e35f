//! A merchant's callback endpoint in axum: one route per dialect, each verified and parsed by
//! payhook-receiver, answered as the dialect expects.
//!
//! ```sh
//! PAYHOOK_SECRET='whsec_…' cargo run -p payhook-receiver --example axum_receiver
//! ```
//! Point the merchant's `callback_url` at `http://127.0.0.1:9100/standard` (or `/ws2mpi`,
//! `/ecom`, `/uapay`; XPAY's success and fail URLs at `/xpay`). For encrypted ECOM bodies, put
//! the private P-384 JWK in `PAYHOOK_PRIVATE_JWK`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use payhook_receiver::{Callback, Dialect, Incoming, Receiver};
use std::sync::Arc;

/// One receiver per dialect, all with this merchant's credentials.
struct Receivers(Vec<Receiver>);

impl Receivers {
    fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        let secret = std::env::var("PAYHOOK_SECRET")?;
        let key: Option<serde_json::Value> = match std::env::var("PAYHOOK_PRIVATE_JWK") {
            Ok(text) => Some(serde_json::from_str(&text)?),
            Err(_) => None,
        };
        let mut all = Vec::new();
        for dialect in Dialect::ALL {
            let mut r = Receiver::new(dialect);
            if !matches!(dialect, Dialect::Xpay | Dialect::Ws2mpi) {
                r = r.with_secret(&secret)?;
            }
            if let (Dialect::Ecom, Some(key)) = (dialect, &key) {
                r = r.with_private_key(key)?;
            }
            all.push(r);
        }
        Ok(Receivers(all))
    }

    fn get(&self, dialect: Dialect) -> &Receiver {
        self.0.iter().find(|r| r.dialect() == dialect).expect("one receiver per dialect")
    }
}

/// Verifies and parses, acts on the callback, and answers.
fn handle(
    receiver: &Receiver,
    query: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let incoming = Incoming { query: query.as_deref(), headers, body };
    match receiver.receive(&incoming) {
        Ok(callback) => {
            apply(&callback);
            let answer = callback.answer();
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            (status, answer.body.unwrap_or_default()).into_response()
        }
        // Refuse what does not verify: payhook retries, and a forger gets nothing.
        Err(e) => (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
    }
}

/// Your business logic: mark the order paid, once (deliveries repeat on retries).
fn apply(callback: &Callback) {
    match callback {
        Callback::Standard(ev) => println!("order {} is {}", ev.data.external_id, ev.data.status),
        Callback::Xpay(cb) => {
            println!("XPAY operation {} state {}", cb.xray_operation_id, cb.state)
        }
        Callback::Ws2mpi(cb) => {
            println!("order {} orderStatus {:?}", cb.order_number, cb.order_status)
        }
        Callback::Ecom(order) => {
            println!("order {} is {}", order.merchant_request_id, order.order_status)
        }
        Callback::Uapay(p) => println!("order {} is {}", p.external_id, p.payment_status),
        Callback::Alert(a) => println!("operator alert {} {:?}", a.event_type, a.data.get("url")),
    }
}

fn route(dialect: Dialect) -> axum::routing::MethodRouter<Arc<Receivers>> {
    any(
        move |State(r): State<Arc<Receivers>>,
              RawQuery(q): RawQuery,
              headers: HeaderMap,
              body: Bytes| async move { handle(r.get(dialect), q, &headers, &body) },
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let receivers = Arc::new(Receivers::from_env()?);
    let app = Dialect::ALL
        .into_iter()
        .fold(Router::new(), |app, d| app.route(&format!("/{d}"), route(d)))
        .with_state(receivers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9100").await?;
    println!("receiving on http://{}/{{standard,xpay,ws2mpi,ecom,uapay}}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
