//! The delivery loop: claim → render → send → classify → judge → record; and, on stores that
//! support it, the hand-off (a delivery due at once arrives leased, without a claim). What an
//! answer means for the delivery is `payhook_core::lifecycle::judge`'s decision.
//!
//! Concurrency is bounded twice: `max_in_flight` attempts per node, and `per_host_limit` per
//! destination host, enforced by `Slots` for hand-offs and claims alike, so a slow or dead
//! merchant only ever occupies its own slots. Per-operation order and supersede are the
//! lifecycle's rules, applied inside the store's transactions (see `Store::claim_due`).

use crate::metrics::Via;
use crate::sender::{SendResult, Sender};
use payhook_core::clock::Clock;
use payhook_core::dialect::{RenderInput, Reply};
use payhook_core::lifecycle::{self, Judgement};
use payhook_core::model::{Attempt, AttemptOutcome, DeliveryKind, DeliveryState, ErrorKind};
use payhook_store::{
    destination_host, lease_for, ClaimRequest, Claimed, Handoff, NextStep, Slot, Store,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Identifies this node's leases.
    pub node_id: String,
    /// Concurrent attempts on this node.
    pub max_in_flight: usize,
    /// Concurrent attempts per destination host on this node.
    pub per_host_limit: usize,
    /// How long a claim is held; must outlast the request timeout.
    pub lease: Duration,
    /// Longest sleep between claims when nothing wakes the loop (other nodes' work, leases
    /// expiring).
    pub poll_interval: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            node_id: "node".into(),
            max_in_flight: 64,
            per_host_limit: 8,
            lease: lease_for(Duration::from_secs(15)),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// A uniform sample in `[-1, 1]` for retry jitter; injectable for tests.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

pub struct Dispatcher {
    /// This dispatcher's own Arc, for attempts spawned from a hand-off.
    me: std::sync::Weak<Dispatcher>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sender: Sender,
    config: DispatchConfig,
    /// Replaceable so tests can pin it; read once per retry decision.
    jitter: Mutex<JitterSource>,
    /// Woken by the API when new work is stored but not handed off, and by finished
    /// attempts when work may be waiting for their slots.
    wake: Arc<Notify>,
    /// Attempts in flight, per destination host and in all.
    slots: Arc<Slots<Claimed>>,
    /// Attempts of hand-offs and claims alike; `run` waits for them on shutdown.
    tracker: TaskTracker,
    /// Set while `run` dispatches: only then may the store hand deliveries over.
    running: AtomicBool,
    /// Metric handles, registered at the first use (see [`crate::metrics::Handles`]).
    metrics: std::sync::OnceLock<crate::metrics::Handles>,
}

/// Attempts in flight per destination host, and the rules for taking one more. A std mutex:
/// held for a map update only, never across an await. `T` is what waits in a host's line
/// (claimed deliveries; plain values in the unit tests).
struct Slots<T> {
    state: Mutex<SlotState<T>>,
    max_total: usize,
    per_host: usize,
    /// Set when work could not get a slot (a refused hand-off, a full claim): the next slot
    /// given back wakes the claim loop.
    starved: AtomicBool,
    wake: Arc<Notify>,
    /// Woken when a slot is given back while deliveries wait in line.
    room: Arc<Notify>,
}

struct SlotState<T> {
    hosts: HashMap<String, usize>,
    total: usize,
    /// Deliveries waiting for their host's slot, first come first served: hand-offs that
    /// found the host busy (so a burst of reports does not go back to the store for a claim),
    /// and claimed work the host had no room for (a claim reads the counts, then the store
    /// leases; hand-offs taken in between can fill the host).
    held: HashMap<String, VecDeque<(T, Instant)>>,
    held_count: usize,
    /// Places in line promised to hand-offs whose transaction has not committed yet.
    promised: usize,
}

impl<T> Default for SlotState<T> {
    fn default() -> Self {
        SlotState {
            hosts: HashMap::new(),
            total: 0,
            held: HashMap::new(),
            held_count: 0,
            promised: 0,
        }
    }
}

/// Longest a delivery waits in its host's line. Its lease (request timeout + 15 s)
/// must outlast the wait and the attempt; one held longer is let go unattempted, and a claim
/// finds it again when the lease expires.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// How many hand-offs may wait in line, as a multiple of the limits: per host (of the
/// per-host limit) and in all (of the node's total). Beyond that the store plans the delivery
/// unleased and a claim picks it up; a short line is drained well within [`HOLD_LIMIT`].
/// A node therefore holds at most `max_in_flight × (1 + LINE_FACTOR)` leases: its attempts
/// in flight and what waits in its lines.
pub const LINE_FACTOR: usize = 8;

impl<T: Send + 'static> Slots<T> {
    fn new(max_total: usize, per_host: usize, wake: Arc<Notify>, room: Arc<Notify>) -> Arc<Self> {
        Arc::new(Slots {
            state: Mutex::new(SlotState::default()),
            max_total,
            per_host,
            starved: AtomicBool::new(false),
            wake,
            room,
        })
    }

    fn take(self: &Arc<Self>, state: &mut SlotState<T>, host: &str) -> Slot {
        *state.hosts.entry(host.to_owned()).or_insert(0) += 1;
        state.total += 1;
        let (slots, host) = (self.clone(), host.to_owned());
        Slot::new(move || slots.give_back(&host))
    }

    fn has_room(&self, state: &SlotState<T>, host: &str) -> bool {
        state.total < self.max_total && state.hosts.get(host).copied().unwrap_or(0) < self.per_host
    }

    fn give_back(&self, host: &str) {
        let held_here = {
            let mut state = self.state.lock().expect("slots mutex");
            if let Some(n) = state.hosts.get_mut(host) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.hosts.remove(host);
                }
            }
            state.total = state.total.saturating_sub(1);
            state.held_count > 0
        };
        if self.starved.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
        if held_here {
            self.room.notify_one();
        }
    }

    /// A slot for a hand-off, or else a place in the host's line while the line is short.
    fn take_or_queue(self: &Arc<Self>, host: &str) -> Option<Slot> {
        let mut state = self.state.lock().expect("slots mutex");
        if self.has_room(&state, host) && !state.held.contains_key(host) {
            return Some(self.take(&mut state, host));
        }
        let in_line = state.held_count + state.promised;
        let host_line = state.held.get(host).map_or(0, VecDeque::len);
        if in_line >= self.max_total * LINE_FACTOR || host_line >= self.per_host * LINE_FACTOR {
            return None;
        }
        state.promised += 1;
        let slots = self.clone();
        Some(Slot::queued(host, move || {
            let mut state = slots.state.lock().expect("slots mutex");
            state.promised -= 1;
        }))
    }

    /// Puts a committed hand-off in its host's line (its queued slot is given up after).
    fn hold(&self, host: String, item: T) {
        let mut state = self.state.lock().expect("slots mutex");
        state.held.entry(host).or_default().push_back((item, Instant::now()));
        state.held_count += 1;
    }

    /// Starts a claim: how many attempts may start, and the per-host counts to respect.
    /// When a host is at its limit, the next slot given back wakes the loop: due work for
    /// that host may be waiting.
    ///
    /// Deliveries held for a host at its limit wait for that host's slots, not the node's,
    /// and a claim takes nothing for that host: they do not count against the claim, or a
    /// silent merchant's line (up to `per_host × LINE_FACTOR`, the whole `max_in_flight` by
    /// default) would hold every other merchant's retries back until it drained. Those held
    /// for room on the node do count: they go first when it frees up.
    fn begin_claim(&self) -> (usize, HashMap<String, usize>) {
        let state = self.state.lock().expect("slots mutex");
        let for_the_node: usize = state
            .held
            .iter()
            .filter(|(host, _)| state.hosts.get(*host).copied().unwrap_or(0) < self.per_host)
            .map(|(_, line)| line.len())
            .sum();
        let free = self.max_total.saturating_sub(state.total + for_the_node);
        if free == 0 || state.hosts.values().any(|n| *n >= self.per_host) {
            self.starved.store(true, Ordering::Release);
        }
        (free, state.hosts.clone())
    }

    /// Ends a claim: a slot for each delivery it leased (with its host), or a place in its
    /// host's line.
    fn end_claim(self: &Arc<Self>, claimed: Vec<(String, T)>) -> Vec<(T, Slot)> {
        let mut state = self.state.lock().expect("slots mutex");
        let mut ready = Vec::with_capacity(claimed.len());
        for (host, c) in claimed {
            if self.has_room(&state, &host) && !state.held.contains_key(&host) {
                let slot = self.take(&mut state, &host);
                ready.push((c, slot));
            } else {
                state.held.entry(host).or_default().push_back((c, Instant::now()));
                state.held_count += 1;
            }
        }
        ready
    }

    /// Held deliveries whose host has room again, with their slots; drops those held too long.
    fn take_held(self: &Arc<Self>) -> Vec<(T, Slot)> {
        let mut state = self.state.lock().expect("slots mutex");
        if state.held_count == 0 {
            return Vec::new();
        }
        let mut ready = Vec::new();
        // The lines are taken out while they are walked, so the counts can be read and
        // changed beside them (no copy of every host name per slot given back).
        let mut held = std::mem::take(&mut state.held);
        for (host, line) in held.iter_mut() {
            while let Some((_, since)) = line.front() {
                let expired = since.elapsed() > HOLD_LIMIT;
                if !expired && !self.has_room(&state, host) {
                    break;
                }
                let (c, _) = line.pop_front().expect("front");
                state.held_count -= 1;
                if expired {
                    tracing::warn!(%host, "a delivery waited too long for its host's \
                        slot; its lease will expire and a claim will find it again");
                    drop(c);
                } else {
                    let slot = self.take(&mut state, host);
                    ready.push((c, slot));
                }
            }
        }
        held.retain(|_, line| !line.is_empty());
        state.held = held;
        ready
    }
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        sender: Sender,
        config: DispatchConfig,
    ) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let room = Arc::new(Notify::new());
        let slots = Slots::new(config.max_in_flight, config.per_host_limit, wake.clone(), room);
        Arc::new_cyclic(|me| Dispatcher {
            me: me.clone(),
            store,
            clock,
            sender,
            config,
            jitter: Mutex::new(Arc::new(|| {
                rand::Rng::gen_range(&mut rand::thread_rng(), -1.0..=1.0)
            })),
            wake,
            slots,
            tracker: TaskTracker::new(),
            running: AtomicBool::new(false),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Replaces the jitter source (tests pin it to make schedules exact).
    pub fn set_jitter(&self, jitter: JitterSource) {
        *self.jitter.lock().expect("jitter mutex") = jitter;
    }

    /// The handle the API uses to say "new work is stored".
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Claims up to `limit` due deliveries (fewer if the slots are taken), each with its slot;
    /// also says how many it asked the store for.
    async fn claim(&self, limit: usize) -> (Vec<(Claimed, Slot)>, usize) {
        let (free, in_flight) = self.slots.begin_claim();
        let req = ClaimRequest {
            node: &self.config.node_id,
            now: self.clock.now(),
            lease: self.config.lease,
            limit: limit.min(free),
            in_flight: &in_flight,
            per_host_limit: self.config.per_host_limit,
        };
        let claimed =
            if req.limit == 0 { Ok(Vec::new()) } else { self.store.claim_due(&req).await };
        let asked = req.limit;
        match claimed {
            Ok(claimed) => {
                self.metrics().started(Via::Claim, claimed.len());
                let hosts = claimed.into_iter().map(|c| (destination_host(&c.delivery.url), c));
                (self.slots.end_claim(hosts.collect()), asked)
            }
            Err(e) => {
                self.slots.end_claim(Vec::new());
                tracing::error!(error = %e, "claiming due deliveries failed");
                (Vec::new(), asked)
            }
        }
    }

    /// One round for tests: claims everything due now (repeatedly, as ordering frees later
    /// events) and attempts it, returning the number of attempts made.
    pub async fn run_once(self: &Arc<Self>) -> usize {
        let mut total = 0;
        loop {
            let (mut batch, _) = self.claim(self.config.max_in_flight).await;
            batch.extend(self.slots.take_held());
            if batch.is_empty() {
                return total;
            }
            total += batch.len();
            let tasks: Vec<_> = batch
                .into_iter()
                .map(|(c, slot)| {
                    let this = self.clone();
                    tokio::spawn(async move { this.attempt(c, slot).await })
                })
                .collect();
            for t in tasks {
                t.await.expect("attempt task panicked");
            }
        }
    }

    /// Dispatches until `shutdown` is cancelled, then waits for attempts in flight.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let handoff: Arc<dyn Handoff> = self.clone();
        self.store.set_handoff(Arc::downgrade(&handoff));
        self.running.store(true, Ordering::Release);
        let line = tokio::spawn(self.clone().serve_line(shutdown.clone()));
        while !shutdown.is_cancelled() {
            let (mut batch, asked) = self.claim(self.config.max_in_flight).await;
            let full = asked > 0 && batch.len() == asked;
            batch.extend(self.slots.take_held());
            for (c, slot) in batch {
                self.clone().spawn_attempt(c, slot);
            }
            if full {
                continue; // there may be more due right now
            }
            let sleep = self.idle_wait().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        self.running.store(false, Ordering::Release);
        let _ = line.await;
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Starts what waits in the hosts' lines whenever a slot is given back (hand-offs queued
    /// there, and claimed work beyond a host's room), without a claim round trip.
    async fn serve_line(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.slots.room.notified() => self.start_held(),
            }
        }
    }

    /// Spawns attempts for held deliveries whose host has room now.
    fn start_held(self: &Arc<Self>) {
        for (c, slot) in self.slots.take_held() {
            self.clone().spawn_attempt(c, slot);
        }
    }

    /// Runs one attempt in a task of its own. Boxed: the attempt's future is ≈ 2.2 KB, which
    /// tokio would otherwise copy into the task and again when the task's stage is rewritten
    /// at its end.
    fn spawn_attempt(self: Arc<Self>, claimed: Claimed, slot: Slot) {
        let tracker = self.tracker.clone();
        tracker.spawn(Box::pin(async move { self.attempt(claimed, slot).await }));
    }

    fn metrics(&self) -> &crate::metrics::Handles {
        self.metrics.get_or_init(crate::metrics::Handles::register)
    }

    /// How long to sleep when there is nothing to claim: until the next due delivery, at most
    /// the poll interval.
    async fn idle_wait(&self) -> Duration {
        let poll = self.config.poll_interval;
        match self.store.next_due_at().await {
            Ok(Some(at)) => at.since(self.clock.now()).clamp(Duration::from_millis(5), poll),
            _ => poll,
        }
    }

    /// One attempt of one claimed delivery, recorded whatever happens.
    async fn attempt(&self, claimed: Claimed, slot: Slot) {
        let (attempt, next) = self.exchange(&claimed).await;
        // The host's slot bounds concurrent requests, and this one is over: give it back
        // before the record is committed. The lease (cleared by the record) keeps the
        // delivery from being claimed again meanwhile.
        drop(slot);
        let now = self.clock.now();
        match self.store.record_attempt(&attempt, next.clone(), now).await {
            Ok(change) => {
                log_attempt(&claimed, &attempt, change.state);
                self.metrics().attempt(claimed.delivery.dialect, &attempt, change.state);
                if lifecycle::attempt::may_free_work(&next, change.state) {
                    // A retry is scheduled, or the operation's next delivery may be free to
                    // go: let the loop look (it sleeps until the earliest due time it knew).
                    self.wake.notify_one();
                }
            }
            Err(e) => tracing::error!(
                operation_id = %claimed.delivery.operation_id,
                delivery_id = %claimed.delivery.id, error = %e,
                "recording an attempt failed; the lease will expire and the delivery retried"
            ),
        }
    }

    async fn exchange(&self, c: &Claimed) -> (Attempt, NextStep) {
        let d = &c.delivery;
        let started_at = self.clock.now();
        let input = RenderInput {
            delivery_id: &d.id,
            url: &d.url,
            event: &c.event,
            merchant: &c.merchant,
            now: started_at,
        };
        let mut attempt = Attempt {
            delivery_id: d.id.clone(),
            number: d.attempts + 1,
            started_at,
            duration_ms: 0,
            request: String::new(),
            response_status: None,
            response_body: None,
            outcome: AttemptOutcome::Permanent,
            error_kind: None,
            error: None,
        };
        if !c.merchant.allows_url(&d.url) {
            // The merchant withdrew the URL from its allow-list after the delivery was planned.
            let why = "the URL is not on the merchant's allowed_callback_urls".to_owned();
            return unsent(attempt, &d.url, lifecycle::unsent(ErrorKind::BlockedTarget, why));
        }
        let rendered = match d.kind {
            DeliveryKind::Status => d.dialect.render(&input),
            DeliveryKind::PollTimeout => d.dialect.render_poll_timeout(&input),
        };
        let outgoing = match rendered {
            Ok(o) => o,
            Err(e) => {
                return unsent(attempt, &d.url, lifecycle::unsent(ErrorKind::Render, e.to_string()))
            }
        };
        attempt.request = format!("{} {}", outgoing.method.as_str(), outgoing.url);
        let clock_start = Instant::now();
        let result = self.sender.send(&outgoing).await;
        attempt.duration_ms = clock_start.elapsed().as_millis() as i64;
        let verdict = match result {
            SendResult::Response { status, retry_after, body } => {
                attempt.response_status = Some(status);
                attempt.response_body = Some(SendResult::logged_body(&body));
                let reply = Reply {
                    status,
                    retry_after: retry_after.as_deref(),
                    body: &body,
                    request_body: &outgoing.body,
                    now: self.clock.now(),
                };
                d.dialect.classify(&reply)
            }
            SendResult::Failed { kind, detail } => lifecycle::transport_failure(kind, detail),
        };
        let jitter = || (self.jitter.lock().expect("jitter mutex"))();
        let judgement = lifecycle::judge(&verdict, d, self.clock.now(), jitter);
        (judged(attempt, &judgement), judgement.next)
    }
}

