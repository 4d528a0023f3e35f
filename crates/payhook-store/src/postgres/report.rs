//! Registrations and status reports on PostgreSQL. A report is
//! **check** (lock the operation row, the event key's replay rule and the lifecycle's verdict;
//! writes nothing) → **apply** (the operation's row, the delivery the change owes, the watch it
//! ends) → **store** (the feed locks, then the events, last: see [`lock_feed`]).
//!
//! Entry points: [`report_alone`] (one report in its own transaction), [`report_batch`] (a
//! batch, or a group of single reports, in one transaction) and [`register_in`]. Lock order,
//! in every transaction: registrations by (merchant, external id), operation rows by id, feed
//! locks by merchant — so batches, groups and single reports cannot deadlock.

use super::plan::{apply_delivery, plan_delivery, Seen};
use super::rows::*;
use super::watch;
use crate::columns::{parse_id, status_source_of};
use crate::seal::Sealer;
use crate::{mint_id, NewOperation, Registered, Reported, StatusReport, StoreError};
use deadpool_postgres::GenericClient;
use futures_util::future::{join_all, try_join_all};
use payhook_core::ids::{EventId, MerchantId, OperationId};
use payhook_core::lifecycle::{self, Change};
use payhook_core::model::Event;
use payhook_core::Timestamp;
use std::sync::Arc;

/// Registers idempotently: `ON CONFLICT` waits for a concurrent registration of the same
/// external id to commit, so exactly one request creates (with its `created` event and, for
/// a status source, its watch) and the others find its row.
pub(super) async fn register_in<C: GenericClient>(
    tx: &C,
    new: &NewOperation,
    now: Timestamp,
) -> Result<Registered, StoreError> {
    let (registered, event) = register_unstored(tx, new, now).await?;
    if let Some(mut event) = event {
        lock_feed(tx, &event.merchant_id).await?;
        store_event(tx, &mut event).await?;
    }
    Ok(registered)
}

/// A registration up to its `created` event, which the caller stores after taking the feed
/// lock (`None` when nothing was created).
pub(super) async fn register_unstored<C: GenericClient>(
    tx: &C,
    new: &NewOperation,
    now: Timestamp,
) -> Result<(Registered, Option<Event>), StoreError> {
    let id = mint_id(OperationId::PREFIX);
    let created = insert_operation(tx, &id, new, now).await?;
    let (op, hash) = query_operation(
        tx,
        "WHERE merchant_id = $1 AND external_id = $2",
        &[&new.merchant_id.as_str(), &new.external_id],
    )
    .await?
    .ok_or_else(|| StoreError::Backend("registered operation vanished".into()))?;
    if !created {
        let same = hash == new.request_hash;
        let registered = if same { Registered::Existing(op) } else { Registered::Conflict(op) };
        return Ok((registered, None));
    }
    if let Some(source) = status_source_of(&op)? {
        insert_watch(tx, &op, &source, now).await?;
    }
    let event = lifecycle::registration_event(op.clone(), new_event_id()?, now);
    Ok((Registered::Created(op), Some(event)))
}

fn new_event_id() -> Result<EventId, StoreError> {
    parse_id(&mint_id(EventId::PREFIX))
}

/// One report in the caller's transaction: check → apply → store.
pub(super) async fn report_alone<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    report: StatusReport,
    now: Timestamp,
) -> Result<Reported, StoreError> {
    let mut reported = match check(tx, &report, now).await? {
        Checked::Replay(earlier) => return Ok(*earlier),
        Checked::Change(change) => apply(tx, sealer, seen, *change, now).await?,
    };
    lock_feed(tx, &reported.event.merchant_id).await?;
    store_event(tx, Arc::make_mut(&mut reported.event)).await?;
    Ok(reported)
}

/// A report after its check, which writes nothing.
pub(super) enum Checked {
    /// The event key was seen: the earlier event, nothing to store.
    Replay(Box<Reported>),
    /// The lifecycle accepted the change of the (now row-locked) operation.
    Change(Box<Change>),
}

/// Locks the operation row and asks the lifecycle: unknown operation, event key seen before
/// (replay or conflict), transition refused. Writes nothing, so a refused report needs no
/// rollback.
pub(super) async fn check<C: GenericClient>(
    tx: &C,
    report: &StatusReport,
    now: Timestamp,
) -> Result<Checked, StoreError> {
    let (op, _) = query_operation(tx, "WHERE id = $1 FOR UPDATE", &[&report.operation_id.as_str()])
        .await?
        .ok_or(StoreError::NotFound)?;
    if let Some(key) = &report.event_key {
        if let Some(earlier) = event_by_key(tx, &op.id, key).await? {
            let event = Arc::new(lifecycle::replay(earlier, report)?);
            let earlier = Reported { event, duplicate: true, delivery: None, handed_off: false };
            return Ok(Checked::Replay(Box::new(earlier)));
        }
    }
    let change = lifecycle::apply_report(op, report, new_event_id()?, now)?;
    Ok(Checked::Change(Box::new(change)))
}

