//! API keys and the audit log on PostgreSQL. A key change locks its merchant's row first, so
//! two nodes adding or revoking keys of one merchant at once are checked one after the other.

use super::rows::{exec, query, query_opt};
use crate::columns::parse_id;
use crate::{Actor, AuditEntry, AuditQuery, AuditRecord, KeyOwner, NewApiKey, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::ids::{ApiKeyId, MerchantId};
use payhook_core::lifecycle::keys;
use payhook_core::model::{ApiKey, AuditAction};
use payhook_core::Timestamp;
use tokio_postgres::Row;

pub(super) async fn insert_key<C: GenericClient>(
    c: &C,
    m: &MerchantId,
    k: &NewApiKey,
) -> Result<(), StoreError> {
    let sql = "INSERT INTO api_keys (key_hash, merchant_id, created_at, id, prefix)
               VALUES ($1, $2, $3, $4, $5)";
    exec(c, sql, &[&k.hash, &m.as_str(), &k.created_at.0, &k.id.as_str(), &k.prefix]).await?;
    Ok(())
}

/// Locks the merchant's row and counts its keys; `NotFound` when there is no such merchant.
async fn lock_and_count<C: GenericClient>(c: &C, m: &MerchantId) -> Result<usize, StoreError> {
    let lock = "SELECT 1 FROM merchants WHERE id = $1 FOR UPDATE";
    query_opt(c, lock, &[&m.as_str()]).await?.ok_or(StoreError::NotFound)?;
    let count = "SELECT count(*) FROM api_keys WHERE merchant_id = $1";
    let n: i64 = query_opt(c, count, &[&m.as_str()]).await?.map_or(0, |r| r.get(0));
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) async fn add<C: GenericClient>(
    c: &C,
    m: &MerchantId,
    k: &NewApiKey,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    keys::check_create(lock_and_count(c, m).await?)?;
    insert_key(c, m, k).await?;
    write_audit(c, audit).await
}

pub(super) async fn revoke<C: GenericClient>(
    c: &C,
    m: &MerchantId,
    key: &ApiKeyId,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    let held = lock_and_count(c, m).await?;
    let sql = "SELECT 1 FROM api_keys WHERE merchant_id = $1 AND id = $2";
    query_opt(c, sql, &[&m.as_str(), &key.as_str()]).await?.ok_or(StoreError::NotFound)?;
    keys::check_revoke(held)?;
    exec(c, "DELETE FROM api_keys WHERE id = $1", &[&key.as_str()]).await?;
    write_audit(c, audit).await
}

pub(super) async fn touch<C: GenericClient>(
    c: &C,
    key: &ApiKeyId,
    hour: Timestamp,
    prefix: &str,
) -> Result<(), StoreError> {
    let sql = "UPDATE api_keys SET last_used_at = $2, prefix = $3 WHERE id = $1";
    exec(c, sql, &[&key.as_str(), &hour.0, &prefix]).await?;
    Ok(())
}

pub(super) async fn owner<C: GenericClient>(
    c: &C,
    hash: &str,
) -> Result<Option<KeyOwner>, StoreError> {
    let sql = "SELECT merchant_id, id, prefix, last_used_at FROM api_keys WHERE key_hash = $1";
    let Some(r) = query_opt(c, sql, &[&hash]).await? else { return Ok(None) };
    Ok(Some(KeyOwner {
        merchant: parse_id(r.get::<_, &str>(0))?,
        key: parse_id(r.get::<_, &str>(1))?,
        prefix: r.get(2),
        last_used_at: r.get::<_, Option<i64>>(3).map(Timestamp),
    }))
}

pub(super) async fn list<C: GenericClient>(
    c: &C,
    m: &MerchantId,
) -> Result<Vec<ApiKey>, StoreError> {
    let sql = "SELECT id, prefix, created_at, last_used_at FROM api_keys
               WHERE merchant_id = $1 ORDER BY created_at, id COLLATE \"C\"";
    let rows = query(c, sql, &[&m.as_str()]).await?;
    rows.iter()
        .map(|r| {
            Ok(ApiKey {
                id: parse_id(r.get::<_, &str>(0))?,
                prefix: r.get(1),
                created_at: Timestamp(r.get(2)),
                last_used_at: r.get::<_, Option<i64>>(3).map(Timestamp),
            })
        })
        .collect()
}

pub(super) async fn write_audit<C: GenericClient>(c: &C, a: &AuditEntry) -> Result<(), StoreError> {
    let sql = "INSERT INTO audit_log (at, actor, action, merchant_id, detail)
               VALUES ($1, $2, $3, $4, $5)";
    let detail = a.detail.to_string();
    let p: super::rows::Params<'_> =
        &[&a.at.0, &a.actor.as_str(), &a.action.as_str(), &a.merchant.as_str(), &detail];
    exec(c, sql, p).await?;
    Ok(())
}

pub(super) async fn audit_page<C: GenericClient>(
    c: &C,
    q: &AuditQuery,
) -> Result<Vec<AuditRecord>, StoreError> {
    let sql = "SELECT position, at, actor, action, merchant_id, detail FROM audit_log
               WHERE position > $1 AND ($2::text IS NULL OR merchant_id = $2)
               ORDER BY position LIMIT $3";
    let merchant = q.merchant.as_ref().map(|m| m.as_str());
    let rows = query(c, sql, &[&q.after, &merchant, &i64::from(q.limit)]).await?;
    rows.iter().map(audit_from).collect()
}

fn audit_from(r: &Row) -> Result<AuditRecord, StoreError> {
    let malformed = |what: &str| StoreError::Backend(format!("malformed {what} in the audit log"));
    Ok(AuditRecord {
        position: r.get(0),
        entry: AuditEntry {
            at: Timestamp(r.get(1)),
            actor: Actor::parse(r.get(2)).ok_or_else(|| malformed("actor"))?,
            action: AuditAction::parse(r.get(3)).ok_or_else(|| malformed("action"))?,
            merchant: parse_id(r.get::<_, &str>(4))?,
            detail: serde_json::from_str(r.get(5)).map_err(|_| malformed("detail"))?,
        },
    })
}
