//! The keyring: a small JSON document listing root versions, each wrapped under a named KEK.
//!
//! ```json
//! {"format":"veil-keyring/1","roots":[{"version":1,"state":"active",
//!   "created_at":"2026-11-22T23:00:00Z",
//!   "kek":{"provider":"local","key_id":"local:<hex>"},
//!   "wrapped":"<base64>","check":"<hex of RootKey::check_value()>"}]}
//! ```
//!
//! Since relay protocol v2 the keyring also holds the relay's server keys (X-Wing seeds,
//! wrapped under the same KEK, each with a one-byte key id that is never reused), in an
//! optional `relay_keys` list; a keyring written before has none until `keyring
//! rotate-relay-key` adds the first:
//!
//! ```json
//!   "relay_keys":[{"id":1,"state":"active","created_at":"…","kek":{…},
//!     "wrapped":"<base64>","config":"<base64url of its RFC 9458 key configuration>"}]
//! ```
//!
//! The file holds no secret in the clear (roots are wrapped), but it is the only way to
//! read data sealed under its roots: it is written atomically (temp file, fsync, rename or
//! link) with mode 0600, and never replaced by `init`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use veil_core::crypto::keys::{Dek, Epoch, Kid, RootKey};
use veil_core::relay::v2::{KeyConfig, ServerKey};

use crate::config::io_reason;
use crate::providers::{KeyProvider, ProviderError, WrapContext};

/// The `format` of the keyring documents this build reads and writes.
pub const FORMAT: &str = "veil-keyring/1";

/// Errors loading, validating, writing or unwrapping a keyring. Each names the file and,
/// where there is one, the field at fault.
#[derive(Debug, Error)]
pub enum KeyringError {
    #[error(
        "keyring {path}: not found; create one with `veil-keyservice keyring init` \
         (the keyservice never creates a root by itself: a new root would make data sealed \
         under the old one unreadable)"
    )]
    Missing { path: String },
    #[error("keyring {path}: already exists; refusing to replace it (a new root would make data sealed under the existing one unreadable)")]
    Exists { path: String },
    #[error("keyring {path}: {message}")]
    Io { path: String, message: String },
    #[error("keyring {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("keyring {path}: roots[{index}] (r{version}): {message}")]
    Root {
        path: String,
        index: usize,
        version: u32,
        message: String,
    },
    #[error("keyring {path}: relay_keys[{index}] (k{id}): {message}")]
    RelayKey {
        path: String,
        index: usize,
        id: u8,
        message: String,
    },
    #[error("{0}")]
    Provider(#[from] ProviderError),
}

/// State of a root version. Only `active` roots are unwrapped and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootState {
    /// Unwrapped at start; its data keys are served; the highest active version is current.
    Active,
    /// Kept in the file but not unwrapped or served (its data keys are unavailable).
    Disabled,
    /// A tombstone left by `keyring destroy`: the wrapped root is gone, the version number
    /// stays so that no later root ever reuses it (a kid names exactly one key, forever).
    Destroyed,
}

impl fmt::Display for RootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            RootState::Active => "active",
            RootState::Disabled => "disabled",
            RootState::Destroyed => "destroyed",
        })
    }
}

/// Which KEK wrapped a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KekRef {
    pub provider: String,
    pub key_id: String,
}

/// One root version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootEntry {
    pub version: u32,
    pub state: RootState,
    pub created_at: String,
    pub kek: KekRef,
    /// Base64 (standard, padded) of the provider's wrapped bytes.
    pub wrapped: String,
    /// Hex of `RootKey::check_value()`.
    pub check: String,
}

