//! PostgreSQL-only behaviour: what only matters when several nodes share one database.

use crate::fixtures::*;
use crate::harness::{database_url, fresh_schema};
use payhook_core::status::Status;
use payhook_store::postgres::{drop_schema, PgStore};
use payhook_store::seal::Sealer;
use payhook_store::Store;

/// One master key for these tests: nodes of one database must share theirs.
static KEY: std::sync::LazyLock<Sealer> = std::sync::LazyLock::new(Sealer::random);

async fn connect(schema: &str) -> PgStore {
    let url = database_url();
    match PgStore::connect(&url, Some(schema), KEY.clone()).await {
        Ok(s) => s,
        Err(e) => panic!("these tests need PostgreSQL at {url} (PAYHOOK_TEST_DATABASE_URL): {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_leases_frees_only_that_nodes_leases() {
    let t = crate::harness::postgres().await;
    let s = t.store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    for i in 0..2 {
        let op = add_operation(s, &m, &format!("order-{i}")).await;
        report(s, &op, Status::Pending, at(i)).await;
    }
    claim(s, "node-a", at(5), 1).await;
    claim(s, "node-b", at(5), 1).await;
    assert_eq!(s.release_leases("node-c").await.expect("release"), 0);
    assert_eq!(s.release_leases("node-a").await.expect("release"), 1);
    assert_eq!(claim(s, "node-c", at(6), 10).await.len(), 1, "node-b's lease still holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let schema = fresh_schema();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { connect(&schema).await.schema_version().await })
        })
        .collect();
    let mut versions = Vec::new();
    for s in starts {
        versions.push(s.await.expect("task").expect("schema version"));
    }
    assert!(versions.iter().all(|v| *v == versions[0] && *v >= 2), "{versions:?}");
    drop_schema(&database_url(), &schema).await.expect("drop schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_in_the_url_selects_the_schema() {
    let schema = fresh_schema();
    let base = database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    let store =
        PgStore::connect(&url, None, KEY.clone()).await.expect("connect with options in the URL");
    let m = add_merchant(&store, "https://shop.example/cb").await;
    let same = connect(&schema).await;
    assert!(same.get_merchant(&m.id).await.expect("get").is_some(), "one schema, two ways");
    drop_schema(&base, &schema).await.expect("drop schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_not_a_skip() {
    let err = PgStore::connect(
        "postgres://postgres@127.0.0.1:1/test?connect_timeout=2",
        None,
        KEY.clone(),
    )
    .await
    .err()
    .expect("nothing listens on port 1");
    assert!(err.to_string().contains("store failure"), "{err}");
}

#[tokio::test]
async fn secrets_are_sealed_and_another_master_key_is_refused() {
    let url = database_url();
    let schema = fresh_schema();
    let store = connect(&schema).await;
    let m = merchant("https://shop.example/cb");
    store.create_merchant(&m, "hash").await.expect("create");
    let (client, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("raw connection");
    tokio::spawn(conn);
    let row = client
        .query_one(
            &format!("SELECT signing_secret FROM {schema}.merchants WHERE id = $1"),
            &[&m.id.as_str()],
        )
        .await
        .expect("raw row");
    let raw: String = row.get(0);
    assert!(payhook_store::seal::is_sealed(&raw), "{raw}");
    assert!(!raw.contains(m.signing_secret.expose()));
    let read = store.get_merchant(&m.id).await.expect("read").expect("found");
    assert_eq!(read.signing_secret.expose(), m.signing_secret.expose());
    match PgStore::connect(&url, Some(&schema), Sealer::random()).await {
        Err(payhook_store::StoreError::MasterKey(why)) => assert!(why.contains("does not open")),
        Err(e) => panic!("expected MasterKey, got {e}"),
        Ok(_) => panic!("another key opened the database"),
    }
    drop_schema(&url, &schema).await.expect("drop schema");
}
