//! `/openapi.json` against the running API: served publicly, every documented operation is
//! routed, the access matrix covers exactly the documented operations, and real responses
//! have exactly the documented fields.

use crate::helpers::*;
use crate::security::endpoints;
use serde_json::{json, Value};
use std::collections::BTreeSet;

async fn document(app: &TestApp) -> Value {
    let r = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    r.body
}

/// `(METHOD, /path/{id})` of every documented operation.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_and_every_operation_is_routed() {
    let app = spawn_app(Mode::Manual).await;
    let doc = document(&app).await;
    assert_eq!(doc, payhook_api::openapi_value());
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for (method, path) in operations(&doc) {
        let concrete = path.replace("{id}", "zz_missing");
        let body = (method != "GET").then(|| json!({}));
        let r = app.admin(&method, &concrete, body).await;
        assert_ne!(r.status, 405, "{method} {path}");
        assert_ne!(r.body["error"]["message"], "no such route", "{method} {path} is not routed");
    }
    let r = app.admin("GET", "/v1/not-a-route", None).await;
    assert_eq!(r.body["error"]["message"], "no such route", "the check can fail");
}

#[tokio::test]
async fn the_access_matrix_covers_exactly_the_documented_operations() {
    let app = spawn_app(Mode::Manual).await;
    let documented = operations(&document(&app).await);
    let matrix: BTreeSet<(String, String)> = endpoints()
        .iter()
        .map(|e| {
            let path = e.path.split('?').next().expect("path");
            let path =
                path.replace("{mer}", "{id}").replace("{op}", "{id}").replace("{dlv}", "{id}");
            (e.method.to_owned(), path)
        })
        .collect();
    assert_eq!(matrix, documented);
}

/// The property names of a component schema, following `allOf` and `$ref`.
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().expect("ref name");
        return properties(doc, &doc["components"]["schemas"][name]);
    }
    let mut out: BTreeSet<String> =
        schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(properties(doc, part));
    }
    out
}

/// `value` has the fields `schema` documents (optional ones may be left out).
fn conforms(doc: &Value, name: &str, value: &Value) {
    let schema = json!({"$ref": format!("#/components/schemas/{name}")});
    let documented = properties(doc, &schema);
    let actual: BTreeSet<String> = value.as_object().expect("an object").keys().cloned().collect();
    let undocumented: Vec<_> = actual.difference(&documented).collect();
    assert!(undocumented.is_empty(), "{name}: undocumented fields {undocumented:?} in {value}");
    let missing: Vec<_> = documented
        .difference(&actual)
        .filter(|f| !matches!(f.as_str(), "field" | "attempts"))
        .collect();
    assert!(missing.is_empty(), "{name}: documented but absent {missing:?} in {value}");
}

#[tokio::test]
async fn responses_have_exactly_the_documented_fields() {
    let app = spawn_app(Mode::Manual).await;
    let doc = document(&app).await;
    let created = app
        .merchant(json!({"name": "Shop", "dialect": "ws2mpi",
        "callback_url": "https://shop.example/cb"}))
        .await;
    conforms(&doc, "MerchantCreated", &created);
    let mid = created["id"].as_str().expect("id");
    let read = app.admin("GET", &format!("/v1/merchants/{mid}"), None).await;
    conforms(&doc, "MerchantWithHealth", &read.body);
    let rotated = app.admin("POST", &format!("/v1/merchants/{mid}/rotate-secret"), None).await;
    conforms(&doc, "RotatedSecret", &rotated.body);
    let op = app
        .operation(mid, "doc-1", json!({"status_source": {"url": "https://shop.example/s"}}))
        .await;
    conforms(&doc, "OperationView", &op);
    let oid = op["id"].as_str().expect("id");
    let accepted = app.report(oid, "success").await;
    conforms(&doc, "EventAccepted", &accepted.body);
    let list = app.admin("GET", &format!("/v1/operations/{oid}/deliveries"), None).await;
    conforms(&doc, "DeliveryList", &list.body);
    conforms(&doc, "DeliveryView", &list.body["data"][0]);
    let resent = app
        .admin(
            "POST",
            &format!("/v1/deliveries/{}/resend", list.body["data"][0]["id"].as_str().expect("id")),
            None,
        )
        .await;
    conforms(&doc, "DeliveryView", &resent.body);
    let feed = app.admin("GET", &format!("/v1/events?merchant_id={mid}"), None).await;
    conforms(&doc, "EventFeed", &feed.body);
    conforms(&doc, "EventView", &feed.body["data"][0]);
    let watch = app.admin("GET", &format!("/v1/operations/{oid}/polls"), None).await;
    conforms(&doc, "WatchView", &watch.body);
    let error = app.admin("GET", "/v1/operations/op_missing", None).await;
    conforms(&doc, "ErrorBody", &error.body);
    conforms(&doc, "ErrorDetail", &error.body["error"]);
    conforms(&doc, "Health", &app.call("GET", "/healthz", None, None).await.body);
}
