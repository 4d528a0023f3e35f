//! Clocks that disagree (issue 26, part 4): two nodes on one PostgreSQL, one of them 30 s
//! ahead of the other (libfaketime moves its wall clock, not its monotonic one), sharing
//! deliveries whose first attempt is answered by a slow 500. The lease the node behind takes
//! ends 20 s after it starts (request timeout 5 s + 15 s), so a node that judged it by its own
//! clock, 30 s ahead, would take it over while the first attempt is still in flight. The
//! nodes read the database's clock instead (`cluster_clock`): no attempt may overlap another
//! of the same delivery, and every retry comes one interval (1 s) after the failure it
//! follows — not 30 s early, not 30 s late.

use crate::figures::Figures;
use crate::netns::require_namespace;
use crate::postgres::OwnPostgres;
use crate::support::{wait_for, Admin, Database, Node};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const OPERATIONS: usize = 60;
const SLOW_FIRST_ANSWER: Duration = Duration::from_secs(3);
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a fault scenario: scripts/faults runs it inside its own network namespace"]
async fn clocks_30s_apart_keep_leases_exclusive_and_retries_on_time() {
    require_namespace();
    assert!(std::path::Path::new(LIBFAKETIME).exists(), "libfaketime (Debian: faketime)");
    let pg = OwnPostgres::start();
    let db = Database::on(pg.url()).await;
    let rx = SlowFirst::start().await;
    let flags = ["--request-timeout", "5s", "--poll-interval", "100ms"];
    let on_time = Node::start("on-time", &db.url(), &flags);
    let ahead = Node::start_with_env(
        "ahead",
        &db.url(),
        &flags,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+30s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_NO_CACHE", "1"),
        ],
    );
    let bases = [&on_time, &ahead].map(|n| n.base.clone().expect("API on"));
    let admin = Admin::new(bases.to_vec());
    let retry = json!({"interval": "1s", "max_attempts": 20});
    let (merchant, _) = admin.merchant(&format!("{}/m/0", rx.base), retry).await;
    let started = Instant::now();
    for i in 0..OPERATIONS {
        let node = i % 2;
        let op = admin.register(node, &merchant, &format!("order-{i}")).await;
        admin.report(node, &op, "success", &format!("order-{i}-success")).await;
    }
    wait_for("a 200 for every delivery", Duration::from_secs(90), || async {
        (rx.delivered() == OPERATIONS).then_some(())
    })
    .await;
    let mut figures = rx.figures(started.elapsed());
    let ahead_by = clock_offset(&bases[1]).await;
    figures.note("ahead_node_offset_gauge", format!("{ahead_by:.3}s"));
    figures.print();
    assert!((29.0..31.0).contains(&ahead_by), "the ahead node's gauge says {ahead_by} s");
    assert_eq!(figures.lost(), 0);
    assert_eq!(rx.overlaps.load(Ordering::SeqCst), 0, "an attempt overlapped another");
    let (min_gap, max_gap) = rx.retry_gaps();
    assert!(min_gap >= RETRY_INTERVAL / 2, "a retry came {min_gap:?} after the failure");
    assert!(max_gap < Duration::from_secs(15), "a retry waited {max_gap:?}");
    drop((on_time, ahead));
    db.drop().await;
}

/// The node's `payhook_clock_offset_seconds`: its clock minus the database's.
async fn clock_offset(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("the node's metrics");
    let text = text.text().await.expect("the metrics' text");
    text.lines()
        .find_map(|l| l.strip_prefix("payhook_clock_offset_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no payhook_clock_offset_seconds in\n{text}"))
}

/// A receiver that answers each delivery's first request with a 500 after
/// [`SLOW_FIRST_ANSWER`] and every later one with a 200 at once, noting any request that
/// arrives while another of the same delivery is still unanswered.
struct SlowFirst {
    base: String,
    deliveries: Mutex<HashMap<String, Track>>,
    overlaps: AtomicUsize,
}

#[derive(Default)]
struct Track {
    in_flight: usize,
    /// (arrived, answered, status) of each request, in arrival order.
    requests: Vec<(Instant, Option<Instant>, u16)>,
}

impl SlowFirst {
    async fn start() -> Arc<SlowFirst> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let rx = Arc::new(SlowFirst {
            base,
            deliveries: Mutex::default(),
            overlaps: AtomicUsize::new(0),
        });
        let app =
            axum::Router::new().route("/m/0", axum::routing::post(answer)).with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rx
    }

    fn delivered(&self) -> usize {
        let deliveries = self.deliveries.lock().expect("lock");
        deliveries.values().filter(|t| t.requests.iter().any(|r| r.2 == 200)).count()
    }

    fn figures(&self, took: Duration) -> Figures {
        let deliveries = self.deliveries.lock().expect("lock");
        let mut f = Figures::new("clocks-30s-apart");
        f.expected = OPERATIONS;
        f.delivered = deliveries.values().filter(|t| t.requests.iter().any(|r| r.2 == 200)).count();
        f.duplicates = deliveries
            .values()
            .map(|t| t.requests.iter().filter(|r| r.2 == 200).count().saturating_sub(1))
            .sum();
        let requests: usize = deliveries.values().map(|t| t.requests.len()).sum();
        f.note("requests", requests).note("overlapping", self.overlaps.load(Ordering::SeqCst));
        drop(deliveries);
        let (min_gap, max_gap) = self.retry_gaps();
        f.note("retry_gap_min", format!("{:.2}s", min_gap.as_secs_f64()));
        f.note("retry_gap_max", format!("{:.2}s", max_gap.as_secs_f64()));
        f.note_duration("all_delivered_in", took);
        f
    }

    /// The shortest and longest wait from a failed answer to the next request.
    fn retry_gaps(&self) -> (Duration, Duration) {
        let deliveries = self.deliveries.lock().expect("lock");
        let gaps: Vec<Duration> = deliveries
            .values()
            .flat_map(|t| {
                t.requests
                    .windows(2)
                    .filter_map(|w| Some(w[1].0.saturating_duration_since(w[0].1?)))
            })
            .collect();
        let min = gaps.iter().min().copied().unwrap_or_default();
        let max = gaps.iter().max().copied().unwrap_or_default();
        (min, max)
    }
}

async fn answer(State(rx): State<Arc<SlowFirst>>, headers: HeaderMap) -> StatusCode {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (index, first) = {
        let mut deliveries = rx.deliveries.lock().expect("lock");
        let track = deliveries.entry(id.clone()).or_default();
        if track.in_flight > 0 {
            rx.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        track.in_flight += 1;
        let first = track.requests.is_empty();
        let status = if first { 500 } else { 200 };
        track.requests.push((Instant::now(), None, status));
        (track.requests.len() - 1, first)
    };
    if first {
        tokio::time::sleep(SLOW_FIRST_ANSWER).await;
    }
    let mut deliveries = rx.deliveries.lock().expect("lock");
    let track = deliveries.get_mut(&id).expect("tracked");
    track.in_flight -= 1;
    track.requests[index].1 = Some(Instant::now());
    if first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}
