//! Fuzzes RetryPolicy::from_json, the merchant's retry override.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_core::retry::{RetryPolicy, MAX_RETRIES};
use payhook_core::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(policy) = RetryPolicy::from_json(&value) else { return };
    assert!(policy.delays.len() <= MAX_RETRIES);
    for attempts in [0, 1, 10, 1000, u32::MAX] {
        let _ = policy.next_attempt_at(attempts, Timestamp(1_700_000_000_000), 1.0);
    }
});
