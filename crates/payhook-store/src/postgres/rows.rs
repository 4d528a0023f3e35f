//! Row mapping for the PostgreSQL store: column lists, `from_row` functions for operations,
//! events and deliveries (the tables whose rows differ from SQLite's), inserts and updates;
//! the tables both backends store alike are read through `crate::columns`.

pub(crate) use crate::columns::{
    attempt_from, bad_data, merchant_from, operation_from, parse_id, poll_from, watch_from, Cells,
    ATTEMPT_COLUMNS, MERCHANT_COLUMNS, OPERATION_COLUMNS, POLL_COLUMNS, WATCH_COLUMNS,
};
use crate::seal::Sealer;
use crate::{destination_host, NewOperation, StoreError};
use deadpool_postgres::GenericClient;
use payhook_core::ids::{MerchantId, OperationId};
use payhook_core::lifecycle::Supersede;
use payhook_core::model::{
    Attempt, Delivery, DeliveryKind, DeliveryState, Event, Merchant, Operation, Poll,
};
use payhook_core::retry::RetryPolicy;
use payhook_core::status::UnknownStatus;
use payhook_core::status_source::StatusSource;
use payhook_core::Timestamp;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

/// Query parameters, as tokio-postgres takes them.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A driver error as a store error: see `postgres::driver_error`.
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    super::driver_error(e)
}

/// An error and its causes on one line ("error connecting to server: Connection refused").
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub(crate) async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    p: Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg)?;
    c.execute(&stmt, p).await.map_err(pg)
}

pub(crate) async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    p: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg)?;
    c.query(&stmt, p).await.map_err(pg)
}

pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    p: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_opt(&stmt, p).await.map_err(pg)
}

pub(crate) async fn exists<C: GenericClient>(
    c: &C,
    sql: &str,
    p: Params<'_>,
) -> Result<bool, StoreError> {
    Ok(query_opt(c, sql, p).await?.is_some())
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(pg)
}

fn text<T: FromStr>(r: &Row, i: usize) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s: String = get(r, i)?;
    s.parse().map_err(|e| bad_data(format!("column {i}: {e}")))
}

fn json<T: DeserializeOwned>(r: &Row, i: usize) -> Result<T, StoreError> {
    Ok(get::<Json<T>>(r, i)?.0)
}

fn opt_json<T: DeserializeOwned>(r: &Row, i: usize) -> Result<Option<T>, StoreError> {
    Ok(get::<Option<Json<T>>>(r, i)?.map(|j| j.0))
}

impl Cells for Row {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| bad_data(format!("column {i} is NULL")))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        // Counters and HTTP statuses are INTEGER, times and counts BIGINT.
        match *self.columns()[i].type_() {
            tokio_postgres::types::Type::INT4 => Ok(get::<Option<i32>>(self, i)?.map(i64::from)),
            _ => get(self, i),
        }
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        get(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        get(self, i)
    }
    fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        json(self, i)
    }
    fn opt_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>, StoreError> {
        opt_json(self, i)
    }
}

/// Counters are `u32` in the model and `INTEGER` in the schema.
fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn count(r: &Row, i: usize) -> Result<u32, StoreError> {
    u32::try_from(get::<i32>(r, i)?).map_err(bad_data)
}

pub(crate) async fn load_merchant<C: GenericClient>(
    c: &C,
    sealer: &Sealer,
    id: &MerchantId,
) -> Result<Option<Merchant>, StoreError> {
    let sql = format!("SELECT {MERCHANT_COLUMNS} FROM merchants WHERE id = $1");
    let row = query_opt(c, &sql, &[&id.as_str()]).await?;
    row.as_ref().map(|r| merchant_from(sealer, r)).transpose()
}

/// Writes all of a merchant's columns: `INSERT` for a new one, `UPDATE` (all but `created_at`)
/// for an existing one. Returns the rows changed.
/// Secrets are sealed with the master key before they reach the database.
async fn write_merchant<C: GenericClient>(
    c: &C,
    sealer: &Sealer,
    sql: &str,
    m: &Merchant,
) -> Result<u64, StoreError> {
    let (prev, exp) = match &m.previous_secret {
        Some((s, exp)) => (Some(sealer.seal(s.expose())), Some(exp.0)),
        None => (None, None),
    };
    let retry = m.retry.as_ref().map(Json);
    let key = m.encryption_key.as_ref().map(|k| sealer.seal(&k.to_string()));
    let secret = sealer.seal(m.signing_secret.expose());
    exec(
        c,
        sql,
        &[
            &m.id.as_str(),
            &m.name,
            &m.dialect.as_str(),
            &m.callback_url,
            &Json(&m.allowed_callback_urls),
            &retry,
            &key,
            &Json(&m.settings),
            &secret,
            &prev,
            &exp,
            &m.created_at.0,
            &m.updated_at.0,
            &m.state.as_str(),
        ],
    )
    .await
}

