//! The unseal walker on arbitrary (vendor-controlled) answers. Properties: an accepted
//! answer gives JSON; one with nothing to open comes back byte for byte; `kids_in` never
//! returns more than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::json::unseal::kids_in;
use veil_core::json::unseal_document;
use veil_fuzz::{assert_json, key, MAX_DEPTH};

fuzz_target!(|data: &[u8]| {
    let keys = vec![key("2026-01"), key("2025-07")];
    let mut out = Vec::new();
    if let Ok(stats) = unseal_document(data, &keys, MAX_DEPTH, &mut out) {
        if stats.opened == 0 {
            assert!(out == data, "nothing opened but the answer changed");
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
            assert_json(&out, "unsealed output");
        }
    }
    assert!(kids_in(data, 4).len() <= 4);
});
