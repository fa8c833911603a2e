//! AES-SIV (RFC 5297) known answers through the `aes-siv` crate, the implementation behind
//! Veil's deterministic mode (`Aes256Siv`, AES-SIV-CMAC-512).
//!
//! - RFC 5297 Appendix A.1 and A.2 (256-bit keys, `Aes128Siv`: same generic code as
//!   `Aes256Siv`), written out below from the RFC.
//! - `vectors/cryptography_aes_siv_openssl.txt` (pyca cryptography-vectors 50.0.2): the RFC
//!   vectors plus 384- and 512-bit keys.
//! - `vectors/wycheproof_aes_siv_cmac_test.json` (Project Wycheproof): 442 cases, 256/384/512
//!   bit keys, valid and invalid.
//!
//! Every case goes through both the allocating API and the detached in/out API that
//! `veil_core::crypto::cipher` uses (`encrypt_inout_detached` / `decrypt_inout_detached`).

use aes_gcm::aes::Aes192;
use aes_siv::aead::inout::InOutBuf;
use aes_siv::siv::{Aes128Siv, Aes256Siv, CmacSiv};
use aes_siv::KeyInit;
use serde_json::Value;

/// AES-SIV seal/open with any of the three key sizes, both APIs. Returns `V || C`.
trait SivOps {
    fn seal(&self, key: &[u8], ads: &[Vec<u8>], pt: &[u8]) -> Vec<u8>;
    fn open(&self, key: &[u8], ads: &[Vec<u8>], ct: &[u8]) -> Option<Vec<u8>>;
}

struct Siv;

macro_rules! with_siv {
    ($key:expr, |$s:ident| $body:expr) => {
        match $key.len() {
            32 => {
                let mut $s = Aes128Siv::new_from_slice($key).unwrap();
                $body
            }
            48 => {
                let mut $s = CmacSiv::<Aes192>::new_from_slice($key).unwrap();
                $body
            }
            64 => {
                let mut $s = Aes256Siv::new_from_slice($key).unwrap();
                $body
            }
            n => panic!("unexpected AES-SIV key length {n}"),
        }
    };
}

impl SivOps for Siv {
    fn seal(&self, key: &[u8], ads: &[Vec<u8>], pt: &[u8]) -> Vec<u8> {
        let whole = with_siv!(key, |s| s.encrypt(ads, pt).unwrap());
        // Detached in/out path (what SealingKey uses).
        let mut buf = pt.to_vec();
        let tag = with_siv!(key, |s| s
            .encrypt_inout_detached(ads, InOutBuf::from(&mut buf[..]))
            .unwrap());
        let mut detached = tag.to_vec();
        detached.extend_from_slice(&buf);
        assert_eq!(whole, detached, "allocating and detached APIs disagree");
        whole
    }

    fn open(&self, key: &[u8], ads: &[Vec<u8>], ct: &[u8]) -> Option<Vec<u8>> {
        let whole = with_siv!(key, |s| s.decrypt(ads, ct).ok());
        let detached = if ct.len() < 16 {
            None
        } else {
            let (tag, body) = ct.split_at(16);
            let tag = aes_siv::Tag::try_from(tag).unwrap();
            let mut buf = body.to_vec();
            with_siv!(key, |s| s
                .decrypt_inout_detached(ads, InOutBuf::from(&mut buf[..]), &tag)
                .ok()
                .map(|()| buf))
        };
        assert_eq!(whole, detached, "allocating and detached APIs disagree");
        whole
    }
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.trim()).unwrap()
}

fn check_valid(key: &[u8], ads: &[Vec<u8>], pt: &[u8], expected: &[u8], what: &str) {
    assert_eq!(
        hex::encode(Siv.seal(key, ads, pt)),
        hex::encode(expected),
        "{what}: encrypt"
    );
    assert_eq!(
        Siv.open(key, ads, expected).as_deref(),
        Some(pt),
        "{what}: decrypt"
    );
    // Any single bit flip anywhere in V || C must be rejected.
    for i in 0..expected.len() {
        let mut bad = expected.to_vec();
        bad[i] ^= 0x01;
        assert_eq!(Siv.open(key, ads, &bad), None, "{what}: flipped byte {i}");
    }
    // So must a changed header list.
    let mut other = ads.to_vec();
    other.push(Vec::new());
    assert_eq!(Siv.open(key, &other, expected), None, "{what}: extra AD");
}

