//! The outbound HTTP client: one keep-alive pool, a total timeout, redirects never followed,
//! and a resolver that drops forbidden addresses, so the connection goes to exactly an address
//! that passed the SSRF check.

use crate::ssrf::TargetPolicy;
use payhook_core::dialect::{Method, Outgoing};
use payhook_core::model::{ErrorKind, ATTEMPT_BODY_LIMIT};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The most of a response body payhook reads (acknowledgement bodies are tiny).
const READ_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The whole exchange, connect to last body byte.
    pub timeout: Duration,
    pub targets: TargetPolicy,
    pub user_agent: String,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            timeout: Duration::from_secs(15),
            targets: TargetPolicy::default(),
            user_agent: format!("payhook/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What came back from one exchange.
#[derive(Debug, Clone)]
pub enum SendResult {
    Response {
        status: u16,
        retry_after: Option<String>,
        /// Up to 64 KiB of the body.
        body: Vec<u8>,
    },
    Failed {
        kind: ErrorKind,
        detail: String,
    },
}

impl SendResult {
    /// The body as kept in the attempt log (first 4 KiB, lossy UTF-8).
    pub fn logged_body(body: &[u8]) -> String {
        let cut = &body[..body.len().min(ATTEMPT_BODY_LIMIT)];
        String::from_utf8_lossy(cut).into_owned()
    }
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    targets: TargetPolicy,
}

/// Raised by the resolver when every address of a host is forbidden.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to forbidden addresses")]
struct Blocked {
    host: String,
}

/// Raised by the resolver when the name does not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {cause}")]
struct DnsFailure {
    host: String,
    cause: String,
}

struct GuardedResolver {
    targets: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| DnsFailure { host: host.clone(), cause: e.to_string() })?
                .collect();
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| targets.permits(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked { host }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl Sender {
    pub fn new(config: &SenderConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .dns_resolver(Arc::new(GuardedResolver { targets: config.targets }))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Sender { client, targets: config.targets })
    }

    /// Checks the URL's scheme and, for an IP-literal host (which skips the resolver), the
    /// address itself.
    fn precheck(&self, url: &str) -> Result<reqwest::Url, (ErrorKind, String)> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| (ErrorKind::BlockedTarget, format!("invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err((ErrorKind::BlockedTarget, format!("scheme {} refused", parsed.scheme())));
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.targets.permits(*ip)) {
            return Err((ErrorKind::BlockedTarget, format!("{ip} is a forbidden address")));
        }
        Ok(parsed)
    }

    /// Sends one request and reads (a bounded part of) the answer. Never panics, never
    /// follows a redirect.
    pub async fn send(&self, out: &Outgoing) -> SendResult {
        let url = match self.precheck(&out.url) {
            Ok(u) => u,
            Err((kind, detail)) => return SendResult::Failed { kind, detail },
        };
        let method = match out.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut req = self.client.request(method, url);
        for (k, v) in &out.headers {
            req = req.header(k, v);
        }
        if out.method == Method::Post {
            req = req.body(out.body.clone());
        }
        match req.send().await {
            Ok(resp) => read_response(resp).await,
            Err(e) => classify_error(&e),
        }
    }
}

async fn read_response(mut resp: reqwest::Response) -> SendResult {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = READ_LIMIT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= READ_LIMIT {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return classify_error(&e),
        }
    }
    SendResult::Response { status, retry_after, body }
}

fn chain_has<T: StdError + 'static>(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found.to_string());
        }
        source = err.source();
    }
    None
}

fn full_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn classify_error(e: &reqwest::Error) -> SendResult {
    let (kind, detail) = if let Some(d) = chain_has::<Blocked>(e) {
        (ErrorKind::BlockedTarget, d)
    } else if let Some(d) = chain_has::<DnsFailure>(e) {
        (ErrorKind::Dns, d)
    } else if e.is_timeout() {
        (ErrorKind::Timeout, full_chain(e))
    } else {
        let text = full_chain(e);
        let lower = text.to_ascii_lowercase();
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            (ErrorKind::Tls, text)
        } else {
            (ErrorKind::Connect, text)
        }
    };
    SendResult::Failed { kind, detail }
}
