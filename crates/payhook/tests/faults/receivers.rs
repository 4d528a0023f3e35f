//! The merchants of the network scenarios, on raw TCP so each can misbehave the way a real
//! server does: a [`Merchant`] that answers (200, or 500 to the first request of every n-th
//! callback, so that callback needs a retry whatever else arrives), accepts and never
//! answers ([`Mode::Silent`]), or trickles its answer one byte a second ([`Mode::Trickle`]) —
//! switchable while the test runs, so the same URL can get well again — and a [`Dns`] server
//! that never answers until told to.
//!
//! Every request is recorded with its arrival time and what it was answered, so a scenario can
//! count callbacks, duplicates and the time from a report to its callback.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How a [`Merchant`] treats the requests it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Answers at once: 200, or 500 to the first request of every `fail_every`-th callback.
    Answer = 0,
    /// Reads the request and never answers (until the client gives up).
    Silent = 1,
    /// Answers 200, one byte a second.
    Trickle = 2,
}

/// One request a merchant got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub webhook_id: String,
    pub operation_id: String,
    pub seq: i64,
    /// The status it was answered (written whole); `None`: silent, or trickled.
    pub answered: Option<u16>,
}

impl Hit {
    pub fn ok(&self) -> bool {
        self.answered.is_some_and(|s| (200..300).contains(&s))
    }
}

struct State {
    mode: AtomicU8,
    fail_every: Option<usize>,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    hits: Vec<Hit>,
    /// The callbacks (webhook ids) seen so far.
    seen: HashSet<String>,
}

impl State {
    /// Records `hit`, deciding its answer first when the merchant answers.
    fn record(&self, mut hit: Hit, mode: Mode) -> Option<u16> {
        let mut book = self.book.lock().expect("book lock");
        if mode == Mode::Answer {
            let first = book.seen.insert(hit.webhook_id.clone());
            let nth = book.seen.len();
            let fail = first && self.fail_every.is_some_and(|every| nth.is_multiple_of(every));
            hit.answered = Some(if fail { 500 } else { 200 });
        }
        let answered = hit.answered;
        book.hits.push(hit);
        answered
    }
}

/// A merchant's HTTP endpoint on loopback (keep-alive, HTTP/1.1).
pub struct Merchant {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Merchant {
    pub async fn start(mode: Mode, fail_every: Option<usize>) -> Merchant {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a merchant");
        let addr = listener.local_addr().expect("merchant address");
        let state =
            Arc::new(State { mode: AtomicU8::new(mode as u8), fail_every, book: Mutex::default() });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, serving.clone()));
            }
        });
        Merchant { addr, state, task }
    }

    /// Its callback URL (on an IP literal).
    pub fn url(&self) -> String {
        format!("http://{}/cb", self.addr)
    }

    /// Changes how requests arriving from now on are treated.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.book.lock().expect("book lock").hits.clone()
    }
}

impl Drop for Merchant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mode(state: &State) -> Mode {
    match state.mode.load(Ordering::SeqCst) {
        0 => Mode::Answer,
        1 => Mode::Silent,
        _ => Mode::Trickle,
    }
}

/// Serves one connection's requests in turn.
async fn serve(mut conn: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut conn, &mut buf).await {
        let mode = mode(&state);
        let answered = state.record(hit(&head, &body), mode);
        match (mode, answered) {
            (Mode::Answer, Some(status)) => {
                if conn.write_all(response(status).as_bytes()).await.is_err() {
                    return;
                }
            }
            (Mode::Trickle, _) => return trickle(conn).await,
            _ => return drain(conn).await,
        }
    }
}

fn response(status: u16) -> String {
    let reason = if status == 200 { "OK" } else { "Internal Server Error" };
    format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 2\r\n\r\nok")
}

/// Reads until the client closes, answering nothing.
async fn drain(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Writes a whole 200 answer one byte a second, until the client hangs up.
async fn trickle(mut conn: TcpStream) {
    for byte in response(200).bytes() {
        if conn.write_all(&[byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One request's head (lower-cased header names) and body; `None` when the client closed.
async fn read_request(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let head: HashMap<String, String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = head.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < end + 4 + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[end + 4..end + 4 + length].to_vec();
    buf.drain(..end + 4 + length);
    Some((head, body))
}

fn hit(head: &HashMap<String, String>, body: &[u8]) -> Hit {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    Hit {
        at: Instant::now(),
        webhook_id: head.get("webhook-id").cloned().unwrap_or_default(),
        operation_id: v["data"]["id"].as_str().unwrap_or_default().to_owned(),
        seq: v["data"]["seq"].as_i64().unwrap_or(-1),
        answered: None,
    }
}

/// A DNS server on `127.0.0.53:53` (UDP and TCP) — the resolver `scripts/faults` names in the
/// namespace's resolv.conf. It counts queries and answers none, until [`Dns::answer`]: then
/// every A query gets the address given, any other query an empty answer.
pub struct Dns {
    queries: Arc<AtomicUsize>,
    answer: Arc<Mutex<Option<IpAddr>>>,
    tasks: Vec<JoinHandle<()>>,
}

pub const RESOLVER: &str = "127.0.0.53:53";

impl Dns {
    pub async fn start() -> Dns {
        let udp = UdpSocket::bind(RESOLVER).await.expect("bind the resolver (UDP)");
        let tcp = TcpListener::bind(RESOLVER).await.expect("bind the resolver (TCP)");
        let queries = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(None));
        let (q, a) = (queries.clone(), answer.clone());
        let on_udp = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                q.fetch_add(1, Ordering::SeqCst);
                let ip = *a.lock().expect("answer lock");
                if let Some(reply) = ip.and_then(|ip| reply(&buf[..n], ip)) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        let q = queries.clone();
        // Over TCP it only ever listens: glibc falls back to TCP only after a truncated answer.
        let on_tcp = tokio::spawn(async move {
            while let Ok((conn, _)) = tcp.accept().await {
                q.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut conn = conn;
                    let mut buf = [0u8; 512];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Dns { queries, answer, tasks: vec![on_udp, on_tcp] }
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// From now on, A queries are answered with `ip`.
    pub fn answer(&self, ip: IpAddr) {
        *self.answer.lock().expect("answer lock") = Some(ip);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The answer to a one-question query: `ip` for an A question, no records for any other.
fn reply(query: &[u8], ip: IpAddr) -> Option<Vec<u8>> {
    let IpAddr::V4(v4) = ip else { return None };
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + usize::from(query[at]);
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let is_a = qtype == 1;
    let mut out = query.get(..question_end)?.to_vec();
    out[2] = 0x81; // a response, recursion desired
    out[3] = 0x80; // recursion available, no error
    out[6..8].copy_from_slice(&[0, u8::from(is_a)]); // answers
    out[8..12].copy_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    if is_a {
        // The name by pointer to the question, A, IN, TTL 0, four bytes of address.
        out.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out.extend_from_slice(&v4.octets());
    }
    Some(out)
}
