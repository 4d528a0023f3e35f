//! Merchants, their API keys, and the installation's settings.

use crate::fixtures::*;
use payhook_core::dialect::Dialect;
use payhook_core::model::Merchant;
use payhook_core::retry::RetryPolicy;
use payhook_core::signing::SigningSecret;
use payhook_store::{MerchantQuery, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// The fields a round trip must keep (`Merchant` has no `PartialEq`: it holds secrets).
fn fields(m: &Merchant) -> String {
    let prev = m.previous_secret.as_ref().map(|(s, t)| (s.expose().to_owned(), *t));
    format!(
        "{} {} {} {:?} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?}",
        m.id,
        m.name,
        m.dialect,
        m.callback_url,
        m.allowed_callback_urls,
        m.retry,
        m.encryption_key,
        m.settings,
        m.signing_secret.expose(),
        prev,
        m.created_at,
        m.updated_at
    )
}

pub async fn merchant_round_trip(store: Arc<dyn Store>) {
    let mut m = add_merchant(store.as_ref(), "https://shop.example/cb").await;
    let got = store.get_merchant(&m.id).await.expect("get").expect("exists");
    assert_eq!(fields(&got), fields(&m));

    m.name = "Renamed shop".into();
    m.callback_url = None;
    m.allowed_callback_urls = vec!["https://shop.example/".into()];
    m.retry = Some(RetryPolicy::fixed(vec![Duration::from_secs(5), Duration::from_secs(60)]));
    m.encryption_key = Some(serde_json::json!({"kty": "RSA", "n": "abc", "e": "AQAB"}));
    m.settings.insert("ecom_operations_field".into(), serde_json::json!(true));
    m.previous_secret = Some((m.signing_secret.clone(), at(86_400_000)));
    m.signing_secret = SigningSecret::from_key(&[9u8; 32]);
    m.updated_at = at(1_000);
    store.update_merchant(&m, false).await.expect("update");
    let got = store.get_merchant(&m.id).await.expect("get").expect("exists");
    assert_eq!(fields(&got), fields(&m));

    let key = format!("key-{}", m.id);
    let owner = store.merchant_by_api_key(&key).await.expect("lookup").expect("found");
    assert_eq!(owner.merchant, m.id);
    assert_eq!(store.merchant_by_api_key("key-nobody").await.expect("lookup"), None);

    let stranger = merchant("https://other.example/cb");
    assert!(store.get_merchant(&stranger.id).await.expect("get").is_none());
    let err = store.update_merchant(&stranger, false).await.expect_err("unknown merchant");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn settings_are_set_once(store: Arc<dyn Store>) {
    assert_eq!(store.setting("admin").await.expect("read"), None);
    assert_eq!(store.init_setting("admin", "first").await.expect("init"), "first");
    assert_eq!(store.init_setting("admin", "second").await.expect("init"), "first");
    assert_eq!(store.setting("admin").await.expect("read").as_deref(), Some("first"));
    store.ping().await.expect("ping");
}

pub async fn merchants_are_listed_by_cursor_and_filtered(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut made = Vec::new();
    for (name, dialect) in [
        ("Alpha Shop", Dialect::Standard),
        ("beta shop", Dialect::Xpay),
        ("Gamma", Dialect::Standard),
        ("Delta SHOPPING", Dialect::Standard),
    ] {
        let m = Merchant { name: name.into(), dialect, ..merchant("https://shop.example/cb") };
        s.create_merchant(
            &m,
            &payhook_store::NewApiKey::minted(&format!("key-{}", m.id), "pk_", m.created_at),
        )
        .await
        .expect("create");
        made.push(m.id.to_string());
    }
    let page = |after: Option<&str>, name: Option<&str>, dialect, limit| MerchantQuery {
        after: after.map(str::to_owned),
        name: name.map(str::to_owned),
        dialect,
        limit,
    };
    let ids = |list: Vec<Merchant>| list.into_iter().map(|m| m.id.to_string()).collect::<Vec<_>>();
    let first = ids(s.list_merchants(&page(None, None, None, 3)).await.expect("list"));
    assert_eq!(first, made[..3], "creation order");
    let rest = ids(s.list_merchants(&page(Some(&first[2]), None, None, 3)).await.expect("list"));
    assert_eq!(rest, made[3..], "the next page starts after the cursor");
    let shops = ids(s.list_merchants(&page(None, Some("sHoP"), None, 10)).await.expect("list"));
    assert_eq!(shops, [made[0].clone(), made[1].clone(), made[3].clone()], "any case");
    let xpay =
        ids(s.list_merchants(&page(None, None, Some(Dialect::Xpay), 10)).await.expect("list"));
    assert_eq!(xpay, [made[1].clone()]);
    let both = page(Some(&made[0]), Some("shop"), Some(Dialect::Standard), 10);
    assert_eq!(ids(s.list_merchants(&both).await.expect("list")), [made[3].clone()]);
}
