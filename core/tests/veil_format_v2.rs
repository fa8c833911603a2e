//! The Veil `v2` value format end to end: known answers produced by an independent Python
//! implementation (`vectors/veil-v2-values.json`, see `gen_veil_v2_vectors.py`), the C2SP
//! XAES-256-GCM vectors, and each defect of issue #18 that format v2 fixes.

use serde_json::Value;
use veil_core::crypto::cipher::{
    padded_len, CipherError, Padding, Scope, SealingKey, Spec, ValueType,
};
use veil_core::crypto::keys::{Dek, Epoch, Kid, RootKey};
use veil_core::crypto::value::{Mode, SealedValue, Version};

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/veil-v2-values.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn key(k: &str, dek_byte: u8) -> SealingKey {
    SealingKey::new(k.parse().unwrap(), &Dek::from_bytes([dek_byte; 32]))
}

fn spec(mode: Mode, scope: &Scope) -> Spec<'_> {
    Spec {
        mode,
        scope,
        pad: Padding::Buckets,
    }
}

fn seal_with(key: &SealingKey, s: Spec<'_>, ty: ValueType, value: &[u8]) -> String {
    let mut out = Vec::new();
    key.seal(s, ty, value, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn seal(key: &SealingKey, mode: Mode, field: &str, ty: ValueType, value: &[u8]) -> String {
    seal_with(key, spec(mode, &Scope::field(field)), ty, value)
}

fn open(key: &SealingKey, s: &str) -> Result<(ValueType, Vec<u8>), CipherError> {
    let v = SealedValue::parse(s).expect("parses");
    key.open(&v).map(|o| (o.ty, o.value.to_vec()))
}

#[test]
fn c2sp_xaes_256_gcm_vectors() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use xaes_256_gcm::Xaes256Gcm;
    for (key, aad, ct) in [
        (
            [1u8; 32],
            &b""[..],
            "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271",
        ),
        (
            [3u8; 32],
            &b"c2sp.org/XAES-256-GCM"[..],
            "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
        ),
    ] {
        let c = Xaes256Gcm::new(&key.into());
        let nonce = xaes_256_gcm::Nonce::from(*b"ABCDEFGHIJKLMNOPQRSTUVWX");
        let out = c
            .encrypt(
                &nonce,
                Payload {
                    msg: b"XAES-256-GCM",
                    aad,
                },
            )
            .unwrap();
        assert_eq!(hex::encode(out), ct);
    }
}

#[test]
fn python_known_answers_byte_for_byte() {
    let doc = vectors();
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
            let dek = root.derive_dek(epoch);
            assert_eq!(
                dek.fingerprint().to_string(),
                k["fingerprint_hex"].as_str().unwrap()
            );
            SealingKey::new(kid, &dek)
        })
        .collect();
    for (ki, k) in keys.iter().enumerate() {
        let sk = &sealing_keys[ki];
        assert_eq!(
            sk.fingerprint().to_string(),
            k["fingerprint_hex"].as_str().unwrap()
        );
        for c in k["cases"].as_array().unwrap() {
            let ty = ValueType::from_byte(c["type"].as_str().unwrap().as_bytes()[0]).unwrap();
            let value = hex::decode(c["value_hex"].as_str().unwrap()).unwrap();
            let expected = c["sealed"].as_str().unwrap();
            let pad = if c["pad"].as_bool().unwrap() {
                Padding::Buckets
            } else {
                Padding::Off
            };
            let what = format!("{} {} {} {:?}", k["kid"], c["mode"], c["comment"], pad);
            let mut out = b"[\"".to_vec();
            match c["mode"].as_str().unwrap() {
                "d" => {
                    let scope = match c["scope_kind"].as_str().unwrap() {
                        "field" => Scope::field(c["scope_name"].as_str().unwrap()),
                        "domain" => Scope::domain(c["scope_name"].as_str().unwrap()),
                        other => panic!("scope kind {other}"),
                    };
                    let s = Spec {
                        mode: Mode::Deterministic,
                        scope: &scope,
                        pad,
                    };
                    sk.seal(s, ty, &value, &mut out).unwrap()
                }
                "r" => {
                    let nonce: [u8; 24] = hex::decode(c["nonce_hex"].as_str().unwrap())
                        .unwrap()
                        .try_into()
                        .unwrap();
                    sk.seal_v2_randomized_with_nonce(pad, ty, &value, nonce, &mut out)
                        .unwrap()
                }
                m => panic!("mode {m}"),
            }
            assert_eq!(&out[..2], b"[\"", "{what}: prefix kept");
            assert_eq!(std::str::from_utf8(&out[2..]).unwrap(), expected, "{what}");
            assert_eq!(open(sk, expected), Ok((ty, value.clone())), "{what}: open");
            let other = &sealing_keys[1 - ki];
            assert_eq!(
                open(other, expected),
                Err(CipherError::KidMismatch),
                "{what}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 13 * 2 * 4);
}

#[test]
fn scope_tags_and_padding_match_python() {
    let doc = vectors();
    for s in doc["scopes"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let scope = match s["kind"].as_str().unwrap() {
            "field" => Scope::field(name),
            _ => Scope::domain(name),
        };
        assert_eq!(scope.as_str(), s["tag"].as_str().unwrap(), "{name}");
    }
    for p in doc["padding"].as_array().unwrap() {
        let n = p["body_len"].as_u64().unwrap() as usize;
        let pad = if p["pad"].as_bool().unwrap() {
            Padding::Buckets
        } else {
            Padding::Off
        };
        assert_eq!(
            padded_len(n, pad),
            Some(p["padded_len"].as_u64().unwrap() as usize),
            "{n} {pad:?}"
        );
    }
    // Padmé's bound: never more than 12 % over, above the power-of-two range.
    for n in 256..20_000 {
        let p = padded_len(n, Padding::Buckets).unwrap();
        assert!(p > n && (p - n - 1) * 100 <= (n + 1) * 12, "{n} -> {p}");
    }
    assert_eq!(padded_len(usize::MAX, Padding::Buckets), None);
}

/// Issue #18: "a randomized `true` is always 65 characters, `false` 67". In v2 both are one
/// byte before padding, so every boolean seals to the same length, padded or not.
#[test]
fn booleans_have_one_length() {
    let k = key("r1.2026-01", 1);
    for pad in [Padding::Buckets, Padding::Off] {
        let scope = Scope::field("consent");
        for mode in [Mode::Randomized, Mode::Deterministic] {
            let s = Spec {
                mode,
                scope: &scope,
                pad,
            };
            let t = seal_with(&k, s, ValueType::Bool, b"true");
            let f = seal_with(&k, s, ValueType::Bool, b"false");
            assert_eq!(t.len(), f.len(), "{mode:?} {pad:?}");
            assert_eq!(open(&k, &t), Ok((ValueType::Bool, b"true".to_vec())));
            assert_eq!(open(&k, &f), Ok((ValueType::Bool, b"false".to_vec())));
        }
    }
    let mut out = Vec::new();
    assert_eq!(
        k.seal(
            spec(Mode::Randomized, &Scope::UNSCOPED),
            ValueType::Bool,
            b"yes",
            &mut out
        ),
        Err(CipherError::NotABoolean)
    );
    assert!(out.is_empty());
}

/// Issue #18: "every string's length shows". With `pad` on, values whose lengths fall in one
/// bucket seal to one length; only the bucket shows.
#[test]
fn lengths_show_only_their_bucket() {
    let k = key("r1.2026-01", 1);
    for mode in [Mode::Randomized, Mode::Deterministic] {
        let lens: std::collections::BTreeSet<usize> = (0..=15)
            .map(|n| seal(&k, mode, "a", ValueType::String, &vec![b'x'; n]).len())
            .collect();
        assert_eq!(lens.len(), 1, "{mode:?}: 0..=15 bytes look alike");
        let lens: std::collections::BTreeSet<usize> = (16..=31)
            .map(|n| seal(&k, mode, "a", ValueType::String, &vec![b'x'; n]).len())
            .collect();
        assert_eq!(lens.len(), 1, "{mode:?}: 16..=31 bytes look alike");
        // A number of up to 15 characters looks like any short string.
        assert_eq!(
            seal(&k, mode, "a", ValueType::Number, b"123456789012345").len(),
            seal(&k, mode, "a", ValueType::String, b"").len()
        );
    }
    // `pad: false` shows the exact length again (what the option is for).
    let off = |n: usize| {
        let s = Spec {
            mode: Mode::Randomized,
            scope: &Scope::UNSCOPED,
            pad: Padding::Off,
        };
        seal_with(&k, s, ValueType::String, &vec![b'x'; n]).len()
    };
    assert_ne!(off(3), off(9));
}

/// Issue #18: "the associated data is the header only, so `request.body.email` and
/// `response.body.owner` holding one address get one ciphertext". In v2 they differ, unless
/// both fields are in one named domain.
#[test]
fn deterministic_values_are_scoped_to_their_field() {
    let k = key("r1.2026-01", 1);
    let a = seal(
        &k,
        Mode::Deterministic,
        "request.body.email",
        ValueType::String,
        b"jane@example.com",
    );
    let b = seal(
        &k,
        Mode::Deterministic,
        "response.body.owner",
        ValueType::String,
        b"jane@example.com",
    );
    assert_ne!(a, b);
    let pa = a.rsplit(':').next().unwrap();
    let pb = b.rsplit(':').next().unwrap();
    assert_ne!(pa, pb, "payloads differ, not only the tags");
    // Same field, same value: equal (searchable).
    assert_eq!(
        a,
        seal(
            &k,
            Mode::Deterministic,
            "request.body.email",
            ValueType::String,
            b"jane@example.com"
        )
    );
    // A named domain joins them again.
    let email = Scope::domain("email");
    let s = spec(Mode::Deterministic, &email);
    assert_eq!(
        seal_with(&k, s, ValueType::String, b"jane@example.com"),
        seal_with(&k, s, ValueType::String, b"jane@example.com")
    );
    // The scope tag is authenticated: moved to another scope's tag, the value fails.
    let other = Scope::field("response.body.owner");
    let v = SealedValue::parse(&a).unwrap();
    let moved = a.replacen(v.scope.unwrap(), other.as_str(), 1);
    assert_eq!(open(&k, &moved), Err(CipherError::Authentication));
    assert_eq!(
        open(&k, &a),
        Ok((ValueType::String, b"jane@example.com".to_vec()))
    );
}

/// Issue #18: randomized values used 96-bit random nonces. In v2 the nonce is 192 bits
/// (XAES-256-GCM): 24 bytes at the start of each payload, distinct per value.
#[test]
fn randomized_values_carry_192_bit_nonces() {
    use base64::Engine;
    let k = key("r1.2026-01", 1);
    let mut nonces = std::collections::HashSet::new();
    for _ in 0..256 {
        let s = seal(&k, Mode::Randomized, "a", ValueType::String, b"alice");
        let v = SealedValue::parse(&s).unwrap();
        assert_eq!(
            (v.version, v.mode, v.scope),
            (Version::V2, Mode::Randomized, None)
        );
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.payload)
            .unwrap();
        // nonce 24 + type 1 + padded 16 + tag 16
        assert_eq!(raw.len(), 24 + 1 + 16 + 16);
        assert!(nonces.insert(raw[..24].to_vec()), "a nonce repeated");
        assert_eq!(open(&k, &s), Ok((ValueType::String, b"alice".to_vec())));
    }
}

#[test]
fn v2_parsing_is_strict() {
    let k = key("r1.2026-01", 1);
    let d = seal(&k, Mode::Deterministic, "a", ValueType::String, b"x");
    let r = seal(&k, Mode::Randomized, "a", ValueType::String, b"x");
    let vd = SealedValue::parse(&d).unwrap();
    assert_eq!(vd.version, Version::V2);
    assert_eq!(vd.scope, Some(Scope::field("a").as_str()));
    assert_eq!(
        vd.header,
        format!("veil:v2:r1.2026-01:d:{}", Scope::field("a").as_str())
    );
    let vr = SealedValue::parse(&r).unwrap();
    assert_eq!(vr.header, "veil:v2:r1.2026-01:r");
    let tag = vd.scope.unwrap();
    for bad in [
        d.replacen(tag, &tag[1..], 1),
        d.replacen(tag, &format!("{tag}A"), 1),
        d.replacen(tag, &format!("{}=", &tag[..11]), 1),
        d.replacen(&format!(":{tag}"), "", 1),
        d.replacen("veil:v2:", "veil:v3:", 1),
        r.replacen(":r:", &format!(":r:{tag}:"), 1),
        // A v1 header in front of a v2 deterministic payload shape.
        d.replacen("veil:v2:", "veil:v1:", 1),
    ] {
        match SealedValue::parse(&bad) {
            None => {}
            Some(v) => assert!(k.open(&v).is_err(), "{bad}"),
        }
    }
    // Swapping the mode character fails to authenticate or to parse.
    let r_as_d = r.replacen(":r:", &format!(":d:{tag}:"), 1);
    if let Some(v) = SealedValue::parse(&r_as_d) {
        assert!(k.open(&v).is_err());
    }
    // Too short to hold nonce + tag + type + marker.
    use base64::Engine;
    let short = |n: usize| {
        format!(
            "veil:v2:r1.2026-01:r:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0u8; n])
        )
    };
    assert!(SealedValue::parse(&short(41)).is_none());
    assert!(SealedValue::parse(&short(42)).is_some());
    assert_eq!(open(&k, &short(42)), Err(CipherError::Authentication));
}

/// v1 data sealed before format v2 (already at the vendor) still opens with the same key.
#[test]
fn v1_values_still_open() {
    let k = key("r1.2026-01", 1);
    for mode in [Mode::Deterministic, Mode::Randomized] {
        let mut out = Vec::new();
        k.seal_v1_into(mode, ValueType::String, b"old", &mut out)
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("veil:v1:"));
        assert_eq!(SealedValue::parse(&s).unwrap().version, Version::V1);
        assert_eq!(open(&k, &s), Ok((ValueType::String, b"old".to_vec())));
    }
}

#[test]
fn any_payload_edit_fails_to_open() {
    let k = key("r1.2026-01", 4);
    for mode in [Mode::Deterministic, Mode::Randomized] {
        let s = seal(&k, mode, "f", ValueType::Number, b"1.50");
        let start = s.rfind(':').unwrap() + 1;
        for i in start..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            if let Some(v) = SealedValue::parse(&t) {
                assert_eq!(
                    k.open(&v).map(|_| ()),
                    Err(CipherError::Authentication),
                    "{mode:?} {i}"
                );
            }
        }
        // Another key under the same kid does not open it.
        assert_eq!(
            open(&key("r1.2026-01", 5), &s),
            Err(CipherError::Authentication)
        );
    }
}
