//! Times the seal hot path with `std::time::Instant`, natively or in a wasm runtime:
//!
//!   cargo run --release                                   # native
//!   cargo build --release --target wasm32-wasip1
//!   node bench/wasm-seal/run-node.mjs target/wasm32-wasip1/release/veil-wasm-seal-bench.wasm
//!
//! Arguments: `[CASE-SUBSTRING] [--iters N]`. Prints one line per case:
//! `case ns_per_iter=… iters=…`. Each case is warmed up (V8 tiers wasm up from Liftoff to
//! TurboFan under load) before it is measured; `--iters N` instead runs each selected case
//! exactly N times with no warm-up (for `valgrind --tool=callgrind` or `perf record`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_core::crypto::cipher::{Padding, Scope, SealingKey, Spec, ValueType};
use veil_core::json::{
    seal_document, seal_document_with, Leaf, LeafAction, Memoized, Policy, Scratch,
};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::memo::SealMemo;
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};
use veil_core::crypto::value::Mode;

const EVENT: &[u8] = include_bytes!("../../../fixtures/moesif/event.json");
const BATCH: &[u8] = include_bytes!("../../../fixtures/moesif/events-batch.json");
const MAX_DEPTH: usize = 128;

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

fn policy(path: &str) -> MoesifPolicy {
    let route = Route::from_path(path).expect("a collector route");
    MoesifPolicy::new(route, Arc::new(MoesifRules::new(&MoesifOptions::default())))
}

/// `Some(n)`: run each case exactly n times, no warm-up (for callgrind / perf).
static mut FIXED_ITERS: Option<u64> = None;

