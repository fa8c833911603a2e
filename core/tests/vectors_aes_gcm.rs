//! AES-256-GCM through the `aes-gcm` crate (Veil's randomized mode) against the NIST CAVP
//! vectors `gcmEncryptExtIV256.rsp` and `gcmDecrypt256.rsp` (CAVS 14.0, as shipped in PyPI
//! cryptography-vectors 50.0.2; see vectors/README.md). Every case with a 96-bit IV and a
//! 128-bit tag (the only parameters Veil uses) is run: encryption must reproduce CT and Tag,
//! decryption must restore PT, and the decrypt file's `FAIL` cases must be rejected.

use std::io::Read;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};

struct Record {
    section: Vec<(String, String)>,
    fields: Vec<(String, String)>,
    fail: bool,
}

impl Record {
    fn get(&self, k: &str) -> Vec<u8> {
        let v = self
            .fields
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("missing {k}"));
        hex::decode(&v.1).unwrap()
    }
    fn param(&self, k: &str) -> &str {
        &self.section.iter().find(|(n, _)| n == k).unwrap().1
    }
}

/// Decompresses `name`, checks its SHA-256 against the upstream file, parses the records.
fn load(name: &str, sha256_hex: &str) -> Vec<Record> {
    let path = format!("{}/tests/vectors/{name}.gz", env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(text.as_bytes())),
        sha256_hex,
        "{name} altered"
    );
    let mut out = Vec::new();
    let mut section: Vec<(String, String)> = Vec::new();
    let mut new_section = false;
    let mut cur: Option<Record> = None;
    for line in text.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !new_section {
                section.clear();
                new_section = true;
            }
            let (k, v) = p.split_once('=').unwrap();
            section.push((k.trim().to_string(), v.trim().to_string()));
        } else if let Some(c) = line.strip_prefix("Count =") {
            new_section = false;
            out.extend(cur.take());
            cur = Some(Record {
                section: section.clone(),
                fields: vec![("Count".into(), c.trim().into())],
                fail: false,
            });
        } else if line == "FAIL" {
            cur.as_mut().unwrap().fail = true;
        } else if let (Some(r), Some((k, v))) = (cur.as_mut(), line.split_once('=')) {
            r.fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out.extend(cur);
    out
}

fn selected(r: &Record) -> bool {
    assert_eq!(r.param("Keylen"), "256");
    r.param("IVlen") == "96" && r.param("Taglen") == "128"
}

fn cipher(r: &Record) -> (Aes256Gcm, aes_gcm::Nonce<U12>) {
    let key = r.get("Key");
    let iv = r.get("IV");
    (
        Aes256Gcm::new_from_slice(&key).unwrap(),
        aes_gcm::Nonce::<U12>::try_from(&iv[..]).unwrap(),
    )
}

fn decrypt(r: &Record) -> Option<Vec<u8>> {
    let (gcm, nonce) = cipher(r);
    let mut buf = r.get("CT");
    let tag = aes_gcm::Tag::try_from(&r.get("Tag")[..]).unwrap();
    gcm.decrypt_inout_detached(&nonce, &r.get("AAD"), InOutBuf::from(&mut buf[..]), &tag)
        .ok()
        .map(|()| buf)
}

#[test]
fn nist_gcm_encrypt_ext_iv_256() {
    let records = load(
        "gcmEncryptExtIV256.rsp",
        "4448b4998c3f58cd9f5542ddf7c573189a721ff3d3ac24cd5177bb4910a787f8",
    );
    assert_eq!(records.len(), 7875);
    let mut n = 0;
    for r in records.iter().filter(|r| selected(r)) {
        let (gcm, nonce) = cipher(r);
        let pt = r.get("PT");
        let mut buf = pt.clone();
        let tag = gcm
            .encrypt_inout_detached(&nonce, &r.get("AAD"), InOutBuf::from(&mut buf[..]))
            .unwrap();
        let what = format!("{:?} Count {}", r.section, r.fields[0].1);
        assert_eq!(hex::encode(&buf), hex::encode(r.get("CT")), "{what}: CT");
        assert_eq!(hex::encode(tag), hex::encode(r.get("Tag")), "{what}: Tag");
        assert_eq!(decrypt(r), Some(pt), "{what}: decrypt");
        n += 1;
    }
    // 5 PT lengths x 5 AAD lengths x 15 cases.
    assert_eq!(n, 375);
}

#[test]
fn nist_gcm_decrypt_256_including_failures() {
    let records = load(
        "gcmDecrypt256.rsp",
        "ed318735a517d5a85c82d2846c23dcf56e57a352fb0f0a163d9e7617a7bd12ad",
    );
    assert_eq!(records.len(), 7875);
    let (mut ok, mut fail) = (0, 0);
    for r in records.iter().filter(|r| selected(r)) {
        let what = format!("{:?} Count {}", r.section, r.fields[0].1);
        if r.fail {
            assert_eq!(decrypt(r), None, "{what}: must fail");
            fail += 1;
        } else {
            assert_eq!(decrypt(r), Some(r.get("PT")), "{what}: PT");
            ok += 1;
        }
    }
    // Counted independently with a Python one-liner over the same file.
    assert_eq!((ok, fail), (184, 191));
}
