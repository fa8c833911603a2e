//! Relay settings from the environment (docs/keyservice.md, "Relay"), each with a default and
//! a range, validated at start like the rest of the configuration.

use std::fmt;

use zeroize::Zeroizing;

use crate::config::{ConfigError, Vars};

use super::store::Limits;

pub const ENV_REDIS_URL: &str = "REDIS_URL";
pub const ENV_REDIS_PREFIX: &str = "RELAY_REDIS_PREFIX";
pub const ENV_REDIS_CA_FILE: &str = "RELAY_REDIS_CA_FILE";
pub const ENV_IDLE_TTL: &str = "RELAY_IDLE_TTL_SECS";
pub const ENV_MAX_LIFETIME: &str = "RELAY_MAX_LIFETIME_SECS";
pub const ENV_MAX_SESSIONS: &str = "RELAY_MAX_SESSIONS";
pub const ENV_REPLAY_WINDOW: &str = "RELAY_REPLAY_WINDOW";
pub const ENV_MAX_KEYS: &str = "RELAY_MAX_KEYS_PER_PAIRING";

pub const DEFAULT_REDIS_PREFIX: &str = "veil:relay:";
pub const DEFAULT_IDLE_TTL: u64 = 1800;
pub const DEFAULT_MAX_LIFETIME: u64 = 86_400;
pub const DEFAULT_MAX_SESSIONS: u64 = 100_000;
pub const DEFAULT_REPLAY_WINDOW: u32 = 128;
pub const DEFAULT_MAX_KEYS: usize = 16;

/// Where sessions live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process (the default): lost on restart, not shared between keyservices.
    Memory,
    /// A Redis server shared by every keyservice that uses the same URL and prefix.
    Redis {
        /// May carry a password: never logged or echoed.
        url: Zeroizing<String>,
        /// Prepended to every key this store writes.
        prefix: String,
        /// `rediss://` only: PEM certificates the server's chain must end in
        /// (`RELAY_REDIS_CA_FILE`); `None`: the system's roots.
        ca_pem: Option<Vec<u8>>,
    },
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Memory => f.write_str("Memory"),
            StoreConfig::Redis { prefix, .. } => f
                .debug_struct("Redis")
                .field("url", &"<redacted>")
                .field("prefix", prefix)
                .finish(),
        }
    }
}

/// Everything the relay part of `serve` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub store: StoreConfig,
    pub limits: Limits,
    /// Most public keys one `POST /v1/relay/pairs` may carry.
    pub max_keys_per_pairing: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            store: StoreConfig::Memory,
            limits: Limits {
                idle_ttl_secs: DEFAULT_IDLE_TTL,
                max_lifetime_secs: DEFAULT_MAX_LIFETIME,
                max_sessions: DEFAULT_MAX_SESSIONS,
                window: DEFAULT_REPLAY_WINDOW,
            },
            max_keys_per_pairing: DEFAULT_MAX_KEYS,
        }
    }
}

/// A set, non-empty variable.
fn var(vars: &dyn Vars, name: &str) -> Result<Option<String>, ConfigError> {
    Ok(vars.var(name)?.filter(|v| !v.trim().is_empty()))
}

/// An integer variable in `min..=max`, or `default` when unset.
fn int(vars: &dyn Vars, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(raw) = var(vars, name)? else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            name,
            format!("must be an integer from {min} to {max}, got {raw:?}"),
        )),
    }
}

