//! `veil-keyservice migrate moesif | mte-relay`: reads a seed appliance's environment (an
//! env file, `KEY=VALUE` lines, or this process's environment) and prints what Veil needs
//! instead: the keyservice's environment, the filter's configuration and, for the relay, the
//! Envoy pieces. Every output is validated by the same code that will read it (the keyservice
//! configuration, the filter's `FilterConfig`), so what is printed starts.
//!
//! Secrets (access keys, client secrets, the relay's client id secret, a Redis password) are
//! never printed: their line says which variable to carry over from the secret store.
//! Unknown variables are named on stderr; contradictory ones are an error naming them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::{
    ConfigError, Flags, KeyringConfig, Vars, ENV_KMS_PROVIDER, ENV_ROTATION, ENV_ROTATION_ALIAS,
};
use crate::providers::aws_kms::{
    ENV_AWS_ACCESS_KEY_ID, ENV_AWS_SECRET_ACCESS_KEY, ENV_AWS_SESSION_TOKEN,
};
use crate::providers::azure_keyvault::{ENV_AZURE_CLIENT_SECRET, ENV_IDENTITY_HEADER};
use crate::providers::ProviderKind;

/// The seed appliance migrated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Seed {
    /// Moesif Secure Proxy.
    Moesif,
    /// Eclypses MTE Relay server.
    MteRelay,
}

/// The variables read, by name (empty values count as unset, as everywhere else).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedEnv(pub BTreeMap<String, String>);

impl Vars for SeedEnv {
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.0.get(name).filter(|v| !v.is_empty()).cloned())
    }
}

impl SeedEnv {
    /// An env file as `docker run --env-file` and compose read it: `KEY=VALUE` lines, `#`
    /// comments, blank lines, an optional `export `; one pair of matching quotes around a
    /// value is removed (the seeds' docs write `-e KEY="value"`).
    pub fn parse(text: &str, from: &str) -> Result<SeedEnv, ConfigError> {
        let mut out = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::new(
                    format!("{from}:{}", i + 1),
                    "expected KEY=VALUE",
                ));
            };
            let k = k.trim();
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::new(
                    format!("{from}:{}", i + 1),
                    format!("{k:?} is not a variable name"),
                ));
            }
            let v = v.trim();
            let v = [
                ('"', '"'),
                ('\'', '\''),
                ('\u{201d}', '\u{201d}'),
                ('\u{201c}', '\u{201d}'),
            ]
            .iter()
            .find_map(|(a, b)| {
                v.strip_prefix(*a)
                    .and_then(|r| r.strip_suffix(*b))
                    .filter(|_| v.chars().count() >= 2)
            })
            .unwrap_or(v);
            out.insert(k.to_string(), v.to_string());
        }
        Ok(SeedEnv(out))
    }

    /// Reads an env file.
    pub fn from_file(path: &Path) -> Result<SeedEnv, ConfigError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&what, crate::config::io_reason(&e)))?;
        SeedEnv::parse(&text, &what)
    }

    /// The variables of this process that a seed could have set (by prefix or name), so the
    /// unrelated ones (`PATH`, `HOME`, …) are not reported as unknown.
    pub fn from_process(seed: Seed) -> SeedEnv {
        let keep = |k: &str| match seed {
            Seed::Moesif => {
                ["MOESIF_", "AWS_", "AZURE_", "KMS_", "ENCRYPTION_"]
                    .iter()
                    .any(|p| k.starts_with(p))
                    || k == ENV_IDENTITY_HEADER
            }
            Seed::MteRelay => MTE_KNOWN.iter().any(|(n, _)| *n == k),
        };
        SeedEnv(std::env::vars().filter(|(k, _)| keep(k)).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

/// One line of an environment to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvLine {
    /// `NAME=value`.
    Value(String, String),
    /// A secret: `name` takes the value the seed had in `from`; never printed.
    Secret { name: String, from: String },
}

/// What a migration prints.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    /// The keyservice's environment (docs/keyservice.md).
    pub keyservice_env: Vec<EnvLine>,
    /// Envoy's environment, read by the filter through `host_env_keys`.
    pub envoy_env: Vec<EnvLine>,
    /// The filter's configuration (validated).
    pub filter_config: Value,
    /// Envoy YAML pieces: (what, YAML).
    pub envoy_pieces: Vec<(String, String)>,
    /// Settings understood but with nothing to carry over: (variable, why).
    pub notes: Vec<(String, String)>,
    /// Variables this migration does not know (named on stderr, not carried over).
    pub unknown: Vec<String>,
}

