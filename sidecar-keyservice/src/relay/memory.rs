//! The in-process session store (the default): an LRU map bounded to `max_sessions`, idle TTL
//! and max lifetime checked on every access and swept by [`SessionStore::count`]. Lost on
//! restart and not shared between keyservices (use Redis for that).

use std::sync::{Mutex, MutexGuard};

use lru::LruCache;
use veil_core::relay::keys::PairKeys;
use veil_core::relay::window::ReplayWindow;

use super::store::{BoxFuture, Limits, NewSession, SeqOutcome, Session, SessionStore, StoreError};

/// One stored pair. The keys are zeroized when the entry is dropped (evicted, expired,
/// replaced or at shutdown).
struct Entry {
    client_id: String,
    keys: PairKeys,
    expires_at: i64,
    last_used: i64,
    window: ReplayWindow,
}

/// See the module docs.
pub struct MemoryStore {
    limits: Limits,
    map: Mutex<LruCache<String, Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub fn new(limits: Limits) -> MemoryStore {
        MemoryStore {
            limits,
            // Bounded by hand in `insert`, so an eviction can be told from an expiry.
            map: Mutex::new(LruCache::unbounded()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (every update
        // is a single assignment), so a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, e: &Entry, now: i64) -> bool {
        let idle = i64::try_from(self.limits.idle_ttl_secs).unwrap_or(i64::MAX);
        now < e.expires_at && now.saturating_sub(e.last_used) <= idle
    }

    fn insert_now(&self, sessions: &[NewSession], now: i64) -> u64 {
        let mut map = self.lock();
        for s in sessions {
            map.put(
                s.pair_id.clone(),
                Entry {
                    client_id: s.client_id.clone(),
                    keys: s.keys.clone(),
                    expires_at: s.expires_at,
                    last_used: now,
                    window: ReplayWindow::default(),
                },
            );
        }
        let max = usize::try_from(self.limits.max_sessions).unwrap_or(usize::MAX);
        let mut evicted = 0;
        while map.len() > max {
            // The least recently used first: idle-expired pairs go before live ones.
            match map.pop_lru() {
                Some((_, e)) if self.live(&e, now) => evicted += 1,
                Some(_) => {}
                None => break,
            }
        }
        evicted
    }

    fn get_now(&self, pair_id: &str, now: i64) -> Option<Session> {
        let mut map = self.lock();
        let live = map.peek(pair_id).map(|e| self.live(e, now))?;
        if !live {
            map.pop(pair_id);
            return None;
        }
        let e = map.get_mut(pair_id)?;
        e.last_used = now;
        Some(Session {
            client_id: e.client_id.clone(),
            keys: e.keys.clone(),
            expires_at: e.expires_at,
        })
    }

    fn seq_now(&self, pair_id: &str, seq: u64, now: i64) -> SeqOutcome {
        let mut map = self.lock();
        let Some(live) = map.peek(pair_id).map(|e| self.live(e, now)) else {
            return SeqOutcome::Unknown;
        };
        if !live {
            map.pop(pair_id);
            return SeqOutcome::Unknown;
        }
        let Some(e) = map.get_mut(pair_id) else {
            return SeqOutcome::Unknown;
        };
        match e.window.accept(seq, self.limits.window) {
            Ok(()) => {
                e.last_used = now;
                SeqOutcome::Accepted
            }
            Err(_) => SeqOutcome::Replay,
        }
    }

    /// Drops every expired pair; returns how many are left.
    fn sweep(&self, now: i64) -> u64 {
        let mut map = self.lock();
        let dead: Vec<String> = map
            .iter()
            .filter(|(_, e)| !self.live(e, now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            map.pop(&k);
        }
        map.len() as u64
    }
}

impl SessionStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn insert<'a>(
        &'a self,
        sessions: &'a [NewSession],
        now: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.insert_now(sessions, now)) })
    }

    fn get<'a>(
        &'a self,
        pair_id: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move { Ok(self.get_now(pair_id, now)) })
    }

    fn accept_seq<'a>(
        &'a self,
        pair_id: &'a str,
        seq: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<SeqOutcome, StoreError>> {
        Box::pin(async move { Ok(self.seq_now(pair_id, seq, now)) })
    }

    fn count(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.sweep(now)) })
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::tests::{check_window_cases, new_session};
    use super::*;

    const LIMITS: Limits = Limits {
        idle_ttl_secs: 100,
        max_lifetime_secs: 1000,
        max_sessions: 3,
        window: 128,
    };

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn stores_and_returns_a_pair() {
        let s = MemoryStore::new(LIMITS);
        let n = new_session("p1", "c1", 7, 1000);
        assert_eq!(block(s.insert(std::slice::from_ref(&n), 0)).unwrap(), 0);
        let got = block(s.get("p1", 1)).unwrap().unwrap();
        assert_eq!(got.client_id, "c1");
        assert_eq!(got.keys.c2s, n.keys.c2s);
        assert_eq!(got.keys.s2c, n.keys.s2c);
        assert_ne!(got.keys.c2s, got.keys.s2c);
        assert_eq!(got.expires_at, 1000);
        assert!(block(s.get("p2", 1)).unwrap().is_none());
        assert_eq!(block(s.count(1)).unwrap(), 1);
    }

    #[test]
    fn idle_ttl_restarts_on_use() {
        let s = MemoryStore::new(LIMITS);
        block(s.insert(&[new_session("p", "c", 1, 1000)], 0)).unwrap();
        // Used at 100 and 200: each within 100 s of the last use.
        assert!(block(s.get("p", 100)).unwrap().is_some());
        assert_eq!(
            block(s.accept_seq("p", 1, 200)).unwrap(),
            SeqOutcome::Accepted
        );
        assert!(block(s.get("p", 300)).unwrap().is_some());
        // Then idle for 101 s: gone, and stays gone.
        assert!(block(s.get("p", 401)).unwrap().is_none());
        assert!(block(s.get("p", 402)).unwrap().is_none());
        assert_eq!(
            block(s.accept_seq("p", 2, 402)).unwrap(),
            SeqOutcome::Unknown
        );
        assert_eq!(block(s.count(402)).unwrap(), 0);
    }

    #[test]
    fn a_refused_seq_does_not_keep_a_pair_alive() {
        let s = MemoryStore::new(LIMITS);
        block(s.insert(&[new_session("p", "c", 1, 1000)], 0)).unwrap();
        assert_eq!(
            block(s.accept_seq("p", 5, 0)).unwrap(),
            SeqOutcome::Accepted
        );
        assert_eq!(block(s.accept_seq("p", 5, 90)).unwrap(), SeqOutcome::Replay);
        assert_eq!(
            block(s.accept_seq("p", 6, 101)).unwrap(),
            SeqOutcome::Unknown
        );
    }

    #[test]
    fn max_lifetime_even_when_busy() {
        let s = MemoryStore::new(LIMITS);
        block(s.insert(&[new_session("p", "c", 1, 250)], 0)).unwrap();
        for t in [50, 100, 150, 200, 249] {
            assert!(block(s.get("p", t)).unwrap().is_some(), "at {t}");
        }
        assert!(block(s.get("p", 250)).unwrap().is_none());
    }

    #[test]
    fn bounded_with_lru_eviction_counted() {
        let s = MemoryStore::new(LIMITS);
        let batch: Vec<_> = (0..3)
            .map(|i| new_session(&format!("p{i}"), "c", i, 1000))
            .collect();
        assert_eq!(block(s.insert(&batch, 0)).unwrap(), 0);
        // p0 used: p1 is now the least recently used.
        assert!(block(s.get("p0", 1)).unwrap().is_some());
        assert_eq!(
            block(s.insert(&[new_session("p3", "c", 3, 1000)], 2)).unwrap(),
            1
        );
        assert!(block(s.get("p1", 3)).unwrap().is_none());
        for p in ["p0", "p2", "p3"] {
            assert!(block(s.get(p, 3)).unwrap().is_some(), "{p}");
        }
        // Four at once into a store of three: one of the new ones goes too, all counted.
        let batch: Vec<_> = (10..14)
            .map(|i| new_session(&format!("p{i}"), "c", i, 1000))
            .collect();
        assert_eq!(block(s.insert(&batch, 4)).unwrap(), 4);
        assert_eq!(block(s.count(4)).unwrap(), 3);
    }

    #[test]
    fn expired_pairs_are_dropped_before_live_ones_without_counting() {
        let s = MemoryStore::new(LIMITS);
        let batch: Vec<_> = (0..3)
            .map(|i| new_session(&format!("p{i}"), "c", i, 1000))
            .collect();
        block(s.insert(&batch, 0)).unwrap();
        assert!(block(s.get("p2", 90)).unwrap().is_some());
        // At 150, p0 and p1 are idle-expired: making one more evicts no live pair.
        assert_eq!(
            block(s.insert(&[new_session("p3", "c", 3, 1000)], 150)).unwrap(),
            0
        );
        assert_eq!(block(s.count(150)).unwrap(), 2);
    }

    #[test]
    fn replay_window() {
        for width in [128, 4] {
            let s = MemoryStore::new(Limits {
                window: width,
                ..LIMITS
            });
            block(check_window_cases(&s, width));
        }
    }
}
