//! The search-request rewriter on arbitrary bodies. Properties: what parses re-serializes to
//! JSON that parses to the same serialization (a fixed point); a rewrite that succeeds
//! gives JSON, rewrites exactly the terms `sealed_terms` counted, and opening it with the
//! same keys never fails to authenticate.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use veil_core::json::unseal_document;
use veil_core::policy::moesif::{MoesifOptions, MoesifRules};
use veil_core::search::{MoesifEvents, SearchBody};
use veil_fuzz::{assert_json, key, MAX_DEPTH};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = SearchBody::parse(data, MAX_DEPTH) else {
        return;
    };
    let text = body.to_vec();
    assert_json(&text, "re-serialized search");
    let again = SearchBody::parse(&text, MAX_DEPTH)
        .unwrap_or_else(|e| panic!("re-serialized search does not parse: {e}"));
    assert!(again.to_vec() == text, "to_vec is not a fixed point");

    let policy = MoesifEvents::new(Arc::new(MoesifRules::new(&MoesifOptions::default())));
    let counted = body.sealed_terms(&policy);
    let (k1, k2) = (key("2025-07"), key("2026-01"));
    let mut rewritten = body;
    let res = rewritten.rewrite(&policy, &[&k1, &k2]);
    assert_eq!(
        res.as_ref().ok(),
        counted.as_ref().ok(),
        "rewrite and sealed_terms disagree"
    );
    if res.is_ok() {
        let out = rewritten.to_vec();
        assert_json(&out, "rewritten search");
        let mut back = Vec::new();
        let stats = unseal_document(&out, &vec![k1, k2], MAX_DEPTH + 2, &mut back)
            .unwrap_or_else(|e| panic!("unseal of rewritten search: {e}"));
        assert_eq!(stats.failed, 0);
    }
});
