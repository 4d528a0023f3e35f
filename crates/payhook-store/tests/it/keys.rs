//! API keys (at most two, never none, found by hash, their use to the hour) and the audit
//! log written with each admin action.

use crate::fixtures::*;
use payhook_core::ids::ApiKeyId;
use payhook_core::lifecycle::KeyRefusal;
use payhook_core::model::{AuditAction, MerchantState};
use payhook_store::{Actor, AuditEntry, AuditQuery, NewApiKey, Store, StoreError};
use serde_json::json;
use std::sync::Arc;

fn key_audit(m: &payhook_core::ids::MerchantId, action: AuditAction, n: i64) -> AuditEntry {
    AuditEntry {
        at: at(n),
        actor: Actor::Merchant,
        action,
        merchant: m.clone(),
        detail: json!({ "n": n }),
    }
}

pub async fn a_merchant_holds_one_or_two_keys(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let first = s.api_keys(&m.id).await.expect("list");
    assert_eq!(first.len(), 1, "created with one key");
    let second = NewApiKey::minted("hash-2", "pk_second", at(1));
    s.add_api_key(&m.id, &second, &key_audit(&m.id, AuditAction::KeyCreated, 1))
        .await
        .expect("a second key");
    let third = NewApiKey::minted("hash-3", "pk_third", at(2));
    let refused = s.add_api_key(&m.id, &third, &key_audit(&m.id, AuditAction::KeyCreated, 2)).await;
    assert!(matches!(refused, Err(StoreError::KeyRefused(KeyRefusal::TooMany))), "{refused:?}");
    assert!(s.merchant_by_api_key("hash-3").await.expect("lookup").is_none(), "not stored");

    let held = s.api_keys(&m.id).await.expect("list");
    assert_eq!(held.iter().map(|k| k.prefix.as_str()).collect::<Vec<_>>()[1], "pk_second");
    let owner = s.merchant_by_api_key("hash-2").await.expect("lookup").expect("found");
    assert_eq!((owner.merchant.clone(), owner.key.clone()), (m.id.clone(), second.id.clone()));

    s.revoke_api_key(&m.id, &first[0].id, &key_audit(&m.id, AuditAction::KeyRevoked, 3))
        .await
        .expect("revoke the first");
    let last =
        s.revoke_api_key(&m.id, &second.id, &key_audit(&m.id, AuditAction::KeyRevoked, 4)).await;
    assert!(matches!(last, Err(StoreError::KeyRefused(KeyRefusal::LastKey))));
    assert_eq!(s.api_keys(&m.id).await.expect("list").len(), 1, "the last key stays");

    let log = s.audit_log(&AuditQuery { after: 0, merchant: None, limit: 10 }).await.expect("log");
    let actions = log.iter().map(|r| (r.entry.action, r.entry.detail.clone())).collect::<Vec<_>>();
    assert_eq!(
        actions,
        [(AuditAction::KeyCreated, json!({"n": 1})), (AuditAction::KeyRevoked, json!({"n": 3}))],
        "refused changes leave no entry"
    );
}

pub async fn keys_of_another_merchant_or_none_are_not_found(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a = add_merchant(s, "https://a.example/cb").await;
    let b = add_merchant(s, "https://b.example/cb").await;
    let extra = NewApiKey::minted("hash-b2", "pk_b2", at(1));
    s.add_api_key(&b.id, &extra, &key_audit(&b.id, AuditAction::KeyCreated, 1)).await.expect("add");
    let theirs =
        s.revoke_api_key(&a.id, &extra.id, &key_audit(&a.id, AuditAction::KeyRevoked, 2)).await;
    assert!(matches!(theirs, Err(StoreError::NotFound)), "another merchant's key");
    let missing: ApiKeyId = "key_missing".parse().expect("id");
    let gone =
        s.revoke_api_key(&b.id, &missing, &key_audit(&b.id, AuditAction::KeyRevoked, 3)).await;
    assert!(matches!(gone, Err(StoreError::NotFound)));
    let nobody: payhook_core::ids::MerchantId = "mer_nobody".parse().expect("id");
    let orphan = NewApiKey::minted("hash-x", "pk_x", at(1));
    let none =
        s.add_api_key(&nobody, &orphan, &key_audit(&nobody, AuditAction::KeyCreated, 4)).await;
    assert!(matches!(none, Err(StoreError::NotFound)));
    assert_eq!(s.api_keys(&b.id).await.expect("list").len(), 2, "b keeps both");
    let log = s.audit_log(&AuditQuery { after: 0, merchant: None, limit: 10 }).await.expect("log");
    assert_eq!(log.len(), 1, "only the successful change is logged: {log:?}");
}

pub async fn a_keys_use_is_recorded_to_the_hour(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let key = s.api_keys(&m.id).await.expect("list").remove(0);
    assert_eq!(key.last_used_at, None);
    s.touch_api_key(&key.id, at(3_600_000), "pk_known").await.expect("touch");
    let found = s.api_keys(&m.id).await.expect("list").remove(0);
    assert_eq!((found.last_used_at, found.prefix.as_str()), (Some(at(3_600_000)), "pk_known"));
}

pub async fn admin_actions_are_audited_with_them(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a = add_merchant(s, "https://a.example/cb").await;
    let b = add_merchant(s, "https://b.example/cb").await;
    s.set_merchant_state(&a.id, MerchantState::Paused, &audit(&a.id, at(1))).await.expect("a");
    s.set_merchant_state(&b.id, MerchantState::Paused, &audit(&b.id, at(2))).await.expect("b");
    let recovered = AuditEntry { action: AuditAction::MerchantRecovered, ..audit(&a.id, at(3)) };
    s.recover(&a.id, at(0), &recovered).await.expect("recover");
    let missing: payhook_core::ids::MerchantId = "mer_missing".parse().expect("id");
    let refused =
        s.set_merchant_state(&missing, MerchantState::Paused, &audit(&missing, at(4))).await;
    assert!(matches!(refused, Err(StoreError::NotFound)));

    let all = s.audit_log(&AuditQuery { after: 0, merchant: None, limit: 10 }).await.expect("log");
    let seen = all.iter().map(|r| (r.entry.merchant.clone(), r.entry.at)).collect::<Vec<_>>();
    assert_eq!(seen, [(a.id.clone(), at(1)), (b.id.clone(), at(2)), (a.id.clone(), at(3))]);
    let q = AuditQuery { after: all[0].position, merchant: Some(a.id.clone()), limit: 10 };
    let of_a = s.audit_log(&q).await.expect("log");
    assert_eq!(of_a.len(), 1, "a's entries after the cursor");
    assert_eq!(of_a[0].entry.action, AuditAction::MerchantRecovered);
}
