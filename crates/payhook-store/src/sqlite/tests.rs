//! Secrets at rest in the SQLite file: sealed, opened only with the right master key.

use super::*;
use crate::seal;
use payhook_core::dialect::Dialect;
use payhook_core::signing::SigningSecret;
use serde_json::json;

const SECRET: &str = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk=";
const OLD: &str = "whsec_b2xkLXNpZ25pbmcta2V5LTAxMjM0NTY3ODk=";

/// The one integer a query answers (a count, a version, a setting).
pub(super) fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).expect(sql)
}

pub(super) fn merchant() -> Merchant {
    Merchant {
        encryption_key: Some(json!({"kty": "EC", "crv": "P-384", "x": "XKEY", "y": "YKEY"})),
        previous_secret: Some((SigningSecret::parse(OLD).expect("old"), Timestamp(9))),
        ..Merchant::new(
            "mer_sealed".parse().expect("id"),
            "Shop",
            Dialect::Ecom,
            Some("https://shop.example/cb".into()),
            SigningSecret::parse(SECRET).expect("secret"),
            Timestamp(1),
        )
    }
}

/// The secret columns exactly as stored in the file.
fn raw_columns(path: &Path) -> Vec<Option<String>> {
    let c = Connection::open(path).expect("open raw");
    c.query_row("SELECT signing_secret, previous_secret, encryption_key FROM merchants", [], |r| {
        Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?])
    })
    .expect("one merchant")
}

#[tokio::test]
async fn secrets_are_sealed_in_the_file_and_open_with_the_right_key_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("payhook.db");
    let key = Sealer::generate_key();
    let store = SqliteStore::open(&path, Sealer::from_base64(&key).expect("key")).expect("open");
    store
        .create_merchant(&merchant(), &crate::NewApiKey::minted("hash", "pk_", Timestamp(0)))
        .await
        .expect("create");
    drop(store);

    for value in raw_columns(&path) {
        let value = value.expect("every secret column is set");
        assert!(seal::is_sealed(&value), "{value}");
        for plain in [SECRET, OLD, "XKEY", "c2VjcmV0", "b2xk"] {
            assert!(!value.contains(plain), "{plain} in plain text: {value}");
        }
    }
    let file = std::fs::read(&path).expect("read db");
    let text = String::from_utf8_lossy(&file);
    assert!(!text.contains(SECRET) && !text.contains(OLD), "a secret in the file");

    match SqliteStore::open(&path, Sealer::random()) {
        Err(StoreError::MasterKey(why)) => assert!(why.contains("does not open"), "{why}"),
        Err(e) => panic!("expected MasterKey, got {e}"),
        Ok(_) => panic!("expected MasterKey, got a store"),
    }
    let store = SqliteStore::open(&path, Sealer::from_base64(&key).expect("key")).expect("open");
    let m = store.get_merchant(&merchant().id).await.expect("read").expect("found");
    assert_eq!(m.signing_secret.expose(), SECRET);
    assert_eq!(m.previous_secret.as_ref().map(|(s, _)| s.expose()), Some(OLD));
    assert_eq!(m.encryption_key, merchant().encryption_key);
}

#[tokio::test]
async fn secrets_written_in_plain_text_by_older_versions_are_sealed_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("payhook.db");
    let sealer = Sealer::random();
    let store = SqliteStore::open(&path, sealer.clone()).expect("open");
    store
        .create_merchant(&merchant(), &crate::NewApiKey::minted("hash", "pk_", Timestamp(0)))
        .await
        .expect("create");
    drop(store);
    // What a version before sealing left behind: plain columns, no check value.
    let c = Connection::open(&path).expect("raw");
    c.execute(
        "UPDATE merchants SET signing_secret = ?1, previous_secret = ?2, encryption_key = ?3",
        params![SECRET, OLD, r#"{"kty":"EC","crv":"P-384","x":"XKEY","y":"YKEY"}"#],
    )
    .expect("downgrade");
    c.execute("DELETE FROM settings WHERE key = ?1", [seal::CHECK_SETTING]).expect("no check");
    drop(c);

    let store = SqliteStore::open(&path, sealer).expect("open upgrades");
    assert!(raw_columns(&path).iter().flatten().all(|v| seal::is_sealed(v)));
    let m = store.get_merchant(&merchant().id).await.expect("read").expect("found");
    assert_eq!(m.signing_secret.expose(), SECRET);
    assert_eq!(m.encryption_key, merchant().encryption_key);
}

#[tokio::test]
async fn sealed_secrets_without_a_check_value_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("payhook.db");
    let store = SqliteStore::open(&path, Sealer::random()).expect("open");
    store
        .create_merchant(&merchant(), &crate::NewApiKey::minted("hash", "pk_", Timestamp(0)))
        .await
        .expect("create");
    drop(store);
    let c = Connection::open(&path).expect("raw");
    c.execute("DELETE FROM settings WHERE key = ?1", [seal::CHECK_SETTING]).expect("no check");
    drop(c);
    assert!(matches!(SqliteStore::open(&path, Sealer::random()), Err(StoreError::MasterKey(_))));
}
