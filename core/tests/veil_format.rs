//! The Veil `v1` value format (still opened; no longer written) end to end: known answers produced by an independent Python
//! implementation (`vectors/veil-v1-values.json`, see `gen_veil_vectors.py`), parsing, and
//! the failure cases of `open`.

use proptest::prelude::*;
use serde_json::Value;
use veil_core::crypto::cipher::{CipherError, SealingKey, ValueType};
use veil_core::crypto::keys::{Dek, Epoch, Kid, RootKey};
use veil_core::crypto::value::{looks_sealed, Mode, SealedValue, PREFIX};

fn kid(s: &str) -> Kid {
    s.parse().unwrap()
}

fn key(k: &str, dek_byte: u8) -> SealingKey {
    SealingKey::new(kid(k), &Dek::from_bytes([dek_byte; 32]))
}

fn seal(key: &SealingKey, mode: Mode, ty: ValueType, value: &[u8]) -> String {
    let mut out = Vec::new();
    key.seal_v1_into(mode, ty, value, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn open(key: &SealingKey, s: &str) -> Result<(ValueType, Vec<u8>), CipherError> {
    let v = SealedValue::parse(s).expect("parses");
    key.open(&v).map(|o| (o.ty, o.value.to_vec()))
}

// ---------------------------------------------------------------------------------------
// Known answers from the independent Python implementation.

#[test]
fn python_known_answers_byte_for_byte() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/veil-v1-values.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    let keys = doc["keys"].as_array().unwrap();
    let sealing_keys: Vec<SealingKey> = keys
        .iter()
        .map(|k| {
            let root =
                RootKey::from_slice(&hex::decode(k["root_key_hex"].as_str().unwrap()).unwrap())
                    .unwrap();
            let epoch: Epoch = k["epoch"].as_str().unwrap().parse().unwrap();
            let kid = Kid::new(k["root_version"].as_u64().unwrap() as u32, epoch);
            assert_eq!(kid.to_string(), k["kid"].as_str().unwrap());
            SealingKey::new(kid, &root.derive_dek(epoch))
        })
        .collect();
    for (ki, k) in keys.iter().enumerate() {
        let sk = &sealing_keys[ki];
        for c in k["cases"].as_array().unwrap() {
            let ty = ValueType::from_byte(c["type"].as_str().unwrap().as_bytes()[0]).unwrap();
            let value = hex::decode(c["value_hex"].as_str().unwrap()).unwrap();
            let expected = c["sealed"].as_str().unwrap();
            let what = format!("{} {} {}", k["kid"], c["mode"], c["comment"]);
            // Seal appends to whatever is already in `out`.
            let mut out = b"[\"".to_vec();
            match c["mode"].as_str().unwrap() {
                "d" => sk
                    .seal_v1_into(Mode::Deterministic, ty, &value, &mut out)
                    .unwrap(),
                "r" => {
                    let nonce: [u8; 12] = hex::decode(c["nonce_hex"].as_str().unwrap())
                        .unwrap()
                        .try_into()
                        .unwrap();
                    sk.seal_randomized_with_nonce(ty, &value, nonce, &mut out)
                        .unwrap()
                }
                m => panic!("mode {m}"),
            }
            assert_eq!(&out[..2], b"[\"", "{what}: prefix kept");
            assert_eq!(std::str::from_utf8(&out[2..]).unwrap(), expected, "{what}");
            // And the Python output opens to the same type and bytes.
            assert_eq!(open(sk, expected), Ok((ty, value.clone())), "{what}: open");
            // Under the other key: another kid.
            let other = &sealing_keys[1 - ki];
            assert_eq!(
                open(other, expected),
                Err(CipherError::KidMismatch),
                "{what}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 14 * 2);
}

// ---------------------------------------------------------------------------------------
// Parsing.

#[test]
fn mode_and_type_bytes() {
    assert_eq!(Mode::Deterministic.as_char(), 'd');
    assert_eq!(Mode::Randomized.as_char(), 'r');
    assert_eq!(Mode::from_byte(b'd'), Some(Mode::Deterministic));
    assert_eq!(Mode::from_byte(b'r'), Some(Mode::Randomized));
    for b in [b'D', b'R', b'x', b':', 0, 0xff] {
        assert_eq!(Mode::from_byte(b), None);
    }
    assert_eq!(ValueType::String as u8, b's');
    assert_eq!(ValueType::Number as u8, b'n');
    assert_eq!(ValueType::Bool as u8, b'b');
    for t in [ValueType::String, ValueType::Number, ValueType::Bool] {
        assert_eq!(ValueType::from_byte(t as u8), Some(t));
    }
    assert_eq!(ValueType::from_byte(b'S'), None);
    assert_eq!(ValueType::from_byte(b'x'), None);
}

#[test]
fn parse_accepts_what_seal_emits() {
    let k = key("r3.2026-04", 1);
    for mode in [Mode::Deterministic, Mode::Randomized] {
        for value in [&b""[..], b"x", b"hello world", &[0xffu8; 100][..]] {
            let s = seal(&k, mode, ValueType::String, value);
            assert!(looks_sealed(s.as_bytes()));
            let v = SealedValue::parse(&s).unwrap();
            assert_eq!(v.kid, kid("r3.2026-04"));
            assert_eq!(v.kid_str, "r3.2026-04");
            assert_eq!(v.mode, mode);
            let header = format!("veil:v1:r3.2026-04:{}:", mode.as_char());
            assert_eq!(s.strip_prefix(&header), Some(v.payload));
            // Length as specified: base64url-no-pad of overhead + 1 + len.
            let raw = match mode {
                Mode::Deterministic => 16 + 1 + value.len(),
                Mode::Randomized => 12 + 1 + value.len() + 16,
            };
            assert_eq!(v.payload.len(), (raw * 4).div_ceil(3));
        }
    }
}

/// A payload that is `n` zero bytes (canonical base64url, `A`s and a final char).
fn payload_of(n: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0u8; n])
}

#[test]
fn parse_minimum_payload_lengths() {
    let d = |n: usize| format!("veil:v1:r1.2026-01:d:{}", payload_of(n));
    let r = |n: usize| format!("veil:v1:r1.2026-01:r:{}", payload_of(n));
    assert!(SealedValue::parse(&d(16)).is_none());
    assert!(SealedValue::parse(&d(17)).is_some());
    assert!(SealedValue::parse(&r(28)).is_none());
    assert!(SealedValue::parse(&r(29)).is_some());
    assert!(SealedValue::parse(&d(1)).is_none());
    // Shortest legal values are syntactically fine but do not open (authentication).
    let k = key("r1.2026-01", 9);
    assert_eq!(open(&k, &d(17)), Err(CipherError::Authentication));
    assert_eq!(open(&k, &r(29)), Err(CipherError::Authentication));
}

#[test]
fn parse_rejects_near_misses() {
    let k = key("r1.2026-01", 1);
    // 18-byte value: raw 16 + 1 + 18 = 35 bytes → 47 chars (47 % 4 == 3).
    let good = seal(
        &k,
        Mode::Deterministic,
        ValueType::String,
        b"bob.smith@corp.com",
    );
    let payload = good.rsplit(':').next().unwrap().to_string();
    assert!(SealedValue::parse(&good).is_some());
    let bad = [
        // prefix
        good.replacen("veil:v1:", "veil:v2:", 1),
        good.replacen("veil:v1:", "Veil:v1:", 1),
        good.replacen("veil:v1:", "veil:v1", 1),
        format!(" {good}"),
        format!("\"{good}\""),
        good[1..].to_string(),
        // kid
        good.replacen("r1.2026-01", "r0.2026-01", 1),
        good.replacen("r1.2026-01", "r01.2026-01", 1),
        good.replacen("r1.2026-01", "r1.2026-13", 1),
        good.replacen("r1.2026-01", "r1.26-01", 1),
        good.replacen("r1.2026-01", "1.2026-01", 1),
        good.replacen("r1.2026-01", "", 1),
        // mode
        good.replacen(":d:", ":x:", 1),
        good.replacen(":d:", ":D:", 1),
        good.replacen(":d:", "::", 1),
        good.replacen(":d:", ":dd:", 1),
        good.replacen(":d:", ":d", 1),
        // payload characters
        format!("veil:v1:r1.2026-01:d:{}+{}", &payload[..4], &payload[5..]),
        format!("veil:v1:r1.2026-01:d:{}/{}", &payload[..4], &payload[5..]),
        format!("veil:v1:r1.2026-01:d:{} {}", &payload[..4], &payload[5..]),
        format!("veil:v1:r1.2026-01:d:{}.{}", &payload[..4], &payload[5..]),
        format!("veil:v1:r1.2026-01:d:{}é", &payload[..payload.len() - 1]),
        format!("{good}\n"),
        format!("{good}:"),
        // padding
        format!("{good}="),
        format!("{good}=="),
        // lengths
        // lengths of the form 4k + 1 are impossible in base64
        format!("veil:v1:r1.2026-01:d:{}", &payload[..payload.len() - 2]),
        format!("{good}AA"),
        "veil:v1:r1.2026-01:d:".to_string(),
        "veil:v1:r1.2026-01:".to_string(),
        "veil:v1:".to_string(),
        String::new(),
        "plain text".to_string(),
    ];
    for s in &bad {
        assert!(SealedValue::parse(s).is_none(), "{s:?} must not parse");
    }
    // 47 chars: the last char carries 2 unused bits, which must be zero.
    assert_eq!(payload.len() % 4, 3);
    let last = payload.as_bytes()[payload.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.iter().position(|&c| c == last).unwrap();
    let noncanonical = alphabet[idx | 1] as char;
    let s = format!(
        "veil:v1:r1.2026-01:d:{}{}",
        &payload[..payload.len() - 1],
        noncanonical
    );
    assert!(
        SealedValue::parse(&s).is_none(),
        "non-canonical trailing bits"
    );
    assert!(looks_sealed(b"veil:v1:"));
    assert!(looks_sealed(b"veil:v1:garbage"));
    assert!(!looks_sealed(b"veil:v1"));
    assert!(!looks_sealed(b"xveil:v1:"));
    assert!(!looks_sealed(b""));
    assert_eq!(PREFIX, "veil:v1:");
}

// ---------------------------------------------------------------------------------------
// Opening: what must fail.

#[test]
fn open_fails_on_any_tampered_payload_char() {
    let k = key("r1.2026-01", 1);
    for mode in [Mode::Deterministic, Mode::Randomized] {
        let s = seal(&k, mode, ValueType::Number, b"1.50");
        let start = s.rfind(':').unwrap() + 1;
        for i in start..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            match SealedValue::parse(&t) {
                // The last char may become non-canonical; then it is simply not a Veil value.
                None => assert_eq!(i, s.len() - 1, "{mode:?} pos {i}"),
                Some(v) => assert_eq!(
                    k.open(&v).map(|_| ()),
                    Err(CipherError::Authentication),
                    "{mode:?} pos {i}"
                ),
            }
        }
    }
}

#[test]
fn open_fails_on_swapped_mode_char() {
    let k = key("r1.2026-01", 1);
    // Long enough that the payload parses under either mode.
    let d = seal(
        &k,
        Mode::Deterministic,
        ValueType::String,
        b"0123456789abcdef",
    );
    let r = seal(&k, Mode::Randomized, ValueType::String, b"0123456789abcdef");
    let d_as_r = d.replacen(":d:", ":r:", 1);
    let r_as_d = r.replacen(":r:", ":d:", 1);
    assert_eq!(open(&k, &d_as_r), Err(CipherError::Authentication));
    assert_eq!(open(&k, &r_as_d), Err(CipherError::Authentication));
}

#[test]
fn open_fails_under_another_key() {
    let a = key("r1.2026-01", 1);
    let same_kid_other_dek = key("r1.2026-01", 2);
    let other_kid = key("r2.2026-01", 1);
    for mode in [Mode::Deterministic, Mode::Randomized] {
        let s = seal(&a, mode, ValueType::String, b"secret");
        assert_eq!(
            open(&same_kid_other_dek, &s),
            Err(CipherError::Authentication)
        );
        assert_eq!(open(&other_kid, &s), Err(CipherError::KidMismatch));
        // Rewriting the kid in the header to the other key's kid (same DEK bytes!) still
        // fails: the kid is bound as associated data.
        let moved = s.replacen("r1.2026-01", "r2.2026-01", 1);
        assert_eq!(open(&other_kid, &moved), Err(CipherError::Authentication));
        assert_eq!(open(&a, &s), Ok((ValueType::String, b"secret".to_vec())));
    }
}

#[test]
fn open_rejects_hand_built_malformed_values() {
    let k = key("r1.2026-01", 1);
    // `SealedValue` has public fields: a caller could build one that `parse` would reject.
    let v = SealedValue {
        version: veil_core::crypto::value::Version::V1,
        kid_str: "r1.2026-01",
        kid: kid("r1.2026-01"),
        mode: Mode::Randomized,
        scope: None,
        header: "veil:v1:r1.2026-01:r",
        payload: "AAAA",
    };
    assert_eq!(k.open(&v).map(|_| ()), Err(CipherError::Malformed));
    let v = SealedValue {
        payload: "!!!!",
        ..v
    };
    assert_eq!(k.open(&v).map(|_| ()), Err(CipherError::Malformed));
    let v = SealedValue {
        payload: "",
        mode: Mode::Deterministic,
        ..v
    };
    assert_eq!(k.open(&v).map(|_| ()), Err(CipherError::Malformed));
}

#[test]
fn type_byte_is_authenticated_and_restored() {
    let k = key("r1.2026-01", 1);
    let as_string = seal(&k, Mode::Deterministic, ValueType::String, b"true");
    let as_bool = seal(&k, Mode::Deterministic, ValueType::Bool, b"true");
    assert_ne!(as_string, as_bool);
    assert_eq!(
        open(&k, &as_string),
        Ok((ValueType::String, b"true".to_vec()))
    );
    assert_eq!(open(&k, &as_bool), Ok((ValueType::Bool, b"true".to_vec())));
    let n = seal(&k, Mode::Randomized, ValueType::Number, b"1e400");
    assert_eq!(open(&k, &n), Ok((ValueType::Number, b"1e400".to_vec())));
}

#[test]
fn deterministic_equality_and_inequality() {
    let k = key("r1.2026-01", 1);
    let a1 = seal(&k, Mode::Deterministic, ValueType::String, b"alice");
    let a2 = seal(&k, Mode::Deterministic, ValueType::String, b"alice");
    let b = seal(&k, Mode::Deterministic, ValueType::String, b"alicf");
    let a_other_key = seal(
        &key("r1.2026-01", 2),
        Mode::Deterministic,
        ValueType::String,
        b"alice",
    );
    let a_other_kid = seal(
        &key("r1.2026-02", 1),
        Mode::Deterministic,
        ValueType::String,
        b"alice",
    );
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    assert_ne!(a1, a_other_key);
    assert_ne!(a1.rsplit(':').next(), a_other_kid.rsplit(':').next());
    // The number text is kept exactly, so 1.5 and 1.50 are different values.
    assert_ne!(
        seal(&k, Mode::Deterministic, ValueType::Number, b"1.5"),
        seal(&k, Mode::Deterministic, ValueType::Number, b"1.50")
    );
}

#[test]
fn randomized_differs_each_time_and_opens() {
    let k = key("r1.2026-01", 1);
    let all: Vec<String> = (0..64)
        .map(|_| seal(&k, Mode::Randomized, ValueType::String, b"alice"))
        .collect();
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len());
    let nonces: std::collections::HashSet<_> = all
        .iter()
        .map(|s| s.rsplit(':').next().unwrap()[..16].to_string())
        .collect();
    assert_eq!(nonces.len(), all.len(), "nonces repeat");
    for s in &all {
        assert_eq!(open(&k, s), Ok((ValueType::String, b"alice".to_vec())));
    }
}

#[test]
fn many_values_into_one_buffer() {
    let k = key("r1.2026-01", 1);
    let mut out = Vec::new();
    let values: Vec<Vec<u8>> = (0..50).map(|i| vec![b'a' + (i % 26) as u8; i]).collect();
    for (i, v) in values.iter().enumerate() {
        let mode = if i % 2 == 0 {
            Mode::Deterministic
        } else {
            Mode::Randomized
        };
        k.seal_v1_into(mode, ValueType::String, v, &mut out)
            .unwrap();
        out.push(b',');
    }
    let text = String::from_utf8(out).unwrap();
    let parts: Vec<&str> = text.trim_end_matches(',').split(',').collect();
    assert_eq!(parts.len(), values.len());
    for (p, v) in parts.iter().zip(&values) {
        assert_eq!(open(&k, p), Ok((ValueType::String, v.clone())));
    }
}

#[test]
fn opened_debug_hides_the_value() {
    let k = key("r1.2026-01", 1);
    let s = seal(&k, Mode::Deterministic, ValueType::String, b"topsecret");
    let o = k.open(&SealedValue::parse(&s).unwrap()).unwrap();
    assert!(!format!("{o:?}").contains("topsecret"));
    assert!(!format!("{o:?}").contains("116, 111, 112"));
}

// ---------------------------------------------------------------------------------------
// Properties.

fn any_type() -> impl Strategy<Value = ValueType> {
    prop_oneof![
        Just(ValueType::String),
        Just(ValueType::Number),
        Just(ValueType::Bool)
    ]
}

fn any_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Deterministic), Just(Mode::Randomized)]
}

