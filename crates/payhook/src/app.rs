//! Wiring: store + dispatcher + watchdog + ops notifier + API, started and stopped together.
//!
//! [`build`] opens everything (tests call it with a manual clock); [`serve`] runs the API on a
//! listener the caller bound and the dispatcher loop, until `shutdown` is cancelled.

use crate::config::Config;
use anyhow::Context;
use payhook_api::auth::token_hash;
use payhook_api::limits::{RateLimit, RateLimits};
use payhook_api::AppState;
use payhook_core::clock::Clock;
use payhook_dispatch::{
    DispatchConfig, Dispatcher, OpsConfig, OpsNotifier, PurgeConfig, Purger, Sender, SenderConfig,
    TargetPolicy, Watchdog, WatchdogConfig,
};
use payhook_store::postgres::PgStore;
use payhook_store::seal::Sealer;
use payhook_store::sqlite::SqliteStore;
use payhook_store::{lease_for, HealthPolicy, Store, StoreError};
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
    /// The retention purge; it runs on every node, whatever its role.
    pub purger: Arc<Purger>,
    /// Sends operator alerts to the ops webhook, when one is configured; it runs where the
    /// dispatcher does.
    pub ops: Option<Arc<OpsNotifier>>,
    pub state: AppState,
    /// The admin token when this start generated it (to print once).
    pub generated_admin_token: Option<String>,
    /// The master key file when this start created it (its path is printed once).
    pub generated_key_file: Option<PathBuf>,
}

/// A store opened with its master key.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    /// The key file this start created (SQLite without a configured key): printed once.
    pub generated_key_file: Option<PathBuf>,
}

/// Opens the store named by `database` (a `postgres://` URL or a SQLite file path) with the
/// master key: `master_key` when given, else (SQLite) the key file beside the database,
/// created on first start.
pub async fn open_store(database: &str, master_key: Option<&str>) -> anyhow::Result<OpenedStore> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        // Every node must seal and open with the same key: no key file on a shared database.
        let key = master_key.context(
            "PostgreSQL nodes must all be given the same master key: --master-key / \
             PAYHOOK_MASTER_KEY (base64 of 32 bytes, e.g. `openssl rand -base64 32`)",
        )?;
        let sealer = Sealer::from_base64(key).map_err(|e| anyhow::anyhow!("master key: {e}"))?;
        let redacted = crate::config::redact_url(database);
        let store = PgStore::connect(database, None, sealer)
            .await
            .map_err(anyhow::Error::new)
            .with_context(|| format!("opening PostgreSQL database {redacted}"))?;
        return Ok(OpenedStore { store: Arc::new(store), generated_key_file: None });
    }
    let path = PathBuf::from(database.strip_prefix("sqlite://").unwrap_or(database));
    if let Some(key) = master_key {
        let sealer = Sealer::from_base64(key).map_err(|e| anyhow::anyhow!("master key: {e}"))?;
        let store = open_sqlite(&path, sealer).await.map_err(|e| {
            key_error(e, &path, "the configured master key (PAYHOOK_MASTER_KEY / --master-key)")
        })?;
        return Ok(OpenedStore { store, generated_key_file: None });
    }
    let key_file = key_file_for(&path);
    if key_file.exists() {
        let sealer = read_key_file(&key_file)?;
        let store = open_sqlite(&path, sealer)
            .await
            .map_err(|e| key_error(e, &path, &format!("the key file {}", key_file.display())))?;
        return Ok(OpenedStore { store, generated_key_file: None });
    }
    let sealer = write_key_file(&key_file)?;
    match open_sqlite(&path, sealer).await {
        Ok(store) => Ok(OpenedStore { store, generated_key_file: Some(key_file) }),
        Err(e) => {
            // Nothing was sealed with the new key: the check failed before any write.
            if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::MasterKey(_))) {
                let _ = std::fs::remove_file(&key_file);
                anyhow::bail!(
                    "{} holds secrets sealed with a master key, but no master key was given \
                     (PAYHOOK_MASTER_KEY, --master-key or master_key) and the key file {} does \
                     not exist: restore the key file or give the key",
                    path.display(),
                    key_file.display()
                );
            }
            Err(e)
        }
    }
}

async fn open_sqlite(path: &Path, sealer: Sealer) -> anyhow::Result<Arc<dyn Store>> {
    let store = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || SqliteStore::open(&path, sealer)
    })
    .await?
    .map_err(anyhow::Error::new)
    .with_context(|| format!("opening SQLite database {}", path.display()))?;
    Ok(Arc::new(store))
}

/// A clear message for a master key that does not open the database.
fn key_error(e: anyhow::Error, db: &Path, source: &str) -> anyhow::Error {
    if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::MasterKey(_))) {
        anyhow::anyhow!(
            "{source} is not the master key that sealed the secrets in {}: refusing to start",
            db.display()
        )
    } else {
        e
    }
}

