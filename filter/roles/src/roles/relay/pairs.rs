//! Relay pairs: a bounded set-associative table in shared data (`veil.relay.set.<n>`, the
//! layout in [`veil_core::relay::slots`]) that every worker reads, and each worker's key
//! schedules ([`crate::relay_cache`]).
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
//!
//! Every set and the eviction log are sealed records ([`crate::records`]): shared data is
//! readable and writable by every plugin of the proxy, and a slot holds a pair's keys. A
//! value that does not open (another plugin's, or a plaintext one of an older filter) reads
//! as empty and is counted (`veil.shared.records_rejected`): its pairs are fetched from the
//! keyservice again and the next write replaces it.

use std::rc::Rc;

use veil_core::relay::slots::{self, Set, Slot, SlotKeys, SET_VERSION};
use veil_core::relay::{RelayError, ReplayWindow};
use zeroize::Zeroizing;

use crate::host::{Host, SharedData};
use crate::metrics::Metrics;
use crate::relay_cache::Pair;
use crate::worker::Worker;

/// CAS attempts on one slot before the request is answered `relay-unavailable`.
const CAS_TRIES: usize = 16;

/// Ways per set: a pair may sit in any of its set's `WAYS` slots, so two live pairs whose
/// ids hash to one set no longer evict each other (a direct-mapped table did, each eviction
/// costing a keyservice callout).
const WAYS: usize = 4;

/// `(sets, ways)` for `pair_cache_slots`: `ways` = min(4, slots), `sets` = slots / ways, so
/// at most `pair_cache_slots` pairs are held (a remainder of slots goes unused).
fn geometry(w: &Worker) -> (usize, usize) {
    let slots = w
        .config
        .relay
        .as_ref()
        .map_or(1, |r| r.pair_cache_slots)
        .max(1);
    let ways = WAYS.min(slots);
    (slots / ways, ways)
}

/// The shared-data key of `pair_id`'s set.
fn set_key(w: &Worker, pair_id: &str) -> String {
    let (sets, _) = geometry(w);
    format!("veil.relay.set.{}", slots::set_index(pair_id, sets))
}

/// Compare-and-swap write of a set. False: another worker changed it meanwhile.
fn write_set(h: &dyn SharedData, key: &str, set: &Set) -> bool {
    h.shared_set(key, &set.encode(), set.cas).is_ok()
}

fn read_set(h: &dyn SharedData, key: &str, ways: usize) -> Result<Set, RelayError> {
    match h.shared_get(key) {
        Ok(Some((bytes, cas))) => Ok(Set::parse(&Zeroizing::new(bytes), Some(cas), ways)),
        Ok(None) => Ok(Set {
            slots: Vec::new(),
            cas: None,
        }),
        Err(_) => Err(RelayError::Unavailable("shared data unreadable")),
    }
}

fn worker_cap(w: &Worker) -> usize {
    w.config.relay.as_ref().map_or(1, |r| r.pair_cache_slots)
}