/// A setting that cannot be migrated as it is: `what` names the variables.
fn bad(what: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(what, message)
}

/// Secrets of the Secure Proxy's providers (never printed).
const SECRET_VARS: &[&str] = &[
    ENV_AWS_SECRET_ACCESS_KEY,
    ENV_AWS_SESSION_TOKEN,
    ENV_AZURE_CLIENT_SECRET,
    ENV_IDENTITY_HEADER,
];

/// The Secure Proxy's settings that are not a provider's.
const MOESIF_APP_ID: &str = "MOESIF_APPLICATION_ID";
const MOESIF_MGMT_KEY: &str = "MOESIF_MANAGEMENT_API_KEY";
const MOESIF_ENABLED: &str = "MOESIF_ENCRYPTION_ENABLED";

/// The filter's keyservice section, as every shipped config has it.
fn keyservice_section() -> Value {
    json!({"cluster": "veil_keyservice", "token_env": "VEIL_KEYSERVICE_TOKEN"})
}

/// Parses `config` as the filter will, with placeholder values for the variables it names
/// (their values are the operator's; only their presence is checked).
fn validate_filter(config: &Value) -> Result<(), ConfigError> {
    let text = config.to_string();
    let placeholder =
        |_: &str| Some("0123456789abcdef0123456789abcdef0123456789abcdef".to_string());
    veil_core::config::FilterConfig::parse(text.as_bytes(), &placeholder)
        .map(|_| ())
        .map_err(|e| {
            bad(
                "filter configuration",
                format!("internal: the migrated configuration does not parse: {e}"),
            )
        })
}

/// `migrate moesif`.
pub fn moesif(env: &SeedEnv) -> Result<Migration, ConfigError> {
    let mut m = Migration::default();
    // The keyservice reads these exactly as the Secure Proxy did: its own validation decides
    // the provider (KMS_PROVIDER in any case; unset + AWS_CUSTOMER_KEY_ID = aws-kms; a mix
    // is an error naming the variables) and checks every value.
    let cfg = KeyringConfig::from_vars(env, &Flags::default())?;
    let kind = cfg.provider.kind();

    // A provider's variables set while another provider is selected: contradictory.
    for &other in ProviderKind::ALL {
        if other == kind {
            continue;
        }
        let stray: Vec<&str> = other
            .selected_by()
            .iter()
            .copied()
            .filter(|v| env.get(v).is_some())
            .collect();
        if !stray.is_empty() {
            return Err(bad(
                format!("{ENV_KMS_PROVIDER} / {}", stray.join(" / ")),
                format!(
                    "{} selects {kind}, but {} belong(s) to {other}; remove them or change \
                     {ENV_KMS_PROVIDER}",
                    cfg.chosen_by,
                    stray.join(", ")
                ),
            ));
        }
    }

    m.keyservice_env.push(EnvLine::Value(
        ENV_KMS_PROVIDER.into(),
        kind.as_str().into(),
    ));
    for &name in kind.variables() {
        if env.get(name).is_none() {
            continue;
        }
        if SECRET_VARS.contains(&name) || name == ENV_AWS_ACCESS_KEY_ID {
            // The access key id is not secret by itself, but it is half of a credential
            // pair: carried with its secret, from the same store.
            m.keyservice_env.push(EnvLine::Secret {
                name: name.into(),
                from: name.into(),
            });
        } else if let Some(v) = env.get(name) {
            m.keyservice_env.push(EnvLine::Value(name.into(), v.into()));
        }
    }
    let months = cfg.rotation.get();
    m.keyservice_env
        .push(EnvLine::Value(ENV_ROTATION.into(), months.to_string()));

    let enabled = match env.get(MOESIF_ENABLED) {
        None => true,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(bad(
                    MOESIF_ENABLED,
                    format!("must be \"true\" or \"false\", got {v:?}"),
                ))
            }
        },
    };
    let mut seal = json!({"profile": "moesif"});
    if !enabled {
        seal["options"] = json!({"enabled": false});
    }
    m.filter_config = json!({
        "keyservice": keyservice_section(),
        "rotation_months": months,
        "max_body_bytes": 1_048_576,
        "routes": [
            {"prefix": "/collector", "seal": seal},
            {"prefix": "/api", "unseal": {"on_unseal_error": "keep", "search": {"seal_route": "/collector"}}}
        ]
    });
    validate_filter(&m.filter_config)?;

    if env.get(MOESIF_APP_ID).is_some() {
        m.notes.push((
            MOESIF_APP_ID.into(),
            "not needed: the SDKs keep sending X-Moesif-Application-Id, forwarded as it is".into(),
        ));
    }
    if env.get(MOESIF_MGMT_KEY).is_some() {
        m.notes.push((
            MOESIF_MGMT_KEY.into(),
            "not stored in Veil: management-API callers send their own Authorization through /api"
                .into(),
        ));
    }
    if env.get(ENV_ROTATION).is_some() && env.get(ENV_ROTATION_ALIAS).is_some() {
        m.notes.push((
            ENV_ROTATION_ALIAS.into(),
            format!("agrees with {ENV_ROTATION}; one name is enough"),
        ));
    }
    let known = |k: &str| {
        [
            MOESIF_APP_ID,
            MOESIF_MGMT_KEY,
            MOESIF_ENABLED,
            ENV_KMS_PROVIDER,
            ENV_ROTATION,
            ENV_ROTATION_ALIAS,
        ]
        .contains(&k)
            || ProviderKind::ALL.iter().any(|p| p.variables().contains(&k))
    };
    m.unknown = env.0.keys().filter(|k| !known(k)).cloned().collect();
    Ok(m)
}