impl RelayConfig {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let idle_ttl_secs = int(vars, ENV_IDLE_TTL, DEFAULT_IDLE_TTL, 1, 7 * 86_400)?;
        let max_lifetime_secs = int(vars, ENV_MAX_LIFETIME, DEFAULT_MAX_LIFETIME, 1, 30 * 86_400)?;
        let max_sessions = int(vars, ENV_MAX_SESSIONS, DEFAULT_MAX_SESSIONS, 1, 100_000_000)?;
        let window = int(
            vars,
            ENV_REPLAY_WINDOW,
            u64::from(DEFAULT_REPLAY_WINDOW),
            1,
            128,
        )?;
        let max_keys = int(vars, ENV_MAX_KEYS, DEFAULT_MAX_KEYS as u64, 1, 64)?;
        let store = match vars.var(ENV_REDIS_URL)?.map(Zeroizing::new) {
            Some(url) if !url.trim().is_empty() => {
                let url = Zeroizing::new(url.trim().to_string());
                // Parse now (no connection yet) so a typo fails at start; the URL may hold a
                // password, so the error does not echo it.
                match redis::Client::open(url.as_str()) {
                    Ok(_) => {}
                    Err(_) => {
                        return Err(ConfigError::new(
                            ENV_REDIS_URL,
                            "is not a valid redis:// or unix:// URL (value not shown)",
                        ))
                    }
                }
                let tls = url.starts_with("rediss://");
                if !(tls || url.starts_with("redis://") || url.starts_with("unix://")) {
                    return Err(ConfigError::new(
                        ENV_REDIS_URL,
                        "only redis://, rediss:// (TLS) and unix:// URLs are supported (value not shown)",
                    ));
                }
                let ca_pem = match var(vars, ENV_REDIS_CA_FILE)? {
                    None => None,
                    Some(_) if !tls => {
                        return Err(ConfigError::new(
                            ENV_REDIS_CA_FILE,
                            "applies to a rediss:// REDIS_URL only",
                        ))
                    }
                    Some(path) => {
                        let pem = std::fs::read(path.trim()).map_err(|e| {
                            ConfigError::new(
                                ENV_REDIS_CA_FILE,
                                format!("{}: {}", path.trim(), crate::config::io_reason(&e)),
                            )
                        })?;
                        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                            return Err(ConfigError::new(
                                ENV_REDIS_CA_FILE,
                                format!("{}: no PEM certificate in it", path.trim()),
                            ));
                        }
                        Some(pem)
                    }
                };
                let prefix = var(vars, ENV_REDIS_PREFIX)?
                    .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
                if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ConfigError::new(
                        ENV_REDIS_PREFIX,
                        format!("must be at most 64 characters without spaces, got {prefix:?}"),
                    ));
                }
                StoreConfig::Redis {
                    url,
                    prefix,
                    ca_pem,
                }
            }
            _ => StoreConfig::Memory,
        };
        Ok(RelayConfig {
            store,
            limits: Limits {
                idle_ttl_secs,
                max_lifetime_secs,
                max_sessions,
                window: u32::try_from(window).unwrap_or(DEFAULT_REPLAY_WINDOW),
            },
            max_keys_per_pairing: usize::try_from(max_keys).unwrap_or(DEFAULT_MAX_KEYS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults() {
        let c = RelayConfig::from_vars(&vars(&[])).unwrap();
        assert_eq!(c, RelayConfig::default());
        assert_eq!(c.store, StoreConfig::Memory);
        assert_eq!(c.limits.idle_ttl_secs, 1800);
        assert_eq!(c.limits.max_lifetime_secs, 86_400);
        assert_eq!(c.limits.max_sessions, 100_000);
        assert_eq!(c.limits.window, 128);
        assert_eq!(c.max_keys_per_pairing, 16);
        // Empty means unset.
        let c = RelayConfig::from_vars(&vars(&[(ENV_REDIS_URL, ""), (ENV_IDLE_TTL, " ")])).unwrap();
        assert_eq!(c, RelayConfig::default());
    }

    #[test]
    fn values_and_ranges() {
        let c = RelayConfig::from_vars(&vars(&[
            (ENV_IDLE_TTL, "60"),
            (ENV_MAX_LIFETIME, "600"),
            (ENV_MAX_SESSIONS, "3"),
            (ENV_REPLAY_WINDOW, "1"),
            (ENV_MAX_KEYS, "5"),
        ]))
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                idle_ttl_secs: 60,
                max_lifetime_secs: 600,
                max_sessions: 3,
                window: 1
            }
        );
        assert_eq!(c.max_keys_per_pairing, 5);
        for (name, bad) in [
            (ENV_IDLE_TTL, "0"),
            (ENV_MAX_LIFETIME, "-1"),
            (ENV_MAX_SESSIONS, "lots"),
            (ENV_REPLAY_WINDOW, "129"),
            (ENV_MAX_KEYS, "0"),
        ] {
            let e = RelayConfig::from_vars(&vars(&[(name, bad)])).unwrap_err();
            assert_eq!(e.what, name);
            assert!(e.message.contains(bad), "{e}");
        }
    }

    #[test]
    fn redis_url_is_checked_and_never_echoed() {
        let c = RelayConfig::from_vars(&vars(&[(
            ENV_REDIS_URL,
            "redis://:s3cret@127.0.0.1:6379/2",
        )]))
        .unwrap();
        match &c.store {
            StoreConfig::Redis { prefix, .. } => assert_eq!(prefix, DEFAULT_REDIS_PREFIX),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = RelayConfig::from_vars(&vars(&[
            (ENV_REDIS_URL, "redis://127.0.0.1:6379"),
            (ENV_REDIS_PREFIX, "t1:"),
        ]))
        .unwrap();
        assert!(matches!(&c.store, StoreConfig::Redis { prefix, .. } if prefix == "t1:"));
        for bad in ["http://:s3cret@x", "s3cret", "rediss//:s3cret@host:1"] {
            let e = RelayConfig::from_vars(&vars(&[(ENV_REDIS_URL, bad)])).unwrap_err();
            assert_eq!(e.what, ENV_REDIS_URL);
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        // TLS: rediss:// is accepted, with the system's roots unless a CA file is named;
        // a CA file needs rediss:// and must hold a PEM certificate
        let c =
            RelayConfig::from_vars(&vars(&[(ENV_REDIS_URL, "rediss://:s3cret@host:1")])).unwrap();
        assert!(matches!(&c.store, StoreConfig::Redis { ca_pem: None, .. }));
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = RelayConfig::from_vars(&vars(&[
            (ENV_REDIS_URL, "redis://host:1"),
            (ENV_REDIS_CA_FILE, "/etc/hostname"),
        ]))
        .unwrap_err();
        assert_eq!(e.what, ENV_REDIS_CA_FILE);
        for file in ["/nonexistent/ca.pem", "/etc/hostname"] {
            let e = RelayConfig::from_vars(&vars(&[
                (ENV_REDIS_URL, "rediss://host:1"),
                (ENV_REDIS_CA_FILE, file),
            ]))
            .unwrap_err();
            assert_eq!(e.what, ENV_REDIS_CA_FILE, "{file}");
        }
        let e = RelayConfig::from_vars(&vars(&[
            (ENV_REDIS_URL, "redis://127.0.0.1:6379"),
            (ENV_REDIS_PREFIX, "a b"),
        ]))
        .unwrap_err();
        assert_eq!(e.what, ENV_REDIS_PREFIX);
    }
}
