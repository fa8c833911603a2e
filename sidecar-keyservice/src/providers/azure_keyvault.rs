//! The `azure-keyvault` provider, on the official Azure SDK crates
//! (`azure_security_keyvault_keys`, `azure_identity`): **RSA-OAEP-256** `wrapkey` /
//! `unwrapkey` with an RSA key in Key Vault that never leaves it.
//!
//! RSA-OAEP has no associated data, so the wrapped plaintext is the root followed by
//! `veil/v1/root/r<version>` (47+ bytes, well under OAEP-256's 190-byte limit for RSA 2048):
//! unwrapping checks the suffix, so a wrapped root cannot be moved to another version.
//!
//! At open the key is read (`GET /keys/{name}/{version}`): its full versioned id becomes the
//! keyring's `kek.key_id` (unwrapping must use the version that wrapped). Before wrapping, and
//! in `check`, the seed's constraints are enforced: RSA 2048, enabled, expiry set and at least
//! two years away, auto-rotation off (a rotated key would strand the roots under the old
//! version).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_identity::{
    ClientSecretCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, Key, KeyClientGetKeyOptions, KeyClientWrapKeyOptions,
    KeyOperationParameters, KeyRotationPolicyAction, KeyType,
};
use azure_security_keyvault_keys::{KeyClient, ResourceId};
use tokio::sync::OnceCell;
use veil_core::crypto::keys::RootKey;
use zeroize::Zeroizing;

use super::{
    log_call, BoxFuture, KeyProvider, Probe, ProviderError, ProviderKind, ProviderSettings,
    WrapContext,
};
use crate::config::{optional, required, ConfigError, Flags, Secret, Vars};

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
/// Set by AKS workload identity's webhook (with `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`): the
/// projected service-account token exchanged for an Entra token. No secret in the pod.
pub const ENV_AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
pub const DEFAULT_AZURE_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

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
    /// AKS workload identity: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` +
    /// `AZURE_FEDERATED_TOKEN_FILE` (a Kubernetes service-account token, federated).
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: std::path::PathBuf,
    },
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
        let federated = optional(vars, ENV_AZURE_FEDERATED_TOKEN_FILE)?;
        let auth = match (tenant, client_id, secret) {
            (tenant, client_id, secret) if federated.is_some() => {
                let token_file = std::path::PathBuf::from(federated.unwrap_or_default());
                match (tenant, client_id, secret) {
                    (_, _, Some(_)) => {
                        return Err(ConfigError::new(
                            format!("{ENV_AZURE_CLIENT_SECRET} / {ENV_AZURE_FEDERATED_TOKEN_FILE}"),
                            "both are set: a client secret or workload identity, not both",
                        ))
                    }
                    (Some(tenant_id), Some(client_id), None) => AzureAuth::WorkloadIdentity {
                        tenant_id,
                        client_id,
                        token_file,
                    },
                    (None, _, None) => {
                        return Err(ConfigError::new(
                            ENV_AZURE_TENANT_ID,
                            format!("required when {ENV_AZURE_FEDERATED_TOKEN_FILE} is set (workload identity)"),
                        ))
                    }
                    (_, None, None) => {
                        return Err(ConfigError::new(
                            ENV_AZURE_CLIENT_ID,
                            format!("required when {ENV_AZURE_FEDERATED_TOKEN_FILE} is set (workload identity)"),
                        ))
                    }
                }
            }
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
                         set {ENV_AZURE_FEDERATED_TOKEN_FILE} for workload identity, or unset \
                         {ENV_AZURE_TENANT_ID} to use a managed identity"
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

impl ProviderSettings for AzureConfig {
    const VARIABLES: &'static [&'static str] = &[
        ENV_AZURE_VAULT_URL,
        ENV_AZURE_KEY_NAME,
        ENV_AZURE_KEY_VERSION,
        ENV_AZURE_TENANT_ID,
        ENV_AZURE_CLIENT_ID,
        ENV_AZURE_CLIENT_SECRET,
        ENV_AZURE_AUTHORITY_HOST,
        ENV_IDENTITY_ENDPOINT,
        ENV_IDENTITY_HEADER,
        ENV_AZURE_FEDERATED_TOKEN_FILE,
    ];
    const SELECTED_BY: &'static [&'static str] = &[
        ENV_AZURE_VAULT_URL,
        ENV_AZURE_KEY_NAME,
        ENV_AZURE_KEY_VERSION,
    ];

    fn from_vars(vars: &dyn Vars, _flags: &Flags) -> Result<Self, ConfigError> {
        AzureConfig::from_vars(vars)
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn KeyProvider>, ProviderError>> {
        Box::pin(AzureProvider::open(self))
    }
}