/// One relay server key as stored: its X-Wing seed wrapped under a KEK like a root. The
/// states mean what they mean for roots: `active` keys pair (the highest id is current,
/// what `relay-key show` prints), `disabled` ones are kept but not served, `destroyed` is a
/// tombstone whose id is never issued again (a pinned key id names one key, forever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayKeyEntry {
    /// The RFC 9458 key id, 1..=255.
    pub id: u8,
    pub state: RootState,
    pub created_at: String,
    pub kek: KekRef,
    /// Base64 (standard, padded) of the provider's wrapped seed; `""` once destroyed.
    pub wrapped: String,
    /// Base64url (no padding) of the key configuration the seed makes: public (it is the
    /// pin), and the check that the unwrapped seed is this key.
    pub config: String,
}

/// The keyring document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    pub format: String,
    pub roots: Vec<RootEntry>,
    /// The relay server keys; absent in keyrings written before relay protocol v2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relay_keys: Vec<RelayKeyEntry>,
}

/// SHA-256 of a keyring file's bytes: tells a reload whether the file changed. Not secret
/// (the file holds wrapped roots only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyringDigest(pub [u8; 32]);

impl Keyring {
    /// Reads and validates the keyring at `path`. A missing file is [`KeyringError::Missing`].
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        Keyring::read(path).map(|(k, _)| k)
    }

    /// Loads `path` and returns the SHA-256 of the bytes read, so a reload can tell whether
    /// the file changed (one read: the digest is of the content parsed).
    pub fn read(path: &Path) -> Result<(Keyring, KeyringDigest), KeyringError> {
        let p = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::Missing { path: p })
            }
            Err(e) => {
                return Err(KeyringError::Io {
                    path: p,
                    message: io_reason(&e),
                })
            }
        };
        let digest = KeyringDigest(Sha256::digest(text.as_bytes()).into());
        Ok((Keyring::parse(&text, &p)?, digest))
    }

    /// Parses and validates a keyring document; `path` is used in errors.
    pub fn parse(text: &str, path: &str) -> Result<Keyring, KeyringError> {
        let invalid = |message: String| KeyringError::Invalid {
            path: path.to_string(),
            message,
        };
        let k: Keyring =
            serde_json::from_str(text).map_err(|e| invalid(format!("not a valid keyring: {e}")))?;
        if k.format != FORMAT {
            return Err(invalid(format!(
                "format: expected {FORMAT:?}, got {:?}",
                k.format
            )));
        }
        if k.roots.is_empty() {
            return Err(invalid(
                "roots: empty; a keyring has at least one root".into(),
            ));
        }
        let mut seen = BTreeMap::new();
        for (index, r) in k.roots.iter().enumerate() {
            let root_err = |message: String| KeyringError::Root {
                path: path.to_string(),
                index,
                version: r.version,
                message,
            };
            if r.version == 0 {
                return Err(root_err("version: must be 1 or more".into()));
            }
            if let Some(prev) = seen.insert(r.version, index) {
                return Err(root_err(format!(
                    "version: {} already used by roots[{prev}]",
                    r.version
                )));
            }
            if r.state == RootState::Destroyed {
                // A tombstone: nothing to unwrap, and nothing may be left to unwrap.
                if !r.wrapped.is_empty() {
                    return Err(root_err(
                        "wrapped: a destroyed root keeps no wrapped key (must be \"\")".into(),
                    ));
                }
                continue;
            }
            r.wrapped_bytes()
                .map_err(|m| root_err(format!("wrapped: {m}")))?;
            r.check_bytes()
                .map_err(|m| root_err(format!("check: {m}")))?;
            if r.kek.provider.is_empty() || r.kek.key_id.is_empty() {
                return Err(root_err("kek: provider and key_id must be set".into()));
            }
        }
        let mut ids = BTreeMap::new();
        for (index, r) in k.relay_keys.iter().enumerate() {
            let key_err = |message: String| KeyringError::RelayKey {
                path: path.to_string(),
                index,
                id: r.id,
                message,
            };
            if r.id == 0 {
                return Err(key_err("id: must be 1 to 255".into()));
            }
            if let Some(prev) = ids.insert(r.id, index) {
                return Err(key_err(format!(
                    "id: {} already used by relay_keys[{prev}]",
                    r.id
                )));
            }
            if r.state == RootState::Destroyed {
                if !r.wrapped.is_empty() {
                    return Err(key_err(
                        "wrapped: a destroyed relay key keeps no wrapped seed (must be \"\")"
                            .into(),
                    ));
                }
                continue;
            }
            r.wrapped_bytes()
                .map_err(|m| key_err(format!("wrapped: {m}")))?;
            r.key_config()
                .map_err(|m| key_err(format!("config: {m}")))?;
            if r.kek.provider.is_empty() || r.kek.key_id.is_empty() {
                return Err(key_err("kek: provider and key_id must be set".into()));
            }
        }
        Ok(k)
    }

    /// The document as written to disk (pretty JSON, trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Writes a new keyring at `path`; fails with [`KeyringError::Exists`] if there is one.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyringError> {
        write_atomic(path, self.to_json().as_bytes(), false)
    }

    /// Replaces the keyring at `path` atomically (for later commands: rotate, rewrap).
    pub fn replace(&self, path: &Path) -> Result<(), KeyringError> {
        write_atomic(path, self.to_json().as_bytes(), true)
    }

    /// The id of the current relay server key (the highest active one), if any.
    pub fn current_relay_key(&self) -> Option<u8> {
        self.relay_keys
            .iter()
            .filter(|k| k.state == RootState::Active)
            .map(|k| k.id)
            .max()
    }

    /// The id a new relay server key gets: one above every id ever issued (tombstones
    /// included), or `None` when all 255 are used.
    pub fn next_relay_key_id(&self) -> Option<u8> {
        match self.relay_keys.iter().map(|k| k.id).max() {
            None => Some(1),
            Some(id) => id.checked_add(1),
        }
    }

    /// The highest active version, if any.
    pub fn current_version(&self) -> Option<u32> {
        self.roots
            .iter()
            .filter(|r| r.state == RootState::Active)
            .map(|r| r.version)
            .max()
    }
}

