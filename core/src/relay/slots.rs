//! The filter's relay pair table in Envoy shared data, as bytes: a pair's slot, a set of
//! slots (one shared-data value, one CAS write), and the eviction log. Pure codecs of bytes
//! other workers wrote (fuzzed: `fuzz/fuzz_targets/relay_slots.rs`); the table's logic is
//! the filter's (`veil-roles`, relay pairs).
//!
//! Slot layout (offsets after the client id are relative to `tail = 2 + 22 + n`):
//!
//! ```text
//! 0 version (1) | 1 pair id (22) | 23 client id length n (1) | 24 client id (n)
//! tail+0 c2s (32) | +32 s2c (32) | +64 expires_at i64be | +72 idle_ttl u32be
//! +76 last_used i64be | +84 window (24) | +108 touched i64be (when the keyservice last saw it)
//! ```
//!
//! A set is `[SET_VERSION] (u16be length, slot)*`, at most `ways` slots. The eviction log
//! is a list of `(pair id (22), highest seq u64be)` entries, oldest first. In shared data
//! both are stored sealed by the roles (`veil-roles` records, [`crate::crypto::shared_record`]);
//! these codecs see the opened bytes.

use zeroize::Zeroizing;

use crate::relay::window::WINDOW_BYTES;
use crate::relay::wire::PAIR_ID_LEN;
use crate::relay::ReplayWindow;

const VERSION: u8 = 2;
const FIXED_TAIL: usize = 32 + 32 + 8 + 4 + 8 + WINDOW_BYTES + 8;
/// Longest client id a slot stores (ids are 101 characters).
pub const MAX_CLIENT_ID: usize = 200;
/// First byte of a set's shared-data value.
pub const SET_VERSION: u8 = 1;
/// Bytes of one eviction log entry.
pub const EVICTED_ENTRY: usize = PAIR_ID_LEN + 8;

/// A pair's keys and lifetime, as the keyservice hands them over.
pub struct SlotKeys<'a> {
    pub pair_id: &'a str,
    pub client_id: &'a str,
    pub c2s: &'a [u8; 32],
    pub s2c: &'a [u8; 32],
    pub expires_at: i64,
    pub idle_ttl_secs: u32,
}

/// A slot's bytes, checked once; accessors never index out of bounds. Wiped on drop.
#[derive(Clone)]
pub struct Slot {
    bytes: Zeroizing<Vec<u8>>,
    /// Offset of c2s.
    tail: usize,
}

fn be_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

impl Slot {
    /// A slot of the current version whose length matches its client id length.
    pub fn parse(bytes: Vec<u8>) -> Option<Slot> {
        let bytes = Zeroizing::new(bytes);
        if bytes.first() != Some(&VERSION) {
            return None;
        }
        let n = usize::from(*bytes.get(1 + PAIR_ID_LEN)?);
        let tail = 2 + PAIR_ID_LEN + n;
        (bytes.len() == tail + FIXED_TAIL).then_some(Slot { bytes, tail })
    }

