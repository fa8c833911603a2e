//! The filter's configuration: the plugin configuration JSON (Envoy `configuration`, Istio
//! `pluginConfig`), parsed and validated as a whole before anything is applied. Every error
//! names the exact path of the value at fault, e.g. `routes[2].prefix: must start with '/'`.

use core::fmt;

use serde::Deserialize;
use thiserror::Error;

use crate::keys::RotationMonths;
use std::sync::Arc;

use crate::policy::json::{JsonOptions, JsonRules};
use crate::policy::moesif::{MoesifOptions, MoesifRules};

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
    max_depth: Option<usize>,
    #[serde(default)]
    seal_memo_entries: Option<usize>,
    #[serde(default)]
    seal_memo_max_value_bytes: Option<usize>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyservice {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    #[serde(default)]
    seal: Option<RawSeal>,
    #[serde(default)]
    unseal: Option<RawUnseal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnseal {
    #[serde(default)]
    on_unseal_error: Option<OnUnsealError>,
    #[serde(default)]
    unknown_kid_cache_secs: Option<u64>,
    #[serde(default)]
    search: Option<RawSearch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    #[serde(default)]
    seal_route: Option<String>,
    #[serde(default)]
    profile: Option<ProfileName>,
    #[serde(default)]
    options: serde_json::Value,
    #[serde(default)]
    default_from: Option<String>,
    #[serde(default)]
    max_epochs: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeal {
    profile: ProfileName,
    #[serde(default)]
    options: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Moesif,
    Json,
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

/// What a route does to bodies under its prefix.
#[derive(Debug, Clone)]
pub enum RouteAction {
    Seal(SealProfile),
    /// The management-API path: responses are unsealed, searches rewritten.
    Unseal(UnsealAction),
}

/// What an unseal route does with a value it cannot open (fails to authenticate, or its kid
/// is unknown to the keyservice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnsealError {
    /// The value stays as it is (sealed); the response still arrives. Counted.
    #[default]
    Keep,
    /// The response becomes a `502 unseal-failed` problem.
    Reject,
}

pub const DEFAULT_UNKNOWN_KID_CACHE_SECS: u64 = 30;

/// The `unseal` action of a route.
#[derive(Debug, Clone)]
pub struct UnsealAction {
    pub on_error: OnUnsealError,
    /// How long a kid the keyservice does not know (404) is remembered as unknown.
    pub unknown_kid_cache_secs: u64,
    /// Plaintext search rewriting; `None` = search bodies pass untouched.
    pub search: Option<Arc<crate::search::SearchConfig>>,
}

#[derive(Debug, Clone)]
pub enum SealProfile {
    Moesif(Arc<MoesifRules>),
    /// The `json` profile: include/exclude selectors over any JSON body.
    Json(Arc<JsonRules>),
}

#[derive(Debug, Clone)]
pub struct RouteRule {
    /// Path prefix, matched on segment boundaries (`/collector` matches `/collector/v1/x`,
    /// not `/collectors`).
    pub prefix: String,
    pub action: RouteAction,
}

impl RouteRule {
    /// The rest of `path` after this rule's prefix (always starting with `/`), if it matches.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = self.prefix.trim_end_matches('/');
        let rest = path.strip_prefix(prefix)?;
        if rest.is_empty() {
            Some("/")
        } else if rest.starts_with(['/', '?']) {
            Some(rest)
        } else {
            None
        }
    }
}

/// The validated filter configuration.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub keyservice: KeyserviceConfig,
    pub rotation: RotationMonths,
    pub max_body_bytes: usize,
    pub max_depth: usize,
    /// Deterministic seals remembered per worker (0 = off). Default 8192.
    pub seal_memo_entries: usize,
    /// Longest value the memo keeps. Default 128 bytes.
    pub seal_memo_max_value_bytes: usize,
    /// Longest prefix first.
    pub routes: Vec<RouteRule>,
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

        let ks = raw.keyservice;
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
        let keyservice = KeyserviceConfig {
            cluster,
            authority: ks.authority.unwrap_or_else(|| "veil-keyservice".into()),
            token,
            timeout_ms,
            refresh_secs,
        };

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

        let mut routes = Vec::with_capacity(raw.routes.len());
        let mut pending_search: Vec<(usize, PendingSearch)> = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let at = |field: &str| format!("routes[{i}].{field}");
            if !r.prefix.starts_with('/') {
                return Err(ConfigError::at(at("prefix"), "must start with '/'"));
            }
            if r.prefix.contains(['?', '#', '*']) {
                return Err(ConfigError::at(
                    at("prefix"),
                    "must be a plain path prefix (no '?', '#' or '*')",
                ));
            }
            if routes.iter().any(|x: &RouteRule| {
                x.prefix.trim_end_matches('/') == r.prefix.trim_end_matches('/')
            }) {
                return Err(ConfigError::at(
                    at("prefix"),
                    format!("duplicate prefix {:?}", r.prefix),
                ));
            }
            let action = match (r.seal, r.unseal) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::at(
                        format!("routes[{i}]"),
                        "a route has one action: `seal` or `unseal`, not both",
                    ))
                }
                (None, Some(unseal)) => {
                    let (action, search_route) = unseal_action(unseal, &at)?;
                    if let Some(pending) = search_route {
                        pending_search.push((routes.len(), pending));
                    }
                    RouteAction::Unseal(action)
                }
                (Some(seal), None) => {
                    let options_path = at("seal.options");
                    let profile = match seal.profile {
                        ProfileName::Moesif => {
                            let o: MoesifOptions = profile_options(seal.options, &options_path)?;
                            SealProfile::Moesif(Arc::new(MoesifRules::new(&o)))
                        }
                        ProfileName::Json => {
                            let o: JsonOptions = profile_options(seal.options, &options_path)?;
                            let rules = JsonRules::new(&o).map_err(|e| {
                                let at = match e.index {
                                    Some(j) => format!("{options_path}.{}[{j}]", e.field),
                                    None => format!("{options_path}.{}", e.field),
                                };
                                ConfigError::at(at, e.message)
                            })?;
                            SealProfile::Json(Arc::new(rules))
                        }
                    };
                    RouteAction::Seal(profile)
                }
                (None, None) => {
                    return Err(ConfigError::at(
                        format!("routes[{i}]"),
                        "a route needs an action: `seal` or `unseal`",
                    ))
                }
            };
            routes.push(RouteRule {
                prefix: r.prefix,
                action,
            });
        }
        resolve_search_routes(&mut routes, pending_search)?;
        routes.sort_by_key(|r| core::cmp::Reverse(r.prefix.trim_end_matches('/').len()));
        Ok(FilterConfig {
            keyservice,
            rotation,
            max_body_bytes,
            max_depth,
            seal_memo_entries,
            seal_memo_max_value_bytes,
            routes,
        })
    }

    /// The rule for `path` (longest prefix wins) and the path after its prefix.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&RouteRule, &'p str)> {
        self.routes
            .iter()
            .find_map(|r| r.strip(path).map(|rest| (r, rest)))
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

