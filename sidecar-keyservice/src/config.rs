//! Configuration: environment variables (and a few command-line flags), each with a default,
//! validated before anything else happens. Every error names the variable, flag or file at
//! fault, and never echoes a secret value.
//!
//! Each key provider's own settings live with it in [`crate::providers`].
//!
//! Precedence: command-line flag, then environment variable, then default. An environment
//! variable set to the empty string counts as unset (compose files often pass `VAR=`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;
use veil_core::crypto::keys::RotationMonths;
use zeroize::Zeroizing;

use crate::providers::{ProviderConfig, ProviderKind};

pub const ENV_KEYRING: &str = "VEIL_KEYRING";
pub const ENV_KMS_PROVIDER: &str = "KMS_PROVIDER";
pub const ENV_LISTEN: &str = "VEIL_KEYSERVICE_LISTEN";
pub const ENV_ALLOW_NON_LOOPBACK: &str = "VEIL_KEYSERVICE_ALLOW_NON_LOOPBACK";
pub const ENV_TOKEN: &str = "VEIL_KEYSERVICE_TOKEN";
pub const ENV_TOKEN_FILE: &str = "VEIL_KEYSERVICE_TOKEN_FILE";
pub const ENV_ROTATION: &str = "ENCRYPTION_ROTATION_MONTHS";
pub const ENV_ROTATION_ALIAS: &str = "MOESIF_ENCRYPTION_ROTATION_MONTHS";
pub const ENV_KEYRING_RELOAD: &str = "VEIL_KEYRING_RELOAD_SECS";
/// How often `serve` checks the keyring file for a new content, by default.
pub const DEFAULT_KEYRING_RELOAD_SECS: u64 = 10;
pub const ENV_LOG: &str = "VEIL_LOG";
pub const ENV_LOG_FORMAT: &str = "VEIL_LOG_FORMAT";

pub const DEFAULT_KEYRING: &str = "veil-keyring.json";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";
pub const DEFAULT_LOG: &str = "info";
/// The shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 32;

/// A configuration error: `what` is the variable, flag or file at fault.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what}: {message}")]
pub struct ConfigError {
    pub what: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(what: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// Where configuration values come from: the process environment, or a map in tests.
pub trait Vars {
    /// The value of `name`; `Err` if it is set but not valid UTF-8.
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match std::env::var(name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ConfigError::new(name, "is not valid UTF-8"))
            }
        }
    }
}

impl Vars for HashMap<String, String> {
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(name).cloned())
    }
}

impl Vars for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(name).map(|v| (*v).to_string()))
    }
}

/// A value with the name of where it came from (flag, variable or "default"), for errors.
pub(crate) struct Sourced {
    pub(crate) value: String,
    pub(crate) from: String,
}

/// Flag, then variable (empty = unset), then nothing.
pub(crate) fn lookup(
    vars: &dyn Vars,
    flag: Option<(&str, &str)>,
    env: &str,
) -> Result<Option<Sourced>, ConfigError> {
    if let Some((name, value)) = flag {
        return Ok(Some(Sourced {
            value: value.to_string(),
            from: name.to_string(),
        }));
    }
    Ok(vars
        .var(env)?
        .filter(|v| !v.is_empty())
        .map(|value| Sourced {
            value,
            from: env.to_string(),
        }))
}

/// Log output format (`VEIL_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Logging settings. The filter directive is validated when the subscriber is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

impl LogConfig {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let filter = lookup(vars, None, ENV_LOG)?
            .map(|s| s.value)
            .unwrap_or_else(|| DEFAULT_LOG.to_string());
        let format = match lookup(vars, None, ENV_LOG_FORMAT)? {
            None => LogFormat::Json,
            Some(s) => match s.value.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => {
                    return Err(ConfigError::new(
                        ENV_LOG_FORMAT,
                        format!("must be \"json\" or \"text\", got {other:?}"),
                    ))
                }
            },
        };
        Ok(LogConfig { filter, format })
    }
}

