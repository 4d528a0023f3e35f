//! `payhook listen`: a local receiver for trying payhook out and rehearsing incidents. It
//! verifies every callback with payhook-receiver (the merchant-side library, so what it accepts
//! is what a merchant's code accepts), prints it readably, and answers as the dialect expects —
//! or with the status given by `--respond`. `payhook demo` runs the same receiver, one route per
//! dialect.

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Args;
use payhook_receiver::{Callback, Dialect, Incoming, ReceiveError, Receiver};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Port on 127.0.0.1 to listen on.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// The dialect to expect: standard, xpay, ws2mpi, ecom or uapay.
    #[arg(long, default_value = "standard")]
    pub dialect: String,
    /// The merchant's `whsec_…` secret, to verify signatures (standard, ecom) and tokens (uapay).
    #[arg(long, env = "PAYHOOK_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The merchant's private EC P-384 JWK (inline JSON or a file), to decrypt ECOM bodies.
    #[arg(long, env = "PAYHOOK_LISTEN_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Answer every callback with this HTTP status instead (rehearse failures: 500, 410, 429…).
    #[arg(long)]
    pub respond: Option<u16>,
}

/// One dialect's receiving end: requests whose path starts with `prefix`.
pub struct Route {
    pub prefix: String,
    pub receiver: Receiver,
    /// Whether signatures can be checked (a secret was given, or the dialect has none).
    pub checked: bool,
}

impl Route {
    /// A route for `dialect` with the merchant's secret and private key, as available.
    pub fn new(
        prefix: &str,
        dialect: Dialect,
        secret: Option<&str>,
        key: Option<&serde_json::Value>,
    ) -> anyhow::Result<Route> {
        let mut receiver = Receiver::new(dialect);
        if let Some(secret) = secret {
            receiver = receiver.with_secret(secret).context("--secret")?;
        }
        if let Some(key) = key {
            receiver = receiver.with_private_key(key).context("--key")?;
        }
        let checked = secret.is_some() || matches!(dialect, Dialect::Xpay | Dialect::Ws2mpi);
        Ok(Route { prefix: prefix.to_owned(), receiver, checked })
    }
}

/// What arrived and how it was answered, for `payhook demo` to follow the walk-through.
#[derive(Debug)]
pub struct Received {
    pub dialect: Dialect,
    pub path: String,
    pub result: Result<Callback, ReceiveError>,
    pub answered: u16,
}

/// The receiver's configuration, shared by every request.
pub struct ListenState {
    pub routes: Vec<Route>,
    /// `--respond`: overrides the dialect's answer.
    pub respond: Option<StatusCode>,
    /// Where each callback is reported after it is answered (the demo listens here).
    pub report: Option<mpsc::UnboundedSender<Received>>,
}

impl ListenState {
    /// The state of `payhook listen` from its flags.
    pub fn from_args(args: &ListenArgs) -> anyhow::Result<ListenState> {
        let dialect: Dialect = args.dialect.parse().context("--dialect")?;
        let key = args.key.as_deref().map(read_key).transpose()?;
        let route = Route::new("/", dialect, args.secret.as_deref(), key.as_ref())?;
        let respond = args
            .respond
            .map(|code| StatusCode::from_u16(code).context("--respond is an HTTP status"))
            .transpose()?;
        Ok(ListenState { routes: vec![route], respond, report: None })
    }

    /// The route with the longest prefix of `path`.
    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().filter(|r| path.starts_with(&r.prefix)).max_by_key(|r| r.prefix.len())
    }

    fn handle(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let Some(route) = self.route(uri.path()) else {
            return (StatusCode::NOT_FOUND, "no receiver on this path").into_response();
        };
        let incoming = Incoming { query: uri.query(), headers, body };
        let result = if route.checked {
            route.receiver.receive(&incoming)
        } else {
            Err(ReceiveError::NoSecret)
        };
        let (status, answer_body) = self.answer(route, &result, body);
        print_callback(route, method, uri, headers, body, &result, status);
        if let Some(report) = &self.report {
            let dialect = route.receiver.dialect();
            let path = uri.path().to_owned();
            let _ = report.send(Received { dialect, path, result, answered: status.as_u16() });
        }
        (status, answer_body).into_response()
    }

    /// The dialect's acknowledgement for a verified callback, 401 for one that failed
    /// verification, 200 when nothing could be checked; `--respond` overrides the status.
    fn answer(
        &self,
        route: &Route,
        result: &Result<Callback, ReceiveError>,
        body: &[u8],
    ) -> (StatusCode, Vec<u8>) {
        let (status, answer_body) = match result {
            Ok(cb) => {
                let a = cb.answer();
                (
                    StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
                    a.body.unwrap_or_default(),
                )
            }
            Err(ReceiveError::NoSecret) => (StatusCode::OK, unchecked_ack(route, body)),
            Err(e) => (StatusCode::UNAUTHORIZED, e.to_string().into_bytes()),
        };
        (self.respond.unwrap_or(status), answer_body)
    }
}

