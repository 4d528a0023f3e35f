//! Row mapping for the SQLite store: column lists, `from_row` functions, inserts and updates.

use crate::columns::{
    attempt_from, bad_data, merchant_from, operation_from, poll_from, Cells, ATTEMPT_COLUMNS,
    MERCHANT_COLUMNS, OPERATION_COLUMNS, POLL_COLUMNS,
};
use crate::seal::Sealer;
use crate::{NewOperation, StoreError};
use payhook_core::ids::{MerchantId, OperationId};
use payhook_core::model::{
    Attempt, CallbackSettings, Delivery, DeliveryKind, DeliveryState, Event, Merchant, Operation,
    Poll,
};
use payhook_core::retry::RetryPolicy;
use payhook_core::status_source::StatusSource;
use payhook_core::Timestamp;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Params, Row, Statement};
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::str::FromStr;
use std::sync::LazyLock;

/// A rusqlite error as a [`StoreError`]: a full disk is [`StoreError::StorageFull`], every
/// other failure [`StoreError::Backend`].
pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    if disk_full(&e) {
        StoreError::StorageFull(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Whether SQLite failed for want of space. A write(2) that ends in ENOSPC (or short) is
/// `SQLITE_FULL` whatever the statement: measured on a full tmpfs and a full ext4, the WAL's
/// append at COMMIT fails so. SQLite reports a failed fsync as `SQLITE_IOERR_FSYNC` without
/// its errno (readable only through unsafe FFI, which the workspace forbids), so an ENOSPC
/// from fsync stays a backend failure.
pub(crate) fn disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Executes one statement through the connection's prepared-statement cache.
pub(crate) fn exec<P: Params>(c: &Connection, sql: &str, p: P) -> rusqlite::Result<usize> {
    c.prepare_cached(sql).and_then(|mut stmt| stmt.execute(p))
}

/// Where a statement whose SQL is known at compile time comes from: rusqlite's statement
/// cache on a plain connection; on the writer's transaction (`writer::Tx`), the writer's own
/// table, which finds it by the SQL's address instead of hashing and copying the whole text
/// on every use as rusqlite's cache does. The paths a status report and an attempt record
/// take run their statements through this.
pub(crate) trait Statements {
    /// Runs `f` with the prepared statement for `sql`.
    fn with_sql<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
    fn connection(&self) -> &Connection;
    /// Whether a write that may be merged may wait for the group's commit (`health`): only
    /// on the writer's fast run, whose rollback forgets it all; a careful run's savepoint
    /// rollback must not forget a neighbour's merged write, so it writes at once.
    fn defers_merged_writes(&self) -> bool {
        false
    }
}

impl Statements for Connection {
    fn with_sql<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut stmt = self.prepare_cached(sql)?;
        f(&mut stmt)
    }

    fn connection(&self) -> &Connection {
        self
    }
}

/// [`exec`] for SQL known at compile time, through [`Statements`]: on the writer, its own
/// prepared statements.
pub(crate) fn exec_prepared<P: Params>(
    c: &impl Statements,
    sql: &'static str,
    p: P,
) -> rusqlite::Result<usize> {
    c.with_sql(sql, |stmt| stmt.execute(p))
}

/// Every row of a cached statement, mapped by `f`.
pub(crate) fn query_all<T, P: Params>(
    c: &Connection,
    sql: &str,
    p: P,
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(p, f).map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

/// Every row of a cached statement, mapped by `f` (the shared row mapping of `columns`).
pub(crate) fn query_rows<T, P: Params>(
    c: &Connection,
    sql: &str,
    p: P,
    f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(p).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        out.push(f(r)?);
    }
    Ok(out)
}

impl Cells for Row<'_> {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.get(i).map_err(backend)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.get(i).map_err(backend)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.get(i).map_err(backend)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.get(i).map_err(backend)
    }
    fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        let text = self.get_ref(i).map_err(backend)?.as_str().map_err(|e| backend(conv(i, e)))?;
        serde_json::from_str(text).map_err(bad_data)
    }
    fn opt_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.get(i).map_err(backend)?;
        text.map(|t| serde_json::from_str(&t).map_err(bad_data)).transpose()
    }
}

fn conv<E: std::error::Error + Send + Sync + 'static>(i: usize, e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))
}

fn text<T: FromStr>(r: &Row<'_>, i: usize) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    r.get::<_, String>(i)?.parse().map_err(|e| conv(i, e))
}

fn json<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    serde_json::from_str(&r.get::<_, String>(i)?).map_err(|e| conv(i, e))
}

