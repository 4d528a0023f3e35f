//! `payhook listen`: a local receiver for trying payhook out. It prints every callback and,
//! given the merchant's secret, checks its Standard Webhooks signature.

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use clap::Args;
use payhook_core::signing::{verify, SigningSecret};
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Port on 127.0.0.1 to listen on.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// The merchant's `whsec_…` secret, to verify signatures.
    #[arg(long, env = "PAYHOOK_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The HTTP status to answer with (rehearse failures with 500, 410, …).
    #[arg(long, default_value_t = 200)]
    pub respond: u16,
}

struct Listener {
    secret: Option<SigningSecret>,
    respond: StatusCode,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

impl Listener {
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> &'static str {
        let Some(secret) = &self.secret else { return "not checked (no --secret)" };
        let ts = header(headers, "webhook-timestamp").parse::<i64>().unwrap_or(0);
        let id = header(headers, "webhook-id");
        match verify(secret, id, ts, body, header(headers, "webhook-signature")) {
            Ok(()) => "valid",
            Err(_) => "INVALID",
        }
    }

    fn print(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
        println!("── {method} {uri}");
        println!("   webhook-id: {}", header(headers, "webhook-id"));
        println!("   signature:  {}", self.check(headers, body));
        let text = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        for line in text.lines() {
            println!("   {line}");
        }
        println!("   → answered {}", self.respond.as_u16());
    }
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let secret = args.secret.as_deref().map(SigningSecret::parse).transpose()?;
    let respond = StatusCode::from_u16(args.respond).context("--respond is an HTTP status")?;
    let state = Arc::new(Listener { secret, respond });
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                state.print(&method, &uri, &headers, &body);
                state.respond
            }
        },
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    println!("payhook listen: receiving callbacks on http://{}/", listener.local_addr()?);
    axum::serve(listener, app).await.context("serving")
}
