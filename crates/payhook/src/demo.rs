//! `payhook demo`: the newcomer's first minute. It starts payhook on a temporary SQLite file
//! with a generated admin token, and a local receiver (`payhook listen`'s, one route per
//! dialect); creates one merchant per dialect through the API; walks one operation per dialect
//! to `success`; prints every callback as it arrives, verified by payhook-receiver; then shows
//! the dashboard URL and the admin token and keeps running until ctrl-c
//! (`--exit-after-walkthrough`: exits instead, 0 when every dialect's callback arrived).

use crate::app;
use crate::config::Config;
use crate::listen::{self, ListenState, Received, Route};
use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{header, Request};
use clap::Args;
use josekit::jwk::{alg::ec::EcCurve, Jwk};
use payhook_core::clock::SystemClock;
use payhook_receiver::{Callback, Dialect};
use rand::RngCore;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Port for payhook's API and dashboard on 127.0.0.1 (default 8080, or a free port when
    /// 8080 is taken; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Exit after the walk-through: 0 when every dialect's callback arrived verified and was
    /// acknowledged, 1 otherwise (for CI).
    #[arg(long)]
    pub exit_after_walkthrough: bool,
    /// How long to wait for the callbacks.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The order the walk-through goes in.
const DIALECTS: [Dialect; 5] =
    [Dialect::Standard, Dialect::Xpay, Dialect::Ws2mpi, Dialect::Ecom, Dialect::Uapay];

/// payhook's API, called in-process through the router (the same handlers as over HTTP).
struct Api {
    router: axum::Router,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))?;
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }
}

/// One dialect's merchant and operation in the walk-through.
struct Walk {
    dialect: Dialect,
    merchant: Value,
    operation_id: String,
}

/// A fresh token for this run's admin.
fn admin_token() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("demo_{hex}")
}

/// `--port`, else 8080, else any free port.
async fn bind_api(port: Option<u16>) -> anyhow::Result<TcpListener> {
    if let Some(port) = port {
        return TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"));
    }
    match TcpListener::bind(("127.0.0.1", 8080)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(("127.0.0.1", 0)).await.context("binding a free port"),
    }
}

/// A P-384 key pair for ECOM encryption: (public JWK for payhook, private JWK for the receiver).
fn p384() -> anyhow::Result<(Value, Value)> {
    let private = Jwk::generate_ec_key(EcCurve::P384).context("generating a P-384 key")?;
    let public = private.to_public_key().context("its public part")?;
    let as_value = |jwk: &Jwk| {
        let map: &Map<String, Value> = jwk.as_ref();
        Value::Object(map.clone())
    };
    Ok((as_value(&public), as_value(&private)))
}

/// The merchant body and the operation's extra fields for `dialect`, receiving under `url`.
fn merchant_body(dialect: Dialect, url: &str, public_key: &Value) -> (Value, Value) {
    let name = format!("Demo {dialect} shop");
    let mut merchant = json!({"name": name, "dialect": dialect.as_str(), "callback_url": url});
    let mut op = json!({});
    match dialect {
        Dialect::Xpay => {
            op = json!({"success_url": format!("{url}/success"), "fail_url": format!("{url}/fail")})
        }
        Dialect::Ecom => {
            merchant["encryption_key"] = public_key.clone();
            op = json!({"encrypt": true, "data": {"operation": {"rrn": "428411449064"}}});
        }
        Dialect::Uapay => merchant["allowed_callback_urls"] = json!([url]),
        Dialect::Standard | Dialect::Ws2mpi => {}
    }
    (merchant, op)
}

/// Whether a received callback is the walk-through's final one for its dialect.
fn is_final(cb: &Callback) -> bool {
    match cb {
        Callback::Standard(ev) => ev.data.status == "success",
        Callback::Xpay(x) => x.state == payhook_receiver::xpay::STATE_SUCCESS,
        Callback::Ws2mpi(w) => w.order_status == Some(2),
        Callback::Ecom(o) => o.order_status == "SUCCESS" && o.encrypted,
        Callback::Uapay(p) => p.payment_status == "FINISHED",
        Callback::Alert(_) => false,
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let api_listener = bind_api(args.port).await?;
    let api_addr = api_listener.local_addr()?;
    let mut config = Config::defaults();
    config.database = dir.path().join("payhook.db").to_string_lossy().into_owned();
    config.admin_token = Some(admin_token());
    config.allow_private_targets = true;
    config.poll_interval = Duration::from_millis(100);
    config.listen = api_addr.to_string();
    let services = app::build(&config, Arc::new(SystemClock)).await?;
    let token = config.admin_token.clone().expect("set above");
    let api = Api { router: payhook_api::router(services.state.clone()), token: token.clone() };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move { app::serve(api_listener, services, &config, shutdown).await }
    });
    println!(
        "payhook demo: payhook on http://{api_addr} (temporary SQLite, private targets allowed)"
    );

    let outcome = walkthrough(&api, &args, &shutdown).await;
    match &outcome {
        Ok(()) => println!("\n✔ every dialect's callback arrived, verified and acknowledged"),
        Err(e) => println!("\n✘ walk-through failed: {e:#}"),
    }
    println!("\n  dashboard:   http://{api_addr}/ui   (log in with the admin token)");
    println!("  admin token: {token}");
    println!("  metrics:     http://{api_addr}/metrics");
    println!(
        "  API:         curl -H 'authorization: Bearer {token}' http://{api_addr}/v1/operations"
    );
    if !args.exit_after_walkthrough {
        println!(
            "\npayhook demo keeps running; ctrl-c to stop (the temporary database goes with it)."
        );
        tokio::signal::ctrl_c().await.context("waiting for ctrl-c")?;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    drop(dir);
    outcome
}

