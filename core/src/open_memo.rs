//! A bounded memo of opened values: (key fingerprint, sealed text) → (type, plaintext).
//!
//! The unseal role opens the same values again and again (dashboards refresh the same
//! searches; deterministic values repeat by design), and with software AES in wasm each
//! open costs microseconds. A value is only memoized after it authenticated under its kid's
//! key, and a hit needs the same key (by fingerprint, not only the same kid: a root version
//! re-made under an old number is another key), so a hit returns exactly what
//! [`SealingKey::open`] returned for that text under that key.
//!
//! Bounds and hygiene as [`crate::memo::SealMemo`]: at most `max_entries` values with
//! payloads of at most `max_payload_len` bytes, two generations ([`TwoGenerationCache`]: a
//! hit in the older one is promoted; when the young one is full the old one is dropped),
//! plaintexts zeroized when dropped. `max_entries` = 0 turns it off. The same timing caveat
//! as the seal memo applies (a hit is faster than a miss); `unseal_memo_entries: 0` turns
//! it off.

use std::borrow::Borrow;

use zeroize::Zeroizing;

use crate::crypto::cipher::{CipherError, Opened, SealingKey, ValueType};
use crate::crypto::keys::{Fingerprint, Kid};
use crate::crypto::value::SealedValue;
use crate::two_generation_cache::TwoGenerationCache;

/// A whole sealed value (header and payload) held as a map key (ciphertext: not secret).
#[derive(PartialEq, Eq, Hash)]
struct Payload(Box<[u8]>);

impl Borrow<[u8]> for Payload {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

struct Entry {
    key: Fingerprint,
    /// The kid in the value's header (what [`OpenMemo::open_text`] asks the key for).
    kid: Kid,
    ty: ValueType,
    plain: Zeroizing<Box<[u8]>>,
}

pub struct OpenMemo {
    max_entries: usize,
    max_payload_len: usize,
    /// Whole sealed value → what it opened to, under which key.
    cache: TwoGenerationCache<Payload, Entry>,
    /// The lookup key being built (a whole sealed value), reused.
    probe: Vec<u8>,
    pub hits: u64,
    pub misses: u64,
}

impl Default for OpenMemo {
    /// Off.
    fn default() -> Self {
        OpenMemo::new(0, 0)
    }
}

impl OpenMemo {
    /// The payload length of a value whose plaintext is `max_value_len` bytes (either mode),
    /// so that a memo sized like the seal memo holds the same values.
    pub fn payload_len_for(max_value_len: usize) -> usize {
        let raw = max_value_len.saturating_add(1 + 12 + 16);
        raw.div_ceil(3).saturating_mul(4)
    }

    /// `max_entries` = 0 disables the memo.
    pub fn new(max_entries: usize, max_payload_len: usize) -> OpenMemo {
        OpenMemo {
            max_entries,
            max_payload_len,
            cache: TwoGenerationCache::new(max_entries),
            probe: Vec::new(),
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

    /// Opens `v` with `key` (its kid's key), from the memo if it holds the value.
    pub fn open(&mut self, key: &SealingKey, v: &SealedValue<'_>) -> Result<Opened, CipherError> {
        if self.max_entries == 0 || v.payload.len() > self.max_payload_len {
            return key.open(v);
        }
        // The whole value: its header (version, kid, mode, scope) is authenticated data.
        let whole = match v.header.len().checked_add(1 + v.payload.len()) {
            Some(n) => n,
            None => return key.open(v),
        };
        // The lookup key is built in a reused buffer (ciphertext: nothing to wipe); only an
        // insert allocates.
        let mut text = core::mem::take(&mut self.probe);
        text.clear();
        text.reserve(whole);
        text.extend_from_slice(v.header.as_bytes());
        text.push(b':');
        text.extend_from_slice(v.payload.as_bytes());
        let r = self.open_probe(key, v, &text);
        self.probe = text;
        r
    }

    /// What `text` (a whole string value, exactly as it came) opened to, if the memo holds it
    /// under the key `key_of` gives for its kid now; `None` otherwise (then parse and
    /// [`OpenMemo::open`] it). A hit skips parsing the value and checking its base64: the text
    /// is the memo's key, and only texts that parsed and authenticated are in the memo.
    pub fn open_text<'k>(
        &mut self,
        text: &str,
        key_of: impl Fn(Kid) -> Option<&'k SealingKey>,
    ) -> Option<Opened> {
        self.read_text(text, key_of, |ty, plain| Opened {
            ty,
            value: Zeroizing::new(plain.to_vec()),
        })
    }

    /// [`OpenMemo::open_text`] without copying the plaintext out: a hit hands its type and
    /// plaintext to `read` (the unsealer writes it straight into its output).
    pub fn read_text<'k, R>(
        &mut self,
        text: &str,
        key_of: impl Fn(Kid) -> Option<&'k SealingKey>,
        read: impl FnOnce(ValueType, &[u8]) -> R,
    ) -> Option<R> {
        if self.max_entries == 0 || text.len() > self.max_payload_len.saturating_add(64) {
            return None;
        }
        let accept = |e: &Entry| key_of(e.kid).is_some_and(|k| k.fingerprint() == e.key);
        let r = self
            .cache
            .get(text.as_bytes(), accept, |e| read(e.ty, &e.plain))?;
        self.hits += 1;
        Some(r)
    }

