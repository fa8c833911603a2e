//! Criterion benchmarks of the seal hot path (native; the filter runs the same code in V8).
//!
//!   cargo bench -p veil-core --bench seal                  # everything
//!   cargo bench -p veil-core --bench seal -- 'doc/'        # one group (a regex on the ids)
//!   cargo bench -p veil-core --bench seal -- --quick       # a quick pass
//!
//! Groups (see bench/README.md for how to read them):
//! - `doc/*`: `seal_document` on the Moesif fixtures with the `moesif` policy (defaults: strings,
//!   numbers and dates deterministic, booleans randomized). `…/direct` seals every value with the
//!   key (a cold memo: the cost of a body whose values were never seen); `…/memo_warm` goes
//!   through the filter's `Memoized` sealer with a memo already holding every deterministic value
//!   (the steady state of a benchmark that replays one body).
//! - `value/*`: one `SealingKey::seal` (format v2) of a short and a long string, both modes.
//! - `lex/*`: the walker with a policy that keeps everything (strict lexing and the policy
//!   automaton walk; no sealing, no output but the final copy).
//! - `setup/*`: per-request setup the filter also pays (policy construction; key derivation is
//!   once per kid and shown for scale).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use veil_core::crypto::cipher::{Padding, Scope, SealingKey, Spec, ValueType};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::crypto::value::Mode;
use veil_core::json::{
    seal_document, seal_document_with, Leaf, LeafAction, Memoized, Policy, Scratch,
};
use veil_core::memo::SealMemo;
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};

const EVENT: &[u8] = include_bytes!("../../fixtures/moesif/event.json");
const BATCH: &[u8] = include_bytes!("../../fixtures/moesif/events-batch.json");

/// The filter's defaults (core/src/config/mod.rs): max_depth 128, memo 8192 entries of ≤ 128 bytes.
const MAX_DEPTH: usize = 128;
const MEMO_ENTRIES: usize = 8192;
const MEMO_MAX_VALUE: usize = 128;

fn key() -> SealingKey {
    let kid: Kid = "r1.2026-01".parse().expect("a valid kid");
    SealingKey::new(kid, &Dek::from_bytes([0x42; 32]))
}

/// The policy exactly as filter/roles/src/roles/seal.rs builds it for a collector route.
fn policy(path: &str) -> MoesifPolicy {
    let route = Route::from_path(path).expect("a collector route");
    MoesifPolicy::new(route, Arc::new(MoesifRules::new(&MoesifOptions::default())))
}

/// Keeps every leaf: the walker and lexer alone.
struct KeepAll;

impl Policy for KeepAll {
    type Node = ();
    fn root(&self) {}
    fn field(&self, _: (), _: &str) {}
    fn element(&self, _: ()) {}
    fn leaf(&self, _: (), _: Leaf<'_>) -> LeafAction {
        LeafAction::Keep
    }
}

fn docs() -> [(&'static str, &'static [u8], &'static str); 2] {
    [
        ("event", EVENT, "/v1/events"),
        ("batch20", BATCH, "/v1/events/batch"),
    ]
}

fn bench_documents(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("doc");
    for (name, input, path) in docs() {
        let policy = policy(path);
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        let stats = seal_document(input, &policy, &key, MAX_DEPTH, &mut scratch, &mut out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!(
            "doc/{name}: {} bytes in, {} bytes out, {} values sealed",
            input.len(),
            out.len(),
            stats.sealed
        );
        g.throughput(Throughput::Bytes(input.len() as u64));

        g.bench_function(format!("{name}/direct"), |b| {
            b.iter(|| {
                out.clear();
                let s = seal_document(
                    black_box(input),
                    &policy,
                    &key,
                    MAX_DEPTH,
                    &mut scratch,
                    &mut out,
                );
                black_box(s.is_ok())
            })
        });

        let mut memo = SealMemo::new(MEMO_ENTRIES, MEMO_MAX_VALUE);
        g.bench_function(format!("{name}/memo_warm"), |b| {
            b.iter(|| {
                out.clear();
                let mut sealer = Memoized {
                    key: &key,
                    memo: &mut memo,
                };
                let s = seal_document_with(
                    black_box(input),
                    &policy,
                    &mut sealer,
                    MAX_DEPTH,
                    &mut scratch,
                    &mut out,
                );
                black_box(s.is_ok())
            })
        });
        eprintln!(
            "doc/{name}/memo_warm: memo hits {} misses {}",
            memo.hits, memo.misses
        );
    }
    g.finish();
}

fn bench_values(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("value");
    let short: &[u8] = b"jane@example.com"; // 16 bytes: a typical analytics value
    let long = [b'x'; 256];
    let mut out = Vec::with_capacity(1024);
    for (vname, value) in [("16B", short), ("256B", &long[..])] {
        g.throughput(Throughput::Bytes(value.len() as u64));
        for (mname, mode) in [
            ("deterministic", Mode::Deterministic),
            ("randomized", Mode::Randomized),
        ] {
            g.bench_function(format!("{mname}/{vname}"), |b| {
                b.iter(|| {
                    out.clear();
                    let scope = Scope::field("request.body.email");
                    let spec = Spec {
                        mode,
                        scope: &scope,
                        pad: Padding::Buckets,
                    };
                    let r = key.seal(spec, ValueType::String, black_box(value), &mut out);
                    black_box(r.is_ok())
                })
            });
        }
    }
    // A memo hit, for comparison with a deterministic seal.
    let mut memo = SealMemo::new(MEMO_ENTRIES, MEMO_MAX_VALUE);
    g.throughput(Throughput::Bytes(short.len() as u64));
    g.bench_function("memo_hit/16B", |b| {
        b.iter(|| {
            out.clear();
            let scope = Scope::field("request.body.email");
            let spec = Spec {
                mode: Mode::Deterministic,
                scope: &scope,
                pad: Padding::Buckets,
            };
            let r = memo.seal(&key, spec, ValueType::String, black_box(short), &mut out);
            black_box(r.is_ok())
        })
    });
    g.finish();
}

fn bench_lexer(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("lex");
    for (name, input, _) in docs() {
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("{name}/keep_all"), |b| {
            b.iter(|| {
                out.clear();
                let s = seal_document(
                    black_box(input),
                    &KeepAll,
                    &key,
                    MAX_DEPTH,
                    &mut scratch,
                    &mut out,
                );
                black_box(s.is_ok())
            })
        });
        // For scale: a full parse into a tree with serde_json (a dependency of veil-core).
        g.bench_function(format!("{name}/serde_json_value"), |b| {
            b.iter(|| {
                let v: Result<serde_json::Value, _> = serde_json::from_slice(black_box(input));
                black_box(v.is_ok())
            })
        });
    }
    g.finish();
}

fn bench_setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("setup");
    let rules = Arc::new(MoesifRules::new(&MoesifOptions::default()));
    g.bench_function("policy_per_request", |b| {
        b.iter(|| {
            let route = Route::from_path(black_box("/v1/events/batch"));
            black_box(route.map(|r| MoesifPolicy::new(r, Arc::clone(&rules))))
        })
    });
    g.bench_function("sealing_key_new_per_kid", |b| b.iter(|| black_box(key())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_documents, bench_values, bench_lexer, bench_setup
}
criterion_main!(benches);
