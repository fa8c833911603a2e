//! The relay's counters, appended to `/metrics` (documented in docs/keyservice.md).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of this process (a shared Redis store is counted per keyservice, except the
/// `sessions` gauge, which is read from the store).
#[derive(Debug, Default)]
pub struct RelayMetrics {
    pub pairings_ok: AtomicU64,
    pub pairings_refused: AtomicU64,
    pub pairs_created: AtomicU64,
    pub evictions: AtomicU64,
    pub lookups_found: AtomicU64,
    pub lookups_unknown: AtomicU64,
    pub seq_accepted: AtomicU64,
    pub seq_replay: AtomicU64,
    pub seq_unknown: AtomicU64,
    pub store_errors: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl RelayMetrics {
    /// Prometheus text; `sessions` is the store's count (None if the store did not answer).
    pub fn render(&self, store_kind: &str, sessions: Option<u64>) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let _ = write!(
            s,
            "# HELP veil_keyservice_relay_pairings_total POST /v1/relay/pairs calls, by result.\n\
             # TYPE veil_keyservice_relay_pairings_total counter\n\
             veil_keyservice_relay_pairings_total{{result=\"ok\"}} {}\n\
             veil_keyservice_relay_pairings_total{{result=\"refused\"}} {}\n\
             # HELP veil_keyservice_relay_pairs_created_total Pairs made (one per public key).\n\
             # TYPE veil_keyservice_relay_pairs_created_total counter\n\
             veil_keyservice_relay_pairs_created_total {}\n\
             # HELP veil_keyservice_relay_evictions_total Live pairs evicted to stay within RELAY_MAX_SESSIONS.\n\
             # TYPE veil_keyservice_relay_evictions_total counter\n\
             veil_keyservice_relay_evictions_total {}\n\
             # HELP veil_keyservice_relay_lookups_total GET /v1/relay/pairs/{{id}}, by result.\n\
             # TYPE veil_keyservice_relay_lookups_total counter\n\
             veil_keyservice_relay_lookups_total{{result=\"found\"}} {}\n\
             veil_keyservice_relay_lookups_total{{result=\"unknown\"}} {}\n\
             # HELP veil_keyservice_relay_seq_total Global replay checks, by result (replay = refused).\n\
             # TYPE veil_keyservice_relay_seq_total counter\n\
             veil_keyservice_relay_seq_total{{result=\"accepted\"}} {}\n\
             veil_keyservice_relay_seq_total{{result=\"replay\"}} {}\n\
             veil_keyservice_relay_seq_total{{result=\"unknown\"}} {}\n\
             # HELP veil_keyservice_relay_store_errors_total Relay calls answered 503 because the session store failed.\n\
             # TYPE veil_keyservice_relay_store_errors_total counter\n\
             veil_keyservice_relay_store_errors_total {}\n\
             # HELP veil_keyservice_relay_store_info The session store in use.\n\
             # TYPE veil_keyservice_relay_store_info gauge\n\
             veil_keyservice_relay_store_info{{store=\"{store_kind}\"}} 1\n",
            g(&self.pairings_ok),
            g(&self.pairings_refused),
            g(&self.pairs_created),
            g(&self.evictions),
            g(&self.lookups_found),
            g(&self.lookups_unknown),
            g(&self.seq_accepted),
            g(&self.seq_replay),
            g(&self.seq_unknown),
            g(&self.store_errors),
        );
        if let Some(n) = sessions {
            let _ = write!(
                s,
                "# HELP veil_keyservice_relay_sessions Live pairs in the session store.\n\
                 # TYPE veil_keyservice_relay_sessions gauge\n\
                 veil_keyservice_relay_sessions {n}\n"
            );
        }
        s
    }
}