/// Without a secret nothing is verified, but a WS2MPI-shaped body still gets its ack.
fn unchecked_ack(route: &Route, body: &[u8]) -> Vec<u8> {
    if route.receiver.dialect() != Dialect::Ws2mpi {
        return Vec::new();
    }
    payhook_receiver::ws2mpi::Ws2mpiCallback::from_body(body)
        .map(|cb| cb.acknowledgement())
        .unwrap_or_default()
}

/// `--key`: inline JSON, or the path of a file holding it.
fn read_key(arg: &str) -> anyhow::Result<serde_json::Value> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("reading --key file {arg}"))?
    };
    serde_json::from_str(&text).context("--key is not a JSON JWK")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The verdict line: what was checked and whether it held.
fn verdict(dialect: Dialect, result: &Result<Callback, ReceiveError>) -> String {
    let what = match dialect {
        Dialect::Uapay => "token:     ",
        Dialect::Xpay | Dialect::Ws2mpi => "signature: ",
        Dialect::Standard | Dialect::Ecom => "signature: ",
    };
    let text = match (dialect, result) {
        (Dialect::Xpay | Dialect::Ws2mpi, Ok(_)) => {
            "none in this dialect (confirm with GET /v1/operations/{id})".to_owned()
        }
        (Dialect::Uapay, Ok(_)) => "valid (HS256)".to_owned(),
        (Dialect::Ecom, Ok(Callback::Ecom(o))) if o.encrypted => {
            "valid; body decrypted (JWE)".into()
        }
        (_, Ok(_)) => "valid".to_owned(),
        (_, Err(ReceiveError::NoSecret)) => "not checked (no --secret)".to_owned(),
        (_, Err(e)) => format!("INVALID: {e}"),
    };
    format!("{what}{text}")
}

/// The callback as readable text: the parsed fields when verified, else the raw body.
fn shown(result: &Result<Callback, ReceiveError>, body: &[u8]) -> String {
    let value = match result {
        Ok(Callback::Standard(_) | Callback::Alert(_)) | Err(_) => {
            serde_json::from_slice(body).ok()
        }
        Ok(Callback::Xpay(cb)) => serde_json::to_value(cb).ok(),
        Ok(Callback::Ws2mpi(cb)) => serde_json::to_value(cb).ok(),
        Ok(Callback::Ecom(order)) => serde_json::to_value(order).ok(),
        Ok(Callback::Uapay(payment)) => serde_json::to_value(payment).ok(),
    };
    value
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn print_callback(
    route: &Route,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    result: &Result<Callback, ReceiveError>,
    status: StatusCode,
) {
    let dialect = route.receiver.dialect();
    let mut out = format!("── {method} {uri}  [{dialect}]\n");
    if let Some(id) = header(headers, "webhook-id") {
        out.push_str(&format!("   webhook-id: {id}\n"));
    }
    out.push_str(&format!("   {}\n", verdict(dialect, result)));
    if !body.is_empty() || result.is_ok() {
        for line in shown(result, body).lines() {
            out.push_str(&format!("   {line}\n"));
        }
    }
    out.push_str(&format!("   → answered {}\n", status.as_u16()));
    print!("{out}");
}

/// The receiver as an axum app.
pub fn router(state: Arc<ListenState>) -> axum::Router {
    axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { state.handle(&method, &uri, &headers, &body) }
        },
    )
}

/// Serves the receiver on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ListenState>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the receiver")
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let state = Arc::new(ListenState::from_args(&args)?);
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    println!(
        "payhook listen: receiving {} callbacks on http://{}/",
        args.dialect,
        listener.local_addr()?
    );
    serve(listener, state, CancellationToken::new()).await
}
