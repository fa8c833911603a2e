//! A bounded memo of deterministic seals: (kid, type, value) → sealed text.
//!
//! Deterministic sealing is a pure function of the kid, the type and the value, and API
//! analytics repeat values constantly (header values, user agents, plans, regions, ids).
//! With software AES in wasm a sealed value costs microseconds; a memo hit costs a hash
//! lookup and a copy.
//!
//! Bounds: at most `max_entries` values of at most `max_value_len` bytes, kept in two
//! generations (a hit in the older one is promoted; when the young generation is full the
//! old one is dropped), so memory is bounded and recently used values stay. Plaintext
//! copies are zeroized when dropped. Changing kid (a new epoch) empties the memo.
//!
//! Security: a hit is faster than a miss, so a party that can send requests through the
//! same Envoy worker and time them precisely could learn whether a value it guesses was
//! sealed there recently. Deterministic ciphertexts already reveal equality to the vendor;
//! this makes it observable to co-tenants of the proxy. `seal_memo_entries: 0` turns the
//! memo off (docs/configuration.md).

use std::borrow::Borrow;
use std::collections::HashMap;

use zeroize::Zeroize;

use crate::cipher::{CipherError, SealingKey, ValueType};
use crate::keys::Kid;
use crate::value::Mode;

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

/// foldhash: several times cheaper than SipHash on short keys and still keyed per process,
/// so chosen values cannot be made to collide (no hash flooding).
type Map = HashMap<Plain, Box<[u8]>, foldhash::fast::RandomState>;
type Generation = [Map; 3];

pub struct SealMemo {
    kid: Option<Kid>,
    max_entries: usize,
    max_value_len: usize,
    young: Generation,
    old: Generation,
    young_len: usize,
    pub hits: u64,
    pub misses: u64,
}

fn slot(ty: ValueType) -> usize {
    match ty {
        ValueType::String => 0,
        ValueType::Number => 1,
        ValueType::Bool => 2,
    }
}

impl SealMemo {
    /// `max_entries` = 0 disables the memo.
    pub fn new(max_entries: usize, max_value_len: usize) -> SealMemo {
        SealMemo {
            kid: None,
            max_entries,
            max_value_len,
            young: Default::default(),
            old: Default::default(),
            young_len: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.young_len + self.old.iter().map(Map::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.young = Default::default();
        self.old = Default::default();
        self.young_len = 0;
    }

    /// Appends the deterministic seal of `value` to `out`, from the memo if it holds it.
    pub fn seal(
        &mut self,
        key: &SealingKey,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        if self.max_entries == 0 || value.len() > self.max_value_len {
            return key.seal_into(Mode::Deterministic, ty, value, out);
        }
        if self.kid != Some(key.kid()) {
            self.clear();
            self.kid = Some(key.kid());
        }
        let s = slot(ty);
        if let Some(sealed) = self.young.get(s).and_then(|m| m.get(value)) {
            out.extend_from_slice(sealed);
            self.hits += 1;
            return Ok(());
        }
        let sealed = match self.old.get_mut(s).and_then(|m| m.remove_entry(value)) {
            Some((plain, sealed)) => {
                self.hits += 1;
                out.extend_from_slice(&sealed);
                self.insert(s, plain, sealed);
                return Ok(());
            }
            None => {
                self.misses += 1;
                let start = out.len();
                key.seal_into(Mode::Deterministic, ty, value, out)?;
                out.get(start..).unwrap_or_default().into()
            }
        };
        self.insert(s, Plain(value.into()), sealed);
        Ok(())
    }

    fn insert(&mut self, s: usize, plain: Plain, sealed: Box<[u8]>) {
        if self.young_len >= self.max_entries.div_ceil(2) {
            // The old generation is dropped (its plaintexts wiped); the young one ages.
            self.old = core::mem::take(&mut self.young);
            self.young_len = 0;
        }
        if let Some(m) = self.young.get_mut(s) {
            if m.insert(plain, sealed).is_none() {
                self.young_len += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Dek;

    fn key(epoch: &str) -> SealingKey {
        SealingKey::new(
            Kid::new(1, epoch.parse().unwrap()),
            &Dek::from_bytes([3; 32]),
        )
    }

    fn sealed(memo: &mut SealMemo, k: &SealingKey, ty: ValueType, v: &[u8]) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        memo.seal(k, ty, v, &mut out).unwrap();
        out.split_off(6)
    }

    #[test]
    fn hits_equal_fresh_seals_and_are_bounded() {
        let k = key("2026-01");
        let mut memo = SealMemo::new(8, 16);
        for round in 0..3 {
            for i in 0..20u8 {
                let v = [b'v', i];
                let mut fresh = Vec::new();
                k.seal_into(Mode::Deterministic, ValueType::String, &v, &mut fresh)
                    .unwrap();
                assert_eq!(
                    sealed(&mut memo, &k, ValueType::String, &v),
                    fresh,
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
    fn repeats_hit_and_a_new_kid_starts_empty() {
        let mut memo = SealMemo::new(100, 16);
        let a = key("2026-01");
        sealed(&mut memo, &a, ValueType::String, b"x");
        sealed(&mut memo, &a, ValueType::String, b"x");
        assert_eq!((memo.hits, memo.misses), (1, 1));
        let b = key("2027-01");
        let with_b = sealed(&mut memo, &b, ValueType::String, b"x");
        assert_eq!((memo.hits, memo.misses, memo.len()), (1, 2, 1));
        let mut fresh = Vec::new();
        b.seal_into(Mode::Deterministic, ValueType::String, b"x", &mut fresh)
            .unwrap();
        assert_eq!(with_b, fresh);
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