/// A stored policy, parsed. Rows read together nearly always share their merchant's policy,
/// and parsing one reads every delay through humantime, so the last one parsed is kept.
fn policy_from(r: &Row<'_>, i: usize) -> rusqlite::Result<payhook_core::retry::RetryPolicy> {
    use payhook_core::retry::RetryPolicy;
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, RetryPolicy)>> =
            const { std::cell::RefCell::new(None) };
    }
    let text = r.get_ref(i)?.as_str().map_err(|e| conv(i, e))?;
    if let Some(p) =
        LAST.with(|last| last.borrow().as_ref().filter(|(t, _)| t == text).map(|(_, p)| p.clone()))
    {
        return Ok(p);
    }
    let policy: RetryPolicy = serde_json::from_str(text).map_err(|e| conv(i, e))?;
    LAST.with(|last| *last.borrow_mut() = Some((text.to_owned(), policy.clone())));
    Ok(policy)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("our records serialize to JSON")
}

pub(crate) fn load_merchant(
    c: &Connection,
    sealer: &Sealer,
    id: &MerchantId,
) -> Result<Option<Merchant>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!("SELECT {MERCHANT_COLUMNS} FROM merchants WHERE id = ?1"))
        .map_err(backend)?;
    let mut rows = stmt.query([id.as_str()]).map_err(backend)?;
    rows.next().map_err(backend)?.map(|r| merchant_from(sealer, r)).transpose()
}

fn merchant_params(m: &Merchant, sealer: &Sealer) -> [Box<dyn rusqlite::ToSql>; 14] {
    let (prev, exp) = match &m.previous_secret {
        Some((s, exp)) => (Some(sealer.seal(s.expose())), Some(exp.0)),
        None => (None, None),
    };
    [
        Box::new(m.id.to_string()),
        Box::new(m.name.clone()),
        Box::new(m.dialect.as_str()),
        Box::new(m.callback_url.clone()),
        Box::new(to_json(&m.allowed_callback_urls)),
        Box::new(m.retry.as_ref().map(to_json)),
        Box::new(m.encryption_key.as_ref().map(|k| sealer.seal(&to_json(k)))),
        Box::new(to_json(&m.settings)),
        Box::new(sealer.seal(m.signing_secret.expose())),
        Box::new(prev),
        Box::new(exp),
        Box::new(m.created_at.0),
        Box::new(m.updated_at.0),
        Box::new(m.state.as_str()),
    ]
}

pub(crate) fn insert_merchant(
    c: &Connection,
    sealer: &Sealer,
    m: &Merchant,
) -> Result<(), StoreError> {
    let p = merchant_params(m, sealer);
    exec(
        c,
        &format!(
            "INSERT INTO merchants ({MERCHANT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        rusqlite::params_from_iter(p.iter()),
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn update_merchant_row(
    c: &Connection,
    sealer: &Sealer,
    m: &Merchant,
) -> Result<usize, StoreError> {
    let p = merchant_params(m, sealer);
    exec(
        c,
        "UPDATE merchants SET name = ?2, dialect = ?3, callback_url = ?4,
           allowed_callback_urls = ?5, retry = ?6, encryption_key = ?7, settings = ?8,
           signing_secret = ?9, previous_secret = ?10, previous_expires_at = ?11,
           updated_at = ?13
         WHERE id = ?1 AND ?12 IS NOT NULL AND ?14 IS NOT NULL",
        rusqlite::params_from_iter(p.iter()),
    )
    .map_err(backend)
}

/// One operation (and its request hash) by a `WHERE` clause.
pub(crate) fn query_operation<P: Params>(
    c: &Connection,
    clause: &str,
    p: P,
) -> Result<Option<(Operation, String)>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!("SELECT {OPERATION_COLUMNS} FROM operations {clause}"))
        .map_err(backend)?;
    let mut rows = stmt.query(p).map_err(backend)?;
    rows.next().map_err(backend)?.map(operation_from).transpose()
}

/// One operation (and its request hash) by id: every status report reads one, so its SQL is
/// built once.
pub(crate) fn operation_by_id(
    c: &impl Statements,
    id: &str,
) -> Result<Option<(Operation, String)>, StoreError> {
    static BY_ID: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = ?1"));
    let found = c.with_sql(&BY_ID, |stmt| Ok(stmt.query([id])?.next()?.map(operation_from)));
    found.map_err(backend)?.transpose()
}

/// Operations (without request hashes) by a `WHERE … ORDER BY … LIMIT` clause.
pub(crate) fn query_operations<P: Params>(
    c: &Connection,
    clause: &str,
    p: P,
) -> Result<Vec<Operation>, StoreError> {
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations {clause}");
    query_rows(c, &sql, p, |r| operation_from(r).map(|(op, _)| op))
}

pub(crate) fn insert_operation(
    c: &Connection,
    id: &str,
    new: &NewOperation,
    now: Timestamp,
) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO operations (id, merchant_id, external_id, amount, currency, kind, status,
           seq, callback, data, request_hash, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'created', 0, ?7, ?8, ?9, ?10, ?10)",
        params![
            id,
            new.merchant_id.as_str(),
            new.external_id,
            new.amount,
            new.currency,
            new.kind,
            to_json(&new.callback),
            to_json(&new.data),
            new.request_hash,
            now.0
        ],
    )
    .map_err(backend)?;
    Ok(())
}

