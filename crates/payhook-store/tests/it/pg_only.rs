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
    assert!(err.to_string().starts_with("store unavailable: "), "{err}");
}

#[tokio::test]
async fn secrets_are_sealed_and_another_master_key_is_refused() {
    let url = database_url();
    let schema = fresh_schema();
    let store = connect(&schema).await;
    let m = merchant("https://shop.example/cb");
    store
        .create_merchant(&m, &payhook_store::NewApiKey::minted("hash", "pk_", m.created_at))
        .await
        .expect("create");
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

/// Registrations, reports and attempt records that arrive together are committed in groups
/// (one transaction each): every caller still gets its own answer, a refused change stores
/// nothing, and the others are stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_answer_each_caller_on_its_own() {
    use payhook_core::ids::{DeliveryId, OperationId};
    use payhook_core::model::DeliveryState;
    use payhook_store::{NextStep, Registered, StoreError};
    use std::sync::Arc;

    let t = crate::harness::postgres().await;
    let s: Arc<dyn Store> = t.store.clone();
    let m = add_merchant(s.as_ref(), "https://shop.example/cb").await;
    let n = 24;

    let mut tasks = Vec::new();
    for i in 0..n {
        let (s, new) = (s.clone(), new_operation(&m, &format!("order-{}", i % (n - 2))));
        tasks.push(tokio::spawn(async move { s.register_operation(new, T0).await }));
    }
    let mut ops = std::collections::BTreeMap::new();
    for task in tasks {
        match task.await.expect("task").expect("registered") {
            Registered::Created(op) | Registered::Existing(op) => {
                ops.insert(op.external_id.clone(), op);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ops.len(), n - 2, "a repeated registration finds the first one");
    let ops: Vec<_> = ops.into_values().collect();

    let missing: OperationId = "op_missing000000000000".parse().expect("id");
    // Each report at its own time: a group of reports (pipelined when they are for different
    // operations) must still stamp each with the time its caller gave.
    let mut tasks = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (s, r) = (s.clone(), status_report(op, Status::Pending));
        let now = at(10 + i as i64);
        tasks.push(tokio::spawn(async move { (now, s.report_status(r, now).await) }));
    }
    let (s2, refused) = (s.clone(), status_report(&ops[0], Status::Created));
    let invalid = tokio::spawn(async move { s2.report_status(refused, at(10)).await });
    let mut unknown = status_report(&ops[1], Status::Pending);
    unknown.operation_id = missing;
    let s2 = s.clone();
    let not_found = tokio::spawn(async move { s2.report_status(unknown, at(10)).await });
    let mut deliveries = Vec::new();
    for task in tasks {
        let (now, reported) = task.await.expect("task");
        let reported = reported.expect("report accepted");
        assert_eq!(reported.event.created_at, now, "the event is stamped with its report's time");
        let delivery = reported.delivery.expect("a delivery");
        assert_eq!(delivery.created_at, now, "so is its delivery");
        deliveries.push(delivery);
    }
    assert!(invalid.await.expect("task").is_err(), "created -> created is refused");
    assert!(matches!(not_found.await.expect("task"), Err(StoreError::NotFound)));
    let feed = s.events(&m.id, 0, 1000).await.expect("feed");
    assert_eq!(feed.len(), 2 * ops.len(), "one created and one pending event per operation");
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));

    let claimed = claim(s.as_ref(), "node-a", at(100), 100).await;
    assert_eq!(claimed.len(), ops.len());
    let mut tasks = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        let (s, d) = (s.clone(), c.delivery.clone());
        let (status, next) =
            if i == 0 { (503, NextStep::RetryAt(at(60_000))) } else { (200, NextStep::Delivered) };
        tasks.push(tokio::spawn(async move {
            s.record_attempt(&attempt(&d, at(110), status), next, at(110)).await
        }));
    }
    let mut ghost = attempt(&claimed[0].delivery, at(110), 200);
    ghost.delivery_id = "dlv_missing000000000000".parse::<DeliveryId>().expect("id");
    let s2 = s.clone();
    let ghost =
        tokio::spawn(async move { s2.record_attempt(&ghost, NextStep::Delivered, at(110)).await });
    for (i, task) in tasks.into_iter().enumerate() {
        let state = task.await.expect("task").expect("recorded").state;
        let want = if i == 0 { DeliveryState::Pending } else { DeliveryState::Delivered };
        assert_eq!(state, want);
    }
    assert!(matches!(ghost.await.expect("task"), Err(StoreError::NotFound)));
    for d in &deliveries {
        let (_, attempts) = s
            .deliveries_of(&d.operation_id)
            .await
            .expect("deliveries")
            .into_iter()
            .next()
            .expect("one delivery");
        assert_eq!(attempts.len(), 1, "each attempt recorded once");
    }
}

