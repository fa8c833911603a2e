//! Relay pairs one worker holds: each pair's two AES-256-GCM key schedules, built once, and
//! the pair ids the keyservice said it does not know. The shared slot table is the relay
//! role's ([`crate::roles::relay::pairs`]).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use veil_core::relay::slots::Slot;
use veil_core::relay::v2::RequestCipher;
use zeroize::Zeroizing;

/// A pair as one worker uses it: the request direction's AES-256-GCM key schedule, built
/// once, and `s2c`, from which each answer derives its own key (docs/relay-protocol.md §4).
/// Both zeroize on drop.
pub struct Pair {
    pub client_id: String,
    pub c2s: RequestCipher,
    pub s2c: Zeroizing<[u8; 32]>,
    /// End of life, unix seconds.
    pub expires_at: i64,
}

impl Pair {
    pub fn new(client_id: String, c2s: &[u8; 32], s2c: &[u8; 32], expires_at: i64) -> Pair {
        Pair {
            client_id,
            c2s: RequestCipher::new(c2s),
            s2c: Zeroizing::new(*s2c),
            expires_at,
        }
    }

    /// The key schedules of the pair in `slot` (None: the slot is corrupt).
    pub fn from_slot(slot: &Slot) -> Option<Pair> {
        let (c2s, s2c) = (slot.c2s()?, slot.s2c()?);
        Some(Pair::new(
            String::from_utf8(slot.client_id().to_vec()).ok()?,
            &c2s,
            &s2c,
            slot.expires_at(),
        ))
    }
}

/// Most pairs one worker keeps key schedules for (oldest dropped first).
pub const MAX_WORKER_PAIRS: usize = 4096;
/// How long a pair id the keyservice does not know is refused without asking again. Pair
/// ids are random and known from their pairing on, so an unknown one never becomes valid.
pub const UNKNOWN_MS: i64 = 60_000;
const MAX_UNKNOWN: usize = 4096;

/// This worker's pairs (key schedules), bounded, and the pair ids known to be unknown.
#[derive(Default)]
pub struct PairCache {
    pairs: HashMap<String, Rc<Pair>>,
    order: VecDeque<String>,
    /// Pair id → unix ms until which it is refused without a callout.
    unknown: HashMap<String, i64>,
}

impl PairCache {
    pub fn get(&self, pair_id: &str) -> Option<Rc<Pair>> {
        self.pairs.get(pair_id).cloned()
    }

    /// Keeps `pair`, dropping the oldest beyond `cap` (1 to [`MAX_WORKER_PAIRS`]).
    pub fn insert(&mut self, pair_id: &str, pair: Rc<Pair>, cap: usize) {
        if self.pairs.insert(pair_id.to_string(), pair).is_none() {
            self.order.push_back(pair_id.to_string());
        }
        while self.order.len() > cap.clamp(1, MAX_WORKER_PAIRS) {
            if let Some(old) = self.order.pop_front() {
                self.pairs.remove(&old);
            }
        }
    }

    pub fn remove(&mut self, pair_id: &str) {
        if self.pairs.remove(pair_id).is_some() {
            self.order.retain(|p| p != pair_id);
        }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether the keyservice said lately that it does not know `pair_id`.
    pub fn is_unknown(&self, pair_id: &str, now_ms: i64) -> bool {
        self.unknown
            .get(pair_id)
            .is_some_and(|until| *until > now_ms)
    }

    /// Remembers that the keyservice does not know `pair_id` (for [`UNKNOWN_MS`]).
    pub fn mark_unknown(&mut self, pair_id: &str, now_ms: i64) {
        if self.unknown.len() >= MAX_UNKNOWN {
            self.unknown.retain(|_, until| *until > now_ms);
            if self.unknown.len() >= MAX_UNKNOWN {
                self.unknown.clear();
            }
        }
        self.unknown
            .insert(pair_id.to_string(), now_ms + UNKNOWN_MS);
    }
}