/// Merchants, receiver, operations, and the wait for every dialect's final callback.
async fn walkthrough(
    api: &Api,
    args: &DemoArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let receiver = TcpListener::bind(("127.0.0.1", 0)).await.context("binding the receiver")?;
    let base = format!("http://{}", receiver.local_addr()?);
    println!("payhook demo: receiver on {base} (one route per dialect)\n");
    let (public, private) = p384()?;
    let mut walks = Vec::new();
    let mut routes = Vec::new();
    for dialect in DIALECTS {
        let url = format!("{base}/{dialect}");
        let (merchant_body, op_extra) = merchant_body(dialect, &url, &public);
        let merchant = api.call("POST", "/v1/merchants", Some(merchant_body)).await?;
        let secret = merchant["signing_secret"].as_str().context("signing_secret")?;
        let key = (dialect == Dialect::Ecom).then_some(&private);
        routes.push(Route::new(&format!("/{dialect}"), dialect, Some(secret), key)?);
        println!(
            "created merchant {:<38} dialect {:<8} → {url}",
            merchant["id"].as_str().unwrap_or("?"),
            dialect.as_str()
        );
        walks.push((dialect, merchant, op_extra));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let state = Arc::new(ListenState { routes, respond: None, report: Some(tx) });
    tokio::spawn(listen::serve(receiver, state, shutdown.clone()));

    let mut started = Vec::new();
    for (dialect, merchant, extra) in walks {
        started.push(start_operation(api, dialect, merchant, extra).await?);
    }
    println!();
    wait_for_callbacks(&mut rx, args.timeout).await?;
    confirm_delivered(api, &started, args.timeout).await
}

/// Registers the dialect's operation and reports `pending`, then `success`.
async fn start_operation(
    api: &Api,
    dialect: Dialect,
    merchant: Value,
    extra: Value,
) -> anyhow::Result<Walk> {
    let mid = merchant["id"].as_str().context("merchant id")?;
    let mut body = json!({
        "merchant_id": mid, "external_id": format!("demo-{dialect}-1"),
        "amount": 10_000, "currency": "UAH", "kind": "purchase",
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let op = api.call("POST", "/v1/operations", Some(body)).await?;
    let id = op["id"].as_str().context("operation id")?.to_owned();
    let walk = Walk { dialect, merchant, operation_id: id };
    let mut owed = 0;
    for status in ["pending", "success"] {
        println!("operation {} ({dialect}): report {status}", walk.operation_id);
        let path = format!("/v1/operations/{}/status", walk.operation_id);
        api.call("POST", &path, Some(json!({"status": status}))).await?;
        // Let this callback land before the next change: a newer status would (rightly)
        // supersede it, and the walk-through means to show each one.
        let now_owed = settled(api, &walk, Duration::from_secs(10)).await?.len();
        if now_owed == owed {
            println!("   (no callback: {dialect} calls back on final outcomes only)");
        }
        owed = now_owed;
    }
    Ok(walk)
}

/// The states of the walk's deliveries once none is pending, or an error after `timeout`.
async fn settled(api: &Api, walk: &Walk, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let path = format!("/v1/operations/{}/deliveries", walk.operation_id);
    loop {
        let list = api.call("GET", &path, None).await?;
        let states: Vec<String> = list["data"]
            .as_array()
            .map(|l| l.iter().filter_map(|d| d["state"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if states.iter().all(|s| s != "pending") {
            return Ok(states);
        }
        if Instant::now() > deadline {
            bail!("{} deliveries of {} are still {states:?}", walk.dialect, walk.operation_id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each dialect's final callback arrived verified (the receiver prints each).
async fn wait_for_callbacks(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut done: BTreeMap<&str, bool> = DIALECTS.iter().map(|d| (d.as_str(), false)).collect();
    while done.values().any(|ok| !ok) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(received)) = tokio::time::timeout(left, rx.recv()).await else {
            let missing: Vec<_> = done.iter().filter(|(_, ok)| !**ok).map(|(d, _)| *d).collect();
            bail!("no verified final callback within {timeout:?} for: {}", missing.join(", "));
        };
        match &received.result {
            Ok(cb) if is_final(cb) => {
                done.insert(received.dialect.as_str(), true);
            }
            Ok(_) => {}
            Err(e) => bail!("a {} callback failed verification: {e}", received.dialect),
        }
    }
    Ok(())
}

/// Checks through the API that every delivery of every walk ended `delivered`: payhook took the
/// receiver's answers as acknowledgements.
async fn confirm_delivered(api: &Api, walks: &[Walk], timeout: Duration) -> anyhow::Result<()> {
    for walk in walks {
        let states = settled(api, walk, timeout).await?;
        if states.is_empty() || states.iter().any(|s| s != "delivered") {
            bail!("{} deliveries of {} are {states:?}", walk.dialect, walk.operation_id);
        }
        let name = walk.merchant["name"].as_str().unwrap_or("?");
        println!(
            "✔ {:<8} {} callback(s) delivered and acknowledged ({name})",
            walk.dialect.as_str(),
            states.len()
        );
    }
    Ok(())
}