pub(crate) async fn insert_merchant<C: GenericClient>(
    c: &C,
    sealer: &Sealer,
    m: &Merchant,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO merchants ({MERCHANT_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    write_merchant(c, sealer, &sql, m).await.map(|_| ())
}

pub(crate) async fn update_merchant_row<C: GenericClient>(
    c: &C,
    sealer: &Sealer,
    m: &Merchant,
) -> Result<u64, StoreError> {
    // `$12` (created_at) never changes, and `$14` (state) changes only through
    // `set_merchant_state`: the comparisons only give the parameters a type.
    let sql = "UPDATE merchants SET name = $2, dialect = $3, callback_url = $4,
           allowed_callback_urls = $5, retry = $6, encryption_key = $7, settings = $8,
           signing_secret = $9, previous_secret = $10, previous_expires_at = $11,
           updated_at = $13
         WHERE id = $1 AND $12::BIGINT IS NOT NULL AND $14::TEXT IS NOT NULL";
    write_merchant(c, sealer, sql, m).await
}

/// One operation (and its request hash) by a `WHERE` clause (optionally `… FOR UPDATE`).
pub(crate) async fn query_operation<C: GenericClient>(
    c: &C,
    clause: &str,
    p: Params<'_>,
) -> Result<Option<(Operation, String)>, StoreError> {
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations {clause}");
    query_opt(c, &sql, p).await?.as_ref().map(operation_from).transpose()
}

/// Operations (without request hashes) by a `WHERE … ORDER BY … LIMIT` clause.
pub(crate) async fn query_operations<C: GenericClient>(
    c: &C,
    clause: &str,
    p: Params<'_>,
) -> Result<Vec<Operation>, StoreError> {
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations {clause}");
    let rows = query(c, &sql, p).await?;
    rows.iter().map(|r| operation_from(r).map(|(op, _)| op)).collect()
}

/// Inserts a new operation unless (merchant, external id) is taken; `false` when it was.
pub(crate) async fn insert_operation<C: GenericClient>(
    c: &C,
    id: &str,
    new: &NewOperation,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let n = exec(
        c,
        "INSERT INTO operations (id, merchant_id, external_id, amount, currency, kind, status,
           seq, callback, data, request_hash, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'created', 0, $7, $8, $9, $10, $10)
         ON CONFLICT (merchant_id, external_id) DO NOTHING",
        &[
            &id,
            &new.merchant_id.as_str(),
            &new.external_id,
            &new.amount,
            &new.currency,
            &new.kind,
            &Json(&new.callback),
            &Json(&new.data),
            &new.request_hash,
            &now.0,
        ],
    )
    .await?;
    Ok(n == 1)
}

pub(crate) async fn save_operation_status<C: GenericClient>(
    c: &C,
    op: &Operation,
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE operations SET status = $2, seq = $3, data = $4, updated_at = $5 WHERE id = $1",
        &[&op.id.as_str(), &op.status.as_str(), &op.seq, &Json(&op.data), &op.updated_at.0],
    )
    .await
    .map(|_| ())
}

pub(crate) const EVENT_COLUMNS: &str =
    "position, id, operation_id, merchant_id, seq, status, previous_status, event_key, \
     created_at, snapshot";

pub(crate) fn event_from_row(r: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        position: get(r, 0)?,
        id: text(r, 1)?,
        operation_id: text(r, 2)?,
        merchant_id: text(r, 3)?,
        seq: get(r, 4)?,
        status: text(r, 5)?,
        previous_status: text(r, 6)?,
        event_key: get(r, 7)?,
        created_at: Timestamp(get(r, 8)?),
        operation: json(r, 9)?,
    })
}

pub(crate) async fn event_by_key<C: GenericClient>(
    c: &C,
    op: &OperationId,
    key: &str,
) -> Result<Option<Event>, StoreError> {
    let sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE operation_id = $1 AND event_key = $2");
    query_opt(c, &sql, &[&op.as_str(), &key]).await?.as_ref().map(event_from_row).transpose()
}

