//! Pair keys sealed at rest in the Redis store (issue #17): reading Redis — a dump, a
//! replica, `MONITOR`, a backup — yields no traffic key.
//!
//! Each of a pair's two keys is stored as `u32be(version) || nonce (12) || AES-256-GCM(key)`
//! under `K(version) = HKDF-SHA256(ikm = root(version), info = "veil/v1/relay-store-seal" ||
//! u32be(version))`, sealing under the current root, with associated data
//! `"veil/v1/relay-store" || 0x00 || pair_id || 0x00 || field`: a sealed key cannot be moved
//! to another pair or swapped between `c2s` and `s2c`. The nonce is random; with 96-bit
//! random nonces a key must seal fewer than 2^32 values (NIST SP 800-38D §8.3), i.e. fewer
//! than 2^31 pairs per root version — `keyring rotate-root` starts a new key. A pair sealed
//! under a root this process does not hold (destroyed, or not yet reloaded) reads as unknown:
//! the client re-pairs.

use std::sync::{Arc, RwLock};

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::store::StoreError;
use crate::keyring::Roots;

/// HKDF `info` prefix of the store's sealing key.
pub const SEAL_INFO: &[u8] = b"veil/v1/relay-store-seal";
/// Associated data prefix.
const AD_LABEL: &[u8] = b"veil/v1/relay-store";
/// `u32be(version) || nonce || ciphertext (32) || tag (16)`.
pub const SEALED_LEN: usize = 4 + 12 + 32 + 16;

/// The roots the store seals under; updated whenever the keyservice (re)loads its keyring.
#[derive(Default)]
pub struct StoreSealer {
    roots: RwLock<Option<Arc<Roots>>>,
}

impl std::fmt::Debug for StoreSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSealer(<redacted>)")
    }
}

fn cipher(roots: &Roots, version: u32) -> Option<Aes256Gcm> {
    let root = roots.root(version)?;
    let hk = Hkdf::<Sha256>::new(None, root.as_bytes());
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[SEAL_INFO, &version.to_be_bytes()], k.as_mut_slice())
        .ok()?;
    Some(Aes256Gcm::new(&(*k).into()))
}

fn ad(pair_id: &str, field: &str) -> Vec<u8> {
    [AD_LABEL, b"\0", pair_id.as_bytes(), b"\0", field.as_bytes()].concat()
}

fn sealing_failed(why: &str) -> StoreError {
    StoreError::Unavailable(format!("sealing a pair key: {why}"))
}

impl StoreSealer {
    pub fn new() -> StoreSealer {
        StoreSealer::default()
    }

    /// The roots to seal under from now on (the current one seals; every held one opens).
    pub fn set_roots(&self, roots: Arc<Roots>) {
        match self.roots.write() {
            Ok(mut r) => *r = Some(roots),
            Err(p) => *p.into_inner() = Some(roots),
        }
    }

    fn roots(&self) -> Option<Arc<Roots>> {
        match self.roots.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Seals `key` (field `c2s` or `s2c` of `pair_id`) under the current root.
    pub fn seal(&self, pair_id: &str, field: &str, key: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let roots = self
            .roots()
            .ok_or_else(|| sealing_failed("no root loaded yet"))?;
        let version = roots.current();
        let gcm = cipher(&roots, version).ok_or_else(|| sealing_failed("no active root"))?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| sealing_failed("no randomness"))?;
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut ct = Zeroizing::new(*key);
        let tag = gcm
            .encrypt_inout_detached(
                &aes_gcm::Nonce::<U12>::from(nonce),
                &ad(pair_id, field),
                InOutBuf::from(ct.as_mut_slice()),
            )
            .map_err(|_| sealing_failed("AES-GCM"))?;
        out.extend_from_slice(ct.as_slice());
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a sealed key. `Ok(None)`: sealed under a root not held here (the pair reads as
    /// unknown). `Err`: a blob that is not a sealed key of this pair and field (tampered,
    /// moved, or written by another version).
    pub fn open(
        &self,
        pair_id: &str,
        field: &str,
        blob: &[u8],
    ) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
        let bad = || StoreError::Unavailable(format!("pair {pair_id}: {field} does not open"));
        if blob.len() != SEALED_LEN {
            return Err(bad());
        }
        let (v, rest) = blob.split_at(4);
        let (nonce, rest) = rest.split_at(12);
        let (ct, tag) = rest.split_at(32);
        let version = u32::from_be_bytes(v.try_into().map_err(|_| bad())?);
        let Some(roots) = self.roots() else {
            return Ok(None);
        };
        let Some(gcm) = cipher(&roots, version) else {
            return Ok(None);
        };
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ct);
        let nonce = <[u8; 12]>::try_from(nonce).map_err(|_| bad())?;
        let tag = aes_gcm::Tag::try_from(tag).map_err(|_| bad())?;
        gcm.decrypt_inout_detached(
            &aes_gcm::Nonce::<U12>::from(nonce),
            &ad(pair_id, field),
            InOutBuf::from(out.as_mut_slice()),
            &tag,
        )
        .map_err(|_| bad())?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use veil_core::crypto::keys::RootKey;

    use super::*;

    fn sealer(versions: &[u32]) -> StoreSealer {
        let s = StoreSealer::new();
        let m: BTreeMap<u32, RootKey> = versions
            .iter()
            .map(|v| (*v, RootKey::from_bytes([*v as u8; 32])))
            .collect();
        s.set_roots(Arc::new(Roots::from_map(m)));
        s
    }

    #[test]
    fn seals_under_the_current_root_bound_to_pair_and_field() {
        let s = sealer(&[1, 2]);
        let blob = s.seal("pairA", "c2s", &[7; 32]).unwrap();
        assert_eq!(blob.len(), SEALED_LEN);
        assert_eq!(&blob[..4], &2u32.to_be_bytes());
        assert!(!blob.windows(32).any(|w| w == [7; 32]));
        assert_ne!(
            blob,
            s.seal("pairA", "c2s", &[7; 32]).unwrap(),
            "random nonce"
        );
        assert_eq!(*s.open("pairA", "c2s", &blob).unwrap().unwrap(), [7; 32]);
        assert!(s.open("pairB", "c2s", &blob).is_err());
        assert!(s.open("pairA", "s2c", &blob).is_err());
        let mut flipped = blob.clone();
        flipped[20] ^= 1;
        assert!(s.open("pairA", "c2s", &flipped).is_err());
        assert!(s.open("pairA", "c2s", &blob[1..]).is_err());
        // a process without root 2 reads the pair as unknown; without roots it cannot seal
        assert!(sealer(&[1]).open("pairA", "c2s", &blob).unwrap().is_none());
        assert!(StoreSealer::new().seal("p", "c2s", &[0; 32]).is_err());
    }
}
