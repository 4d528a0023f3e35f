//! API keys and the audit log on SQLite: the writer's jobs and the readers' queries.

use super::rows::{backend, exec, query_rows};
use crate::columns::parse_id;
use crate::{Actor, AuditEntry, AuditQuery, AuditRecord, KeyOwner, NewApiKey, StoreError};
use payhook_core::ids::{ApiKeyId, MerchantId};
use payhook_core::lifecycle::keys;
use payhook_core::model::{ApiKey, AuditAction};
use payhook_core::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};

pub(super) fn insert_key(c: &Connection, m: &MerchantId, k: &NewApiKey) -> Result<(), StoreError> {
    let sql = "INSERT INTO api_keys (key_hash, merchant_id, created_at, id, prefix)
               VALUES (?1, ?2, ?3, ?4, ?5)";
    exec(c, sql, params![k.hash, m.as_str(), k.created_at.0, k.id.as_str(), k.prefix])
        .map_err(backend)?;
    Ok(())
}

fn held(c: &Connection, m: &MerchantId) -> Result<usize, StoreError> {
    let sql = "SELECT count(*) FROM api_keys WHERE merchant_id = ?1";
    let n: i64 = c.query_row(sql, [m.as_str()], |r| r.get(0)).map_err(backend)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn merchant_exists(c: &Connection, m: &MerchantId) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM merchants WHERE id = ?1";
    Ok(c.query_row(sql, [m.as_str()], |_| Ok(())).optional().map_err(backend)?.is_some())
}

pub(super) fn add(
    c: &Connection,
    m: &MerchantId,
    k: &NewApiKey,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    if !merchant_exists(c, m)? {
        return Err(StoreError::NotFound);
    }
    keys::check_create(held(c, m)?)?;
    insert_key(c, m, k)?;
    write_audit(c, audit)
}

pub(super) fn revoke(
    c: &Connection,
    m: &MerchantId,
    key: &ApiKeyId,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    let sql = "SELECT 1 FROM api_keys WHERE merchant_id = ?1 AND id = ?2";
    let found = c.query_row(sql, [m.as_str(), key.as_str()], |_| Ok(()));
    if found.optional().map_err(backend)?.is_none() {
        return Err(StoreError::NotFound);
    }
    keys::check_revoke(held(c, m)?)?;
    exec(c, "DELETE FROM api_keys WHERE id = ?1", [key.as_str()]).map_err(backend)?;
    write_audit(c, audit)
}

pub(super) fn touch(
    c: &Connection,
    key: &ApiKeyId,
    hour: Timestamp,
    prefix: &str,
) -> Result<(), StoreError> {
    let sql = "UPDATE api_keys SET last_used_at = ?2, prefix = ?3 WHERE id = ?1";
    exec(c, sql, params![key.as_str(), hour.0, prefix]).map_err(backend)?;
    Ok(())
}

pub(super) fn owner(c: &Connection, hash: &str) -> Result<Option<KeyOwner>, StoreError> {
    let sql = "SELECT merchant_id, id, prefix, last_used_at FROM api_keys WHERE key_hash = ?1";
    let row = c
        .query_row(sql, [hash], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(backend)?;
    row.map(|(merchant, key, prefix, used): (String, String, String, Option<i64>)| {
        Ok(KeyOwner {
            merchant: parse_id(&merchant)?,
            key: parse_id(&key)?,
            prefix,
            last_used_at: used.map(Timestamp),
        })
    })
    .transpose()
}

pub(super) fn list(c: &Connection, m: &MerchantId) -> Result<Vec<ApiKey>, StoreError> {
    let sql = "SELECT id, prefix, created_at, last_used_at FROM api_keys
               WHERE merchant_id = ?1 ORDER BY created_at, id";
    query_rows(c, sql, [m.as_str()], |r| {
        Ok(ApiKey {
            id: parse_id(&r.get::<_, String>(0).map_err(backend)?)?,
            prefix: r.get(1).map_err(backend)?,
            created_at: Timestamp(r.get(2).map_err(backend)?),
            last_used_at: r.get::<_, Option<i64>>(3).map_err(backend)?.map(Timestamp),
        })
    })
}

pub(super) fn write_audit(c: &Connection, a: &AuditEntry) -> Result<(), StoreError> {
    let sql = "INSERT INTO audit_log (at, actor, action, merchant_id, detail)
               VALUES (?1, ?2, ?3, ?4, ?5)";
    let detail = a.detail.to_string();
    let p = params![a.at.0, a.actor.as_str(), a.action.as_str(), a.merchant.as_str(), detail];
    exec(c, sql, p).map_err(backend)?;
    Ok(())
}

pub(super) fn audit_page(c: &Connection, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let sql = "SELECT position, at, actor, action, merchant_id, detail FROM audit_log
               WHERE position > ?1 AND (?2 IS NULL OR merchant_id = ?2)
               ORDER BY position LIMIT ?3";
    let merchant = q.merchant.as_ref().map(|m| m.as_str());
    query_rows(c, sql, params![q.after, merchant, q.limit], audit_from)
}

fn audit_from(r: &Row<'_>) -> Result<AuditRecord, StoreError> {
    let text = |i| r.get::<_, String>(i).map_err(backend);
    let malformed = |what: &str| StoreError::Backend(format!("malformed {what} in the audit log"));
    Ok(AuditRecord {
        position: r.get(0).map_err(backend)?,
        entry: AuditEntry {
            at: Timestamp(r.get(1).map_err(backend)?),
            actor: Actor::parse(&text(2)?).ok_or_else(|| malformed("actor"))?,
            action: AuditAction::parse(&text(3)?).ok_or_else(|| malformed("action"))?,
            merchant: parse_id(&text(4)?)?,
            detail: serde_json::from_str(&text(5)?).map_err(|_| malformed("detail"))?,
        },
    })
}
