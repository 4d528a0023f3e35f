//! The writer thread's cache of disabled destinations stays true to the database:
//! disabling, re-enabling and a rollback all invalidate it.

use super::cache::{disable_destination, is_disabled};
use super::*;

const URL: &str = "https://shop.example/cb";

async fn store() -> (tempfile::TempDir, SqliteStore, MerchantId) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("cache.db"), Sealer::random()).expect("open");
    let m = super::tests::merchant();
    store
        .create_merchant(&m, &crate::NewApiKey::minted("hash", "pk_", m.created_at))
        .await
        .expect("create");
    (dir, store, m.id)
}

/// Disables `URL` for the merchant, as a 410 Gone does.
async fn disable(store: &SqliteStore, id: &MerchantId) {
    let id = id.clone();
    store
        .write(move |tx| disable_destination(tx.connection(), &id, URL, Timestamp(5)))
        .await
        .expect("disable");
}

async fn disabled(store: &SqliteStore, id: &MerchantId) -> bool {
    let id = id.clone();
    store.write(move |tx| is_disabled(tx, &id, URL)).await.expect("lookup")
}

#[tokio::test]
async fn disabling_a_destination_of_a_cached_merchant_is_seen() {
    let (_dir, store, id) = store().await;
    assert!(!disabled(&store, &id).await, "nothing disabled yet");
    disable(&store, &id).await;
    assert!(disabled(&store, &id).await, "the new disabled destination must be seen");
}

#[tokio::test]
async fn re_enabling_a_merchants_destinations_is_seen() {
    let (_dir, store, id) = store().await;
    disable(&store, &id).await;
    assert!(disabled(&store, &id).await, "disabled, and now cached");
    store.update_merchant(&super::tests::merchant(), true).await.expect("re-enable");
    assert!(!disabled(&store, &id).await, "the re-enabled destination must be seen");
}

#[tokio::test]
async fn what_a_rolled_back_job_read_is_not_remembered() {
    let (_dir, store, id) = store().await;
    disable(&store, &id).await;
    // A job that deletes the merchant's disabled destinations, looks (and so would
    // remember that it has none), then fails after writing: it is rolled back, once with
    // its group and once alone in its savepoint.
    let m = id.clone();
    let failed = store
        .write(move |tx| {
            exec(tx, "DELETE FROM disabled_destinations WHERE merchant_id = ?1", [m.as_str()])
                .map_err(backend)?;
            assert!(!is_disabled(tx, &m, URL)?, "inside the job the row is gone");
            Err::<(), _>(StoreError::Backend("fails after writing".into()))
        })
        .await;
    assert!(failed.is_err());
    assert!(disabled(&store, &id).await, "the rollback brought the disabled row back");
}
