//! `/v1/operations`: register (idempotent), report status, read, find, and the customer's
//! return redirect.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::merchants::{parse_dialect, parse_retry};
use crate::{validate, views, AppState};
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payhook_core::ids::{MerchantId, OperationId};
use payhook_core::lifecycle::{self, NoReturn};
use payhook_core::model::{CallbackSettings, Merchant, Operation};
use payhook_core::status::Status;
use payhook_core::status_source::StatusSource;
use payhook_core::target::TargetPolicy;
use payhook_store::{NewOperation, Registered, StatusReport};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/operations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterOperation {
    #[schema(min_length = 1, max_length = 36)]
    merchant_id: String,
    /// The merchant's order id (ws2mpi: at most 32 characters).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    external_id: String,
    /// In minor units (an integral number: `130.0` is 130).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "validate::integral")]
    amount: i64,
    /// ISO 4217, alphabetic (`UAH`) or numeric (`980`).
    #[schema(min_length = 3, max_length = 3)]
    currency: String,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    kind: String,
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::DialectName>)]
    dialect: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    success_url: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    fail_url: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    return_url: Option<String>,
    #[serde(default)]
    encrypt: bool,
    /// Where the re-poll watchdog asks for the status (see docs/watchdog.md).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    status_source: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    retry: Option<Value>,
    /// Provider fields the dialects copy (rrn, approvalCode, …).
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Map<String, Value>,
}

/// Keys sorted at every level, so the fingerprint ignores key order and whitespace.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn fingerprint(v: &Value) -> String {
    let bytes = serde_json::to_vec(&canonical(v)).expect("JSON values serialize");
    format!("{:x}", Sha256::digest(bytes))
}

async fn merchant_of(state: &AppState, id: &str) -> Result<Merchant, ApiError> {
    let unknown = || ApiError::invalid("unknown_merchant", "merchant_id", "no such merchant");
    let id: MerchantId = id.parse().map_err(|_| unknown())?;
    state.store.get_merchant(&id).await?.ok_or_else(unknown)
}

/// The fields' shapes, and that payhook may call the URLs it will call (`return_url` is the
/// payer's browser's, never called by payhook).
fn check_fields(body: &RegisterOperation, targets: &TargetPolicy) -> Result<(), ApiError> {
    validate::text("external_id", &body.external_id, validate::MAX_EXTERNAL_ID)?;
    validate::text("kind", &body.kind, validate::MAX_KIND)?;
    validate::amount(body.amount)?;
    validate::currency(&body.currency)?;
    validate::opt_target_url(targets, "callback_url", &body.callback_url)?;
    validate::opt_target_url(targets, "success_url", &body.success_url)?;
    validate::opt_target_url(targets, "fail_url", &body.fail_url)?;
    validate::opt_url("return_url", &body.return_url)?;
    validate::data("data", &body.data)?;
    if let Some(source) = &body.status_source {
        let source = StatusSource::from_json(source).map_err(|e| {
            ApiError::invalid("invalid_status_source", "status_source", e.to_string())
        })?;
        validate::opt_target_url(targets, "status_source", &Some(source.url))?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/operations", tag = "operations", security(("bearer" = [])),
    request_body = RegisterOperation,
    responses(
        (status = 201, description = "Registered", body = crate::openapi::OperationView),
        (status = 200, description = "Already registered with the same body", body = crate::openapi::OperationView),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 409, description = "Conflict", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Semantically invalid", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The disk is full: nothing was stored (`storage_full`); or the database cannot be reached (`store_unavailable`). Send it again after Retry-After", body = crate::openapi::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Json(raw): Json<Value>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    caller.require_admin()?;
    let request_hash = fingerprint(&raw);
    let body: RegisterOperation =
        serde_json::from_value(raw).map_err(|e| ApiError::malformed(e.to_string()))?;
    check_fields(&body, &state.targets)?;
    let merchant = merchant_of(&state, &body.merchant_id).await?;
    let dialect = body.dialect.as_deref().map(|d| parse_dialect("dialect", d)).transpose()?;
    let callback = CallbackSettings {
        dialect,
        callback_url: body.callback_url,
        success_url: body.success_url,
        fail_url: body.fail_url,
        return_url: body.return_url,
        encrypt: body.encrypt,
        status_source: body.status_source,
        retry: body.retry.as_ref().map(|v| parse_retry("retry", v)).transpose()?,
    };
    lifecycle::accepts_operations(&merchant)?;
    let effective = dialect.unwrap_or(merchant.dialect);
    lifecycle::check_operation(&merchant, effective, &callback, &body.external_id)?;
    let new = NewOperation {
        merchant_id: merchant.id.clone(),
        external_id: body.external_id,
        amount: body.amount,
        currency: body.currency,
        kind: body.kind,
        callback,
        data: body.data,
        request_hash,
    };
    match state.store.register_operation(new, state.clock.now()).await? {
        Registered::Created(op) => {
            tracing::Span::current().record("operation_id", op.id.as_str());
            Ok((StatusCode::CREATED, axum::Json(views::operation(&op, Some(&merchant)))))
        }
        Registered::Existing(op) => {
            Ok((StatusCode::OK, axum::Json(views::operation(&op, Some(&merchant)))))
        }
        Registered::Conflict(op) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "external_id_conflict",
            format!("external_id is already registered as {} with a different body", op.id),
        )
        .on("external_id")),
    }
}

