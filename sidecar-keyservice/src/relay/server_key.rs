//! The relay's server key (docs/relay-protocol-v2.md §0): one X-Wing key pair per active
//! root, derived from that root. The keyring's KEK therefore protects it exactly as it
//! protects the roots (wrapped at rest, unwrapped only in the serving process), `keyring
//! rotate-root` rotates it, `keyring destroy` retires it, and a rewrap or backup of the
//! keyring carries it without a second secret to manage.
//!
//! `seed = HKDF-SHA256(salt = none, ikm = root, info = "veil/v1/relay-server-key" ||
//! u32be(version))`, the key pair is X-Wing's from that seed, and its `key_id` is the low
//! byte of the root version.

use hkdf::Hkdf;
use sha2::Sha256;
use veil_core::crypto::keys::RootKey;
use veil_core::relay::v2::{KeyConfig, ServerKey};
use veil_core::relay::RelayError;
use zeroize::Zeroizing;

use crate::keyring::Roots;

/// The HKDF `info` prefix of a relay server key seed.
pub const SEED_INFO: &[u8] = b"veil/v1/relay-server-key";

/// The key configuration id of the server key of root `version`: its low byte.
pub fn key_id(version: u32) -> u8 {
    version.to_be_bytes()[3]
}

/// The relay server key of root `version`.
pub fn derive(root: &RootKey, version: u32) -> Result<ServerKey, RelayError> {
    let hk = Hkdf::<Sha256>::new(None, root.as_bytes());
    let mut seed = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[SEED_INFO, &version.to_be_bytes()], seed.as_mut_slice())
        .map_err(|_| RelayError::Unavailable("relay server key derivation"))?;
    ServerKey::from_seed(key_id(version), *seed)
}

/// The newest active root whose server key has `id`, and that key.
pub fn for_key_id(roots: &Roots, id: u8) -> Option<Result<ServerKey, RelayError>> {
    let version = roots
        .versions()
        .into_iter()
        .rev()
        .find(|v| key_id(*v) == id)?;
    roots.root(version).map(|r| derive(r, version))
}

/// The server key of the current root (what `relay-key show` prints and clients pin).
pub fn current(roots: &Roots) -> Option<Result<ServerKey, RelayError>> {
    let v = roots.current();
    roots.root(v).map(|r| derive(r, v))
}

/// Every active root's key configuration, the current one first (`application/ohttp-keys`),
/// one per key id.
pub fn configs(roots: &Roots) -> Result<Vec<KeyConfig>, RelayError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for v in roots.versions().into_iter().rev() {
        if seen.insert(key_id(v)) {
            if let Some(r) = roots.root(v) {
                out.push(derive(r, v)?.config().clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn roots() -> Roots {
        let mut m = BTreeMap::new();
        m.insert(1, RootKey::from_bytes([1; 32]));
        m.insert(2, RootKey::from_bytes([2; 32]));
        m.insert(258, RootKey::from_bytes([3; 32]));
        Roots::from_map(m)
    }

    #[test]
    fn one_key_per_root_stable_and_distinct() {
        let r = roots();
        let a = derive(r.root(1).unwrap(), 1).unwrap();
        let again = derive(r.root(1).unwrap(), 1).unwrap();
        assert_eq!(a.config(), again.config());
        assert_eq!(a.config().key_id(), 1);
        // another root, or the same root under another version: another key
        let b = derive(r.root(2).unwrap(), 2).unwrap();
        assert_ne!(a.config().public_key(), b.config().public_key());
        let c = derive(r.root(1).unwrap(), 257).unwrap();
        assert_ne!(a.config().public_key(), c.config().public_key());
        assert_eq!(c.config().key_id(), 1);
    }

    #[test]
    fn current_first_and_the_newest_root_wins_a_key_id() {
        let r = roots();
        let cur = current(&r).unwrap().unwrap();
        assert_eq!(cur.config().key_id(), 2); // 258 = 0x102
        let all = configs(&r).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(&all[0], cur.config());
        // key id 2 is root 258's (the newer), not root 2's
        let k2 = for_key_id(&r, 2).unwrap().unwrap();
        assert_eq!(
            k2.config(),
            derive(r.root(258).unwrap(), 258).unwrap().config()
        );
        assert!(for_key_id(&r, 9).is_none());
    }
}
