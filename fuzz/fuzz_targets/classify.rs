//! Fuzzes every dialect's response classifier with arbitrary status, Retry-After and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_core::dialect::{Dialect, Reply, Verdict};
use payhook_core::Timestamp;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 1000;
    let split = usize::from(data[2]).min(data.len() - 3);
    let (retry_after, body) = data[3..].split_at(split);
    let retry_after = std::str::from_utf8(retry_after).ok();
    let request = br#"{"orderNumber":"order-1","respStatus":200,"orderStatus":2,"orderId":"op_1"}"#;
    for dialect in Dialect::ALL {
        let reply = Reply {
            status,
            retry_after,
            body,
            request_body: request,
            now: Timestamp(1_700_000_000_000),
        };
        if dialect.classify(&reply) == Verdict::Delivered {
            assert_eq!(status / 100, 2, "{dialect} delivered on HTTP {status}");
        }
    }
});
