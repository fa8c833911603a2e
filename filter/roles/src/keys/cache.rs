//! Data keys in a worker: the current keys (fetched by the key refresh, shared by every
//! worker through shared data), keys fetched on demand, kids known to be unknown, and the
//! unseal memo. Cipher state is built once per kid. The request path only looks keys up
//! here; it never waits for a callout.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use veil_core::crypto::cipher::{CipherError, Opened, SealingKey, ValueType};
use veil_core::crypto::keys::{Epoch, Kid, RotationMonths};
use veil_core::crypto::value::SealedValue;
use veil_core::json::KeyLookup;
use veil_core::keyservice_answer::{parse_current, CurrentKeys, KeyEntry, KeysError, SHARED_KEY};
use veil_core::open_memo::OpenMemo;

use crate::host::SharedData;

/// Most keys fetched on demand that one VM keeps (older epochs and roots), oldest evicted.
pub const MAX_EXTRA_KEYS: usize = 256;
/// Most kids one VM remembers as unknown.
pub const MAX_UNKNOWN_KIDS: usize = 256;

/// The keys one worker holds.
#[derive(Default)]
pub struct KeyCache {
    current_root: Option<u32>,
    /// The root versions the keyservice serves (its last answer); searches cover each.
    root_versions: Vec<u32>,
    keys: Vec<Rc<SealingKey>>,
    /// CAS version of the shared-data record these keys came from.
    shared_version: Option<u32>,
    /// When the shared record was fetched from the keyservice (unix seconds).
    fetched_at: Option<i64>,
    /// Keys fetched on demand, and current keys an answer no longer lists.
    extra: HashMap<Kid, Rc<SealingKey>>,
    /// Insertion order of `extra`, for eviction.
    extra_order: VecDeque<Kid>,
    /// Kids the keyservice does not know (404), until unix ms.
    unknown: HashMap<Kid, i64>,
    /// Values already opened (the unseal role opens the same ones again and again).
    open_memo: RefCell<OpenMemo>,
}

impl KeyCache {
    /// An empty cache whose unseal memo holds at most `memo_entries` values of at most
    /// `memo_value_bytes` plaintext bytes (0 entries: no memo).
    pub fn new(memo_entries: usize, memo_value_bytes: usize) -> KeyCache {
        KeyCache {
            open_memo: RefCell::new(OpenMemo::new(
                memo_entries,
                OpenMemo::payload_len_for(memo_value_bytes),
            )),
            ..KeyCache::default()
        }
    }

    /// The sealing key for `now` (current root, epoch of `now`), if held.
    pub fn sealing_key(&self, now_unix: i64, rotation: RotationMonths) -> Option<Rc<SealingKey>> {
        let root = self.current_root?;
        let kid = Kid::new(root, Epoch::containing(now_unix, rotation));
        self.keys.iter().find(|k| k.kid() == kid).cloned()
    }

    pub fn fetched_at(&self) -> Option<i64> {
        self.fetched_at
    }

    /// Replaces the VM's keys with those of `answer`. Builds cipher state only for kids
    /// not already held.
    ///
    /// Each key is checked against the fingerprint that came with it, and a held key is
    /// reused only if it is the same key (same fingerprint), so a kid is bound to its key:
    /// a root version re-made under an old number is never confused with the old one.
    /// Keys of root versions the answer no longer lists (destroyed) are dropped at once,
    /// so a destroy takes effect within one refresh.
    pub fn install(&mut self, answer: &CurrentKeys) -> Result<(), KeysError> {
        let mut keys = Vec::with_capacity(answer.keys.len());
        for entry in &answer.keys {
            let (kid, dek) = entry.dek()?;
            let fp = dek.fingerprint();
            if let Some(k) = self
                .keys
                .iter()
                .find(|k| k.kid() == kid && k.fingerprint() == fp)
            {
                keys.push(Rc::clone(k));
                continue;
            }
            // Another key under a held kid replaces it everywhere.
            self.forget(kid);
            keys.push(Rc::new(SealingKey::new(kid, &dek)));
        }
        // Keys the answer no longer lists (the epoch before a boundary) stay usable for
        // unsealing.
        for old in std::mem::replace(&mut self.keys, keys) {
            if !self.keys.iter().any(|k| k.kid() == old.kid()) {
                self.keep_extra(old);
            }
        }
        if !answer.root_versions.is_empty() {
            let live = &answer.root_versions;
            self.extra.retain(|kid, _| live.contains(&kid.root_version));
            self.extra_order
                .retain(|kid| live.contains(&kid.root_version));
            self.keys.retain(|k| live.contains(&k.kid().root_version));
        }
        self.current_root = Some(answer.current_root);
        self.root_versions = if answer.root_versions.is_empty() {
            vec![answer.current_root]
        } else {
            answer.root_versions.clone()
        };
        self.fetched_at = answer.fetched_at;
        Ok(())
    }

