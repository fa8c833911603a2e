//! The filter's configuration: the plugin configuration JSON (Envoy `configuration`, Istio
//! `pluginConfig`), parsed and validated as a whole before anything is applied. Every error
//! names the exact path of the value at fault, e.g. `routes[2].prefix: must start with '/'`.

mod keyservice;
mod relay;
mod routes;
mod seal;
mod unseal;

use serde::Deserialize;
use thiserror::Error;

use crate::crypto::keys::RotationMonths;

pub use keyservice::KeyserviceConfig;
pub use relay::{
    PublicOrigin, RelayConfig, ReplayConfig, ReplayMode, DEFAULT_PAIR_CACHE_SLOTS,
    DEFAULT_RELAY_PREFIX, MAX_PAIR_CACHE_SLOTS, MAX_RELAY_PAIRS,
};
pub use routes::{RouteAction, RouteRule};
pub use seal::{ProfileName, SealProfile};
pub use unseal::{OnUnsealError, UnsealAction, DEFAULT_UNKNOWN_KID_CACHE_SECS};

use keyservice::{keyservice_config, RawKeyservice};
use relay::{relay_config, RawRelay};
use routes::{route_rules, RawRoute};

/// A configuration error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest `test_clock_offset_secs`, either way: 20 years.
pub const MAX_TEST_CLOCK_OFFSET_SECS: u64 = 20 * 366 * 86_400;
/// Default `max_sealed_body_bytes`: 3 MiB.
pub const DEFAULT_MAX_SEALED_BODY_BYTES: usize = 3 * 1024 * 1024;
pub const DEFAULT_MAX_DEPTH: usize = 128;
pub const DEFAULT_SEAL_MEMO_ENTRIES: usize = 8192;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    keyservice: RawKeyservice,
    #[serde(default)]
    rotation_months: Option<u16>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    max_sealed_body_bytes: Option<usize>,
    #[serde(default)]
    test_clock_offset_secs: Option<i64>,
    #[serde(default)]
    max_depth: Option<usize>,
    #[serde(default)]
    seal_memo_entries: Option<usize>,
    #[serde(default)]
    seal_memo_max_value_bytes: Option<usize>,
    #[serde(default)]
    unseal_memo_entries: Option<usize>,
    #[serde(default)]
    unseal_memo_max_value_bytes: Option<usize>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    relay: Option<RawRelay>,
}

/// The validated filter configuration.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub keyservice: KeyserviceConfig,
    pub rotation: RotationMonths,
    pub max_body_bytes: usize,
    /// Largest body the filter forwards after sealing (sealing grows a body; a body of
    /// tiny numbers grows ~25×). Default 3 MiB: below Envoy's buffer limit, so the filter
    /// refuses with problem+json instead of Envoy answering a bare 413.
    pub max_sealed_body_bytes: usize,
    /// Test only: seconds added to Envoy's clock when the filter picks the epoch to seal
    /// under, so a test can cross an epoch boundary (Envoy is statically linked, so
    /// libfaketime cannot move its clock). Default 0; never set it in production.
    pub test_clock_offset_secs: i64,
    pub max_depth: usize,
    /// Deterministic seals remembered per worker (0 = off). Default 8192.
    pub seal_memo_entries: usize,
    /// Longest value the memo keeps. Default 128 bytes.
    pub seal_memo_max_value_bytes: usize,
    /// Opened values the unseal role remembers per worker (0 = off). Default 8192. Its own
    /// setting: turning the seal memo off does not turn this one off, nor the reverse.
    pub unseal_memo_entries: usize,
    /// Longest plaintext the unseal memo keeps. Default 128 bytes.
    pub unseal_memo_max_value_bytes: usize,
    /// Longest prefix first.
    pub routes: Vec<RouteRule>,
    /// The relay role; `None` when the `relay` section is absent.
    pub relay: Option<RelayConfig>,
}

