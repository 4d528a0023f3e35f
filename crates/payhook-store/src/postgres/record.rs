//! Group commit of attempt records.
//!
//! The dispatcher records each finished attempt on its own (`Store::record_attempt`), up to
//! `max_in_flight` of them finishing together; alone, each would be five statements and a
//! COMMIT. Here the attempts queued while the previous group committed are recorded
//! together, set-based: one statement locks their deliveries (in id
//! order, the order every group takes them in), one inserts the attempts, one updates the
//! deliveries, one COMMIT; each caller is answered only after it.
//!
//! A delivery that does not exist is refused alone (nothing of it is written). Any other
//! failure before COMMIT rolls the group back and each record runs again alone, in its own
//! transaction, so a caller sees what it would have seen ungrouped; a failed COMMIT (outcome
//! unknown) is reported to every caller of the group.

use super::claim::{disable_destination, record_in};
use super::group::{group_client, next_group};
use super::health::{self, Destination};
use super::rows::*;
use crate::{DeliveryStateChange, HealthPolicy, NextStep, StoreError};
use deadpool_postgres::{Object, Pool};
use payhook_core::lifecycle;
use payhook_core::model::Attempt;
use payhook_core::Timestamp;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::types::ToSql;

/// Groups in progress at once per node.
const WRITERS: usize = 2;
/// Most records in one group.
const MAX_GROUP: usize = 256;

struct Job {
    attempt: Attempt,
    next: NextStep,
    now: Timestamp,
    policy: HealthPolicy,
    reply: oneshot::Sender<Result<DeliveryStateChange, StoreError>>,
}

/// The queue `record_attempt` goes through.
pub(super) struct RecordWriter {
    queue: mpsc::UnboundedSender<Job>,
}

impl RecordWriter {
    /// Starts the writer tasks (on the current runtime); they end when the store is dropped.
    pub(super) fn start(pool: Pool) -> RecordWriter {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), rx.clone()));
        }
        RecordWriter { queue }
    }

    pub(super) async fn record(
        &self,
        attempt: &Attempt,
        next: NextStep,
        now: Timestamp,
        policy: HealthPolicy,
    ) -> Result<DeliveryStateChange, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { attempt: attempt.clone(), next, now, policy, reply };
        self.queue.send(job).map_err(|_| stopped())?;
        super::bounded(async { answer.await.map_err(|_| stopped())? }).await
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL attempt writer stopped".into())
}

async fn run(pool: Pool, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    while let Some(mut jobs) = next_group(&rx, MAX_GROUP).await {
        // A dispatcher that gave up on a record (`bounded`) leaves it to its lease.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let mut client = match group_client(&pool).await {
            Ok(c) => c,
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(super::each_caller(&e)));
                }
                continue;
            }
        };
        let mut ids: Vec<&str> = jobs.iter().map(|j| j.attempt.delivery_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if jobs.len() == 1 || ids.len() < jobs.len() {
            // One record, or the same delivery twice: each in its own transaction.
            for job in jobs {
                alone(&mut client, job).await;
            }
            continue;
        }
        jobs.sort_by(|a, b| a.attempt.delivery_id.cmp(&b.attempt.delivery_id));
        match group_tx(&mut client, &jobs).await {
            Ok(results) => {
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(Failure::Commit(e) | Failure::RolledBack(e @ StoreError::Unavailable(_))) => {
                // The outcome is unknown, or the server went away: alone, each record would
                // only meet the same.
                for job in jobs {
                    let _ = job.reply.send(Err(super::each_caller(&e)));
                }
            }
            Err(Failure::RolledBack(e)) => {
                tracing::debug!(error = %e, "a grouped attempt record failed; each runs alone");
                for job in jobs {
                    alone(&mut client, job).await;
                }
            }
        }
    }
}

/// One record in its own transaction: exactly the path without grouping.
async fn alone(client: &mut Object, job: Job) {
    if job.reply.is_closed() {
        return;
    }
    let result = async {
        let tx = client.transaction().await.map_err(pg)?;
        let change = record_in(&tx, &job.attempt, job.next, job.now, &job.policy).await?;
        tx.commit().await.map_err(pg)?;
        Ok(change)
    }
    .await;
    let _ = job.reply.send(result);
}

enum Failure {
    /// Before COMMIT was sent: rolled back, nothing stored.
    RolledBack(StoreError),
    /// COMMIT itself failed: the outcome is unknown.
    Commit(StoreError),
}