    fn open_probe(
        &mut self,
        key: &SealingKey,
        v: &SealedValue<'_>,
        payload: &[u8],
    ) -> Result<Opened, CipherError> {
        let fp = key.fingerprint();
        let same_kid = v.kid == key.kid();
        if let Some(o) = self.cache.get(payload, |e| e.key == fp && same_kid, opened) {
            self.hits += 1;
            return Ok(o);
        }
        self.misses += 1;
        let o = key.open(v)?;
        let entry = Entry {
            key: fp,
            kid: v.kid,
            ty: o.ty,
            plain: Zeroizing::new(o.value.as_slice().into()),
        };
        self.cache.insert(Payload(payload.into()), entry);
        Ok(o)
    }
}

fn opened(e: &Entry) -> Opened {
    Opened {
        ty: e.ty,
        value: Zeroizing::new(e.plain.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cipher::{Padding, Scope, Spec};
    use crate::crypto::keys::{Dek, Kid};
    use crate::crypto::value::Mode;

    fn key(epoch: &str, byte: u8) -> SealingKey {
        SealingKey::new(
            Kid::new(1, epoch.parse().unwrap()),
            &Dek::from_bytes([byte; 32]),
        )
    }

    fn seal(k: &SealingKey, mode: Mode, v: &[u8]) -> String {
        let scope = Scope::field("f");
        let spec = Spec {
            mode,
            scope: &scope,
            pad: Padding::Buckets,
        };
        let mut out = Vec::new();
        k.seal(spec, ValueType::String, v, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Issue #18: the memo answered for a different key with the same kid (a root version
    /// destroyed and re-made under its old number). A hit needs the same key.
    #[test]
    fn a_hit_needs_the_same_key_not_only_the_same_kid() {
        let k = key("2026-01", 3);
        let same_kid_other_key = key("2026-01", 4);
        let mut memo = OpenMemo::new(100, 256);
        for mode in [Mode::Deterministic, Mode::Randomized] {
            for v1 in [false, true] {
                let t = if v1 {
                    let mut out = Vec::new();
                    k.seal_v1_into(mode, ValueType::String, b"secret", &mut out)
                        .unwrap();
                    String::from_utf8(out).unwrap()
                } else {
                    seal(&k, mode, b"secret")
                };
                let v = SealedValue::parse(&t).unwrap();
                memo.open(&k, &v).unwrap();
                assert_eq!(
                    memo.open(&same_kid_other_key, &v).unwrap_err(),
                    CipherError::Authentication,
                    "{mode:?} v1={v1}"
                );
            }
        }
    }

    /// The scope is part of the value: the same payload under another scope tag is another
    /// value, and must not be answered from the memo.
    /// The raw-text lookup (no parse) answers only under the key that opened the value:
    /// another key with the same kid, or no key for the kid, gets nothing from the memo.
    #[test]
    fn a_text_hit_needs_the_same_key_not_only_the_same_kid() {
        let k = key("2026-01", 3);
        let same_kid_other_key = key("2026-01", 4);
        let mut memo = OpenMemo::new(100, 256);
        for mode in [Mode::Deterministic, Mode::Randomized] {
            let t = seal(&k, mode, b"secret");
            assert!(
                memo.open_text(&t, |_| Some(&k)).is_none(),
                "{mode:?}: not yet in"
            );
            let v = SealedValue::parse(&t).unwrap();
            memo.open(&k, &v).unwrap();
            let hit = memo
                .open_text(&t, |kid| (kid == k.kid()).then_some(&k))
                .unwrap();
            assert_eq!(
                (hit.ty, hit.value.as_slice()),
                (ValueType::String, &b"secret"[..])
            );
            assert!(memo.open_text(&t, |_| Some(&same_kid_other_key)).is_none());
            assert!(memo.open_text(&t, |_| None).is_none());
            // Not a prefix or a longer text: the whole string only.
            assert!(memo.open_text(&format!("{t}x"), |_| Some(&k)).is_none());
        }
    }

    #[test]
    fn another_scope_tag_is_a_miss() {
        let k = key("2026-01", 3);
        let mut memo = OpenMemo::new(100, 256);
        let t = seal(&k, Mode::Deterministic, b"secret");
        memo.open(&k, &SealedValue::parse(&t).unwrap()).unwrap();
        let other = Scope::field("g");
        let v = SealedValue::parse(&t).unwrap();
        let moved = t.replacen(v.scope.unwrap(), other.as_str(), 1);
        let v2 = SealedValue::parse(&moved).unwrap();
        assert_eq!(memo.open(&k, &v2).unwrap_err(), CipherError::Authentication);
    }

    #[test]
    fn hits_return_what_open_returns_and_are_bounded() {
        let k = key("2026-01", 3);
        let mut memo = OpenMemo::new(8, 256);
        let texts: Vec<String> = (0..20u8)
            .map(|i| {
                seal(
                    &k,
                    if i % 2 == 0 {
                        Mode::Deterministic
                    } else {
                        Mode::Randomized
                    },
                    &[b'v', i],
                )
            })
            .collect();
        for round in 0..3 {
            for (i, t) in texts.iter().enumerate() {
                let v = SealedValue::parse(t).unwrap();
                let o = memo.open(&k, &v).unwrap();
                assert_eq!(
                    (o.ty, o.value.as_slice()),
                    (ValueType::String, &[b'v', i as u8][..]),
                    "round {round}"
                );
                assert!(memo.len() <= 8, "bounded: {}", memo.len());
            }
        }
        // Repeats right away hit.
        let v = SealedValue::parse(&texts[0]).unwrap();
        memo.open(&k, &v).unwrap();
        let (hits, misses) = (memo.hits, memo.misses);
        memo.open(&k, &v).unwrap();
        assert_eq!((memo.hits, memo.misses), (hits + 1, misses));
    }

    #[test]
    fn failures_are_not_memoized_and_another_kid_is_a_miss() {
        let k = key("2026-01", 3);
        let wrong = key("2026-01", 4);
        let mut memo = OpenMemo::new(100, 256);
        let t = seal(&k, Mode::Deterministic, b"secret");
        let v = SealedValue::parse(&t).unwrap();
        assert_eq!(
            memo.open(&wrong, &v).unwrap_err(),
            CipherError::Authentication
        );
        assert!(memo.is_empty());
        // Once opened with the right key it is held, yet the wrong key still fails: a hit
        // needs the value to have been opened with the caller's kid, and the same payload
        // under another kid text is another value.
        memo.open(&k, &v).unwrap();
        assert_eq!(memo.len(), 1);
        let other = t.replace("r1.2026-01", "r1.2026-02");
        let v2 = SealedValue::parse(&other).unwrap();
        let k2 = key("2026-02", 3);
        assert!(
            memo.open(&k2, &v2).is_err(),
            "the kid is authenticated data"
        );
    }

    #[test]
    fn long_payloads_and_a_zero_limit_bypass_the_memo() {
        let k = key("2026-01", 3);
        let t = seal(&k, Mode::Deterministic, b"a value longer than the limit");
        let v = SealedValue::parse(&t).unwrap();
        let mut small = OpenMemo::new(100, 8);
        let mut off = OpenMemo::new(0, 256);
        small.open(&k, &v).unwrap();
        off.open(&k, &v).unwrap();
        assert_eq!((small.len(), off.len()), (0, 0));
    }
}
