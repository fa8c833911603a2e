//! The pool of pairs: each pair's keys and next `seq`, handed out round-robin to one
//! request at a time (a pair in use is busy, so its `seq`s leave in order).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use veil_core::relay::PairKeys;

/// A pair is re-paired this many seconds before its `expires_at`.
pub const EXPIRY_MARGIN_SECS: u64 = 30;

/// One established pair.
pub struct Pair {
    pub id: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The last `seq` used (0: none).
    pub last_seq: u64,
    /// `c2s` seals the requests; each answer's key derives from `s2c` and its response
    /// nonce.
    pub keys: PairKeys,
}

impl Pair {
    pub fn new(id: String, keys: &PairKeys, expires_at: u64) -> Pair {
        Pair {
            id,
            expires_at,
            last_seq: 0,
            keys: keys.clone(),
        }
    }

    /// Whether the pair should be replaced before use.
    /// (Also when its `seq`s are used up.)
    pub fn expiring(&self, now: u64) -> bool {
        now.saturating_add(EXPIRY_MARGIN_SECS) >= self.expires_at
            || self.last_seq >= veil_core::relay::v2::MAX_SEQ
    }

    /// The next `seq` (1, 2, 3, ...; each once).
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq = self.last_seq.saturating_add(1);
        self.last_seq
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Slots {
    /// `None`: checked out by a request.
    slots: Vec<Option<Pair>>,
    next: usize,
    /// Bumped by `fill`, so a pair taken before a refill is not put back into the new pool.
    generation: u64,
}

/// Where a taken pair goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub slot: usize,
    generation: u64,
}

/// Pairs, taken round-robin over the idle ones; `take` waits while all are busy.
pub struct Pool {
    inner: Mutex<Slots>,
    idle: Condvar,
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            inner: Mutex::new(Slots {
                slots: Vec::new(),
                next: 0,
                generation: 0,
            }),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every pair (after a fresh pairing).
    pub fn fill(&self, pairs: Vec<Pair>) {
        let mut s = self.lock();
        s.slots = pairs.into_iter().map(Some).collect();
        s.next = 0;
        s.generation = s.generation.wrapping_add(1);
        self.idle.notify_all();
    }

    pub fn is_empty(&self) -> bool {
        self.lock().slots.is_empty()
    }

    /// The next idle pair after the last one handed out, and where it goes back; `None`
    /// when the pool is empty.
    pub fn take(&self) -> Option<(Ticket, Pair)> {
        let mut s = self.lock();
        loop {
            let n = s.slots.len();
            if n == 0 {
                return None;
            }
            let start = s.next;
            for k in 0..n {
                let i = (start + k) % n;
                if let Some(pair) = s.slots.get_mut(i).and_then(Option::take) {
                    s.next = (i + 1) % n;
                    let ticket = Ticket {
                        slot: i,
                        generation: s.generation,
                    };
                    return Some((ticket, pair));
                }
            }
            s = self.idle.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Puts a pair back into its slot (or a replacement for it). After a refill the old
    /// pair is dropped instead.
    pub fn give_back(&self, ticket: Ticket, pair: Pair) {
        let mut s = self.lock();
        if s.generation == ticket.generation {
            if let Some(cell @ None) = s.slots.get_mut(ticket.slot) {
                *cell = Some(pair);
            }
        }
        self.idle.notify_all();
    }

    /// Ids of the pairs, idle or busy (busy ones as `None`).
    pub fn ids(&self) -> Vec<Option<String>> {
        self.lock()
            .slots
            .iter()
            .map(|p| p.as_ref().map(|p| p.id.clone()))
            .collect()
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: &str) -> Pair {
        let keys = PairKeys {
            c2s: [1; 32],
            s2c: [2; 32],
        };
        Pair::new(id.to_string(), &keys, u64::MAX)
    }

    #[test]
    fn round_robin_over_idle_pairs() {
        let pool = Pool::new();
        assert!(pool.take().is_none());
        pool.fill(vec![pair("a"), pair("b"), pair("c")]);
        let (i, a) = pool.take().unwrap();
        assert_eq!((i.slot, a.id.as_str()), (0, "a"));
        pool.give_back(i, a);
        let (i, b) = pool.take().unwrap();
        assert_eq!(b.id, "b");
        // b busy: next are c, then a (b is skipped)
        let (j, c) = pool.take().unwrap();
        assert_eq!(c.id, "c");
        let (k, a) = pool.take().unwrap();
        assert_eq!(a.id, "a");
        assert_eq!(pool.ids(), vec![None, None, None]);
        pool.give_back(k, a);
        pool.give_back(j, c);
        // the cursor is after a (slot 0); b is still busy, so c comes next
        let (_, c2) = pool.take().unwrap();
        assert_eq!(c2.id, "c");
        pool.give_back(i, b);
    }

    #[test]
    fn a_pair_taken_before_a_refill_is_dropped() {
        let pool = Pool::new();
        pool.fill(vec![pair("old")]);
        let (t, old) = pool.take().unwrap();
        pool.fill(vec![pair("new")]);
        let (t2, new) = pool.take().unwrap();
        assert_eq!(t.slot, t2.slot);
        pool.give_back(t, old);
        assert_eq!(pool.ids(), vec![None]);
        pool.give_back(t2, new);
        assert_eq!(pool.ids(), vec![Some("new".to_string())]);
    }

    #[test]
    fn seq_and_expiry() {
        let mut p = pair("a");
        assert_eq!((p.next_seq(), p.next_seq()), (1, 2));
        p.expires_at = 1000;
        assert!(p.expiring(971));
        assert!(!p.expiring(969));
        p.last_seq = veil_core::relay::v2::MAX_SEQ;
        assert!(p.expiring(0));
    }

    #[test]
    fn take_waits_for_a_busy_pair() {
        let pool = std::sync::Arc::new(Pool::new());
        pool.fill(vec![pair("only")]);
        let (slot, p) = pool.take().unwrap();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.take().map(|(_, p)| p.id))
        };
        pool.give_back(slot, p);
        assert_eq!(waiter.join().unwrap().as_deref(), Some("only"));
    }
}
