//! The `relay` section: the relay endpoints, the routes they may reach, replay protection
//! and the pair cache. Absent: the filter serves no relay endpoints.

use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, MAX_MAX_BODY_BYTES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    client_id_secret: Option<String>,
    #[serde(default)]
    client_id_secret_env: Option<String>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    pass_through_routes: Vec<String>,
    #[serde(default)]
    replay: Option<RawReplay>,
    #[serde(default)]
    max_pairs: Option<usize>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    visible_response_headers: Vec<String>,
    #[serde(default)]
    pair_cache_slots: Option<usize>,
    #[serde(default)]
    public_origin: Option<String>,
    #[serde(default)]
    forward_wire_headers: Vec<String>,
    #[serde(default)]
    allow_sealed_cookie: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    #[serde(default)]
    mode: Option<ReplayMode>,
    #[serde(default)]
    window: Option<u32>,
}

/// Where the relay keeps each pair's replay window (docs/relay-protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayMode {
    /// In Envoy's shared data: no callout per request, one window per Envoy instance.
    #[default]
    Local,
    /// In the keyservice's store: one loopback callout per request, shared by every Envoy.
    Global,
}

/// `relay.replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    pub mode: ReplayMode,
    /// Width of the window, 1..=128. Default 128.
    pub window: u32,
}

pub const DEFAULT_RELAY_PREFIX: &str = "/veil";
pub const DEFAULT_PAIR_CACHE_SLOTS: usize = 4096;
pub const MAX_PAIR_CACHE_SLOTS: usize = 1 << 20;
pub const MAX_RELAY_PAIRS: usize = 16;

/// The relay role (`relay` section). Absent: the filter serves no relay endpoints.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `P`: the relay endpoints live under it. Default `/veil`; no trailing `/`.
    pub prefix: String,
    /// The HMAC key of client ids (redacted in `Debug`).
    pub client_id_secret: Arc<crate::relay::ClientIdSecret>,
    /// Decoded paths allowed through the relay; empty = any path.
    pub routes: Vec<crate::relay::RouteGlob>,
    /// Paths under `routes` that may still be requested in plaintext.
    pub pass_through_routes: Vec<crate::relay::RouteGlob>,
    pub replay: ReplayConfig,
    /// Most keys per pairing, announced by `GET P/relay`. Default 5.
    pub max_pairs: usize,
    /// Largest decoded request body / plaintext response body. Default: `max_body_bytes`.
    pub max_body_bytes: usize,
    /// Extra response headers kept visible (lowercase).
    pub visible_response_headers: Vec<String>,
    /// Shared-data slots for pair keys and windows per Envoy instance. Default 4096.
    pub pair_cache_slots: usize,
    /// The origin clients address (`https://app.example.com[:port]`), bound into every
    /// request part's AD (docs/relay-protocol.md §3). Default: none — the request's own
    /// `:scheme` and `:authority` as Envoy receives them. Set it when a hop in front
    /// legitimately rewrites them (TLS terminated before Envoy, another host name).
    pub public_origin: Option<PublicOrigin>,
    /// Wire (unsealed) request headers forwarded to the upstream beyond the protocol's
    /// allow-list, lowercase. Default empty: every other wire header is dropped.
    pub forward_wire_headers: Vec<String>,
    /// Whether a sealed `cookie` request header is accepted. Default false: it is refused
    /// with `relay-header-not-allowed` (a page's script cannot set `cookie` in a browser).
    pub allow_sealed_cookie: bool,
}

/// `relay.public_origin`: the scheme and authority bound into relayed requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`, lowercase.
    pub authority: String,
}

impl PublicOrigin {
    /// Parses `scheme://host[:port]` (scheme `http` or `https`, no path, no user info).
    pub fn parse(s: &str) -> Result<PublicOrigin, &'static str> {
        const SHAPE: &str = "must be an origin like https://app.example.com or http://host:8080 (no path, query or user info)";
        let (scheme, authority) = s.split_once("://").ok_or(SHAPE)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(SHAPE);
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
        if authority.is_empty() || !authority.chars().all(ok) {
            return Err(SHAPE);
        }
        Ok(PublicOrigin {
            scheme,
            authority: authority.to_ascii_lowercase(),
        })
    }
}

impl RelayConfig {
    /// Whether a decoded path (no query) may go through the relay.
    pub fn route_allowed(&self, path: &str) -> bool {
        self.routes.is_empty() || crate::relay::routes::any_match(&self.routes, path)
    }

    /// Whether a plaintext request to `path` (no query) must be refused as
    /// `relay-required`: it matches a glob of a non-empty `routes` and none of
    /// `pass_through_routes`. With `routes` empty nothing is forced through the relay.
    pub fn requires_relay(&self, path: &str) -> bool {
        !self.routes.is_empty()
            && crate::relay::routes::any_match(&self.routes, path)
            && !crate::relay::routes::any_match(&self.pass_through_routes, path)
    }
}

