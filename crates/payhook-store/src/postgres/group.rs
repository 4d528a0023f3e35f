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

use super::plan::Seen;
use super::report::{self, lock_feeds, register_in, register_unstored, Items};
use super::rows::*;
use super::{NewOperation, Registered, Reported, StatusReport, StoreError};
use crate::seal::Sealer;
use crate::HandoffTarget;
use deadpool_postgres::{Object, Pool};
use payhook_core::model::Event;
use payhook_core::Timestamp;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Groups in progress at once per node. One merchant's groups still queue on its feed lock,
/// but a group's row work overlaps the previous group's COMMIT.
const WRITERS: usize = 4;
/// Most changes in one group.
const MAX_GROUP: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Register { new: Box<NewOperation>, now: Timestamp, reply: Reply<Registered> },
    Report { report: StatusReport, now: Timestamp, reply: Reply<Reported> },
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
        self.queue.send(Job::Register { new: Box::new(new), now, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) async fn report(
        &self,
        report: StatusReport,
        now: Timestamp,
    ) -> Result<Reported, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job::Report { report, now, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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

/// A pooled connection for a group, or the message every job of the group is answered with.
pub(super) async fn group_client(pool: &Pool) -> Result<Object, String> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e).to_string(),
        other => format!("PostgreSQL pool: {}", with_sources(&other)),
    })
}

/// One writer: takes what is queued (waiting for the first), commits it as a group, repeats.
async fn run(
    pool: Pool,
    sealer: Sealer,
    handoff: HandoffTarget,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
) {
    while let Some(mut jobs) = next_group(&rx, MAX_GROUP).await {
        let mut client = match group_client(&pool).await {
            Ok(c) => c,
            Err(msg) => {
                for job in jobs {
                    answer_err(job, StoreError::Backend(msg.clone()));
                }
                continue;
            }
        };
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            alone(&mut client, &sealer, &handoff, job).await;
        } else {
            group(&mut client, &sealer, &handoff, jobs).await;
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
async fn alone(client: &mut Object, sealer: &Sealer, handoff: &HandoffTarget, job: Job) {
    match job {
        Job::Register { new, now, reply } => {
            let result = async {
                let tx = client.transaction().await.map_err(pg)?;
                let registered = register_in(&tx, &new, now).await?;
                tx.commit().await.map_err(pg)?;
                Ok(registered)
            }
            .await;
            let _ = reply.send(result);
        }
        Job::Report { report, now, reply } => {
            let result = async {
                let tx = client.transaction().await.map_err(pg)?;
                let mut seen = Seen::new(handoff.get());
                let reported = report::report_alone(&tx, sealer, &mut seen, report, now).await?;
                tx.commit().await.map_err(pg)?;
                seen.hand_over(std::iter::once(&reported));
                Ok(reported)
            }
            .await;
            let _ = reply.send(result);
        }
    }
}

/// How a group transaction ended, when it did not commit.
enum GroupFailure {
    /// Before COMMIT was sent: rolled back, nothing stored.
    RolledBack,
    /// COMMIT itself failed: the outcome is unknown.
    Commit(StoreError),
}

type Outcomes = (Vec<Result<Registered, StoreError>>, Vec<Result<Reported, StoreError>>);

async fn group(client: &mut Object, sealer: &Sealer, handoff: &HandoffTarget, jobs: Vec<Job>) {
    let mut regs = Vec::new();
    let mut reports = Vec::new();
    for job in jobs {
        match job {
            Job::Register { new, now, reply } => regs.push((new, now, reply)),
            Job::Report { report, now, reply } => reports.push((report, now, reply)),
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
    match group_tx(client, sealer, Seen::new(handoff.get()), &reg_in, rep_in).await {
        Ok((registered, reported)) => {
            for ((_, _, reply), r) in regs.into_iter().zip(registered) {
                let _ = reply.send(r);
            }
            for ((_, _, reply), r) in reports.into_iter().zip(reported) {
                let _ = reply.send(r);
            }
        }
        Err(GroupFailure::Commit(e)) => {
            let msg = e.to_string();
            for (_, _, reply) in regs {
                let _ = reply.send(Err(StoreError::Backend(msg.clone())));
            }
            for (_, _, reply) in reports {
                let _ = reply.send(Err(StoreError::Backend(msg.clone())));
            }
        }
        Err(GroupFailure::RolledBack) => {
            for (new, now, reply) in regs {
                alone(client, sealer, handoff, Job::Register { new, now, reply }).await;
            }
            for (report, now, reply) in reports {
                alone(client, sealer, handoff, Job::Report { report, now, reply }).await;
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
    let tx = client.transaction().await.map_err(|_| GroupFailure::RolledBack)?;
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
        Err(e) => {
            tracing::debug!(error = %e, "a grouped write failed as a whole; each change runs alone");
            drop(tx);
            Err(GroupFailure::RolledBack)
        }
    }
}
