//! The relay's keyservice side (docs/relay-protocol.md, docs/keyservice.md "Relay"): pairing
//! runs the X-Wing KEM and derives the pair keys here, the session store keeps the pairs
//! (in memory, or in Redis when `REDIS_URL` is set) with their idle TTL, max lifetime and the
//! global replay window, and the filter reaches it all over the bearer-token API.
//!
//! - [`config`]: `REDIS_URL`, `RELAY_*` variables.
//! - [`store`]: the [`store::SessionStore`] trait; [`memory`] and [`redis_store`] implement it.
//! - [`api`]: the `/v1/relay/*` routes.
//! - [`metrics`]: the relay's counters in `/metrics`.

pub mod api;
pub mod config;
pub mod memory;
pub mod metrics;
pub mod redis_store;
pub mod seal;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::time::Duration;

use self::config::{RelayConfig, StoreConfig};
use self::metrics::RelayMetrics;
use self::store::SessionStore;
use crate::logging::ANNOUNCE_TARGET;

/// How often the memory store drops expired pairs (they are refused on access anyway).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The relay's state in [`crate::server::AppState`].
#[derive(Debug)]
pub struct Relay {
    pub store: Box<dyn SessionStore>,
    pub config: RelayConfig,
    pub metrics: RelayMetrics,
    /// The roots the Redis store seals pair keys under ([`seal`]); kept current by
    /// [`crate::server::AppState`].
    pub sealer: Arc<seal::StoreSealer>,
}

impl Relay {
    /// A relay over `store` (tests use this directly).
    pub fn new(store: Box<dyn SessionStore>, config: RelayConfig) -> Relay {
        Relay {
            store,
            config,
            metrics: RelayMetrics::default(),
            sealer: Arc::new(seal::StoreSealer::new()),
        }
    }

    /// Builds the configured store and, for memory, its sweeper. Must run inside the Tokio
    /// runtime. Redis being down is not an error here: the keyservice serves data keys
    /// anyway and the relay answers 503 until Redis answers.
    pub async fn start(config: RelayConfig) -> Result<Arc<Relay>, String> {
        let limits = config.limits;
        let relay = match &config.store {
            StoreConfig::Memory => {
                let relay = Arc::new(Relay::new(
                    Box::new(memory::MemoryStore::new(limits)),
                    config.clone(),
                ));
                let weak = Arc::downgrade(&relay);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                    loop {
                        tick.tick().await;
                        let Some(relay) = weak.upgrade() else { return };
                        let _ = relay.store.count(crate::keyring::now_unix()).await;
                    }
                });
                tracing::info!(
                    target: ANNOUNCE_TARGET,
                    store = "memory",
                    max_sessions = limits.max_sessions,
                    idle_ttl_secs = limits.idle_ttl_secs,
                    max_lifetime_secs = limits.max_lifetime_secs,
                    replay_window = limits.window,
                    "relay sessions in memory"
                );
                relay
            }
            StoreConfig::Redis {
                url,
                prefix,
                ca_pem,
            } => {
                let sealer = Arc::new(seal::StoreSealer::new());
                let store = redis_store::RedisStore::new(
                    url,
                    prefix,
                    limits,
                    sealer.clone(),
                    ca_pem.as_deref(),
                )
                .map_err(|e| format!("{}: {e}", config::ENV_REDIS_URL))?;
                let addr = redis_store::RedisStore::describe(url);
                match store.ping().await {
                    Ok(()) => tracing::info!(
                        target: ANNOUNCE_TARGET,
                        store = "redis",
                        redis = %addr,
                        prefix = %prefix,
                        max_sessions = limits.max_sessions,
                        idle_ttl_secs = limits.idle_ttl_secs,
                        max_lifetime_secs = limits.max_lifetime_secs,
                        replay_window = limits.window,
                        "relay sessions in redis"
                    ),
                    Err(e) => tracing::warn!(
                        target: ANNOUNCE_TARGET,
                        store = "redis",
                        redis = %addr,
                        error = %e,
                        "redis does not answer yet; relay calls answer 503 until it does"
                    ),
                }
                let mut relay = Relay::new(Box::new(store), config.clone());
                relay.sealer = sealer;
                Arc::new(relay)
            }
        };
        Ok(relay)
    }
}

impl Relay {
    /// The relay's part of `/metrics`; the session count is read from the store.
    pub async fn render_metrics(&self) -> String {
        let sessions = self
            .store
            .count(crate::keyring::now_unix())
            .await
            .map_err(|e| tracing::warn!(store = self.store.kind(), error = %e, "relay metrics: session store failed"))
            .ok();
        self.metrics.render(self.store.kind(), sessions)
    }
}

impl crate::server::AppState {
    /// Serves the relay API from `relay` (without it the relay routes answer 503).
    pub fn with_relay(mut self, relay: Arc<Relay>) -> Self {
        relay.sealer.set_roots(self.roots());
        self.relay = Some(relay);
        self
    }
}
