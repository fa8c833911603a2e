//! Rough native timing of `SealingKey::seal_into` (not a benchmark suite, no thresholds).
//! Run: `cargo test -p veil-core --release --test seal_timing -- --ignored --nocapture`

use std::hint::black_box;
use std::time::Instant;

use veil_core::cipher::{SealingKey, ValueType};
use veil_core::keys::{Dek, Kid};
use veil_core::value::{Mode, SealedValue};

#[test]
#[ignore = "timing only; run with --release --ignored --nocapture"]
fn seal_into_20_byte_string_timing() {
    let kid: Kid = "r1.2026-01".parse().unwrap();
    let key = SealingKey::new(kid, &Dek::from_bytes([42; 32]));
    let value = b"alice.smith@corp.com";
    assert_eq!(value.len(), 20);
    let mut out = Vec::with_capacity(4096);
    const N: u32 = 200_000;
    for (name, mode) in [
        ("d (AES-SIV)", Mode::Deterministic),
        ("r (AES-GCM)", Mode::Randomized),
    ] {
        for _ in 0..10_000 {
            out.clear();
            key.seal_into(mode, ValueType::String, black_box(value), &mut out)
                .unwrap();
        }
        let t = Instant::now();
        for _ in 0..N {
            out.clear();
            key.seal_into(mode, ValueType::String, black_box(value), &mut out)
                .unwrap();
            black_box(&out);
        }
        let seal_ns = t.elapsed().as_nanos() as f64 / f64::from(N);
        let sealed = String::from_utf8(out.clone()).unwrap();
        let t = Instant::now();
        for _ in 0..N {
            let v = SealedValue::parse(black_box(&sealed)).unwrap();
            black_box(key.open(&v).unwrap());
        }
        let open_ns = t.elapsed().as_nanos() as f64 / f64::from(N);
        println!(
            "{name}: seal_into {seal_ns:.0} ns/value, parse+open {open_ns:.0} ns/value ({} chars)",
            sealed.len()
        );
    }
    let t = Instant::now();
    for _ in 0..10_000 {
        black_box(SealingKey::new(kid, &Dek::from_bytes([42; 32])));
    }
    println!(
        "SealingKey::new: {:.0} ns",
        t.elapsed().as_nanos() as f64 / 10_000.0
    );
}
