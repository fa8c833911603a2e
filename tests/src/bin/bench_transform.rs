//! Runs one hot-path transform N times, for an instruction count that a loaded machine does
//! not blur (criterion's times do): `valgrind --tool=callgrind` on this, then divide by N.
//!
//!   cargo build --release -p veil-core --example transform_count
//!   valgrind --tool=callgrind target/release/examples/transform_count seal-event 200
//!
//! Transforms (the filter's steady state in `make bench`: one body replayed, memos warm):
//! - `seal-event`, `seal-batch`: `seal_document_with` through the `Memoized` sealer on
//!   fixtures/moesif/event.json / events-batch.json with the `moesif` policy;
//! - `seal-event-direct`: the same without the memo (every value sealed);
//! - `unseal`: `unseal_document` on the bench's sealed search answer (its two events sealed
//!   as `veil-bench-seal-fixture` does) with an open memo, as the filter's key cache does.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;

use veil_core::crypto::cipher::{CipherError, Opened, SealingKey};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::crypto::value::SealedValue;
use veil_core::json::{
    seal_document, seal_document_with, unseal_document, KeyLookup, Memoized, Scratch,
};
use veil_core::memo::SealMemo;
use veil_core::open_memo::OpenMemo;
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};

const EVENT: &[u8] = include_bytes!("../../fixtures/moesif/event.json");
const BATCH: &[u8] = include_bytes!("../../fixtures/moesif/events-batch.json");
const SEARCH: &[u8] = include_bytes!("../../fixtures/moesif/search-response-plaintext.json");

fn key() -> SealingKey {
    let kid: Kid = "r1.2026-01".parse().expect("a valid kid");
    SealingKey::new(kid, &Dek::from_bytes([0x42; 32]))
}

fn policy(path: &str) -> MoesifPolicy {
    let route = Route::from_path(path).expect("a collector route");
    MoesifPolicy::new(route, Arc::new(MoesifRules::new(&MoesifOptions::default())))
}

/// One key and an open memo, as the filter's key cache holds them.
struct Keys {
    key: SealingKey,
    memo: RefCell<OpenMemo>,
}

impl KeyLookup for Keys {
    fn key(&self, kid: Kid) -> Option<&SealingKey> {
        (kid == self.key.kid()).then_some(&self.key)
    }
    fn open(&self, v: &SealedValue<'_>) -> Option<Result<Opened, CipherError>> {
        let key = self.key(v.kid)?;
        Some(self.memo.borrow_mut().open(key, v))
    }
}

/// The search answer with each hit's `_source` sealed as one event.
fn sealed_search(key: &SealingKey) -> Vec<u8> {
    let mut answer: serde_json::Value = serde_json::from_slice(SEARCH).expect("fixture JSON");
    let policy = policy("/v1/events");
    let hits = answer["hits"]["hits"].as_array_mut().expect("hits");
    for hit in hits {
        let source = serde_json::to_vec(&hit["_source"]).expect("JSON");
        let mut out = Vec::new();
        seal_document(
            &source,
            &policy,
            key,
            128,
            &mut Scratch::default(),
            &mut out,
        )
        .expect("sealed");
        hit["_source"] = serde_json::from_slice(&out).expect("JSON");
    }
    serde_json::to_vec(&answer).expect("JSON")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("seal-event");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let key = key();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let mut memo = SealMemo::new(8192, 128);
    match what {
        "seal-event" | "seal-batch" | "seal-event-direct" => {
            let (input, path) = if what == "seal-batch" {
                (BATCH, "/v1/events/batch")
            } else {
                (EVENT, "/v1/events")
            };
            let policy = policy(path);
            for _ in 0..n {
                out.clear();
                let r = if what == "seal-event-direct" {
                    seal_document(black_box(input), &policy, &key, 128, &mut scratch, &mut out)
                } else {
                    let mut sealer = Memoized {
                        key: &key,
                        memo: &mut memo,
                    };
                    seal_document_with(
                        black_box(input),
                        &policy,
                        &mut sealer,
                        128,
                        &mut scratch,
                        &mut out,
                    )
                };
                black_box(r.expect("sealed"));
            }
        }
        "unseal" => {
            let input = sealed_search(&key);
            let keys = Keys {
                key,
                memo: RefCell::new(OpenMemo::new(8192, OpenMemo::payload_len_for(128))),
            };
            for _ in 0..n {
                out.clear();
                let r = unseal_document(black_box(&input), &keys, 128, &mut out);
                black_box(r.expect("unsealed"));
            }
        }
        other => {
            eprintln!("unknown transform {other:?}");
            std::process::exit(2);
        }
    }
    eprintln!("{what}: {n} runs, {} bytes out", out.len());
}