/// Every Key Vault call is bounded by this (the SDK retries inside it).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The seed's constraint: the key must not expire within two years.
pub const MIN_EXPIRY_SECS: i64 = 2 * 365 * 86_400;

/// Azure Key Vault as the KEK holder.
pub struct AzureProvider {
    client: KeyClient,
    key_name: String,
    key_version: String,
    /// `<vault>/keys/<name>/<version>`.
    key_id: String,
    auth: String,
    constraints_checked: OnceCell<()>,
}

impl fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureProvider")
            .field("key_id", &self.key_id)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Maps an SDK error: refusals (401/403/404, bad credentials) are not transient; connection
/// trouble, timeouts, throttling and 5xx are.
fn classify(operation: &str, target: &str, e: azure_core::Error) -> ProviderError {
    // The SDK's top-level message can be generic; the causes say what happened.
    let mut text = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        src = s.source();
    }
    let text = text.replace(['\n', '\r'], " ");
    let what = format!("Key Vault {operation} on {target}: {text}");
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let code = u16::from(*status);
            let ec = error_code.clone().unwrap_or_default();
            match code {
                401 | 403 => ProviderError::Refused(format!(
                    "{what} (access denied: the identity needs the \"Key Vault Crypto Service \
                     Encryption User\" role on the key; {ec})"
                )),
                404 => ProviderError::Refused(format!(
                    "{what} (no such key or version; check {ENV_AZURE_VAULT_URL}, \
                     {ENV_AZURE_KEY_NAME}, {ENV_AZURE_KEY_VERSION})"
                )),
                408 | 429 => ProviderError::Unavailable(what),
                c if c >= 500 => ProviderError::Unavailable(what),
                _ => ProviderError::Refused(what),
            }
        }
        ErrorKind::Connection | ErrorKind::Io => ProviderError::Unavailable(what),
        ErrorKind::Credential => {
            if text.contains("connect") || text.contains("timed out") || text.contains("dns") {
                ProviderError::Unavailable(what)
            } else {
                ProviderError::Refused(format!("{what} (sign-in failed)"))
            }
        }
        _ => ProviderError::Refused(what),
    }
}

