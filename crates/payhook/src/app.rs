//! Wiring: store + dispatcher + watchdog + API, started and stopped together.
//!
//! [`build`] opens everything (tests call it with a manual clock); [`serve`] runs the API on a
//! listener the caller bound and the dispatcher loop, until `shutdown` is cancelled.

use crate::config::Config;
use anyhow::Context;
use payhook_api::auth::token_hash;
use payhook_api::AppState;
use payhook_core::clock::Clock;
use payhook_dispatch::{
    DispatchConfig, Dispatcher, Sender, SenderConfig, TargetPolicy, Watchdog, WatchdogConfig,
};
use payhook_store::sqlite::SqliteStore;
use payhook_store::{lease_for, Store};
use rand::RngCore;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The settings key of the admin token's hash when payhook generated the token.
const ADMIN_HASH_KEY: &str = "admin_token_sha256";

/// Everything a node runs, built and ready.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub dispatcher: Arc<Dispatcher>,
    pub watchdog: Arc<Watchdog>,
    pub state: AppState,
    /// The admin token when this start generated it (to print once).
    pub generated_admin_token: Option<String>,
}

/// Opens the store named by `database`: a `postgres://` URL or a SQLite file path.
pub async fn open_store(database: &str) -> anyhow::Result<Arc<dyn Store>> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        anyhow::bail!("PostgreSQL support is not built into this version");
    }
    let path = database.strip_prefix("sqlite://").unwrap_or(database);
    let store = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || SqliteStore::open(Path::new(&path))
    })
    .await?
    .with_context(|| format!("opening SQLite database {path}"))?;
    Ok(Arc::new(store))
}

/// The admin token's hash: from the configured token, or from the store, generating and
/// storing a new token on first start.
async fn admin_hash(
    store: &dyn Store,
    configured: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    if let Some(token) = configured {
        return Ok((token_hash(token), None));
    }
    if let Some(hash) = store.setting(ADMIN_HASH_KEY).await? {
        return Ok((hash, None));
    }
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("adm_{token}");
    let stored = store.init_setting(ADMIN_HASH_KEY, &token_hash(&token)).await?;
    // Another node may have won the race: then its token is the one in force.
    let shown = (stored == token_hash(&token)).then_some(token);
    Ok((stored, shown))
}

pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Services> {
    let store = open_store(&config.database).await?;
    let released = store.release_leases(&config.node_id).await?;
    if released > 0 {
        tracing::info!(released, "released leases left by a previous run");
    }
    let sender = Sender::new(&SenderConfig {
        timeout: config.request_timeout,
        targets: TargetPolicy {
            allow_private: config.allow_private_targets,
            allow_cidrs: config.allow_cidrs.clone(),
            https_only: config.https_only,
        },
        ..SenderConfig::default()
    })
    .context("building the HTTP client")?;
    let dispatch = DispatchConfig {
        node_id: config.node_id.clone(),
        max_in_flight: config.max_in_flight,
        per_host_limit: config.per_host_limit,
        lease: lease_for(config.request_timeout),
        poll_interval: config.poll_interval,
    };
    let dispatcher = Dispatcher::new(store.clone(), clock.clone(), sender.clone(), dispatch);
    let watchdog = Watchdog::new(
        store.clone(),
        clock.clone(),
        sender,
        WatchdogConfig {
            node_id: config.node_id.clone(),
            batch: config.max_in_flight,
            lease: lease_for(config.request_timeout),
            poll_interval: config.poll_interval,
        },
        Some(dispatcher.waker()),
    );
    let (hash, generated) = admin_hash(store.as_ref(), config.admin_token.as_deref()).await?;
    let state = AppState {
        store: store.clone(),
        clock,
        admin_token_hash: Arc::new(hash),
        wake: config.dispatch.then(|| dispatcher.waker()),
    };
    Ok(Services { store, dispatcher, watchdog, state, generated_admin_token: generated })
}

/// Runs the API (when enabled) and the dispatcher (when enabled) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let workers = config.dispatch.then(|| {
        let d = tokio::spawn(services.dispatcher.clone().run(shutdown.clone()));
        let w = tokio::spawn(services.watchdog.clone().run(shutdown.clone()));
        (d, w)
    });
    if config.api {
        let app = payhook_api::router(services.state);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving the API")?;
    } else {
        drop(listener);
        shutdown.cancelled().await;
    }
    if let Some((d, w)) = workers {
        d.await.context("dispatcher task")?;
        w.await.context("watchdog task")?;
    }
    Ok(())
}