    /// A fresh slot: window empty, last used and touched `now`. None for a pair id that is
    /// not 22 bytes or a client id over [`MAX_CLIENT_ID`].
    pub fn build(keys: &SlotKeys<'_>, now: i64) -> Option<Slot> {
        if keys.pair_id.len() != PAIR_ID_LEN || keys.client_id.len() > MAX_CLIENT_ID {
            return None;
        }
        let n = u8::try_from(keys.client_id.len()).ok()?;
        let mut b = Zeroizing::new(Vec::with_capacity(
            2 + PAIR_ID_LEN + MAX_CLIENT_ID + FIXED_TAIL,
        ));
        b.push(VERSION);
        b.extend_from_slice(keys.pair_id.as_bytes());
        b.push(n);
        b.extend_from_slice(keys.client_id.as_bytes());
        let tail = b.len();
        b.extend_from_slice(keys.c2s);
        b.extend_from_slice(keys.s2c);
        b.extend_from_slice(&keys.expires_at.to_be_bytes());
        b.extend_from_slice(&keys.idle_ttl_secs.to_be_bytes());
        b.extend_from_slice(&now.to_be_bytes());
        b.extend_from_slice(&ReplayWindow::new().to_bytes());
        b.extend_from_slice(&now.to_be_bytes());
        Some(Slot { bytes: b, tail })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn field(&self, at: usize, len: usize) -> &[u8] {
        self.bytes.get(at..at + len).unwrap_or_default()
    }

    pub fn pair_id(&self) -> &[u8] {
        self.field(1, PAIR_ID_LEN)
    }

    pub fn client_id(&self) -> &[u8] {
        self.field(2 + PAIR_ID_LEN, self.tail - 2 - PAIR_ID_LEN)
    }

    fn key(&self, at: usize) -> Option<Zeroizing<[u8; 32]>> {
        let k: [u8; 32] = self.field(self.tail + at, 32).try_into().ok()?;
        Some(Zeroizing::new(k))
    }

    /// Client-to-server key.
    pub fn c2s(&self) -> Option<Zeroizing<[u8; 32]>> {
        self.key(0)
    }

    /// Server-to-client key.
    pub fn s2c(&self) -> Option<Zeroizing<[u8; 32]>> {
        self.key(32)
    }

    pub fn expires_at(&self) -> i64 {
        be_i64(self.field(self.tail + 64, 8))
    }

    pub fn idle_ttl(&self) -> u32 {
        self.field(self.tail + 72, 4)
            .try_into()
            .map(u32::from_be_bytes)
            .unwrap_or(0)
    }

    pub fn last_used(&self) -> i64 {
        be_i64(self.field(self.tail + 76, 8))
    }

    pub fn window(&self) -> Option<ReplayWindow> {
        ReplayWindow::from_bytes(self.field(self.tail + 84, WINDOW_BYTES))
    }

    pub fn touched(&self) -> i64 {
        be_i64(self.field(self.tail + 108, 8))
    }

    /// In `local` mode the keyservice sees no request: past half its idle TTL since it last
    /// saw the pair, the next request touches it there (marked now, in the same CAS write),
    /// so a busy pair stays fetchable after an eviction or an Envoy restart.
    pub fn take_touch(&mut self, now: i64) -> bool {
        let due = now - self.touched() >= i64::from(self.idle_ttl() / 2).max(1);
        if due {
            self.set(108, &now.to_be_bytes());
        }
        due
    }

    fn set(&mut self, at: usize, value: &[u8]) {
        let at = self.tail + at;
        if let Some(dst) = self.bytes.get_mut(at..at + value.len()) {
            dst.copy_from_slice(value);
        }
    }

    /// Records a use: last used `now`, the window after the accepted `seq`.
    pub fn set_use(&mut self, now: i64, window: &ReplayWindow) {
        self.set(76, &now.to_be_bytes());
        self.set(84, &window.to_bytes());
    }

    /// Live at `now`: before its end of life and used within its idle TTL.
    pub fn is_live(&self, now: i64) -> bool {
        now < self.expires_at() && now - self.last_used() <= i64::from(self.idle_ttl())
    }
}

/// One set as read from shared data: its slots (at most `ways`) and the CAS version to write
/// back with (`None`: the key does not exist yet).
pub struct Set {
    pub slots: Vec<Slot>,
    pub cas: Option<u32>,
}

impl Set {
    /// An entry that does not parse is dropped (its pair is fetched again); bytes after
    /// `ways` slots are ignored.
    pub fn parse(bytes: &[u8], cas: Option<u32>, ways: usize) -> Set {
        let mut slots = Vec::with_capacity(ways.min(16));
        if bytes.first() == Some(&SET_VERSION) {
            let mut rest = bytes.get(1..).unwrap_or_default();
            while slots.len() < ways {
                let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                    break;
                };
                let len = usize::from(u16::from_be_bytes(*len));
                let Some(entry) = tail.get(..len) else {
                    break;
                };
                if let Some(slot) = Slot::parse(entry.to_vec()) {
                    slots.push(slot);
                }
                rest = tail.get(len..).unwrap_or_default();
            }
        }
        Set { slots, cas }
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let size = 1 + self.slots.iter().map(|s| 2 + s.bytes.len()).sum::<usize>();
        let mut b = Zeroizing::new(Vec::with_capacity(size));
        b.push(SET_VERSION);
        for s in &self.slots {
            let len = u16::try_from(s.bytes.len()).unwrap_or(0);
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&s.bytes);
        }
        b
    }

    /// The way holding `pair_id`.
    pub fn find(&self, pair_id: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.pair_id() == pair_id.as_bytes())
    }
}

/// The set of `pair_id` among `sets` (FNV-1a: spreads pair ids, random already).
pub fn set_index(pair_id: &str, sets: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pair_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % u64::try_from(sets.max(1)).unwrap_or(1)
}

/// The eviction log `old` with `(pair_id, max)` appended (an earlier entry of the pair
/// dropped), at most `keep` entries (the oldest go). A trailing partial entry is dropped.
pub fn evicted_push(old: &[u8], pair_id: &[u8], max: u64, keep: usize) -> Vec<u8> {
    let mut list = Vec::with_capacity(old.len() + EVICTED_ENTRY);
    for e in old.chunks_exact(EVICTED_ENTRY) {
        if e.get(..PAIR_ID_LEN) != Some(pair_id) {
            list.extend_from_slice(e);
        }
    }
    list.extend_from_slice(pair_id);
    list.extend_from_slice(&max.to_be_bytes());
    let over = (list.len() / EVICTED_ENTRY).saturating_sub(keep);
    list.drain(..over * EVICTED_ENTRY);
    list
}

