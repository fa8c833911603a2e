//! X-Wing known answers (draft-connolly-cfrg-xwing-kem-06, Appendix "Test vectors"; the JSON
//! of the draft's repository `spec/test-vectors.json`, as shipped in the `x-wing` 0.1.1
//! crate and used by the browser client's tests too) through `veil_core::relay::kem`.

use veil_core::relay::kem::{self, ClientKem};

#[derive(serde::Deserialize)]
struct V {
    seed: String,
    eseed: String,
    ss: String,
    sk: String,
    pk: String,
    ct: String,
}

#[test]
fn draft06_vectors() {
    let vs: Vec<V> = serde_json::from_str(include_str!("vectors/xwing-draft06.json")).unwrap();
    assert_eq!(vs.len(), 3);
    for v in vs {
        assert_eq!(v.seed, v.sk, "X-Wing's decapsulation key is its seed");
        let seed: [u8; 32] = hex::decode(&v.seed).unwrap().try_into().unwrap();
        let eseed: [u8; 64] = hex::decode(&v.eseed).unwrap().try_into().unwrap();
        let k = ClientKem::from_seed(seed);
        let pk = k.public_key();
        assert_eq!(hex::encode(&pk), v.pk);
        assert_eq!(pk.len(), kem::PUBLIC_KEY_LEN);
        let (ct, ss) = kem::encapsulate_deterministic(&pk, &eseed).unwrap();
        assert_eq!(hex::encode(&ct), v.ct);
        assert_eq!(ct.len(), kem::CIPHERTEXT_LEN);
        assert_eq!(hex::encode(*ss), v.ss);
        assert_eq!(hex::encode(*k.decapsulate(&ct).unwrap()), v.ss);
    }
}
