//! The OpenAPI 3 document (`GET /openapi.json`), generated from the handlers' `#[utoipa::path]`
//! annotations and the request and response types below. The router is built from the same
//! annotations (`utoipa_axum::routes!`), so a route cannot exist without its documentation;
//! tests keep the committed `docs/openapi.json` equal to the generated one and the response
//! shapes here equal to what [`crate::views`] produces.

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payhook",
        description = "Durable payment-callback delivery: register operations, report status \
                       changes, and follow every callback attempt. Authenticate with \
                       `Authorization: Bearer <admin token or merchant pk_… key>`."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "merchants", description = "Tenants and their secrets (admin only)"),
        (name = "operations", description = "Payment operations and their status changes"),
        (name = "deliveries", description = "Callbacks owed and every attempt"),
        (name = "events", description = "The reconciliation feed"),
        (name = "ops", description = "Health and this document")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every error: `{"error":{"code","message","field?"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, snake_case (e.g. `invalid_currency`, `rate_limited`).
    pub code: String,
    pub message: String,
    /// The request field the error is about.
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// The statuses a report may ask for (`created` is registration's own).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportedStatus {
    Pending,
    #[serde(rename = "requires_3ds")]
    Requires3ds,
    Success,
    Failed,
    Expired,
    Reversed,
    Refunded,
}

/// `GET /v1/operations/{id}/return`: where the payer's browser goes (the `Location` too).
#[derive(Serialize, ToSchema)]
pub struct ReturnTarget {
    pub location: String,
}

/// The callback protocols.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DialectName {
    Standard,
    Xpay,
    Ws2mpi,
    Ecom,
    Uapay,
}

/// A merchant as read back: never its secrets.
#[derive(Serialize, ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
    /// `standard`, `xpay`, `ws2mpi`, `ecom` or `uapay`.
    pub dialect: String,
    pub callback_url: Option<String>,
    /// Approved callback URL prefixes; empty: any URL the SSRF guard allows.
    pub allowed_callback_urls: Vec<String>,
    /// The retry policy override, in the `schedule` form.
    #[schema(value_type = Option<Object>)]
    pub retry: Option<serde_json::Value>,
    pub has_encryption_key: bool,
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// While the previous secret still signs beside the new one.
    pub secret_rotation_ends_at: Option<String>,
    /// `active`; `paused`: its callbacks wait; `archived`: no new operations.
    #[schema(value_type = MerchantStateName)]
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A merchant with its destinations' health (`GET /v1/merchants`, `GET /v1/merchants/{id}`).
#[derive(Serialize, ToSchema)]
pub struct MerchantWithHealth {
    #[serde(flatten)]
    pub merchant: MerchantView,
    pub health: MerchantHealth,
}

/// A merchant's health at a glance, worst first: `disabled` (a destination is disabled),
/// `failing` (a destination's last attempt failed), `healthy`, `unknown` (no attempt yet).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStateName {
    Healthy,
    Failing,
    Disabled,
    Unknown,
}

/// A merchant's destinations and their health.
#[derive(Serialize, ToSchema)]
pub struct MerchantHealth {
    pub state: HealthStateName,
    pub destinations: Vec<DestinationHealthView>,
}

/// One callback URL of the merchant: every URL attempted or disabled.
#[derive(Serialize, ToSchema)]
pub struct DestinationHealthView {
    pub url: String,
    pub consecutive_failures: u32,
    /// The first failure of the current run of failures.
    #[schema(format = DateTime)]
    pub failing_since: Option<String>,
    #[schema(format = DateTime)]
    pub last_success_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_failure_at: Option<String>,
    /// Share of attempts that delivered in the last hour (null: none); the hour the window
    /// starts in is weighted by how much of it is inside.
    #[schema(minimum = 0, maximum = 1)]
    pub success_rate_1h: Option<f64>,
    #[schema(minimum = 0, maximum = 1)]
    pub success_rate_24h: Option<f64>,
    /// Disabled by a 410 or by failing for `--disable-after`: later callbacks are cancelled
    /// until the merchant is recovered or patched with `reenable_destinations`.
    pub disabled: bool,
}

/// A merchant's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStateName {
    Active,
    Paused,
    Archived,
}

/// A new merchant: its secrets are shown this once.
#[derive(Serialize, ToSchema)]
pub struct MerchantCreated {
    #[serde(flatten)]
    pub merchant: MerchantView,
    /// `pk_…`: the merchant's first API key (stored hashed).
    pub api_key: String,
    /// `key_…`: that key's id (to revoke it once another replaces it).
    pub api_key_id: String,
    /// `whsec_…`: the signing secret (stored sealed).
    pub signing_secret: String,
}

/// `PATCH /v1/merchants/{id}`: a merge patch (`application/json` or
/// `application/merge-patch+json`); present keys replace, `null` clears, unknown keys are
/// refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantPatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[schema(nullable = false, value_type = Option<DialectName>)]
    pub dialect: Option<String>,
    #[schema(max_length = 2048)]
    pub callback_url: Option<String>,
    pub allowed_callback_urls: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub retry: Option<serde_json::Value>,
    /// A public EC P-384 JWK (ECOM encryption).
    #[schema(value_type = Option<Object>)]
    pub encryption_key: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    /// Lift a 410 disable of the merchant's destinations.
    pub reenable_destinations: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    pub id: String,
    /// The new `whsec_…` secret, shown this once.
    pub signing_secret: String,
    pub previous_secret_expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    /// Positive, unique in the installation, in creation order.
    pub number: i64,
    pub merchant_id: String,
    pub external_id: String,
    /// In minor units.
    pub amount: i64,
    /// ISO 4217, alphabetic or numeric.
    pub currency: String,
    pub kind: String,
    pub status: String,
    pub seq: i64,
    pub dialect: Option<String>,
    pub callback_url: Option<String>,
    pub success_url: Option<String>,
    pub fail_url: Option<String>,
    pub return_url: Option<String>,
    pub encrypt: bool,
    #[schema(value_type = Option<Object>)]
    pub status_source: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub retry: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    /// The cursor in the events feed.
    pub position: i64,
    pub operation_id: String,
    pub merchant_id: String,
    pub seq: i64,
    pub status: String,
    pub previous_status: String,
    pub event_key: Option<String>,
    pub created_at: String,
}

/// A recorded status change: the event, whether it repeated an earlier report, and the
/// delivery it planned (none when the dialect sends nothing for the status).
#[derive(Serialize, ToSchema)]
pub struct EventAccepted {
    #[serde(flatten)]
    pub event: EventView,
    pub duplicate: bool,
    pub delivery_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventFeed {
    pub data: Vec<EventView>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

/// The events of one operation, registration first.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventView>,
}

/// One result of a batch report: `ok` with the event, or the item's own error.
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    pub index: usize,
    pub ok: bool,
    #[schema(nullable = false)]
    pub event: Option<EventAccepted>,
    /// The HTTP status this item alone would have had.
    #[schema(nullable = false)]
    pub status: Option<u16>,
    #[schema(nullable = false)]
    pub error: Option<ErrorDetail>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResults {
    pub results: Vec<BatchResult>,
}

/// A page of operations (the list form of `GET /v1/operations`).
#[derive(Serialize, ToSchema)]
pub struct OperationPage {
    pub data: Vec<OperationView>,
    pub next_after: i64,
}

/// `POST /v1/merchants/{id}/recover`: what was queued again.
#[derive(Serialize, ToSchema)]
pub struct Recovered {
    pub queued: u64,
}

/// One of a merchant's API keys (never the key itself).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    /// `key_…`
    pub id: String,
    /// The key's first nine characters (`pk_` and six more); `pk_` alone for a key made
    /// before keys had ids, until its next use.
    pub prefix: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The start of the hour the key was last used in; null if never used since it was made
    /// or since payhook began recording use.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

/// A new API key: the key is shown this once.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// `pk_…` (stored hashed).
    pub key: String,
}

/// `GET /v1/merchants/{id}/keys`.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
}

/// An entry of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditRecordView {
    pub position: i64,
    #[schema(format = DateTime)]
    pub at: String,
    /// `admin` or `merchant` (the merchant's own key).
    pub actor: String,
    /// `merchant.paused`, `merchant.resumed`, `merchant.archived`, `merchant.recovered`,
    /// `key.created` or `key.revoked`.
    pub action: String,
    pub merchant_id: String,
    /// What the action was about: `{"key_id"}` for keys, `{"since"}` for a recovery.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// `GET /v1/audit`: a page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditRecordView>,
    /// The cursor for the next page (the last position, or `after` when empty).
    pub next_after: i64,
}

/// `GET /v1/merchants`: a page of merchants.
#[derive(Serialize, ToSchema)]
pub struct MerchantPage {
    pub data: Vec<MerchantWithHealth>,
    /// Pass as `after` for the next page: the last merchant's id (the request's `after`, or
    /// null, when the page is empty).
    pub next_after: Option<String>,
}

/// `GET /v1/operations`: with `external_id`, the one operation with that order id; without,
/// a page of operations. Two shapes, told apart by `data`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OperationOrPage {
    Found(Box<OperationView>),
    Page(OperationPage),
}

/// Delivery health of one merchant.
#[derive(Serialize, ToSchema)]
pub struct MerchantDeliveryStatsView {
    pub merchant_id: String,
    pub merchant_name: String,
    pub delivered: i64,
    pub pending: i64,
    pub exhausted: i64,
    pub cancelled: i64,
    pub superseded: i64,
    /// delivered ÷ (delivered + exhausted + cancelled); null before any delivery ended.
    pub success_rate: Option<f64>,
    pub oldest_pending_at: Option<String>,
    pub oldest_pending_age_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryStats {
    pub data: Vec<MerchantDeliveryStatsView>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub number: u32,
    pub started_at: String,
    pub duration_ms: i64,
    /// Method and URL.
    pub request: String,
    pub response_status: Option<u16>,
    /// The first 4 KiB of the answer.
    pub response_body: Option<String>,
    /// `delivered`, `retry` or `permanent`.
    pub outcome: String,
    /// `dns`, `connect`, `tls`, `timeout`, `http_status`, `ack_rejected`, `blocked_target`, …
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// The idempotency key of every attempt (`webhook-id`).
    pub id: String,
    pub event_id: String,
    pub operation_id: String,
    pub merchant_id: String,
    pub seq: i64,
    pub dialect: String,
    /// `status` or `poll_timeout`.
    pub kind: String,
    pub url: String,
    /// `pending`, `delivered`, `exhausted`, `superseded` or `cancelled`.
    pub state: String,
    pub attempt_count: u32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Present in the per-operation listing.
    #[schema(nullable = false)]
    pub attempts: Option<Vec<AttemptView>>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
}

#[derive(Serialize, ToSchema)]
pub struct PollView {
    pub number: u32,
    pub started_at: String,
    pub duration_ms: i64,
    pub request: String,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    /// The value found at the status pointer.
    pub read: Option<String>,
    pub mapped_status: Option<String>,
    /// `unchanged`, `changed` or `failed`.
    pub outcome: String,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WatchView {
    pub operation_id: String,
    /// `active`, `finished` or `exhausted`.
    pub state: String,
    pub polls_made: u32,
    pub poll_budget: usize,
    pub next_poll_at: Option<String>,
    #[schema(value_type = Object)]
    pub source: serde_json::Value,
    pub data: Vec<PollView>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// Makes the generated document exact where the annotations cannot say it: each error
/// response refers to the schema of its status, whose `code` is the enum of the codes that
/// status carries ([`crate::error::CODES`]).
pub fn refine(doc: &mut Value) {
    body_refusals(doc);
    for (status, codes) in crate::error::CODES {
        doc["components"]["schemas"][format!("Error{status}")] = error_schema(codes);
    }
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for operation in
        paths.values_mut().filter_map(Value::as_object_mut).flat_map(|i| i.values_mut())
    {
        let Some(responses) = operation["responses"].as_object_mut() else { continue };
        for (status, response) in responses.iter_mut() {
            // Not `response["content"]…`: indexing a Value mutably inserts what is missing,
            // and a bodiless 204 would gain a JSON body of no schema.
            let Some(schema) = response.pointer_mut("/content/application~1json/schema") else {
                continue;
            };
            if schema["$ref"] == "#/components/schemas/ErrorBody" {
                *schema = json!({"$ref": format!("#/components/schemas/Error{status}")});
            }
        }
    }
}

/// Every operation that takes a JSON body can refuse it as the body parser does: 400
/// (malformed, too deep, a key twice), 413 (over 64 KiB), 415 (not JSON).
fn body_refusals(doc: &mut Value) {
    let refusals = [
        ("400", "Malformed body, nested too deep, or a key twice (duplicate_key)"),
        ("413", "Body over 64 KiB"),
        ("415", "Not application/json (PATCH also takes application/merge-patch+json)"),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for operation in
        paths.values_mut().filter_map(Value::as_object_mut).flat_map(|i| i.values_mut())
    {
        if operation.get("requestBody").is_none() {
            continue;
        }
        for (status, description) in refusals {
            let response = &mut operation["responses"][status];
            if response.is_null() {
                *response = json!({
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                });
            }
        }
    }
}

/// `{"error":{"code","message","field?"}}` with `code` one of `codes`.
fn error_schema(codes: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": false,
            "properties": {
                "code": {"type": "string", "enum": codes},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The request field the error is about."}
            }
        }}
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn serve() -> axum::Json<serde_json::Value> {
    axum::Json(crate::openapi_value())
}

#[cfg(test)]
mod tests {
    /// The committed `docs/openapi.json` is the generated document. Regenerate it with
    /// `UPDATE_OPENAPI=1 cargo test -p payhook-api openapi`.
    #[test]
    fn the_committed_openapi_json_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = serde_json::to_string_pretty(&crate::openapi_value())
            .expect("the document serializes")
            + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p payhook-api openapi`"
        );
    }

    /// OpenAPI wants each operationId once in the document; client generators name their
    /// functions after them, and a repeat made one shadow the other.
    #[test]
    fn every_operation_id_is_unique() {
        let doc = crate::openapi_value();
        let mut seen = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                let id = op["operationId"].as_str().expect("an operationId");
                assert!(seen.insert(id.to_owned()), "{method} {path}: operationId {id} again");
            }
        }
    }

    #[test]
    fn every_operation_is_documented_with_its_errors() {
        let doc = crate::openapi_value();
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 14, "{:?}", paths.keys());
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path}");
                let protected = op.get("security").is_some();
                assert_eq!(
                    protected,
                    responses.contains_key("401"),
                    "{method} {path}: 401 iff auth"
                );
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