/// A batch stores its accepted items and refuses the others one by one, the same operation's
/// items in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refuses_items_alone_and_keeps_order() {
    use payhook_core::ids::OperationId;
    use payhook_store::StoreError;

    let t = crate::harness::postgres().await;
    let s = t.store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let a = add_operation(s, &m, "order-a").await;
    let b = add_operation(s, &m, "order-b").await;
    let mut missing = status_report(&a, Status::Pending);
    missing.operation_id = "op_missing000000000000".parse::<OperationId>().expect("id");
    let items = vec![
        status_report(&a, Status::Pending),
        missing,
        status_report(&b, Status::Created),
        status_report(&a, Status::Success),
        status_report(&b, Status::Failed),
    ];
    let results = s.report_statuses(items, at(10)).await.expect("batch stored");
    assert!(results[0].as_ref().is_ok_and(|r| r.delivery.is_some()));
    assert!(matches!(results[1], Err(StoreError::NotFound)));
    assert!(matches!(results[2], Err(StoreError::InvalidTransition(_))));
    assert!(results[3].as_ref().is_ok_and(|r| r.event.seq == 2));
    assert!(results[4].as_ref().is_ok_and(|r| r.event.seq == 1));
    let feed = s.events(&m.id, 0, 100).await.expect("feed");
    let a_events: Vec<_> =
        feed.iter().filter(|e| e.operation_id == a.id).map(|e| (e.seq, e.status)).collect();
    assert_eq!(a_events, [(0, Status::Created), (1, Status::Pending), (2, Status::Success)]);
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    let b_now = s.get_operation(&b.id).await.expect("get").expect("exists");
    assert_eq!((b_now.status, b_now.seq), (Status::Failed, 1));
}

/// A batch item that fails after its checks (here a trigger refuses its delivery) makes the
/// batch run again with a savepoint per item: that item fails alone, the others are stored,
/// and only their deliveries are handed over; the slots the first run reserved are given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_item_failing_after_its_checks_fails_alone() {
    use crate::handoff::Fake;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let url = database_url();
    let schema = fresh_schema();
    let store: Arc<dyn Store> = Arc::new(connect(&schema).await);
    let fake = Fake::new(10);
    fake.install(&store);
    let m = add_merchant(store.as_ref(), "https://shop.example/cb").await;
    let ops = add_operations(store.as_ref(), &m, 3).await;
    let (client, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("raw connection");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON {schema}.deliveries FOR EACH ROW
               WHEN (NEW.operation_id = '{}') EXECUTE FUNCTION {schema}.refuse();",
            ops[1].id
        ))
        .await
        .expect("trigger");

    let reports = ops.iter().map(|op| status_report(op, Status::Success)).collect();
    let outcomes = store.report_statuses(reports, at(1)).await.expect("the batch commits");
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(matches!(&outcomes[1], Err(e) if e.to_string().contains("refused by the test")));
    let stored = store.get_operation(&ops[1].id).await.expect("read").expect("found");
    assert_eq!((stored.status, stored.seq), (ops[1].status, ops[1].seq), "unchanged");

    let mut handed = fake.handed_ids();
    handed.sort();
    let mut expected: Vec<String> = [&outcomes[0], &outcomes[2]]
        .iter()
        .map(|o| o.as_ref().expect("ok").delivery.as_ref().expect("delivery").id.to_string())
        .collect();
    expected.sort();
    assert_eq!(handed, expected, "only the stored items are handed over");
    assert_eq!(fake.taken.load(Ordering::SeqCst), 2, "the first run's slots were given back");
    drop(store);
    drop_schema(&url, &schema).await.expect("drop schema");
}