/// The worker's key schedules for the pair in `slot`, built once.
fn pair_of(w: &Worker, pair_id: &str, slot: &Slot) -> Result<Rc<Pair>, RelayError> {
    if let Some(p) = w.pairs.try_borrow().ok().and_then(|c| c.get(pair_id)) {
        return Ok(p);
    }
    let pair =
        Rc::new(Pair::from_slot(slot).ok_or(RelayError::Unavailable("a relay slot is corrupt"))?);
    if let Ok(mut c) = w.pairs.try_borrow_mut() {
        c.insert(pair_id, Rc::clone(&pair), worker_cap(w));
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
    h: &dyn Host,
    w: &Worker,
    pair_id: &str,
    client_id: &str,
    seq: u64,
    now: i64,
    verify: impl FnOnce(&Rc<Pair>) -> Result<T, RelayError>,
) -> Result<Option<Accepted<T>>, RelayError> {
    let width = w.config.relay.as_ref().map_or(0, |r| r.replay.window);
    let key = set_key(w, pair_id);
    let (_, ways) = geometry(w);
    let mut verify = Some(verify);
    let mut verified: Option<(Rc<Pair>, T)> = None;
    let shared = w.records.over(h);
    for _ in 0..CAS_TRIES {
        let mut set = read_set(&shared, &key, ways)?;
        let Some(slot) = set.find(pair_id).and_then(|i| set.slots.get_mut(i)) else {
            return Ok(None);
        };
        check_owner(slot.client_id(), client_id)?;
        if !slot.is_live(now) {
            forget(h, w, pair_id);
            return Err(RelayError::PairUnknown);
        }
        if verified.is_none() {
            let pair = pair_of(w, pair_id, slot)?;
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
            Metrics::add(h, w.metrics.relay_replays, 1);
            return Err(e);
        }
        slot.set_use(now, &window);
        let touch = slot.take_touch(now);
        // CAS mismatch: another worker used the set meanwhile; read again.
        if write_set(&shared, &key, &set) {
            return Ok(verified.map(|(pair, value)| Accepted { pair, value, touch }));
        }
    }
    Err(RelayError::Unavailable("relay slot contended"))
}

/// `global` replay mode: the pair's key schedules from this VM, or else from its slot.
/// `Ok(None)`: unknown here (fetch it from the keyservice).
pub fn lookup(
    h: &dyn Host,
    w: &Worker,
    pair_id: &str,
    client_id: &str,
    now: i64,
) -> Result<Option<Rc<Pair>>, RelayError> {
    let cached = w.pairs.try_borrow().ok().and_then(|c| c.get(pair_id));
    let pair = match cached {
        Some(p) => p,
        None => {
            let (_, ways) = geometry(w);
            let set = read_set(&w.records.over(h), &set_key(w, pair_id), ways)?;
            let Some(slot) = set.find(pair_id).and_then(|i| set.slots.get(i)) else {
                return Ok(None);
            };
            pair_of(w, pair_id, slot)?
        }
    };
    check_owner(pair.client_id.as_bytes(), client_id)?;
    if now >= pair.expires_at {
        forget(h, w, pair_id);
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
    h: &dyn Host,
    w: &Worker,
    keys: &SlotKeys<'_>,
    fetched: bool,
    now: i64,
) -> Result<Rc<Pair>, RelayError> {
    let mut fresh =
        Slot::build(keys, now).ok_or(RelayError::Unavailable("bad pair from keyservice"))?;
    let shared = w.records.over(h);
    if fetched {
        if let Some(max) = evicted_max(&shared, keys.pair_id) {
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
    let key = set_key(w, keys.pair_id);
    let (_, ways) = geometry(w);
    let mut written = false;
    for _ in 0..CAS_TRIES {
        let mut set = read_set(&shared, &key, ways)?;
        if set.find(keys.pair_id).is_some() {
            written = true;
            break;
        }
        if set.cas.is_none() {
            // Absent: Envoy cannot create a key atomically (CAS 0 means "whatever is
            // there"), so create it empty, then install under CAS like any other write.
            if shared.shared_set(&key, &[SET_VERSION], None).is_err() {
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
                    record_eviction(&shared, old.pair_id(), max);
                    evicted = true;
                }
                *old = fresh.clone();
            }
            None => set.slots.push(fresh.clone()),
        }
        if write_set(&shared, &key, &set) {
            if evicted {
                Metrics::add(h, w.metrics.relay_slot_evictions, 1);
            }
            written = true;
            break;
        }
    }
    if !written {
        return Err(RelayError::Unavailable("relay slot contended"));
    }
    if let Ok(mut c) = w.pairs.try_borrow_mut() {
        c.remove(keys.pair_id);
    }
    let pair = Rc::new(Pair::new(
        keys.client_id.to_string(),
        keys.c2s,
        keys.s2c,
        keys.expires_at,
    ));
    if let Ok(mut c) = w.pairs.try_borrow_mut() {
        c.insert(keys.pair_id, Rc::clone(&pair), worker_cap(w));
    }
    Ok(pair)
}

/// Shared-data key of the eviction log: `(pair id, highest seq)` of the last
/// [`EVICTED_MAX`] live pairs that lost their slot to another pair, so that a pair fetched
/// again does not start with a fresh window (a replay of an older request would pass).
const EVICTED_KEY: &str = "veil.relay.evicted";
const EVICTED_MAX: usize = 1024;

fn record_eviction(h: &dyn SharedData, pair_id: &[u8], max: u64) {
    for _ in 0..CAS_TRIES {
        let (old, cas) = match h.shared_get(EVICTED_KEY) {
            Ok(Some((b, c))) => (b, Some(c)),
            Ok(None) => (Vec::new(), None),
            Err(_) => return,
        };
        let list = slots::evicted_push(&old, pair_id, max, EVICTED_MAX);
        if h.shared_set(EVICTED_KEY, &list, cas).is_ok() {
            return;
        }
    }
}

/// The highest `seq` a pair had seen when it lost its slot, if it did.
fn evicted_max(h: &dyn SharedData, pair_id: &str) -> Option<u64> {
    let (list, _) = h.shared_get(EVICTED_KEY).ok().flatten()?;
    slots::evicted_max(&list, pair_id)
}

/// Whether the keyservice said lately that it does not know `pair_id` (no callout then:
/// a flood of made-up pair ids costs the keyservice one lookup each per minute and worker).
pub fn is_unknown(w: &Worker, pair_id: &str, now_ms: i64) -> bool {
    w.pairs
        .try_borrow()
        .is_ok_and(|c| c.is_unknown(pair_id, now_ms))
}

/// Remembers that the keyservice does not know `pair_id`.
pub fn mark_unknown(w: &Worker, pair_id: &str, now_ms: i64) {
    if let Ok(mut c) = w.pairs.try_borrow_mut() {
        c.mark_unknown(pair_id, now_ms);
    }
}

/// Drops a pair the keyservice no longer knows (or that expired) from this VM and its slot.
pub fn forget(h: &dyn Host, w: &Worker, pair_id: &str) {
    if let Ok(mut c) = w.pairs.try_borrow_mut() {
        c.remove(pair_id);
    }
    let key = set_key(w, pair_id);
    let (_, ways) = geometry(w);
    let shared = w.records.over(h);
    if let Ok(mut set) = read_set(&shared, &key, ways) {
        if let Some(i) = set.find(pair_id) {
            set.slots.remove(i);
            // CAS mismatch: the set changed meanwhile; the pair's idle TTL or the next
            // request's check removes it then.
            let _ = write_set(&shared, &key, &set);
        }
    }
}
