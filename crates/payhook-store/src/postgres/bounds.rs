//! The PostgreSQL store's time bounds, with which every wait on the server ends even when its
//! packets are silently dropped (docs/configuration.md, "PostgreSQL: how long a call may
//! wait", says what bounds what and why), and how its errors are told apart: the server gone
//! ([`StoreError::Unavailable`]), its disk full ([`StoreError::StorageFull`]), or anything else.
//!
//! A URL that sets `connect_timeout`, `tcp_user_timeout`, `keepalives_*` or one of the
//! server settings in `options` keeps its own value.

use super::rows::with_sources;
use crate::StoreError;
use std::time::Duration;

#[cfg(test)]
#[path = "bounds_tests.rs"]
mod tests;

/// Opening a connection: the TCP connect (tokio-postgres' `connect_timeout`), and the pool's
/// bound on creating one, startup and authentication included.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a caller waits for a pooled connection while all `POOL_SIZE` are in use.
pub(super) const POOL_WAIT: Duration = Duration::from_secs(5);
/// Data sent and left unacknowledged this long ends a connection (Linux `TCP_USER_TIMEOUT`),
/// on this side and, through `options`, on the server's; with the keepalives it also ends a
/// wait for an answer from a peer that has gone silent.
pub(super) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// Keepalive probes after this long without traffic, then every `KEEPALIVE_INTERVAL`.
pub(super) const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Server side: a statement running longer is cancelled (SQLSTATE 57014) and its transaction
/// rolled back. Migrations at connect run without it.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The statement timeout of the two kinds of work that may legitimately take longer: a purge
/// batch and the per-merchant delivery statistics (a scan of every delivery kept).
pub(super) const LONG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Server side: a session left idle inside a transaction this long is ended, so a node that
/// vanished mid-transaction does not hold its row and advisory locks on.
pub(super) const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Client side: the longest a caller waits for a registration, a status report, an attempt
/// record (each queued for a group commit) or a readiness ping, whatever the server does.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(8);
/// Sets the time bounds (see the constants) on `config`, except those its URL set.
pub(super) fn bound(config: &mut tokio_postgres::Config) {
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    // tokio-postgres' own default idle time is two hours: only that is replaced.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    let ms = |d: Duration| d.as_millis().to_string();
    let mut options = config.get_options().unwrap_or_default().to_owned();
    for (setting, value) in [
        ("statement_timeout", ms(STATEMENT_TIMEOUT)),
        ("idle_in_transaction_session_timeout", ms(IDLE_IN_TRANSACTION_TIMEOUT)),
        ("tcp_user_timeout", ms(TCP_USER_TIMEOUT)),
        ("tcp_keepalives_idle", KEEPALIVE_IDLE.as_secs().to_string()),
        ("tcp_keepalives_interval", KEEPALIVE_INTERVAL.as_secs().to_string()),
    ] {
        if !options.contains(setting) {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c{setting}={value}"));
        }
    }
    config.options(&options);
}

/// Bounds a call by [`CALL_TIMEOUT`]: past it the caller gets [`StoreError::Unavailable`]
/// (the work, when it was queued, may still commit; an abandoned queued job is skipped).
pub(crate) async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!("no answer from PostgreSQL within {CALL_TIMEOUT:?}")))
    })
}

/// The same failure for each caller of a group (`StoreError` is not `Clone`): what the API
/// tells apart keeps its kind, the rest is a backend failure with the same text.
pub(crate) fn each_caller(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::StorageFull(m) => StoreError::StorageFull(m.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// A pool error as a store error: no connection in time is [`StoreError::Unavailable`].
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => driver_error(e),
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "no PostgreSQL connection within {POOL_WAIT:?}: {}",
            with_sources(&e)
        )),
        other => StoreError::Backend(format!("PostgreSQL pool: {}", with_sources(&other))),
    }
}

/// A driver error as a store error, with the server's message when there is one (the
/// driver's own `Display` says only "db error"): [`StoreError::Unavailable`] when the server
/// cannot be reached or went away, [`StoreError::StorageFull`] for its full disk (53100),
/// [`StoreError::Backend`] otherwise.
pub(crate) fn driver_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let text = format!("{code}: {}", db.message());
        return match code {
            "53100" => StoreError::StorageFull(text),
            c if server_gone(c) => StoreError::Unavailable(text),
            _ => StoreError::Backend(text),
        };
    }
    let text = with_sources(&e);
    // Closed, or an I/O error on the socket (reset, refused, timed out, unreachable) while
    // connecting or talking: the server is not there for this call.
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// SQLSTATEs that say the server cannot serve this session now, whatever the statement:
/// class 08 (connection exception), 57P01-57P03 (shut down by the administrator, crashed,
/// cannot connect now: starting up or shutting down), 53300 (too many connections), 57014
/// (cancelled: our statement timeout), 25P03 (our idle-in-transaction timeout).
fn server_gone(code: &str) -> bool {
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "57014" | "25P03")
}