/// The MTE Relay server's variables, and what each becomes.
pub const MTE_KNOWN: &[(&str, &str)] = &[
    ("UPSTREAM", "the Envoy cluster `app`"),
    ("PORT", "the Envoy listener's port"),
    (
        "CORS_ORIGINS",
        "Envoy's CORS policy allow_origin_string_match",
    ),
    ("CORS_METHODS", "Envoy's CORS policy allow_methods"),
    (
        "CLIENT_ID_SECRET",
        "the filter's relay.client_id_secret_env",
    ),
    ("MTE_ROUTES", "the filter's relay.routes"),
    (
        "PASS_THROUGH_ROUTES",
        "the filter's relay.pass_through_routes",
    ),
    (
        "PASSTHROUGH_ROUTES",
        "the filter's relay.pass_through_routes",
    ),
    ("HEADERS", "the virtual host's response_headers_to_add"),
    (
        "REDIS_URL",
        "the keyservice's REDIS_URL; relay.replay.mode global",
    ),
    (
        "DEBUG",
        "Envoy's --log-level debug and the keyservice's VEIL_LOG=debug",
    ),
    ("MAX_POOL_SIZE", "none: no encoder state to pool"),
    ("LICENSE_COMPANY", "none: no licence"),
    ("LICENSE_KEY", "none: no licence"),
];