/// Command-line flags that override environment variables. `None` = not given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub keyring: Option<PathBuf>,
    pub kms_provider: Option<String>,
    pub local_kek_file: Option<PathBuf>,
    pub rotation_months: Option<String>,
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// A secret setting (client secret, access key, PIN): zeroized on drop, Debug redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Settings every command needs: where the keyring is and how roots are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringConfig {
    pub keyring: PathBuf,
    /// The selected provider with its own settings (only the selected one is validated).
    pub provider: ProviderConfig,
    /// Why this provider: `KMS_PROVIDER=Azure`, `KMS_PROVIDER unset, AWS_CUSTOMER_KEY_ID set`, …
    pub chosen_by: String,
    pub rotation: RotationMonths,
}

/// A required variable (trimmed); the error says which provider needs it.
pub(crate) fn required(vars: &dyn Vars, name: &str, why: &str) -> Result<String, ConfigError> {
    lookup(vars, None, name)?
        .map(|s| s.value.trim().to_string())
        .ok_or_else(|| ConfigError::new(name, format!("required with {why}")))
}

/// An optional variable (trimmed; empty = unset).
pub(crate) fn optional(vars: &dyn Vars, name: &str) -> Result<Option<String>, ConfigError> {
    Ok(lookup(vars, None, name)?.map(|s| s.value.trim().to_string()))
}

pub(crate) fn path_flag(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

impl KeyringConfig {
    pub fn from_vars(vars: &dyn Vars, flags: &Flags) -> Result<Self, ConfigError> {
        let keyring_flag = path_flag(&flags.keyring);
        let keyring = lookup(
            vars,
            keyring_flag.as_deref().map(|v| ("--keyring", v)),
            ENV_KEYRING,
        )?
        .map(|s| PathBuf::from(s.value))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYRING));

        let (kind, chosen_by) = match lookup(
            vars,
            flags.kms_provider.as_deref().map(|v| ("--kms-provider", v)),
            ENV_KMS_PROVIDER,
        )? {
            None => {
                let (kind, by) = crate::providers::infer_kind(vars)?;
                let why = if by.is_empty() {
                    format!("{ENV_KMS_PROVIDER} unset, the default")
                } else {
                    format!("{ENV_KMS_PROVIDER} unset, {} set", by.join(", "))
                };
                (kind, why)
            }
            Some(s) => {
                let kind = s
                    .value
                    .trim()
                    .parse::<ProviderKind>()
                    .map_err(|m| ConfigError::new(&s.from, m))?;
                (kind, format!("{}={}", s.from, s.value.trim()))
            }
        };
        let provider = ProviderConfig::from_vars(kind, vars, flags)?;
        let rotation = rotation_from_vars(vars, flags)?;
        Ok(KeyringConfig {
            keyring,
            provider,
            chosen_by,
            rotation,
        })
    }
}

/// `ENCRYPTION_ROTATION_MONTHS`, alias `MOESIF_ENCRYPTION_ROTATION_MONTHS`; both set to
/// different values is an error rather than a silent choice.
fn rotation_from_vars(vars: &dyn Vars, flags: &Flags) -> Result<RotationMonths, ConfigError> {
    let parse = |s: Sourced| -> Result<RotationMonths, ConfigError> {
        RotationMonths::from_str(&s.value).map_err(|e| ConfigError::new(s.from, e.to_string()))
    };
    if let Some(v) = flags.rotation_months.as_deref() {
        return parse(Sourced {
            value: v.to_string(),
            from: "--rotation-months".to_string(),
        });
    }
    let primary = lookup(vars, None, ENV_ROTATION)?;
    let alias = lookup(vars, None, ENV_ROTATION_ALIAS)?;
    match (primary, alias) {
        (None, None) => Ok(RotationMonths::DEFAULT),
        (Some(p), None) => parse(p),
        (None, Some(a)) => parse(a),
        (Some(p), Some(a)) => {
            let (pv, av) = (parse(p)?, parse(a)?);
            if pv == av {
                Ok(pv)
            } else {
                Err(ConfigError::new(
                    format!("{ENV_ROTATION} / {ENV_ROTATION_ALIAS}"),
                    format!(
                        "both are set and disagree ({} vs {}); set only one",
                        pv.get(),
                        av.get()
                    ),
                ))
            }
        }
    }
}

