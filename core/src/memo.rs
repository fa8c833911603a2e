//! A bounded memo of deterministic seals: (key, scope, padding, type, value) → sealed text.
//!
//! Deterministic sealing is a pure function of the key, scope, padding, type and value; API
//! analytics repeat values constantly (header values, user agents, plans, regions, ids).
//! With software AES in wasm a sealed value costs microseconds; a memo hit costs a hash
//! lookup and a copy.
//!
//! Bounds: at most `max_entries` values of at most `max_value_len` bytes, kept in two
//! generations ([`TwoGenerationCache`]: a hit in the older one is promoted; when the young
//! generation is full the old one is dropped), so memory is bounded and recently used
//! values stay. Plaintext
//! copies are zeroized when dropped. Changing key (a new epoch, or another key under the
//! same kid: the memo follows the key's fingerprint, not its kid) empties the memo.
//!
//! Security: a hit is faster than a miss, so a party that can send requests through the
//! same Envoy worker and time them precisely could learn whether a value it guesses was
//! sealed there recently. Deterministic ciphertexts already reveal equality to the vendor;
//! this makes it observable to co-tenants of the proxy. `seal_memo_entries: 0` turns the
//! memo off (docs/configuration.md).

use std::borrow::Borrow;

use zeroize::Zeroize;

use crate::crypto::cipher::{CipherError, Padding, SealingKey, Spec, ValueType};
use crate::crypto::keys::{Fingerprint, Kid};
use crate::crypto::value::SCOPE_CHARS;
use crate::two_generation_cache::TwoGenerationCache;

/// A plaintext held as a memo key: hashed and compared as its bytes, wiped on drop.
#[derive(PartialEq, Eq, Hash)]
struct Plain(Box<[u8]>);

