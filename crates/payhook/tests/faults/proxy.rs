//! A small fault-injecting TCP proxy between payhook and a merchant: every chunk of bytes, in
//! either direction, arrives a random 500 ms ± 200 ms after it was sent (in order, as on a
//! long link: chunks in flight overlap, the delays do not add up), and every n-th response
//! the merchant sends is cut after its first bytes, the connection to payhook reset (RST).
//!
//! A cut answer is the one case where a merchant has the callback and payhook cannot know it:
//! the merchant answered, payhook saw a reset. Each one must cost one duplicate, no more.

use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Each chunk's delay is `latency ± jitter`, uniformly.
    pub latency: Duration,
    pub jitter: Duration,
    /// Cut every n-th response from the merchant mid-way and reset the connection.
    pub cut_every: Option<usize>,
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    responses: AtomicUsize,
    cut: AtomicUsize,
}

pub struct Proxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a loopback port of its own and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, upstream, faults, c.clone()));
            }
        });
        Proxy { addr, counts, task }
    }

    /// Responses cut mid-way (each one a connection reset).
    pub fn cut(&self) -> usize {
        self.counts.cut.load(Ordering::SeqCst)
    }

    pub fn responses(&self) -> usize {
        self.counts.responses.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one direction ended.
enum Ended {
    Closed,
    Cut,
}

/// Relays one connection. When the merchant's side ends (closed, or a response cut), the
/// other direction is stopped and payhook's socket dropped: with a zero linger, a reset.
async fn relay(client: TcpStream, upstream: SocketAddr, faults: Faults, counts: Arc<Counts>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pipe(client_read, server_write, faults, None));
    let _ = pipe(server_read, client_write, faults, Some(counts)).await;
    up.abort();
}

/// Copies `from` to `to`, each chunk delayed; on the merchant-to-payhook side (`counts` given)
/// every `cut_every`-th response is cut after its first bytes.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    faults: Faults,
    counts: Option<Arc<Counts>>,
) -> Ended {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || tx.send((Instant::now() + delay(&faults), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        let mut last = Instant::now();
        while let Some((due, bytes)) = rx.recv().await {
            last = last.max(due);
            tokio::time::sleep_until(last).await;
            if let Some(keep) = counts.as_ref().and_then(|c| cut_here(c, &faults, &bytes)) {
                let _ = to.write_all(&bytes[..keep]).await;
                // No FIN: the socket closes when the read half goes too, with a reset.
                to.forget();
                return Ended::Cut;
            }
            if to.write_all(&bytes).await.is_err() {
                return Ended::Closed;
            }
        }
        let _ = to.shutdown().await;
        Ended::Closed
    };
    tokio::select! {
        ended = writer => ended,
        () = async { reader.await; std::future::pending::<()>().await } => Ended::Closed,
    }
}

fn delay(faults: &Faults) -> Duration {
    let spread = faults.jitter.as_millis() as i64;
    let ms = faults.latency.as_millis() as i64 + rand::thread_rng().gen_range(-spread..=spread);
    Duration::from_millis(ms.max(0) as u64)
}

/// Whether this chunk (from the merchant) starts a response that is to be cut, and if so how
/// many of its bytes go through first.
fn cut_here(counts: &Counts, faults: &Faults, bytes: &[u8]) -> Option<usize> {
    if !bytes.starts_with(b"HTTP/1.") {
        return None;
    }
    let n = counts.responses.fetch_add(1, Ordering::SeqCst) + 1;
    let every = faults.cut_every?;
    if !n.is_multiple_of(every) {
        return None;
    }
    counts.cut.fetch_add(1, Ordering::SeqCst);
    Some(bytes.len() / 2)
}