impl Handoff for Dispatcher {
    fn node(&self) -> &str {
        &self.config.node_id
    }

    fn lease(&self) -> Duration {
        self.config.lease
    }

    fn reserve(&self, host: &str) -> Option<Slot> {
        if !self.running.load(Ordering::Acquire) {
            return None;
        }
        self.slots.take_or_queue(host)
    }

    fn deliver(&self, claimed: Claimed, slot: Slot) {
        let Some(this) = self.me.upgrade() else { return };
        self.metrics().started(Via::Handoff, 1);
        if let Some(host) = slot.line() {
            // Held first, then the place given up; room may have come free since the
            // reservation, with no slot given back left to say so: look once now.
            self.slots.hold(host.to_owned(), claimed);
            drop(slot);
            this.start_held();
            return;
        }
        this.spawn_attempt(claimed, slot);
    }
}

/// Ends a delivery without sending anything: the attempt records the URL and why.
fn unsent(mut attempt: Attempt, url: &str, judgement: Judgement) -> (Attempt, NextStep) {
    attempt.request = url.to_owned();
    (judged(attempt, &judgement), judgement.next)
}

/// The attempt with the lifecycle's judgement of it.
fn judged(mut attempt: Attempt, j: &Judgement) -> Attempt {
    attempt.outcome = j.outcome;
    attempt.error_kind = j.error_kind;
    attempt.error = j.error.clone();
    attempt
}

