//! The `aws-cloudhsm` provider, through PKCS#11 (cryptoki): the KEK is an AES-256 key on the
//! token that never leaves it (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`); a root is wrapped with
//! `C_Encrypt` under `CKM_AES_GCM` on the token, with the root version as associated data.
//!
//! Wrapped root = IV (12) || ciphertext (32) || tag (16). The IV buffer is handed to the token
//! mutable and read back after the call: AWS CloudHSM generates the GCM IV itself and writes
//! it there; SoftHSM2 (the tests' stand-in) uses the random IV Veil supplies.
//!
//! PKCS#11 calls block (CloudHSM's are network round trips), so they run on tokio's blocking
//! pool; one logged-in session is shared behind a mutex.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use veil_core::crypto::keys::RootKey;
use zeroize::Zeroizing;

use super::{
    log_call, BoxFuture, KeyProvider, Probe, ProviderError, ProviderKind, ProviderSettings,
    WrapContext,
};
use crate::config::{io_reason, optional, required, ConfigError, Flags, Vars};

// aws-cloudhsm (PKCS#11).
pub const ENV_PKCS11_MODULE: &str = "VEIL_PKCS11_MODULE";
pub const ENV_PKCS11_TOKEN_LABEL: &str = "VEIL_PKCS11_TOKEN_LABEL";
pub const ENV_PKCS11_SLOT: &str = "VEIL_PKCS11_SLOT";
pub const ENV_PKCS11_PIN_FILE: &str = "VEIL_PKCS11_PIN_FILE";
pub const ENV_PKCS11_KEY_LABEL: &str = "VEIL_PKCS11_KEY_LABEL";
/// Where AWS CloudHSM Client SDK 5 installs its PKCS#11 library.
pub const DEFAULT_PKCS11_MODULE: &str = "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so";
pub const DEFAULT_PKCS11_KEY_LABEL: &str = "veil-kek";

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

impl ProviderSettings for Pkcs11Config {
    const VARIABLES: &'static [&'static str] = &[
        ENV_PKCS11_MODULE,
        ENV_PKCS11_TOKEN_LABEL,
        ENV_PKCS11_SLOT,
        ENV_PKCS11_PIN_FILE,
        ENV_PKCS11_KEY_LABEL,
    ];
    const SELECTED_BY: &'static [&'static str] = &[
        ENV_PKCS11_MODULE,
        ENV_PKCS11_TOKEN_LABEL,
        ENV_PKCS11_SLOT,
        ENV_PKCS11_PIN_FILE,
        ENV_PKCS11_KEY_LABEL,
    ];

    fn from_vars(vars: &dyn Vars, _flags: &Flags) -> Result<Self, ConfigError> {
        Pkcs11Config::from_vars(vars)
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn KeyProvider>, ProviderError>> {
        Box::pin(async move {
            let p: Box<dyn KeyProvider> = Box::new(Pkcs11Provider::open(self).await?);
            Ok(p)
        })
    }
}

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

struct Inner {
    // Field order matters: the session closes before the library is finalized.
    session: Mutex<Session>,
    key: ObjectHandle,
    _pkcs11: Pkcs11,
}

/// A PKCS#11 token (AWS CloudHSM, or SoftHSM2 in tests) as the KEK holder.
pub struct Pkcs11Provider {
    inner: Arc<Inner>,
    key_id: String,
    module: String,
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("key_id", &self.key_id)
            .field("module", &self.module)
            .finish()
    }
}

fn p11(what: &str, e: cryptoki::error::Error) -> ProviderError {
    use cryptoki::error::{Error, RvError};
    match &e {
        Error::Pkcs11(rv, _) => match rv {
            RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::DeviceMemory
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::TokenNotPresent
            | RvError::FunctionFailed => ProviderError::Unavailable(format!("PKCS#11 {what}: {e}")),
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => {
                ProviderError::Malformed(format!("PKCS#11 {what}: {e}"))
            }
            _ => ProviderError::Refused(format!("PKCS#11 {what}: {e}")),
        },
        _ => ProviderError::Config(format!("PKCS#11 {what}: {e}")),
    }
}