/// The relay's client id secret: shortest length, as the filter requires.
const MIN_CLIENT_ID_SECRET: usize = 32;
/// The environment variable the shipped relay configs read the secret from.
const ENV_CLIENT_ID_SECRET: &str = "VEIL_RELAY_CLIENT_ID_SECRET";

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `UPSTREAM` as (https?, host, port).
fn upstream(v: &str) -> Result<(bool, String, u16), ConfigError> {
    let (tls, rest) = if let Some(r) = v.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = v.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad(
            "UPSTREAM",
            format!("{v:?} is not an http:// or https:// URL"),
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if !matches!(rest.get(authority.len()..), Some("" | "/")) {
        return Err(bad(
            "UPSTREAM",
            format!(
                "{v:?}: a path after the host is not supported (Envoy would need a prefix rewrite)"
            ),
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| bad("UPSTREAM", format!("{v:?}: {p:?} is not a port")))?,
        ),
        None => (authority.to_string(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() || host.contains(['@', ':', '[']) {
        return Err(bad(
            "UPSTREAM",
            format!("{v:?}: no host name (credentials and IPv6 literals are not supported)"),
        ));
    }
    Ok((tls, host, port))
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar.
fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `migrate mte-relay`.
pub fn mte_relay(env: &SeedEnv) -> Result<Migration, ConfigError> {
    let mut m = Migration::default();
    let up = env
        .get("UPSTREAM")
        .ok_or_else(|| bad("UPSTREAM", "required (the app the relay forwards to)"))?;
    let (tls, host, port) = upstream(up)?;
    let listen: u16 = match env.get("PORT") {
        None => 8080,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("PORT", format!("{p:?} is not a port")))?,
    };
    let secret = env
        .get("CLIENT_ID_SECRET")
        .ok_or_else(|| bad("CLIENT_ID_SECRET", "required (the key of client ids)"))?;
    if secret.len() < MIN_CLIENT_ID_SECRET {
        return Err(bad(
            "CLIENT_ID_SECRET",
            format!(
                "must be at least {MIN_CLIENT_ID_SECRET} bytes, got {} (Veil's filter refuses a shorter key)",
                secret.len()
            ),
        ));
    }
    let origins = env.get("CORS_ORIGINS").map(list).unwrap_or_default();
    if origins.is_empty() {
        return Err(bad(
            "CORS_ORIGINS",
            "required: the browser origins allowed to call the relay (comma-separated)",
        ));
    }
    for o in &origins {
        if o == "*" || !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/')
        {
            return Err(bad(
                "CORS_ORIGINS",
                format!(
                    "{o:?} is not an origin (scheme://host[:port], no path); `*` is refused: \
                     it would let any site call the relay with the browser's credentials"
                ),
            ));
        }
    }
    let mut methods: Vec<String> = match env.get("CORS_METHODS") {
        None => vec!["GET".into(), "POST".into(), "PUT".into(), "DELETE".into()],
        Some(v) => list(v)
            .into_iter()
            .map(|s| s.to_ascii_uppercase())
            .collect(),
    };
    if let Some(bad_m) = methods
        .iter()
        .find(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(bad(
            "CORS_METHODS",
            format!("{bad_m:?} is not an HTTP method"),
        ));
    }
    for always in ["OPTIONS", "HEAD"] {
        if !methods.iter().any(|x| x == always) {
            methods.push(always.into());
        }
    }
    // The seed encodes every route unless MTE_ROUTES lists some: unset = `/*`, so a
    // plaintext request outside the pass-through routes is refused (relay-required), never
    // forwarded.
    let routes = env
        .get("MTE_ROUTES")
        .map(list)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec!["/*".to_string()]);
    let pass = match (
        env.get("PASS_THROUGH_ROUTES"),
        env.get("PASSTHROUGH_ROUTES"),
    ) {
        (Some(a), Some(b)) if list(a) != list(b) => {
            return Err(bad(
                "PASS_THROUGH_ROUTES / PASSTHROUGH_ROUTES",
                "both are set and disagree; set only one",
            ))
        }
        (Some(a), _) | (None, Some(a)) => list(a),
        (None, None) => Vec::new(),
    };
    let headers: BTreeMap<String, String> = match env.get("HEADERS") {
        None => BTreeMap::new(),
        Some(h) => {
            let v: Value = serde_json::from_str(h)
                .map_err(|e| bad("HEADERS", format!("not a JSON object: {e}")))?;
            let Value::Object(o) = v else {
                return Err(bad(
                    "HEADERS",
                    "not a JSON object of header names to values",
                ));
            };
            let mut out = BTreeMap::new();
            for (k, v) in o {
                let Value::String(s) = v else {
                    return Err(bad("HEADERS", format!("{k}: the value is not a string")));
                };
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad("HEADERS", format!("{k:?} is not a header name")));
                }
                out.insert(k.to_ascii_lowercase(), s);
            }
            out
        }
    };
    let debug = match env.get("DEBUG").map(|d| d.to_ascii_lowercase()) {
        None => false,
        Some(d) if ["true", "1", "yes"].contains(&d.as_str()) => true,
        Some(d) if ["false", "0", "no"].contains(&d.as_str()) => false,
        Some(d) => {
            return Err(bad(
                "DEBUG",
                format!("must be \"true\" or \"false\", got {d:?}"),
            ))
        }
    };

    // The keyservice: the pairing store, shared by every replica through Redis.
    let global = match env.get("REDIS_URL") {
        Some(url) => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(bad("REDIS_URL", "must be a redis:// or rediss:// URL"));
            }
            if url.contains('@') {
                m.keyservice_env.push(EnvLine::Secret {
                    name: "REDIS_URL".into(),
                    from: "REDIS_URL".into(),
                });
            } else {
                m.keyservice_env
                    .push(EnvLine::Value("REDIS_URL".into(), url.into()));
            }
            true
        }
        None => false,
    };
    if debug {
        m.keyservice_env
            .push(EnvLine::Value("VEIL_LOG".into(), "debug".into()));
        m.notes.push((
            "DEBUG".into(),
            "run Envoy with --log-level debug (neither logs secrets or plaintext)".into(),
        ));
    }
    m.envoy_env.push(EnvLine::Secret {
        name: ENV_CLIENT_ID_SECRET.into(),
        from: "CLIENT_ID_SECRET".into(),
    });

    let mut relay = json!({
        "prefix": "/veil",
        "client_id_secret_env": ENV_CLIENT_ID_SECRET,
        "routes": routes,
        "pass_through_routes": pass,
        "replay": {"mode": if global { "global" } else { "local" }, "window": 128},
    });
    if !headers.is_empty() {
        relay["visible_response_headers"] = json!(headers.keys().collect::<Vec<_>>());
    }
    m.filter_config = json!({"keyservice": keyservice_section(), "relay": relay});
    validate_filter(&m.filter_config)?;

    // The Envoy pieces (envoy/veil-relay.yaml has the whole file).
    m.envoy_pieces.push((
        "PORT: the listener".into(),
        format!("address:\n  socket_address: {{ address: 0.0.0.0, port_value: {listen} }}\n"),
    ));
    let mut cluster = format!(
        "- name: app\n  type: STRICT_DNS\n  connect_timeout: 2s\n  load_assignment:\n    cluster_name: app\n    endpoints:\n    - lb_endpoints:\n      - endpoint:\n          address:\n            socket_address: {{ address: {}, port_value: {port} }}\n",
        q(&host)
    );
    if tls {
        let _ = write!(
            cluster,
            "  transport_socket:\n    name: envoy.transport_sockets.tls\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n      sni: {}\n      common_tls_context:\n        validation_context:\n          trusted_ca: {{ filename: /etc/ssl/certs/ca-certificates.crt }}\n          match_typed_subject_alt_names:\n          - {{ san_type: DNS, matcher: {{ exact: {} }} }}\n",
            q(&host),
            q(&host)
        );
    }
    m.envoy_pieces
        .push(("UPSTREAM: the `app` cluster".into(), cluster));
    let mut cors = String::from(
        "envoy.filters.http.cors:\n  \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy\n  allow_origin_string_match:\n",
    );
    for o in &origins {
        let _ = writeln!(cors, "  - exact: {}", q(o));
    }
    let _ = write!(
        cors,
        "  allow_methods: {}\n  allow_headers: \"content-type, authorization, x-veil-relay, x-veil-relay-eh, x-veil-client-id\"\n  expose_headers: \"x-veil-relay, x-veil-relay-eh, x-veil-relay-error, x-veil-client-id\"\n  allow_credentials: true\n  max_age: \"600\"\n  forward_not_matching_preflights: false\n",
        q(&methods.join(", "))
    );
    m.envoy_pieces.push((
        "CORS_ORIGINS / CORS_METHODS: the virtual host's typed_per_filter_config".into(),
        cors,
    ));
    if !headers.is_empty() {
        let mut h = String::from("response_headers_to_add:\n");
        for (k, v) in &headers {
            let _ = write!(
                h,
                "- header: {{ key: {}, value: {} }}\n  append_action: OVERWRITE_IF_EXISTS_OR_ADD\n",
                q(k),
                q(v)
            );
        }
        m.envoy_pieces
            .push(("HEADERS: the virtual host's response headers".into(), h));
    }
    for name in ["MAX_POOL_SIZE", "LICENSE_COMPANY", "LICENSE_KEY"] {
        if env.get(name).is_some() {
            let why = MTE_KNOWN
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, w)| *w);
            m.notes.push((name.into(), why.into()));
        }
    }
    m.unknown = env
        .0
        .keys()
        .filter(|k| !MTE_KNOWN.iter().any(|(n, _)| n == k))
        .cloned()
        .collect();
    Ok(m)
}

