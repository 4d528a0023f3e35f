//! The outbound HTTP client: one keep-alive pool, a total timeout, redirects never followed,
//! and a resolver that drops forbidden addresses, so the connection goes to exactly an address
//! that passed the SSRF check.
//!
//! It is hyper's pooled client (`hyper-util`) over rustls, used directly: on the delivery path
//! reqwest's layers (redirect and timeout services, its own URL and header types, boxed
//! futures per request) were ≈ 9% of the server's CPU in the batched benchmark, and payhook
//! needs none of them (see BENCHMARKS.md).

use crate::ssrf::TargetPolicy;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use payhook_core::dialect::{Method, Outgoing};
use payhook_core::model::{ErrorKind, ATTEMPT_BODY_LIMIT};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;
type Client = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the callback client: {0}")]
pub struct BuildError(#[from] rustls::Error);

#[derive(Clone)]
pub struct Sender {
    client: Client,
    /// The same policy the client's resolver applies; checked here for IP-literal hosts.
    targets: Arc<TargetPolicy>,
    timeout: Duration,
    user_agent: HeaderValue,
    /// URLs that passed [`Sender::precheck`], with the URI they go to. Nearly every callback
    /// goes to a URL seen before; parsing and checking it again each time cost about a
    /// microsecond per attempt. Bounded: emptied when full.
    checked: Arc<Mutex<HashMap<String, hyper::Uri>>>,
}

/// URLs [`Sender`] remembers as checked, at most.
const CHECKED_URLS: usize = 1024;

/// Raised by the resolver when every address of a host is forbidden.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to forbidden addresses ({why})")]
pub struct Blocked {
    pub host: String,
    pub why: String,
}

/// Raised by the resolver when the name does not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {cause}")]
pub struct DnsFailure {
    pub host: String,
    pub cause: String,
}

/// A resolver failure: the name is unknown, or it names only forbidden addresses.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Dns(#[from] DnsFailure),
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// Name resolution, replaceable so tests can make a host resolve to whatever they need.
pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
/// Resolves a host name to its addresses (the system resolver unless a test supplies one).
pub type Lookup = Arc<dyn Fn(&str) -> LookupFuture + Send + Sync>;

/// The system resolver (getaddrinfo on a blocking thread, through tokio).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: &str| {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// The client's resolver: it resolves once, drops every address the policy forbids, and hands
/// the connector only the addresses that passed. It connects to one of exactly those, so
/// an answer that changes between a check and the connection (DNS rebinding) cannot matter:
/// there is no second resolution.
#[derive(Clone)]
pub struct GuardedResolver {
    targets: Arc<TargetPolicy>,
    lookup: Lookup,
    lookup_timeout: Option<Duration>,
}

impl GuardedResolver {
    pub fn new(targets: TargetPolicy, lookup: Lookup) -> Self {
        GuardedResolver { targets: Arc::new(targets), lookup, lookup_timeout: None }
    }

    /// Bounds each lookup: a resolver that does not answer within `timeout` is a DNS failure
    /// that says so.
    pub fn with_lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// The addresses of `host` that may be connected to, in resolver order; an error when
    /// the name does not resolve or every address is forbidden.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup = (self.lookup)(host);
        let answer = match self.lookup_timeout {
            None => lookup.await,
            Some(t) => tokio::time::timeout(t, lookup).await.unwrap_or_else(|_| {
                let why = format!("no answer from the resolver within {t:?}");
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
            }),
        };
        let addrs =
            answer.map_err(|e| DnsFailure { host: host.to_owned(), cause: e.to_string() })?;
        let mut refused = Vec::new();
        let mut allowed = Vec::new();
        for ip in addrs {
            match self.targets.refusal(ip) {
                None => allowed.push(SocketAddr::new(ip, 0)),
                Some(why) => refused.push(why),
            }
        }
        if allowed.is_empty() {
            let why =
                if refused.is_empty() { "no addresses".to_owned() } else { refused.join("; ") };
            return Err(Blocked { host: host.to_owned(), why }.into());
        }
        Ok(allowed)
    }
}