/// Loads an operation the caller may see.
pub(crate) async fn visible_operation(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Operation, ApiError> {
    let id: OperationId = id.parse().map_err(|_| ApiError::not_found("operation"))?;
    let op =
        state.store.get_operation(&id).await?.ok_or_else(|| ApiError::not_found("operation"))?;
    caller.require_access(&op.merchant_id)?;
    Ok(op)
}

async fn operation_view(state: &AppState, op: &Operation) -> Result<Value, ApiError> {
    let merchant = state.store.get_merchant(&op.merchant_id).await?;
    Ok(views::operation(op, merchant.as_ref()))
}

#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", operation_id = "read_operation", security(("bearer" = [])),
    params(("id" = String, Path, description = "Operation id (op_…)")),
    responses(
        (status = 200, description = "The operation's current state", body = crate::openapi::OperationView),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let op = visible_operation(&state, &caller, &id).await?;
    Ok(axum::Json(operation_view(&state, &op).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// Required for the admin; a merchant may leave out its own.
    merchant_id: Option<String>,
    /// Finds the one operation with this order id (`merchant_id` then required, also for a
    /// merchant); without it, the answer is a page.
    external_id: Option<String>,
    /// A page's `next_after`; 0 from the start.
    #[serde(default)]
    #[param(minimum = 0)]
    after: i64,
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /v1/operations?merchant_id=&external_id=` finds one operation by the merchant's order
/// id; without `external_id` it lists operations in creation order by cursor
/// (`?merchant_id=&after=&limit=`): a merchant sees its own, the admin any merchant's or all.
#[utoipa::path(get, path = "/v1/operations", tag = "operations", security(("bearer" = [])),
    params(FindQuery),
    responses(
        (status = 200, description = "With external_id: the operation with this order id. Without: a page of operations, {\"data\":[…],\"next_after\":N}", body = crate::openapi::OperationOrPage),
        (status = 400, description = "Malformed query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found (also: external_id without merchant_id, for the admin)", body = crate::openapi::ErrorBody),
        (status = 422, description = "limit outside 1..=1000 or after below 0", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn find_or_list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FindQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let merchant: Option<MerchantId> = match (&caller, q.merchant_id.as_deref()) {
        (_, Some(m)) => Some(m.parse().map_err(|_| ApiError::not_found("operation"))?),
        (Caller::Merchant(own), None) => Some(own.clone()),
        (Caller::Admin, None) => None,
    };
    if let Some(m) = &merchant {
        caller.require_access(m)?;
    }
    match (&q.external_id, merchant) {
        (Some(external_id), Some(m)) => find(&state, &m, external_id).await,
        // An order id names an operation only within a merchant: with none given, none is found.
        (Some(_), None) => {
            Err(ApiError::not_found("operation (give merchant_id to find by external_id)"))
        }
        (None, m) => list(&state, m.as_ref(), q.after, q.limit).await,
    }
}

async fn find(
    state: &AppState,
    merchant: &MerchantId,
    external_id: &str,
) -> Result<axum::Json<Value>, ApiError> {
    let op = state
        .store
        .find_operation(merchant, external_id)
        .await?
        .ok_or_else(|| ApiError::not_found("operation"))?;
    Ok(axum::Json(operation_view(state, &op).await?))
}

async fn list(
    state: &AppState,
    merchant: Option<&MerchantId>,
    after: i64,
    limit: Option<u32>,
) -> Result<axum::Json<Value>, ApiError> {
    let (default, max) = (crate::events::DEFAULT_LIMIT, crate::events::MAX_LIMIT);
    let limit = validate::page(after, limit, default, max)?;
    let ops = state.store.list_operations(merchant, after, limit).await?;
    let mut merchants: HashMap<MerchantId, Option<Merchant>> = HashMap::new();
    let mut data = Vec::with_capacity(ops.len());
    for op in &ops {
        if !merchants.contains_key(&op.merchant_id) {
            let m = state.store.get_merchant(&op.merchant_id).await?;
            merchants.insert(op.merchant_id.clone(), m);
        }
        data.push(views::operation(op, merchants[&op.merchant_id].as_ref()));
    }
    let next_after = ops.last().map_or(after, |op| op.number);
    Ok(axum::Json(json!({ "data": data, "next_after": next_after })))
}

/// `GET /v1/operations/{id}/events`: the operation's status changes, registration first.
#[utoipa::path(get, path = "/v1/operations/{id}/events", tag = "operations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Operation id (op_…)")),
    responses(
        (status = 200, description = "The operation's events", body = crate::openapi::EventList),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let op = visible_operation(&state, &caller, &id).await?;
    let events = state.store.operation_events(&op.id).await?;
    let data: Vec<Value> = events.iter().map(views::event).collect();
    Ok(axum::Json(json!({ "data": data })))
}

/// `POST /v1/operations/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    #[schema(value_type = crate::openapi::ReportedStatus)]
    status: String,
    /// Merged into the operation's data.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Map<String, Value>,
    /// Idempotency: the same status with the same key is recorded once.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    event_key: Option<String>,
}

/// Records a status change durably, then answers 202: the callback follows.
#[utoipa::path(post, path = "/v1/operations/{id}/status", tag = "operations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Operation id (op_…)")),
    request_body = ReportBody,
    responses(
        (status = 202, description = "Recorded durably; the callback follows", body = crate::openapi::EventAccepted),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "Conflict", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Semantically invalid", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The disk is full: nothing was stored (`storage_full`); or the database cannot be reached (`store_unavailable`). Send it again after Retry-After", body = crate::openapi::ErrorBody)))]