async fn bounded<T>(
    operation: &str,
    target: &str,
    fut: impl std::future::Future<Output = azure_core::Result<T>>,
) -> Result<T, ProviderError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| classify(operation, target, e)),
        Err(_) => Err(ProviderError::Unavailable(format!(
            "Key Vault {operation} on {target}: no answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// What is wrong with `key` as a Veil KEK (the seed's constraints); empty = nothing.
pub fn key_problems(key: &Key, now_unix: i64, auto_rotation: Option<bool>) -> Vec<String> {
    let mut p = Vec::new();
    match key.key.as_ref() {
        None => p.push("the key has no public part (not an RSA key?)".to_string()),
        Some(jwk) => {
            let rsa = matches!(jwk.kty, Some(KeyType::Rsa) | Some(KeyType::RsaHsm));
            if !rsa {
                p.push(format!(
                    "key type is {}, not RSA (create it with --kty RSA or RSA-HSM --size 2048)",
                    jwk.kty
                        .as_ref()
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| "unknown".into())
                ));
            }
            let bits = jwk.n.as_ref().map(|n| {
                let lead = n.iter().take_while(|b| **b == 0).count();
                (n.len() - lead) * 8
            });
            if rsa && bits != Some(2048) {
                p.push(format!(
                    "key size is {} bits, the seed requires RSA 2048",
                    bits.map(|b| b.to_string())
                        .unwrap_or_else(|| "unknown".into())
                ));
            }
        }
    }
    let attrs = key.attributes.as_ref();
    if attrs.and_then(|a| a.enabled) == Some(false) {
        p.push("the key is disabled".to_string());
    }
    match attrs.and_then(|a| a.expires) {
        None => p.push(
            "the key has no expiry date; the seed requires one at least two years away".into(),
        ),
        Some(exp) => {
            let left = exp.unix_timestamp() - now_unix;
            if left < MIN_EXPIRY_SECS {
                p.push(format!(
                    "the key expires in {} days ({exp}); the seed requires at least 730 days",
                    left.div_euclid(86_400)
                ));
            }
        }
    }
    match auto_rotation {
        Some(true) => p.push(
            "auto-rotation is on (the rotation policy has a Rotate action); turn it off: a new \
             key version would not unwrap roots wrapped under this one"
                .into(),
        ),
        Some(false) => {}
        None => p.push("the rotation policy could not be read, auto-rotation not checked".into()),
    }
    p
}

impl AzureProvider {
    /// Signs in, reads the key and fixes its version. Makes network calls (token, get key).
    pub async fn open(cfg: &AzureConfig) -> Result<Box<dyn KeyProvider>, ProviderError> {
        Ok(Box::new(AzureProvider::connect(cfg).await?))
    }

    pub async fn connect(cfg: &AzureConfig) -> Result<AzureProvider, ProviderError> {
        // The SDK's reqwest uses rustls without a built-in crypto provider: ring, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client_options = azure_core::http::ClientOptions::default();
        if cfg.authority_host != DEFAULT_AZURE_AUTHORITY_HOST {
            let mut custom = azure_core::cloud::CustomConfiguration::default();
            custom.authority_host = cfg.authority_host.clone();
            client_options.cloud = Some(Arc::new(custom.into()));
        }
        let config_err =
            |e: azure_core::Error| ProviderError::Config(format!("Azure credential: {e}"));
        let (credential, auth): (Arc<dyn TokenCredential>, String) = match &cfg.auth {
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => {
                let o = azure_identity::ClientSecretCredentialOptions {
                    client_options: client_options.clone(),
                };
                (
                    ClientSecretCredential::new(
                        tenant_id,
                        client_id.clone(),
                        secret.expose().to_string().into(),
                        Some(o),
                    )
                    .map_err(config_err)?,
                    format!("client secret of {client_id} in tenant {tenant_id}"),
                )
            }
            AzureAuth::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                let o = azure_identity::WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions {
                        client_options: client_options.clone(),
                    },
                    client_id: Some(client_id.clone()),
                    tenant_id: Some(tenant_id.clone()),
                    token_file_path: Some(token_file.clone()),
                };
                (
                    azure_identity::WorkloadIdentityCredential::new(Some(o)).map_err(config_err)?,
                    format!("workload identity {client_id} in tenant {tenant_id}"),
                )
            }
            AzureAuth::ManagedIdentity { client_id } => {
                let o = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                (
                    ManagedIdentityCredential::new(Some(o)).map_err(config_err)?,
                    match client_id {
                        Some(c) => format!("managed identity {c}"),
                        None => "system-assigned managed identity".to_string(),
                    },
                )
            }
        };
        let client = KeyClient::new(&cfg.vault_url, credential, None)
            .map_err(|e| ProviderError::Config(format!("{ENV_AZURE_VAULT_URL}: {e}")))?;
        let target = format!("{}/keys/{}", cfg.vault_url, cfg.key_name);
        let started = Instant::now();
        let r = bounded(
            "GetKey",
            &target,
            client.get_key(
                &cfg.key_name,
                Some(KeyClientGetKeyOptions {
                    key_version: cfg.key_version.clone(),
                    ..Default::default()
                }),
            ),
        )
        .await;
        log_call(
            ProviderKind::AzureKeyVault,
            "GetKey",
            &target,
            started,
            r.as_ref().map(|_| ()),
        );
        let key: Key = r?
            .into_model()
            .map_err(|e| ProviderError::Malformed(format!("Key Vault GetKey: {e}")))?;
        let kid = key
            .key
            .as_ref()
            .and_then(|k| k.kid.clone())
            .ok_or_else(|| ProviderError::Malformed("Key Vault GetKey: no kid".into()))?;
        let rid: ResourceId = kid
            .parse()
            .map_err(|e| ProviderError::Malformed(format!("Key Vault kid {kid:?}: {e}")))?;
        let key_version = rid.version.clone().ok_or_else(|| {
            ProviderError::Malformed(format!("Key Vault kid {kid:?} has no version"))
        })?;
        Ok(AzureProvider {
            client,
            key_name: cfg.key_name.clone(),
            key_id: format!("{}/keys/{}/{}", cfg.vault_url, cfg.key_name, key_version),
            key_version,
            auth,
            constraints_checked: OnceCell::new(),
        })
    }

    /// The key's problems against the seed's constraints (reads the key and its rotation
    /// policy).
    async fn problems(&self) -> Result<Vec<String>, ProviderError> {
        let started = Instant::now();
        let r = bounded(
            "GetKey",
            &self.key_id,
            self.client.get_key(
                &self.key_name,
                Some(KeyClientGetKeyOptions {
                    key_version: Some(self.key_version.clone()),
                    ..Default::default()
                }),
            ),
        )
        .await;
        log_call(
            ProviderKind::AzureKeyVault,
            "GetKey",
            &self.key_id,
            started,
            r.as_ref().map(|_| ()),
        );
        let key: Key = r?
            .into_model()
            .map_err(|e| ProviderError::Malformed(format!("Key Vault GetKey: {e}")))?;
        let started = Instant::now();
        let policy = bounded(
            "GetKeyRotationPolicy",
            &self.key_id,
            self.client.get_key_rotation_policy(&self.key_name, None),
        )
        .await;
        log_call(
            ProviderKind::AzureKeyVault,
            "GetKeyRotationPolicy",
            &self.key_id,
            started,
            policy.as_ref().map(|_| ()),
        );
        let auto_rotation = match policy {
            Err(ProviderError::Refused(m)) if m.contains("no such key") => Some(false),
            Err(_) => None,
            Ok(r) => Some(
                r.into_model()
                    .map_err(|e| ProviderError::Malformed(format!("rotation policy: {e}")))?
                    .lifetime_actions
                    .unwrap_or_default()
                    .iter()
                    .any(|a| {
                        a.action.as_ref().and_then(|t| t.type_prop.as_ref())
                            == Some(&KeyRotationPolicyAction::Rotate)
                    }),
            ),
        };
        Ok(key_problems(
            &key,
            crate::keyring::now_unix(),
            auto_rotation,
        ))
    }

    async fn refuse_unfit_key(&self) -> Result<(), ProviderError> {
        self.constraints_checked
            .get_or_try_init(|| async {
                let p = self.problems().await?;
                if p.is_empty() {
                    Ok(())
                } else {
                    Err(ProviderError::Refused(format!(
                        "Key Vault key {} does not meet the constraints: {}",
                        self.key_id,
                        p.join("; ")
                    )))
                }
            })
            .await
            .map(|_| ())
    }

    // `KeyOperationParameters` is `#[non_exhaustive]`: no struct expression is possible.
    #[allow(clippy::field_reassign_with_default)]
    fn params(value: Vec<u8>) -> KeyOperationParameters {
        let mut p = KeyOperationParameters::default();
        p.algorithm = Some(EncryptionAlgorithm::RsaOaep256);
        p.value = Some(value);
        p
    }
}