/// The highest `seq` the log holds for `pair_id` (its latest entry).
pub fn evicted_max(list: &[u8], pair_id: &str) -> Option<u64> {
    list.chunks_exact(EVICTED_ENTRY)
        .rev()
        .find(|e| e.get(..PAIR_ID_LEN) == Some(pair_id.as_bytes()))
        .and_then(|e| e.get(PAIR_ID_LEN..))
        .and_then(|m| m.try_into().ok())
        .map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    fn keys<'a>(id: &'a str, client: &'a str) -> SlotKeys<'a> {
        SlotKeys {
            pair_id: id,
            client_id: client,
            c2s: &[1; 32],
            s2c: &[2; 32],
            expires_at: 1_000,
            idle_ttl_secs: 100,
        }
    }

    #[test]
    fn a_slot_round_trips_and_its_fields_read_back() {
        let s = Slot::build(&keys(ID, "client"), 10).unwrap();
        let p = Slot::parse(s.bytes().to_vec()).unwrap();
        assert_eq!(p.pair_id(), ID.as_bytes());
        assert_eq!(p.client_id(), b"client");
        assert_eq!((*p.c2s().unwrap(), *p.s2c().unwrap()), ([1; 32], [2; 32]));
        assert_eq!(
            (p.expires_at(), p.idle_ttl(), p.last_used()),
            (1_000, 100, 10)
        );
        assert_eq!(p.window().unwrap().max(), 0);
        assert!(p.is_live(110) && !p.is_live(111) && !p.is_live(1_000));
    }

    #[test]
    fn build_refuses_bad_ids_and_parse_refuses_bad_lengths() {
        assert!(Slot::build(&keys("short", "c"), 0).is_none());
        assert!(Slot::build(&keys(ID, &"c".repeat(MAX_CLIENT_ID + 1)), 0).is_none());
        let s = Slot::build(&keys(ID, "c"), 0).unwrap();
        let mut b = s.bytes().to_vec();
        b.push(0);
        assert!(Slot::parse(b).is_none());
        let mut b = s.bytes().to_vec();
        b[0] = 1;
        assert!(Slot::parse(b).is_none());
    }

    #[test]
    fn touch_is_due_after_half_the_idle_ttl() {
        let mut s = Slot::build(&keys(ID, "c"), 0).unwrap();
        assert!(!s.take_touch(49));
        assert!(s.take_touch(50));
        assert_eq!(s.touched(), 50);
        assert!(!s.take_touch(60));
    }

    #[test]
    fn a_set_keeps_at_most_ways_slots_and_skips_bad_entries() {
        let a = Slot::build(&keys(ID, "a"), 0).unwrap();
        let b = Slot::build(&keys("BBBBBBBBBBBBBBBBBBBBBB", "b"), 0).unwrap();
        let set = Set {
            slots: vec![a.clone(), b.clone(), a],
            cas: None,
        };
        let bytes = set.encode();
        assert_eq!(Set::parse(&bytes, Some(3), 2).slots.len(), 2);
        let again = Set::parse(&bytes, Some(3), 4);
        assert_eq!(again.find("BBBBBBBBBBBBBBBBBBBBBB"), Some(1));
        // A corrupt first entry (wrong version) is skipped, the next one read.
        let mut bad = bytes.to_vec();
        bad[3] = 9;
        assert_eq!(Set::parse(&bad, None, 4).slots.len(), 2);
        assert!(Set::parse(&[], None, 4).slots.is_empty());
        assert!(Set::parse(&[SET_VERSION, 0xff], None, 4).slots.is_empty());
    }

    #[test]
    fn the_eviction_log_keeps_the_latest_entry_per_pair_within_its_bound() {
        let mut log = Vec::new();
        for (i, id) in ["AAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBB"]
            .iter()
            .enumerate()
        {
            log = evicted_push(&log, id.as_bytes(), i as u64 + 5, 2);
        }
        log = evicted_push(&log, ID.as_bytes(), 9, 2);
        assert_eq!(evicted_max(&log, ID), Some(9));
        assert_eq!(evicted_max(&log, "BBBBBBBBBBBBBBBBBBBBBB"), Some(6));
        log = evicted_push(&log, b"CCCCCCCCCCCCCCCCCCCCCC", 1, 2);
        assert_eq!(evicted_max(&log, "BBBBBBBBBBBBBBBBBBBBBB"), None);
        assert_eq!(log.len(), 2 * EVICTED_ENTRY);
    }

    #[test]
    fn sets_spread_over_the_range() {
        assert_eq!(set_index(ID, 1), 0);
        assert!(set_index(ID, 7) < 7);
        assert_eq!(set_index(ID, 0), 0);
    }
}
