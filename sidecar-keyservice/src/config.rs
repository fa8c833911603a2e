//! Configuration: environment variables (and a few command-line flags), each with a default,
//! validated before anything else happens. Every error names the variable, flag or file at
//! fault, and never echoes a secret value.
//!
//! Precedence: command-line flag, then environment variable, then default. An environment
//! variable set to the empty string counts as unset (compose files often pass `VAR=`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;
use veil_core::keys::RotationMonths;
use zeroize::Zeroizing;

pub const ENV_KEYRING: &str = "VEIL_KEYRING";
pub const ENV_KMS_PROVIDER: &str = "KMS_PROVIDER";
pub const ENV_LOCAL_KEK_FILE: &str = "VEIL_LOCAL_KEK_FILE";
pub const ENV_LISTEN: &str = "VEIL_KEYSERVICE_LISTEN";
pub const ENV_ALLOW_NON_LOOPBACK: &str = "VEIL_KEYSERVICE_ALLOW_NON_LOOPBACK";
pub const ENV_TOKEN: &str = "VEIL_KEYSERVICE_TOKEN";
pub const ENV_TOKEN_FILE: &str = "VEIL_KEYSERVICE_TOKEN_FILE";
pub const ENV_ROTATION: &str = "ENCRYPTION_ROTATION_MONTHS";
pub const ENV_ROTATION_ALIAS: &str = "MOESIF_ENCRYPTION_ROTATION_MONTHS";
pub const ENV_LOG: &str = "VEIL_LOG";
pub const ENV_LOG_FORMAT: &str = "VEIL_LOG_FORMAT";

// aws-kms (names as the seeds name them; the SDK itself also reads AWS_ENDPOINT_URL*).
pub const ENV_AWS_KEY_ID: &str = "AWS_CUSTOMER_KEY_ID";
pub const ENV_AWS_REGION: &str = "AWS_KMS_REGION";
pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub const ENV_AWS_ROLE_ARN: &str = "AWS_SECURE_PROXY_ROLE_ARN";
pub const ENV_AWS_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";
pub const ENV_AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
pub const DEFAULT_AWS_REGION: &str = "us-west-2";
pub const DEFAULT_AWS_ROLE_SESSION_NAME: &str = "veil-keyservice";

// aws-cloudhsm (PKCS#11).
pub const ENV_PKCS11_MODULE: &str = "VEIL_PKCS11_MODULE";
pub const ENV_PKCS11_TOKEN_LABEL: &str = "VEIL_PKCS11_TOKEN_LABEL";
pub const ENV_PKCS11_SLOT: &str = "VEIL_PKCS11_SLOT";
pub const ENV_PKCS11_PIN_FILE: &str = "VEIL_PKCS11_PIN_FILE";
pub const ENV_PKCS11_KEY_LABEL: &str = "VEIL_PKCS11_KEY_LABEL";
/// Where AWS CloudHSM Client SDK 5 installs its PKCS#11 library.
pub const DEFAULT_PKCS11_MODULE: &str = "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so";
pub const DEFAULT_PKCS11_KEY_LABEL: &str = "veil-kek";

// azure-keyvault.
pub const ENV_AZURE_VAULT_URL: &str = "AZURE_VAULT_URL";
pub const ENV_AZURE_KEY_NAME: &str = "AZURE_KEY_NAME";
pub const ENV_AZURE_KEY_VERSION: &str = "AZURE_KEY_VERSION";
pub const ENV_AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
pub const ENV_AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const ENV_AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
pub const ENV_AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
pub const ENV_IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
pub const ENV_IDENTITY_HEADER: &str = "IDENTITY_HEADER";
pub const DEFAULT_AZURE_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

pub const DEFAULT_KEYRING: &str = "veil-keyring.json";
pub const DEFAULT_LOCAL_KEK_FILE: &str = "veil-local-kek.key";
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
struct Sourced {
    value: String,
    from: String,
}

/// Flag, then variable (empty = unset), then nothing.
fn lookup(
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

/// Which key provider wraps the roots (`KMS_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Local,
    AwsKms,
    AwsCloudHsm,
    AzureKeyVault,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Local,
        ProviderKind::AwsKms,
        ProviderKind::AwsCloudHsm,
        ProviderKind::AzureKeyVault,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::AwsKms => "aws-kms",
            ProviderKind::AwsCloudHsm => "aws-cloudhsm",
            ProviderKind::AzureKeyVault => "azure-keyvault",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown provider {s:?}; valid values are: {}",
                    valid.join(", ")
                )
            })
    }
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