fn time(name: &str, warm: Duration, measure: Duration, mut f: impl FnMut()) {
    // SAFETY: written once in main before any case runs; single-threaded.
    if let Some(n) = unsafe { FIXED_ITERS } {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
        println!("{name} ns_per_iter={ns:.0} iters={n} fixed");
        return;
    }
    let until = Instant::now() + warm;
    while Instant::now() < until {
        for _ in 0..16 {
            f();
        }
    }
    let start = Instant::now();
    let mut iters: u64 = 0;
    loop {
        for _ in 0..16 {
            f();
        }
        iters += 16;
        if start.elapsed() >= measure {
            break;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name} ns_per_iter={ns:.0} iters={iters}");
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--iters") {
        let n = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--iters N");
        // SAFETY: before any case runs; single-threaded.
        unsafe { FIXED_ITERS = Some(n) };
        args.drain(i..i + 2);
    }
    let filter: Option<String> = args.first().cloned();
    let warm = Duration::from_millis(1500);
    let measure = Duration::from_millis(2000);
    let want = |n: &str| filter.as_deref().is_none_or(|f| n.contains(f));
    let kid: Kid = "r1.2026-01".parse().expect("kid");
    let key = SealingKey::new(kid, &Dek::from_bytes([0x42; 32]));
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for (name, input, path) in [
        ("event", EVENT, "/v1/events"),
        ("batch20", BATCH, "/v1/events/batch"),
    ] {
        let pol = policy(path);
        let n = format!("doc/{name}/direct");
        if want(&n) {
            time(&n, warm, measure, || {
                out.clear();
                let r = seal_document(
                    black_box(input),
                    &pol,
                    &key,
                    MAX_DEPTH,
                    &mut scratch,
                    &mut out,
                );
                black_box(r.is_ok());
            });
        }
        let n = format!("doc/{name}/memo_warm");
        if want(&n) {
            let mut memo = SealMemo::new(8192, 128);
            time(&n, warm, measure, || {
                out.clear();
                let mut s = Memoized {
                    key: &key,
                    memo: &mut memo,
                };
                let r = seal_document_with(
                    black_box(input),
                    &pol,
                    &mut s,
                    MAX_DEPTH,
                    &mut scratch,
                    &mut out,
                );
                black_box(r.is_ok());
            });
        }
        let n = format!("lex/{name}/keep_all");
        if want(&n) {
            time(&n, warm, measure, || {
                out.clear();
                let r = seal_document(
                    black_box(input),
                    &KeepAll,
                    &key,
                    MAX_DEPTH,
                    &mut scratch,
                    &mut out,
                );
                black_box(r.is_ok());
            });
        }
    }
    let v: &[u8] = b"jane@example.com";
    let mut buf = Vec::with_capacity(256);
    let cases: [(&str, Mode); 2] = [
        ("value/deterministic/16B", Mode::Deterministic),
        ("value/randomized/16B", Mode::Randomized),
    ];
    for (n, mode) in cases {
        if want(n) {
            time(n, warm, measure, || {
                buf.clear();
                black_box(
                    key.seal(Spec { mode, scope: &Scope::field("request.body.email"), pad: Padding::Buckets }, ValueType::String, black_box(v), &mut buf)
                        .is_ok(),
                );
            });
        }
    }
    let n = "value/gcm_fixed_nonce/16B";
    if want(n) {
        time(n, warm, measure, || {
            buf.clear();
            let r =
                key.seal_randomized_with_nonce(ValueType::String, black_box(v), [7; 12], &mut buf);
            black_box(r.is_ok());
        });
    }
    let n = "value/memo_hit/16B";
    if want(n) {
        let mut memo = SealMemo::new(8192, 128);
        time(n, warm, measure, || {
            buf.clear();
            black_box(
                memo.seal(&key, Spec { mode: Mode::Deterministic, scope: &Scope::field("request.body.email"), pad: Padding::Buckets }, ValueType::String, black_box(v), &mut buf)
                    .is_ok(),
            );
        });
    }
    // The relay's crypto for one 1 KB request and answer (relay-local): open the body part
    // (under `c2s`) and seal the answer's body part under its own key (derived from `s2c` and
    // a response nonce, per answer), AES-256-GCM (software AES and GHASH in wasm).
    use veil_core::relay::v2;
    let ex = v2::Exchange {
        pair_id: "AAAAAAAAAAAAAAAAAAAAAA",
        seq: 7,
        method: "POST",
        scheme: "https",
        authority: "app.example",
    };
    let rc = v2::RequestCipher::new(&[0x42; 32]);
    let binding = v2::RequestBinding([9; 32]);
    let body = vec![b'x'; 1024];
    let sealed = rc.seal(&ex, v2::Part::RequestBody, true, &body).expect("seal");
    let n = "relay/gcm_seal_1k";
    if want(n) {
        time(n, warm, measure, || {
            let a = v2::AnswerCipher::new(&[0x43; 32], black_box(&[5; 32])).expect("answer key");
            let kind = v2::AnswerKind::HeadersBody;
            black_box(
                a.seal(&ex, v2::Part::ResponseBody, kind, 200, &binding, black_box(&body))
                    .is_ok(),
            );
        });
    }
    let n = "relay/gcm_open_1k";
    if want(n) {
        time(n, warm, measure, || {
            black_box(rc.open(&ex, v2::Part::RequestBody, true, black_box(&sealed)).is_ok());
        });
    }
    let n = "relay/key_schedule";
    if want(n) {
        time(n, warm, measure, || {
            black_box(v2::RequestCipher::new(black_box(&[0x42; 32])));
        });
    }
    // The relay's pair table in `local` mode: one shared-data read opens a set, one CAS
    // write seals it again (4 slots, 101-character client ids: 969 bytes), per request.
    let record_key = veil_core::crypto::shared_record::RecordKey::from_token(b"a keyservice token");
    let client_id = "c".repeat(101);
    let slot_keys = |id: &'static str| veil_core::relay::slots::SlotKeys {
        pair_id: id,
        client_id: &client_id,
        c2s: &[1; 32],
        s2c: &[2; 32],
        expires_at: 2_000_000_000,
        idle_ttl_secs: 600,
    };
    let slots = ["AAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCCCCCCCC", "DDDDDDDDDDDDDDDDDDDDDD"]
        .map(|id| veil_core::relay::slots::Slot::build(&slot_keys(id), 1).expect("slot"));
    let set = veil_core::relay::slots::Set { slots: slots.to_vec(), cas: None }.encode();
    let name = "veil.relay.set.7";
    let sealed_set = record_key.seal(name, &set).expect("seal");
    let n = "record/relay_set_seal_4x";
    if want(n) {
        time(n, warm, measure, || {
            black_box(record_key.seal(name, black_box(&set)).is_ok());
        });
    }
    let n = "record/relay_set_open_4x";
    if want(n) {
        time(n, warm, measure, || {
            black_box(record_key.open(name, black_box(&sealed_set)).is_ok());
        });
    }
    // What a worker does instead of opening when the bytes read back are the ones it last
    // opened or wrote (filter/roles/src/records.rs): compare them, copy the kept plaintext.
    let n = "record/relay_set_reuse_4x";
    if want(n) {
        let kept = sealed_set.clone();
        time(n, warm, measure, || {
            let read = black_box(&sealed_set);
            black_box(if *read == kept { Some(set.to_vec()) } else { None });
        });
    }
    let n = "record/relay_set_parse_4x";
    if want(n) {
        time(n, warm, measure, || {
            black_box(veil_core::relay::slots::Set::parse(black_box(&set), Some(1), 4).slots.len());
        });
    }
    let n = "rng/getrandom_12B";
    if want(n) {
        let mut nonce = [0u8; 12];
        time(n, warm, measure, || {
            black_box(getrandom_fill(&mut nonce));
        });
    }
}

/// The nonce source of randomized mode: the same `getrandom` crate veil-core uses (in wasm a
/// WASI `random_get` call into the host).
fn getrandom_fill(buf: &mut [u8; 12]) -> bool {
    getrandom::fill(buf).is_ok()
}
