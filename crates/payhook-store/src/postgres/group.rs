//! Group commit of the writes that take a merchant's feed lock: registrations and single
//! status reports.
//!
//! Without it, every report holds its merchant's feed lock through its own COMMIT (an fsync),
//! so one merchant's reports commit one at a time and most pool connections wait on that lock.
//! Here concurrent callers' changes share one transaction: the feed locks are taken once per group, the events are inserted by
//! one statement, and one COMMIT makes them all durable. Each caller is answered only after
//! that COMMIT. A report refused by its checks (unknown operation, transition, event key) has
//! written nothing when it is refused, so the others go on without it; no savepoints needed.
//! Merchants (and whether a URL is disabled) are read once per group. The group's reports go
//! through `report::report_batch` as a batch's items do, each with its caller's time.
//!
//! Lock order is the one every transaction of the store follows: registrations by (merchant,
//! external id), then operation rows by id, then feed locks by merchant. If a group fails as a
//! whole before its COMMIT is sent (nothing was stored), each change is run again alone in its
//! own transaction, so a caller sees exactly what it would have seen without grouping; a
//! failed COMMIT (outcome unknown) is reported to every caller of the group, as it was to the
//! one caller before.
//!
//! When the database is gone (`StoreError::Unavailable`) every caller of the group gets that at
//! once: alone, each change would only wait for the same server again. A caller waits at most
//! `CALL_TIMEOUT`; a job whose caller gave up is skipped, and a group's transaction is dropped
//! when its oldest job's `CALL_TIMEOUT` has passed — so a change commits, and its delivery is
//! handed off, within that bound of the caller's `now` (which its hand-off lease counts from)
//! or is not handed off at all.

use super::plan::Seen;
use super::report::{self, lock_feeds, register_in, register_unstored, Items};
use super::rows::*;
use super::{
    bounded, each_caller, pool_error, NewOperation, Registered, Reported, StatusReport, StoreError,
    CALL_TIMEOUT,
};
use crate::seal::Sealer;
use crate::HandoffTarget;
use deadpool_postgres::{Object, Pool};
use payhook_core::model::Event;
use payhook_core::Timestamp;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::{timeout_at, Instant};

/// Groups in progress at once per node. One merchant's groups still queue on its feed lock,
/// but a group's row work overlaps the previous group's COMMIT.
const WRITERS: usize = 4;
/// Most changes in one group.
const MAX_GROUP: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// `queued`: when the caller queued it; its commit must be over by `queued + CALL_TIMEOUT`.
enum Job {
    Register { new: Box<NewOperation>, now: Timestamp, queued: Instant, reply: Reply<Registered> },
    Report { report: StatusReport, now: Timestamp, queued: Instant, reply: Reply<Reported> },
}

/// The queue the store's registrations and single reports go through.
pub(super) struct FeedWriter {
    queue: mpsc::UnboundedSender<Job>,
}

impl FeedWriter {
    /// Starts the writer tasks (on the current runtime); they end when the store is dropped.
    pub(super) fn start(pool: Pool, sealer: Sealer, handoff: HandoffTarget) -> FeedWriter {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), sealer.clone(), handoff.clone(), rx.clone()));
        }
        FeedWriter { queue }
    }

    pub(super) async fn register(
        &self,
        new: NewOperation,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Register { new: Box::new(new), now, queued: Instant::now(), reply };
        self.queue.send(job).map_err(|_| stopped())?;
        bounded(async { answer.await.map_err(|_| stopped())? }).await
    }

    pub(super) async fn report(
        &self,
        report: StatusReport,
        now: Timestamp,
    ) -> Result<Reported, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Report { report, now, queued: Instant::now(), reply };
        self.queue.send(job).map_err(|_| stopped())?;
        bounded(async { answer.await.map_err(|_| stopped())? }).await
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL feed writer stopped".into())
}