/// What the record needs of a delivery row.
struct Locked {
    merchant_id: String,
    url: String,
}

/// Records `jobs` (sorted by delivery id, each delivery once) in one transaction.
async fn group_tx(
    client: &mut Object,
    jobs: &[Job],
) -> Result<Vec<Result<DeliveryStateChange, StoreError>>, Failure> {
    let tx = client.transaction().await.map_err(|e| Failure::RolledBack(pg(e)))?;
    let work = async {
        let ids: Vec<&str> = jobs.iter().map(|j| j.attempt.delivery_id.as_str()).collect();
        let rows = query(
            &tx,
            "SELECT id, merchant_id, url FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?;
        let mut locked: HashMap<String, Locked> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get(0).map_err(pg)?;
            let merchant_id = r.try_get(1).map_err(pg)?;
            let url = r.try_get(2).map_err(pg)?;
            locked.insert(id, Locked { merchant_id, url });
        }
        let destinations: BTreeSet<Destination> =
            locked.values().map(|d| (d.merchant_id.clone(), d.url.clone())).collect();
        let mut healths = health::lock(&tx, &destinations).await?;
        let retries: Vec<&str> = jobs
            .iter()
            .filter(|j| j.next.asks_for_newer())
            .map(|j| j.attempt.delivery_id.as_str())
            .filter(|id| locked.contains_key(*id))
            .collect();
        let mut has_newer: HashSet<String> = HashSet::new();
        if !retries.is_empty() {
            let rows = query(
                &tx,
                "SELECT d.id FROM deliveries d WHERE d.id = ANY($1) AND EXISTS (
                   SELECT 1 FROM deliveries n WHERE n.operation_id = d.operation_id AND n.seq > d.seq)",
                &[&retries],
            )
            .await?;
            for r in &rows {
                has_newer.insert(r.try_get(0).map_err(pg)?);
            }
        }
        let mut results = Vec::with_capacity(jobs.len());
        let mut a = AttemptColumns::default();
        let mut u = UpdateColumns::default();
        for job in jobs {
            let id = job.attempt.delivery_id.as_str();
            let Some(d) = locked.get(id) else {
                results.push(Err(StoreError::NotFound));
                continue;
            };
            let destination = (d.merchant_id.clone(), d.url.clone());
            let delivered = job.next == NextStep::Delivered;
            let disabled = health::after_attempt(
                &tx,
                &job.policy,
                &mut healths,
                &destination,
                delivered,
                job.now,
            )
            .await?;
            let next = lifecycle::with_health(job.next.clone(), disabled);
            let settled = lifecycle::settle(&next, has_newer.contains(id));
            if settled.disable_destination {
                disable_destination(&tx, &parse_id(&d.merchant_id)?, &d.url, job.now).await?;
            }
            a.push(&job.attempt);
            u.id.push(id);
            u.state.push(settled.state.as_str());
            u.number.push(attempt_number(job.attempt.number));
            u.next_at.push(settled.next_attempt_at.map(|t| t.0));
            u.error.push(settled.last_error.or(job.attempt.error.as_deref()));
            u.now.push(job.now.0);
            results.push(Ok(DeliveryStateChange { state: settled.state }));
        }
        health::save(&tx, &healths).await?;
        if !u.id.is_empty() {
            let params: [&(dyn ToSql + Sync); 6] =
                [&u.id, &u.state, &u.number, &u.next_at, &u.error, &u.now];
            let insert = a.insert(&tx);
            let update = exec(
                &tx,
                "UPDATE deliveries d SET state = v.state, attempts = GREATEST(d.attempts, v.number),
                   series_attempts = d.series_attempts + 1, next_attempt_at = v.next_at,
                   lease_until = NULL, leased_by = NULL, last_error = v.error, updated_at = v.now
                 FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[],
                             $6::bigint[]) AS v(id, state, number, next_at, error, now)
                 WHERE d.id = v.id",
                &params,
            );
            tokio::try_join!(insert, update)?;
        }
        Ok::<_, StoreError>(results)
    };
    match work.await {
        Ok(results) => {
            tx.commit().await.map_err(|e| Failure::Commit(pg(e)))?;
            Ok(results)
        }
        Err(e) => {
            drop(tx);
            Err(Failure::RolledBack(e))
        }
    }
}

#[derive(Default)]
struct UpdateColumns<'a> {
    id: Vec<&'a str>,
    state: Vec<&'a str>,
    number: Vec<i32>,
    next_at: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    now: Vec<i64>,
}
