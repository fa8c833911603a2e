//! Key providers: what wraps and unwraps a 32-byte secret (a root, or a relay server key's
//! seed) under a key-encryption key (KEK).
//!
//! The KEK never leaves its provider (a KMS, an HSM; for `local`, a key file). A provider is
//! identified in the keyring by its kind and a key id, so a root wrapped under one KEK is
//! never handed to another.
//!
//! Each provider is one module here that owns its settings ([`ProviderSettings`]: the
//! variables it reads, their validation, how it opens) and implements [`KeyProvider`]. The
//! one list of providers is the `provider_list!` invocation below: adding a provider is a
//! new module and one line there.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use thiserror::Error;
use veil_core::crypto::keys::RootKey;
use zeroize::Zeroizing;

use crate::config::{ConfigError, Flags, KeyringConfig, Vars};

pub mod aws_kms;
pub mod azure_keyvault;
pub mod cloudhsm;
pub mod local;

pub use local::{LocalProvider, LOCAL_WARNING};

/// What every provider's settings do: read and validate themselves from the environment (and
/// the few flags), name the variables they own, and open the provider.
pub trait ProviderSettings: Sized {
    /// The environment variables this provider reads (named when they are set for another
    /// provider, and by `migrate`).
    const VARIABLES: &'static [&'static str];

    /// The variables only this provider reads: with `KMS_PROVIDER` unset, their presence
    /// selects it (the Secure Proxy's rule: `AWS_CUSTOMER_KEY_ID` alone means AWS KMS).
    const SELECTED_BY: &'static [&'static str];

    /// Reads and validates the settings; an error names the variable or flag at fault.
    fn from_vars(vars: &dyn Vars, flags: &Flags) -> Result<Self, ConfigError>;

    /// Opens the provider (cloud providers make network calls). Never creates a KEK.
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn KeyProvider>, ProviderError>>;
}

/// Builds [`ProviderKind`] and [`ProviderConfig`] from the one list of providers.
macro_rules! provider_list {
    ($( $(#[doc = $doc:literal])* $kind:ident = $name:literal $(| $alias:literal)* => $settings:ty ),+ $(,)?) => {
        /// Which key provider wraps the roots (`KMS_PROVIDER`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProviderKind {
            $( $(#[doc = $doc])* $kind ),+
        }

        impl ProviderKind {
            /// Every provider, in the order documented.
            pub const ALL: &'static [ProviderKind] = &[$(ProviderKind::$kind),+];

            /// The canonical `KMS_PROVIDER` value (also `kek.provider` in the keyring).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProviderKind::$kind => $name),+
                }
            }

            /// Other accepted `KMS_PROVIDER` values (the seeds' own names).
            pub fn aliases(self) -> &'static [&'static str] {
                match self {
                    $(ProviderKind::$kind => &[$($alias),*]),+
                }
            }

            /// The environment variables the provider reads.
            pub fn variables(self) -> &'static [&'static str] {
                match self {
                    $(ProviderKind::$kind => <$settings as ProviderSettings>::VARIABLES),+
                }
            }

            /// The variables whose presence selects it when `KMS_PROVIDER` is unset.
            pub fn selected_by(self) -> &'static [&'static str] {
                match self {
                    $(ProviderKind::$kind => <$settings as ProviderSettings>::SELECTED_BY),+
                }
            }
        }

        /// The selected provider with its own settings.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum ProviderConfig {
            $( $(#[doc = $doc])* $kind($settings) ),+
        }

        impl ProviderConfig {
            /// Reads the settings of provider `kind` (only that one is validated).
            pub fn from_vars(
                kind: ProviderKind,
                vars: &dyn Vars,
                flags: &Flags,
            ) -> Result<ProviderConfig, ConfigError> {
                Ok(match kind {
                    $(ProviderKind::$kind => ProviderConfig::$kind(
                        <$settings as ProviderSettings>::from_vars(vars, flags)?,
                    )),+
                })
            }

            pub fn kind(&self) -> ProviderKind {
                match self {
                    $(ProviderConfig::$kind(_) => ProviderKind::$kind),+
                }
            }

            /// Opens the provider. Never creates a KEK.
            pub async fn open(&self) -> Result<Box<dyn KeyProvider>, ProviderError> {
                match self {
                    $(ProviderConfig::$kind(s) => s.open().await),+
                }
            }
        }
    };
}

