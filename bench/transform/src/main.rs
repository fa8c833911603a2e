//! The native time of the transform a benchmark scenario runs, for the issue #16 target
//! "the filter's cost per request within 2x the native criterion time of the same transform
//! plus the empty module's floor" (bench/run.py runs this on Envoy's CPU before a scenario's
//! rounds). It runs the transform `--runs` times per batch and prints the fastest batch's
//! mean, `us_per_run=<µs>` (the minimum over batches is what a loaded machine blurs least).
//! The same code as core/benches/seal.rs's `doc/*/memo_warm` (criterion): no criterion here,
//! so the bench needs no extra build.
//!
//! With `--batches 1` it is also the driver for instruction counts, which a loaded machine
//! does not blur at all: `valgrind --tool=callgrind target/release/veil-bench-transform
//! seal-event --runs 200 --batches 1`, then divide (or take the slope between two counts).
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
use std::time::Instant;

use veil_core::crypto::cipher::{CipherError, Opened, SealingKey, ValueType};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::crypto::value::SealedValue;
use veil_core::json::{
    seal_document, seal_document_with, unseal_document, KeyLookup, Memoized, Scratch,
};
use veil_core::memo::SealMemo;
use veil_core::open_memo::OpenMemo;
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};

const EVENT: &[u8] = include_bytes!("../../../fixtures/moesif/event.json");
const BATCH: &[u8] = include_bytes!("../../../fixtures/moesif/events-batch.json");
const SEARCH: &[u8] = include_bytes!("../../../fixtures/moesif/search-response-plaintext.json");

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
    fn read_memoized(&self, text: &str, read: &mut dyn FnMut(ValueType, &[u8])) -> bool {
        self.memo
            .borrow_mut()
            .read_text(text, |kid| self.key(kid), read)
            .is_some()
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

/// Runs `what` `runs` times.
fn run(what: &str, runs: usize, state: &mut State) -> Result<usize, String> {
    let State {
        key,
        scratch,
        out,
        memo,
        sealed_search,
        keys,
    } = state;
    match what {
        "seal-event" | "seal-batch" | "seal-event-direct" => {
            let (input, path) = if what == "seal-batch" {
                (BATCH, "/v1/events/batch")
            } else {
                (EVENT, "/v1/events")
            };
            let policy = policy(path);
            for _ in 0..runs {
                out.clear();
                let r = if what == "seal-event-direct" {
                    seal_document(black_box(input), &policy, key, 128, scratch, out)
                } else {
                    let mut sealer = Memoized { key, memo };
                    seal_document_with(black_box(input), &policy, &mut sealer, 128, scratch, out)
                };
                black_box(r.map_err(|e| e.to_string())?);
            }
        }
        "unseal" => {
            for _ in 0..runs {
                out.clear();
                let r = unseal_document(black_box(sealed_search), &*keys, 128, out);
                black_box(r.map_err(|e| e.to_string())?);
            }
        }
        other => return Err(format!("unknown transform {other:?}")),
    }
    Ok(out.len())
}

struct State {
    key: SealingKey,
    scratch: Scratch,
    out: Vec<u8>,
    memo: SealMemo,
    sealed_search: Vec<u8>,
    keys: Keys,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: veil-bench-transform seal-event|seal-batch|seal-event-direct|unseal \
                 [--runs N] [--batches B]";
    let what = args.get(1).cloned().unwrap_or_default();
    let mut runs = 200usize;
    let mut batches = 5usize;
    let mut i = 2;
    while i < args.len() {
        let v = args.get(i + 1).and_then(|s| s.parse().ok());
        match (args[i].as_str(), v) {
            ("--runs", Some(n)) if n > 0 => runs = n,
            ("--batches", Some(n)) if n > 0 => batches = n,
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let key = key();
    let mut state = State {
        sealed_search: sealed_search(&key),
        keys: Keys {
            key: SealingKey::new(key.kid(), &Dek::from_bytes([0x42; 32])),
            memo: RefCell::new(OpenMemo::new(8192, OpenMemo::payload_len_for(128))),
        },
        key,
        scratch: Scratch::default(),
        out: Vec::new(),
        memo: SealMemo::new(8192, 128),
    };
    // One run first: memos warm, buffers grown (the bench replays one body).
    if let Err(e) = run(&what, 1, &mut state) {
        eprintln!("{e}\n{usage}");
        std::process::exit(2);
    }
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..batches {
        let t = Instant::now();
        match run(&what, runs, &mut state) {
            Ok(n) => bytes = n,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / runs as f64);
    }
    println!("{what} us_per_run={best:.2} runs={runs} batches={batches} bytes_out={bytes}");
}