impl Pkcs11Provider {
    /// Loads the module, finds the token, logs in as the crypto user and finds the key.
    pub async fn open(cfg: &Pkcs11Config) -> Result<Pkcs11Provider, ProviderError> {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Pkcs11Provider::open_blocking(&cfg))
            .await
            .map_err(|e| ProviderError::Unavailable(format!("PKCS#11 worker: {e}")))?
    }

    fn open_blocking(cfg: &Pkcs11Config) -> Result<Pkcs11Provider, ProviderError> {
        let module = cfg.module.display().to_string();
        if !Path::new(&cfg.module).is_file() {
            return Err(ProviderError::Config(format!(
                "{ENV_PKCS11_MODULE} {module}: not found (the PKCS#11 library of the HSM client)"
            )));
        }
        let pin = read_pin(&cfg.pin_file)?;
        let pkcs11 = Pkcs11::new(&cfg.module)
            .map_err(|e| ProviderError::Config(format!("{ENV_PKCS11_MODULE} {module}: {e}")))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // A second provider on the same module in this process (rewrap between two
            // keys of one HSM): the library is already initialized, which is fine.
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => return Err(p11("C_Initialize", e)),
        }
        let slots = pkcs11
            .get_slots_with_token()
            .map_err(|e| p11("C_GetSlotList", e))?;
        let (slot, token) = pick_slot(&pkcs11, &slots, cfg)?;
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(|e| p11("C_OpenSession", e))?;
        session
            .login(UserType::User, Some(&pin))
            .or_else(|e| match e {
                // Login state is per application: a second provider in this process is
                // already logged in.
                cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::UserAlreadyLoggedIn,
                    _,
                ) => Ok(()),
                other => Err(other),
            })
            .map_err(|e| match e {
                cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::PinIncorrect, _) => {
                    ProviderError::Refused(format!(
                        "PKCS#11 C_Login on token {token:?}: PIN incorrect ({ENV_PKCS11_PIN_FILE} {})",
                        cfg.pin_file.display()
                    ))
                }
                other => p11("C_Login", other),
            })?;
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(cfg.key_label.as_bytes().to_vec()),
            ])
            .map_err(|e| p11("C_FindObjects", e))?;
        let key = match found.as_slice() {
            [k] => *k,
            [] => {
                return Err(ProviderError::Refused(format!(
                    "{ENV_PKCS11_KEY_LABEL}: no AES key labelled {:?} on token {token:?} \
                     (create one: see docs/keys-cloudhsm.md)",
                    cfg.key_label
                )))
            }
            many => {
                return Err(ProviderError::Refused(format!(
                    "{ENV_PKCS11_KEY_LABEL}: {} AES keys are labelled {:?} on token {token:?}; \
                     the label must name exactly one",
                    many.len(),
                    cfg.key_label
                )))
            }
        };
        check_key_attributes(&session, key, &cfg.key_label)?;
        Ok(Pkcs11Provider {
            inner: Arc::new(Inner {
                session: Mutex::new(session),
                key,
                _pkcs11: pkcs11,
            }),
            key_id: format!("pkcs11:token={token};object={}", cfg.key_label),
            module,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Session, ObjectHandle) -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let inner = self.inner.clone();
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            let session = inner
                .session
                .lock()
                .map_err(|_| ProviderError::Unavailable("PKCS#11 session lock poisoned".into()))?;
            f(&session, inner.key)
        })
        .await
        .map_err(|e| ProviderError::Unavailable(format!("PKCS#11 worker: {e}")))
        .and_then(|r| r);
        log_call(
            ProviderKind::AwsCloudHsm,
            operation,
            &self.key_id,
            started,
            r.as_ref().map(|_| ()),
        );
        r
    }
}

/// The PIN file: its content with surrounding whitespace removed. Never echoed.
fn read_pin(path: &Path) -> Result<AuthPin, ProviderError> {
    let what = format!("{ENV_PKCS11_PIN_FILE} {}", path.display());
    let raw = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| ProviderError::Config(format!("{what}: {}", io_reason(&e))))?,
    );
    let text = std::str::from_utf8(&raw)
        .map_err(|_| ProviderError::Config(format!("{what}: not UTF-8")))?
        .trim();
    if text.is_empty() {
        return Err(ProviderError::Config(format!("{what}: empty")));
    }
    Ok(AuthPin::from(text.to_string()))
}

fn pick_slot(
    pkcs11: &Pkcs11,
    slots: &[Slot],
    cfg: &Pkcs11Config,
) -> Result<(Slot, String), ProviderError> {
    let mut labels = Vec::new();
    for s in slots {
        let info = pkcs11
            .get_token_info(*s)
            .map_err(|e| p11("C_GetTokenInfo", e))?;
        let label = info.label().trim().to_string();
        let hit = match (&cfg.token_label, cfg.slot) {
            (Some(l), _) => *l == label,
            (None, Some(id)) => s.id() == id,
            (None, None) => true,
        };
        if hit {
            return Ok((*s, label));
        }
        labels.push(format!("{label:?} (slot {})", s.id()));
    }
    let (what, wanted) = match (&cfg.token_label, cfg.slot) {
        (Some(l), _) => (ENV_PKCS11_TOKEN_LABEL, format!("{l:?}")),
        (None, Some(id)) => (ENV_PKCS11_SLOT, id.to_string()),
        (None, None) => (ENV_PKCS11_MODULE, "any".to_string()),
    };
    Err(ProviderError::Refused(format!(
        "{what}: no token {wanted}; tokens present: [{}]",
        labels.join(", ")
    )))
}

