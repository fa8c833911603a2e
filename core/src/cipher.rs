//! Sealing and opening single JSON values: the cryptography of the `veil:v1` format.
//!
//! # Construction (format `v1`; changing anything here needs a new format version)
//!
//! For one key id `kid` with 32-byte data key `DEK` (see [`crate::keys`]):
//!
//! ```text
//! K_siv = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v1/siv", L = 64)   // AES-SIV-CMAC-512 key
//! K_gcm = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v1/gcm", L = 32)   // AES-256-GCM key
//! ```
//!
//! (HKDF-Expand only, RFC 5869 §2.3: the DEK is already a uniformly random HKDF output, so it
//! is used directly as the PRK, `Hkdf::from_prk`.)
//!
//! ```text
//! PT     = type || value           type: b's' string, b'n' number, b'b' bool (one byte)
//! header = "veil:v1:" || kid || ":" || m                      (ASCII, m = 'd' or 'r')
//! AD     = header                                             (one AD component for SIV)
//!
//! m = 'd': (V, C)    = AES-SIV(K_siv, [AD], PT)               RFC 5297, S2V with CMAC-AES-256
//!          payload   = base64url-no-pad(V (16 bytes) || C)
//! m = 'r': N         = 12 random bytes (crate::nonce: ChaCha20 seeded from getrandom)
//!          (C, T)    = AES-256-GCM(K_gcm, N, AD, PT)          NIST SP 800-38D, 128-bit tag
//!          payload   = base64url-no-pad(N || C || T)
//!
//! sealed = header || ":" || payload
//! ```
//!
//! `value` is, for strings, the UTF-8 bytes of the decoded JSON string; for numbers, the
//! exact JSON number text (`1.50` stays `1.50`); for booleans `true`/`false`. The type byte
//! is authenticated because it is part of the plaintext; kid and mode are authenticated as
//! associated data. Deterministic mode: equal (kid, type, value) ⇒ identical sealed value.
//!
//! # Cost
//!
//! [`SealingKey::new`] derives both subkeys and builds the keyed ciphers once (AES-256-GCM:
//! AES key schedule + GHASH key; AES-SIV: CMAC key schedule + subkeys). Sealing does no heap
//! allocation other than growing `out`: the plaintext is copied into `out`, encrypted there in
//! place, base64-encoded behind it and moved down. Deterministic mode uses [`crate::siv::PreparedSiv`]: RFC 5297
//! with the S2V prefix of the fixed AD computed once per kid.

use core::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{Dek, Kid};
use crate::siv::PreparedSiv;
use crate::value::{Mode, SealedValue, GCM_NONCE_LEN, GCM_TAG_LEN, PREFIX, SIV_TAG_LEN, TYPE_LEN};

/// HKDF info for the 64-byte AES-SIV (CMAC-AES-256 + CTR-AES-256) key.
pub const SIV_KEY_INFO: &[u8] = b"veil/v1/siv";
/// HKDF info for the 32-byte AES-256-GCM key.
pub const GCM_KEY_INFO: &[u8] = b"veil/v1/gcm";

/// The JSON type of a sealed value; the first plaintext byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueType {
    String = b's',
    Number = b'n',
    Bool = b'b',
}

impl ValueType {
    pub fn from_byte(b: u8) -> Option<ValueType> {
        match b {
            b's' => Some(ValueType::String),
            b'n' => Some(ValueType::Number),
            b'b' => Some(ValueType::Bool),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        self as u8
    }
}

/// Why sealing or opening failed. Never carries key or plaintext material.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CipherError {
    /// The system random generator failed (randomized mode needs a fresh nonce).
    #[error("the system random number generator failed")]
    Random,
    /// Wrong key, or the value (payload, kid or mode) was altered.
    #[error("authentication failed: wrong key or altered value")]
    Authentication,
    /// Not decodable: bad base64, too short, or an unknown type byte inside.
    #[error("malformed sealed value")]
    Malformed,
    /// The value names another key id than this key's.
    #[error("the value was sealed under another key id")]
    KidMismatch,
    /// The value is too large for the cipher (AES-GCM: 2^36 − 32 bytes) or for memory.
    #[error("value too large to seal")]
    TooLarge,
    /// This key id cannot be written in the v1 format (e.g. a year outside 0000–9999), so
    /// nothing sealed with it could be parsed back; the key refuses to seal.
    #[error("key id cannot be written in the v1 value format")]
    UnencodableKid,
    /// Subkey derivation failed. Cannot happen with a 32-byte DEK; reported, never panics.
    #[error("subkey derivation failed")]
    KeySetup,
}