/// Writes an accepted change but its event: the operation's row, its delivery (which refers
/// to the event before it is inserted: the foreign key is deferred to commit, so the feed
/// lock is held only for the event insert and the commit) and the end of its watch.
async fn apply<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    change: Change,
    now: Timestamp,
) -> Result<Reported, StoreError> {
    let Change { event, supersede, finishes_watch, .. } = change;
    save_operation_status(tx, &event.operation).await?;
    let planned = plan_delivery(tx, sealer, seen, &event, supersede).await?;
    let (delivery, handed_off) = match planned {
        Some(plan) => apply_delivery(tx, seen, plan).await?,
        None => (None, false),
    };
    if finishes_watch {
        watch::finish(tx, &event.operation_id, now).await?;
    }
    Ok(Reported { event: Arc::new(event), duplicate: false, delivery, handed_off })
}

/// How a batch runs its items.
#[derive(Clone, Copy)]
pub(super) enum Items {
    /// No savepoints: an item refused by its check has written nothing. Anything failing after
    /// an item's check fails the batch (`Err`: the caller rolls back and runs it again with
    /// [`Items::Savepoints`]).
    Plain,
    /// A savepoint per item: a failing item is rolled back alone and the others go on.
    Savepoints,
}

/// Reports in one transaction, each with its own time, in lock order (sorted by operation
/// id), the events stored last; each item succeeds or is refused on its own.
pub(super) async fn report_batch<C: GenericClient + Sync>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    reports: Vec<(StatusReport, Timestamp)>,
    items: Items,
) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
    let mut results = report_unstored(tx, sealer, seen, reports, items).await?;
    store_events_of(tx, &mut results).await?;
    Ok(results)
}

/// Check → apply for each report, in lock order; the events are left for the caller to store
/// (after the feed locks). When no two items are for the same operation and no savepoints
/// are needed, the items are pipelined ([`apply_pipelined`]).
pub(super) async fn report_unstored<C: GenericClient + Sync>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    reports: Vec<(StatusReport, Timestamp)>,
    items: Items,
) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
    let (order, mut slots, mut results) = by_operation(reports);
    let ids = order.iter().filter_map(|&i| slots[i].as_ref().map(|(r, _)| &r.operation_id));
    if matches!(items, Items::Plain) && order.len() > 1 && distinct_operations(ids) {
        let items = order.iter().map(|&i| slots[i].take().expect("each item once")).collect();
        let outcomes = apply_pipelined(tx, sealer, seen, items).await?;
        for (&i, outcome) in order.iter().zip(outcomes) {
            results[i] = Some(outcome);
        }
    } else {
        for i in order {
            let (report, now) = slots[i].take().expect("each item once");
            results[i] = Some(match items {
                Items::Plain => check_and_apply(tx, sealer, seen, report, now).await?,
                Items::Savepoints => in_savepoint(tx, sealer, seen, report, now).await?,
            });
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every item has a result")).collect())
}

/// One item without a savepoint: `Ok(Err(_))` when its check refuses it (it wrote nothing),
/// `Err` when anything fails after the check (the whole transaction must be rolled back).
async fn check_and_apply<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    report: StatusReport,
    now: Timestamp,
) -> Result<Result<Reported, StoreError>, StoreError> {
    Ok(match check(tx, &report, now).await {
        Err(e) if is_refusal(&e) => Err(e),
        Err(e) => return Err(e),
        Ok(Checked::Replay(r)) => Ok(*r),
        Ok(Checked::Change(change)) => Ok(apply(tx, sealer, seen, *change, now).await?),
    })
}

/// One item in its own savepoint: whatever fails is rolled back alone.
async fn in_savepoint<C: GenericClient>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    report: StatusReport,
    now: Timestamp,
) -> Result<Result<Reported, StoreError>, StoreError> {
    exec(tx, "SAVEPOINT item", &[]).await?;
    let outcome = check_and_apply(tx, sealer, seen, report, now).await.and_then(|r| r);
    let undo =
        if outcome.is_ok() { "RELEASE SAVEPOINT item" } else { "ROLLBACK TO SAVEPOINT item" };
    exec(tx, undo, &[]).await?;
    Ok(outcome)
}

/// True when no two reports are for the same operation; `sorted` yields their operation ids
/// in lock order, so equal ids are neighbours.
fn distinct_operations<'a>(mut sorted: impl Iterator<Item = &'a OperationId>) -> bool {
    let mut last = None;
    sorted.all(|id| last.replace(id) != Some(id))
}