impl Migration {
    /// The report on stdout: env lines, the filter's JSON, the Envoy pieces, the notes.
    pub fn render(&self, seed: Seed) -> String {
        let mut out = String::new();
        let env = |out: &mut String, lines: &[EnvLine]| {
            for l in lines {
                match l {
                    EnvLine::Value(k, v) => {
                        let _ = writeln!(out, "{k}={v}");
                    }
                    EnvLine::Secret { name, from } => {
                        let _ = writeln!(
                            out,
                            "# {name}: a secret, not printed: set it to the value of {from} from your secret store"
                        );
                    }
                }
            }
        };
        let _ = writeln!(
            out,
            "# ---- keyservice environment (docs/keyservice.md) ----"
        );
        env(&mut out, &self.keyservice_env);
        let _ = writeln!(
            out,
            "# plus VEIL_KEYSERVICE_TOKEN_FILE (or VEIL_KEYSERVICE_TOKEN) and VEIL_KEYRING; run \
             `veil-keyservice keyring init` once with this environment"
        );
        if !self.envoy_env.is_empty() {
            let _ = writeln!(
                out,
                "\n# ---- Envoy environment (host_env_keys, read by the filter) ----"
            );
            env(&mut out, &self.envoy_env);
        }
        let what = match seed {
            Seed::Moesif => "Envoy `configuration` / Istio `pluginConfig`; envoy/veil-seal.yaml",
            Seed::MteRelay => "Envoy `configuration` / Istio `pluginConfig`; envoy/veil-relay.yaml",
        };
        let _ = writeln!(out, "\n# ---- filter configuration ({what}) ----");
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&self.filter_config).unwrap_or_default()
        );
        for (what, yaml) in &self.envoy_pieces {
            let _ = writeln!(out, "\n# ---- Envoy: {what} ----\n{yaml}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n# ---- not carried over ----");
            for (k, why) in &self.notes {
                let _ = writeln!(out, "# {k}: {why}");
            }
        }
        out
    }
}