fn log_attempt(c: &Claimed, a: &Attempt, state: DeliveryState) {
    tracing::info!(
        operation_id = %c.delivery.operation_id,
        delivery_id = %c.delivery.id,
        dialect = %c.delivery.dialect,
        attempt = a.number,
        status = a.response_status,
        outcome = a.outcome.as_str(),
        error_kind = a.error_kind.map(|k| k.as_str()),
        duration_ms = a.duration_ms,
        state = state.as_str(),
        "callback attempt"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max_total: usize, per_host: usize) -> Arc<Slots<u32>> {
        Slots::new(max_total, per_host, Arc::new(Notify::new()), Arc::new(Notify::new()))
    }

    /// A hand-off's reservation: `Some(true)` a slot, `Some(false)` a place in line.
    fn reserve(s: &Arc<Slots<u32>>, host: &str) -> Option<(bool, Slot)> {
        s.take_or_queue(host).map(|slot| (!slot.is_queued(), slot))
    }

    #[test]
    fn hand_offs_beyond_the_host_limit_and_the_total_wait_in_line() {
        let s = slots(3, 2);
        let a1 = reserve(&s, "a").expect("room");
        let a2 = reserve(&s, "a").expect("room");
        assert!(a1.0 && a2.0, "host a has two slots");
        let (is_slot, _a3) = reserve(&s, "a").expect("a place in line");
        assert!(!is_slot, "host a is at its limit: the third waits in line");
        let (is_slot, _b1) = reserve(&s, "b").expect("room");
        assert!(is_slot, "host b has room");
        let (is_slot, c1) = reserve(&s, "c").expect("a place in line");
        assert!(!is_slot, "the node is at its total");
        drop(c1);
        drop(a1);
        let (is_slot, _c2) = reserve(&s, "c").expect("room");
        assert!(is_slot, "a slot given back is free again");
    }

    #[test]
    fn the_line_is_bounded_and_a_place_given_up_frees_it() {
        let s = slots(1, 1);
        let _busy = reserve(&s, "a").expect("room");
        let places: Vec<_> = (0..LINE_FACTOR).map(|_| reserve(&s, "a").expect("place")).collect();
        assert!(places.iter().all(|(is_slot, _)| !is_slot));
        assert!(reserve(&s, "a").is_none(), "the line is full: the delivery is left to a claim");
        drop(places);
        assert!(reserve(&s, "a").is_some_and(|(is_slot, _)| !is_slot), "places given up");
        for n in 0..LINE_FACTOR as u32 {
            s.hold("a".into(), n);
        }
        assert!(reserve(&s, "a").is_none(), "held hand-offs count against the line");
    }

    #[test]
    fn held_hand_offs_start_in_order_as_slots_come_back() {
        let s = slots(10, 1);
        let (_, first) = reserve(&s, "a").expect("room");
        for n in 1..=2 {
            let (_, place) = reserve(&s, "a").expect("place");
            s.hold("a".into(), n);
            drop(place);
        }
        assert!(s.take_held().is_empty(), "host a is still busy");
        drop(first);
        let next: Vec<u32> = s.take_held().into_iter().map(|(n, _)| n).collect();
        assert_eq!(next, vec![1], "one slot given back starts the first in line only");
    }

    #[test]
    fn claimed_work_beyond_the_limit_waits_in_line_and_goes_first() {
        let s = slots(10, 2);
        // A claim read host a as free; meanwhile two hand-offs took both of its slots.
        let (free, _) = s.begin_claim();
        assert_eq!(free, 10);
        let (_, h1) = reserve(&s, "a").expect("room");
        let _h2 = reserve(&s, "a").expect("room");
        let ready = s.end_claim(vec![("a".into(), 1), ("b".into(), 2), ("a".into(), 3)]);
        let started: Vec<u32> = ready.iter().map(|(n, _)| *n).collect();
        assert_eq!(started, vec![2], "only host b had room");
        assert!(s.take_held().is_empty(), "host a is still full");
        let (is_slot, _) = reserve(&s, "a").expect("a place in line");
        assert!(!is_slot, "a hand-off does not jump the line");
        let (free, in_flight) = s.begin_claim();
        assert_eq!(free, 10 - 3, "held for a busy host: they wait for its slots, not the node's");
        assert_eq!(in_flight["a"], 2, "the claim skips host a");
        drop(h1);
        let next = s.take_held();
        let numbers: Vec<u32> = next.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, vec![1], "the first in line gets the slot given back");
        assert_eq!(s.state.lock().expect("state").hosts["a"], 2, "never more than the limit");
    }

    #[test]
    fn a_busy_hosts_line_does_not_stop_claims_for_other_hosts() {
        let s = slots(4, 2);
        let _busy: Vec<_> = (0..2).map(|_| reserve(&s, "slow").expect("room")).collect();
        for n in 0..8 {
            let (_, place) = reserve(&s, "slow").expect("a place in line");
            s.hold("slow".into(), n);
            drop(place);
        }
        let (free, in_flight) = s.begin_claim();
        assert_eq!(free, 2, "the node has two slots left for other hosts' due work");
        assert_eq!(in_flight["slow"], 2, "and the claim skips the slow host");
        // Work held for room on the node (its host has room) does count.
        let _other = reserve(&s, "b").expect("room");
        let third = reserve(&s, "c").expect("room");
        let ready = s.end_claim(vec![("d".into(), 100)]);
        assert!(ready.is_empty(), "the node is full: d waits in line");
        drop(third);
        let (free, _) = s.begin_claim();
        assert_eq!(free, 0, "the slot given back is d's: it goes before new claims");
    }
}
