//! Migration 3 rebuilds `events` around a partial event-key index; a database at v2 must
//! come through with the same rows, the same rules and positions that never repeat.

use super::migrate::MIGRATIONS;
use super::tests::count;
use super::*;
use payhook_core::status::Status;

/// A database at schema v2 with one operation, three events (one with a key, positions
/// 1, 2 and 5; the counter at 9, past a row since deleted) and a delivery of event 2.
fn v2_database(path: &Path) {
    let mut c = Connection::open(path).expect("open");
    c.execute_batch(
        "CREATE TABLE schema_migrations (
            version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .expect("migrations table");
    let tx = c.transaction().expect("tx");
    for (version, sql) in &MIGRATIONS[..2] {
        tx.execute_batch(sql).expect("v1, v2");
        tx.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).expect("v");
    }
    tx.execute_batch(
        "INSERT INTO merchants (id, name, dialect, allowed_callback_urls, settings,
                                signing_secret, created_at, updated_at)
         VALUES ('mer_1', 'Shop', 'standard', '[]', '{}', 'secret', 1, 1);
         INSERT INTO operations (id, merchant_id, external_id, amount, currency, kind,
                                 status, seq, callback, data, request_hash, created_at,
                                 updated_at)
         VALUES ('op_1', 'mer_1', 'ext', 100, 'UAH', 'purchase', 'success', 2, '{}', '{}',
                 '', 1, 1);
         INSERT INTO events (position, id, operation_id, merchant_id, seq, status,
                             previous_status, event_key, created_at, snapshot)
         VALUES (1, 'evt_1', 'op_1', 'mer_1', 0, 'created', 'created', NULL, 1, '{}'),
                (2, 'evt_2', 'op_1', 'mer_1', 1, 'processing', 'created', 'k1', 2, '{}'),
                (5, 'evt_5', 'op_1', 'mer_1', 2, 'success', 'processing', NULL, 3, '{}');
         UPDATE sqlite_sequence SET seq = 9 WHERE name = 'events';
         INSERT INTO deliveries (id, event_id, operation_id, merchant_id, seq, dialect, url,
                                 host, state, policy, created_at, updated_at)
         VALUES ('dlv_1', 'evt_2', 'op_1', 'mer_1', 1, 'standard', 'https://a.example/cb',
                 'a.example', 'delivered', '{}', 2, 2);",
    )
    .expect("rows");
    tx.commit().expect("commit");
}

fn events(c: &Connection) -> Vec<(i64, String, i64, Option<String>)> {
    let mut s = c
        .prepare("SELECT position, id, seq, event_key FROM events ORDER BY position")
        .expect("prepare");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn v2_events_come_through_with_their_rules_and_the_position_counter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v2.db");
    v2_database(&path);
    let before = events(&Connection::open(&path).expect("open"));

    let mut c = connect(&path).expect("connect");
    migrate(&mut c).expect("migrate");
    assert_eq!(version(&c), MIGRATIONS.last().expect("migrations").0);
    assert_eq!(events(&c), before, "same rows, same positions");
    let fk = count(&c, "PRAGMA foreign_keys");
    assert_eq!(fk, 1, "foreign keys are back on after migrating");

    // Keyless events write no index entry; the keyed one is in the partial index.
    let indexed = count(
        &c,
        "SELECT COUNT(*) FROM events INDEXED BY events_by_key
             WHERE operation_number = 1 AND event_key IS NOT NULL",
    );
    assert_eq!(indexed, 1);

    let insert = "INSERT INTO events (id, operation_number, merchant_id, seq, status,
                                      previous_status, event_key, created_at, snapshot)
                  VALUES (?1, 1, 'mer_1', ?2, 'success', 'success', ?3, 4, '{}')";
    // One event per operation and key, as before.
    let dup = c.execute(insert, params!["evt_dup", 3, "k1"]);
    assert!(
        matches!(&dup, Err(e) if e.to_string().contains("UNIQUE")),
        "a second event with key k1 must be refused: {dup:?}"
    );
    // One event per operation and seq, as before.
    let dup = c.execute(insert, params!["evt_seq", 2, Option::<String>::None]);
    assert!(matches!(&dup, Err(e) if e.to_string().contains("UNIQUE")), "{dup:?}");
    // Two keyless events of one operation are fine, and positions go on past the counter.
    c.execute(insert, params!["evt_new", 3, Option::<String>::None]).expect("keyless");
    let position = count(&c, "SELECT position FROM events WHERE id = 'evt_new'");
    assert_eq!(position, 10, "positions are never reused");

    // Deliveries still refer to the (rebuilt) events table.
    let dangling = c.execute(
        "INSERT INTO deliveries (id, event_position, operation_number, merchant_id, seq,
                                 dialect, url, host, state, policy, created_at, updated_at)
         VALUES ('dlv_2', 99, 1, 'mer_1', 3, 'standard', 'https://a/cb',
                 'a', 'pending', '{}', 4, 4)",
        [],
    );
    assert!(matches!(&dangling, Err(e) if e.to_string().contains("FOREIGN KEY")), "{dangling:?}");
    // Migrating again changes nothing.
    migrate(&mut c).expect("migrate again");
    assert_eq!(events(&c).len(), 4);
}