/// Writes an operation's new status, sequence and time, found by its row number (the rowid,
/// so no lookup in the id index), and its data only when the report changed it.
pub(crate) fn save_operation_status(
    c: &impl Statements,
    op: &Operation,
    data_changed: bool,
) -> Result<(), StoreError> {
    let (number, status, seq, at) = (op.number, op.status.as_str(), op.seq, op.updated_at.0);
    if data_changed {
        exec_prepared(
            c,
            "UPDATE operations SET status = ?2, seq = ?3, updated_at = ?4, data = ?5
             WHERE number = ?1",
            params![number, status, seq, at, to_json(&op.data)],
        )
    } else {
        exec_prepared(
            c,
            "UPDATE operations SET status = ?2, seq = ?3, updated_at = ?4 WHERE number = ?1",
            params![number, status, seq, at],
        )
    }
    .map_err(backend)?;
    Ok(())
}

/// An event's columns, with the columns of its operation that never change after
/// registration: a stored event keeps only its own part of the operation (below), and the
/// rest is read from the operation's row, the operation's id included (an event refers to its
/// operation by number since schema v6). `FROM {EVENTS_JOINED}`.
pub(crate) const EVENT_COLUMNS: &str =
    "e.position, e.id, o.id, e.merchant_id, e.seq, e.status, e.previous_status, \
     e.event_key, e.created_at, e.snapshot, o.number, o.external_id, o.amount, o.currency, \
     o.kind, o.callback, o.created_at";

/// Events with their operations (every event has one: a foreign key, and operations are
/// never deleted).
pub(crate) const EVENTS_JOINED: &str =
    "events e JOIN operations o ON o.number = e.operation_number";

/// What an event stores of its operation (the `snapshot` column): the part that neither the
/// event's columns (status, seq, the time, which is the operation's `updated_at`) nor the
/// operation's unchanging columns hold. Today that is the data, as it was after this event.
/// Storing only this instead of the whole operation keeps ≈ 270 bytes per event off the
/// single writer's pages. Events written before schema v4 hold
/// the whole operation as JSON, which always starts with `{"id":`; an own part always starts
/// with `{"data":`.
#[derive(serde::Serialize)]
struct OwnPart<'a> {
    data: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct OwnPartRead {
    data: serde_json::Map<String, serde_json::Value>,
}

const OWN_PART_PREFIX: &str = "{\"data\":";

pub(crate) fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let operation_id: OperationId = text(r, 2)?;
    let merchant_id: MerchantId = text(r, 3)?;
    let seq = r.get(4)?;
    let status = text(r, 5)?;
    let created_at = Timestamp(r.get(8)?);
    let snapshot = r.get_ref(9)?.as_str().map_err(|e| conv(9, e))?;
    let operation = if snapshot.starts_with(OWN_PART_PREFIX) {
        let own: OwnPartRead = serde_json::from_str(snapshot).map_err(|e| conv(9, e))?;
        Operation {
            id: operation_id.clone(),
            number: r.get(10)?,
            merchant_id: merchant_id.clone(),
            external_id: r.get(11)?,
            amount: r.get(12)?,
            currency: r.get(13)?,
            kind: r.get(14)?,
            status,
            seq,
            callback: json::<CallbackSettings>(r, 15)?,
            data: own.data,
            created_at: Timestamp(r.get(16)?),
            updated_at: created_at,
        }
    } else {
        serde_json::from_str(snapshot).map_err(|e| conv(9, e))?
    };
    Ok(Event {
        position: r.get(0)?,
        id: text(r, 1)?,
        operation_id,
        merchant_id,
        seq,
        status,
        previous_status: text(r, 6)?,
        event_key: r.get(7)?,
        created_at,
        operation,
    })
}

pub(crate) fn load_event(c: &Connection, id: &str) -> Result<Option<Event>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM {EVENTS_JOINED} WHERE e.id = ?1"))
        .map_err(backend)?;
    stmt.query_row([id], event_from_row).optional().map_err(backend)
}