proptest! {
    #[test]
    fn round_trip_arbitrary_bytes(
        ty in any_type(),
        mode in any_mode(),
        value in proptest::collection::vec(any::<u8>(), 0..300),
        dek in any::<[u8; 32]>(),
    ) {
        let k = SealingKey::new(kid("r5.2031-09"), &Dek::from_bytes(dek));
        let mut out = Vec::new();
        k.seal_v1_into(mode, ty, &value, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        let v = SealedValue::parse(&s).unwrap();
        prop_assert_eq!(v.mode, mode);
        let o = k.open(&v).unwrap();
        prop_assert_eq!(o.ty, ty);
        prop_assert_eq!(&o.value[..], &value[..]);
        if mode == Mode::Deterministic {
            let mut again = Vec::new();
            k.seal_v1_into(mode, ty, &value, &mut again).unwrap();
            prop_assert_eq!(again, s.into_bytes());
        }
    }

    #[test]
    fn parse_never_panics(s in ".{0,80}") {
        let _ = SealedValue::parse(&s);
        let with_prefix = format!("veil:v1:r1.2026-01:d:{s}");
        if let Some(v) = SealedValue::parse(&with_prefix) {
            // Random payloads never authenticate.
            prop_assert!(key("r1.2026-01", 3).open(&v).is_err());
        }
    }

    #[test]
    fn any_payload_edit_fails_to_open(
        value in proptest::collection::vec(any::<u8>(), 0..64),
        mode in any_mode(),
        pos in any::<prop::sample::Index>(),
        ch in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()),
    ) {
        let k = key("r1.2026-01", 4);
        let s = seal(&k, mode, ValueType::String, &value);
        let start = s.rfind(':').unwrap() + 1;
        let i = start + pos.index(s.len() - start);
        let mut b = s.clone().into_bytes();
        prop_assume!(b[i] != ch);
        b[i] = ch;
        let t = String::from_utf8(b).unwrap();
        if let Some(v) = SealedValue::parse(&t) {
            prop_assert_eq!(k.open(&v).map(|_| ()), Err(CipherError::Authentication));
        }
    }
}