/// Inserts the event and fills in its feed position. Call it last in the transaction, after
/// `lock_feed`: the lock is held from here to commit.
pub(crate) async fn store_event<C: GenericClient>(
    c: &C,
    event: &mut Event,
) -> Result<(), StoreError> {
    let row = query_opt(
        c,
        "INSERT INTO events (id, operation_id, merchant_id, seq, status, previous_status,
           event_key, created_at, snapshot)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING position",
        &[
            &event.id.as_str(),
            &event.operation_id.as_str(),
            &event.merchant_id.as_str(),
            &event.seq,
            &event.status.as_str(),
            &event.previous_status.as_str(),
            &event.event_key,
            &event.created_at.0,
            &Json(&event.operation),
        ],
    )
    .await?
    .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))?;
    event.position = get(&row, 0)?;
    Ok(())
}

pub(crate) const DELIVERY_COLUMNS: &str =
    "id, event_id, operation_id, merchant_id, seq, dialect, url, state, attempts, \
     series_attempts, next_attempt_at, policy, last_error, created_at, updated_at, kind";

pub(crate) fn delivery_from_row(r: &Row) -> Result<Delivery, StoreError> {
    let state: String = get(r, 7)?;
    let kind: String = get(r, 15)?;
    Ok(Delivery {
        id: text(r, 0)?,
        event_id: text(r, 1)?,
        operation_id: text(r, 2)?,
        merchant_id: text(r, 3)?,
        seq: get(r, 4)?,
        dialect: text(r, 5)?,
        url: get(r, 6)?,
        state: DeliveryState::parse(&state).ok_or_else(|| bad_data(UnknownStatus(state)))?,
        attempts: count(r, 8)?,
        series_attempts: count(r, 9)?,
        next_attempt_at: get::<Option<i64>>(r, 10)?.map(Timestamp),
        policy: json(r, 11)?,
        last_error: get(r, 12)?,
        created_at: Timestamp(get(r, 13)?),
        updated_at: Timestamp(get(r, 14)?),
        kind: DeliveryKind::parse(&kind).ok_or_else(|| bad_data(UnknownStatus(kind)))?,
    })
}

/// One delivery by id; `lock` takes its row lock for the rest of the transaction.
pub(crate) async fn load_delivery<C: GenericClient>(
    c: &C,
    id: &str,
    lock: bool,
) -> Result<Option<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    query_opt(c, &sql, &[&id]).await?.as_ref().map(delivery_from_row).transpose()
}

/// The columns a new delivery is inserted with, and their values up to $14 (the lease, $15
/// and $16, is added by each statement; all in [`NewDelivery`]'s order).
const NEW_DELIVERY: &str = "INSERT INTO deliveries (id, event_id, operation_id, merchant_id, seq,
      dialect, url, host, state, attempts, series_attempts, next_attempt_at, policy, last_error,
      created_at, updated_at, kind, leased_by, lease_until)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $11, $12, $13, $13, $14";

/// Inserts a new delivery; `lease` (holder, until) leases it at once to that node (a
/// hand-off), `None` leaves it to claims.
pub(crate) async fn insert_delivery<C: GenericClient>(
    c: &C,
    d: &Delivery,
    lease: Option<(&str, Timestamp)>,
) -> Result<(), StoreError> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{NEW_DELIVERY}, $15, $16)"));
    let host = destination_host(&d.url);
    exec(c, &SQL, &NewDelivery::of(d, host, lease).params()).await.map(|_| ())
}