/// The resolver as the HTTP connector sees it (a `tower` service from a name to addresses).
/// The connector sets each address's port from the URL.
impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let allowed = this.resolve_checked(name.as_str()).await.map_err(|e| match e {
                ResolveError::Dns(d) => Box::new(d) as Box<dyn StdError + Send + Sync>,
                ResolveError::Blocked(b) => Box::new(b) as Box<dyn StdError + Send + Sync>,
            })?;
            Ok(allowed.into_iter())
        })
    }
}

impl Sender {
    pub fn new(config: &SenderConfig) -> Result<Self, BuildError> {
        Sender::with_lookup(config, system_lookup())
    }

    /// A sender whose host names resolve through `lookup` (tests; production uses the system
    /// resolver through [`Sender::new`]).
    pub fn with_lookup(config: &SenderConfig, lookup: Lookup) -> Result<Self, BuildError> {
        let resolver = GuardedResolver::new(config.targets.clone(), lookup)
            .with_lookup_timeout(lookup_budget(config.timeout));
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false); // the TLS layer above takes https URLs
        http.set_nodelay(true);
        // rustls with ring and Mozilla's roots. Redirects are never followed (the client has
        // no redirect layer) and no proxy is consulted (it would resolve past the guard).
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?;
        let connector = if config.targets.https_only {
            tls.https_only().enable_http1().wrap_connector(http)
        } else {
            tls.https_or_http().enable_http1().wrap_connector(http)
        };
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .unwrap_or_else(|_| HeaderValue::from_static("payhook"));
        Ok(Sender {
            client,
            targets: Arc::new(config.targets.clone()),
            timeout: config.timeout,
            user_agent,
            checked: Arc::default(),
        })
    }

    /// Checks the URL's scheme and, for an IP-literal host (which skips the resolver), the
    /// address itself. The URL is parsed by the WHATWG rules (`url`), so `0x7f000001` and
    /// `127.1` are the loopback addresses they mean; the request goes to its normalized form.
    fn precheck(&self, url: &str) -> Result<hyper::Uri, (ErrorKind, String)> {
        if let Some(uri) = self.checked.lock().expect("checked URLs").get(url) {
            return Ok(uri.clone());
        }
        let uri = self.check(url)?;
        let mut checked = self.checked.lock().expect("checked URLs");
        if checked.len() >= CHECKED_URLS {
            checked.clear();
        }
        checked.insert(url.to_owned(), uri.clone());
        Ok(uri)
    }

    /// [`Sender::precheck`] for a URL not seen before.
    fn check(&self, url: &str) -> Result<hyper::Uri, (ErrorKind, String)> {
        let blocked = |why: String| (ErrorKind::BlockedTarget, why);
        let parsed = url::Url::parse(url).map_err(|e| blocked(format!("invalid URL: {e}")))?;
        if let Some(why) = self.targets.scheme_refusal(parsed.scheme()) {
            return Err(blocked(why));
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(blocked("the URL has no host".to_owned())),
        };
        if let Some(why) = literal.and_then(|ip| self.targets.refusal(ip)) {
            return Err(blocked(why));
        }
        hyper::Uri::try_from(parsed.as_str()).map_err(|e| blocked(format!("invalid URL: {e}")))
    }

    /// Builds the request: the dialect's headers, then the user agent unless the dialect set
    /// one, and the body for a POST.
    fn request(
        &self,
        out: &Outgoing,
        uri: hyper::Uri,
    ) -> Result<hyper::Request<Full<Bytes>>, (ErrorKind, String)> {
        let (method, body) = match out.method {
            Method::Get => (hyper::Method::GET, Bytes::new()),
            Method::Post => (hyper::Method::POST, Bytes::from(out.body.clone())),
        };
        let mut req = hyper::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.reserve(out.headers.len() + 1);
        for (k, v) in &out.headers {
            let bad = |e: &dyn std::fmt::Display| (ErrorKind::Render, format!("header {k}: {e}"));
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(&e))?;
            headers.append(name, value);
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.user_agent.clone());
        }
        Ok(req)
    }

    /// Sends one request and reads (a bounded part of) the answer, all within the timeout.
    /// Never panics, never follows a redirect.
    pub async fn send(&self, out: &Outgoing) -> SendResult {
        let req = match self.precheck(&out.url).and_then(|uri| self.request(out, uri)) {
            Ok(r) => r,
            Err((kind, detail)) => return SendResult::Failed { kind, detail },
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| classify_error(&e))?;
            Ok(read_response(resp).await)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(result)) | Ok(Err(result)) => result,
            Err(_) => SendResult::Failed {
                kind: ErrorKind::Timeout,
                detail: format!("no complete answer within {:?}", self.timeout),
            },
        }
    }
}