/// The bearer token the filter presents. Zeroized on drop; Debug is redacted.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Validates length and characters. The error never contains the token.
    pub fn new(value: String, from: &str) -> Result<Token, ConfigError> {
        let value = Zeroizing::new(value);
        let n = value.chars().count();
        if n < MIN_TOKEN_LEN {
            return Err(ConfigError::new(
                from,
                format!("the token must be at least {MIN_TOKEN_LEN} characters, got {n}"),
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                from,
                "the token must be printable ASCII with no spaces",
            ));
        }
        Ok(Token(value))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Settings of `serve` beyond the keyring ones.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub token: Token,
    /// `VEIL_KEYRING_RELOAD_SECS` (default 10, 0 = never): how often the keyring file is
    /// checked for a new content (a rotated root in a mounted Secret).
    pub keyring_reload: Option<std::time::Duration>,
    pub relay: crate::relay::config::RelayConfig,
}

impl ServeConfig {
    pub fn from_vars(vars: &dyn Vars, flags: &Flags) -> Result<Self, ConfigError> {
        let listen_src = lookup(
            vars,
            flags.listen.as_deref().map(|v| ("--listen", v)),
            ENV_LISTEN,
        )?
        .unwrap_or_else(|| Sourced {
            value: DEFAULT_LISTEN.to_string(),
            from: ENV_LISTEN.to_string(),
        });
        let listen: SocketAddr = listen_src.value.trim().parse().map_err(|_| {
            ConfigError::new(
                &listen_src.from,
                format!(
                    "{:?} is not an IP:PORT address (e.g. 127.0.0.1:9911 or [::1]:9911)",
                    listen_src.value
                ),
            )
        })?;
        let allow = match lookup(vars, None, ENV_ALLOW_NON_LOOPBACK)? {
            None => false,
            Some(s) => parse_bool(&s.value).ok_or_else(|| {
                ConfigError::new(
                    ENV_ALLOW_NON_LOOPBACK,
                    format!("must be \"true\" or \"false\", got {:?}", s.value),
                )
            })?,
        };
        if !listen.ip().is_loopback() && !allow {
            return Err(ConfigError::new(
                &listen_src.from,
                format!(
                    "{listen} is not a loopback address; the keyservice hands out data keys and \
                     listens on loopback only unless {ENV_ALLOW_NON_LOOPBACK}=true"
                ),
            ));
        }

        let token = token_from_vars(vars, flags)?;
        let relay = crate::relay::config::RelayConfig::from_vars(vars)?;
        let reload_secs = match lookup(vars, None, ENV_KEYRING_RELOAD)? {
            None => DEFAULT_KEYRING_RELOAD_SECS,
            Some(s) => s
                .value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 3600)
                .ok_or_else(|| {
                    ConfigError::new(
                        ENV_KEYRING_RELOAD,
                        format!(
                            "must be a whole number of seconds from 0 (never) to 3600, got {:?}",
                            s.value
                        ),
                    )
                })?,
        };
        let keyring_reload = (reload_secs > 0).then(|| std::time::Duration::from_secs(reload_secs));
        Ok(ServeConfig {
            listen,
            token,
            keyring_reload,
            relay,
        })
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn token_from_vars(vars: &dyn Vars, flags: &Flags) -> Result<Token, ConfigError> {
    // Read the value into a zeroizing buffer straight away.
    let inline = vars.var(ENV_TOKEN)?.map(Zeroizing::new);
    let inline = inline.filter(|v| !v.is_empty());
    let file_flag = path_flag(&flags.token_file);
    let file = lookup(
        vars,
        file_flag.as_deref().map(|v| ("--token-file", v)),
        ENV_TOKEN_FILE,
    )?;
    match (inline, file) {
        (Some(_), Some(f)) => Err(ConfigError::new(
            format!("{ENV_TOKEN} / {}", f.from),
            "both are set; set only one",
        )),
        (None, None) => Err(ConfigError::new(
            ENV_TOKEN,
            format!(
                "a bearer token is required to serve: set {ENV_TOKEN} or {ENV_TOKEN_FILE} \
                 (at least {MIN_TOKEN_LEN} characters, e.g. `openssl rand -hex 32`)"
            ),
        )),
        (Some(v), None) => Token::new(v.to_string(), ENV_TOKEN),
        (None, Some(f)) => {
            let what = format!("{} {}", f.from, f.value);
            let raw = Zeroizing::new(
                std::fs::read(Path::new(&f.value))
                    .map_err(|e| ConfigError::new(&what, io_reason(&e)))?,
            );
            let text = std::str::from_utf8(&raw)
                .map_err(|_| ConfigError::new(&what, "the token file is not UTF-8"))?;
            Token::new(text.trim().to_string(), &what)
        }
    }
}

/// A short reason for an I/O error, e.g. "not found" or "permission denied".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "not found".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::aws_kms::*;
    use crate::providers::azure_keyvault::*;
    use crate::providers::cloudhsm::*;

