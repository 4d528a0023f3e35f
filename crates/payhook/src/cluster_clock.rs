//! The cluster's one clock. On a store several nodes share, a node reads time as its own
//! clock corrected to the database server's: it measures the difference at start and every
//! [`REALIGN_EVERY`] after. Every time a node writes (a lease's end, a retry's due time, an
//! event's creation) and every time it compares with one is then on the database's clock, so
//! one node's fast clock can neither take over another's lease early nor make a retry due
//! early or late. docs/cluster.md says what this assumes.

use payhook_core::clock::{OffsetClock, SystemClock};
use payhook_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A node's clock: the system clock, corrected to the database's when the store has one.
pub type NodeClock = OffsetClock<SystemClock>;

/// How often the correction is measured again: a step in this node's clock (an operator or
/// NTP setting it) is corrected within this long.
pub const REALIGN_EVERY: Duration = Duration::from_secs(1);

/// A measurement whose round trip took longer than this is not used: its error (half the
/// round trip) could be larger than the drift it corrects.
const MAX_ROUND_TRIP_MS: i64 = 500;

/// A difference this large is worth an operator's attention (the lease margin is 15 s).
const WARN_OFFSET_MS: i64 = 2_000;

/// Aligns `clock` with the store's database clock, then keeps it aligned until `stop`.
/// Does nothing for a store without one (SQLite: one process, one clock).
pub async fn follow_database(
    store: Arc<dyn Store>,
    clock: Arc<NodeClock>,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let Some(offset) = align(store.as_ref(), &clock).await? else { return Ok(()) };
    if offset.abs() >= WARN_OFFSET_MS {
        tracing::warn!(offset_ms = offset, "this node's clock differs from the database's");
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REALIGN_EVERY) => {}
            }
            if let Err(e) = align(store.as_ref(), &clock).await {
                tracing::debug!(error = %e, "reading the database's clock");
            }
        }
    });
    Ok(())
}

/// One measurement; the new offset in milliseconds, `None` when the store has no clock or
/// the round trip was too slow to trust (the previous correction stays).
async fn align(store: &dyn Store, clock: &NodeClock) -> Result<Option<i64>, StoreError> {
    let sent = clock.inner_now();
    let Some(reference) = store.database_time().await? else { return Ok(None) };
    let received = clock.inner_now();
    if received.0 - sent.0 > MAX_ROUND_TRIP_MS {
        return Ok(None);
    }
    let offset = clock.align(sent, reference, received);
    // The gauge reads "this node minus the database": the correction with its sign turned.
    metrics::gauge!(payhook_api::metrics::CLOCK_OFFSET).set(-offset as f64 / 1000.0);
    Ok(Some(offset))
}
