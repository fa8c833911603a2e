//! The `local` provider, for development only: the KEK is a 64-hex-character file (mode 0600)
//! on this machine. Its one setting is `VEIL_LOCAL_KEK_FILE` (or `--local-kek-file`).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use aes_gcm::Aes256Gcm;
use sha2::{Digest, Sha256};
use veil_core::crypto::keys::RootKey;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{
    random_bytes, BoxFuture, KeyProvider, ProviderError, ProviderKind, ProviderSettings,
    WrapContext,
};
use crate::config::{io_reason, lookup, path_flag, ConfigError, Flags, Vars};

pub const ENV_LOCAL_KEK_FILE: &str = "VEIL_LOCAL_KEK_FILE";
pub const DEFAULT_LOCAL_KEK_FILE: &str = "veil-local-kek.key";

/// The local provider's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// `VEIL_LOCAL_KEK_FILE` or `--local-kek-file`, default `veil-local-kek.key`.
    pub kek_file: PathBuf,
    /// `VEIL_LOCAL_KEK_FILE` or `--local-kek-file`, for errors.
    pub kek_file_from: String,
}

impl ProviderSettings for LocalConfig {
    const VARIABLES: &'static [&'static str] = &[ENV_LOCAL_KEK_FILE];
    const SELECTED_BY: &'static [&'static str] = &[ENV_LOCAL_KEK_FILE];

    fn from_vars(vars: &dyn Vars, flags: &Flags) -> Result<Self, ConfigError> {
        let kek_flag = path_flag(&flags.local_kek_file);
        Ok(
            match lookup(
                vars,
                kek_flag.as_deref().map(|v| ("--local-kek-file", v)),
                ENV_LOCAL_KEK_FILE,
            )? {
                Some(s) => LocalConfig {
                    kek_file: PathBuf::from(s.value),
                    kek_file_from: s.from,
                },
                None => LocalConfig {
                    kek_file: PathBuf::from(DEFAULT_LOCAL_KEK_FILE),
                    kek_file_from: ENV_LOCAL_KEK_FILE.to_string(),
                },
            },
        )
    }

    fn open(&self) -> BoxFuture<'_, Result<Box<dyn KeyProvider>, ProviderError>> {
        Box::pin(async move {
            let p: Box<dyn KeyProvider> =
                Box::new(LocalProvider::open(&self.kek_file, &self.kek_file_from)?);
            Ok(p)
        })
    }
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The 32-byte KEK of the local provider.
#[derive(Zeroize, ZeroizeOnDrop)]
struct LocalKek([u8; 32]);

/// Development-only provider: the KEK is a 64-hex-character file (mode 0600) on this machine.
/// Wrapped root = nonce (12) || AES-256-GCM ciphertext (32) || tag (16), AAD from the context.
pub struct LocalProvider {
    kek: LocalKek,
    key_id: String,
    path: PathBuf,
}

impl fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalProvider")
            .field("key_id", &self.key_id)
            .field("path", &self.path)
            .field("kek", &"<redacted>")
            .finish()
    }
}

/// The loud warning every command prints or logs when the local provider is in use.
pub const LOCAL_WARNING: &str = "KMS_PROVIDER=local: the key-encryption key is a plain file on \
    this machine. This is for DEVELOPMENT ONLY; do not protect production data with it \
    (use aws-kms, aws-cloudhsm or azure-keyvault)";

impl LocalProvider {
    /// Loads the KEK from `path`; `from` names the setting (for errors).
    pub fn open(path: &Path, from: &str) -> Result<LocalProvider, ProviderError> {
        let what = format!("{from} {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| {
            ProviderError::Config(format!(
                "{what}: {}{}",
                io_reason(&e),
                if e.kind() == std::io::ErrorKind::NotFound {
                    " (run `veil-keyservice keyring init` to create it with a new keyring)"
                } else {
                    ""
                }
            ))
        })?;
        if !meta.is_file() {
            return Err(ProviderError::Config(format!("{what}: not a regular file")));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ProviderError::Config(format!(
                "{what}: permissions {mode:04o} are too open; the KEK file must be readable by \
                 its owner only (chmod 600)"
            )));
        }
        let raw = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| ProviderError::Config(format!("{what}: {}", io_reason(&e))))?,
        );
        let kek = parse_kek_hex(&raw).map_err(|m| ProviderError::Config(format!("{what}: {m}")))?;
        Ok(LocalProvider::from_kek(kek, path.to_path_buf()))
    }

    /// Creates a new random KEK file at `path` (mode 0600, never overwriting) and opens it.
    pub fn create(path: &Path, from: &str) -> Result<LocalProvider, ProviderError> {
        let what = format!("{from} {}", path.display());
        let kek = random_bytes::<32>()?;
        let mut text = Zeroizing::new(hex::encode(kek.as_ref()));
        text.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                ProviderError::Config(format!("{what}: cannot create: {}", io_reason(&e)))
            })?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ProviderError::Config(format!("{what}: cannot write: {e}")))?;
        Ok(LocalProvider::from_kek(LocalKek(*kek), path.to_path_buf()))
    }

    fn from_kek(kek: LocalKek, path: PathBuf) -> LocalProvider {
        let digest = Sha256::digest(kek.0);
        let key_id = format!("local:{}", hex::encode(&digest[..8]));
        LocalProvider { kek, key_id, path }
    }

    fn cipher(&self) -> Aes256Gcm {
        // A 32-byte key always fits AES-256.
        Aes256Gcm::new(&self.kek.0.into())
    }
}