/// The local provider's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProviderConfig {
    pub kek_file: PathBuf,
    /// `VEIL_LOCAL_KEK_FILE` or `--local-kek-file`, for errors.
    pub kek_file_from: String,
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

/// `aws-kms` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// `AWS_CUSTOMER_KEY_ID`: key ARN (recommended), key id or alias; written to the keyring.
    pub key_id: String,
    /// `AWS_KMS_REGION`, default `us-west-2`.
    pub region: String,
    /// Static credentials (`AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`, optional
    /// `AWS_SESSION_TOKEN`); `None` = the SDK's default chain.
    pub static_credentials: Option<(String, Secret, Option<Secret>)>,
    /// `AWS_SECURE_PROXY_ROLE_ARN`: assume this role through STS with the credentials above.
    pub role_arn: Option<String>,
    /// `AWS_ROLE_SESSION_NAME`, default `veil-keyservice`.
    pub role_session_name: String,
    /// `AWS_ENDPOINT_URL` (the SDK's standard variable; also read here so `keyring rewrap
    /// --to AWS_ENDPOINT_URL=…` applies it). The SDK reads service-specific ones itself.
    pub endpoint_url: Option<String>,
}

/// `aws-cloudhsm` (PKCS#11) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// `VEIL_PKCS11_MODULE`: the PKCS#11 library.
    pub module: PathBuf,
    /// `VEIL_PKCS11_TOKEN_LABEL` or `VEIL_PKCS11_SLOT`; neither = the first slot with a token.
    pub token_label: Option<String>,
    pub slot: Option<u64>,
    /// `VEIL_PKCS11_PIN_FILE` (required): the crypto user's PIN (CloudHSM: `user:password`).
    pub pin_file: PathBuf,
    /// `VEIL_PKCS11_KEY_LABEL`: label of the AES-256 key on the token, default `veil-kek`.
    pub key_label: String,
}

/// How the Azure provider gets its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: Secret,
    },
    /// Managed identity (`AZURE_CLIENT_ID` picks a user-assigned one).
    ManagedIdentity { client_id: Option<String> },
}

/// `azure-keyvault` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// `AZURE_VAULT_URL`, e.g. `https://my-vault.vault.azure.net` (https only).
    pub vault_url: String,
    /// `AZURE_KEY_NAME` and optional `AZURE_KEY_VERSION` (default: the current version).
    pub key_name: String,
    pub key_version: Option<String>,
    pub auth: AzureAuth,
    /// `AZURE_AUTHORITY_HOST`, default `https://login.microsoftonline.com`.
    pub authority_host: String,
    /// `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service / Container Apps managed
    /// identity); unset = the instance metadata endpoint.
    pub identity_endpoint: Option<(String, Secret)>,
}

/// The selected provider's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudConfig {
    Local,
    AwsKms(AwsKmsConfig),
    CloudHsm(Pkcs11Config),
    Azure(AzureConfig),
}

/// Settings every command needs: where the keyring is and how roots are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringConfig {
    pub keyring: PathBuf,
    pub provider: ProviderKind,
    pub local: LocalProviderConfig,
    /// The selected provider's own settings (validated only for the selected one).
    pub cloud: CloudConfig,
    pub rotation: RotationMonths,
}

fn required(vars: &dyn Vars, name: &str, why: &str) -> Result<String, ConfigError> {
    lookup(vars, None, name)?
        .map(|s| s.value.trim().to_string())
        .ok_or_else(|| ConfigError::new(name, format!("required with {why}")))
}

fn optional(vars: &dyn Vars, name: &str) -> Result<Option<String>, ConfigError> {
    Ok(lookup(vars, None, name)?.map(|s| s.value.trim().to_string()))
}

