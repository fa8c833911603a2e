//! The `json` profile's sealer on arbitrary bodies. Properties: a body serde_json accepts
//! (within the depth limit) is accepted; an accepted body seals into JSON; unsealing that
//! gives back the input (byte for byte when it has no escapes, else the same value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::json::{seal_document, unseal_document, Scratch};
use veil_core::policy::json::{JsonOptions, JsonRules};
use veil_fuzz::{assert_json, assert_round_trip, depth, key, serde_accepts, MAX_DEPTH};

fuzz_target!(|data: &[u8]| {
    let rules = JsonRules::new(&JsonOptions {
        exclude: vec!["$.id".into(), "$..time".into()],
        ..JsonOptions::default()
    })
    .unwrap_or_else(|e| panic!("fixed options: {e:?}"));
    let key = key("2026-01");
    let mut out = Vec::new();
    let res = seal_document(
        data,
        &rules,
        &key,
        MAX_DEPTH,
        &mut Scratch::default(),
        &mut out,
    );
    match res {
        Ok(_) => {
            assert_json(&out, "sealed output");
            let mut back = Vec::new();
            let stats = unseal_document(&out, &vec![key], MAX_DEPTH, &mut back)
                .unwrap_or_else(|e| panic!("unseal of sealed output: {e}"));
            assert_eq!(stats.failed, 0);
            assert_eq!(stats.unknown_kid, 0);
            assert_round_trip(data, &back);
        }
        Err(e) => {
            assert!(
                !(serde_accepts(data) && depth(data) <= MAX_DEPTH),
                "refused a body serde_json accepts: {e}"
            );
        }
    }
});