impl RootEntry {
    /// Builds an entry by wrapping `root` with `provider`.
    pub async fn wrap(
        version: u32,
        root: &RootKey,
        provider: &dyn KeyProvider,
        created_at: String,
    ) -> Result<RootEntry, ProviderError> {
        let wrapped = provider.wrap(root, WrapContext::Root(version)).await?;
        Ok(RootEntry::from_wrapped(
            version, root, &wrapped, provider, created_at,
        ))
    }

    /// An active entry for `root`, already wrapped by `provider` as `wrapped`.
    pub fn from_wrapped(
        version: u32,
        root: &RootKey,
        wrapped: &[u8],
        provider: &dyn KeyProvider,
        created_at: String,
    ) -> RootEntry {
        RootEntry {
            version,
            state: RootState::Active,
            created_at,
            kek: KekRef {
                provider: provider.kind().as_str().to_string(),
                key_id: provider.key_id().to_string(),
            },
            wrapped: base64::engine::general_purpose::STANDARD.encode(wrapped),
            check: hex::encode(root.check_value()),
        }
    }

    /// Whether `provider` is the KEK this root is wrapped under.
    pub fn wrapped_by(&self, provider: &dyn KeyProvider) -> bool {
        self.kek.provider == provider.kind().as_str() && self.kek.key_id == provider.key_id()
    }