impl AwsKmsConfig {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let why = "KMS_PROVIDER=aws-kms (the KMS key ARN, key id or alias that wraps the roots)";
        let key_id = required(vars, ENV_AWS_KEY_ID, why)?;
        let region = optional(vars, ENV_AWS_REGION)?.unwrap_or_else(|| DEFAULT_AWS_REGION.into());
        let access = optional(vars, ENV_AWS_ACCESS_KEY_ID)?;
        let secret = vars
            .var(ENV_AWS_SECRET_ACCESS_KEY)?
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        let token = vars
            .var(ENV_AWS_SESSION_TOKEN)?
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        let static_credentials = match (access, secret) {
            (Some(a), Some(s)) => Some((a, s, token)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    ENV_AWS_SECRET_ACCESS_KEY,
                    format!("required when {ENV_AWS_ACCESS_KEY_ID} is set"),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    ENV_AWS_ACCESS_KEY_ID,
                    format!("required when {ENV_AWS_SECRET_ACCESS_KEY} is set"),
                ))
            }
        };
        let role_arn = optional(vars, ENV_AWS_ROLE_ARN)?;
        if let Some(r) = &role_arn {
            if !r.starts_with("arn:") || !r.contains(":role/") {
                return Err(ConfigError::new(
                    ENV_AWS_ROLE_ARN,
                    format!("{r:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"),
                ));
            }
        }
        let role_session_name = optional(vars, ENV_AWS_ROLE_SESSION_NAME)?
            .unwrap_or_else(|| DEFAULT_AWS_ROLE_SESSION_NAME.into());
        let endpoint_url = optional(vars, ENV_AWS_ENDPOINT_URL)?;
        Ok(AwsKmsConfig {
            key_id,
            region,
            static_credentials,
            role_arn,
            role_session_name,
            endpoint_url,
        })
    }
}

impl Pkcs11Config {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let module = PathBuf::from(
            optional(vars, ENV_PKCS11_MODULE)?.unwrap_or_else(|| DEFAULT_PKCS11_MODULE.into()),
        );
        let token_label = optional(vars, ENV_PKCS11_TOKEN_LABEL)?;
        let slot = match optional(vars, ENV_PKCS11_SLOT)? {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                ConfigError::new(ENV_PKCS11_SLOT, format!("{v:?} is not a slot number"))
            })?),
        };
        if token_label.is_some() && slot.is_some() {
            return Err(ConfigError::new(
                format!("{ENV_PKCS11_TOKEN_LABEL} / {ENV_PKCS11_SLOT}"),
                "both are set; set only one",
            ));
        }
        let pin_file = PathBuf::from(required(
            vars,
            ENV_PKCS11_PIN_FILE,
            "KMS_PROVIDER=aws-cloudhsm (a file holding the crypto user's PIN)",
        )?);
        let key_label = optional(vars, ENV_PKCS11_KEY_LABEL)?
            .unwrap_or_else(|| DEFAULT_PKCS11_KEY_LABEL.into());
        Ok(Pkcs11Config {
            module,
            token_label,
            slot,
            pin_file,
            key_label,
        })
    }
}

impl AzureConfig {
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let why = "KMS_PROVIDER=azure-keyvault";
        let vault_url = required(vars, ENV_AZURE_VAULT_URL, why)?
            .trim_end_matches('/')
            .to_string();
        if !vault_url.starts_with("https://") {
            return Err(ConfigError::new(
                ENV_AZURE_VAULT_URL,
                format!(
                    "{vault_url:?} must be an https:// URL (e.g. https://my-vault.vault.azure.net)"
                ),
            ));
        }
        let key_name = required(vars, ENV_AZURE_KEY_NAME, why)?;
        let key_version = optional(vars, ENV_AZURE_KEY_VERSION)?;
        let tenant = optional(vars, ENV_AZURE_TENANT_ID)?;
        let client_id = optional(vars, ENV_AZURE_CLIENT_ID)?;
        let secret = vars
            .var(ENV_AZURE_CLIENT_SECRET)?
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        let auth = match (tenant, client_id, secret) {
            (Some(tenant_id), Some(client_id), Some(secret)) => AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                secret,
            },
            (None, client_id, None) => AzureAuth::ManagedIdentity { client_id },
            (None, _, Some(_)) => {
                return Err(ConfigError::new(
                    ENV_AZURE_TENANT_ID,
                    format!("required when {ENV_AZURE_CLIENT_SECRET} is set"),
                ))
            }
            (_, None, Some(_)) => {
                return Err(ConfigError::new(
                    ENV_AZURE_CLIENT_ID,
                    format!("required when {ENV_AZURE_CLIENT_SECRET} is set"),
                ))
            }
            (Some(_), _, None) => {
                return Err(ConfigError::new(
                    ENV_AZURE_CLIENT_SECRET,
                    format!(
                        "required when {ENV_AZURE_TENANT_ID} is set (client-secret sign-in); \
                         unset {ENV_AZURE_TENANT_ID} to use a managed identity"
                    ),
                ))
            }
        };
        let authority_host = optional(vars, ENV_AZURE_AUTHORITY_HOST)?
            .unwrap_or_else(|| DEFAULT_AZURE_AUTHORITY_HOST.into())
            .trim_end_matches('/')
            .to_string();
        let identity_endpoint = match (
            optional(vars, ENV_IDENTITY_ENDPOINT)?,
            vars.var(ENV_IDENTITY_HEADER)?.filter(|v| !v.is_empty()),
        ) {
            (Some(e), Some(h)) => Some((e, Secret::new(h))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    ENV_IDENTITY_HEADER,
                    format!("required when {ENV_IDENTITY_ENDPOINT} is set"),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    ENV_IDENTITY_ENDPOINT,
                    format!("required when {ENV_IDENTITY_HEADER} is set"),
                ))
            }
        };
        Ok(AzureConfig {
            vault_url,
            key_name,
            key_version,
            auth,
            authority_host,
            identity_endpoint,
        })
    }
}

