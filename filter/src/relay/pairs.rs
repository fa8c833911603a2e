//! Relay pairs: each pair's two AES-256-GCM key schedules, built once per VM, and a bounded
//! set-associative table in Envoy shared data (`veil.relay.set.<n>`) that every worker VM
//! reads.
//!
//! A slot holds one pair in a fixed binary layout (no JSON on the request path): its id,
//! client id, keys, end of life, idle TTL, last use and — in `local` replay mode — its replay
//! window. A set is one shared-data value holding up to 4 slots (ways), so one read and one
//! compare-and-swap write cover the whole set and a pair is never in two ways at once. A
//! request in `local` mode costs one shared-data read and one CAS write (the window and last
//! use); in `global` mode the VM cache alone (the keyservice keeps the window).
//!
//! Set `n` is chosen by a hash of the pair id. A new pair takes a free way, else a dead
//! pair's, else the least recently used live pair's (counted); the evicted pair is fetched
//! again from the keyservice, its window restored from the eviction log (docs/relay.md,
//! "Replay").

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use veil_core::relay::wire::PAIR_ID_LEN;
use veil_core::relay::{PartCipher, RelayError, ReplayWindow};
use zeroize::Zeroizing;

use crate::host;
use crate::metrics::Metrics;
use crate::vm::VmState;

/// A pair as one VM uses it. The key schedules zeroize on drop (PartCipher).
pub struct Pair {
    pub client_id: String,
    pub c2s: PartCipher,
    pub s2c: PartCipher,
    /// End of life, unix seconds.
    pub expires_at: i64,
}

/// A pair's keys and lifetime, as the keyservice hands them over.
pub struct PairKeys<'a> {
    pub pair_id: &'a str,
    pub client_id: &'a str,
    pub c2s: &'a [u8; 32],
    pub s2c: &'a [u8; 32],
    pub expires_at: i64,
    pub idle_ttl_secs: u32,
}

/// Most pairs one VM keeps key schedules for (oldest dropped first).
const MAX_VM_PAIRS: usize = 4096;
/// CAS attempts on one slot before the request is answered `relay-unavailable`.
const CAS_TRIES: usize = 16;
/// Longest client id a slot stores (ids are 101 characters).
const MAX_CLIENT_ID: usize = 200;

/// How long a pair id the keyservice does not know is refused without asking again. Pair
/// ids are random and known from their pairing on, so an unknown one never becomes valid.
const UNKNOWN_MS: i64 = 60_000;
const MAX_UNKNOWN: usize = 4096;

/// This VM's pairs (key schedules), bounded, and the pair ids known to be unknown.
#[derive(Default)]
pub struct PairCache {
    pairs: HashMap<String, Rc<Pair>>,
    order: VecDeque<String>,
    /// Pair id → unix ms until which it is refused without a callout.
    unknown: HashMap<String, i64>,
}

impl PairCache {
    fn get(&self, pair_id: &str) -> Option<Rc<Pair>> {
        self.pairs.get(pair_id).cloned()
    }

    fn insert(&mut self, pair_id: &str, pair: Rc<Pair>, cap: usize) {
        if self.pairs.insert(pair_id.to_string(), pair).is_none() {
            self.order.push_back(pair_id.to_string());
        }
        while self.order.len() > cap.clamp(1, MAX_VM_PAIRS) {
            if let Some(old) = self.order.pop_front() {
                self.pairs.remove(&old);
            }
        }
    }

    fn remove(&mut self, pair_id: &str) {
        if self.pairs.remove(pair_id).is_some() {
            self.order.retain(|p| p != pair_id);
        }
    }
}

// Slot layout (offsets after the client id are relative to `24 + n`):
//   0 version (1) | 1 pair id (22) | 23 client id length n (1) | 24 client id (n)
//   c2s (32) | s2c (32) | expires_at i64be | idle_ttl u32be | last_used i64be | window (24)
//   | touched i64be (when the keyservice last saw the pair)
const VERSION: u8 = 2;
const FIXED_TAIL: usize = 32 + 32 + 8 + 4 + 8 + veil_core::relay::window::WINDOW_BYTES + 8;

/// A slot's bytes, checked once; accessors never index out of bounds.
#[derive(Clone)]
struct Slot {
    bytes: Zeroizing<Vec<u8>>,
    /// Offset of c2s.
    tail: usize,
}