impl KeyProvider for AzureProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AzureKeyVault
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn description(&self) -> String {
        format!(
            "Azure Key Vault key {} (RSA-OAEP-256; {})",
            self.key_id, self.auth
        )
    }

    fn wrap<'a>(
        &'a self,
        root: &'a RootKey,
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<Vec<u8>, ProviderError>> {
        Box::pin(async move {
            if !ctx.is_probe() {
                self.refuse_unfit_key().await?;
            }
            let mut plain = Zeroizing::new(root.as_bytes().to_vec());
            plain.extend_from_slice(ctx.aad().as_bytes());
            let body = azure_core::http::RequestContent::try_from(Self::params(plain.to_vec()))
                .map_err(|e| ProviderError::Malformed(format!("wrapkey request: {e}")))?;
            let started = Instant::now();
            let r = bounded(
                "WrapKey",
                &self.key_id,
                self.client.wrap_key(
                    &self.key_name,
                    body,
                    Some(KeyClientWrapKeyOptions {
                        key_version: Some(self.key_version.clone()),
                        ..Default::default()
                    }),
                ),
            )
            .await;
            log_call(
                ProviderKind::AzureKeyVault,
                "WrapKey",
                &self.key_id,
                started,
                r.as_ref().map(|_| ()),
            );
            r?.into_model()
                .map_err(|e| ProviderError::Malformed(format!("wrapkey answer: {e}")))?
                .result
                .ok_or_else(|| ProviderError::Malformed("wrapkey answer has no value".into()))
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<RootKey, ProviderError>> {
        Box::pin(async move {
            let body = azure_core::http::RequestContent::try_from(Self::params(wrapped.to_vec()))
                .map_err(|e| ProviderError::Malformed(format!("unwrapkey request: {e}")))?;
            let started = Instant::now();
            let r = bounded(
                "UnwrapKey",
                &self.key_id,
                self.client
                    .unwrap_key(&self.key_name, &self.key_version, body, None),
            )
            .await
            .map_err(|e| match e {
                // Key Vault answers 400 when the ciphertext does not decrypt under the key.
                ProviderError::Refused(m) if m.contains("400") || m.contains("BadParameter") => {
                    ProviderError::Integrity {
                        key_id: self.key_id.clone(),
                    }
                }
                other => other,
            });
            log_call(
                ProviderKind::AzureKeyVault,
                "UnwrapKey",
                &self.key_id,
                started,
                r.as_ref().map(|_| ()),
            );
            let plain = Zeroizing::new(
                r?.into_model()
                    .map_err(|e| ProviderError::Malformed(format!("unwrapkey answer: {e}")))?
                    .result
                    .ok_or_else(|| {
                        ProviderError::Malformed("unwrapkey answer has no value".into())
                    })?,
            );
            let aad = ctx.aad();
            if plain.len() != 32 + aad.len() || !plain.ends_with(aad.as_bytes()) {
                return Err(ProviderError::Integrity {
                    key_id: self.key_id.clone(),
                });
            }
            RootKey::from_slice(plain.get(..32).unwrap_or_default())
                .map_err(|e| ProviderError::Malformed(e.to_string()))
        })
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut probe = Probe::default();
            match self.problems().await {
                Ok(p) if p.is_empty() => probe.lines.push(format!(
                    "key {}: RSA 2048, enabled, expires in 2+ years, auto-rotation off",
                    self.key_id
                )),
                Ok(p) => probe.problems.extend(p),
                Err(e) => probe.problems.push(e.to_string()),
            }
            let rt = super::round_trip_probe(self).await;
            probe.lines.extend(rt.lines);
            probe.problems.extend(rt.problems);
            probe
        })
    }
}
