#![allow(deprecated)] // the KAT file records the expanded decapsulation key (FIPS 203 legacy form)
//! ML-KEM-768 (FIPS 203) known answers for the ML-KEM half of X-Wing, through the `ml-kem`
//! crate (the implementation `x-wing` uses). The vectors are the first 10 records of
//! `asymmetric/MLKEM/kat_MLKEM_768.rsp` from PyPI `cryptography-vectors` 50.0.2 (FIPS 203
//! final: `KeyGen_internal(d, z)`, `Encaps_internal(ek, msg)`, and the implicit-rejection
//! secret `ss_n` of a modified ciphertext `ct_n`), see vectors/README.md.

use std::io::Read;

use ml_kem::array::Array;
use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::{ml_kem_768, ExpandedKeyEncoding};

fn records() -> Vec<std::collections::HashMap<String, Vec<u8>>> {
    let gz = include_bytes!("vectors/kat_MLKEM_768.first10.rsp.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(text.as_bytes())),
        "7bba7eeccee9a0016a94f8c40883a31324369468cf977c10f91c62afbea192b8"
    );
    let mut out = Vec::new();
    let mut cur = std::collections::HashMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        if k == "count" {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.insert(k.to_string(), hex::decode(v).unwrap());
    }
    out.push(cur);
    out
}

#[test]

fn fips203_kat_ml_kem_768() {
    let recs = records();
    assert_eq!(recs.len(), 10);
    for r in recs {
        let mut seed = r["d"].clone();
        seed.extend_from_slice(&r["z"]);
        let dk = ml_kem_768::DecapsulationKey::from_seed(Array::try_from(&seed[..]).unwrap());
        let ek = dk.encapsulation_key();
        assert_eq!(&ek.to_bytes()[..], &r["pk"][..]);
        assert_eq!(&dk.to_expanded_bytes()[..], &r["sk"][..]);
        let m = Array::try_from(&r["msg"][..]).unwrap();
        let (ct, ss) = ek.encapsulate_deterministic(&m);
        assert_eq!(&ct[..], &r["ct"][..]);
        assert_eq!(&ss[..], &r["ss"][..]);
        assert_eq!(&dk.decapsulate(&ct)[..], &r["ss"][..]);
        let ct_n = ml_kem_768::Ciphertext::try_from(&r["ct_n"][..]).unwrap();
        assert_eq!(&dk.decapsulate(&ct_n)[..], &r["ss_n"][..]);
    }
}
