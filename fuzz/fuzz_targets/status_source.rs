//! Fuzzes StatusSource::from_json (the registration field) and StatusSource::read (the
//! answer of a merchant's status service).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_core::status_source::StatusSource;

fuzz_target!(|data: &[u8]| {
    let Some(cut) = data.iter().position(|b| *b == 0xff) else { return };
    let (source, answer) = (&data[..cut], &data[cut + 1..]);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(source) else { return };
    let Ok(parsed) = StatusSource::from_json(&value) else { return };
    for status in [200, 204, 404, 500] {
        let _ = parsed.read(status, answer);
    }
    let _ = parsed.request();
    let again = StatusSource::from_json(&parsed.to_json()).expect("the normalized form parses");
    assert_eq!(again, parsed);
});
