//! Row mapping both backends share: the tables whose columns are the same in SQLite and
//! PostgreSQL (operations, merchants, attempts, watches, polls, the delivery stats) are read by
//! one set of functions over [`Cells`], which each backend implements for its driver's row.
//! Events and deliveries are mapped per backend: their SQLite rows differ (see
//! `migrations/README.md`).

use crate::seal::Sealer;
use crate::{MerchantDeliveryStats, StoreError};
use payhook_core::model::{
    Attempt, AttemptOutcome, ErrorKind, Merchant, MerchantState, Operation, Poll, PollOutcome,
    Watch, WatchState,
};
use payhook_core::signing::SigningSecret;
use payhook_core::status::UnknownStatus;
use payhook_core::status_source::StatusSource;
use payhook_core::Timestamp;
use serde::de::DeserializeOwned;
use std::str::FromStr;

/// One result row, read by column index, whatever the driver.
pub(crate) trait Cells {
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// A JSON column (`json` on PostgreSQL, text on SQLite).
    fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, StoreError>;
    fn opt_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>, StoreError>;

    /// A text column parsed into `T` (an id, a dialect, a status).
    fn parsed<T: FromStr>(&self, i: usize) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        let s = self.text(i)?;
        s.parse().map_err(|e| bad_data(format!("column {i}: {e}")))
    }

    /// A counter column (`attempts.number`, `watches.polls`).
    fn count(&self, i: usize) -> Result<u32, StoreError> {
        u32::try_from(self.int(i)?).map_err(bad_data)
    }
}

pub(crate) fn bad_data(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("unexpected data in the database: {what}"))
}

pub(crate) fn parse_id<T: FromStr>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Backend("malformed id in the database".into()))
}