/// A decrypted value. The bytes are zeroized on drop.
pub struct Opened {
    pub ty: ValueType,
    pub value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("ty", &self.ty)
            .field("len", &self.value.len())
            .finish_non_exhaustive()
    }
}

/// The keyed ciphers of one kid.
struct Ciphers {
    /// AES-SIV with the deterministic header as its one AD, prepared once (crate::siv).
    siv: PreparedSiv,
    gcm: Aes256Gcm,
}

impl Ciphers {
    fn new(dek: &Dek, ad_d: &[u8]) -> Result<Ciphers, CipherError> {
        let hk = Hkdf::<Sha256>::from_prk(dek.as_bytes()).map_err(|_| CipherError::KeySetup)?;
        let mut siv_key = Zeroizing::new([0u8; 64]);
        hk.expand(SIV_KEY_INFO, &mut siv_key[..])
            .map_err(|_| CipherError::KeySetup)?;
        let mut gcm_key = Zeroizing::new([0u8; 32]);
        hk.expand(GCM_KEY_INFO, &mut gcm_key[..])
            .map_err(|_| CipherError::KeySetup)?;
        let siv = PreparedSiv::new(&siv_key, ad_d);
        let gcm = Aes256Gcm::new(&(*gcm_key).into());
        Ok(Ciphers { siv, gcm })
    }
}

/// Cipher state for one kid, built once (key schedules computed once) and reused for every
/// value. `Send + Sync`. Its `Debug` shows the kid only.
pub struct SealingKey {
    kid: Kid,
    /// `veil:v1:<kid>:d`, the header and associated data of deterministic values.
    ad_d: Box<[u8]>,
    /// `veil:v1:<kid>:r`.
    ad_r: Box<[u8]>,
    ciphers: Result<Ciphers, CipherError>,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// Derives the subkeys of `dek` (see the module docs) and prepares both ciphers.
    ///
    /// Infallible by signature; a kid that cannot be written in the v1 format (so that
    /// [`SealedValue::parse`] would reject the output) gives a key whose every operation
    /// returns [`CipherError::UnencodableKid`].
    pub fn new(kid: Kid, dek: &Dek) -> SealingKey {
        let kid_text = kid.to_string();
        let canonical = kid_text.parse::<Kid>().map(|k| k == kid).unwrap_or(false);
        let ad = |m: char| {
            format!("{PREFIX}{kid_text}:{m}")
                .into_bytes()
                .into_boxed_slice()
        };
        let ad_d = ad(Mode::Deterministic.as_char());
        let ciphers = if canonical {
            Ciphers::new(dek, &ad_d)
        } else {
            Err(CipherError::UnencodableKid)
        };
        SealingKey {
            kid,
            ad_d,
            ad_r: ad(Mode::Randomized.as_char()),
            ciphers,
        }
    }

    pub fn kid(&self) -> Kid {
        self.kid
    }

    fn ad(&self, mode: Mode) -> &[u8] {
        match mode {
            Mode::Deterministic => &self.ad_d,
            Mode::Randomized => &self.ad_r,
        }
    }

    fn ciphers(&self) -> Result<&Ciphers, CipherError> {
        self.ciphers.as_ref().map_err(|e| *e)
    }

    /// Appends `veil:v1:<kid>:<m>:<payload>` (no JSON quotes) to `out`.
    ///
    /// `value` is: for [`ValueType::String`] the UTF-8 bytes of the decoded string; for
    /// [`ValueType::Number`] the exact JSON number text; for [`ValueType::Bool`]
    /// `true`/`false`. Randomized mode draws the nonce from [`crate::nonce`] (a per-thread
    /// CSPRNG seeded from the system RNG).
    /// On error `out` is left as it was.
    pub fn seal_into(
        &self,
        mode: Mode,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        match mode {
            Mode::Deterministic => self.seal_siv(ty, value, out),
            Mode::Randomized => self.seal_gcm(ty, value, crate::nonce::fresh()?, out),
        }
    }

    /// Same as [`SealingKey::seal_into`] in randomized mode, with a caller-chosen nonce.
    /// For known-answer tests and interop vectors only: reusing a nonce under one key breaks
    /// AES-GCM.
    pub fn seal_randomized_with_nonce(
        &self,
        ty: ValueType,
        value: &[u8],
        nonce: [u8; 12],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        self.seal_gcm(ty, value, nonce, out)
    }