    fn wrapped_bytes(&self) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(self.wrapped.trim())
            .map_err(|e| format!("not standard base64: {e}"))
    }

    fn check_bytes(&self) -> Result<[u8; 16], String> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(self.check.trim(), &mut out)
            .map_err(|_| format!("must be 32 hex characters, got {:?}", self.check))?;
        Ok(out)
    }

    /// Unwraps this root with `provider` and verifies its check value. The error says why,
    /// without key material: another KEK, provider failure, or a check-value mismatch.
    pub async fn unwrap(&self, provider: &dyn KeyProvider) -> Result<RootKey, String> {
        if self.kek.provider != provider.kind().as_str() || self.kek.key_id != provider.key_id() {
            return Err(format!(
                "wrapped under {} {}, but the configured KEK is {} {}",
                self.kek.provider,
                self.kek.key_id,
                provider.kind(),
                provider.key_id()
            ));
        }
        let wrapped = self.wrapped_bytes().map_err(|m| format!("wrapped: {m}"))?;
        let check = self.check_bytes().map_err(|m| format!("check: {m}"))?;
        let root = provider
            .unwrap(&wrapped, WrapContext::Root(self.version))
            .await
            .map_err(|e| e.to_string())?;
        if !bool::from(root.check_value().ct_eq(&check)) {
            return Err("check: the unwrapped root does not match its check value \
                        (tampered or mixed-up keyring)"
                .to_string());
        }
        Ok(root)
    }
}

impl RelayKeyEntry {
    /// An active entry for the seed `seed`, already wrapped by `provider` as `wrapped`.
    pub fn from_wrapped(
        id: u8,
        seed: &RootKey,
        wrapped: &[u8],
        provider: &dyn KeyProvider,
        created_at: String,
    ) -> Result<RelayKeyEntry, String> {
        let key = ServerKey::from_seed(id, *seed.as_bytes()).map_err(|e| e.to_string())?;
        Ok(RelayKeyEntry {
            id,
            state: RootState::Active,
            created_at,
            kek: KekRef {
                provider: provider.kind().as_str().to_string(),
                key_id: provider.key_id().to_string(),
            },
            wrapped: base64::engine::general_purpose::STANDARD.encode(wrapped),
            config: key.config().to_b64(),
        })
    }

    /// Whether `provider` is the KEK this key is wrapped under.
    pub fn wrapped_by(&self, provider: &dyn KeyProvider) -> bool {
        self.kek.provider == provider.kind().as_str() && self.kek.key_id == provider.key_id()
    }

    fn wrapped_bytes(&self) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(self.wrapped.trim())
            .map_err(|e| format!("not standard base64: {e}"))
    }

    /// The stored key configuration (public), checked to carry this entry's id.
    pub fn key_config(&self) -> Result<KeyConfig, String> {
        let c = KeyConfig::from_b64(self.config.trim())
            .map_err(|e| format!("not a relay key configuration: {e}"))?;
        if c.key_id() != self.id {
            return Err(format!(
                "its key id is {}, but the entry's id is {}",
                c.key_id(),
                self.id
            ));
        }
        Ok(c)
    }

    /// Unwraps the seed with `provider` and checks that it makes the stored configuration.
    /// The error says why, without key material.
    pub async fn unwrap_seed(&self, provider: &dyn KeyProvider) -> Result<RootKey, String> {
        if !self.wrapped_by(provider) {
            return Err(format!(
                "wrapped under {} {}, but the configured KEK is {} {}",
                self.kek.provider,
                self.kek.key_id,
                provider.kind(),
                provider.key_id()
            ));
        }
        let wrapped = self.wrapped_bytes().map_err(|m| format!("wrapped: {m}"))?;
        let config = self.key_config().map_err(|m| format!("config: {m}"))?;
        let seed = provider
            .unwrap(&wrapped, WrapContext::RelayKey(self.id))
            .await
            .map_err(|e| e.to_string())?;
        let key = ServerKey::from_seed(self.id, *seed.as_bytes()).map_err(|e| e.to_string())?;
        if key.config() != &config {
            return Err(
                "config: the unwrapped seed does not make this key configuration \
                        (tampered or mixed-up keyring)"
                    .to_string(),
            );
        }
        Ok(seed)
    }

    /// Unwraps and checks the key (see [`RelayKeyEntry::unwrap_seed`]).
    pub async fn unwrap(&self, provider: &dyn KeyProvider) -> Result<ServerKey, String> {
        let seed = self.unwrap_seed(provider).await?;
        ServerKey::from_seed(self.id, *seed.as_bytes()).map_err(|e| e.to_string())
    }
}

