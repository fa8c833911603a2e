//! The pair keys: `c2s` and `s2c` from the X-Wing shared secret, bound by the transcript
//! hash to the client id, the pair id, the public key and the ciphertext
//! (docs/relay-protocol.md §2). The keyservice and the client run the same function.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::LABEL;

/// `info` of the client→server key.
pub const C2S_INFO: &[u8] = b"veil-relay/v1 c2s";
/// `info` of the server→client key.
pub const S2C_INFO: &[u8] = b"veil-relay/v1 s2c";

/// One pair's two AES-256-GCM keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PairKeys {
    pub c2s: [u8; 32],
    pub s2c: [u8; 32],
}

impl core::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PairKeys(<redacted>)")
    }
}

/// `th = SHA-256(LABEL || "/pair" || 0x00 || client_id || 0x00 || pair_id || 0x00 || pk || ct)`.
pub fn transcript_hash(client_id: &str, pair_id: &str, pk: &[u8], ct: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(b"/pair");
    h.update([0u8]);
    h.update(client_id.as_bytes());
    h.update([0u8]);
    h.update(pair_id.as_bytes());
    h.update([0u8]);
    h.update(pk);
    h.update(ct);
    h.finalize().into()
}

/// `prk = HKDF-Extract(th, ss)`, `c2s`/`s2c = HKDF-Expand(prk, LABEL || " c2s"/" s2c", 32)`.
pub fn derive(ss: &[u8; 32], client_id: &str, pair_id: &str, pk: &[u8], ct: &[u8]) -> PairKeys {
    let th = transcript_hash(client_id, pair_id, pk, ct);
    let hk = Hkdf::<Sha256>::new(Some(&th), ss);
    let mut keys = PairKeys {
        c2s: [0; 32],
        s2c: [0; 32],
    };
    // HKDF-Expand fails only for outputs over 255 * 32 bytes; 32 bytes cannot fail.
    let _ = hk.expand(C2S_INFO, &mut keys.c2s);
    let _ = hk.expand(S2C_INFO, &mut keys.s2c);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_is_hkdf_over_the_transcript() {
        let ss = [0x11; 32];
        let k = derive(&ss, "cid", "pid", b"pk", b"ct");
        // HKDF written out with HMAC: prk = HMAC(th, ss), T(1) = HMAC(prk, info || 0x01)
        use hmac::{KeyInit, Mac};
        let hmac = |key: &[u8], parts: &[&[u8]]| {
            let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        };
        let th: Vec<u8> = Sha256::digest(b"veil-relay/v1/pair\0cid\0pid\0pkct").to_vec();
        assert_eq!(transcript_hash("cid", "pid", b"pk", b"ct").to_vec(), th);
        let prk = hmac(&th, &[&ss]);
        assert_eq!(k.c2s.to_vec(), hmac(&prk, &[b"veil-relay/v1 c2s", &[1]]));
        assert_eq!(k.s2c.to_vec(), hmac(&prk, &[b"veil-relay/v1 s2c", &[1]]));
        assert_ne!(k.c2s, k.s2c);
    }

    #[test]
    fn every_input_is_bound() {
        let ss = [0x22; 32];
        let base = derive(&ss, "a", "b", b"c", b"d").c2s;
        assert_ne!(base, derive(&[0x23; 32], "a", "b", b"c", b"d").c2s);
        assert_ne!(base, derive(&ss, "ax", "b", b"c", b"d").c2s);
        assert_ne!(base, derive(&ss, "a", "bx", b"c", b"d").c2s);
        assert_ne!(base, derive(&ss, "a", "b", b"cx", b"d").c2s);
        assert_ne!(base, derive(&ss, "a", "b", b"c", b"dx").c2s);
        // the 0x00 separators keep ("a","b") and ("a\0b"...) shapes apart
        assert_ne!(base, derive(&ss, "ab", "", b"c", b"d").c2s);
    }
}