/// 64 hex characters (surrounding whitespace allowed) → 32 bytes. Errors never echo the input.
fn parse_kek_hex(raw: &[u8]) -> Result<LocalKek, String> {
    let text =
        std::str::from_utf8(raw).map_err(|_| "not a hex key file (not UTF-8)".to_string())?;
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must contain exactly 64 hex characters (a 32-byte key), found {} characters",
            text.chars().count()
        ));
    }
    let mut out = LocalKek([0u8; 32]);
    hex::decode_to_slice(text, &mut out.0).map_err(|_| "invalid hex".to_string())?;
    Ok(out)
}

impl KeyProvider for LocalProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn description(&self) -> String {
        format!(
            "local key file {} (key id {}; development only)",
            self.path.display(),
            self.key_id
        )
    }

    fn wrap<'a>(
        &'a self,
        root: &'a RootKey,
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<Vec<u8>, ProviderError>> {
        Box::pin(async move {
            let nonce = random_bytes::<NONCE_LEN>()?;
            let aad = ctx.aad();
            let ct = self
                .cipher()
                .encrypt(
                    &Nonce::<Aes256Gcm>::from(*nonce),
                    Payload {
                        msg: root.as_bytes(),
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| ProviderError::Unavailable("AES-GCM encryption failed".into()))?;
            let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
            out.extend_from_slice(nonce.as_ref());
            out.extend_from_slice(&ct);
            Ok(out)
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        ctx: WrapContext,
    ) -> BoxFuture<'a, Result<RootKey, ProviderError>> {
        Box::pin(async move {
            let expected = NONCE_LEN + 32 + TAG_LEN;
            if wrapped.len() != expected {
                return Err(ProviderError::Malformed(format!(
                    "a locally wrapped root is {expected} bytes, got {}",
                    wrapped.len()
                )));
            }
            let (nonce, ct) = wrapped.split_at(NONCE_LEN);
            let nonce: [u8; NONCE_LEN] = nonce
                .try_into()
                .map_err(|_| ProviderError::Malformed("bad nonce".into()))?;
            let aad = ctx.aad();
            let pt = Zeroizing::new(
                self.cipher()
                    .decrypt(
                        &Nonce::<Aes256Gcm>::from(nonce),
                        Payload {
                            msg: ct,
                            aad: aad.as_bytes(),
                        },
                    )
                    .map_err(|_| ProviderError::Integrity {
                        key_id: self.key_id.clone(),
                    })?,
            );
            RootKey::from_slice(&pt).map_err(|e| ProviderError::Malformed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::generate_root;
    use std::future::Future;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn local_roundtrip_binds_version_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let p = LocalProvider::create(&path, "VEIL_LOCAL_KEK_FILE").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(p.key_id().starts_with("local:") && p.key_id().len() == 6 + 16);
        assert!(!format!("{p:?}").contains(&hex::encode(p.kek.0)));

        let root = generate_root().unwrap();
        let ctx = WrapContext::Root(1);
        let w = block_on(p.wrap(&root, ctx)).unwrap();
        assert_eq!(w.len(), 60);
        let back = block_on(p.unwrap(&w, ctx)).unwrap();
        assert_eq!(back.as_bytes(), root.as_bytes());

        // Reopened from the file: same key id, same result.
        let p2 = LocalProvider::open(&path, "VEIL_LOCAL_KEK_FILE").unwrap();
        assert_eq!(p2.key_id(), p.key_id());
        assert!(block_on(p2.unwrap(&w, ctx)).is_ok());

        // Another version's context does not authenticate.
        let e = block_on(p.unwrap(&w, WrapContext::Root(2))).unwrap_err();
        assert!(matches!(e, ProviderError::Integrity { .. }));
        // A root never unwraps as a relay key seed, nor a relay key seed as a root.
        let e = block_on(p.unwrap(&w, WrapContext::RelayKey(1))).unwrap_err();
        assert!(matches!(e, ProviderError::Integrity { .. }));
        let rk = block_on(p.wrap(&root, WrapContext::RelayKey(1))).unwrap();
        assert!(block_on(p.unwrap(&rk, WrapContext::RelayKey(1))).is_ok());
        assert!(matches!(
            block_on(p.unwrap(&rk, WrapContext::Root(1))).unwrap_err(),
            ProviderError::Integrity { .. }
        ));
        let mut t = w.clone();
        t[20] ^= 1;
        assert!(matches!(
            block_on(p.unwrap(&t, ctx)).unwrap_err(),
            ProviderError::Integrity { .. }
        ));
        assert!(matches!(
            block_on(p.unwrap(&w[..59], ctx)).unwrap_err(),
            ProviderError::Malformed(_)
        ));
        // Never overwrites.
        assert!(LocalProvider::create(&path, "VEIL_LOCAL_KEK_FILE").is_err());
    }

    #[test]
    fn local_kek_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let e = LocalProvider::open(&path, "VEIL_LOCAL_KEK_FILE").unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");

        let secret = "ab".repeat(31);
        std::fs::write(&path, &secret).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = LocalProvider::open(&path, "VEIL_LOCAL_KEK_FILE").unwrap_err();
        assert!(e.to_string().contains("64 hex characters"), "{e}");
        assert!(!e.to_string().contains(&secret));

        std::fs::write(&path, "cd".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = LocalProvider::open(&path, "VEIL_LOCAL_KEK_FILE").unwrap_err();
        assert!(e.to_string().contains("0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(LocalProvider::open(&path, "VEIL_LOCAL_KEK_FILE").is_ok());
    }
}