/// A batch whose items are all for different operations runs pipelined (every item's checks
/// sent at once, then every change's writes): each item still gets its own answer in the
/// caller's order, refused items change nothing, an event key seen before answers with the
/// earlier event, the new events enter the feed in item order, and exactly the stored
/// items' deliveries are handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_different_operations_answers_each_item_as_one_by_one() {
    use crate::handoff::Fake;
    use payhook_core::ids::OperationId;
    use payhook_store::StoreError;
    use std::sync::Arc;

    let schema = fresh_schema();
    let store: Arc<dyn Store> = Arc::new(connect(&schema).await);
    let fake = Fake::new(10);
    fake.install(&store);
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let ops = add_operations(s, &m, 5).await;
    let (a, b, c, d, e) = (&ops[0], &ops[1], &ops[2], &ops[3], &ops[4]);
    let mut keyed = status_report(d, Status::Pending);
    keyed.event_key = Some("k1".into());
    let earlier = s.report_status(keyed.clone(), at(1)).await.expect("first keyed report");
    let handed_before = fake.handed_ids().len();

    let mut missing = status_report(a, Status::Pending);
    missing.operation_id = "op_missing000000000000".parse::<OperationId>().expect("id");
    let mut new_key = status_report(c, Status::Success);
    new_key.event_key = Some("k2".into());
    let items = vec![
        status_report(e, Status::Success),
        missing,
        status_report(a, Status::Created),
        keyed,
        status_report(b, Status::Pending),
        new_key,
    ];
    let out = s.report_statuses(items, at(10)).await.expect("the batch commits");

    assert!(out[0].as_ref().is_ok_and(|r| r.event.operation_id == e.id && r.event.seq == 1));
    assert!(matches!(out[1], Err(StoreError::NotFound)), "{:?}", out[1]);
    assert!(matches!(out[2], Err(StoreError::InvalidTransition(_))), "{:?}", out[2]);
    let dup = out[3].as_ref().expect("the keyed report again");
    assert!(dup.duplicate && dup.event.id == earlier.event.id && dup.delivery.is_none());
    assert!(out[4].as_ref().is_ok_and(|r| r.event.operation_id == b.id && r.event.seq == 1));
    let keyed_c = out[5].as_ref().expect("a new key");
    assert_eq!(keyed_c.event.event_key.as_deref(), Some("k2"));

    let unchanged = s.get_operation(&a.id).await.expect("read").expect("found");
    assert_eq!(
        (unchanged.status, unchanged.seq),
        (a.status, a.seq),
        "a refused item wrote nothing"
    );
    let stored = [(0, e, Status::Success), (4, b, Status::Pending), (5, c, Status::Success)];
    for (_, op, status) in &stored {
        let now = s.get_operation(&op.id).await.expect("read").expect("found");
        assert_eq!((now.status, now.seq), (*status, 1));
    }
    let feed = s.events(&m.id, earlier.event.position, 100).await.expect("feed");
    let fed: Vec<_> = feed.iter().map(|ev| ev.operation_id.clone()).collect();
    assert_eq!(fed, [e.id.clone(), b.id.clone(), c.id.clone()], "new events in item order");
    for (i, _, _) in &stored {
        let reported = out[*i].as_ref().expect("stored");
        assert!(feed
            .iter()
            .any(|ev| ev.id == reported.event.id && ev.position == reported.event.position));
    }

    let mut handed = fake.handed_ids()[handed_before..].to_vec();
    handed.sort();
    let mut expected: Vec<String> = stored
        .iter()
        .map(|(i, _, _)| {
            out[*i].as_ref().expect("ok").delivery.as_ref().expect("delivery").id.to_string()
        })
        .collect();
    expected.sort();
    assert_eq!(handed, expected, "the stored items' deliveries, each once");
    drop(store);
    drop_schema(&database_url(), &schema).await.expect("drop schema");
}

