//! The session store: what a pair is once it is made, and the operations the relay API needs
//! from wherever pairs are kept ([`super::memory`] or [`super::redis_store`]).
//!
//! Time is passed in by the caller (Unix seconds) so that the memory store's expiry can be
//! tested without sleeping; the Redis store also lets Redis expire idle keys by itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use thiserror::Error;
use veil_core::relay::keys::PairKeys;

/// A boxed future, so that stores can be used as `dyn SessionStore`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The bounds every store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A pair not used for longer than this is dropped.
    pub idle_ttl_secs: u64,
    /// A pair is dropped this long after it was made, used or not.
    pub max_lifetime_secs: u64,
    /// Most pairs kept; past it the least recently used are evicted.
    pub max_sessions: u64,
    /// Width of the replay window (1..=128 sequence numbers).
    pub window: u32,
}

/// A pair to store.
pub struct NewSession {
    pub pair_id: String,
    pub client_id: String,
    pub keys: PairKeys,
    /// Unix seconds after which the pair is gone (its max lifetime).
    pub expires_at: i64,
}

/// A stored pair as handed to the filter.
pub struct Session {
    pub client_id: String,
    pub keys: PairKeys,
    pub expires_at: i64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The answer to a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// First use of `seq` within the window: recorded.
    Accepted,
    /// Already used, or older than the window.
    Replay,
    /// No such pair (never made, expired, or evicted).
    Unknown,
}

/// A failure of the store itself (not of the request).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store did not answer (Redis down, timeout, protocol error). The message never
    /// holds a key or a URL.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Where pairs live. Every operation is atomic per pair.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// `memory` or `redis`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Stores `sessions`, evicting the least recently used pairs past the bound; returns how
    /// many live pairs were evicted.
    fn insert<'a>(
        &'a self,
        sessions: &'a [NewSession],
        now: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The pair, if it is live; a hit restarts its idle TTL.
    fn get<'a>(
        &'a self,
        pair_id: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// Records `seq` (≥ 1) in the pair's replay window; an accepted one restarts its idle TTL.
    fn accept_seq<'a>(
        &'a self,
        pair_id: &'a str,
        seq: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<SeqOutcome, StoreError>>;

    /// How many pairs are live (approximately for Redis: pairs not idle for longer than the
    /// idle TTL). The memory store also drops expired pairs here.
    fn count(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// Cases every store must pass, shared by the memory and the Redis tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pair with keys derived from `n` (distinct per pair and per direction).
    pub(crate) fn new_session(
        pair_id: &str,
        client_id: &str,
        n: u8,
        expires_at: i64,
    ) -> NewSession {
        NewSession {
            pair_id: pair_id.to_string(),
            client_id: client_id.to_string(),
            keys: PairKeys {
                c2s: [n; 32],
                s2c: [n ^ 0xff; 32],
            },
            expires_at,
        }
    }

    /// The replay window of docs/relay-protocol.md §5 for a store made with `width`
    /// (128 or 4): `seq > max` slides, `max - width < seq <= max` once, older refused.
    pub(crate) async fn check_window_cases(store: &dyn SessionStore, width: u32) {
        use SeqOutcome::{Accepted as A, Replay as R};
        const TOP: u64 = (1 << 53) - 1;
        let cases: &[(u64, SeqOutcome)] = match width {
            128 => &[
                (1, A),
                (1, R),
                (3, A),
                (2, A),
                (2, R),
                (200, A),
                (72, R),
                (73, A),
                (73, R),
                (199, A),
                (200, R),
                (201, A),
                (330, A),
                (202, R),
                (203, A),
                (329, A),
                (330, R),
                (331, A),
                (203, R),
                (204, A),
                (204, R),
                (TOP, A),
                (TOP - 1, A),
                (TOP - 127, A),
                (TOP - 128, R),
                (TOP, R),
                (331, R),
            ],
            4 => &[
                (1, A),
                (5, A),
                (1, R),
                (2, A),
                (3, A),
                (4, A),
                (2, R),
                (6, A),
                (3, R),
                (2, R),
                (10, A),
                (6, R),
                (7, A),
                (8, A),
                (9, A),
                (7, R),
                (10, R),
                (11, A),
                (7, R),
                (8, R),
                (12, A),
            ],
            _ => &[],
        };
        assert!(!cases.is_empty(), "no cases for width {width}");
        let id = format!("window-{width}");
        store
            .insert(&[new_session(&id, "c", 9, i64::MAX)], 0)
            .await
            .unwrap();
        for (i, &(seq, want)) in cases.iter().enumerate() {
            let got = store.accept_seq(&id, seq, 1).await.unwrap();
            assert_eq!(
                got,
                want,
                "{} width {width}: case {i} seq {seq}",
                store.kind()
            );
        }
        assert_eq!(
            store.accept_seq("no-such-pair", 1, 1).await.unwrap(),
            SeqOutcome::Unknown
        );
    }
}
