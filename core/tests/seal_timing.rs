//! Rough native timing of `SealingKey::seal` (format v2) (not a benchmark suite, no thresholds).
//! Run: `cargo test -p veil-core --release --test seal_timing -- --ignored --nocapture`

use std::hint::black_box;
use std::time::Instant;

use veil_core::crypto::cipher::{Padding, Scope, SealingKey, Spec, ValueType};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::crypto::value::{Mode, SealedValue};

const SCOPE: &str = "request.body.email";

fn spec(mode: Mode) -> Spec<'static> {
    static S: std::sync::OnceLock<Scope> = std::sync::OnceLock::new();
    Spec {
        mode,
        scope: S.get_or_init(|| Scope::field(SCOPE)),
        pad: Padding::Buckets,
    }
}

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
        ("r (XAES-256-GCM)", Mode::Randomized),
    ] {
        for _ in 0..10_000 {
            out.clear();
            key.seal(spec(mode), ValueType::String, black_box(value), &mut out)
                .unwrap();
        }
        let t = Instant::now();
        for _ in 0..N {
            out.clear();
            key.seal(spec(mode), ValueType::String, black_box(value), &mut out)
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
            "{name}: seal {seal_ns:.0} ns/value, parse+open {open_ns:.0} ns/value ({} chars)",
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

/// The parts of one seal, measured separately (to see where the time goes).
#[test]
#[ignore = "timing only; run with --release --ignored --nocapture"]
fn primitive_timing() {
    use aes_gcm::aead::consts::U12;
    use aes_gcm::aead::inout::InOutBuf;
    use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
    use aes_siv::siv::Aes256Siv;
    use base64::Engine;

    const N: u32 = 200_000;
    fn time(name: &str, mut f: impl FnMut()) {
        for _ in 0..10_000 {
            f();
        }
        let t = Instant::now();
        for _ in 0..N {
            f();
        }
        println!(
            "{name}: {:.0} ns",
            t.elapsed().as_nanos() as f64 / f64::from(N)
        );
    }
    let ad = b"veil:v1:r1.2026-01:d";
    let mut buf = [0u8; 21];
    let mut siv = Aes256Siv::new(&[7u8; 64].into());
    time("AES-SIV-512 encrypt 21 B (cached instance)", || {
        black_box(
            siv.encrypt_inout_detached([&ad[..]], InOutBuf::from(&mut buf[..]))
                .unwrap(),
        );
    });
    time("Aes256Siv::new", || {
        black_box(Aes256Siv::new(black_box(&[7u8; 64].into())));
    });
    let gcm = Aes256Gcm::new(&[7u8; 32].into());
    let nonce = aes_gcm::Nonce::<U12>::from([1u8; 12]);
    time("AES-256-GCM encrypt 21 B", || {
        black_box(
            gcm.encrypt_inout_detached(&nonce, ad, InOutBuf::from(&mut buf[..]))
                .unwrap(),
        );
    });
    let mut n = [0u8; 12];
    time("getrandom::fill 12 B", || {
        getrandom::fill(&mut n).unwrap();
        black_box(&n);
    });
    let raw = [5u8; 37];
    let mut enc = [0u8; 64];
    time("base64 encode 37 B", || {
        black_box(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode_slice(black_box(&raw), &mut enc)
                .unwrap(),
        );
    });
}
