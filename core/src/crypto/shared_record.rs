//! Records in Envoy shared data, sealed and authenticated.
//!
//! Envoy's shared data is one key-value store per VM id, and Istio sets no VM id: every
//! WasmPlugin on the proxy can read and write every record. So the filter's records (data
//! keys, relay keys) are sealed under a key only Veil's VMs hold, derived from the
//! keyservice token, with the record's name as associated data (a record copied to another
//! name does not open). A record that does not open is ignored (and counted by the caller).
//!
//! ```text
//! K      = HKDF-SHA256(salt = "veil/v2/shared-data", ikm = token, info = "record key", 32)
//! record = 0x02 || N (24 random bytes) || XAES-256-GCM(K, N, AD = "veil/v2/shared-data:" || name, plaintext)
//! ```
//!
//! XAES-256-GCM with random 192-bit nonces: records are rewritten at most a few times a
//! second per worker, so collisions are out of reach (q² / 2^193).

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use xaes_256_gcm::Xaes256Gcm;
use zeroize::Zeroizing;

use crate::crypto::cipher::CipherError;

/// The first byte of a sealed record: its format.
pub const RECORD_VERSION: u8 = 0x02;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AD_PREFIX: &[u8] = b"veil/v2/shared-data:";

/// The key that seals this filter's shared-data records. `Debug` shows nothing.
pub struct RecordKey(Xaes256Gcm);

impl core::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RecordKey(<redacted>)")
    }
}

impl RecordKey {
    /// Derives the record key from the keyservice token (the secret every Veil VM of the
    /// deployment holds and no other plugin does).
    pub fn from_token(token: &[u8]) -> RecordKey {
        let hk = Hkdf::<Sha256>::new(Some(b"veil/v2/shared-data"), token);
        let mut k = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF's limit: cannot fail.
        let _ = hk.expand(b"record key", &mut k[..]);
        RecordKey(Xaes256Gcm::new(&(*k).into()))
    }

    fn ad(name: &str) -> Vec<u8> {
        let mut ad = AD_PREFIX.to_vec();
        ad.extend_from_slice(name.as_bytes());
        ad
    }

    /// Seals `plaintext` as the record `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::crypto::nonce::fill(&mut nonce)?;
        self.seal_with_nonce(name, plaintext, nonce)
    }

    fn seal_with_nonce(
        &self,
        name: &str,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CipherError> {
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let n = xaes_256_gcm::Nonce::from(nonce);
        let tag = match out.get_mut(start..) {
            Some(buf) => self
                .0
                .encrypt_inout_detached(&n, &Self::ad(name), InOutBuf::from(buf))
                .map_err(|_| CipherError::TooLarge)?,
            None => return Err(CipherError::TooLarge),
        };
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens the record `name`. Anything else than a record this key sealed under this name
    /// (another plugin's bytes, a plaintext record of an older filter, a record moved from
    /// another name, a truncated or altered one) is an error.
    pub fn open(&self, name: &str, record: &[u8]) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let (&version, rest) = record.split_first().ok_or(CipherError::Malformed)?;
        if version != RECORD_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CipherError::Malformed);
        }
        let (nonce, rest) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CipherError::Malformed)?;
        let (ct, tag) = rest
            .split_at_checked(rest.len().saturating_sub(TAG_LEN))
            .ok_or(CipherError::Malformed)?;
        let nonce = xaes_256_gcm::Nonce::try_from(nonce).map_err(|_| CipherError::Malformed)?;
        let tag = aes_gcm::Tag::try_from(tag).map_err(|_| CipherError::Malformed)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        self.0
            .decrypt_inout_detached(&nonce, &Self::ad(name), InOutBuf::from(&mut buf[..]), &tag)
            .map_err(|_| CipherError::Authentication)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #18: records in shared data were plaintext and trusted as read, so any plugin
    /// on the proxy could read every key or publish its own. Sealed records open only under
    /// the token's key and their own name.
    #[test]
    fn records_open_only_with_the_token_key_and_their_name() {
        let k = RecordKey::from_token(b"the keyservice token");
        let r = k
            .seal("veil.keys.current.v1", b"{\"kid\":\"r1.2026-01\"}")
            .unwrap();
        assert_eq!(r.first(), Some(&RECORD_VERSION));
        assert!(!r.windows(4).any(|w| w == b"kid\""), "sealed, not readable");
        assert_eq!(
            &k.open("veil.keys.current.v1", &r).unwrap()[..],
            b"{\"kid\":\"r1.2026-01\"}"
        );
        // Another name, another token, any change, a plaintext record: not opened.
        assert_eq!(
            k.open("veil.keys.ondemand.v1", &r).unwrap_err(),
            CipherError::Authentication
        );
        let other = RecordKey::from_token(b"another token");
        assert_eq!(
            other.open("veil.keys.current.v1", &r).unwrap_err(),
            CipherError::Authentication
        );
        for i in 1..r.len() {
            let mut t = r.clone();
            t[i] ^= 1;
            assert!(k.open("veil.keys.current.v1", &t).is_err(), "byte {i}");
        }
        assert!(k.open("veil.keys.current.v1", &r[..r.len() - 1]).is_err());
        assert!(k
            .open("veil.keys.current.v1", b"{\"kid\":\"r1.2026-01\"}")
            .is_err());
        assert!(k.open("veil.keys.current.v1", b"").is_err());
        // Two seals of one record differ (random nonces).
        assert_ne!(
            r,
            k.seal("veil.keys.current.v1", b"{\"kid\":\"r1.2026-01\"}")
                .unwrap()
        );
        assert!(!format!("{k:?}").contains("token"));
    }
}