/// One node at a time purges: while another session holds the purge lock of this schema, a
/// batch does nothing and says the purge is busy; once the lock is free, the batch runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_waits_its_turn_while_another_node_purges() {
    use payhook_store::{PurgeBatch, PurgeTarget};
    let schema = fresh_schema();
    let store = connect(&schema).await;
    let m = add_merchant(&store, "https://shop.example/cb").await;
    add_operation(&store, &m, "order-1").await;
    let url = format!("{}?options=-csearch_path%3D{schema}", database_url());
    let (mut other, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let tx = other.transaction().await.expect("begin");
    let lock = "SELECT pg_advisory_xact_lock(hashtext('payhook.purge'),
                                         hashtext(current_setting('search_path')))";
    tx.execute(lock, &[]).await.expect("take the purge lock");
    let batch = PurgeBatch { target: PurgeTarget::History { before: at(10) }, after: 0, limit: 10 };
    let busy = store.purge(&batch).await.expect("purge");
    assert!(busy.busy && busy.rows.total() == 0, "{busy:?}");
    tx.rollback().await.expect("release the lock");
    let ran = store.purge(&batch).await.expect("purge");
    assert!(!ran.busy && ran.rows.events == 1, "{ran:?}");
    drop_schema(&database_url(), &schema).await.expect("drop schema");
}

/// A report whose older delivery another node is claiming at that moment: the report's
/// supersede waits for the claim's lock, finds the older delivery leased, and must then not
/// hand the newer one over — sending it beside the older one in flight could deliver the
/// statuses out of order. (The statement's snapshot predates the claim's commit, so the
/// in-flight check cannot read the lease from it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_racing_a_claim_of_the_older_delivery_hands_nothing_over() {
    let schema = fresh_schema();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(connect(&schema).await);
    let s = store.as_ref();
    let m = add_merchant(s, "https://shop.example/cb").await;
    let op = add_operation(s, &m, "order-race").await;
    let older = report(s, &op, Status::Pending, at(0)).await;
    let fake = crate::handoff::Fake::new(4);
    fake.install(&store);

    let (other, connection) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let claim = format!(
        "SET search_path TO {schema}; BEGIN;
         UPDATE deliveries SET lease_until = {}, leased_by = 'other' WHERE id = '{}'",
        at(LEASE.as_millis() as i64).0,
        older.id
    );
    other.batch_execute(&claim).await.expect("the other node's claim, not committed");
    let other_pid: i32 = other.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);

    let reporting = {
        let store = store.clone();
        let op = op.clone();
        tokio::spawn(async move { report(store.as_ref(), &op, Status::Success, at(1)).await })
    };
    let (watcher, connection) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n: i64 = watcher.query_one(blocked, &[&other_pid]).await.expect("locks").get(0);
        if n > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the report never waited for the claim");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    other.batch_execute("COMMIT").await.expect("the claim commits");
    let newer = reporting.await.expect("report task");

    assert!(fake.handed_ids().is_empty(), "handed over beside the older in flight");
    let lease = format!("SELECT leased_by FROM {schema}.deliveries WHERE id = $1");
    let row = other.query_one(&lease, &[&newer.id.as_str()]).await.expect("the newer delivery");
    assert_eq!(row.get::<_, Option<String>>(0), None, "left unleased, for a claim");
    assert_eq!(delivery(s, &older).await.state, payhook_core::model::DeliveryState::Pending);
    drop_schema(&database_url(), &schema).await.expect("drop schema");
}