impl FilterConfig {
    /// Parses and validates the plugin configuration. `env` looks up environment variables
    /// (for `keyservice.token_env`); the filter passes the VM's environment.
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { "$".to_string() } else { path };
            ConfigError::at(path, strip_position(&e.inner().to_string()))
        })?;

        let keyservice = keyservice_config(raw.keyservice, env)?;

        let rotation = match raw.rotation_months {
            None => RotationMonths::DEFAULT,
            Some(n) => RotationMonths::new(n)
                .map_err(|e| ConfigError::at("rotation_months", e.to_string()))?,
        };
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(1..=MAX_MAX_BODY_BYTES).contains(&max_body_bytes) {
            return Err(ConfigError::at(
                "max_body_bytes",
                format!("must be from 1 to {MAX_MAX_BODY_BYTES}"),
            ));
        }
        let max_sealed_body_bytes = raw
            .max_sealed_body_bytes
            .unwrap_or(DEFAULT_MAX_SEALED_BODY_BYTES);
        if !(1..=4 * MAX_MAX_BODY_BYTES).contains(&max_sealed_body_bytes) {
            return Err(ConfigError::at(
                "max_sealed_body_bytes",
                format!("must be from 1 to {}", 4 * MAX_MAX_BODY_BYTES),
            ));
        }
        let test_clock_offset_secs = raw.test_clock_offset_secs.unwrap_or(0);
        if test_clock_offset_secs.unsigned_abs() > MAX_TEST_CLOCK_OFFSET_SECS {
            return Err(ConfigError::at(
                "test_clock_offset_secs",
                format!("must be within ±{MAX_TEST_CLOCK_OFFSET_SECS} (20 years)"),
            ));
        }
        let max_depth = raw.max_depth.unwrap_or(DEFAULT_MAX_DEPTH);
        if !(1..=1024).contains(&max_depth) {
            return Err(ConfigError::at("max_depth", "must be from 1 to 1024"));
        }
        let seal_memo_entries = raw.seal_memo_entries.unwrap_or(DEFAULT_SEAL_MEMO_ENTRIES);
        if seal_memo_entries > 1_000_000 {
            return Err(ConfigError::at(
                "seal_memo_entries",
                "must be from 0 (off) to 1000000",
            ));
        }
        let seal_memo_max_value_bytes = raw.seal_memo_max_value_bytes.unwrap_or(128);
        if !(1..=4096).contains(&seal_memo_max_value_bytes) {
            return Err(ConfigError::at(
                "seal_memo_max_value_bytes",
                "must be from 1 to 4096",
            ));
        }
        let unseal_memo_entries = raw.unseal_memo_entries.unwrap_or(DEFAULT_SEAL_MEMO_ENTRIES);
        if unseal_memo_entries > 1_000_000 {
            return Err(ConfigError::at(
                "unseal_memo_entries",
                "must be from 0 (off) to 1000000",
            ));
        }
        let unseal_memo_max_value_bytes = raw.unseal_memo_max_value_bytes.unwrap_or(128);
        if !(1..=4096).contains(&unseal_memo_max_value_bytes) {
            return Err(ConfigError::at(
                "unseal_memo_max_value_bytes",
                "must be from 1 to 4096",
            ));
        }

        let routes = route_rules(raw.routes)?;
        let relay = match raw.relay {
            Some(r) => Some(relay_config(r, max_body_bytes, env)?),
            None => None,
        };
        Ok(FilterConfig {
            keyservice,
            rotation,
            max_body_bytes,
            max_sealed_body_bytes,
            test_clock_offset_secs,
            max_depth,
            seal_memo_entries,
            seal_memo_max_value_bytes,
            unseal_memo_entries,
            unseal_memo_max_value_bytes,
            routes,
            relay,
        })
    }

    /// The rule for `path` (longest prefix wins) and the path after its prefix.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&RouteRule, &'p str)> {
        self.routes
            .iter()
            .find_map(|r| r.strip(path).map(|rest| (r, rest)))
    }

    /// May a relayed request with this decoded path (no query) go to the upstream? Only
    /// inside the relay's `routes`, and never on a path a route rule claims: a relayed
    /// request skips the route rules, so a decoded body on a sealed route would otherwise
    /// leave in plaintext.
    pub fn relay_may_forward(&self, plain_path: &str) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|relay| relay.route_allowed(plain_path))
            && self.route(plain_path).is_none()
    }
}

/// A profile's options (`null` or absent: all defaults), errors naming the exact path.
fn profile_options<T: serde::de::DeserializeOwned + Default>(
    options: serde_json::Value,
    options_path: &str,
) -> Result<T, ConfigError> {
    if options.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize(options).map_err(|e| {
        ConfigError::at(
            format!("{options_path}.{}", e.path()),
            strip_position(&e.inner().to_string()),
        )
    })
}