    fn seal_siv(&self, ty: ValueType, value: &[u8], out: &mut Vec<u8>) -> Result<(), CipherError> {
        let ciphers = self.ciphers()?;
        // raw = V (16) || type || value; encrypted in place, V written last.
        let raw_len = value
            .len()
            .checked_add(SIV_TAG_LEN + TYPE_LEN)
            .ok_or(CipherError::TooLarge)?;
        self.seal_with(
            Mode::Deterministic,
            raw_len,
            out,
            |raw| {
                raw.extend_from_slice(&[0u8; SIV_TAG_LEN]);
                raw.push(ty.as_byte());
                raw.extend_from_slice(value);
            },
            |_ad, raw| {
                // The AD (the `d` header) is built into the prepared SIV state.
                let (tag, pt) = raw
                    .split_at_mut_checked(SIV_TAG_LEN)
                    .ok_or(CipherError::TooLarge)?;
                tag.copy_from_slice(&ciphers.siv.encrypt(pt));
                Ok(())
            },
        )
    }

    fn seal_gcm(
        &self,
        ty: ValueType,
        value: &[u8],
        nonce: [u8; GCM_NONCE_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let ciphers = self.ciphers()?;
        // raw = N (12) || type || value || T (16); encrypted in place, T written last.
        let raw_len = value
            .len()
            .checked_add(GCM_NONCE_LEN + TYPE_LEN + GCM_TAG_LEN)
            .ok_or(CipherError::TooLarge)?;
        self.seal_with(
            Mode::Randomized,
            raw_len,
            out,
            |raw| {
                raw.extend_from_slice(&nonce);
                raw.push(ty.as_byte());
                raw.extend_from_slice(value);
                raw.extend_from_slice(&[0u8; GCM_TAG_LEN]);
            },
            |ad, raw| {
                let pt_end = raw.len().saturating_sub(GCM_TAG_LEN);
                let (body, tag) = raw
                    .split_at_mut_checked(pt_end)
                    .ok_or(CipherError::TooLarge)?;
                let pt = body.get_mut(GCM_NONCE_LEN..).ok_or(CipherError::TooLarge)?;
                let n = aes_gcm::Nonce::<U12>::from(nonce);
                let t = ciphers
                    .gcm
                    .encrypt_inout_detached(&n, ad, InOutBuf::from(pt))
                    .map_err(|_| CipherError::TooLarge)?;
                tag.copy_from_slice(&t);
                Ok(())
            },
        )
    }

    /// Writes header and `:` to `out`, lets `fill` append exactly `raw_len` raw bytes, lets
    /// `encrypt` transform them in place (given the header as AD), then replaces them by their
    /// base64url encoding. On error, `out` is zeroized back to its original length.
    fn seal_with(
        &self,
        mode: Mode,
        raw_len: usize,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
        encrypt: impl FnOnce(&[u8], &mut [u8]) -> Result<(), CipherError>,
    ) -> Result<(), CipherError> {
        let ad = self.ad(mode);
        let enc_len = base64::encoded_len(raw_len, false).ok_or(CipherError::TooLarge)?;
        let start = out.len();
        // Room for header, ':', the raw bytes and (behind them) their encoding.
        let need = ad
            .len()
            .checked_add(1)
            .and_then(|n| n.checked_add(raw_len))
            .and_then(|n| n.checked_add(enc_len))
            .ok_or(CipherError::TooLarge)?;
        out.try_reserve(need).map_err(|_| CipherError::TooLarge)?;
        out.extend_from_slice(ad);
        out.push(b':');
        let raw_start = out.len();
        fill(out);
        let result = match out.split_at_mut_checked(raw_start) {
            Some((_, raw)) if raw.len() == raw_len => encrypt(ad, raw),
            _ => Err(CipherError::TooLarge),
        };
        if let Err(e) = result {
            // The raw region may hold plaintext: wipe it before giving the bytes back.
            if let Some(tail) = out.get_mut(start..) {
                tail.zeroize();
            }
            out.truncate(start);
            return Err(e);
        }
        // Encode behind the raw bytes (capacity is reserved: no reallocation), move down.
        let enc_start = raw_start + raw_len;
        out.resize(enc_start + enc_len, 0);
        let written = match out
            .get_mut(raw_start..)
            .and_then(|s| s.split_at_mut_checked(raw_len))
        {
            Some((raw, enc)) => URL_SAFE_NO_PAD.encode_slice(&*raw, enc).ok(),
            None => None,
        };
        if written != Some(enc_len) {
            out.truncate(start);
            return Err(CipherError::TooLarge);
        }
        out.copy_within(enc_start.., raw_start);
        out.truncate(raw_start + enc_len);
        Ok(())
    }

    /// Checks the kid, decodes the payload, verifies and decrypts it. Every failure is an
    /// error value: [`CipherError::KidMismatch`], [`CipherError::Malformed`] or
    /// [`CipherError::Authentication`].
    pub fn open(&self, v: &SealedValue<'_>) -> Result<Opened, CipherError> {
        if v.kid != self.kid {
            return Err(CipherError::KidMismatch);
        }
        let ciphers = self.ciphers()?;
        let ad = self.ad(v.mode);
        let payload = v.payload.as_bytes();
        let mut buf = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(payload.len())]);
        let n = URL_SAFE_NO_PAD
            .decode_slice(payload, &mut buf[..])
            .map_err(|_| CipherError::Malformed)?;
        buf.truncate(n);
        if n < v.mode.min_payload_bytes() {
            return Err(CipherError::Malformed);
        }
        // After decryption the plaintext (type || value) is at buf[pt_start..pt_end].
        let (pt_start, pt_end) = match v.mode {
            Mode::Deterministic => {
                let (tag, ct) = buf
                    .split_at_mut_checked(SIV_TAG_LEN)
                    .ok_or(CipherError::Malformed)?;
                let tag: [u8; SIV_TAG_LEN] =
                    (&*tag).try_into().map_err(|_| CipherError::Malformed)?;
                ciphers
                    .siv
                    .decrypt(&tag, ct)
                    .map_err(|_| CipherError::Authentication)?;
                (SIV_TAG_LEN, n)
            }
            Mode::Randomized => {
                let (nonce, rest) = buf
                    .split_at_mut_checked(GCM_NONCE_LEN)
                    .ok_or(CipherError::Malformed)?;
                let ct_len = rest
                    .len()
                    .checked_sub(GCM_TAG_LEN)
                    .ok_or(CipherError::Malformed)?;
                let (ct, tag) = rest
                    .split_at_mut_checked(ct_len)
                    .ok_or(CipherError::Malformed)?;
                let nonce =
                    aes_gcm::Nonce::<U12>::try_from(&*nonce).map_err(|_| CipherError::Malformed)?;
                let tag = aes_gcm::Tag::try_from(&*tag).map_err(|_| CipherError::Malformed)?;
                ciphers
                    .gcm
                    .decrypt_inout_detached(&nonce, ad, InOutBuf::from(ct), &tag)
                    .map_err(|_| CipherError::Authentication)?;
                (GCM_NONCE_LEN, GCM_NONCE_LEN + ct_len)
            }
        };
        let ty = buf
            .get(pt_start)
            .copied()
            .and_then(ValueType::from_byte)
            .ok_or(CipherError::Malformed)?;
        let value_start = pt_start + TYPE_LEN;
        if value_start > pt_end {
            return Err(CipherError::Malformed);
        }
        buf.copy_within(value_start..pt_end, 0);
        buf.truncate(pt_end - value_start);
        Ok(Opened { ty, value: buf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sealing_key_is_send_sync_and_debug_hides_keys() {
        assert_send_sync::<SealingKey>();
        let kid: Kid = "r1.2026-01".parse().unwrap();
        let key = SealingKey::new(kid, &Dek::from_bytes([0xab; 32]));
        let dbg = format!("{key:?}");
        assert!(dbg.contains("SealingKey"), "{dbg}");
        assert!(!dbg.to_lowercase().contains("ab, ab"), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
    }

    #[test]
    fn unencodable_kid_refuses() {
        let kid = Kid::new(
            1,
            crate::keys::Epoch::containing(400_000_000_000, Default::default()),
        );
        assert!(kid.epoch.year() > 9999);
        let key = SealingKey::new(kid, &Dek::from_bytes([7; 32]));
        let mut out = b"keep".to_vec();
        assert_eq!(
            key.seal_into(Mode::Randomized, ValueType::Bool, b"true", &mut out),
            Err(CipherError::UnencodableKid)
        );
        assert_eq!(out, b"keep");
    }
}