/// The operation's status source, parsed (the API validated it at registration).
pub(crate) fn status_source_of(op: &Operation) -> Result<Option<StatusSource>, StoreError> {
    op.callback
        .status_source
        .as_ref()
        .map(|v| StatusSource::from_json(v).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
}

pub(crate) const OPERATION_COLUMNS: &str = "id, number, merchant_id, external_id, amount, \
    currency, kind, status, seq, callback, data, created_at, updated_at, request_hash";

/// `SELECT {OPERATION_COLUMNS}`: the operation and its registration's request hash.
pub(crate) fn operation_from(r: &impl Cells) -> Result<(Operation, String), StoreError> {
    let op = Operation {
        id: r.parsed(0)?,
        number: r.int(1)?,
        merchant_id: r.parsed(2)?,
        external_id: r.text(3)?,
        amount: r.int(4)?,
        currency: r.text(5)?,
        kind: r.text(6)?,
        status: r.parsed(7)?,
        seq: r.int(8)?,
        callback: r.json(9)?,
        data: r.json(10)?,
        created_at: Timestamp(r.int(11)?),
        updated_at: Timestamp(r.int(12)?),
    };
    Ok((op, r.text(13)?))
}

pub(crate) const MERCHANT_COLUMNS: &str = "id, name, dialect, callback_url, \
    allowed_callback_urls, retry, encryption_key, settings, signing_secret, previous_secret, \
    previous_expires_at, created_at, updated_at, state";

/// The merchant columns that hold secrets, sealed with the master key: the signing secret,
/// the previous one, and the encryption key (JSON text before sealing).
pub(crate) const SEALED_MERCHANT_COLUMNS: [&str; 3] =
    ["signing_secret", "previous_secret", "encryption_key"];

fn unseal(sealer: &Sealer, sealed: &str) -> Result<String, StoreError> {
    sealer.open(sealed).map_err(|e| StoreError::Backend(format!("opening a sealed secret: {e}")))
}

fn secret(sealer: &Sealer, sealed: &str) -> Result<SigningSecret, StoreError> {
    SigningSecret::parse(&unseal(sealer, sealed)?).map_err(|_| bad_data("signing secret"))
}

/// `SELECT {MERCHANT_COLUMNS}`, secrets opened with `sealer`.
pub(crate) fn merchant_from(sealer: &Sealer, r: &impl Cells) -> Result<Merchant, StoreError> {
    let previous = match (r.opt_text(9)?, r.opt_int(10)?) {
        (Some(s), Some(exp)) => Some((secret(sealer, &s)?, Timestamp(exp))),
        _ => None,
    };
    let encryption_key = r
        .opt_text(6)?
        .map(|s| serde_json::from_str(&unseal(sealer, &s)?).map_err(bad_data))
        .transpose()?;
    Ok(Merchant {
        id: r.parsed(0)?,
        name: r.text(1)?,
        dialect: r.parsed(2)?,
        callback_url: r.opt_text(3)?,
        allowed_callback_urls: r.json(4)?,
        retry: r.opt_json(5)?,
        encryption_key,
        settings: r.json(7)?,
        signing_secret: secret(sealer, &r.text(8)?)?,
        previous_secret: previous,
        created_at: Timestamp(r.int(11)?),
        updated_at: Timestamp(r.int(12)?),
        state: {
            let state = r.text(13)?;
            known(MerchantState::parse(&state), state)?
        },
    })
}

pub(crate) const ATTEMPT_COLUMNS: &str = "delivery_id, number, started_at, duration_ms, \
    request, response_status, response_body, outcome, error_kind, error";

fn http_status(r: &impl Cells, i: usize) -> Result<Option<u16>, StoreError> {
    r.opt_int(i)?.map(u16::try_from).transpose().map_err(bad_data)
}

fn known<T>(parsed: Option<T>, text: String) -> Result<T, StoreError> {
    parsed.ok_or_else(|| bad_data(UnknownStatus(text)))
}

/// `SELECT {ATTEMPT_COLUMNS}`.
pub(crate) fn attempt_from(r: &impl Cells) -> Result<Attempt, StoreError> {
    let outcome = r.text(7)?;
    Ok(Attempt {
        delivery_id: r.parsed(0)?,
        number: r.count(1)?,
        started_at: Timestamp(r.int(2)?),
        duration_ms: r.int(3)?,
        request: r.text(4)?,
        response_status: http_status(r, 5)?,
        response_body: r.opt_text(6)?,
        outcome: known(AttemptOutcome::parse(&outcome), outcome)?,
        error_kind: r.opt_text(8)?.as_deref().and_then(ErrorKind::parse),
        error: r.opt_text(9)?,
    })
}

pub(crate) const WATCH_COLUMNS: &str =
    "operation_id, merchant_id, source, polls, next_poll_at, state, created_at, updated_at";

/// `SELECT {WATCH_COLUMNS}`.
pub(crate) fn watch_from(r: &impl Cells) -> Result<Watch, StoreError> {
    let source: serde_json::Value = r.json(2)?;
    let state = r.text(5)?;
    Ok(Watch {
        operation_id: r.parsed(0)?,
        merchant_id: r.parsed(1)?,
        source: StatusSource::from_json(&source).map_err(bad_data)?,
        polls: r.count(3)?,
        next_poll_at: r.opt_int(4)?.map(Timestamp),
        state: known(WatchState::parse(&state), state)?,
        created_at: Timestamp(r.int(6)?),
        updated_at: Timestamp(r.int(7)?),
    })
}

pub(crate) const POLL_COLUMNS: &str = "operation_id, number, started_at, duration_ms, request, \
    response_status, response_body, read_value, mapped_status, outcome, error_kind, error";

/// `SELECT {POLL_COLUMNS}`.
pub(crate) fn poll_from(r: &impl Cells) -> Result<Poll, StoreError> {
    let outcome = r.text(9)?;
    Ok(Poll {
        operation_id: r.parsed(0)?,
        number: r.count(1)?,
        started_at: Timestamp(r.int(2)?),
        duration_ms: r.int(3)?,
        request: r.text(4)?,
        response_status: http_status(r, 5)?,
        response_body: r.opt_text(6)?,
        read: r.opt_text(7)?,
        mapped: r.opt_text(8)?.as_deref().and_then(|m| m.parse().ok()),
        outcome: known(PollOutcome::parse(&outcome), outcome)?,
        error_kind: r.opt_text(10)?.as_deref().and_then(ErrorKind::parse),
        error: r.opt_text(11)?,
    })
}

/// Every merchant with its deliveries counted by state, in creation order (the same SQL on
/// both backends).
pub(crate) const DELIVERY_STATS: &str = "
    SELECT m.id, m.name,
      CAST(COALESCE(SUM(CASE WHEN d.state = 'delivered' THEN 1 ELSE 0 END), 0) AS BIGINT),
      CAST(COALESCE(SUM(CASE WHEN d.state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT),
      CAST(COALESCE(SUM(CASE WHEN d.state = 'exhausted' THEN 1 ELSE 0 END), 0) AS BIGINT),
      CAST(COALESCE(SUM(CASE WHEN d.state = 'cancelled' THEN 1 ELSE 0 END), 0) AS BIGINT),
      CAST(COALESCE(SUM(CASE WHEN d.state = 'superseded' THEN 1 ELSE 0 END), 0) AS BIGINT),
      MIN(CASE WHEN d.state = 'pending' THEN d.created_at END)
    FROM merchants m LEFT JOIN deliveries d ON d.merchant_id = m.id
    GROUP BY m.id, m.name, m.created_at
    ORDER BY m.created_at, m.id";

/// A row of [`DELIVERY_STATS`].
pub(crate) fn stats_from(r: &impl Cells) -> Result<MerchantDeliveryStats, StoreError> {
    let count = |i: usize| r.int(i).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(MerchantDeliveryStats {
        merchant_id: r.parsed(0)?,
        merchant_name: r.text(1)?,
        delivered: count(2)?,
        pending: count(3)?,
        exhausted: count(4)?,
        cancelled: count(5)?,
        superseded: count(6)?,
        oldest_pending_at: r.opt_int(7)?.map(Timestamp),
    })
}

/// The pending backlog of the whole installation, the same SQL on both backends.
pub(crate) const PENDING_SUMMARY: &str =
    "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'pending'";

/// When the earliest pending delivery no node holds falls due, its merchant not in state
/// `$1` (`lifecycle::merchant::HOLDS_DELIVERIES`; `$1` is also SQLite's first parameter).
/// `ORDER BY … LIMIT 1` walks `deliveries_due` and stops at the first match.
pub(crate) const NEXT_DUE: &str = "SELECT d.next_attempt_at FROM deliveries d
    WHERE d.state = 'pending' AND d.lease_until IS NULL
      AND NOT EXISTS (SELECT 1 FROM merchants m WHERE m.id = d.merchant_id AND m.state = $1)
    ORDER BY d.next_attempt_at LIMIT 1";

/// When the earliest active watch is due.
pub(crate) const NEXT_POLL: &str = "SELECT MIN(next_poll_at) FROM watches WHERE state = 'active'";