    fn vars(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults() {
        let c = KeyringConfig::from_vars(&vars(&[]), &Flags::default()).unwrap();
        assert_eq!(c.keyring, PathBuf::from("veil-keyring.json"));
        let ProviderConfig::Local(local) = &c.provider else {
            panic!("not local")
        };
        assert_eq!(local.kek_file, PathBuf::from("veil-local-kek.key"));
        assert_eq!(c.rotation.get(), 12);
        let s = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, TOKEN)]), &Flags::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9911".parse().unwrap());
        let l = LogConfig::from_vars(&vars(&[])).unwrap();
        assert_eq!(l.filter, "info");
        assert_eq!(l.format, LogFormat::Json);
    }

    #[test]
    fn flags_override_env_and_empty_env_is_unset() {
        let v = vars(&[(ENV_KEYRING, "/env/k.json"), (ENV_KMS_PROVIDER, "")]);
        let flags = Flags {
            keyring: Some(PathBuf::from("/flag/k.json")),
            ..Flags::default()
        };
        let c = KeyringConfig::from_vars(&v, &flags).unwrap();
        assert_eq!(c.keyring, PathBuf::from("/flag/k.json"));
        assert_eq!(c.provider.kind(), ProviderKind::Local);
        let c = KeyringConfig::from_vars(&v, &Flags::default()).unwrap();
        assert_eq!(c.keyring, PathBuf::from("/env/k.json"));
    }

    #[test]
    fn unknown_provider_lists_valid_values() {
        let e = KeyringConfig::from_vars(&vars(&[(ENV_KMS_PROVIDER, "gcp")]), &Flags::default())
            .unwrap_err();
        assert_eq!(e.what, "KMS_PROVIDER");
        assert!(e.message.contains("\"gcp\""), "{e}");
        assert!(
            e.message
                .contains("local, aws-kms, aws-cloudhsm, azure-keyvault"),
            "{e}"
        );
    }

    /// The Secure Proxy's own values: `KMS_PROVIDER="Azure"` in any case, `AWS`; before,
    /// "Azure" was refused as an unknown provider.
    #[test]
    fn seed_provider_names_in_any_case() {
        let azure = [
            (ENV_AZURE_VAULT_URL, "https://v.vault.azure.net"),
            (ENV_AZURE_KEY_NAME, "veil"),
        ];
        for name in [
            "Azure",
            "AZURE",
            "azure",
            "Azure-KeyVault",
            "azure-keyvault",
        ] {
            let mut v = vars(&azure);
            v.insert(ENV_KMS_PROVIDER, name);
            let c = KeyringConfig::from_vars(&v, &Flags::default()).unwrap();
            assert_eq!(c.provider.kind(), ProviderKind::AzureKeyVault, "{name}");
            assert_eq!(c.chosen_by, format!("KMS_PROVIDER={name}"));
        }
        for name in ["AWS", "aws", "AWS-KMS"] {
            let v = vars(&[(ENV_KMS_PROVIDER, name), (ENV_AWS_KEY_ID, "alias/veil")]);
            let c = KeyringConfig::from_vars(&v, &Flags::default()).unwrap();
            assert_eq!(c.provider.kind(), ProviderKind::AwsKms, "{name}");
        }
    }

    /// KMS_PROVIDER unset: the Secure Proxy means AWS KMS when its key id is set; each
    /// provider's own variables select it; a mix is an error naming every variable.
    #[test]
    fn unset_provider_is_chosen_by_its_variables_and_a_mix_is_refused() {
        let f = Flags::default();
        let c = KeyringConfig::from_vars(&vars(&[(ENV_AWS_KEY_ID, "alias/veil")]), &f).unwrap();
        assert_eq!(c.provider.kind(), ProviderKind::AwsKms);
        assert_eq!(c.chosen_by, "KMS_PROVIDER unset, AWS_CUSTOMER_KEY_ID set");
        let c = KeyringConfig::from_vars(
            &vars(&[
                (ENV_AZURE_VAULT_URL, "https://v.vault.azure.net"),
                (ENV_AZURE_KEY_NAME, "veil"),
            ]),
            &f,
        )
        .unwrap();
        assert_eq!(c.provider.kind(), ProviderKind::AzureKeyVault);
        // Nothing of any provider: the local default, as before.
        let c = KeyringConfig::from_vars(&vars(&[]), &f).unwrap();
        assert_eq!(c.provider.kind(), ProviderKind::Local);
        // A mix: named, never guessed.
        let e = KeyringConfig::from_vars(
            &vars(&[
                (ENV_AWS_KEY_ID, "alias/veil"),
                (ENV_AZURE_VAULT_URL, "https://v.vault.azure.net"),
                ("VEIL_LOCAL_KEK_FILE", "/k"),
            ]),
            &f,
        )
        .unwrap_err();
        assert_eq!(e.what, ENV_KMS_PROVIDER);
        for name in [
            "AWS_CUSTOMER_KEY_ID (aws-kms)",
            "AZURE_VAULT_URL (azure-keyvault)",
            "VEIL_LOCAL_KEK_FILE (local)",
        ] {
            assert!(e.message.contains(name), "{e}");
        }
        // An explicit KMS_PROVIDER decides; other providers' variables are not read.
        let c = KeyringConfig::from_vars(
            &vars(&[
                (ENV_KMS_PROVIDER, "aws-kms"),
                (ENV_AWS_KEY_ID, "alias/veil"),
                ("VEIL_LOCAL_KEK_FILE", "/k"),
            ]),
            &f,
        )
        .unwrap();
        assert_eq!(c.provider.kind(), ProviderKind::AwsKms);
    }

    #[test]
    fn cloud_providers_parse_and_name_missing_settings() {
        for (s, k, missing) in [
            ("aws-kms", ProviderKind::AwsKms, ENV_AWS_KEY_ID),
            (
                "aws-cloudhsm",
                ProviderKind::AwsCloudHsm,
                ENV_PKCS11_PIN_FILE,
            ),
            (
                "azure-keyvault",
                ProviderKind::AzureKeyVault,
                ENV_AZURE_VAULT_URL,
            ),
        ] {
            let e = KeyringConfig::from_vars(&vars(&[(ENV_KMS_PROVIDER, s)]), &Flags::default())
                .unwrap_err();
            assert_eq!(e.what, missing, "{e}");
            let _ = k;
        }
        let c = KeyringConfig::from_vars(
            &vars(&[
                (ENV_KMS_PROVIDER, "aws-kms"),
                (ENV_AWS_KEY_ID, "alias/veil"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(c.provider.kind(), ProviderKind::AwsKms);
        let ProviderConfig::AwsKms(a) = c.provider else {
            panic!("not aws")
        };
        assert_eq!(a.region, "us-west-2");
        assert!(a.static_credentials.is_none() && a.role_arn.is_none());
    }

    #[test]
    fn aws_settings() {
        let base = [(ENV_KMS_PROVIDER, "aws-kms"), (ENV_AWS_KEY_ID, "k")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = vars(&base);
            v.extend(extra.iter().copied());
            KeyringConfig::from_vars(&v, &Flags::default())
        };
        let e = with(&[(ENV_AWS_ACCESS_KEY_ID, "AKIA")]).unwrap_err();
        assert_eq!(e.what, ENV_AWS_SECRET_ACCESS_KEY);
        let e = with(&[(ENV_AWS_ROLE_ARN, "veil-role")]).unwrap_err();
        assert_eq!(e.what, ENV_AWS_ROLE_ARN);
        let c = with(&[
            (ENV_AWS_ACCESS_KEY_ID, "AKIA"),
            (ENV_AWS_SECRET_ACCESS_KEY, "s3cr3t-value"),
            (ENV_AWS_REGION, "eu-central-1"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
        let ProviderConfig::AwsKms(a) = c.provider else {
            panic!("not aws")
        };
        assert_eq!(a.region, "eu-central-1");
    }

    #[test]
    fn azure_settings() {
        let base = [
            (ENV_KMS_PROVIDER, "azure-keyvault"),
            (ENV_AZURE_VAULT_URL, "https://v.vault.azure.net/"),
            (ENV_AZURE_KEY_NAME, "veil"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = vars(&base);
            v.extend(extra.iter().copied());
            KeyringConfig::from_vars(&v, &Flags::default())
        };
        let ProviderConfig::AzureKeyVault(a) = with(&[]).unwrap().provider else {
            panic!("not azure")
        };
        assert_eq!(a.vault_url, "https://v.vault.azure.net");
        assert_eq!(a.auth, AzureAuth::ManagedIdentity { client_id: None });
        let e = with(&[(ENV_AZURE_CLIENT_SECRET, "x")]).unwrap_err();
        assert_eq!(e.what, ENV_AZURE_TENANT_ID);
        let e = with(&[(ENV_AZURE_TENANT_ID, "t")]).unwrap_err();
        assert_eq!(e.what, ENV_AZURE_CLIENT_SECRET);
        // AKS workload identity: what its webhook injects, no secret.
        let wi = with(&[
            (ENV_AZURE_TENANT_ID, "t"),
            (ENV_AZURE_CLIENT_ID, "c"),
            (
                ENV_AZURE_FEDERATED_TOKEN_FILE,
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
        ])
        .unwrap()
        .provider;
        let ProviderConfig::AzureKeyVault(a) = wi else {
            panic!("not azure")
        };
        assert!(
            matches!(a.auth, AzureAuth::WorkloadIdentity { .. }),
            "{:?}",
            a.auth
        );
        let e = with(&[
            (ENV_AZURE_CLIENT_ID, "c"),
            (ENV_AZURE_FEDERATED_TOKEN_FILE, "/t"),
        ])
        .unwrap_err();
        assert_eq!(e.what, ENV_AZURE_TENANT_ID);
        let e = with(&[
            (ENV_AZURE_TENANT_ID, "t"),
            (ENV_AZURE_CLIENT_ID, "c"),
            (ENV_AZURE_CLIENT_SECRET, "s"),
            (ENV_AZURE_FEDERATED_TOKEN_FILE, "/t"),
        ])
        .unwrap_err();
        assert!(e.what.contains(ENV_AZURE_FEDERATED_TOKEN_FILE), "{e}");
        let mut v = vars(&base);
        v.insert(ENV_AZURE_VAULT_URL, "http://v");
        let e = KeyringConfig::from_vars(&v, &Flags::default()).unwrap_err();
        assert_eq!(e.what, ENV_AZURE_VAULT_URL);
    }

    #[test]
    fn rotation_months_and_alias() {
        let f = Flags::default();
        let r = |p: &[(&'static str, &'static str)]| KeyringConfig::from_vars(&vars(p), &f);
        assert_eq!(r(&[(ENV_ROTATION, "3")]).unwrap().rotation.get(), 3);
        assert_eq!(r(&[(ENV_ROTATION_ALIAS, "6")]).unwrap().rotation.get(), 6);
        assert_eq!(
            r(&[(ENV_ROTATION, "6"), (ENV_ROTATION_ALIAS, "6")])
                .unwrap()
                .rotation
                .get(),
            6
        );
        let e = r(&[(ENV_ROTATION, "3"), (ENV_ROTATION_ALIAS, "6")]).unwrap_err();
        assert!(e.what.contains(ENV_ROTATION) && e.what.contains(ENV_ROTATION_ALIAS));
        let e = r(&[(ENV_ROTATION, "0")]).unwrap_err();
        assert_eq!(e.what, ENV_ROTATION);
        assert!(e.message.contains("1 to 120"), "{e}");
        let e = r(&[(ENV_ROTATION_ALIAS, "abc")]).unwrap_err();
        assert_eq!(e.what, ENV_ROTATION_ALIAS);
    }

    #[test]
    fn listen_must_parse_and_be_loopback() {
        let f = Flags::default();
        let e = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, TOKEN), (ENV_LISTEN, "localhost")]), &f)
            .unwrap_err();
        assert_eq!(e.what, ENV_LISTEN);
        assert!(e.message.contains("IP:PORT"), "{e}");

        let e = ServeConfig::from_vars(
            &vars(&[(ENV_TOKEN, TOKEN), (ENV_LISTEN, "0.0.0.0:9911")]),
            &f,
        )
        .unwrap_err();
        assert_eq!(e.what, ENV_LISTEN);
        assert!(e.message.contains(ENV_ALLOW_NON_LOOPBACK), "{e}");

        let ok = ServeConfig::from_vars(
            &vars(&[
                (ENV_TOKEN, TOKEN),
                (ENV_LISTEN, "0.0.0.0:9911"),
                (ENV_ALLOW_NON_LOOPBACK, "true"),
            ]),
            &f,
        )
        .unwrap();
        assert_eq!(ok.listen, "0.0.0.0:9911".parse().unwrap());
        let ok = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, TOKEN), (ENV_LISTEN, "[::1]:1")]), &f)
            .unwrap();
        assert!(ok.listen.ip().is_loopback());

        let e = ServeConfig::from_vars(
            &vars(&[(ENV_TOKEN, TOKEN), (ENV_ALLOW_NON_LOOPBACK, "maybe")]),
            &f,
        )
        .unwrap_err();
        assert_eq!(e.what, ENV_ALLOW_NON_LOOPBACK);

        let flags = Flags {
            listen: Some("10.0.0.1:80".into()),
            ..Flags::default()
        };
        let e = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, TOKEN)]), &flags).unwrap_err();
        assert_eq!(e.what, "--listen");
    }

    #[test]
    fn token_required_long_enough_and_never_echoed() {
        let f = Flags::default();
        let e = ServeConfig::from_vars(&vars(&[]), &f).unwrap_err();
        assert_eq!(e.what, ENV_TOKEN);
        assert!(e.message.contains(ENV_TOKEN_FILE), "{e}");

        let short = "short-token-value";
        let e = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, short)]), &f).unwrap_err();
        assert_eq!(e.what, ENV_TOKEN);
        assert!(e.message.contains("at least 32"), "{e}");
        assert!(!e.to_string().contains(short));

        let spaced = "0123456789abcdef 0123456789abcdef";
        let e = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, spaced)]), &f).unwrap_err();
        assert!(e.message.contains("printable ASCII"), "{e}");

        let e = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, TOKEN), (ENV_TOKEN_FILE, "/x")]), &f)
            .unwrap_err();
        assert!(e.message.contains("only one"), "{e}");

        let s = ServeConfig::from_vars(&vars(&[(ENV_TOKEN, TOKEN)]), &f).unwrap();
        assert_eq!(s.token.as_bytes(), TOKEN.as_bytes());
        assert!(!format!("{s:?}").contains(TOKEN));
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
        let ps = p.to_str().unwrap().to_string();
        let mut v: HashMap<String, String> = HashMap::new();
        v.insert(ENV_TOKEN_FILE.into(), ps.clone());
        let s = ServeConfig::from_vars(&v, &Flags::default()).unwrap();
        assert_eq!(s.token.as_bytes(), TOKEN.as_bytes());

        v.insert(ENV_TOKEN_FILE.into(), format!("{ps}.missing"));
        let e = ServeConfig::from_vars(&v, &Flags::default()).unwrap_err();
        assert!(e.what.starts_with(ENV_TOKEN_FILE), "{e}");
        assert!(e.what.contains(".missing"), "{e}");
        assert_eq!(e.message, "not found");

        std::fs::write(&p, "too-short\n").unwrap();
        v.insert(ENV_TOKEN_FILE.into(), ps);
        let e = ServeConfig::from_vars(&v, &Flags::default()).unwrap_err();
        assert!(e.message.contains("at least 32"), "{e}");
        assert!(!e.to_string().contains("too-short"));
    }

    #[test]
    fn log_format() {
        let l =
            LogConfig::from_vars(&vars(&[(ENV_LOG_FORMAT, "text"), (ENV_LOG, "debug")])).unwrap();
        assert_eq!(l.format, LogFormat::Text);
        assert_eq!(l.filter, "debug");
        let e = LogConfig::from_vars(&vars(&[(ENV_LOG_FORMAT, "yaml")])).unwrap_err();
        assert_eq!(e.what, ENV_LOG_FORMAT);
    }
}