provider_list! {
    /// A KEK file on this machine: development only.
    Local = "local" => local::LocalConfig,
    /// AWS KMS (`GenerateDataKey` / `Decrypt` under an encryption context). `AWS` is the
    /// Secure Proxy's name for it.
    AwsKms = "aws-kms" | "aws" => aws_kms::AwsKmsConfig,
    /// AWS CloudHSM, or any PKCS#11 token (AES-GCM on the token).
    AwsCloudHsm = "aws-cloudhsm" => cloudhsm::Pkcs11Config,
    /// Azure Key Vault (RSA-OAEP-256 `wrapkey` / `unwrapkey`). `Azure` is the Secure
    /// Proxy's name for it.
    AzureKeyVault = "azure-keyvault" | "azure" => azure_keyvault::AzureConfig,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    /// A canonical name or an alias, in any case (`Azure`, `AWS-KMS`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .iter()
            .copied()
            .find(|k| {
                k.as_str().eq_ignore_ascii_case(s)
                    || k.aliases().iter().any(|a| a.eq_ignore_ascii_case(s))
            })
            .ok_or_else(|| {
                let valid: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown provider {s:?}; valid values are: {} (any case; also `aws`, \
                     `azure`)",
                    valid.join(", ")
                )
            })
    }
}

/// Which provider the variables select when `KMS_PROVIDER` is unset: the one whose own
/// variables ([`ProviderSettings::SELECTED_BY`]) are set; none set = `local`. Variables of
/// several providers are an error naming them all, never a silent choice.
pub fn infer_kind(vars: &dyn Vars) -> Result<(ProviderKind, Vec<&'static str>), ConfigError> {
    let mut found: Vec<(ProviderKind, Vec<&'static str>)> = Vec::new();
    for &kind in ProviderKind::ALL {
        let mut set = Vec::new();
        for &name in kind.selected_by() {
            if vars.var(name)?.is_some_and(|v| !v.trim().is_empty()) {
                set.push(name);
            }
        }
        if !set.is_empty() {
            found.push((kind, set));
        }
    }
    match found.len() {
        0 => Ok((ProviderKind::Local, Vec::new())),
        1 => Ok(found.remove(0)),
        _ => {
            let named: Vec<String> = found
                .iter()
                .map(|(k, v)| format!("{} ({k})", v.join(", ")))
                .collect();
            Err(ConfigError::new(
                crate::config::ENV_KMS_PROVIDER,
                format!(
                    "is unset and the settings of more than one provider are present: {}; \
                     set KMS_PROVIDER to the one to use",
                    named.join("; ")
                ),
            ))
        }
    }
}

/// A boxed, sendable future: keeps [`KeyProvider`] usable as `dyn KeyProvider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a wrapped 32-byte secret is and is bound to. Providers bind it as they can: AES-GCM
/// associated data (local, PKCS#11, inside the RSA-OAEP plaintext for Azure), an encryption
/// context (AWS KMS); unwrapping under another context fails, so a relay key's wrapped seed
/// never unwraps as a root, nor a root as another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapContext {
    /// A keyring root of this version (0: the probe's throwaway root, never in a keyring).
    Root(u32),
    /// The X-Wing seed of the relay server key with this key id (docs/keyservice.md).
    RelayKey(u8),
}

impl WrapContext {
    /// The associated data: `veil/v1/root/r<version>` for a root (as keyrings were always
    /// written), `veil/v1/relay-key/k<id>` for a relay server key.
    pub fn aad(&self) -> String {
        match self {
            WrapContext::Root(v) => format!("veil/v1/root/r{v}"),
            WrapContext::RelayKey(id) => format!("veil/v1/relay-key/k{id}"),
        }
    }

    /// Whether this is the probe's throwaway context (providers skip their key checks).
    pub fn is_probe(&self) -> bool {
        *self == WrapContext::Root(0)
    }
}

/// Errors from a provider. Messages never contain key material.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// The provider is misconfigured (missing key file, bad permissions, …).
    #[error("{0}")]
    Config(String),
    /// The wrapped root did not authenticate: wrong KEK, wrong context, or tampered bytes.
    #[error(
        "the wrapped root does not authenticate under {key_id} (wrong KEK or tampered keyring)"
    )]
    Integrity { key_id: String },
    /// The wrapped root has the wrong shape.
    #[error("malformed wrapped root: {0}")]
    Malformed(String),
    /// The provider could not be reached (network, timeout, throttling); may be transient,
    /// so `serve` retries it with backoff.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider answered and refused (access denied, unknown or disabled key, …): not
    /// transient, retrying does not help.
    #[error("provider refused: {0}")]
    Refused(String),
}

