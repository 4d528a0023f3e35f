//! No secret ever reaches payhook's output: a real `payhook serve` process with
//! `PAYHOOK_LOG=debug` and JSON logs runs a full scenario — merchants of several dialects
//! created, a secret rotated, callbacks delivered (ECOM encrypted, UAPAY signed, a failure and
//! a retry), merchant keys used — and everything it printed is searched for every secret.

use crate::helpers::*;
use base64::Engine;
use josekit::jwk::{alg::ec::EcCurve, Jwk};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOG_ADMIN: &str = "adm-log-test-7f3c9e21d4b8a6f0-secret";

struct Process {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Process {
    fn start(dir: &std::path::Path, log_format: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_payhook"))
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-private-targets"])
            .args(["--log-format", log_format])
            .arg("--database")
            .arg(dir.join("logs.db"))
            .env("PAYHOOK_ADMIN_TOKEN", LOG_ADMIN)
            .env("PAYHOOK_POLL_INTERVAL", "50ms")
            .env("PAYHOOK_LOG", "debug")
            .env_remove("PAYHOOK_MASTER_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("payhook binary starts");
        let out = Arc::new(Mutex::new(String::new()));
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for mut stream in streams {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Process { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().expect("lock").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

fn jwk_json(jwk: &Jwk) -> Value {
    let map: &Map<String, Value> = jwk.as_ref();
    Value::Object(map.clone())
}

/// Log lines written to a pipe (a file, a log collector) carry no terminal colour codes.
#[tokio::test]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Process::start(dir.path(), "text");
    let out = wait_for("a log line at INFO", Duration::from_secs(30), || {
        let out = node.output();
        std::future::ready(out.contains("INFO").then_some(out))
    })
    .await;
    assert!(!out.contains('\u{1b}'), "escape codes in piped logs: {out:?}");
}

#[tokio::test]
async fn no_secret_appears_in_debug_json_logs_of_a_full_scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Process::start(dir.path(), "json");
    let base = wait_for("payhook to print its address", Duration::from_secs(30), || {
        let out = node.output();
        let addr =
            out.lines().find_map(|l| l.strip_prefix("payhook listening on ")).map(str::to_owned);
        std::future::ready(addr)
    })
    .await;
    let api = Client { http: reqwest::Client::new(), base };
    let rx = TestReceiver::start().await;
    rx.script(&[(500, "not yet")]);
    let retry = json!({"interval": "100ms", "max_attempts": 5});

    let standard = api
        .call(
            "POST",
            "/v1/merchants",
            LOG_ADMIN,
            Some(json!({"name": "Std",
            "callback_url": format!("{}/std", rx.url), "retry": retry})),
        )
        .await;
    let rotated = api
        .call(
            "POST",
            &format!("/v1/merchants/{}/rotate-secret", standard["id"].as_str().expect("id")),
            LOG_ADMIN,
            None,
        )
        .await;
    let uapay = api
        .call(
            "POST",
            "/v1/merchants",
            LOG_ADMIN,
            Some(json!({"name": "Ua", "dialect": "uapay",
            "allowed_callback_urls": [format!("{}/uapay/", rx.url)], "retry": retry})),
        )
        .await;
    let private = Jwk::generate_ec_key(EcCurve::P384).expect("a P-384 key pair");
    let public = jwk_json(&private.to_public_key().expect("public half"));
    let ecom = api
        .call(
            "POST",
            "/v1/merchants",
            LOG_ADMIN,
            Some(json!({"name": "Ecom", "dialect": "ecom",
            "callback_url": format!("{}/ecom", rx.url), "encryption_key": public,
            "retry": retry})),
        )
        .await;
    let mut ops = Vec::new();
    for (m, extra) in [
        (&standard, json!({})),
        (&uapay, json!({"callback_url": format!("{}/uapay/cb", rx.url)})),
        (&ecom, json!({"encrypt": true, "data": {"ecomOrderId": "E-1"}})),
    ] {
        let mut body = json!({"merchant_id": m["id"], "external_id": "log-1", "amount": 100,
            "currency": "UAH", "kind": "purchase"});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        let op = api.call("POST", "/v1/operations", LOG_ADMIN, Some(body)).await;
        let id = op["id"].as_str().expect("id").to_owned();
        api.call(
            "POST",
            &format!("/v1/operations/{id}/status"),
            LOG_ADMIN,
            Some(json!({"status": "success", "event_key": "k1"})),
        )
        .await;
        ops.push((id, m["api_key"].as_str().expect("key").to_owned()));
    }
    for (id, key) in &ops {
        wait_for("delivery", Duration::from_secs(30), || async {
            let list = api.call("GET", &format!("/v1/operations/{id}/deliveries"), key, None).await;
            (list["data"][0]["state"] == "delivered").then_some(())
        })
        .await;
        api.call("GET", "/v1/events?after=0", key, None).await;
    }
    assert!(rx.received().len() >= 4, "three callbacks and one retry arrived");

    let key_file = dir.path().join("logs.db.key");
    let master_key = std::fs::read_to_string(&key_file).expect("the key file").trim().to_owned();
    let output = node.output();
    assert!(output.contains(&key_file.display().to_string()), "the key file's path is printed");
    assert!(output.contains("\"level\":\"DEBUG\""), "debug logs were on: {output}");
    assert!(output.contains("callback attempt"), "attempts were logged");
    for (id, _) in &ops {
        assert!(output.contains(id.as_str()), "the attempts of {id} are in the output searched");
    }

    let mut secrets: Vec<(String, String)> = vec![
        ("admin token".into(), LOG_ADMIN.into()),
        ("master key".into(), master_key.clone()),
        ("rotated secret".into(), rotated["signing_secret"].as_str().expect("s").into()),
    ];
    let raw_master = base64::engine::general_purpose::STANDARD.decode(&master_key).expect("b64");
    secrets
        .push(("master key (hex)".into(), raw_master.iter().map(|b| format!("{b:02x}")).collect()));
    for (name, m) in [("standard", &standard), ("uapay", &uapay), ("ecom", &ecom)] {
        let secret = m["signing_secret"].as_str().expect("secret");
        secrets.push((format!("{name} signing secret"), secret.into()));
        secrets.push((format!("{name} secret key part"), secret["whsec_".len()..].into()));
        secrets.push((format!("{name} api key"), m["api_key"].as_str().expect("key").into()));
    }
    let d = jwk_json(&private)["d"].as_str().expect("private d").to_owned();
    secrets.push(("ecom private key".into(), d));
    for (name, secret) in &secrets {
        assert!(secret.len() >= 16, "{name} is long enough to search for");
        assert!(!output.contains(secret.as_str()), "{name} appears in payhook's output");
    }
}
