//! Property tests over everything that reads outside input: each dialect's response
//! classifier, the status source reader and parser, and the retry policy parser. None may
//! panic, and a classifier says `Delivered` only on the answers its protocol documents.
//! (The same functions are the cargo-fuzz targets in `fuzz/`.)

use crate::dialect::{Dialect, Reply, Verdict, RETRY_AFTER_MAX, RETRY_AFTER_MIN};
use crate::retry::RetryPolicy;
use crate::status_source::StatusSource;
use crate::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        prop_oneof![Just("200"), Just("2"), Just("success"), Just("/orderStatus")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_/]{0,14}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_status() -> impl Strategy<Value = u16> {
    prop_oneof![100u16..600, Just(200), Just(201), Just(204), Just(410), Just(429), Just(503)]
}

fn any_retry_after() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[0-9]{1,12}",
        "\\PC{0,30}",
        Just("Tue, 14 Nov 2023 22:14:20 GMT".to_owned()),
        Just("-1".to_owned()),
    ])
}

/// Bodies a WS2MPI merchant might answer: mostly acknowledgement-shaped, sometimes anything.
fn ws2mpi_answer() -> impl Strategy<Value = Vec<u8>> {
    let order = prop_oneof![Just(json!("order-1")), Just(json!("order-2")), any_json()];
    let status = prop_oneof![Just(json!(200)), Just(json!("200")), Just(json!(500)), any_json()];
    prop_oneof![
        (order, status).prop_map(|(o, s)| {
            serde_json::to_vec(&json!({"orderNumber": o, "applicationStatus": s})).expect("JSON")
        }),
        prop::collection::vec(any::<u8>(), 0..64),
        any_json().prop_map(|v| serde_json::to_vec(&v).expect("JSON")),
    ]
}

/// The protocol's documented acknowledgement, written independently of the classifier.
fn documented_ack(dialect: Dialect, status: u16, request: &[u8], body: &[u8]) -> bool {
    match dialect {
        Dialect::Standard | Dialect::Xpay => (200..300).contains(&status),
        Dialect::Ecom | Dialect::Uapay => status == 200,
        Dialect::Ws2mpi => {
            let text = |v: Option<&Value>| match v {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let sent: Option<Value> = serde_json::from_slice(request).ok();
            let ack: Option<Value> = serde_json::from_slice(body).ok();
            let (Some(sent), Some(ack)) = (sent, ack) else { return false };
            let sent_number = text(sent.get("orderNumber"));
            status == 200
                && sent_number.is_some()
                && text(ack.get("applicationStatus")).as_deref() == Some("200")
                && text(ack.get("orderNumber")) == sent_number
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn classifiers_never_panic_and_deliver_only_on_documented_answers(
        dialect in prop::sample::select(Dialect::ALL.to_vec()),
        status in any_status(),
        retry_after in any_retry_after(),
        body in prop_oneof![ws2mpi_answer(), prop::collection::vec(any::<u8>(), 0..128)],
        order in prop_oneof![Just("order-1"), Just("order-2")],
        now in 0i64..4_000_000_000_000,
    ) {
        let request = serde_json::to_vec(&json!({"orderNumber": order, "respStatus": 200}))
            .expect("JSON");
        let reply = Reply {
            status,
            retry_after: retry_after.as_deref(),
            body: &body,
            request_body: &request,
            now: Timestamp(now),
        };
        let verdict = dialect.classify(&reply);
        let delivered = verdict == Verdict::Delivered;
        prop_assert_eq!(delivered, documented_ack(dialect, status, &request, &body),
            "{} answered {} {:?}: {:?}", dialect, status, String::from_utf8_lossy(&body), verdict);
        if let Verdict::Retry { retry_after: Some(wait), .. } = verdict {
            prop_assert!((RETRY_AFTER_MIN..=RETRY_AFTER_MAX).contains(&wait));
            prop_assert!(matches!(status, 429 | 503));
        }
    }

    #[test]
    fn status_sources_parse_and_read_anything_without_panicking(
        source in any_json(),
        url in prop_oneof![Just("https://core.example/s".to_owned()), "\\PC{0,30}"],
        pointer in prop_oneof![Just("/orderStatus".to_owned()), "\\PC{0,12}"],
        status in any_status(),
        answer in prop_oneof![
            any_json().prop_map(|v| serde_json::to_vec(&v).expect("JSON")),
            prop::collection::vec(any::<u8>(), 0..64),
        ],
    ) {
        let _ = StatusSource::from_json(&source);
        let shaped = json!({"url": url, "status_pointer": pointer});
        if let Ok(parsed) = StatusSource::from_json(&shaped) {
            let read = parsed.read(status, &answer);
            if read.is_ok() {
                prop_assert!((200..300).contains(&status), "read a status from HTTP {}", status);
            }
            let _ = parsed.request();
            let _ = parsed.to_json();
        }
    }

    #[test]
    fn retry_policies_parse_anything_within_bounds(
        value in prop_oneof![
            any_json(),
            (any_json(), any_json()).prop_map(|(i, m)| json!({"interval": i, "max_attempts": m})),
            prop::collection::vec(prop_oneof!["[0-9]{1,6}(ms|s|m|h|d)", "\\PC{0,8}"], 0..8)
                .prop_map(|s| json!({"schedule": s})),
        ],
        attempts in 0u32..2000,
        sample in -1.0f64..=1.0,
    ) {
        if let Ok(policy) = RetryPolicy::from_json(&value) {
            prop_assert!(policy.delays.len() <= crate::retry::MAX_RETRIES);
            let _ = policy.next_attempt_at(attempts, Timestamp(1_700_000_000_000), sample);
            let again = RetryPolicy::from_json(&policy.to_json());
            prop_assert_eq!(again, Ok(policy), "the schedule form round-trips");
        }
    }
}