/// `payhook.db` → `payhook.db.key`.
pub fn key_file_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The master key in a key file, refused when others may read it.
pub fn read_key_file(path: &Path) -> anyhow::Result<Sealer> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the key file {} is readable by others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    Sealer::from_base64(&text).map_err(|e| anyhow::anyhow!("the key file {}: {e}", path.display()))
}

/// Creates the key file (mode 0600, never overwriting) with a fresh key, durably.
fn write_key_file(path: &Path) -> anyhow::Result<Sealer> {
    let key = Sealer::generate_key();
    write_private_file(path, format!("{key}\n").as_bytes())?;
    Sealer::from_base64(&key).map_err(|e| anyhow::anyhow!("generated key: {e}"))
}

/// Writes `bytes` to a new file only its owner may read (mode 0600, never overwriting), and
/// syncs it and its directory: how a master key reaches the disk. The bytes go to a temporary
/// file beside `path` first, which takes `path`'s name only once complete and synced: a full
/// disk leaves no empty or partial key file behind, which would keep the next start from
/// generating the key afresh.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".payhook-new-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    file.persist_noclobber(path)
        .map_err(|e| e.error)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(())
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
    build_with_lookup(config, clock, payhook_dispatch::sender::system_lookup()).await
}

/// [`build`] with the outbound requests' host names resolved by `lookup` (tests make a name
/// resolve to a forbidden address, to show the dispatcher's check after DNS).
pub async fn build_with_lookup(
    config: &Config,
    clock: Arc<dyn Clock>,
    lookup: payhook_dispatch::sender::Lookup,
) -> anyhow::Result<Services> {
    let opened = open_store(&config.database, config.master_key.as_deref()).await?;
    let store = opened.store;
    // Before anything records an attempt: the thresholds, and alerts only for an ops webhook.
    let alerts = config.ops_webhook.is_some();
    store.set_health_policy(HealthPolicy { rules: config.health, alerts });
    let released = store.release_leases(&config.node_id).await?;
    if released > 0 {
        tracing::info!(released, "released leases left by a previous run");
    }
    let targets = TargetPolicy {
        allow_private: config.allow_private_targets,
        allow_cidrs: config.allow_cidrs.clone(),
        https_only: config.https_only,
    };
    let sender = Sender::with_lookup(
        &SenderConfig {
            timeout: config.request_timeout,
            targets: targets.clone(),
            ..SenderConfig::default()
        },
        lookup,
    )
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
    let purge = PurgeConfig::new(config.retention, config.purge_interval);
    let purger = Purger::new(store.clone(), clock.clone(), purge);
    let ops = ops_notifier(config, &store, &clock)?;
    let (hash, generated) = admin_hash(store.as_ref(), config.admin_token.as_deref()).await?;
    let state = AppState {
        store: store.clone(),
        clock,
        admin_token_hash: Arc::new(hash),
        targets: Arc::new(targets),
        wake: config.dispatch.then(|| dispatcher.waker()),
        limits: Arc::new(RateLimits::new(
            RateLimit::new(config.rate_limit, config.rate_limit_burst),
            RateLimit::new(config.admin_rate_limit, config.rate_limit_burst),
        )),
    };
    Ok(Services {
        store,
        dispatcher,
        watchdog,
        purger,
        ops,
        state,
        generated_admin_token: generated,
        generated_key_file: opened.generated_key_file,
    })
}

/// The ops webhook's sender, when one is configured.
fn ops_notifier(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<OpsNotifier>>> {
    let Some(hook) = &config.ops_webhook else { return Ok(None) };
    let ops = OpsConfig::new(
        hook.url.clone(),
        hook.secret.clone(),
        config.node_id.clone(),
        config.request_timeout,
    );
    let notifier = OpsNotifier::new(store.clone(), clock.clone(), ops)
        .context("building the ops webhook's HTTP client")?;
    Ok(Some(notifier))
}

/// Runs the API (when enabled), the dispatcher and the ops notifier (when enabled) and the
/// retention purge until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.api {
        // Before the dispatcher starts: it registers its metric handles at its first attempt,
        // and handles taken before the recorder is installed count nothing.
        payhook_api::metrics::install();
    }
    let workers = config.dispatch.then(|| {
        let d = tokio::spawn(services.dispatcher.clone().run(shutdown.clone()));
        let w = tokio::spawn(services.watchdog.clone().run(shutdown.clone()));
        let o = services.ops.clone().map(|ops| tokio::spawn(ops.run(shutdown.clone())));
        (d, w, o)
    });
    let purge = tokio::spawn(services.purger.clone().run(shutdown.clone()));
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
    if let Some((d, w, o)) = workers {
        d.await.context("dispatcher task")?;
        w.await.context("watchdog task")?;
        if let Some(o) = o {
            o.await.context("ops notifier task")?;
        }
    }
    purge.await.context("purge task")?;
    Ok(())
}