/// The unwrapped active roots, by version, and the active relay server keys, by id. What
/// `serve` holds in memory.
pub struct Roots {
    roots: BTreeMap<u32, RootKey>,
    relay_keys: BTreeMap<u8, Arc<ServerKey>>,
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Roots")
            .field("versions", &self.roots.keys().collect::<Vec<_>>())
            .field("relay_keys", &self.relay_keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Roots {
    /// Unwraps every active root of `keyring` and verifies each check value; the first
    /// failure is an error naming the root. Fails if there is no active root.
    pub async fn unwrap_all(
        keyring: &Keyring,
        provider: &dyn KeyProvider,
        path: &Path,
    ) -> Result<Roots, KeyringError> {
        let mut roots = BTreeMap::new();
        for (index, r) in keyring.roots.iter().enumerate() {
            if r.state != RootState::Active {
                continue;
            }
            let root = r
                .unwrap(provider)
                .await
                .map_err(|message| KeyringError::Root {
                    path: path.display().to_string(),
                    index,
                    version: r.version,
                    message,
                })?;
            roots.insert(r.version, root);
        }
        if roots.is_empty() {
            return Err(KeyringError::Invalid {
                path: path.display().to_string(),
                message: "no active root".into(),
            });
        }
        let mut relay_keys = BTreeMap::new();
        for (index, k) in keyring.relay_keys.iter().enumerate() {
            if k.state != RootState::Active {
                continue;
            }
            let key = k
                .unwrap(provider)
                .await
                .map_err(|message| KeyringError::RelayKey {
                    path: path.display().to_string(),
                    index,
                    id: k.id,
                    message,
                })?;
            relay_keys.insert(k.id, Arc::new(key));
        }
        Ok(Roots { roots, relay_keys })
    }

    /// These roots without the versions not in `active` (a root destroyed or disabled in
    /// the keyring since they were unwrapped).
    pub fn retain(&self, active: &[u32]) -> Roots {
        Roots {
            roots: self
                .roots
                .iter()
                .filter(|(v, _)| active.contains(v))
                .map(|(v, r)| (*v, r.clone()))
                .collect(),
            relay_keys: self.relay_keys.clone(),
        }
    }

    /// Builds from already unwrapped roots, without relay keys (tests, tools).
    pub fn from_map(roots: BTreeMap<u32, RootKey>) -> Roots {
        Roots {
            roots,
            relay_keys: BTreeMap::new(),
        }
    }

    /// These roots with `keys` as the relay server keys (tests, tools).
    pub fn with_relay_keys(mut self, keys: Vec<ServerKey>) -> Roots {
        self.relay_keys = keys
            .into_iter()
            .map(|k| (k.config().key_id(), Arc::new(k)))
            .collect();
        self
    }

    /// The ids of the active relay server keys, ascending.
    pub fn relay_key_ids(&self) -> Vec<u8> {
        self.relay_keys.keys().copied().collect()
    }

    /// The relay server key with key id `id`, if it is active here.
    pub fn relay_key(&self, id: u8) -> Option<Arc<ServerKey>> {
        self.relay_keys.get(&id).cloned()
    }

    /// The current relay server key (the highest active id): what clients pin.
    pub fn current_relay_key(&self) -> Option<Arc<ServerKey>> {
        self.relay_keys.values().next_back().cloned()
    }

    /// The active relay server keys' configurations, the current one first.
    pub fn relay_key_configs(&self) -> Vec<KeyConfig> {
        self.relay_keys
            .values()
            .rev()
            .map(|k| k.config().clone())
            .collect()
    }

    /// The current root version: the highest active one.
    pub fn current(&self) -> u32 {
        self.roots.keys().next_back().copied().unwrap_or(0)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.roots.keys().copied().collect()
    }

    /// The root of `version`, if it is active here.
    pub fn root(&self, version: u32) -> Option<&RootKey> {
        self.roots.get(&version)
    }

    /// The data key named by `kid`, if its root version is active here.
    pub fn dek(&self, kid: &Kid) -> Option<Dek> {
        self.roots
            .get(&kid.root_version)
            .map(|r| r.derive_dek(kid.epoch))
    }

    /// The data key of `epoch` under the current root, with its kid.
    pub fn current_dek(&self, epoch: Epoch) -> Option<(Kid, Dek)> {
        let kid = Kid::new(self.current(), epoch);
        self.dek(&kid).map(|d| (kid, d))
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: a temp file in the same directory,
/// fsync, then rename (`overwrite`) or hard link (no clobber), then fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), KeyringError> {
    let p = path.display().to_string();
    let io = |what: &str, e: std::io::Error| KeyringError::Io {
        path: p.clone(),
        message: format!("{what}: {}", io_reason(&e)),
    };
    if !overwrite && path.symlink_metadata().is_ok() {
        return Err(KeyringError::Exists { path: p });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keyring".into());
    let suffix = crate::providers::random_bytes::<6>()
        .map(|b| hex::encode(b.as_ref()))
        .unwrap_or_else(|_| std::process::id().to_string());
    let tmp = dir.join(format!(".{name}.tmp-{suffix}"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("cannot create temp file", e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io("cannot write temp file", e))?;
        drop(f);
        if overwrite {
            std::fs::rename(&tmp, path).map_err(|e| io("cannot rename temp file", e))?;
        } else {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(KeyringError::Exists { path: p.clone() })
                }
                Err(e) => return Err(io("cannot link temp file into place", e)),
            }
            let _ = std::fs::remove_file(&tmp);
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (UTC).
pub fn rfc3339_utc(unix_secs: i64) -> String {
    // Year and month from the core's calendar (a one-month epoch is the calendar month).
    let month = Epoch::containing(
        unix_secs,
        veil_core::crypto::keys::RotationMonths::new(1).unwrap_or_default(),
    );
    let since = unix_secs - month.start_unix();
    let (day, rem) = (since / 86_400 + 1, since % 86_400);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        month.year(),
        month.month(),
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_388_400), "2026-11-22T23:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn doc(roots: &str) -> String {
        format!("{{\"format\":\"veil-keyring/1\",\"roots\":[{roots}]}}")
    }

    const R1: &str = r#"{"version":1,"state":"active","created_at":"2026-11-22T23:00:00Z",
        "kek":{"provider":"local","key_id":"local:00"},"wrapped":"AAAA","check":"00112233445566778899aabbccddeeff"}"#;

    #[test]
    fn parse_errors_name_the_field() {
        assert!(Keyring::parse(&doc(R1), "k.json").is_ok());
        let e = Keyring::parse(&doc(""), "k.json").unwrap_err().to_string();
        assert!(e.contains("roots: empty"), "{e}");
        let e = Keyring::parse(r#"{"format":"x","roots":[]}"#, "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("keyring k.json: format"), "{e}");
        let e = Keyring::parse(&doc(&format!("{R1},{R1}")), "k.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("roots[1] (r1): version: 1 already used by roots[0]"),
            "{e}"
        );
        let e = Keyring::parse(&doc(&R1.replace("AAAA", "A!")), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("roots[0] (r1): wrapped"), "{e}");
        let e = Keyring::parse(&doc(&R1.replace("eeff\"", "ee\"")), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("roots[0] (r1): check"), "{e}");
        let e = Keyring::parse(&doc(&R1.replace("active", "retired")), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant"), "{e}");
        let e = Keyring::parse(&doc(&R1.replace("\"version\"", "\"versoin\"")), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("versoin"), "{e}");
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A relay server key survives the file (written, loaded, unwrapped to the same key);
    /// a keyring written before relay keys existed loads with none and is written back
    /// without the member; a tampered or misplaced entry is refused, naming it.
    #[test]
    fn relay_keys_round_trip_and_validation() {
        use crate::providers::{generate_root, LocalProvider};
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::create(&dir.path().join("kek"), "VEIL_LOCAL_KEK_FILE").unwrap();
        let path = dir.path().join("k.json");

        // before relay keys: none, and none written back
        let old = Keyring::parse(&doc(R1), "k.json").unwrap();
        assert!(old.relay_keys.is_empty());
        assert_eq!(old.current_relay_key(), None);
        assert_eq!(old.next_relay_key_id(), Some(1));
        assert!(!old.to_json().contains("relay_keys"));

        let seed = generate_root().unwrap();
        let w = block_on(p.wrap(&seed, WrapContext::RelayKey(1))).unwrap();
        let e1 = RelayKeyEntry::from_wrapped(1, &seed, &w, &p, "t".into()).unwrap();
        let mut k = old.clone();
        k.relay_keys.push(e1.clone());
        k.write_new(&path).unwrap();
        let back = Keyring::load(&path).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.current_relay_key(), Some(1));
        let key = block_on(back.relay_keys[0].unwrap(&p)).unwrap();
        let expected = ServerKey::from_seed(1, *seed.as_bytes()).unwrap();
        assert_eq!(key.config(), expected.config());
        assert_eq!(back.relay_keys[0].key_config().unwrap(), *expected.config());

        // tombstones count: the next id is above every id ever issued; 255 is the last
        let mut t = k.clone();
        t.relay_keys.push(RelayKeyEntry {
            id: 7,
            state: RootState::Destroyed,
            wrapped: String::new(),
            ..e1.clone()
        });
        assert_eq!(t.current_relay_key(), Some(1));
        assert_eq!(t.next_relay_key_id(), Some(8));
        t.relay_keys[1].id = 255;
        assert_eq!(t.next_relay_key_id(), None);

        let text = k.to_json();
        // the seed of k1 wrapped as a root (or under another id) does not unwrap
        let moved = text.replacen("\"id\": 1", "\"id\": 2", 1);
        let e = Keyring::parse(&moved, "k.json").unwrap_err().to_string();
        assert!(
            e.contains("relay_keys[0] (k2): config: its key id is 1"),
            "{e}"
        );
        let mut swapped = k.clone();
        let real_root = block_on(p.wrap(&seed, WrapContext::Root(1))).unwrap();
        swapped.relay_keys[0].wrapped = base64::engine::general_purpose::STANDARD.encode(real_root);
        let e = block_on(swapped.relay_keys[0].unwrap(&p)).unwrap_err();
        assert!(e.contains("does not authenticate"), "{e}");
        // another key's configuration: the check fails
        let other = ServerKey::from_seed(1, [9; 32]).unwrap();
        let mut mixed = k.clone();
        mixed.relay_keys[0].config = other.config().to_b64();
        let e = block_on(mixed.relay_keys[0].unwrap(&p)).unwrap_err();
        assert!(e.contains("does not make this key configuration"), "{e}");
        // duplicate ids, id 0, a destroyed key that kept its seed
        let mut dup = k.clone();
        dup.relay_keys.push(e1.clone());
        let e = Keyring::parse(&dup.to_json(), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("relay_keys[1] (k1): id: 1 already used"), "{e}");
        let mut zero = k.clone();
        zero.relay_keys[0].id = 0;
        let e = Keyring::parse(&zero.to_json(), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(k0): id: must be 1 to 255"), "{e}");
        let mut kept = k.clone();
        kept.relay_keys[0].state = RootState::Destroyed;
        let e = Keyring::parse(&kept.to_json(), "k.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keeps no wrapped seed"), "{e}");
    }

    #[test]
    fn write_new_never_clobbers_and_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let k = Keyring::parse(&doc(R1), "k.json").unwrap();
        k.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keyring::load(&path).unwrap(), k);
        assert!(matches!(
            k.write_new(&path).unwrap_err(),
            KeyringError::Exists { .. }
        ));
        k.replace(&path).unwrap();
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(matches!(
            Keyring::load(&dir.path().join("nope.json")).unwrap_err(),
            KeyringError::Missing { .. }
        ));
    }
}
