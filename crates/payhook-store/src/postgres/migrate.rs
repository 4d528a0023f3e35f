//! Connection settings and versioned migrations for the PostgreSQL store.
//!
//! Migrations are `migrations/postgres/NNNN_*.sql`, compiled in, recorded in
//! `schema_migrations`. They run in one transaction holding an advisory lock keyed by the
//! `search_path`, so several nodes starting at once apply each version exactly once, while
//! tests in separate schemas do not wait for each other.

use super::rows::{exec, pg, query, query_opt};
use crate::StoreError;
use tokio_postgres::NoTls;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_watchdog.sql")),
    (3, include_str!("../../migrations/postgres/0003_pending_by_operation.sql")),
    (4, include_str!("../../migrations/postgres/0004_retention.sql")),
    (5, include_str!("../../migrations/postgres/0005_merchant_state.sql")),
    (6, include_str!("../../migrations/postgres/0006_keys_and_audit.sql")),
    (7, include_str!("../../migrations/postgres/0007_health_and_alerts.sql")),
];

/// Parses the URL and, when `schema` is given, puts it first on every connection's
/// `search_path` (after any `options` the URL already carries).
pub(super) fn config(
    url: &str,
    schema: Option<&str>,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
    if let Some(schema) = schema {
        check_identifier(schema)?;
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -csearch_path={schema}"),
            _ => format!("-csearch_path={schema}"),
        };
        config.options(&options);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(super::CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// Schema names are spliced into SQL and connection options, so only plain identifiers pass.
fn check_identifier(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "schema name {name:?} must be lowercase letters, digits and _ (at most 63)"
        )))
    }
}

/// Creates the schema if missing and applies pending migrations, under the migration lock.
pub(super) async fn apply(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    query_opt(
        &tx,
        "SELECT pg_advisory_xact_lock(hashtext('payhook.migrate'),
                                      hashtext(current_setting('search_path')))",
        &[],
    )
    .await?;
    ensure_schema(&tx).await?;
    let row = query_opt(&tx, "SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?;
    if !row.is_some_and(|r| r.get::<_, bool>(0)) {
        tx.batch_execute(
            "CREATE TABLE schema_migrations (
                version BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL DEFAULT (extract(epoch FROM now()) * 1000)::BIGINT)",
        )
        .await
        .map_err(pg)?;
    }
    let done: Vec<i64> = query(&tx, "SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !done.contains(v)) {
        tx.batch_execute(sql).await.map_err(pg)?;
        exec(&tx, "INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await.map_err(pg)
}

/// With a `search_path` naming a schema that does not exist yet, creates it (the first entry),
/// so a fresh schema per test or per installation needs no manual step.
async fn ensure_schema(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let row = query_opt(tx, "SELECT current_schema()", &[]).await?;
    if row.and_then(|r| r.get::<_, Option<String>>(0)).is_some() {
        return Ok(());
    }
    let row = query_opt(tx, "SELECT current_setting('search_path')", &[]).await?;
    let path: String = row.map(|r| r.get(0)).unwrap_or_default();
    let first = path.split(',').next().unwrap_or_default().trim().trim_matches('"');
    if first.is_empty() || first == "$user" {
        return Err(StoreError::Backend(format!(
            "no schema to create tables in (search_path is {path:?})"
        )));
    }
    check_identifier(first)?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {first}")).await.map_err(pg)?;
    tracing::info!(schema = first, "created PostgreSQL schema");
    Ok(())
}

/// Drops a schema and everything in it: the clean-up of tests that each used their own.
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    check_identifier(schema)?;
    let config = config(url, None)?;
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    let driver = tokio::spawn(connection);
    let result =
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.map_err(pg);
    drop(client);
    let _ = driver.await;
    result
}

/// The bytes every table of `schema` takes, indexes and TOAST included (the bench's sizing).
pub async fn schema_bytes(url: &str, schema: &str) -> Result<i64, StoreError> {
    check_identifier(schema)?;
    let (client, connection) = config(url, None)?.connect(NoTls).await.map_err(pg)?;
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(pg_total_relation_size(format('%I.%I', schemaname, tablename))),
                             0)::bigint
             FROM pg_tables WHERE schemaname = $1",
            &[&schema],
        )
        .await
        .map_err(pg);
    drop(client);
    let _ = driver.await;
    Ok(row?.get(0))
}

/// `VACUUM (ANALYZE)` of every table of `schema` (for the bench: a bulk load leaves the
/// planner's statistics and the visibility map behind until autovacuum catches up).
pub async fn vacuum_analyze(url: &str, schema: &str) -> Result<(), StoreError> {
    check_identifier(schema)?;
    let config = config(url, None)?;
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    let driver = tokio::spawn(connection);
    let tables = client
        .query("SELECT tablename FROM pg_tables WHERE schemaname = $1", &[&schema])
        .await
        .map_err(pg);
    let result = match tables {
        Ok(rows) => {
            let mut result = Ok(());
            for row in rows {
                let table: String = row.get(0);
                let sql = format!("VACUUM (ANALYZE) \"{schema}\".\"{table}\"");
                if let Err(e) = client.batch_execute(&sql).await.map_err(pg) {
                    result = Err(e);
                    break;
                }
            }
            result
        }
        Err(e) => Err(e),
    };
    drop(client);
    let _ = driver.await;
    result
}
