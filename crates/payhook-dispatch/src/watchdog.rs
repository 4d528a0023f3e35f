//! The re-poll watchdog (SPEC-dialects, ws2mpi section): for operations registered with a
//! `status_source` and no final status yet, ask the source on its schedule, and record what it
//! reports as an ordinary status change, so the callback follows through the delivery path.
//!
//! Every poll is logged like an attempt. A failed poll (network, HTTP status, malformed,
//! missing field, unmapped value, refused transition) counts against the budget and never stops
//! the loop. The watch is durable: its next poll time and count live in the store, leased while
//! a poll is in flight, so a restart resumes it with at most the in-flight poll repeated.

use crate::sender::{SendResult, Sender};
use payhook_core::clock::Clock;
use payhook_core::lifecycle;
use payhook_core::model::{ErrorKind, Poll, PollOutcome};
use payhook_store::{ClaimedWatch, PollClaim, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    pub node_id: String,
    /// Polls claimed per round.
    pub batch: usize,
    /// How long a claimed watch is held; must outlast the request timeout.
    pub lease: Duration,
    /// Longest sleep between looks for due polls.
    pub poll_interval: Duration,
}

pub struct Watchdog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sender: Sender,
    config: WatchdogConfig,
    /// The dispatcher's waker: a status change found by a poll is sent at once.
    dispatch_wake: Option<Arc<Notify>>,
}

impl Watchdog {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sender: Sender,
        config: WatchdogConfig,
        dispatch_wake: Option<Arc<Notify>>,
    ) -> Arc<Self> {
        Arc::new(Watchdog { store, clock, sender, config, dispatch_wake })
    }

    async fn claim(&self) -> Vec<ClaimedWatch> {
        let claim = PollClaim {
            node: &self.config.node_id,
            now: self.clock.now(),
            lease: self.config.lease,
            limit: self.config.batch,
        };
        self.store.claim_polls(&claim).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "claiming due polls failed");
            Vec::new()
        })
    }

    /// One round for tests: polls everything due now; returns the number of polls made.
    pub async fn run_once(self: &Arc<Self>) -> usize {
        let batch = self.claim().await;
        let n = batch.len();
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|w| {
                let this = self.clone();
                tokio::spawn(async move { this.poll(w).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("poll task panicked");
        }
        n
    }

    /// Polls until `shutdown`, then waits for polls in flight.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        while !shutdown.is_cancelled() {
            let batch = self.claim().await;
            let full = batch.len() == self.config.batch;
            for w in batch {
                let this = self.clone();
                tracker.spawn(async move { this.poll(w).await });
            }
            if full {
                continue;
            }
            let wait = match self.store.next_poll_at().await {
                Ok(Some(at)) => at.since(self.clock.now()),
                _ => self.config.poll_interval,
            };
            let wait = wait.clamp(Duration::from_millis(5), self.config.poll_interval);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn poll(&self, claimed: ClaimedWatch) {
        let poll = self.exchange(&claimed).await;
        let now = self.clock.now();
        let next = lifecycle::after_poll(&claimed.watch.source, &poll, now);
        tracing::info!(
            operation_id = %poll.operation_id, poll = poll.number, status = poll.response_status,
            read = poll.read.as_deref(), outcome = poll.outcome.as_str(),
            error_kind = poll.error_kind.map(|k| k.as_str()), "status source polled"
        );
        crate::metrics::poll(&poll);
        if let Err(e) = self.store.record_poll(&poll, next, now).await {
            tracing::error!(operation_id = %poll.operation_id, error = %e,
                "recording a poll failed; the lease will expire and the poll repeat");
        }
    }

    async fn exchange(&self, c: &ClaimedWatch) -> Poll {
        let request = c.watch.source.request();
        let mut poll = Poll {
            operation_id: c.watch.operation_id.clone(),
            number: c.watch.polls + 1,
            started_at: self.clock.now(),
            duration_ms: 0,
            request: format!("{} {}", request.method.as_str(), request.url),
            response_status: None,
            response_body: None,
            read: None,
            mapped: None,
            outcome: PollOutcome::Failed,
            error_kind: None,
            error: None,
        };
        let started = Instant::now();
        let result = self.sender.send(&request).await;
        poll.duration_ms = started.elapsed().as_millis() as i64;
        match result {
            SendResult::Failed { kind, detail } => fail(&mut poll, kind, detail),
            SendResult::Response { status, body, .. } => {
                poll.response_status = Some(status);
                poll.response_body = Some(SendResult::logged_body(&body));
                self.apply(c, &mut poll, status, &body).await;
            }
        }
        poll
    }

    /// Reads the answer and, when it names a new status, records it as an event.
    async fn apply(&self, c: &ClaimedWatch, poll: &mut Poll, status: u16, body: &[u8]) {
        let reading = match c.watch.source.read(status, body) {
            Ok(r) => r,
            Err(f) => {
                poll.read = f.raw;
                return fail(poll, f.kind, f.detail);
            }
        };
        let report = lifecycle::watch::report_of(&c.operation, &reading, poll.number);
        poll.read = Some(reading.raw);
        poll.mapped = Some(reading.status);
        let Some(report) = report else {
            poll.outcome = PollOutcome::Unchanged;
            return;
        };
        match self.store.report_status(report, self.clock.now()).await {
            Ok(reported) => {
                poll.outcome = PollOutcome::Changed;
                if reported.delivery.is_some() {
                    if let Some(w) = &self.dispatch_wake {
                        w.notify_one();
                    }
                }
            }
            Err(StoreError::InvalidTransition(t)) => {
                fail(poll, ErrorKind::InvalidTransition, t.to_string())
            }
            Err(e) => fail(poll, ErrorKind::Render, format!("recording the status failed: {e}")),
        }
    }
}

fn fail(poll: &mut Poll, kind: ErrorKind, detail: String) {
    poll.outcome = PollOutcome::Failed;
    poll.error_kind = Some(kind);
    poll.error = Some(detail);
}
