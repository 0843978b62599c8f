//! The `getUpdates` response decoder: whatever the bytes, it returns a typed error or a
//! batch, never panics; every decoded update is an exact slice of the body, and every
//! element of `result` is either decoded or reported.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pollgate_core::GetUpdatesResponse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(GetUpdatesResponse::Updates(batch)) = GetUpdatesResponse::decode(&text, Some(1)) else {
        return;
    };
    let elements = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("result").and_then(|r| r.as_array().map(Vec::len)));
    if let Some(n) = elements {
        assert_eq!(batch.len(), n, "every element is decoded or reported");
    }
    for u in &batch.updates {
        assert!(text.contains(u.raw()));
        // `Value` refuses numbers beyond f64 that JSON allows: no reference for those.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(u.raw()) {
            assert_eq!(v["update_id"].as_i64(), Some(u.id()), "{}", u.raw());
        }
    }
});
