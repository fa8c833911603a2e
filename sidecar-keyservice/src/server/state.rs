//! What every handler shares: the roots held, the token, the replay cache, the counters, and
//! the keyring reloader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use veil_core::keys::RotationMonths;

use super::auth::{ReplayCache, REPLAY_CACHE_ENTRIES};
use crate::config::Token;
use crate::keyring::{now_unix, Keyring, RootState, Roots};
use crate::providers::KeyProvider;

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub data_key_current: AtomicU64,
    pub data_key_kid: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Signed requests refused because their nonce was seen already.
    pub auth_replays: AtomicU64,
    /// Signed requests refused because their timestamp is too far from the clock.
    pub auth_skew_failures: AtomicU64,
    /// Signed requests answered 503 because the replay cache was full.
    pub auth_replay_cache_full: AtomicU64,
    pub ready: AtomicBool,
}

/// Where the keyring and its KEK are, so the server can pick up roots added after it started
/// (`keyring rotate-root` on another replica) when a filter asks for one of their keys.
pub struct Reloader {
    pub keyring: std::path::PathBuf,
    pub provider: Arc<dyn KeyProvider>,
    /// When the keyring was last re-read: at most one reload per [`RELOAD_MIN_INTERVAL`].
    last: tokio::sync::Mutex<Option<Instant>>,
}

/// Unknown root versions trigger at most one keyring reload per this interval.
pub const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);

impl Reloader {
    pub fn new(keyring: std::path::PathBuf, provider: Arc<dyn KeyProvider>) -> Reloader {
        Reloader {
            keyring,
            provider,
            last: tokio::sync::Mutex::new(None),
        }
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// The unwrapped roots; replaced whole when the keyring is (re)loaded.
    roots: RwLock<Arc<Roots>>,
    /// Set once the provider is open (not in tests that build the state by hand).
    pub reloader: std::sync::OnceLock<Reloader>,
    pub rotation: RotationMonths,
    pub token: Token,
    /// Nonces of signed requests seen within the skew window.
    pub replay: Mutex<ReplayCache>,
    pub metrics: Metrics,
    /// Seconds since the Unix epoch; the system clock except in tests.
    pub clock: fn() -> i64,
    /// The relay's store and counters (`/v1/relay/*`); set by `serve`.
    pub relay: Option<Arc<crate::relay::Relay>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("roots", &self.roots)
            .field("rotation", &self.rotation)
            .field("token", &self.token)
            .field("metrics", &self.metrics)
            .field("relay", &self.relay)
            .finish()
    }
}

impl AppState {
    pub fn new(roots: Roots, rotation: RotationMonths, token: Token) -> AppState {
        AppState {
            roots: RwLock::new(Arc::new(roots)),
            reloader: std::sync::OnceLock::new(),
            rotation,
            token,
            replay: Mutex::new(ReplayCache::new(REPLAY_CACHE_ENTRIES)),
            metrics: Metrics::default(),
            clock: now_unix,
            relay: None,
        }
    }

    /// The roots held now.
    pub fn roots(&self) -> Arc<Roots> {
        match self.roots.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_roots(&self, roots: Roots) {
        let roots = Arc::new(roots);
        match self.roots.write() {
            Ok(mut r) => *r = roots,
            Err(p) => *p.into_inner() = roots,
        }
    }

    /// Re-reads the keyring and unwraps its active roots if `version` is not held yet and
    /// the last reload is old enough. Roots already held are kept if the reload fails.
    pub(crate) async fn reload_for(&self, version: u32) -> bool {
        let Some(r) = self.reloader.get() else {
            return false;
        };
        let mut last = r.last.lock().await;
        if self.roots().versions().contains(&version) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < RELOAD_MIN_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        let keyring = match Keyring::load(&r.keyring) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "keyring reload failed; keeping the roots held");
                return false;
            }
        };
        if !keyring
            .roots
            .iter()
            .any(|e| e.version == version && e.state == RootState::Active)
        {
            return false;
        }
        match Roots::unwrap_all(&keyring, r.provider.as_ref(), &r.keyring).await {
            Ok(roots) => {
                tracing::info!(
                    root_versions = ?roots.versions(),
                    current_root = roots.current(),
                    "keyring reloaded: a filter asked for root r{version}"
                );
                let found = roots.versions().contains(&version);
                self.set_roots(roots);
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, "keyring reload failed; keeping the roots held");
                false
            }
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.metrics.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.metrics.ready.load(Ordering::SeqCst)
    }
}