/// The planning of a report's delivery in one round trip: supersedes what `supersede` names
/// (the operation's pending deliveries older than `d`, not in flight at its creation), and
/// inserts `d`, leased per `lease` only if no older delivery of the operation is still in
/// flight (leased). An older delivery pending in the statement's snapshot that the UPDATE
/// did not supersede counts as in flight: it was leased in the snapshot, or a claim leased it
/// and committed while the UPDATE waited for its row — the UPDATE re-reads a row it waited
/// for, the snapshot does not. True when `d` was inserted leased.
pub(crate) async fn supersede_and_insert<C: GenericClient>(
    c: &C,
    d: &Delivery,
    supersede: Supersede,
    host: String,
    lease: Option<(&str, Timestamp)>,
) -> Result<bool, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH superseded AS (
               UPDATE deliveries SET state = 'superseded', next_attempt_at = NULL,
                 updated_at = $13
               WHERE operation_id = $3 AND state = 'pending' AND seq < $5
                 AND (lease_until IS NULL OR lease_until <= $13)
               RETURNING 1),
             busy AS (SELECT EXISTS (SELECT 1 FROM deliveries
                 WHERE operation_id = $3 AND state = 'pending' AND lease_until > $13)
               OR (SELECT count(*) FROM deliveries
                   WHERE operation_id = $3 AND state = 'pending' AND seq < $5)
                  > (SELECT count(*) FROM superseded) AS in_flight)
             {NEW_DELIVERY},
               CASE WHEN (SELECT in_flight FROM busy) THEN NULL ELSE $15::text END,
               CASE WHEN (SELECT in_flight FROM busy) THEN NULL ELSE $16::bigint END)
             RETURNING leased_by IS NOT NULL"
        )
    });
    // The statement binds the change's `Supersede` through the delivery's own columns.
    debug_assert_eq!((supersede.seq_below, supersede.at), (d.seq, d.created_at));
    let row = query_opt(c, &SQL, &NewDelivery::of(d, host, lease).params()).await?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// A new delivery's column values, in [`NEW_DELIVERY`]'s order.
struct NewDelivery<'a> {
    d: &'a Delivery,
    ids: [&'a str; 4],
    names: [&'static str; 3],
    host: String,
    created_at: i64,
    next_attempt_at: Option<i64>,
    policy: Json<&'a RetryPolicy>,
    leased_by: Option<&'a str>,
    lease_until: Option<i64>,
}

impl<'a> NewDelivery<'a> {
    /// `host` is `destination_host(&d.url)`, which the caller may have needed already.
    fn of(d: &'a Delivery, host: String, lease: Option<(&'a str, Timestamp)>) -> Self {
        NewDelivery {
            d,
            ids: [
                d.id.as_str(),
                d.event_id.as_str(),
                d.operation_id.as_str(),
                d.merchant_id.as_str(),
            ],
            names: [d.dialect.as_str(), d.state.as_str(), d.kind.as_str()],
            host,
            created_at: d.created_at.0,
            next_attempt_at: d.next_attempt_at.map(|t| t.0),
            policy: Json(&d.policy),
            leased_by: lease.map(|(node, _)| node),
            lease_until: lease.map(|(_, until)| until.0),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        let [id, event, operation, merchant] = &self.ids;
        let [dialect, state, kind] = &self.names;
        [
            id,
            event,
            operation,
            merchant,
            &self.d.seq,
            dialect,
            &self.d.url,
            &self.host,
            state,
            &self.next_attempt_at,
            &self.policy,
            &self.d.last_error,
            &self.created_at,
            kind,
            &self.leased_by,
            &self.lease_until,
        ]
    }
}

pub(crate) async fn load_attempts<C: GenericClient>(
    c: &C,
    delivery: &str,
) -> Result<Vec<Attempt>, StoreError> {
    let sql =
        format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY number");
    query(c, &sql, &[&delivery]).await?.iter().map(attempt_from).collect()
}

pub(crate) async fn insert_attempt<C: GenericClient>(c: &C, a: &Attempt) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );
    exec(
        c,
        &sql,
        &[
            &a.delivery_id.as_str(),
            &int(a.number),
            &a.started_at.0,
            &a.duration_ms,
            &a.request,
            &a.response_status.map(i32::from),
            &a.response_body,
            &a.outcome.as_str(),
            &a.error_kind.map(|k| k.as_str()),
            &a.error,
        ],
    )
    .await
    .map(|_| ())
}

/// The counter column value for `attempts` after attempt number `n`.
pub(crate) fn attempt_number(n: u32) -> i32 {
    int(n)
}

pub(crate) async fn insert_watch<C: GenericClient>(
    c: &C,
    op: &Operation,
    source: &StatusSource,
    now: Timestamp,
) -> Result<(), StoreError> {
    let first = source.delay_before(1).map(|d| now.plus(d).0);
    exec(
        c,
        "INSERT INTO watches (operation_id, merchant_id, source, polls, next_poll_at, state,
           created_at, updated_at)
         VALUES ($1, $2, $3, 0, $4, 'active', $5, $5)",
        &[&op.id.as_str(), &op.merchant_id.as_str(), &Json(source.to_json()), &first, &now.0],
    )
    .await
    .map(|_| ())
}