/// The KEK must stay in the token and be usable for encrypt/decrypt.
fn check_key_attributes(
    session: &Session,
    key: ObjectHandle,
    label: &str,
) -> Result<(), ProviderError> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::ValueLen,
            ],
        )
        .map_err(|e| p11("C_GetAttributeValue", e))?;
    let mut problems = Vec::new();
    for a in attrs {
        match a {
            Attribute::Sensitive(false) => problems.push("CKA_SENSITIVE is false"),
            Attribute::Extractable(true) => problems.push("CKA_EXTRACTABLE is true"),
            Attribute::Encrypt(false) => problems.push("CKA_ENCRYPT is false"),
            Attribute::Decrypt(false) => problems.push("CKA_DECRYPT is false"),
            Attribute::ValueLen(n) if u64::from(n) != 32 => problems.push("not a 256-bit key"),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::Refused(format!(
            "{ENV_PKCS11_KEY_LABEL} {label:?}: the key is unfit as a KEK: {} (it must be an \
             AES-256 key with CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, CKA_ENCRYPT and \
             CKA_DECRYPT)",
            problems.join(", ")
        )))
    }
}

impl KeyProvider for Pkcs11Provider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AwsCloudHsm
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn description(&self) -> String {
        format!(
            "PKCS#11 AES-256 key {} via {} (AES-GCM on the token)",
            self.key_id, self.module
        )
    }

    fn wrap<'a>(
        &'a self,
        root: &'a RootKey,
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<Vec<u8>, ProviderError>> {
        let plain = Zeroizing::new(root.as_bytes().to_vec());
        Box::pin(async move {
            let mut iv = *super::random_bytes::<IV_LEN>()?;
            self.run("C_Encrypt(CKM_AES_GCM)", move |session, key| {
                let aad = ctx.aad();
                let params = GcmParams::new(&mut iv, aad.as_bytes(), Ulong::from(128u64))
                    .map_err(|e| ProviderError::Malformed(format!("GCM parameters: {e}")))?;
                let ct = session
                    .encrypt(&Mechanism::AesGcm(params), key, &plain)
                    .map_err(|e| p11("C_Encrypt", e))?;
                if ct.len() != 32 + TAG_LEN {
                    return Err(ProviderError::Malformed(format!(
                        "C_Encrypt returned {} bytes, expected {}",
                        ct.len(),
                        32 + TAG_LEN
                    )));
                }
                let mut out = Vec::with_capacity(IV_LEN + ct.len());
                out.extend_from_slice(&iv);
                out.extend_from_slice(&ct);
                Ok(out)
            })
            .await
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<RootKey, ProviderError>> {
        let wrapped = wrapped.to_vec();
        let key_id = self.key_id.clone();
        Box::pin(async move {
            if wrapped.len() != IV_LEN + 32 + TAG_LEN {
                return Err(ProviderError::Malformed(format!(
                    "a PKCS#11-wrapped root is {} bytes, got {}",
                    IV_LEN + 32 + TAG_LEN,
                    wrapped.len()
                )));
            }
            self.run("C_Decrypt(CKM_AES_GCM)", move |session, key| {
                let (iv, ct) = wrapped.split_at(IV_LEN);
                let mut iv = iv.to_vec();
                let aad = ctx.aad();
                let params = GcmParams::new(&mut iv, aad.as_bytes(), Ulong::from(128u64))
                    .map_err(|e| ProviderError::Malformed(format!("GCM parameters: {e}")))?;
                let plain = Zeroizing::new(
                    session
                        .decrypt(&Mechanism::AesGcm(params), key, ct)
                        .map_err(|e| match e {
                            cryptoki::error::Error::Pkcs11(
                                cryptoki::error::RvError::EncryptedDataInvalid,
                                _,
                            ) => ProviderError::Integrity { key_id },
                            other => p11("C_Decrypt", other),
                        })?,
                );
                RootKey::from_slice(&plain).map_err(|e| ProviderError::Malformed(e.to_string()))
            })
            .await
        })
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut p = super::round_trip_probe(self).await;
            p.lines.insert(
                0,
                format!(
                    "token and key found, logged in; key {} is AES-256, sensitive, not extractable",
                    self.key_id
                ),
            );
            p
        })
    }
}