#[test]
fn rfc5297_a1_deterministic() {
    let key = h("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    let ad = h("101112131415161718191a1b1c1d1e1f2021222324252627");
    let pt = h("112233445566778899aabbccddee");
    let out = h(
        "85632d07c6e8f37f950acd320a2ecc93 40c02b9690c4dc04daef7f6afe5c"
            .replace(' ', "")
            .as_str(),
    );
    check_valid(&key, &[ad], &pt, &out, "RFC 5297 A.1");
}

#[test]
fn rfc5297_a2_nonce_based() {
    let key = h("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
    let ad1 = h("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100");
    let ad2 = h("102030405060708090a0");
    let nonce = h("09f911029d74e35bd84156c5635688c0");
    let pt = h("7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553");
    let out = h(concat!(
        "7bdb6e3b432667eb06f4d14bff2fbd0f",
        "cb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d"
    ));
    check_valid(&key, &[ad1, ad2, nonce], &pt, &out, "RFC 5297 A.2");
}

#[test]
fn cryptography_vectors_openssl_siv() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/cryptography_aes_siv_openssl.txt"
    ))
    .unwrap();
    let mut by_key_bits = std::collections::BTreeMap::<usize, usize>::new();
    for block in text.split("\n\n").filter(|b| b.contains("Key =")) {
        let mut key = None;
        let mut ads = Vec::new();
        let (mut tag, mut pt, mut ct) = (None, None, None);
        for line in block.lines().filter(|l| !l.starts_with('#')) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim() {
                "Key" => key = Some(h(v)),
                "AAD" | "AAD2" | "AAD3" => ads.push(h(v)),
                "Tag" => tag = Some(h(v)),
                "Plaintext" => pt = Some(h(v)),
                "Ciphertext" => ct = Some(h(v)),
                "COUNT" => {}
                other => panic!("unknown field {other}"),
            }
        }
        let key = key.unwrap();
        let mut expected = tag.unwrap();
        expected.extend(ct.unwrap());
        check_valid(&key, &ads, &pt.unwrap(), &expected, "openssl.txt");
        *by_key_bits.entry(key.len() * 8).or_default() += 1;
    }
    assert_eq!(
        by_key_bits,
        [(256, 2), (384, 1), (512, 1)].into_iter().collect(),
        "vector count per key size"
    );
}

#[test]
fn wycheproof_aes_siv_cmac() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/wycheproof_aes_siv_cmac_test.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["algorithm"], "AES-SIV-CMAC");
    let mut counts = std::collections::BTreeMap::<(u64, String), usize>::new();
    for group in doc["testGroups"].as_array().unwrap() {
        assert_eq!(group["type"], "DaeadTest");
        let key_bits = group["keySize"].as_u64().unwrap();
        for t in group["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            let key = h(t["key"].as_str().unwrap());
            assert_eq!(key.len() as u64 * 8, key_bits, "tc {id}");
            // Wycheproof's deterministic AEAD: exactly one associated-data component.
            let ads = vec![h(t["aad"].as_str().unwrap())];
            let msg = h(t["msg"].as_str().unwrap());
            let ct = h(t["ct"].as_str().unwrap());
            let result = t["result"].as_str().unwrap();
            let what = format!("wycheproof tc {id} ({})", t["comment"]);
            match result {
                "valid" => check_valid(&key, &ads, &msg, &ct, &what),
                "invalid" => {
                    assert_eq!(Siv.open(&key, &ads, &ct), None, "{what}: must not open");
                    assert_ne!(
                        Siv.seal(&key, &ads, &msg),
                        ct,
                        "{what}: must not seal to ct"
                    );
                }
                other => panic!("{what}: unexpected result {other}"),
            }
            *counts.entry((key_bits, result.to_string())).or_default() += 1;
        }
    }
    let expected: std::collections::BTreeMap<(u64, String), usize> = [
        ((256, "valid"), 40),
        ((256, "invalid"), 108),
        ((384, "valid"), 39),
        ((384, "invalid"), 108),
        ((512, "valid"), 39),
        ((512, "invalid"), 108),
    ]
    .into_iter()
    .map(|((b, r), n)| ((b, r.to_string()), n))
    .collect();
    assert_eq!(counts, expected);
}

/// The hot-path implementation (`veil_core::crypto::siv::PreparedSiv`: S2V prefix precomputed per
/// key and AD) against every 512-bit Wycheproof case.
#[test]
fn wycheproof_512_through_prepared_siv() {
    use veil_core::crypto::siv::PreparedSiv;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/wycheproof_aes_siv_cmac_test.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        if group["keySize"].as_u64() != Some(512) {
            continue;
        }
        for t in group["tests"].as_array().unwrap() {
            let key: [u8; 64] = h(t["key"].as_str().unwrap()).try_into().unwrap();
            let siv = PreparedSiv::new(&key, &h(t["aad"].as_str().unwrap()));
            let msg = h(t["msg"].as_str().unwrap());
            let ct = h(t["ct"].as_str().unwrap());
            let what = format!("tc {}", t["tcId"]);
            let opened = (ct.len() >= 16).then(|| {
                let tag: [u8; 16] = ct[..16].try_into().unwrap();
                let mut buf = ct[16..].to_vec();
                siv.decrypt(&tag, &mut buf).ok().map(|()| buf)
            });
            if t["result"] == "valid" {
                let mut buf = msg.clone();
                let tag = siv.encrypt(&mut buf);
                assert_eq!([&tag[..], &buf[..]].concat(), ct, "{what}: seal");
                assert_eq!(opened.flatten(), Some(msg), "{what}: open");
                valid += 1;
            } else {
                assert_eq!(opened.flatten(), None, "{what}: must not open");
                invalid += 1;
            }
        }
    }
    assert_eq!((valid, invalid), (39, 108));
}

proptest::proptest! {
    /// PreparedSiv and the aes-siv crate agree on random keys, ADs and messages.
    #[test]
    fn prepared_siv_matches_the_aes_siv_crate(
        key in proptest::collection::vec(proptest::prelude::any::<u8>(), 64),
        ad in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
    ) {
        use veil_core::crypto::siv::PreparedSiv;
        let k: [u8; 64] = key.clone().try_into().unwrap();
        let mut buf = msg.clone();
        let tag = PreparedSiv::new(&k, &ad).encrypt(&mut buf);
        let reference = Siv.seal(&key, std::slice::from_ref(&ad), &msg);
        proptest::prop_assert_eq!([&tag[..], &buf[..]].concat(), reference);
    }
}