/// A group: the first job queued (waited for) and whatever else is queued, up to `max`;
/// `None` once the queue is closed (the store was dropped).
pub(super) async fn next_group<T>(
    rx: &Mutex<mpsc::UnboundedReceiver<T>>,
    max: usize,
) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let mut jobs = vec![rx.recv().await?];
    while jobs.len() < max {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// A pooled connection for a group, or the error every job of the group is answered with
/// (through [`each_caller`]).
pub(super) async fn group_client(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(pool_error)
}

/// One writer: takes what is queued (waiting for the first), commits it as a group, repeats.
async fn run(
    pool: Pool,
    sealer: Sealer,
    handoff: HandoffTarget,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
) {
    while let Some(mut jobs) = next_group(&rx, MAX_GROUP).await {
        // A caller that gave up (`bounded`) was told the store is unavailable: its change is
        // not made behind its back.
        jobs.retain(|job| !job.abandoned());
        if jobs.is_empty() {
            continue;
        }
        // Every change of the group commits within its callers' bound or not at all (as far
        // as this side can tell): a hand-off is never made later, when the lease it was given
        // (from the caller's `now`) may have run out and another node claimed the delivery.
        let deadline = jobs.iter().map(Job::queued).min().expect("a job") + CALL_TIMEOUT;
        let mut client = match group_client(&pool).await {
            Ok(c) => c,
            Err(e) => {
                for job in jobs {
                    answer_err(job, each_caller(&e));
                }
                continue;
            }
        };
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            alone(&mut client, &sealer, &handoff, job, deadline).await;
        } else {
            group(&mut client, &sealer, &handoff, jobs, deadline).await;
        }
    }
}

/// What a writer answers when a commit did not end by its deadline.
fn late() -> StoreError {
    StoreError::Unavailable(format!(
        "PostgreSQL did not commit within {CALL_TIMEOUT:?} of the call; the change may or may \
         not be stored"
    ))
}

impl Job {
    fn queued(&self) -> Instant {
        match self {
            Job::Register { queued, .. } | Job::Report { queued, .. } => *queued,
        }
    }

    fn abandoned(&self) -> bool {
        match self {
            Job::Register { reply, .. } => reply.is_closed(),
            Job::Report { reply, .. } => reply.is_closed(),
        }
    }
}

fn answer_err(job: Job, e: StoreError) {
    match job {
        Job::Register { reply, .. } => drop(reply.send(Err(e))),
        Job::Report { reply, .. } => drop(reply.send(Err(e))),
    }
}

/// One change in its own transaction: exactly the path without grouping.
async fn alone(
    client: &mut Object,
    sealer: &Sealer,
    handoff: &HandoffTarget,
    job: Job,
    deadline: Instant,
) {
    if job.abandoned() {
        return;
    }
    match job {
        Job::Register { new, now, reply, .. } => {
            let result = timeout_at(deadline, async {
                let tx = client.transaction().await.map_err(pg)?;
                let registered = register_in(&tx, &new, now).await?;
                tx.commit().await.map_err(pg)?;
                Ok(registered)
            })
            .await;
            let _ = reply.send(result.unwrap_or_else(|_| Err(late())));
        }
        Job::Report { report, now, reply, .. } => {
            let result = timeout_at(deadline, async {
                let tx = client.transaction().await.map_err(pg)?;
                let mut seen = Seen::new(handoff.get());
                let reported = report::report_alone(&tx, sealer, &mut seen, report, now).await?;
                tx.commit().await.map_err(pg)?;
                seen.hand_over(std::iter::once(&reported));
                Ok(reported)
            })
            .await;
            let _ = reply.send(result.unwrap_or_else(|_| Err(late())));
        }
    }
}

/// How a group transaction ended, when it did not commit.
enum GroupFailure {
    /// Before COMMIT was sent: rolled back, nothing stored.
    RolledBack,
    /// COMMIT itself failed: the outcome is unknown.
    Commit(StoreError),
    /// The server went away or did not answer by the deadline: nothing stored if it was
    /// before COMMIT, unknown if during it. Each change alone would only meet the same.
    Unavailable(StoreError),
}

type Outcomes = (Vec<Result<Registered, StoreError>>, Vec<Result<Reported, StoreError>>);

