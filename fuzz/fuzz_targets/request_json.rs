//! Fuzzes the API's request body parsing (depth limit, then serde into the request types).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_api::extract::{nesting_exceeds, parse, MAX_DEPTH};
use payhook_api::merchants::CreateMerchant;
use payhook_api::operations::{RegisterOperation, ReportBody};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let deep = nesting_exceeds(data, MAX_DEPTH);
    match parse::<Value>(data) {
        Ok(_) => assert!(!deep, "a body nested deeper than the limit was accepted"),
        Err(e) => assert!(e.status.as_u16() == 400, "{}", e.code),
    }
    let _ = parse::<RegisterOperation>(data);
    let _ = parse::<ReportBody>(data);
    let _ = parse::<CreateMerchant>(data);
    let _ = parse::<Map<String, Value>>(data);
});