pub async fn report_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ReportBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let reported = apply_report(&state, &id, body).await?;
    views::json(StatusCode::ACCEPTED, &views::Reported::of(&reported))
}

/// Validates and stores one report.
async fn apply_report(
    state: &AppState,
    id: &str,
    body: ReportBody,
) -> Result<payhook_store::Reported, ApiError> {
    let report = parse_report(id, body)?;
    let reported =
        state.store.report_status(report, state.clock.now()).await.map_err(store_error)?;
    if let Some(d) = &reported.delivery {
        tracing::Span::current().record("delivery_id", d.id.as_str());
        if !reported.handed_off {
            state.wake_dispatcher(); // left for a claim
        }
    }
    Ok(reported)
}

/// A report checked at the edge.
fn parse_report(id: &str, body: ReportBody) -> Result<StatusReport, ApiError> {
    let operation_id: OperationId = id.parse().map_err(|_| ApiError::not_found("operation"))?;
    let status: Status =
        body.status.parse().map_err(|e: payhook_core::status::UnknownStatus| {
            ApiError::invalid("unknown_status", "status", e.to_string())
        })?;
    if let Some(key) = &body.event_key {
        validate::text("event_key", key, validate::MAX_EVENT_KEY)?;
    }
    validate::data("data", &body.data)?;
    Ok(StatusReport { operation_id, status, data: body.data, event_key: body.event_key })
}

fn store_error(e: payhook_store::StoreError) -> ApiError {
    match e {
        payhook_store::StoreError::NotFound => ApiError::not_found("operation"),
        other => other.into(),
    }
}

/// The answer of `POST /v1/operations/status:batch`.
#[derive(serde::Serialize)]
struct BatchAnswer<'a> {
    results: Vec<ItemResult<'a>>,
}

/// One item's result in a batch answer.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum ItemResult<'a> {
    Ok { index: usize, ok: bool, event: views::Reported<'a> },
    Err(Value),
}

fn item_error(index: usize, e: &ApiError) -> Value {
    json!({"index": index, "ok": false, "status": e.status.as_u16(), "error": e.body()})
}

/// Items per batch at most.
pub const MAX_BATCH: usize = 1000;

/// One item of `POST /v1/operations/status:batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// Each item is checked on its own: an item that breaks a rule (an unknown operation or
    /// status, a bad `event_key`) gets its own error in the results, and the others go on.
    operation_id: String,
    status: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Map<String, Value>,
    #[serde(default)]
    event_key: Option<String>,
}

/// `POST /v1/operations/status:batch`: 1 to 1000 items.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 1000)]
    items: Vec<BatchItem>,
}

