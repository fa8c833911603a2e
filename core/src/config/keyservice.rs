//! The `keyservice` section: how the filter reaches the keyservice, and its token.

use core::fmt;

use serde::Deserialize;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyservice {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    refresh_secs: Option<u64>,
}

/// How the filter reaches the keyservice.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyserviceConfig {
    /// Envoy cluster name for `dispatch_http_call`. Default `veil_keyservice`.
    pub cluster: String,
    /// `:authority` of callouts. Default `veil-keyservice`.
    pub authority: String,
    /// Bearer token (never logged).
    pub token: String,
    /// Callout timeout. Default 2000 ms.
    pub timeout_ms: u64,
    /// How often the current keys are refreshed from `on_tick`. Default 60 s.
    pub refresh_secs: u64,
}

impl fmt::Debug for KeyserviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyserviceConfig")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("token", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("refresh_secs", &self.refresh_secs)
            .finish()
    }
}

/// Parses and validates the `keyservice` section (`env` looks up `token_env`).
pub(super) fn keyservice_config(
    ks: RawKeyservice,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KeyserviceConfig, ConfigError> {
    let token = match (ks.token, ks.token_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::at(
                "keyservice",
                "set either `token` or `token_env`, not both",
            ))
        }
        (Some(t), None) => t,
        (None, Some(var)) => env(&var).ok_or_else(|| {
            ConfigError::at(
                "keyservice.token_env",
                format!("environment variable {var} is not set in the VM"),
            )
        })?,
        (None, None) => {
            return Err(ConfigError::at(
                "keyservice",
                "a bearer token is required: set `token` or `token_env`",
            ))
        }
    };
    if token.trim().len() < 32 {
        return Err(ConfigError::at(
            "keyservice.token",
            "must be at least 32 characters",
        ));
    }
    let timeout_ms = ks.timeout_ms.unwrap_or(2000);
    if !(10..=60_000).contains(&timeout_ms) {
        return Err(ConfigError::at(
            "keyservice.timeout_ms",
            "must be from 10 to 60000",
        ));
    }
    let refresh_secs = ks.refresh_secs.unwrap_or(60);
    if !(1..=86_400).contains(&refresh_secs) {
        return Err(ConfigError::at(
            "keyservice.refresh_secs",
            "must be from 1 to 86400",
        ));
    }
    let cluster = ks.cluster.unwrap_or_else(|| "veil_keyservice".into());
    if cluster.is_empty() {
        return Err(ConfigError::at("keyservice.cluster", "must not be empty"));
    }
    Ok(KeyserviceConfig {
        cluster,
        authority: ks.authority.unwrap_or_else(|| "veil-keyservice".into()),
        token,
        timeout_ms,
        refresh_secs,
    })
}