    /// Drops an on-demand key of `kid` (it is being replaced by another key).
    fn forget(&mut self, kid: Kid) {
        if self.extra.remove(&kid).is_some() {
            self.extra_order.retain(|k| *k != kid);
        }
    }

    /// The root versions a search covers: those the keyservice serves (at least the
    /// current one), once keys were fetched.
    pub fn root_versions(&self) -> Vec<u32> {
        if self.root_versions.is_empty() {
            self.current_root.into_iter().collect()
        } else {
            self.root_versions.clone()
        }
    }

    /// The current root version, once keys were fetched.
    pub fn current_root(&self) -> Option<u32> {
        self.current_root
    }

    /// The key of `kid`, if this VM holds it (current or fetched on demand).
    pub fn key_for(&self, kid: Kid) -> Option<Rc<SealingKey>> {
        self.keys
            .iter()
            .find(|k| k.kid() == kid)
            .or_else(|| self.extra.get(&kid))
            .cloned()
    }

    pub fn holds(&self, kid: Kid) -> bool {
        self.keys.iter().any(|k| k.kid() == kid) || self.extra.contains_key(&kid)
    }

    /// Is `kid` remembered as unknown to the keyservice at `now_ms`?
    pub fn is_unknown(&self, kid: Kid, now_ms: i64) -> bool {
        self.unknown.get(&kid).is_some_and(|until| *until > now_ms)
    }

    /// Remembers `kid` as unknown until `until_ms`.
    pub fn add_unknown(&mut self, kid: Kid, until_ms: i64, now_ms: i64) {
        if self.unknown.len() >= MAX_UNKNOWN_KIDS {
            self.unknown.retain(|_, until| *until > now_ms);
        }
        if self.unknown.len() < MAX_UNKNOWN_KIDS || self.unknown.contains_key(&kid) {
            self.unknown.insert(kid, until_ms);
        }
    }

    /// Adds a key fetched on demand (a no-op if held). The entry's kid must be `kid`.
    pub fn add_key(&mut self, kid: Kid, entry: &KeyEntry) -> Result<(), KeysError> {
        if entry.kid.parse::<Kid>().ok() != Some(kid) {
            return Err(KeysError::Kid(entry.kid.clone()));
        }
        if self.holds(kid) {
            return Ok(());
        }
        let (_, dek) = entry.dek()?;
        self.unknown.remove(&kid);
        self.keep_extra(Rc::new(SealingKey::new(kid, &dek)));
        Ok(())
    }

    fn keep_extra(&mut self, key: Rc<SealingKey>) {
        let kid = key.kid();
        if self.extra.insert(kid, key).is_none() {
            self.extra_order.push_back(kid);
        }
        while self.extra_order.len() > MAX_EXTRA_KEYS {
            if let Some(old) = self.extra_order.pop_front() {
                self.extra.remove(&old);
            }
        }
    }

    /// Loads the shared-data record if it changed since this VM last read it.
    /// Returns true if new keys were installed.
    pub fn refresh_from_shared(&mut self, shared: &dyn SharedData) -> Result<bool, String> {
        let Some((bytes, version)) = shared
            .shared_get(SHARED_KEY)
            .map_err(|e| format!("reading shared data failed with {e}"))?
        else {
            return Ok(false);
        };
        let bytes = zeroize::Zeroizing::new(bytes);
        if self.shared_version == Some(version) {
            return Ok(false);
        }
        let answer = parse_current(&bytes).map_err(|e| e.to_string())?;
        self.install(&answer).map_err(|e| e.to_string())?;
        self.shared_version = Some(version);
        Ok(true)
    }
}

impl KeyLookup for KeyCache {
    fn key(&self, kid: Kid) -> Option<&SealingKey> {
        self.keys
            .iter()
            .find(|k| k.kid() == kid)
            .or_else(|| self.extra.get(&kid))
            .map(|k| &**k)
    }

    fn open(&self, v: &SealedValue<'_>) -> Option<Result<Opened, CipherError>> {
        let key = self.key(v.kid)?;
        Some(match self.open_memo.try_borrow_mut() {
            Ok(mut memo) => memo.open(key, v),
            Err(_) => key.open(v),
        })
    }

    fn read_memoized(&self, text: &str, read: &mut dyn FnMut(ValueType, &[u8])) -> bool {
        let Ok(mut memo) = self.open_memo.try_borrow_mut() else {
            return false;
        };
        memo.read_text(text, |kid| self.key(kid), read).is_some()
    }
}