/// A delivery of an event that does not exist, as a database before v6 lets in only with
/// foreign keys off.
fn add_dangling_delivery(path: &Path) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO deliveries (id, event_id, operation_id, merchant_id, seq, dialect, url,
                                 host, state, policy, created_at, updated_at)
         VALUES ('dlv_x', 'evt_gone', 'op_1', 'mer_1', 9, 'standard', 'https://a/cb', 'a',
                 'pending', '{}', 4, 4);",
    )
    .expect("dangling row");
}

#[test]
fn a_migration_leaving_a_dangling_reference_is_rolled_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v2.db");
    v2_database(&path);
    add_dangling_delivery(&path);
    let mut c = connect(&path).expect("connect");
    let err = migrate(&mut c).expect_err("the check refuses");
    assert!(err.to_string().contains("deliveries"), "{err}");
    assert_eq!(version(&c), 2, "migration 3 rolled back");
    let autoindex =
        count(&c, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'sqlite_autoindex_events_3'");
    assert_eq!(autoindex, 1, "the old events table is still there");
}

/// The operation as v3 stored it in every event: the whole of it, as JSON.
fn whole_snapshot(seq: i64, status: Status, data: serde_json::Value) -> Operation {
    Operation {
        id: "op_1".parse().expect("id"),
        number: 1,
        merchant_id: "mer_1".parse().expect("id"),
        external_id: "ext".into(),
        amount: 100,
        currency: "UAH".into(),
        kind: "purchase".into(),
        status,
        seq,
        callback: Default::default(),
        data: data.as_object().cloned().expect("object"),
        created_at: Timestamp(1),
        // Not the event's time: read from the row, this would differ.
        updated_at: Timestamp(1000 + seq),
    }
}

#[tokio::test]
async fn events_written_before_v4_are_read_from_their_whole_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v2.db");
    v2_database(&path);
    // Snapshots that differ from the operation's row (whose data is `{}`), so that reading
    // them from the row instead would show.
    let old = [
        whole_snapshot(0, Status::Created, serde_json::json!({"basket": 1})),
        whole_snapshot(1, Status::Pending, serde_json::json!({"rrn": "111"})),
        whole_snapshot(2, Status::Success, serde_json::json!({"rrn": "222"})),
    ];
    let c = Connection::open(&path).expect("open");
    for op in &old {
        let json = serde_json::to_string(op).expect("json");
        c.execute(
            "UPDATE events SET snapshot = ?1, status = ?2,
               previous_status = CASE seq WHEN 2 THEN 'pending' ELSE previous_status END
             WHERE seq = ?3",
            params![json, op.status.as_str(), op.seq],
        )
        .expect("snapshot");
    }
    // The fixture's merchant, with a secret a status report can sign with.
    c.execute(
        "UPDATE merchants SET signing_secret = ?1",
        ["whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk="],
    )
    .expect("secret");
    drop(c);

    let store = SqliteStore::open(&path, Sealer::random()).expect("open and migrate");
    let op_id: OperationId = "op_1".parse().expect("id");
    let read = store.operation_events(&op_id).await.expect("events");
    let ops: Vec<_> = read.iter().map(|e| e.operation.clone()).collect();
    assert_eq!(ops, old, "read from the whole snapshots");

    // A new event of the same operation stores only its own part, and reads back whole.
    let report = StatusReport {
        operation_id: op_id.clone(),
        status: Status::Success,
        data: Default::default(),
        event_key: None,
    };
    let new = store.report_status(report, Timestamp(50)).await.expect("report");
    let read = store.operation_events(&op_id).await.expect("events");
    assert_eq!(read.len(), 4);
    assert_eq!(read[3], *new.event);
    drop(store);
    let c = Connection::open(&path).expect("open");
    let stored: String = c
        .query_row("SELECT snapshot FROM events WHERE seq = 3", [], |r| r.get(0))
        .expect("snapshot");
    assert_eq!(stored, r#"{"data":{}}"#, "only the event's own part is stored");
}

