//! The retention purge: on every node, every `interval`, walk what retention lets go
//! (`payhook_core::lifecycle::retention`) and delete it in small batches through the store.
//! Batches are short and spaced as the store asks ([`PurgePace`]) so the live path waits at
//! most one batch. On PostgreSQL one node at a time purges (the store's advisory lock); the
//! others find it busy and wait for their next run.

use payhook_core::clock::Clock;
use payhook_core::lifecycle::Retention;
use payhook_store::{PurgeBatch, PurgePace, PurgeTarget, PurgedRows, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct PurgeConfig {
    pub retention: Retention,
    /// Time between runs.
    pub interval: Duration,
    /// The shortest pause between batches; the store's [`PurgePace`] may ask for longer.
    pub pause: Duration,
}

impl PurgeConfig {
    pub fn new(retention: Retention, interval: Duration) -> PurgeConfig {
        PurgeConfig { retention, interval, pause: Duration::from_millis(10) }
    }
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeRun {
    pub rows: PurgedRows,
    pub batches: u32,
    /// Another node was purging: this run stopped at its first batch.
    pub busy: bool,
}

pub struct Purger {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: PurgeConfig,
}

impl Purger {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: PurgeConfig) -> Arc<Self> {
        Arc::new(Purger { store, clock, config })
    }

    /// One run: everything retention lets go at the clock's now, batch by batch. Each batch
    /// is counted as it commits (a long run shows its progress); a run that ends sets the
    /// last-run time.
    pub async fn run_once(&self) -> Result<PurgeRun, StoreError> {
        let run = self.sweep().await;
        if run.is_ok() {
            crate::metrics::purge_finished(self.clock.now());
        }
        run
    }

    async fn sweep(&self) -> Result<PurgeRun, StoreError> {
        let plan = self.config.retention.plan(self.clock.now());
        let mut targets = Vec::new();
        if let Some(before) = plan.history_before {
            targets.extend([PurgeTarget::History { before }, PurgeTarget::Polls { before }]);
        }
        if let Some(before) = plan.operations_before {
            targets.push(PurgeTarget::Operations { before });
        }
        let PurgePace { batch: limit, yield_factor } = self.store.purge_pace();
        let mut run = PurgeRun::default();
        for target in targets {
            let mut batch = PurgeBatch { target, after: 0, limit };
            loop {
                let started = std::time::Instant::now();
                let purged = self.store.purge(&batch).await?;
                let took = started.elapsed();
                run.batches += 1;
                run.rows.add(purged.rows);
                crate::metrics::purged(&purged.rows);
                if purged.busy {
                    run.busy = true;
                    return Ok(run);
                }
                if purged.done {
                    break;
                }
                batch.after = purged.next_after;
                tokio::time::sleep(self.config.pause.max(took * yield_factor)).await;
            }
        }
        Ok(run)
    }

    /// Runs every `interval` until `shutdown`; a run in progress finishes its batch first.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.config.retention == Retention::FOREVER {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
            let started = std::time::Instant::now();
            let run = tokio::select! {
                _ = shutdown.cancelled() => return,
                run = self.run_once() => run,
            };
            match run {
                Ok(run) => {
                    let ms = started.elapsed().as_millis() as u64;
                    if run.rows.total() > 0 {
                        let r = run.rows;
                        tracing::info!(
                            operations = r.operations,
                            events = r.events,
                            deliveries = r.deliveries,
                            attempts = r.attempts,
                            polls = r.polls,
                            watches = r.watches,
                            batches = run.batches,
                            ms,
                            "retention purge"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention purge failed; retried next run"),
            }
        }
    }
}