pub(crate) fn event_by_key(
    c: &Connection,
    op: &OperationId,
    key: &str,
) -> Result<Option<Event>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM {EVENTS_JOINED}
             WHERE e.operation_number = (SELECT number FROM operations WHERE id = ?1)
               AND e.event_key = ?2"
        ))
        .map_err(backend)?;
    stmt.query_row(params![op.as_str(), key], event_from_row).optional().map_err(backend)
}

/// Stores `event` (built by the lifecycle) and gives it its feed position.
pub(crate) fn insert_event(c: &impl Statements, mut event: Event) -> Result<Event, StoreError> {
    // The own part rebuilds the operation only where the event's columns match it; every
    // caller changes the operation at `now`, so this is belt and braces.
    let op = &event.operation;
    let now = event.created_at;
    let snapshot = if op.updated_at == now && op.seq == event.seq && op.status == event.status {
        own_part(op)
    } else {
        to_json(op)
    };
    exec_prepared(
        c,
        "INSERT INTO events (id, operation_number, merchant_id, seq, status, previous_status,
                             event_key, created_at, snapshot)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            event.id.as_str(),
            event.operation.number,
            event.merchant_id.as_str(),
            event.seq,
            event.status.as_str(),
            event.previous_status.as_str(),
            event.event_key,
            now.0,
            snapshot
        ],
    )
    .map_err(backend)?;
    event.position = c.connection().last_insert_rowid();
    Ok(event)
}

/// The event's own part of `op`, as stored (see [`OwnPart`]).
fn own_part(op: &Operation) -> String {
    to_json(&OwnPart { data: &op.data })
}

/// A delivery's columns, `FROM deliveries`: its event's and its operation's ids from their
/// rows (a delivery refers to them by number since schema v6); its policy from `policies`
/// when it refers to one (schema v5), from its own `policy` column when written before.
pub(crate) const DELIVERY_COLUMNS: &str =
    "id, (SELECT e.id FROM events e WHERE e.position = event_position), \
     (SELECT o.id FROM operations o WHERE o.number = operation_number), \
     merchant_id, seq, dialect, url, state, attempts, series_attempts, next_attempt_at, \
     COALESCE((SELECT p.policy FROM policies p WHERE p.id = policy_id), policy), last_error, \
     created_at, updated_at, kind";

pub(crate) fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let state: String = r.get(7)?;
    Ok(Delivery {
        id: text(r, 0)?,
        event_id: text(r, 1)?,
        operation_id: text(r, 2)?,
        merchant_id: text(r, 3)?,
        seq: r.get(4)?,
        dialect: text(r, 5)?,
        url: r.get(6)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| conv(7, payhook_core::status::UnknownStatus(state)))?,
        attempts: r.get(8)?,
        series_attempts: r.get(9)?,
        next_attempt_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
        policy: policy_from(r, 11)?,
        last_error: r.get(12)?,
        created_at: Timestamp(r.get(13)?),
        updated_at: Timestamp(r.get(14)?),
        kind: {
            let kind: String = r.get(15)?;
            DeliveryKind::parse(&kind)
                .ok_or_else(|| conv(15, payhook_core::status::UnknownStatus(kind)))?
        },
    })
}

pub(crate) fn load_delivery(c: &Connection, id: &str) -> Result<Option<Delivery>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"))
        .map_err(backend)?;
    stmt.query_row([id], delivery_from_row).optional().map_err(backend)
}

/// What a delivery row refers to its event and its operation by (schema v6): the event's
/// `position` and the operation's `number`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refs {
    pub event_position: i64,
    pub operation_number: i64,
}

impl Refs {
    /// The references of a delivery of `event` (read from, or just written to, the store).
    pub(crate) fn of(event: &Event) -> Refs {
        Refs { event_position: event.position, operation_number: event.operation.number }
    }
}

thread_local! {
    /// The `policies` rows the writer thread has seen, newest last. Only writer jobs insert
    /// policies, and a rollback clears this (`forget_writer_caches`), so every id here names a
    /// committed row or one of the running transaction.
    static POLICY_REFS: RefCell<Vec<(RetryPolicy, i64)>> = const { RefCell::new(Vec::new()) };
}

/// The most policies [`POLICY_REFS`] keeps: merchants' policies and the rare per-operation
/// override. Past it the list starts over, which costs one lookup per policy.
const POLICY_REFS_KEPT: usize = 64;