fn path_flag(p: &Option<PathBuf>) -> Option<String> {
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

        let provider = match lookup(
            vars,
            flags.kms_provider.as_deref().map(|v| ("--kms-provider", v)),
            ENV_KMS_PROVIDER,
        )? {
            None => ProviderKind::Local,
            Some(s) => s
                .value
                .trim()
                .parse::<ProviderKind>()
                .map_err(|m| ConfigError::new(&s.from, m))?,
        };

        let kek_flag = path_flag(&flags.local_kek_file);
        let local = match lookup(
            vars,
            kek_flag.as_deref().map(|v| ("--local-kek-file", v)),
            ENV_LOCAL_KEK_FILE,
        )? {
            Some(s) => LocalProviderConfig {
                kek_file: PathBuf::from(s.value),
                kek_file_from: s.from,
            },
            None => LocalProviderConfig {
                kek_file: PathBuf::from(DEFAULT_LOCAL_KEK_FILE),
                kek_file_from: ENV_LOCAL_KEK_FILE.to_string(),
            },
        };

        let cloud = match provider {
            ProviderKind::Local => CloudConfig::Local,
            ProviderKind::AwsKms => CloudConfig::AwsKms(AwsKmsConfig::from_vars(vars)?),
            ProviderKind::AwsCloudHsm => CloudConfig::CloudHsm(Pkcs11Config::from_vars(vars)?),
            ProviderKind::AzureKeyVault => CloudConfig::Azure(AzureConfig::from_vars(vars)?),
        };
        let rotation = rotation_from_vars(vars, flags)?;
        Ok(KeyringConfig {
            keyring,
            provider,
            local,
            cloud,
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
        Ok(ServeConfig {
            listen,
            token,
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

    fn vars(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults() {
        let c = KeyringConfig::from_vars(&vars(&[]), &Flags::default()).unwrap();
        assert_eq!(c.keyring, PathBuf::from("veil-keyring.json"));
        assert_eq!(c.provider, ProviderKind::Local);
        assert_eq!(c.local.kek_file, PathBuf::from("veil-local-kek.key"));
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
        assert_eq!(c.provider, ProviderKind::Local);
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
        assert_eq!(c.provider, ProviderKind::AwsKms);
        let CloudConfig::AwsKms(a) = c.cloud else {
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
        let CloudConfig::AwsKms(a) = c.cloud else {
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
        let CloudConfig::Azure(a) = with(&[]).unwrap().cloud else {
            panic!("not azure")
        };
        assert_eq!(a.vault_url, "https://v.vault.azure.net");
        assert_eq!(a.auth, AzureAuth::ManagedIdentity { client_id: None });
        let e = with(&[(ENV_AZURE_CLIENT_SECRET, "x")]).unwrap_err();
        assert_eq!(e.what, ENV_AZURE_TENANT_ID);
        let e = with(&[(ENV_AZURE_TENANT_ID, "t")]).unwrap_err();
        assert_eq!(e.what, ENV_AZURE_CLIENT_SECRET);
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