/// An unseal route's `search.seal_route`, resolved once every route is parsed.
struct PendingSearch {
    /// `routes[i].unseal.search.seal_route`, for errors.
    path: String,
    seal_route: String,
    default_from: String,
    max_epochs: usize,
}

/// Parses `routes[i].unseal` (`at` builds `routes[i].<field>` paths).
fn unseal_action(
    raw: RawUnseal,
    at: &dyn Fn(&str) -> String,
) -> Result<(UnsealAction, Option<PendingSearch>), ConfigError> {
    let unknown_kid_cache_secs = raw
        .unknown_kid_cache_secs
        .unwrap_or(DEFAULT_UNKNOWN_KID_CACHE_SECS);
    if !(1..=3600).contains(&unknown_kid_cache_secs) {
        return Err(ConfigError::at(
            at("unseal.unknown_kid_cache_secs"),
            "must be from 1 to 3600",
        ));
    }
    let mut action = UnsealAction {
        on_error: raw.on_unseal_error.unwrap_or_default(),
        unknown_kid_cache_secs,
        search: None,
    };
    let Some(search) = raw.search else {
        return Ok((action, None));
    };
    let default_from = search
        .default_from
        .unwrap_or_else(|| crate::search::DEFAULT_FROM.to_string());
    if crate::search::parse_time(&default_from, 0).is_none() {
        return Err(ConfigError::at(
            at("unseal.search.default_from"),
            "not a time (RFC 3339, `now`, or relative like `-1y`, `-30d`)",
        ));
    }
    let max_epochs = search
        .max_epochs
        .unwrap_or(crate::search::DEFAULT_MAX_EPOCHS);
    if !(1..=crate::search::MAX_MAX_EPOCHS).contains(&max_epochs) {
        return Err(ConfigError::at(
            at("unseal.search.max_epochs"),
            format!("must be from 1 to {}", crate::search::MAX_MAX_EPOCHS),
        ));
    }
    if let Some(seal_route) = search.seal_route {
        if search.profile.is_some() || !search.options.is_null() {
            return Err(ConfigError::at(
                at("unseal.search"),
                "set either `seal_route` or `profile`/`options`, not both",
            ));
        }
        let pending = PendingSearch {
            path: at("unseal.search.seal_route"),
            seal_route,
            default_from,
            max_epochs,
        };
        return Ok((action, Some(pending)));
    }
    let rules = match search.profile.unwrap_or(ProfileName::Moesif) {
        ProfileName::Moesif => {
            let o: MoesifOptions = profile_options(search.options, &at("unseal.search.options"))?;
            Arc::new(MoesifRules::new(&o))
        }
        #[allow(unreachable_patterns)]
        _ => {
            return Err(ConfigError::at(
                at("unseal.search.profile"),
                "search rewriting supports the `moesif` profile only",
            ))
        }
    };
    action.search = Some(Arc::new(crate::search::SearchConfig {
        rules,
        default_from,
        max_epochs,
    }));
    Ok((action, None))
}

/// Gives each unseal route whose search names a `seal_route` that route's moesif rules.
fn resolve_search_routes(
    routes: &mut [RouteRule],
    pending: Vec<(usize, PendingSearch)>,
) -> Result<(), ConfigError> {
    for (index, p) in pending {
        let wanted = p.seal_route.trim_end_matches('/');
        let rules = routes
            .iter()
            .find(|r| r.prefix.trim_end_matches('/') == wanted)
            .and_then(|r| match &r.action {
                RouteAction::Seal(SealProfile::Moesif(rules)) => Some(Arc::clone(rules)),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .ok_or_else(|| {
                ConfigError::at(
                    p.path.clone(),
                    format!(
                        "no route with prefix {:?} seals with the `moesif` profile",
                        p.seal_route
                    ),
                )
            })?;
        if let Some(RouteRule {
            action: RouteAction::Unseal(u),
            ..
        }) = routes.get_mut(index)
        {
            u.search = Some(Arc::new(crate::search::SearchConfig {
                rules,
                default_from: p.default_from,
                max_epochs: p.max_epochs,
            }));
        }
    }
    Ok(())
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