/// The id of `policy`'s row in `policies`, inserting the row the first time (schema v5).
pub(crate) fn policy_ref(c: &impl Statements, policy: &RetryPolicy) -> Result<i64, StoreError> {
    let known = POLICY_REFS
        .with(|refs| refs.borrow().iter().rev().find(|(p, _)| p == policy).map(|(_, id)| *id));
    if let Some(id) = known {
        return Ok(id);
    }
    let json = to_json(policy);
    exec_prepared(c, "INSERT INTO policies (policy) VALUES (?1) ON CONFLICT DO NOTHING", [&json])
        .map_err(backend)?;
    let id: i64 = c
        .with_sql("SELECT id FROM policies WHERE policy = ?1", |stmt| {
            stmt.query_row([&json], |r| r.get(0))
        })
        .map_err(backend)?;
    POLICY_REFS.with(|refs| {
        let mut refs = refs.borrow_mut();
        if refs.len() >= POLICY_REFS_KEPT {
            refs.clear();
        }
        refs.push((policy.clone(), id));
    });
    Ok(id)
}

/// Forgets the policy ids the writer thread has seen (after a rollback).
pub(crate) fn forget_policy_refs() {
    POLICY_REFS.with(|refs| refs.borrow_mut().clear());
}

/// Inserts a delivery, leased to `lease` = (node, until) when given (a hand-off).
pub(crate) fn insert_leased_delivery(
    c: &impl Statements,
    d: &Delivery,
    refs: Refs,
    host: &str,
    lease: Option<(&str, Timestamp)>,
) -> Result<(), StoreError> {
    exec_prepared(
        c,
        "INSERT INTO deliveries (id, event_position, operation_number, merchant_id, seq, dialect,
           url, host, state, attempts, series_attempts, next_attempt_at, policy, policy_id,
           last_error, created_at, updated_at, kind, leased_by, lease_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, ?10, '', ?11, ?12, ?13, ?13, ?14, ?15,
                 ?16)",
        params![
            d.id.as_str(),
            refs.event_position,
            refs.operation_number,
            d.merchant_id.as_str(),
            d.seq,
            d.dialect.as_str(),
            d.url,
            host,
            d.state.as_str(),
            d.next_attempt_at.map(|t| t.0),
            policy_ref(c, &d.policy)?,
            d.last_error,
            d.created_at.0,
            d.kind.as_str(),
            lease.map(|(node, _)| node),
            lease.map(|(_, until)| until.0)
        ],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn load_attempts(c: &Connection, delivery: &str) -> Result<Vec<Attempt>, StoreError> {
    let sql =
        format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ?1 ORDER BY number");
    query_rows(c, &sql, [delivery], |r| attempt_from(r))
}

pub(crate) fn insert_attempt(c: &impl Statements, a: &Attempt) -> Result<(), StoreError> {
    static INSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        )
    });
    exec_prepared(
        c,
        &INSERT,
        params![
            a.delivery_id.as_str(),
            a.number,
            a.started_at.0,
            a.duration_ms,
            a.request,
            a.response_status,
            a.response_body,
            a.outcome.as_str(),
            a.error_kind.map(|k| k.as_str()),
            a.error
        ],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn insert_watch(
    c: &Connection,
    op: &Operation,
    source: &StatusSource,
    now: Timestamp,
) -> Result<(), StoreError> {
    let first = source.delay_before(1).map(|d| now.plus(d).0);
    exec(
        c,
        "INSERT INTO watches (operation_id, merchant_id, source, polls, next_poll_at, state,
           created_at, updated_at)
         VALUES (?1, ?2, ?3, 0, ?4, 'active', ?5, ?5)",
        params![op.id.as_str(), op.merchant_id.as_str(), to_json(&source.to_json()), first, now.0],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn load_polls(c: &Connection, op: &str) -> Result<Vec<Poll>, StoreError> {
    let sql = format!("SELECT {POLL_COLUMNS} FROM polls WHERE operation_id = ?1 ORDER BY number");
    query_rows(c, &sql, [op], |r| poll_from(r))
}

pub(crate) fn insert_poll(c: &Connection, p: &Poll) -> Result<(), StoreError> {
    exec(
        c,
        &format!(
            "INSERT INTO polls ({POLL_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (operation_id, number) DO NOTHING"
        ),
        params![
            p.operation_id.as_str(),
            p.number,
            p.started_at.0,
            p.duration_ms,
            p.request,
            p.response_status,
            p.response_body,
            p.read,
            p.mapped.map(|s| s.as_str()),
            p.outcome.as_str(),
            p.error_kind.map(|k| k.as_str()),
            p.error
        ],
    )
    .map_err(backend)?;
    Ok(())
}