/// The v2 fixture taken to schema v5, the last before events and deliveries referred to
/// their operation and event by text id.
fn v5_database(path: &Path) {
    v2_database(path);
    let mut c = Connection::open(path).expect("open");
    c.execute_batch("PRAGMA foreign_keys = OFF").expect("fk off");
    let tx = c.transaction().expect("tx");
    for (version, sql) in &MIGRATIONS[2..5] {
        tx.execute_batch(sql).expect("v3 to v5");
        tx.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).expect("v");
    }
    // Events as v4 and v5 store them (their own part of the operation), with statuses a
    // reader knows.
    tx.execute_batch(
        r#"UPDATE events SET snapshot = '{"data":{}}',
             status = CASE seq WHEN 0 THEN 'created' WHEN 1 THEN 'pending' ELSE 'success' END,
             previous_status = CASE seq WHEN 2 THEN 'pending' ELSE 'created' END"#,
    )
    .expect("own parts");
    tx.execute_batch(r#"UPDATE deliveries SET policy = '{"schedule":["5s"]}'"#).expect("a policy");
    tx.commit().expect("commit");
}

fn version(c: &Connection) -> i64 {
    count(c, "SELECT MAX(version) FROM schema_migrations")
}

#[tokio::test]
async fn v6_refers_by_number_and_reads_back_the_same_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v5.db");
    v5_database(&path);
    let before = events(&Connection::open(&path).expect("open"));

    let store = SqliteStore::open(&path, Sealer::random()).expect("open and migrate");
    let op_id: OperationId = "op_1".parse().expect("id");
    let read = store.operation_events(&op_id).await.expect("events");
    let ids: Vec<_> = read.iter().map(|e| (e.position, e.id.to_string())).collect();
    let expected: Vec<_> = before.iter().map(|(p, id, _, _)| (*p, id.clone())).collect();
    assert_eq!(ids, expected, "same events, same positions");
    assert!(read.iter().all(|e| e.operation_id == op_id && e.operation.id == op_id));

    let deliveries = store.deliveries_of(&op_id).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0].0;
    assert_eq!((d.id.as_str(), d.event_id.as_str()), ("dlv_1", "evt_2"));
    assert_eq!(d.operation_id, op_id);
    drop(store);

    let c = Connection::open(&path).expect("open");
    assert_eq!(version(&c), MIGRATIONS.last().expect("migrations").0, "migrated to the newest");
    let refs: (i64, i64) = c
        .query_row(
            "SELECT event_position, operation_number FROM deliveries WHERE id = 'dlv_1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("refs");
    assert_eq!(refs, (2, 1), "the event's position and the operation's number");
    let counter = count(&c, "SELECT seq FROM sqlite_sequence WHERE name = 'events'");
    assert_eq!(counter, 9, "the position counter came through");
    let rows = count(&c, "SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'events'");
    assert_eq!(rows, 1, "one counter row for events");
}

#[test]
fn v6_stops_rather_than_drop_a_delivery_whose_event_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v5.db");
    v5_database(&path);
    add_dangling_delivery(&path);
    let mut c = connect(&path).expect("connect");
    let err = migrate(&mut c).expect_err("refused");
    assert!(err.to_string().contains("NOT NULL"), "{err}");
    assert_eq!(version(&c), 5, "migration 6 rolled back");
    let kept = count(&c, "SELECT COUNT(*) FROM deliveries WHERE event_id = 'evt_gone'");
    assert_eq!(kept, 1, "the v5 deliveries table, row and all, is still there");
}

#[test]
fn a_database_a_newer_payhook_migrated_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("newer.db");
    drop(SqliteStore::open(&path, Sealer::random()).expect("create"));
    let c = Connection::open(&path).expect("open");
    c.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)", [])
        .expect("a newer version");
    drop(c);
    let err = SqliteStore::open(&path, Sealer::random()).err().expect("refused");
    assert!(err.to_string().contains("schema v99, newer than"), "{err}");
}

#[tokio::test]
async fn v9_gives_a_key_made_before_an_id_and_a_prefix_to_learn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v2.db");
    v2_database(&path);
    let hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let c = Connection::open(&path).expect("open");
    c.execute(
        "INSERT INTO api_keys (key_hash, merchant_id, created_at) VALUES (?1, 'mer_1', 1)",
        [hash],
    )
    .expect("a key made at v2");
    drop(c);

    let store = SqliteStore::open(&path, Sealer::random()).expect("open and migrate");
    let owner = store.merchant_by_api_key(hash).await.expect("lookup").expect("found");
    assert_eq!(owner.key.as_str(), "key_0123456789abcdef012345", "the id comes from the hash");
    assert_eq!(owner.prefix, payhook_core::lifecycle::keys::UNKNOWN_PREFIX);
    let m: MerchantId = "mer_1".parse().expect("id");
    let held = store.api_keys(&m).await.expect("list");
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].id.clone(), held[0].created_at), (owner.key, Timestamp(1)));
}