async fn group(
    client: &mut Object,
    sealer: &Sealer,
    handoff: &HandoffTarget,
    jobs: Vec<Job>,
    deadline: Instant,
) {
    let mut regs = Vec::new();
    let mut reports = Vec::new();
    for job in jobs {
        match job {
            Job::Register { new, now, queued, reply } => regs.push((new, now, queued, reply)),
            Job::Report { report, now, queued, reply } => {
                reports.push((report, now, queued, reply))
            }
        }
    }
    // The lock order (see the module comment); stable, so one operation's reports keep their
    // arrival order.
    regs.sort_by(|a, b| {
        (a.0.merchant_id.as_str(), a.0.external_id.as_str())
            .cmp(&(b.0.merchant_id.as_str(), b.0.external_id.as_str()))
    });
    reports.sort_by(|a, b| a.0.operation_id.cmp(&b.0.operation_id));
    let reg_in: Vec<(&NewOperation, Timestamp)> = regs.iter().map(|r| (&*r.0, r.1)).collect();
    let rep_in: Vec<(StatusReport, Timestamp)> =
        reports.iter().map(|r| (r.0.clone(), r.1)).collect();
    let seen = Seen::new(handoff.get());
    let tx = timeout_at(deadline, group_tx(client, sealer, seen, &reg_in, rep_in)).await;
    match tx.unwrap_or_else(|_| Err(GroupFailure::Unavailable(late()))) {
        Ok((registered, reported)) => {
            for ((_, _, _, reply), r) in regs.into_iter().zip(registered) {
                let _ = reply.send(r);
            }
            for ((_, _, _, reply), r) in reports.into_iter().zip(reported) {
                let _ = reply.send(r);
            }
        }
        Err(GroupFailure::Commit(e) | GroupFailure::Unavailable(e)) => {
            for (_, _, _, reply) in regs {
                let _ = reply.send(Err(each_caller(&e)));
            }
            for (_, _, _, reply) in reports {
                let _ = reply.send(Err(each_caller(&e)));
            }
        }
        Err(GroupFailure::RolledBack) => {
            for (new, now, queued, reply) in regs {
                let job = Job::Register { new, now, queued, reply };
                alone(client, sealer, handoff, job, deadline).await;
            }
            for (report, now, queued, reply) in reports {
                let job = Job::Report { report, now, queued, reply };
                alone(client, sealer, handoff, job, deadline).await;
            }
        }
    }
}

/// The group's transaction. `seen` carries the hand-offs it leases: handed over after the
/// COMMIT, dropped (slots given back) when the group does not commit.
async fn group_tx(
    client: &mut Object,
    sealer: &Sealer,
    mut seen: Seen,
    regs: &[(&NewOperation, Timestamp)],
    reports: Vec<(StatusReport, Timestamp)>,
) -> Result<Outcomes, GroupFailure> {
    let tx = client.transaction().await.map_err(|e| match pg(e) {
        e @ StoreError::Unavailable(_) => GroupFailure::Unavailable(e),
        _ => GroupFailure::RolledBack,
    })?;
    let work = async {
        // No savepoints: a registration fails only on a database error, which fails the group
        // (each change then runs alone); a report is refused only by its check, which writes
        // nothing, and any error after it fails the group too.
        let mut registered = Vec::with_capacity(regs.len());
        let mut created: Vec<Event> = Vec::with_capacity(regs.len());
        for (new, now) in regs {
            let (r, event) = register_unstored(&tx, new, *now).await?;
            registered.push(Ok(r));
            created.extend(event);
        }
        let mut reported =
            report::report_unstored(&tx, sealer, &mut seen, reports, Items::Plain).await?;
        let new_events = reported.iter().flatten().filter(|r| !r.duplicate);
        let merchants = created.iter().map(|e| &e.merchant_id);
        lock_feeds(&tx, merchants.chain(new_events.map(|r| &r.event.merchant_id))).await?;
        let mut events: Vec<&mut Event> = created.iter_mut().collect();
        events.extend(
            reported
                .iter_mut()
                .flatten()
                .filter(|r| !r.duplicate)
                .map(|r| Arc::make_mut(&mut r.event)),
        );
        store_events(&tx, &mut events).await?;
        Ok::<_, StoreError>((registered, reported))
    };
    match work.await {
        Ok(outcomes) => {
            tx.commit().await.map_err(|e| GroupFailure::Commit(pg(e)))?;
            seen.hand_over(outcomes.1.iter().flatten());
            Ok(outcomes)
        }
        Err(e @ StoreError::Unavailable(_)) => Err(GroupFailure::Unavailable(e)),
        Err(e) => {
            tracing::debug!(error = %e, "a grouped write failed as a whole; each change runs alone");
            drop(tx);
            Err(GroupFailure::RolledBack)
        }
    }
}