/// Parses and validates the `relay` section.
pub(super) fn relay_config(
    raw: RawRelay,
    default_max_body_bytes: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RelayConfig, ConfigError> {
    let prefix = raw
        .prefix
        .unwrap_or_else(|| DEFAULT_RELAY_PREFIX.to_string());
    if !prefix.starts_with('/') {
        return Err(ConfigError::at("relay.prefix", "must start with '/'"));
    }
    if prefix.len() < 2 || prefix.ends_with('/') || prefix.contains(['?', '#', '*', '%']) {
        return Err(ConfigError::at(
            "relay.prefix",
            "must be a path like /veil (not `/`, no trailing '/', no '?', '#', '*' or '%')",
        ));
    }
    let secret =
        match (raw.client_id_secret, raw.client_id_secret_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    "relay",
                    "set either `client_id_secret` or `client_id_secret_env`, not both",
                ))
            }
            (Some(s), None) => s,
            (None, Some(var)) => env(&var).ok_or_else(|| {
                ConfigError::at(
                    "relay.client_id_secret_env",
                    format!("environment variable {var} is not set in the VM"),
                )
            })?,
            (None, None) => return Err(ConfigError::at(
                "relay",
                "a client id secret is required: set `client_id_secret` or `client_id_secret_env`",
            )),
        };
    let client_id_secret = crate::relay::ClientIdSecret::new(secret.as_bytes())
        .map_err(|_| ConfigError::at("relay.client_id_secret", "must be at least 32 bytes"))?;
    let globs = |list: Vec<String>, field: &str| {
        list.iter()
            .enumerate()
            .map(|(i, g)| {
                crate::relay::RouteGlob::parse(g)
                    .map_err(|m| ConfigError::at(format!("relay.{field}[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let routes = globs(raw.routes, "routes")?;
    let pass_through_routes = globs(raw.pass_through_routes, "pass_through_routes")?;
    let replay_raw = raw.replay.unwrap_or(RawReplay {
        mode: None,
        window: None,
    });
    let window = replay_raw.window.unwrap_or(crate::relay::window::MAX_WIDTH);
    if !(1..=crate::relay::window::MAX_WIDTH).contains(&window) {
        return Err(ConfigError::at(
            "relay.replay.window",
            "must be from 1 to 128",
        ));
    }
    let max_pairs = raw.max_pairs.unwrap_or(crate::relay::DEFAULT_MAX_PAIRS);
    if !(1..=MAX_RELAY_PAIRS).contains(&max_pairs) {
        return Err(ConfigError::at(
            "relay.max_pairs",
            format!("must be from 1 to {MAX_RELAY_PAIRS}"),
        ));
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(default_max_body_bytes);
    if !(1..=MAX_MAX_BODY_BYTES).contains(&max_body_bytes) {
        return Err(ConfigError::at(
            "relay.max_body_bytes",
            format!("must be from 1 to {MAX_MAX_BODY_BYTES}"),
        ));
    }
    let mut visible_response_headers = Vec::with_capacity(raw.visible_response_headers.len());
    for (i, h) in raw.visible_response_headers.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        if !crate::relay::wire::is_lowercase_token(&lower) {
            return Err(ConfigError::at(
                format!("relay.visible_response_headers[{i}]"),
                "must be a header name (an HTTP token)",
            ));
        }
        visible_response_headers.push(lower);
    }
    let pair_cache_slots = raw.pair_cache_slots.unwrap_or(DEFAULT_PAIR_CACHE_SLOTS);
    if !(1..=MAX_PAIR_CACHE_SLOTS).contains(&pair_cache_slots) {
        return Err(ConfigError::at(
            "relay.pair_cache_slots",
            format!("must be from 1 to {MAX_PAIR_CACHE_SLOTS}"),
        ));
    }
    let public_origin = raw
        .public_origin
        .as_deref()
        .map(PublicOrigin::parse)
        .transpose()
        .map_err(|m| ConfigError::at("relay.public_origin", m))?;
    let mut forward_wire_headers = Vec::with_capacity(raw.forward_wire_headers.len());
    for (i, h) in raw.forward_wire_headers.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        if !crate::relay::wire::is_lowercase_token(&lower)
            || lower.starts_with("x-veil-")
            || matches!(
                lower.as_str(),
                "host" | "content-length" | "content-type" | "transfer-encoding"
            )
        {
            return Err(ConfigError::at(
                format!("relay.forward_wire_headers[{i}]"),
                "must be a header name (an HTTP token), not host, content-length, content-type, transfer-encoding or x-veil-*",
            ));
        }
        forward_wire_headers.push(lower);
    }
    Ok(RelayConfig {
        public_origin,
        forward_wire_headers,
        allow_sealed_cookie: raw.allow_sealed_cookie.unwrap_or(false),
        prefix,
        client_id_secret: Arc::new(client_id_secret),
        routes,
        pass_through_routes,
        replay: ReplayConfig {
            mode: replay_raw.mode.unwrap_or_default(),
            window,
        },
        max_pairs,
        max_body_bytes,
        visible_response_headers,
        pair_cache_slots,
    })
}