/// `POST /v1/operations/status:batch`: many reports in one request. Each item is all or
/// nothing on its own (its own savepoint) and gets its own result; the store commits the items
/// in one transaction, so a batch costs one durable write.
#[utoipa::path(post, path = "/v1/operations/status:batch", tag = "operations",
    security(("bearer" = [])),
    request_body = BatchBody,
    responses(
        (status = 200, description = "One result per item, in order", body = crate::openapi::BatchResults),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 422, description = "Empty or oversized batch", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The disk is full: nothing was stored (`storage_full`); or the database cannot be reached (`store_unavailable`). Send it again after Retry-After", body = crate::openapi::ErrorBody)))]
pub async fn report_status_batch(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<BatchBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    if body.items.is_empty() || body.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "invalid_batch",
            "items",
            format!("a batch holds 1 to {MAX_BATCH} items"),
        ));
    }
    // Checked one by one first; the valid items then go to the store as one batch.
    let mut errors: Vec<Option<Value>> = vec![None; body.items.len()];
    let mut reports = Vec::new();
    let mut positions = Vec::new();
    for (index, item) in body.items.into_iter().enumerate() {
        let body = ReportBody { status: item.status, data: item.data, event_key: item.event_key };
        match parse_report(&item.operation_id, body) {
            Ok(report) => {
                reports.push(report);
                positions.push(index);
            }
            Err(e) => errors[index] = Some(item_error(index, &e)),
        }
    }
    let outcomes = state.store.report_statuses(reports, state.clock.now()).await?;
    let mut stored = Vec::with_capacity(outcomes.len());
    for (index, outcome) in positions.into_iter().zip(outcomes) {
        match outcome {
            Ok(reported) => stored.push((index, reported)),
            Err(e) => errors[index] = Some(item_error(index, &store_error(e))),
        }
    }
    if stored.iter().any(|(_, r)| r.delivery.is_some() && !r.handed_off) {
        state.wake_dispatcher(); // some were left for a claim
    }
    // Items in their order: the stored ones (in order among themselves) fill the gaps.
    let mut stored = stored.iter().peekable();
    let results: Vec<ItemResult<'_>> = errors
        .into_iter()
        .enumerate()
        .map(|(index, error)| match error {
            Some(e) => ItemResult::Err(e),
            None => match stored.next_if(|(i, _)| *i == index) {
                Some((_, r)) => ItemResult::Ok { index, ok: true, event: views::Reported::of(r) },
                None => ItemResult::Err(item_error(index, &ApiError::internal("item lost"))),
            },
        })
        .collect();
    views::json(StatusCode::OK, &BatchAnswer { results })
}

/// The customer's browser comes back here (XPAY's CallbackURL): 303 to `return_url` once the
/// operation has a final status.
#[utoipa::path(get, path = "/v1/operations/{id}/return", tag = "operations",
    params(("id" = String, Path, description = "Operation id (op_…)")),
    responses(
        (status = 303, description = "Redirect to the operation's return_url (also in the body)", body = crate::openapi::ReturnTarget,
            headers(("location" = String, description = "The operation's return_url"))),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "Conflict", body = crate::openapi::ErrorBody)))]
pub async fn client_return(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: OperationId = id.parse().map_err(|_| ApiError::not_found("operation"))?;
    let op =
        state.store.get_operation(&id).await?.ok_or_else(|| ApiError::not_found("operation"))?;
    let url = lifecycle::return_target(&op).map_err(|no| match no {
        NoReturn::NoUrl => {
            ApiError::new(StatusCode::NOT_FOUND, "no_return_url", "the operation has no return_url")
        }
        NoReturn::NotFinal => ApiError::new(
            StatusCode::CONFLICT,
            "not_final",
            "the operation has no final status yet",
        ),
    })?;
    let body = axum::Json(json!({ "location": url }));
    Ok((StatusCode::SEE_OTHER, [(LOCATION, url.to_owned())], body).into_response())
}

/// `GET /v1/operations/{id}/polls`: the re-poll watch and every poll it made.
#[utoipa::path(get, path = "/v1/operations/{id}/polls", tag = "operations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Operation id (op_…)")),
    responses(
        (status = 200, description = "The re-poll watch and every poll", body = crate::openapi::WatchView),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn polls(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let op = visible_operation(&state, &caller, &id).await?;
    let Some((watch, polls)) = state.store.watch_of(&op.id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_watch",
            "the operation has no status_source",
        ));
    };
    Ok(axum::Json(views::watch(&watch, &polls)))
}