/// Runs `migrate` and prints the report; unknown variables go to stderr.
pub fn run(seed: Seed, env_file: Option<&Path>) -> Result<(), ConfigError> {
    let env = match env_file {
        Some(p) => SeedEnv::from_file(p)?,
        None => SeedEnv::from_process(seed),
    };
    let m = match seed {
        Seed::Moesif => moesif(&env)?,
        Seed::MteRelay => mte_relay(&env)?,
    };
    for k in &m.unknown {
        eprintln!("warning: {k}: not a setting of this seed that Veil knows; not carried over");
    }
    print!("{}", m.render(seed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_syntax() {
        let e = SeedEnv::parse(
            "# c\n\nexport A=1\nB=\"two words\"\nC='x'\nD=\u{201d}curly\u{201d}\nE=\n",
            "f",
        )
        .unwrap();
        assert_eq!(e.get("A"), Some("1"));
        assert_eq!(e.get("B"), Some("two words"));
        assert_eq!(e.get("C"), Some("x"));
        assert_eq!(e.get("D"), Some("curly"));
        assert_eq!(e.get("E"), None);
        let err = SeedEnv::parse("A=1\nnot a line\n", "f").unwrap_err();
        assert_eq!(err.what, "f:2");
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            upstream("http://app:3000").unwrap(),
            (false, "app".into(), 3000)
        );
        assert_eq!(
            upstream("https://api.example.com").unwrap(),
            (true, "api.example.com".into(), 443)
        );
        assert_eq!(
            upstream("http://10.0.0.5/").unwrap(),
            (false, "10.0.0.5".into(), 80)
        );
        assert!(upstream("app:3000").is_err());
        assert!(upstream("http://app:3000/base").is_err());
        assert!(upstream("http://u:p@app").is_err());
    }
}