impl ProviderError {
    /// Whether retrying later may succeed (only [`ProviderError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }
}

/// Log target of the one line per provider call (operation, key id, outcome, latency).
pub const KMS_TARGET: &str = "veil_keyservice::kms";

/// Logs one provider call. Never key material: the operation, the key id, the outcome.
pub fn log_call(
    kind: ProviderKind,
    operation: &str,
    key_id: &str,
    started: std::time::Instant,
    outcome: Result<(), &ProviderError>,
) {
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    match outcome {
        Ok(()) => tracing::info!(
            target: KMS_TARGET,
            provider = %kind,
            operation,
            key_id,
            outcome = "ok",
            latency_ms,
            "provider call"
        ),
        Err(e) => tracing::warn!(
            target: KMS_TARGET,
            provider = %kind,
            operation,
            key_id,
            outcome = "error",
            error = %e,
            latency_ms,
            "provider call failed"
        ),
    }
}

/// What `veil-keyservice check` learned from probing a provider.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Lines of the report (what was checked and how it went).
    pub lines: Vec<String>,
    /// Problems found; empty means the provider is usable.
    pub problems: Vec<String>,
}

/// A key-encryption key that wraps and unwraps roots.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Which provider this is (written to the keyring as `kek.provider`).
    fn kind(&self) -> ProviderKind;

    /// The KEK's id as written to the keyring (`kek.key_id`), e.g. `local:<hex>` or a key ARN.
    fn key_id(&self) -> &str;

    /// One line for logs and `keyring status`: where the KEK lives. Never key material.
    fn description(&self) -> String;

    /// Wraps `root` under the KEK, bound to `ctx`. Returns the opaque wrapped bytes.
    fn wrap<'a>(
        &'a self,
        root: &'a RootKey,
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<Vec<u8>, ProviderError>>;

    /// Unwraps bytes produced by [`KeyProvider::wrap`] with the same `ctx`.
    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<RootKey, ProviderError>>;

    /// A new random root and its wrapped form. By default the operating system's RNG and
    /// [`KeyProvider::wrap`]; AWS KMS overrides it with `GenerateDataKey`.
    fn generate<'a>(
        &'a self,
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<(RootKey, Vec<u8>), ProviderError>> {
        Box::pin(async move {
            let root = generate_root()?;
            let wrapped = self.wrap(&root, ctx).await?;
            Ok((root, wrapped))
        })
    }

    /// Probes the provider for `veil-keyservice check`: key constraints, permissions, a
    /// wrap/unwrap round trip of a throwaway root. Never touches the keyring.
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move { round_trip_probe(self).await })
    }
}

/// The probe every provider shares: wrap and unwrap a throwaway root (version 0 context,
/// which no keyring root can have).
pub async fn round_trip_probe<P: KeyProvider + ?Sized>(p: &P) -> Probe {
    let mut probe = Probe::default();
    let ctx = WrapContext::Root(0);
    match generate_root() {
        Err(e) => probe.problems.push(e.to_string()),
        Ok(root) => match p.wrap(&root, ctx).await {
            Err(e) => probe.problems.push(format!("wrap: {e}")),
            Ok(w) => match p.unwrap(&w, ctx).await {
                Ok(back) if back.as_bytes() == root.as_bytes() => probe
                    .lines
                    .push("wrap/unwrap round trip of a throwaway root: ok".into()),
                Ok(_) => probe
                    .problems
                    .push("unwrap returned another root than was wrapped".into()),
                Err(e) => probe.problems.push(format!("unwrap: {e}")),
            },
        },
    }
    probe
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, ProviderError> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::fill(out.as_mut())
        .map_err(|e| ProviderError::Unavailable(format!("operating system RNG: {e}")))?;
    Ok(out)
}

/// A fresh random root.
pub fn generate_root() -> Result<RootKey, ProviderError> {
    let bytes = random_bytes::<32>()?;
    Ok(RootKey::from_bytes(*bytes))
}

/// Opens the configured provider. Never creates a KEK (that is `keyring init`'s explicit
/// step for the local provider; cloud KEKs are created by their owners).
pub async fn open(cfg: &KeyringConfig) -> Result<Box<dyn KeyProvider>, ProviderError> {
    cfg.provider.open().await
}
