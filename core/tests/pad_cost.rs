//! The byte cost of format v2 on the Moesif fixtures (issue #18: "the cost in bytes measured
//! on the Moesif fixtures"): each collector fixture sealed in format v1 (as before), v2 with
//! `pad: false` and v2 with `pad: true` (the default). The numbers are in docs/design.md.
//! Run: `cargo test -p veil-core --test pad_cost -- --nocapture`

use std::sync::Arc;

use veil_core::crypto::cipher::{CipherError, SealingKey, Spec, ValueType};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::json::{seal_document_with, Scratch, ValueSealer};
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};

/// Seals in format v1 (what Veil wrote before v2).
struct V1<'k>(&'k SealingKey);

impl ValueSealer for V1<'_> {
    fn seal(
        &mut self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        self.0.seal_v1_into(spec.mode, ty, value, out)
    }
}

const FIXTURES: [(&str, &str); 6] = [
    ("event.json", "/v1/events"),
    ("events-batch.json", "/v1/events/batch"),
    ("users-batch.json", "/v1/users/batch"),
    ("companies-batch.json", "/v1/companies/batch"),
    ("actions-batch.json", "/v1/actions/batch"),
    ("subscriptions-batch.json", "/v1/subscriptions/batch"),
];

fn sealed_len(body: &[u8], route: &str, pad: bool, v1: bool) -> (usize, u32) {
    let key = SealingKey::new(
        "r1.2026-01".parse::<Kid>().unwrap(),
        &Dek::from_bytes([7; 32]),
    );
    let o: MoesifOptions = serde_json::from_value(serde_json::json!({ "pad": pad })).unwrap();
    let policy = MoesifPolicy::new(
        Route::from_path(route).unwrap(),
        Arc::new(MoesifRules::new(&o)),
    );
    let mut out = Vec::new();
    let stats = if v1 {
        seal_document_with(
            body,
            &policy,
            &mut V1(&key),
            128,
            &mut Scratch::default(),
            &mut out,
        )
    } else {
        seal_document_with(
            body,
            &policy,
            &mut &key,
            128,
            &mut Scratch::default(),
            &mut out,
        )
    }
    .unwrap();
    (out.len(), stats.sealed)
}

#[test]
fn v2_costs_on_the_moesif_fixtures() {
    let (mut t_plain, mut t_v1, mut t_off, mut t_on) = (0, 0, 0, 0);
    println!("fixture                   plain      v1  v2 pad:false  v2 pad:true  values");
    for (name, route) in FIXTURES {
        let path = format!("{}/../fixtures/moesif/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(&path).unwrap();
        let (v1, n) = sealed_len(&body, route, true, true);
        let (off, n2) = sealed_len(&body, route, false, false);
        let (on, n3) = sealed_len(&body, route, true, false);
        assert_eq!((n, n), (n2, n3));
        // Padding only ever adds bytes; v2 without padding differs from v1 by the fixed
        // per-value overheads (scope tag, longer nonce, marker byte).
        assert!(on >= off, "{name}");
        println!(
            "{name:<24} {:>6} {v1:>7} {off:>13} {on:>12} {n:>7}",
            body.len()
        );
        t_plain += body.len();
        t_v1 += v1;
        t_off += off;
        t_on += on;
    }
    println!(
        "total                    {t_plain:>6} {t_v1:>7} {t_off:>13} {t_on:>12}   (v2 pad:true = {:.2}x v1, {:.2}x plaintext)",
        t_on as f64 / t_v1 as f64,
        t_on as f64 / t_plain as f64
    );
}