/// serde_json appends " at line L column C"; the path already says where.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(p) => msg.get(..p).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn parse(v: serde_json::Value) -> Result<FilterConfig, ConfigError> {
        let env = |k: &str| (k == "VEIL_TOKEN").then(|| TOKEN.to_string());
        FilterConfig::parse(v.to_string().as_bytes(), &env)
    }

    fn err(v: serde_json::Value) -> String {
        match parse(v) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    /// The unseal memo has its own size: the seal memo's setting no longer sizes it
    /// (issue #15: `seal_memo_entries: 0` used to turn the unseal memo off, silently).
    #[test]
    fn unseal_memo_is_sized_by_its_own_settings() {
        let c = parse(serde_json::json!({"keyservice": {"token": TOKEN}, "seal_memo_entries": 0}))
            .unwrap();
        assert_eq!(c.seal_memo_entries, 0);
        assert_eq!(c.unseal_memo_entries, DEFAULT_SEAL_MEMO_ENTRIES);
        assert_eq!(c.unseal_memo_max_value_bytes, 128);
        let c = parse(serde_json::json!({"keyservice": {"token": TOKEN},
            "unseal_memo_entries": 0, "unseal_memo_max_value_bytes": 4096}))
        .unwrap();
        assert_eq!(
            (c.seal_memo_entries, c.unseal_memo_entries),
            (DEFAULT_SEAL_MEMO_ENTRIES, 0)
        );
        assert_eq!(c.unseal_memo_max_value_bytes, 4096);
        assert_eq!(
            err(
                serde_json::json!({"keyservice": {"token": TOKEN}, "unseal_memo_entries": 1_000_001})
            ),
            "unseal_memo_entries: must be from 0 (off) to 1000000"
        );
        assert_eq!(
            err(
                serde_json::json!({"keyservice": {"token": TOKEN}, "unseal_memo_max_value_bytes": 0})
            ),
            "unseal_memo_max_value_bytes: must be from 1 to 4096"
        );
    }

    #[test]
    fn max_sealed_body_bytes_default_and_bounds() {
        let c = parse(serde_json::json!({"keyservice": {"token": TOKEN}})).unwrap();
        assert_eq!(c.max_sealed_body_bytes, DEFAULT_MAX_SEALED_BODY_BYTES);
        let c =
            parse(serde_json::json!({"keyservice": {"token": TOKEN}, "max_sealed_body_bytes": 10}))
                .unwrap();
        assert_eq!(c.max_sealed_body_bytes, 10);
        assert_eq!(c.test_clock_offset_secs, 0);
        assert_eq!(
            err(
                serde_json::json!({"keyservice": {"token": TOKEN}, "test_clock_offset_secs": -700_000_000})
            ),
            "test_clock_offset_secs: must be within ±632448000 (20 years)"
        );
        for bad in [0, 4 * MAX_MAX_BODY_BYTES + 1] {
            assert_eq!(
                err(
                    serde_json::json!({"keyservice": {"token": TOKEN}, "max_sealed_body_bytes": bad})
                ),
                "max_sealed_body_bytes: must be from 1 to 268435456"
            );
        }
    }

    #[test]
    fn minimal_and_defaults() {
        let c = parse(serde_json::json!({"keyservice": {"token": TOKEN}})).unwrap();
        assert_eq!(c.keyservice.cluster, "veil_keyservice");
        assert_eq!(c.keyservice.timeout_ms, 2000);
        assert_eq!(c.rotation.get(), 12);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(c.routes.is_empty());
        assert!(!format!("{c:?}").contains(TOKEN));
    }

    #[test]
    fn relay_defaults_and_values() {
        let secret = "s".repeat(32);
        let c = parse(
            serde_json::json!({"keyservice": {"token": TOKEN}, "max_body_bytes": 1000,
            "relay": {"client_id_secret": secret}}),
        )
        .unwrap();
        let r = c.relay.unwrap();
        assert_eq!(r.prefix, "/veil");
        assert!(r.routes.is_empty() && r.pass_through_routes.is_empty());
        assert_eq!(
            r.replay,
            ReplayConfig {
                mode: ReplayMode::Local,
                window: 128
            }
        );
        assert_eq!(
            (r.max_pairs, r.max_body_bytes, r.pair_cache_slots),
            (5, 1000, 4096)
        );
        assert!(r.route_allowed("/anything") && !r.requires_relay("/anything"));
        assert_eq!(r.public_origin, None);
        assert!(r.forward_wire_headers.is_empty() && !r.allow_sealed_cookie);
        assert!(!format!("{r:?}").contains(&secret));
        let id = r.client_id_secret.issue([1; 16]);
        assert!(r.client_id_secret.verify(&id));
        assert!(parse(serde_json::json!({"keyservice": {"token": TOKEN}}))
            .unwrap()
            .relay
            .is_none());

        let c = parse(
            serde_json::json!({"keyservice": {"token": TOKEN}, "relay": {
            "prefix": "/r", "client_id_secret_env": "VEIL_TOKEN",
            "routes": ["/app/*", "/other"], "pass_through_routes": ["/app/public/*"],
            "replay": {"mode": "global", "window": 16}, "max_pairs": 16, "max_body_bytes": 77,
            "visible_response_headers": ["X-Trace"], "pair_cache_slots": 10,
            "public_origin": "HTTPS://App.Example:8443", "forward_wire_headers": ["Cookie"],
            "allow_sealed_cookie": true}}),
        )
        .unwrap();
        let r = c.relay.unwrap();
        assert_eq!(r.prefix, "/r");
        assert!(r.client_id_secret.verify(
            &crate::relay::ClientIdSecret::new(TOKEN.as_bytes())
                .unwrap()
                .issue([2; 16])
        ));
        assert_eq!(r.replay.mode, ReplayMode::Global);
        assert_eq!(r.replay.window, 16);
        assert_eq!(
            (r.max_pairs, r.max_body_bytes, r.pair_cache_slots),
            (16, 77, 10)
        );
        assert_eq!(r.visible_response_headers, vec!["x-trace".to_string()]);
        assert_eq!(
            r.public_origin,
            Some(PublicOrigin {
                scheme: "https".into(),
                authority: "app.example:8443".into()
            })
        );
        assert_eq!(r.forward_wire_headers, vec!["cookie".to_string()]);
        assert!(r.allow_sealed_cookie);
        assert!(r.route_allowed("/app/x") && r.route_allowed("/other"));
        assert!(!r.route_allowed("/admin") && !r.route_allowed("/app/../admin"));
        assert!(r.requires_relay("/app/x"));
        assert!(!r.requires_relay("/app/public/logo.png"));
        assert!(!r.requires_relay("/admin"));
    }

    #[test]
    fn relayed_requests_never_reach_a_route_rule() {
        let secret = "s".repeat(32);
        let config = |routes: serde_json::Value| {
            parse(serde_json::json!({"keyservice": {"token": TOKEN},
                "routes": [{"prefix": "/collector", "seal": {"profile": "moesif"}},
                           {"prefix": "/api", "unseal": {}}],
                "relay": {"client_id_secret": secret, "routes": routes}}))
            .unwrap()
        };
        // Any path may be relayed, except the ones a seal or unseal rule claims.
        let any = config(serde_json::json!([]));
        assert!(any.relay_may_forward("/app/echo"));
        assert!(!any.relay_may_forward("/collector/v1/events"));
        assert!(!any.relay_may_forward("/api/search"));
        // Inside `routes` only, and still never a rule's path.
        let some = config(serde_json::json!(["/app/*", "/collector/*"]));
        assert!(some.relay_may_forward("/app/echo"));
        assert!(!some.relay_may_forward("/other"));
        assert!(!some.relay_may_forward("/collector/v1/events"));
        // Without a relay section nothing is relayed.
        let none = parse(serde_json::json!({"keyservice": {"token": TOKEN}})).unwrap();
        assert!(!none.relay_may_forward("/app/echo"));
    }

    #[test]
    fn relay_errors_name_the_path() {
        let e = |relay: serde_json::Value| {
            err(serde_json::json!({"keyservice": {"token": TOKEN}, "relay": relay}))
        };
        let s = "s".repeat(32);
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "routes": ["/a/*", "/b", "c"]})),
            "relay.routes[2]: must start with '/'"
        );
        for bad in [
            "app.example",
            "ftp://a",
            "https://a/b",
            "https://u@a",
            "https://",
        ] {
            assert!(
                e(serde_json::json!({"client_id_secret": s, "public_origin": bad}))
                    .starts_with("relay.public_origin: must be an origin"),
                "{bad}"
            );
        }
        for bad in ["x-veil-relay", "host", "bad name"] {
            assert!(
                e(serde_json::json!({"client_id_secret": s, "forward_wire_headers": ["ok", bad]}))
                    .starts_with("relay.forward_wire_headers[1]: must be a header name"),
                "{bad}"
            );
        }
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "pass_through_routes": ["/a?x"]})),
            "relay.pass_through_routes[0]: must be a path without '?' or '#'"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": "short"})),
            "relay.client_id_secret: must be at least 32 bytes"
        );
        assert_eq!(
            e(serde_json::json!({})),
            "relay: a client id secret is required: set `client_id_secret` or `client_id_secret_env`"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "client_id_secret_env": "VEIL_TOKEN"})),
            "relay: set either `client_id_secret` or `client_id_secret_env`, not both"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret_env": "NOPE"})),
            "relay.client_id_secret_env: environment variable NOPE is not set in the VM"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "prefix": "veil"})),
            "relay.prefix: must start with '/'"
        );
        assert!(
            e(serde_json::json!({"client_id_secret": s, "prefix": "/veil/"}))
                .starts_with("relay.prefix: must be a path")
        );
        assert!(e(serde_json::json!({"client_id_secret": s, "prefix": "/"}))
            .starts_with("relay.prefix: must be a path"));
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "replay": {"window": 129}})),
            "relay.replay.window: must be from 1 to 128"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "replay": {"window": 0}})),
            "relay.replay.window: must be from 1 to 128"
        );
        assert!(
            e(serde_json::json!({"client_id_secret": s, "replay": {"mode": "cluster"}}))
                .starts_with("relay.replay.mode: unknown variant `cluster`")
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "max_pairs": 17})),
            "relay.max_pairs: must be from 1 to 16"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "max_pairs": 0})),
            "relay.max_pairs: must be from 1 to 16"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "max_body_bytes": 0})),
            "relay.max_body_bytes: must be from 1 to 67108864"
        );
        assert_eq!(
            e(
                serde_json::json!({"client_id_secret": s, "visible_response_headers": ["ok", "not ok"]})
            ),
            "relay.visible_response_headers[1]: must be a header name (an HTTP token)"
        );
        assert_eq!(
            e(serde_json::json!({"client_id_secret": s, "pair_cache_slots": 0})),
            "relay.pair_cache_slots: must be from 1 to 1048576"
        );
        assert!(e(serde_json::json!({"client_id_secret": s, "routs": []}))
            .contains("unknown field `routs`"));
    }

    #[test]
    fn token_from_env() {
        let c = parse(serde_json::json!({"keyservice": {"token_env": "VEIL_TOKEN"}})).unwrap();
        assert_eq!(c.keyservice.token, TOKEN);
        assert_eq!(
            err(serde_json::json!({"keyservice": {"token_env": "NOPE"}})),
            "keyservice.token_env: environment variable NOPE is not set in the VM"
        );
    }

    #[test]
    fn errors_name_the_path() {
        let ks = serde_json::json!({"token": TOKEN});
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "routes": [
                {"prefix": "/a", "seal": {"profile": "moesif"}},
                {"prefix": "/b", "seal": {"profile": "moesif"}},
                {"prefix": "c", "seal": {"profile": "moesif"}}]})),
            "routes[2].prefix: must start with '/'"
        );
        let e = err(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/a", "seal": {"profile": "moesif", "options": {"encrypt_numerics": "yes"}}}]}));
        assert!(
            e.starts_with("routes[0].seal.options.encrypt_numerics: invalid type"),
            "{e}"
        );
        let e = err(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/a", "seal": {"profile": "moesif", "options": {"encrypt_numbers": true}}}]}));
        assert!(e.contains("unknown field `encrypt_numbers`"), "{e}");
        let e = err(
            serde_json::json!({"keyservice": ks, "routes": [{"prefix": "/a", "seal": {"profile": "nope"}}]}),
        );
        assert!(
            e.starts_with("routes[0].seal.profile: unknown variant `nope`"),
            "{e}"
        );
        assert_eq!(
            err(serde_json::json!({"keyservice": {"token": "short"}})),
            "keyservice.token: must be at least 32 characters"
        );
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "rotation_months": 0})),
            "rotation_months: rotation months must be a whole number from 1 to 120, got \"0\""
        );
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "routes": [{"prefix": "/a"}]})),
            "routes[0]: a route needs an action: `seal` or `unseal`"
        );
        let e = err(serde_json::json!({"keyservice": ks, "routez": []}));
        assert!(e.contains("unknown field `routez`"), "{e}");
        assert!(err(serde_json::json!({})).contains("missing field `keyservice`"));
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "routes": [
                {"prefix": "/a/", "seal": {"profile": "moesif"}},
                {"prefix": "/a", "seal": {"profile": "moesif"}}]})),
            "routes[1].prefix: duplicate prefix \"/a\""
        );
    }

    /// `pad` and `deterministic_domains`: accepted in both profiles; a bad domain is an
    /// error naming its exact path.
    #[test]
    fn value_shape_options() {
        let ks = serde_json::json!({"token": TOKEN});
        let ok = parse(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/a", "seal": {"profile": "moesif", "options": {"pad": false,
                "deterministic_domains": {"email": ["request.body.email", "response.body.owner"]}}}},
            {"prefix": "/b", "seal": {"profile": "json", "options": {"pad": true,
                "deterministic_domains": {"card": ["items.card"]}}}}]}));
        assert!(ok.is_ok(), "{ok:?}");
        let e = parse(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/a", "seal": {"profile": "moesif", "options": {
                "deterministic_domains": {"x": ["a.b"], "y": ["a.b"]}}}}]}))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("routes[0].seal.options.deterministic_domains.y"),
            "{e}"
        );
        let e = parse(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/b", "seal": {"profile": "json", "options": {
                "deterministic_domains": {"x": []}}}}]}))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("routes[0].seal.options.deterministic_domains"),
            "{e}"
        );
    }

    #[test]
    fn json_profile_options_and_selector_errors() {
        let ks = serde_json::json!({"token": TOKEN});
        let c = parse(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/api", "seal": {"profile": "json"}},
            {"prefix": "/pii", "seal": {"profile": "json", "options": {
                "include": ["$..email", "$.items[*].card", "$['odd key']"],
                "exclude": ["$.items[*].card.last4"],
                "mode": "randomized", "encrypt_numerics": false}}}]}))
        .unwrap();
        assert!(matches!(
            c.route("/api/v1/x").map(|(r, _)| &r.action),
            Some(RouteAction::Seal(SealProfile::Json(_)))
        ));
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "routes": [
                {"prefix": "/a", "seal": {"profile": "moesif"}},
                {"prefix": "/b", "seal": {"profile": "json", "options": {
                    "include": ["$.a", "$..b", "$.item[]"]}}}]})),
            "routes[1].seal.options.include[2]: unexpected ']' at 7"
        );
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "routes": [
                {"prefix": "/b", "seal": {"profile": "json", "options": {
                    "exclude": ["$.items[0]"]}}}]})),
            "routes[0].seal.options.exclude[0]: array indices and slices are not supported (use [*]) at 8"
        );
        assert_eq!(
            err(serde_json::json!({"keyservice": ks, "routes": [
                {"prefix": "/b", "seal": {"profile": "json", "options": {"include": []}}}]})),
            "routes[0].seal.options.include: must hold at least one selector (leave it out to seal the whole document)"
        );
        let e = err(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/b", "seal": {"profile": "json", "options": {"include": "$.a"}}}]}));
        assert!(
            e.starts_with("routes[0].seal.options.include: invalid type"),
            "{e}"
        );
        let e = err(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/b", "seal": {"profile": "json", "options": {"include": ["$", 7]}}}]}));
        assert!(
            e.starts_with("routes[0].seal.options.include[1]: invalid type"),
            "{e}"
        );
        let e = err(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/b", "seal": {"profile": "json", "options": {"metadata_skip": []}}}]}));
        assert!(e.contains("unknown field `metadata_skip`"), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("$.f{i}")).collect();
        let e = err(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/b", "seal": {"profile": "json", "options": {"exclude": many}}}]}));
        assert!(
            e.starts_with("routes[0].seal.options.exclude[64]: too many selector steps"),
            "{e}"
        );
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let c = parse(
            serde_json::json!({"keyservice": {"token": TOKEN}, "routes": [
            {"prefix": "/c", "seal": {"profile": "moesif"}},
            {"prefix": "/c/deeper", "seal": {"profile": "moesif"}}]}),
        )
        .unwrap();
        let (r, rest) = c.route("/c/deeper/v1/events").unwrap();
        assert_eq!((r.prefix.as_str(), rest), ("/c/deeper", "/v1/events"));
        let (r, rest) = c.route("/c/v1/events?x=1").unwrap();
        assert_eq!((r.prefix.as_str(), rest), ("/c", "/v1/events?x=1"));
        assert!(c.route("/cx/v1/events").is_none());
        assert_eq!(c.route("/c").map(|x| x.1), Some("/"));
    }

    #[test]
    fn unseal_routes_and_their_errors() {
        let ks = serde_json::json!({"token": TOKEN});
        let c = parse(serde_json::json!({"keyservice": ks, "routes": [
            {"prefix": "/collector", "seal": {"profile": "moesif", "options": {"encrypt_numerics": false}}},
            {"prefix": "/api", "unseal": {"search": {"seal_route": "/collector", "max_epochs": 6}}},
            {"prefix": "/api2", "unseal": {"on_unseal_error": "reject", "unknown_kid_cache_secs": 5,
                "search": {"options": {"mode": "randomized"}, "default_from": "-30d"}}},
            {"prefix": "/api3", "unseal": {}}]}))
        .unwrap();
        let unseal = |p: &str| match c.route(p).map(|(r, _)| &r.action) {
            Some(RouteAction::Unseal(u)) => u.clone(),
            other => panic!("{other:?}"),
        };
        let a = unseal("/api/search/~/search/events");
        assert_eq!(a.on_error, OnUnsealError::Keep);
        assert_eq!(a.unknown_kid_cache_secs, DEFAULT_UNKNOWN_KID_CACHE_SECS);
        let s = a.search.unwrap();
        assert_eq!((s.max_epochs, s.default_from.as_str()), (6, "-1y"));
        let b = unseal("/api2/x");
        assert_eq!(
            (b.on_error, b.unknown_kid_cache_secs),
            (OnUnsealError::Reject, 5)
        );
        assert_eq!(b.search.unwrap().default_from, "-30d");
        assert!(unseal("/api3").search.is_none());

        let e = |routes: serde_json::Value| {
            err(serde_json::json!({"keyservice": ks, "routes": routes}))
        };
        assert_eq!(
            e(serde_json::json!([{"prefix": "/a", "seal": {"profile": "moesif"}, "unseal": {}}])),
            "routes[0]: a route has one action: `seal` or `unseal`, not both"
        );
        assert_eq!(
            e(serde_json::json!([{"prefix": "/a", "unseal": {"search": {"seal_route": "/nope"}}}])),
            "routes[0].unseal.search.seal_route: no route with prefix \"/nope\" seals with the `moesif` profile"
        );
        assert_eq!(
            e(
                serde_json::json!([{"prefix": "/c", "seal": {"profile": "moesif"}},
                {"prefix": "/a", "unseal": {"search": {"seal_route": "/c", "options": {}}}}])
            ),
            "routes[1].unseal.search: set either `seal_route` or `profile`/`options`, not both"
        );
        assert_eq!(
            e(serde_json::json!([{"prefix": "/a", "unseal": {"search": {"default_from": "yesterday"}}}])),
            "routes[0].unseal.search.default_from: not a time (RFC 3339, `now`, or relative like `-1y`, `-30d`)"
        );
        assert_eq!(
            e(serde_json::json!([{"prefix": "/a", "unseal": {"search": {"max_epochs": 0}}}])),
            "routes[0].unseal.search.max_epochs: must be from 1 to 240"
        );
        assert_eq!(
            e(serde_json::json!([{"prefix": "/a", "unseal": {"unknown_kid_cache_secs": 0}}])),
            "routes[0].unseal.unknown_kid_cache_secs: must be from 1 to 3600"
        );
        let m = e(serde_json::json!([{"prefix": "/a", "unseal": {"on_unseal_error": "drop"}}]));
        assert!(
            m.starts_with("routes[0].unseal.on_unseal_error: unknown variant `drop`"),
            "{m}"
        );
        let m = e(
            serde_json::json!([{"prefix": "/a", "unseal": {"search": {"options": {"nope": 1}}}}]),
        );
        assert!(
            m.starts_with("routes[0].unseal.search.options.nope: unknown field"),
            "{m}"
        );
        let m = e(serde_json::json!([{"prefix": "/a", "unseal": {"searchh": {}}}]));
        assert!(m.contains("unknown field `searchh`"), "{m}");
    }
}
