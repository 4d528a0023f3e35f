//! What the writer thread remembers between jobs: merchants and their disabled destinations,
//! read on every status report (and, in `health`, destinations' health). Only writer jobs read or change these (they run one at a time
//! on that thread); a job that changes a merchant or disables a destination forgets the
//! merchant's entries first, and every rollback forgets everything (`forget_writer_caches`),
//! because a rolled-back job may have cached what the rollback took away.

use super::rows::{backend, exec, forget_policy_refs, load_merchant, Statements};
use crate::seal::Sealer;
use crate::StoreError;
use payhook_core::ids::MerchantId;
use payhook_core::model::Merchant;
use payhook_core::Timestamp;
use rusqlite::{params, Connection};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

thread_local! {
    /// Merchants as the writer thread last read them.
    static MERCHANTS: RefCell<HashMap<MerchantId, Arc<Merchant>>> = RefCell::new(HashMap::new());
    /// Each merchant's disabled destinations (URLs a 410 Gone disabled), so that planning a
    /// delivery needs no lookup; nearly every merchant has none.
    static DISABLED: RefCell<HashMap<MerchantId, HashSet<String>>> = RefCell::new(HashMap::new());
}

/// Forgets everything the writer thread caches (the writer calls it on every rollback).
pub(crate) fn forget_writer_caches() {
    MERCHANTS.with(|cache| cache.borrow_mut().clear());
    DISABLED.with(|cache| cache.borrow_mut().clear());
    forget_policy_refs();
    super::health::forget_health();
}

/// A merchant, from the writer thread's cache (status reports need it on every call).
pub(super) fn writer_merchant(
    c: &Connection,
    sealer: &Sealer,
    id: &MerchantId,
) -> Result<Arc<Merchant>, StoreError> {
    if let Some(m) = MERCHANTS.with(|cache| cache.borrow().get(id).cloned()) {
        return Ok(m);
    }
    let m = Arc::new(load_merchant(c, sealer, id)?.ok_or(StoreError::NotFound)?);
    MERCHANTS.with(|cache| cache.borrow_mut().insert(id.clone(), m.clone()));
    Ok(m)
}

/// Forgets a merchant and its disabled destinations (an update may re-enable them).
pub(super) fn forget_merchant(id: &MerchantId) {
    MERCHANTS.with(|cache| cache.borrow_mut().remove(id));
    DISABLED.with(|cache| cache.borrow_mut().remove(id));
}

/// Whether deliveries to `url` are disabled for `merchant`: the merchant's disabled
/// destinations are read once, then kept.
pub(super) fn is_disabled(
    c: &impl Statements,
    merchant: &MerchantId,
    url: &str,
) -> Result<bool, StoreError> {
    if let Some(hit) = DISABLED.with(|known| known.borrow().get(merchant).map(|u| u.contains(url)))
    {
        return Ok(hit);
    }
    let urls = c
        .with_sql("SELECT url FROM disabled_destinations WHERE merchant_id = ?1", |stmt| {
            stmt.query_map([merchant.as_str()], |r| r.get(0))?.collect::<Result<HashSet<_>, _>>()
        })
        .map_err(backend)?;
    let hit = urls.contains(url);
    DISABLED.with(|known| known.borrow_mut().insert(merchant.clone(), urls));
    Ok(hit)
}

pub(super) fn disable_destination(
    c: &Connection,
    merchant: &MerchantId,
    url: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    DISABLED.with(|known| known.borrow_mut().remove(merchant));
    exec(
        c,
        "INSERT INTO disabled_destinations (merchant_id, url, disabled_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![merchant.as_str(), url, now.0],
    )
    .map_err(backend)?;
    Ok(())
}