pub(crate) async fn load_polls<C: GenericClient>(c: &C, op: &str) -> Result<Vec<Poll>, StoreError> {
    let sql = format!("SELECT {POLL_COLUMNS} FROM polls WHERE operation_id = $1 ORDER BY number");
    query(c, &sql, &[&op]).await?.iter().map(poll_from).collect()
}

pub(crate) async fn insert_poll<C: GenericClient>(c: &C, p: &Poll) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO polls ({POLL_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (operation_id, number) DO NOTHING"
    );
    exec(
        c,
        &sql,
        &[
            &p.operation_id.as_str(),
            &int(p.number),
            &p.started_at.0,
            &p.duration_ms,
            &p.request,
            &p.response_status.map(i32::from),
            &p.response_body,
            &p.read,
            &p.mapped.map(|s| s.as_str()),
            &p.outcome.as_str(),
            &p.error_kind.map(|k| k.as_str()),
            &p.error,
        ],
    )
    .await
    .map(|_| ())
}

/// Many attempts as column arrays, inserted by one statement (`unnest`).
#[derive(Default)]
pub(crate) struct AttemptColumns<'a> {
    delivery_id: Vec<&'a str>,
    number: Vec<i32>,
    started_at: Vec<i64>,
    duration_ms: Vec<i64>,
    request: Vec<&'a str>,
    response_status: Vec<Option<i32>>,
    response_body: Vec<Option<&'a str>>,
    outcome: Vec<&'static str>,
    error_kind: Vec<Option<&'static str>>,
    error: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    pub(crate) fn push(&mut self, a: &'a Attempt) {
        self.delivery_id.push(a.delivery_id.as_str());
        self.number.push(int(a.number));
        self.started_at.push(a.started_at.0);
        self.duration_ms.push(a.duration_ms);
        self.request.push(&a.request);
        self.response_status.push(a.response_status.map(i32::from));
        self.response_body.push(a.response_body.as_deref());
        self.outcome.push(a.outcome.as_str());
        self.error_kind.push(a.error_kind.map(|k| k.as_str()));
        self.error.push(a.error.as_deref());
    }

    pub(crate) async fn insert<C: GenericClient>(&self, c: &C) -> Result<u64, StoreError> {
        let sql = format!(
            "INSERT INTO attempts ({ATTEMPT_COLUMNS})
             SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::text[],
                                  $6::int[], $7::text[], $8::text[], $9::text[], $10::text[])"
        );
        exec(
            c,
            &sql,
            &[
                &self.delivery_id,
                &self.number,
                &self.started_at,
                &self.duration_ms,
                &self.request,
                &self.response_status,
                &self.response_body,
                &self.outcome,
                &self.error_kind,
                &self.error,
            ],
        )
        .await
    }
}

/// Inserts many events with one statement, in the order given (positions follow it), and
/// fills in their positions. As for [`store_event`], the caller holds the feed locks.
pub(crate) async fn store_events<C: GenericClient>(
    c: &C,
    events: &mut [&mut Event],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let ops: Vec<&str> = events.iter().map(|e| e.operation_id.as_str()).collect();
    let merchants: Vec<&str> = events.iter().map(|e| e.merchant_id.as_str()).collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let previous: Vec<&str> = events.iter().map(|e| e.previous_status.as_str()).collect();
    let keys: Vec<Option<&str>> = events.iter().map(|e| e.event_key.as_deref()).collect();
    let created: Vec<i64> = events.iter().map(|e| e.created_at.0).collect();
    let snapshots: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.operation).map_err(bad_data))
        .collect::<Result<_, _>>()?;
    let rows = query(
        c,
        "INSERT INTO events (id, operation_id, merchant_id, seq, status, previous_status,
           event_key, created_at, snapshot)
         SELECT id, operation_id, merchant_id, seq, status, previous_status, event_key,
           created_at, snapshot::json
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::text[])
           WITH ORDINALITY AS v(id, operation_id, merchant_id, seq, status, previous_status,
                                event_key, created_at, snapshot, n)
         ORDER BY n
         RETURNING id, position",
        &[&ids, &ops, &merchants, &seqs, &statuses, &previous, &keys, &created, &snapshots],
    )
    .await?;
    let positions: std::collections::HashMap<String, i64> = rows
        .iter()
        .map(|r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
    for e in events.iter_mut() {
        e.position = *positions
            .get(e.id.as_str())
            .ok_or_else(|| StoreError::Backend("INSERT … RETURNING missed an event".into()))?;
    }
    Ok(())
}
