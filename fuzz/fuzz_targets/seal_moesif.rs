//! The `moesif` profile's sealer on arbitrary bodies, for every collector route shape (the
//! first byte picks the route). Properties: as `seal_json` (serde_json-valid bodies are
//! accepted, output is JSON, unseal gives the input back).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use veil_core::json::{seal_document, unseal_document, Scratch};
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};
use veil_fuzz::{assert_json, assert_round_trip, depth, key, serde_accepts, MAX_DEPTH};

const ROUTES: &[&str] = &[
    "/v1/events",
    "/v1/events/batch",
    "/v1/users",
    "/v1/users/batch",
    "/v1/companies/batch",
    "/v1/actions/batch",
    "/v1/subscriptions/batch",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let path = ROUTES
        .get(usize::from(pick) % ROUTES.len())
        .copied()
        .unwrap_or("/v1/events");
    let route = Route::from_path(path).unwrap_or_else(|| panic!("{path} is a route"));
    let mut options = MoesifOptions::default();
    // Half the inputs with the Secure Proxy's optional switches flipped.
    if pick & 0x80 != 0 {
        options.encrypt_graphql_query = true;
        options.request_body_skip = vec!["id".into()];
        options.encrypt_numerics = false;
    }
    let policy = MoesifPolicy::new(route, Arc::new(MoesifRules::new(&options)));
    let key = key("2026-01");
    let mut out = Vec::new();
    match seal_document(
        body,
        &policy,
        &key,
        MAX_DEPTH,
        &mut Scratch::default(),
        &mut out,
    ) {
        Ok(_) => {
            assert_json(&out, "sealed output");
            let mut back = Vec::new();
            let stats = unseal_document(&out, &vec![key], MAX_DEPTH, &mut back)
                .unwrap_or_else(|e| panic!("unseal of sealed output: {e}"));
            assert_eq!(stats.failed, 0);
            assert_round_trip(body, &back);
        }
        Err(e) => {
            assert!(
                !(serde_accepts(body) && depth(body) <= MAX_DEPTH),
                "refused a body serde_json accepts: {e}"
            );
        }
    }
});