impl Borrow<[u8]> for Plain {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

pub struct SealMemo {
    /// The key the memo holds seals of: kid and fingerprint (both: the kid is in every
    /// sealed text, the fingerprint says which key made it).
    key: Option<(Kid, Fingerprint)>,
    /// The lookup key being built: type || scope tag || padding || value (reused, wiped).
    probe: Vec<u8>,
    max_entries: usize,
    max_value_len: usize,
    /// Lookup key → sealed text.
    cache: TwoGenerationCache<Plain, Box<[u8]>>,
    pub hits: u64,
    pub misses: u64,
}

/// The first byte of a lookup key: one value's text seals differently per type.
fn type_tag(ty: ValueType) -> u8 {
    match ty {
        ValueType::String => b's',
        ValueType::Number => b'n',
        ValueType::Bool => b'b',
    }
}

impl SealMemo {
    /// `max_entries` = 0 disables the memo.
    pub fn new(max_entries: usize, max_value_len: usize) -> SealMemo {
        SealMemo {
            key: None,
            probe: Vec::new(),
            max_entries,
            max_value_len,
            cache: TwoGenerationCache::new(max_entries),
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the deterministic seal of `value` (`spec.mode` is taken as deterministic) to
    /// `out`, from the memo if it holds it.
    pub fn seal(
        &mut self,
        key: &SealingKey,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let spec = Spec {
            mode: crate::crypto::value::Mode::Deterministic,
            ..spec
        };
        if self.max_entries == 0 || value.len() > self.max_value_len {
            return key.seal(spec, ty, value, out);
        }
        let id = (key.kid(), key.fingerprint());
        if self.key != Some(id) {
            self.cache.clear();
            self.key = Some(id);
        }
        // `probe` is empty and its spare capacity zero (wiped after every use below).
        let mut probe = core::mem::take(&mut self.probe);
        probe.clear();
        probe.reserve(1 + SCOPE_CHARS + 1 + value.len());
        probe.push(type_tag(ty));
        probe.extend_from_slice(spec.scope.as_bytes());
        probe.push(match spec.pad {
            Padding::Buckets => b'p',
            Padding::Off => b'-',
        });
        probe.extend_from_slice(value);
        let r = self.seal_probe(key, spec, &probe, ty, value, out);
        // Only the bytes written now: the rest of the capacity was wiped before (a
        // `Vec::zeroize` would wipe all of it, byte by byte, on every value).
        probe.as_mut_slice().zeroize();
        probe.clear();
        self.probe = probe;
        r
    }

    fn seal_probe(
        &mut self,
        key: &SealingKey,
        spec: Spec<'_>,
        probe: &[u8],
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let hit = self
            .cache
            .get(probe, |_| true, |sealed| out.extend_from_slice(sealed));
        if hit.is_some() {
            self.hits += 1;
            return Ok(());
        }
        self.misses += 1;
        let start = out.len();
        key.seal(spec, ty, value, out)?;
        let sealed = out.get(start..).unwrap_or_default().into();
        self.cache.insert(Plain(probe.into()), sealed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cipher::Scope;
    use crate::crypto::keys::Dek;
    use crate::crypto::value::Mode;

    fn key(epoch: &str) -> SealingKey {
        key_with(epoch, 3)
    }

    fn key_with(epoch: &str, byte: u8) -> SealingKey {
        SealingKey::new(
            Kid::new(1, epoch.parse().unwrap()),
            &Dek::from_bytes([byte; 32]),
        )
    }

    fn spec(scope: &Scope) -> Spec<'_> {
        Spec {
            mode: Mode::Deterministic,
            scope,
            pad: Padding::Buckets,
        }
    }

    fn sealed(memo: &mut SealMemo, k: &SealingKey, ty: ValueType, v: &[u8]) -> Vec<u8> {
        sealed_in(memo, k, &Scope::field("a"), ty, v)
    }

    fn sealed_in(
        memo: &mut SealMemo,
        k: &SealingKey,
        scope: &Scope,
        ty: ValueType,
        v: &[u8],
    ) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        memo.seal(k, spec(scope), ty, v, &mut out).unwrap();
        out.split_off(6)
    }

    fn fresh(k: &SealingKey, scope: &Scope, ty: ValueType, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        k.seal(spec(scope), ty, v, &mut out).unwrap();
        out
    }

    #[test]
    fn hits_equal_fresh_seals_and_are_bounded() {
        let k = key("2026-01");
        let a = Scope::field("a");
        let mut memo = SealMemo::new(8, 16);
        for round in 0..3 {
            for i in 0..20u8 {
                let v = [b'v', i];
                assert_eq!(
                    sealed(&mut memo, &k, ValueType::String, &v),
                    fresh(&k, &a, ValueType::String, &v),
                    "round {round}"
                );
                assert!(memo.len() <= 8, "bounded: {}", memo.len());
            }
        }
        // Types do not collide: "1" as a number and as a string seal differently.
        let n = sealed(&mut memo, &k, ValueType::Number, b"1");
        let s = sealed(&mut memo, &k, ValueType::String, b"1");
        assert_ne!(n, s);
        assert_eq!(sealed(&mut memo, &k, ValueType::Number, b"1"), n);
    }

    #[test]
    fn scopes_and_padding_do_not_collide() {
        let k = key("2026-01");
        let (a, b) = (Scope::field("a"), Scope::field("b"));
        let mut memo = SealMemo::new(100, 64);
        let in_a = sealed_in(&mut memo, &k, &a, ValueType::String, b"x");
        let in_b = sealed_in(&mut memo, &k, &b, ValueType::String, b"x");
        assert_ne!(in_a, in_b);
        assert_eq!(in_b, fresh(&k, &b, ValueType::String, b"x"));
        let mut out = Vec::new();
        let off = Spec {
            pad: Padding::Off,
            ..spec(&a)
        };
        memo.seal(&k, off, ValueType::String, b"x", &mut out)
            .unwrap();
        assert_ne!(out, in_a);
        let mut direct = Vec::new();
        k.seal(off, ValueType::String, b"x", &mut direct).unwrap();
        assert_eq!(out, direct);
    }

    #[test]
    fn repeats_hit_and_a_new_kid_starts_empty() {
        let mut memo = SealMemo::new(100, 16);
        let a = key("2026-01");
        sealed(&mut memo, &a, ValueType::String, b"x");
        sealed(&mut memo, &a, ValueType::String, b"x");
        assert_eq!((memo.hits, memo.misses), (1, 1));
        let b = key("2027-01");
        let with_b = sealed(&mut memo, &b, ValueType::String, b"x");
        assert_eq!((memo.hits, memo.misses, memo.len()), (1, 2, 1));
        assert_eq!(
            with_b,
            fresh(&b, &Scope::field("a"), ValueType::String, b"x")
        );
    }

    /// Issue #18: a kid was not bound to its key. Another key under the same kid (a root
    /// version destroyed and re-made) must not get the first key's memoized ciphertexts.
    #[test]
    fn another_key_under_the_same_kid_starts_empty() {
        let mut memo = SealMemo::new(100, 16);
        let old = key_with("2026-01", 3);
        let new = key_with("2026-01", 4);
        assert_eq!(old.kid(), new.kid());
        sealed(&mut memo, &old, ValueType::String, b"x");
        let with_new = sealed(&mut memo, &new, ValueType::String, b"x");
        assert_eq!(
            with_new,
            fresh(&new, &Scope::field("a"), ValueType::String, b"x")
        );
        assert_eq!((memo.hits, memo.misses), (0, 2));
    }

    #[test]
    fn long_values_and_a_zero_limit_bypass_the_memo() {
        let k = key("2026-01");
        let mut memo = SealMemo::new(100, 4);
        sealed(&mut memo, &k, ValueType::String, b"longer than four");
        let mut off = SealMemo::new(0, 64);
        sealed(&mut off, &k, ValueType::String, b"x");
        assert_eq!((memo.len(), off.len()), (0, 0));
    }
}
