//! Schema v5: deliveries refer to one `policies` row per distinct retry policy; the
//! writer thread's ids of those rows never outlive a rollback.

use super::tests::count;
use super::*;
use payhook_core::retry::RetryPolicy;
use payhook_core::status::Status;
use std::time::Duration;

#[tokio::test]
async fn deliveries_refer_to_one_row_per_policy_and_older_rows_keep_their_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policies.db");
    let store = SqliteStore::open(&path, Sealer::random()).expect("open");
    let m = super::tests::merchant();
    store
        .create_merchant(&m, &crate::NewApiKey::minted("hash", "pk_", m.created_at))
        .await
        .expect("create");
    let mut planned = Vec::new();
    for external_id in ["a", "b"] {
        let new = NewOperation {
            merchant_id: m.id.clone(),
            external_id: external_id.into(),
            amount: 100,
            currency: "UAH".into(),
            kind: "purchase".into(),
            callback: Default::default(),
            data: Default::default(),
            request_hash: external_id.into(),
        };
        let Registered::Created(op) =
            store.register_operation(new, Timestamp(2)).await.expect("register")
        else {
            panic!("a new operation")
        };
        let report = StatusReport {
            operation_id: op.id,
            status: Status::Success,
            data: Default::default(),
            event_key: None,
        };
        let reported = store.report_status(report, Timestamp(3)).await.expect("report");
        planned.push(reported.delivery.expect("a delivery"));
    }
    let c = Connection::open(&path).expect("open raw");
    assert_eq!(count(&c, "SELECT COUNT(*) FROM policies"), 1, "one row for both");
    assert_eq!(count(&c, "SELECT COUNT(*) FROM deliveries WHERE policy = '' AND policy_id = 1"), 2);
    for d in &planned {
        let read = store.get_delivery(&d.id).await.expect("get").expect("exists");
        assert_eq!(read.policy, d.policy, "read back through the policies row");
    }
    // A delivery as v4 wrote it: its own policy, no reference.
    let own = RetryPolicy { delays: vec![Duration::from_secs(7)], jitter: 0.0 };
    let json = serde_json::to_string(&own).expect("json");
    c.execute(
        "UPDATE deliveries SET policy = ?1, policy_id = NULL WHERE id = ?2",
        params![json, planned[1].id.as_str()],
    )
    .expect("v4 row");
    let read = store.get_delivery(&planned[1].id).await.expect("get").expect("exists");
    assert_eq!(read.policy, own);
}

#[tokio::test]
async fn a_policy_row_a_rollback_took_away_is_not_remembered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("p.db"), Sealer::random()).expect("open");
    let policy = RetryPolicy { delays: vec![Duration::from_secs(9)], jitter: 0.1 };
    let p = policy.clone();
    let failed = store
        .write(move |tx| {
            policy_ref(tx, &p)?;
            Err::<(), _>(StoreError::Backend("fails after writing".into()))
        })
        .await;
    assert!(failed.is_err());
    let rows = store
        .write(move |tx| {
            let id = policy_ref(tx, &policy)?;
            tx.query_row("SELECT COUNT(*) FROM policies WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(backend)
        })
        .await
        .expect("second job");
    assert_eq!(rows, 1, "the id names a row that exists");
}