/// How long a name lookup may take of a request's `timeout`: three quarters. A resolver that
/// never answers is then recorded as a DNS failure that says so, not as the request's
/// timeout; the rest is for connecting and the exchange (the system resolver alone would
/// wait 5 s per try and server).
fn lookup_budget(timeout: Duration) -> Duration {
    timeout * 3 / 4
}

async fn read_response(resp: hyper::Response<hyper::body::Incoming>) -> SendResult {
    let status = resp.status().as_u16();
    let retry_after =
        resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut incoming = resp.into_body();
    let mut body = Vec::new();
    while body.len() < READ_LIMIT {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    let room = READ_LIMIT - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            None => break,
            Some(Err(e)) => return classify_error(&e),
        }
    }
    SendResult::Response { status, retry_after, body }
}

fn chain_has<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found.to_string());
        }
        source = err.source();
    }
    None
}

fn full_chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn classify_error(e: &(dyn StdError + 'static)) -> SendResult {
    let (kind, detail) = if let Some(d) = chain_has::<Blocked>(e) {
        (ErrorKind::BlockedTarget, d)
    } else if let Some(d) = chain_has::<DnsFailure>(e) {
        (ErrorKind::Dns, d)
    } else {
        let text = full_chain(e);
        let lower = text.to_ascii_lowercase();
        if lower.contains("timed out") {
            (ErrorKind::Timeout, text)
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            (ErrorKind::Tls, text)
        } else {
            (ErrorKind::Connect, text)
        }
    };
    SendResult::Failed { kind, detail }
}

#[cfg(test)]
mod tests {
    //! The guard end to end at the sender: what the resolver hands the connector, and where the
    //! connection really goes. Every address used is on loopback (127.0.0.0/8).

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// A lookup answering `addrs` for every name, counting its calls.
    fn table(addrs: &[&str], calls: Arc<AtomicUsize>) -> Lookup {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        Arc::new(move |_host: &str| {
            calls.fetch_add(1, Ordering::SeqCst);
            let addrs = addrs.clone();
            Box::pin(async move { Ok(addrs) })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolver_that_never_answers_is_a_dns_failure_before_the_timeout() {
        let never: Lookup = Arc::new(|_host: &str| Box::pin(std::future::pending()));
        let config = SenderConfig { timeout: Duration::from_secs(4), ..SenderConfig::default() };
        let sender = Sender::with_lookup(&config, never).expect("client");
        let started = tokio::time::Instant::now();
        let out = get("http://merchant.example/callback".into());
        match sender.send(&out).await {
            SendResult::Failed { kind: ErrorKind::Dns, detail } => {
                assert!(detail.contains("no answer from the resolver within 3s"), "{detail}");
            }
            other => panic!("expected a DNS failure, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(3), "three quarters of the timeout");
    }

    fn policy_allowing(cidrs: &[&str]) -> TargetPolicy {
        TargetPolicy {
            allow_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            ..TargetPolicy::default()
        }
    }

    /// A bare HTTP/1.1 server on `addr` that answers every request with `reply` and counts
    /// the connections it accepted.
    async fn server(addr: &str, reply: &'static str) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind(addr).await.expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        (port, accepted)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

    fn get(url: String) -> Outgoing {
        Outgoing { method: Method::Get, url, headers: Vec::new(), body: Vec::new() }
    }

    fn blocked(result: &SendResult) -> bool {
        matches!(result, SendResult::Failed { kind: ErrorKind::BlockedTarget, .. })
    }

    #[tokio::test]
    async fn the_resolver_hands_on_only_permitted_addresses() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = table(
            &[
                "10.0.0.1",
                "93.184.216.34",
                "127.0.0.1",
                "::1",
                "169.254.169.254",
                "2606:4700::1111",
            ],
            calls.clone(),
        );
        let resolver = GuardedResolver::new(TargetPolicy::default(), lookup);
        let got = resolver.resolve_checked("shop.example").await.expect("public addresses");
        let got: Vec<IpAddr> = got.iter().map(SocketAddr::ip).collect();
        assert_eq!(got, vec![ip("93.184.216.34"), ip("2606:4700::1111")]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one resolution per connection");
    }

    #[tokio::test]
    async fn a_host_resolving_only_to_private_addresses_is_refused() {
        let lookup = table(&["10.0.0.1", "::ffff:192.168.0.1", "fd00::1"], Arc::default());
        let resolver = GuardedResolver::new(TargetPolicy::default(), lookup);
        match resolver.resolve_checked("rebind.example").await {
            Err(ResolveError::Blocked(b)) => {
                assert_eq!(b.host, "rebind.example");
                assert!(b.why.contains("RFC 1918") && b.why.contains("ULA"), "{}", b.why);
            }
            other => panic!("expected Blocked, got {other:?}"),
        }
        let allowed = GuardedResolver::new(
            policy_allowing(&["10.0.0.0/8"]),
            table(&["10.0.0.1", "fd00::1"], Arc::default()),
        );
        let got = allowed.resolve_checked("internal.example").await.expect("allow-listed");
        assert_eq!(got, vec![SocketAddr::new(ip("10.0.0.1"), 0)]);
    }

    #[tokio::test]
    async fn the_connection_goes_to_the_checked_address_only() {
        // Two servers on one port: 127.0.0.1 (allow-listed) and 127.0.0.2 (forbidden loopback).
        let (port, good) = server("127.0.0.1:0", OK).await;
        let (_, bad) = server(&format!("127.0.0.2:{port}"), OK).await;
        let calls = Arc::new(AtomicUsize::new(0));
        // The forbidden address comes first, as a rebinding DNS server would put it.
        let lookup = table(&["127.0.0.2", "127.0.0.1"], calls.clone());
        let config =
            SenderConfig { targets: policy_allowing(&["127.0.0.1/32"]), ..Default::default() };
        let sender = Sender::with_lookup(&config, lookup).expect("client");
        let result = sender.send(&get(format!("http://merchant.test:{port}/cb"))).await;
        assert!(matches!(result, SendResult::Response { status: 200, .. }), "{result:?}");
        assert_eq!(good.load(Ordering::SeqCst), 1, "the checked address got the connection");
        assert_eq!(bad.load(Ordering::SeqCst), 0, "the forbidden address was never contacted");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "resolved once, checked once, used once");

        // Now the name resolves to the forbidden address alone: nothing is sent anywhere.
        let only_bad = table(&["127.0.0.2"], Arc::default());
        let sender = Sender::with_lookup(&config, only_bad).expect("client");
        let result = sender.send(&get(format!("http://rebound.test:{port}/cb"))).await;
        assert!(blocked(&result), "{result:?}");
        assert_eq!(bad.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn ip_literals_are_checked_without_the_resolver() {
        let (port, hits) = server("127.0.0.1:0", OK).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let sender =
            Sender::with_lookup(&SenderConfig::default(), table(&["8.8.8.8"], calls.clone()))
                .expect("client");
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://0x7f000001:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://127.1:{port}/"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "http://[fd00::1]/".to_owned(),
            "http://[64:ff9b::a9fe:a9fe]/".to_owned(),
            "http://[2002:a9fe:a9fe::1]/".to_owned(),
        ] {
            // Twice: a refusal is never remembered as a checked URL.
            for _ in 0..2 {
                let result = sender.send(&get(url.clone())).await;
                assert!(blocked(&result), "{url}: {result:?}");
            }
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "IP literals never reach the resolver");
    }

    #[tokio::test]
    async fn only_http_and_https_and_with_https_only_only_https() {
        let sender = Sender::new(&SenderConfig::default()).expect("client");
        for url in ["ftp://files.example/x", "file:///etc/passwd", "gopher://x.example/"] {
            assert!(blocked(&sender.send(&get(url.into())).await), "{url}");
        }
        let (port, hits) = server("127.0.0.1:0", OK).await;
        let config = SenderConfig {
            targets: TargetPolicy { allow_private: true, https_only: true, ..Default::default() },
            ..Default::default()
        };
        let strict = Sender::new(&config).expect("client");
        let result = strict.send(&get(format!("http://127.0.0.1:{port}/"))).await;
        assert!(blocked(&result), "{result:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    /// A server on loopback that keeps the head and body of the one request it gets, and
    /// answers `reply` once the declared body has arrived.
    async fn recording_server(
        reply: &'static str,
    ) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&seen).into_owned();
                let Some(end) = text.find("\r\n\r\n") else { continue };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = tx.send(text);
                    return;
                }
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn a_post_carries_its_headers_body_host_and_user_agent_and_the_answer_is_read() {
        const ANSWER: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\n\
                              content-length: 4\r\nconnection: close\r\n\r\nbusy";
        let (port, request) = recording_server(ANSWER).await;
        let config = SenderConfig {
            targets: TargetPolicy { allow_private: true, ..Default::default() },
            user_agent: "payhook/test".into(),
            ..Default::default()
        };
        let sender = Sender::new(&config).expect("client");
        let out = Outgoing {
            method: Method::Post,
            url: format!("http://127.0.0.1:{port}/cb?x=1"),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), "msg_1".into()),
            ],
            body: br#"{"id":"op_1"}"#.to_vec(),
        };
        let result = sender.send(&out).await;
        match result {
            SendResult::Response { status, retry_after, body } => {
                assert_eq!(status, 503);
                assert_eq!(retry_after.as_deref(), Some("7"));
                assert_eq!(body, b"busy");
            }
            other => panic!("expected a response, got {other:?}"),
        }
        let request = request.await.expect("the server saw the request");
        let lower = request.to_ascii_lowercase();
        assert!(request.starts_with("POST /cb?x=1 HTTP/1.1\r\n"), "{request}");
        for line in [
            format!("host: 127.0.0.1:{port}"),
            "user-agent: payhook/test".into(),
            "content-type: application/json".into(),
            "webhook-id: msg_1".into(),
            "content-length: 13".into(),
        ] {
            assert!(lower.contains(&format!("\r\n{line}\r\n")), "{line} missing in {request}");
        }
        assert!(request.ends_with(r#"{"id":"op_1"}"#), "{request}");
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_timeout_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        // Accepts and reads, never answers.
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                    }
                });
            }
        });
        let config = SenderConfig {
            timeout: Duration::from_millis(200),
            targets: TargetPolicy { allow_private: true, ..Default::default() },
            ..Default::default()
        };
        let sender = Sender::new(&config).expect("client");
        let result = sender.send(&get(format!("http://127.0.0.1:{port}/"))).await;
        assert!(
            matches!(result, SendResult::Failed { kind: ErrorKind::Timeout, .. }),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn redirects_are_never_followed() {
        let (target, followed) = server("127.0.0.1:0", OK).await;
        let reply: &'static str = Box::leak(
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target}/inner\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (port, _) = server("127.0.0.1:0", reply).await;
        let config = SenderConfig {
            targets: TargetPolicy { allow_private: true, ..Default::default() },
            ..Default::default()
        };
        let sender = Sender::new(&config).expect("client");
        let result = sender.send(&get(format!("http://127.0.0.1:{port}/"))).await;
        assert!(matches!(result, SendResult::Response { status: 302, .. }), "{result:?}");
        assert_eq!(followed.load(Ordering::SeqCst), 0);
    }
}