/// Check → apply for reports that are all for different operations, in lock order, pipelined
/// on the connection instead of three round trips per report one after the other:
///
/// 1. every report's row lock and read are sent at once, in lock order (PostgreSQL runs one
///    connection's statements in the order they were sent, so the locks are taken in the
///    order a one-by-one run takes them);
/// 2. each accepted change's delivery is planned (merchants and disabled URLs read once per
///    transaction, as one by one);
/// 3. every change's operation UPDATE and delivery statement are sent at once.
///
/// As one by one: a report refused by its check has written nothing, anything failing after
/// the checks is `Err` (the caller rolls back), and the events are left for the caller to
/// store.
async fn apply_pipelined<C: GenericClient + Sync>(
    tx: &C,
    sealer: &Sealer,
    seen: &mut Seen,
    reports: Vec<(StatusReport, Timestamp)>,
) -> Result<Vec<Result<Reported, StoreError>>, StoreError> {
    let mut results: Vec<Option<Result<Reported, StoreError>>> = Vec::new();
    results.resize_with(reports.len(), || None);
    let checks = join_all(reports.iter().map(|(report, now)| check(tx, report, *now))).await;
    let mut planned = Vec::with_capacity(results.len());
    for (i, checked) in checks.into_iter().enumerate() {
        match checked {
            Err(e) if is_refusal(&e) => results[i] = Some(Err(e)),
            Err(e) => return Err(e),
            Ok(Checked::Replay(earlier)) => results[i] = Some(Ok(*earlier)),
            Ok(Checked::Change(change)) => {
                let plan = plan_delivery(tx, sealer, seen, &change.event, change.supersede).await?;
                planned.push((i, *change, plan));
            }
        }
    }
    let leased = try_join_all(planned.iter().map(|(_, change, plan)| async move {
        let insert = async {
            match plan {
                Some(plan) => plan.insert(tx).await,
                None => Ok(false),
            }
        };
        let ((), leased) =
            tokio::try_join!(save_operation_status(tx, &change.event.operation), insert)?;
        Ok::<_, StoreError>(leased)
    }))
    .await?;
    for ((i, change, plan), leased) in planned.into_iter().zip(leased) {
        let (delivery, handed_off) = match plan {
            Some(plan) => plan.finish(seen, leased),
            None => (None, false),
        };
        if change.finishes_watch {
            watch::finish(tx, &change.event.operation_id, reports[i].1).await?;
        }
        let event = Arc::new(change.event);
        results[i] = Some(Ok(Reported { event, duplicate: false, delivery, handed_off }));
    }
    Ok(results.into_iter().map(|r| r.expect("every report has a result")).collect())
}

/// The items of a batch in lock order (operation id), each to be taken once, and a result
/// place per item in the caller's order.
type Ordered =
    (Vec<usize>, Vec<Option<(StatusReport, Timestamp)>>, Vec<Option<Result<Reported, StoreError>>>);

fn by_operation(reports: Vec<(StatusReport, Timestamp)>) -> Ordered {
    let mut order: Vec<usize> = (0..reports.len()).collect();
    order.sort_by(|a, b| reports[*a].0.operation_id.cmp(&reports[*b].0.operation_id));
    let mut results = Vec::new();
    results.resize_with(reports.len(), || None);
    (order, reports.into_iter().map(Some).collect(), results)
}

/// A report refused by its check, as opposed to a failure of the database (which may have
/// aborted the transaction).
fn is_refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound | StoreError::InvalidTransition(_) | StoreError::EventKeyConflict(_)
    )
}

/// Store: takes the feed locks of the merchants of `results`' new events (sorted), then
/// inserts the events in item order with one statement.
async fn store_events_of<C: GenericClient>(
    tx: &C,
    results: &mut [Result<Reported, StoreError>],
) -> Result<(), StoreError> {
    let mut events: Vec<&mut Event> = results
        .iter_mut()
        .flatten()
        .filter(|r| !r.duplicate)
        .map(|r| Arc::make_mut(&mut r.event)) // not shared yet: no copy
        .collect();
    lock_feeds(tx, events.iter().map(|e| &e.merchant_id)).await?;
    store_events(tx, &mut events).await
}

/// Takes the feed locks of `merchants`, each once, in lock order.
pub(super) async fn lock_feeds<'a, C: GenericClient>(
    tx: &C,
    merchants: impl Iterator<Item = &'a MerchantId>,
) -> Result<(), StoreError> {
    let mut merchants: Vec<&MerchantId> = merchants.collect();
    merchants.sort();
    merchants.dedup();
    for m in merchants {
        lock_feed(tx, m).await?;
    }
    Ok(())
}

/// Serialises the merchant's event inserts until commit (taken as late as possible). A
/// sequence hands out positions in call order but transactions commit in any order; without
/// this a feed reader could see position 11, move its cursor past it, and never see 10 commit
/// a moment later.
async fn lock_feed<C: GenericClient>(tx: &C, merchant: &MerchantId) -> Result<(), StoreError> {
    query_opt(
        tx,
        "SELECT pg_advisory_xact_lock(hashtext('payhook.events'), hashtext($1))",
        &[&merchant.as_str()],
    )
    .await
    .map(|_| ())
}
