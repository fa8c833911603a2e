//! What every handler shares: the roots held, the token, the replay cache, the counters, and
//! the keyring reloader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use veil_core::crypto::keys::RotationMonths;

use super::auth::{ReplayCache, REPLAY_CACHE_ENTRIES};
use crate::config::Token;
use crate::keyring::{now_unix, Keyring, KeyringDigest, Roots};
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
    /// Keyring files loaded after start (content changed on disk).
    pub keyring_reloads: AtomicU64,
    /// Changed keyring files that did not load or unwrap (the roots held were kept).
    pub keyring_reload_failures: AtomicU64,
}

/// Where the keyring and its KEK are, so the server picks up a keyring changed on disk: a
/// mounted Secret the kubelet updated (`..data` symlink swap), `keyring rotate-root` on
/// another replica, a `destroy`. Checked every `VEIL_KEYRING_RELOAD_SECS` and when a filter
/// asks for a root version not held.
pub struct Reloader {
    pub keyring: std::path::PathBuf,
    pub provider: Arc<dyn KeyProvider>,
    last: tokio::sync::Mutex<Loaded>,
}

/// What the roots held were loaded from.
#[derive(Debug, Default)]
struct Loaded {
    /// When a filter's unknown version last triggered a reload: at most one per
    /// [`RELOAD_MIN_INTERVAL`].
    asked_at: Option<Instant>,
    /// SHA-256 of the keyring file the roots held came from.
    digest: Option<KeyringDigest>,
}

/// Seconds of [`RELOAD_MIN_INTERVAL`].
pub const RELOAD_MIN_INTERVAL_SECS: u64 = 5;

/// Unknown root versions trigger at most one keyring reload per this interval.
pub const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(RELOAD_MIN_INTERVAL_SECS);

impl Reloader {
    /// `digest`: of the keyring file the roots held were unwrapped from.
    pub fn new(
        keyring: std::path::PathBuf,
        provider: Arc<dyn KeyProvider>,
        digest: Option<KeyringDigest>,
    ) -> Reloader {
        Reloader {
            keyring,
            provider,
            last: tokio::sync::Mutex::new(Loaded {
                asked_at: None,
                digest,
            }),
        }
    }
}

/// What a check of the keyring file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Same content as the roots held (or no reloader yet).
    Unchanged,
    /// New content, unwrapped: its roots are the ones held now.
    Reloaded,
    /// New content that could not be read or unwrapped: the roots held are kept.
    Failed,
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
        if let Some(relay) = &self.relay {
            relay.sealer.set_roots(roots.clone());
        }
        match self.roots.write() {
            Ok(mut r) => *r = roots,
            Err(p) => *p.into_inner() = roots,
        }
    }

    /// Re-reads the keyring file; if its content differs from the one the roots held came
    /// from, unwraps its active roots and holds those instead. The path is opened anew each
    /// time, so a Secret volume's swapped `..data` symlink is followed. A keyring that does
    /// not load or unwrap leaves the roots held as they are (and is retried next time).
    pub async fn reload_if_changed(&self) -> Reload {
        let Some(r) = self.reloader.get() else {
            return Reload::Unchanged;
        };
        let mut last = r.last.lock().await;
        self.reload_locked(r, &mut last, "the keyring file changed")
            .await
    }

    async fn reload_locked(&self, r: &Reloader, last: &mut Loaded, why: &str) -> Reload {
        let (keyring, digest) = match Keyring::read(&r.keyring) {
            Ok(k) => k,
            Err(e) => {
                self.metrics
                    .keyring_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "keyring reload failed; keeping the roots held");
                return Reload::Failed;
            }
        };
        if last.digest == Some(digest) {
            return Reload::Unchanged;
        }
        match Roots::unwrap_all(&keyring, r.provider.as_ref(), &r.keyring).await {
            Ok(roots) => {
                tracing::info!(
                    keyring = %r.keyring.display(),
                    root_versions = ?roots.versions(),
                    current_root = roots.current(),
                    relay_key_ids = ?roots.relay_key_ids(),
                    "keyring reloaded: {why}"
                );
                self.set_roots(roots);
                last.digest = Some(digest);
                self.metrics.keyring_reloads.fetch_add(1, Ordering::Relaxed);
                Reload::Reloaded
            }
            Err(e) => {
                self.metrics
                    .keyring_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "keyring reload failed; keeping the roots held");
                Reload::Failed
            }
        }
    }

    /// Re-reads the keyring if `version` is not held yet and the last such reload is old
    /// enough (a filter asked for a key of a root this process has not loaded).
    pub(crate) async fn reload_for(&self, version: u32) -> bool {
        let Some(r) = self.reloader.get() else {
            return false;
        };
        let mut last = r.last.lock().await;
        if self.roots().versions().contains(&version) {
            return true;
        }
        if last
            .asked_at
            .is_some_and(|t| t.elapsed() < RELOAD_MIN_INTERVAL)
        {
            return false;
        }
        last.asked_at = Some(Instant::now());
        let why = format!("a filter asked for root r{version}");
        self.reload_locked(r, &mut last, &why).await;
        self.roots().versions().contains(&version)
    }

    pub fn set_ready(&self, ready: bool) {
        self.metrics.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.metrics.ready.load(Ordering::SeqCst)
    }
}