fn be_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

impl Slot {
    fn parse(bytes: Vec<u8>) -> Option<Slot> {
        let bytes = Zeroizing::new(bytes);
        if bytes.first() != Some(&VERSION) {
            return None;
        }
        let n = usize::from(*bytes.get(1 + PAIR_ID_LEN)?);
        let tail = 2 + PAIR_ID_LEN + n;
        (bytes.len() == tail + FIXED_TAIL).then_some(Slot { bytes, tail })
    }

    fn build(keys: &PairKeys<'_>, now: i64) -> Option<Slot> {
        if keys.pair_id.len() != PAIR_ID_LEN || keys.client_id.len() > MAX_CLIENT_ID {
            return None;
        }
        let n = u8::try_from(keys.client_id.len()).ok()?;
        let mut b = Zeroizing::new(Vec::with_capacity(2 + PAIR_ID_LEN + 200 + FIXED_TAIL));
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

    fn field(&self, at: usize, len: usize) -> &[u8] {
        self.bytes.get(at..at + len).unwrap_or_default()
    }

    fn pair_id(&self) -> &[u8] {
        self.field(1, PAIR_ID_LEN)
    }

    fn client_id(&self) -> &[u8] {
        self.field(2 + PAIR_ID_LEN, self.tail - 2 - PAIR_ID_LEN)
    }

    fn key(&self, at: usize) -> Option<Zeroizing<[u8; 32]>> {
        let k: [u8; 32] = self.field(self.tail + at, 32).try_into().ok()?;
        Some(Zeroizing::new(k))
    }

    fn expires_at(&self) -> i64 {
        be_i64(self.field(self.tail + 64, 8))
    }

    fn idle_ttl(&self) -> u32 {
        self.field(self.tail + 72, 4)
            .try_into()
            .map(u32::from_be_bytes)
            .unwrap_or(0)
    }

    fn last_used(&self) -> i64 {
        be_i64(self.field(self.tail + 76, 8))
    }

    fn window(&self) -> Option<ReplayWindow> {
        ReplayWindow::from_bytes(self.field(self.tail + 84, 24))
    }

    fn touched(&self) -> i64 {
        be_i64(self.field(self.tail + 108, 8))
    }

    /// In `local` mode the keyservice sees no request: past half its idle TTL since it last
    /// saw the pair, the next request touches it there (marked now, in the same CAS write),
    /// so a busy pair stays fetchable after an eviction or an Envoy restart.
    fn take_touch(&mut self, now: i64) -> bool {
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

    fn set_use(&mut self, now: i64, window: &ReplayWindow) {
        self.set(76, &now.to_be_bytes());
        self.set(84, &window.to_bytes());
    }

    /// Live at `now`: before its end of life and used within its idle TTL.
    fn is_live(&self, now: i64) -> bool {
        now < self.expires_at() && now - self.last_used() <= i64::from(self.idle_ttl())
    }

    fn to_pair(&self) -> Option<Pair> {
        let (c2s, s2c) = (self.key(0)?, self.key(32)?);
        Some(Pair {
            client_id: String::from_utf8(self.client_id().to_vec()).ok()?,
            c2s: PartCipher::new(&c2s),
            s2c: PartCipher::new(&s2c),
            expires_at: self.expires_at(),
        })
    }
}

/// Ways per set: a pair may sit in any of its set's `WAYS` slots, so two live pairs whose
/// ids hash to one set no longer evict each other (a direct-mapped table did, each eviction
/// costing a keyservice callout).
const WAYS: usize = 4;
/// First byte of a set's shared-data value.
const SET_VERSION: u8 = 1;

/// `(sets, ways)` for `pair_cache_slots`: `ways` = min(4, slots), `sets` = slots / ways, so
/// at most `pair_cache_slots` pairs are held (a remainder of slots goes unused).
fn geometry(vm: &VmState) -> (usize, usize) {
    let slots = vm
        .config
        .relay
        .as_ref()
        .map_or(1, |r| r.pair_cache_slots)
        .max(1);
    let ways = WAYS.min(slots);
    (slots / ways, ways)
}

/// FNV-1a: spreads pair ids (random already) over the sets.
fn set_key(vm: &VmState, pair_id: &str) -> String {
    let (sets, _) = geometry(vm);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pair_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let n = h % u64::try_from(sets).unwrap_or(1);
    format!("veil.relay.set.{n}")
}

/// One set as read from shared data: its slots (at most `ways`) and the CAS to write back
/// with (`None`: the key does not exist yet).
struct Set {
    slots: Vec<Slot>,
    cas: Option<u32>,
}

impl Set {
    /// `[SET_VERSION] (u16be length, slot)*`; an entry that does not parse is dropped (its
    /// pair is fetched again).
    fn parse(bytes: &[u8], cas: Option<u32>, ways: usize) -> Set {
        let mut slots = Vec::with_capacity(ways);
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

    fn encode(&self) -> Zeroizing<Vec<u8>> {
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

    fn find(&self, pair_id: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.pair_id() == pair_id.as_bytes())
    }

    /// Compare-and-swap write. False: another worker changed the set meanwhile.
    fn write(&self, key: &str) -> bool {
        host::set_shared(key, &self.encode(), self.cas).is_ok()
    }
}

fn read_set(key: &str, ways: usize) -> Result<Set, RelayError> {
    match host::get_shared(key) {
        Ok(Some((bytes, cas))) => Ok(Set::parse(&Zeroizing::new(bytes), Some(cas), ways)),
        Ok(None) => Ok(Set {
            slots: Vec::new(),
            cas: None,
        }),
        Err(_) => Err(RelayError::Unavailable("shared data unreadable")),
    }
}

fn vm_cap(vm: &VmState) -> usize {
    vm.config.relay.as_ref().map_or(1, |r| r.pair_cache_slots)
}

/// The VM's key schedules for the pair in `slot`, built once.
fn pair_of(vm: &VmState, pair_id: &str, slot: &Slot) -> Result<Rc<Pair>, RelayError> {
    if let Some(p) = vm.pairs.try_borrow().ok().and_then(|c| c.get(pair_id)) {
        return Ok(p);
    }
    let pair = Rc::new(
        slot.to_pair()
            .ok_or(RelayError::Unavailable("a relay slot is corrupt"))?,
    );
    if let Ok(mut c) = vm.pairs.try_borrow_mut() {
        c.insert(pair_id, Rc::clone(&pair), vm_cap(vm));
    }
    Ok(pair)
}

fn check_owner(client_id: &[u8], wanted: &str) -> Result<(), RelayError> {
    if client_id == wanted.as_bytes() {
        Ok(())
    } else {
        Err(RelayError::PairUnknown)
    }
}

/// A request `local` mode accepted: the pair, what `verify` returned, and whether the
/// keyservice should be told the pair is in use (`GET /v1/relay/pairs/{id}`, answer unused).
pub struct Accepted<T> {
    pub pair: Rc<Pair>,
    pub value: T,
    pub touch: bool,
}

/// `local` replay mode: accepts `seq` on the pair in its slot (one read, one CAS write).
/// `verify` runs once, before the window moves: a request whose parts do not open (or whose
/// path is refused) uses up no sequence number. `Ok(None)`: no slot holds the pair (fetch
/// it from the keyservice).
pub fn accept_local<T>(
    vm: &VmState,
    pair_id: &str,
    client_id: &str,
    seq: u64,
    width: u32,
    now: i64,
    verify: impl FnOnce(&Pair) -> Result<T, RelayError>,
) -> Result<Option<Accepted<T>>, RelayError> {
    let key = set_key(vm, pair_id);
    let (_, ways) = geometry(vm);
    let mut verify = Some(verify);
    let mut verified: Option<(Rc<Pair>, T)> = None;
    for _ in 0..CAS_TRIES {
        let mut set = read_set(&key, ways)?;
        let Some(slot) = set.find(pair_id).and_then(|i| set.slots.get_mut(i)) else {
            return Ok(None);
        };
        check_owner(slot.client_id(), client_id)?;
        if !slot.is_live(now) {
            forget(vm, pair_id);
            return Err(RelayError::PairUnknown);
        }
        if verified.is_none() {
            let pair = pair_of(vm, pair_id, slot)?;
            let f = verify
                .take()
                .ok_or(RelayError::Unavailable("relay slot contended"))?;
            let t = f(&pair)?;
            verified = Some((pair, t));
        }
        let mut window = slot
            .window()
            .ok_or(RelayError::Unavailable("a relay slot is corrupt"))?;
        if let Err(e) = window.accept(seq, width) {
            Metrics::add(vm.metrics.relay_replays, 1);
            return Err(e);
        }
        slot.set_use(now, &window);
        let touch = slot.take_touch(now);
        // CAS mismatch: another worker used the set meanwhile; read again.
        if set.write(&key) {
            return Ok(verified.map(|(pair, value)| Accepted { pair, value, touch }));
        }
    }
    Err(RelayError::Unavailable("relay slot contended"))
}

/// `global` replay mode: the pair's key schedules from this VM, or else from its slot.
/// `Ok(None)`: unknown here (fetch it from the keyservice).
pub fn lookup(
    vm: &VmState,
    pair_id: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<Rc<Pair>>, RelayError> {
    let cached = vm.pairs.try_borrow().ok().and_then(|c| c.get(pair_id));
    let pair = match cached {
        Some(p) => p,
        None => {
            let (_, ways) = geometry(vm);
            let set = read_set(&set_key(vm, pair_id), ways)?;
            let Some(slot) = set.find(pair_id).and_then(|i| set.slots.get(i)) else {
                return Ok(None);
            };
            pair_of(vm, pair_id, slot)?
        }
    };
    check_owner(pair.client_id.as_bytes(), client_id)?;
    if now >= pair.expires_at {
        forget(vm, pair_id);
        return Err(RelayError::PairUnknown);
    }
    Ok(Some(pair))
}

/// Installs a pair from the keyservice (a pairing, or a fetch). A slot that already holds
/// this pair is kept as it is (its window is not reset); a slot holding another live pair is
/// taken over (counted).
/// `fetched`: the pair existed before (fetched by id, not just paired); if it lost its slot
/// to another pair on this instance, its window starts above the highest `seq` it had seen.
pub fn install(
    vm: &VmState,
    keys: &PairKeys<'_>,
    fetched: bool,
    now: i64,
) -> Result<Rc<Pair>, RelayError> {
    let mut fresh =
        Slot::build(keys, now).ok_or(RelayError::Unavailable("bad pair from keyservice"))?;
    if fetched {
        if let Some(max) = evicted_max(keys.pair_id) {
            // Every seq up to `max` counts as seen.
            let mut w = [0xffu8; veil_core::relay::window::WINDOW_BYTES];
            if let Some(m) = w.get_mut(..8) {
                m.copy_from_slice(&max.to_be_bytes());
            }
            if let Some(window) = ReplayWindow::from_bytes(&w) {
                fresh.set_use(now, &window);
            }
        }
    }
    let key = set_key(vm, keys.pair_id);
    let (_, ways) = geometry(vm);
    let mut written = false;
    for _ in 0..CAS_TRIES {
        let mut set = read_set(&key, ways)?;
        if set.find(keys.pair_id).is_some() {
            written = true;
            break;
        }
        if set.cas.is_none() {
            // Absent: Envoy cannot create a key atomically (CAS 0 means "whatever is
            // there"), so create it empty, then install under CAS like any other write.
            if host::set_shared(&key, &[SET_VERSION], None).is_err() {
                return Err(RelayError::Unavailable("shared data unwritable"));
            }
            continue;
        }
        // A free way, else a dead pair's, else the least recently used live pair's.
        let dead = set.slots.iter().position(|s| !s.is_live(now));
        let victim = match dead {
            Some(i) => Some(i),
            None if set.slots.len() < ways => None,
            None => set
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used())
                .map(|(i, _)| i),
        };
        let mut evicted = false;
        match victim.and_then(|i| set.slots.get_mut(i)) {
            Some(old) => {
                if old.is_live(now) {
                    // Logged before the write, so a replay cannot slip between the two.
                    let max = old.window().map_or(0, |w| w.max());
                    record_eviction(old.pair_id(), max);
                    evicted = true;
                }
                *old = fresh.clone();
            }
            None => set.slots.push(fresh.clone()),
        }
        if set.write(&key) {
            if evicted {
                Metrics::add(vm.metrics.relay_slot_evictions, 1);
            }
            written = true;
            break;
        }
    }
    if !written {
        return Err(RelayError::Unavailable("relay slot contended"));
    }
    if let Ok(mut c) = vm.pairs.try_borrow_mut() {
        c.remove(keys.pair_id);
    }
    let pair = Rc::new(Pair {
        client_id: keys.client_id.to_string(),
        c2s: PartCipher::new(keys.c2s),
        s2c: PartCipher::new(keys.s2c),
        expires_at: keys.expires_at,
    });
    if let Ok(mut c) = vm.pairs.try_borrow_mut() {
        c.insert(keys.pair_id, Rc::clone(&pair), vm_cap(vm));
    }
    Ok(pair)
}

/// Shared-data key of the eviction log: `(pair id, highest seq)` of the last
/// [`EVICTED_MAX`] live pairs that lost their slot to another pair, so that a pair fetched
/// again does not start with a fresh window (a replay of an older request would pass).
const EVICTED_KEY: &str = "veil.relay.evicted";
const EVICTED_MAX: usize = 1024;
const EVICTED_ENTRY: usize = PAIR_ID_LEN + 8;

fn record_eviction(pair_id: &[u8], max: u64) {
    for _ in 0..CAS_TRIES {
        let (old, cas) = match host::get_shared(EVICTED_KEY) {
            Ok(Some((b, c))) => (b, Some(c)),
            Ok(None) => (Vec::new(), None),
            Err(_) => return,
        };
        let mut list = Vec::with_capacity(old.len() + EVICTED_ENTRY);
        for e in old.chunks_exact(EVICTED_ENTRY) {
            if e.get(..PAIR_ID_LEN) != Some(pair_id) {
                list.extend_from_slice(e);
            }
        }
        list.extend_from_slice(pair_id);
        list.extend_from_slice(&max.to_be_bytes());
        let over = (list.len() / EVICTED_ENTRY).saturating_sub(EVICTED_MAX);
        list.drain(..over * EVICTED_ENTRY);
        if host::set_shared(EVICTED_KEY, &list, cas).is_ok() {
            return;
        }
    }
}

/// The highest `seq` a pair had seen when it lost its slot, if it did.
fn evicted_max(pair_id: &str) -> Option<u64> {
    let (list, _) = host::get_shared(EVICTED_KEY).ok().flatten()?;
    list.chunks_exact(EVICTED_ENTRY)
        .rev()
        .find(|e| e.get(..PAIR_ID_LEN) == Some(pair_id.as_bytes()))
        .and_then(|e| e.get(PAIR_ID_LEN..))
        .and_then(|m| m.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Whether the keyservice said lately that it does not know `pair_id` (no callout then:
/// a flood of made-up pair ids costs the keyservice one lookup each per minute and VM).
pub fn is_unknown(vm: &VmState, pair_id: &str, now_ms: i64) -> bool {
    vm.pairs
        .try_borrow()
        .is_ok_and(|c| c.unknown.get(pair_id).is_some_and(|until| *until > now_ms))
}

/// Remembers that the keyservice does not know `pair_id`.
pub fn mark_unknown(vm: &VmState, pair_id: &str, now_ms: i64) {
    if let Ok(mut c) = vm.pairs.try_borrow_mut() {
        if c.unknown.len() >= MAX_UNKNOWN {
            c.unknown.retain(|_, until| *until > now_ms);
            if c.unknown.len() >= MAX_UNKNOWN {
                c.unknown.clear();
            }
        }
        c.unknown.insert(pair_id.to_string(), now_ms + UNKNOWN_MS);
    }
}

/// Drops a pair the keyservice no longer knows (or that expired) from this VM and its slot.
pub fn forget(vm: &VmState, pair_id: &str) {
    if let Ok(mut c) = vm.pairs.try_borrow_mut() {
        c.remove(pair_id);
    }
    let key = set_key(vm, pair_id);
    let (_, ways) = geometry(vm);
    if let Ok(mut set) = read_set(&key, ways) {
        if let Some(i) = set.find(pair_id) {
            set.slots.remove(i);
            // CAS mismatch: the set changed meanwhile; the pair's idle TTL or the next
            // request's check removes it then.
            let _ = set.write(&key);
        }
    }
}
