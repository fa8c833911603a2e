//! Sealing and opening single JSON values: the cryptography of the `veil:v2` format (written)
//! and of `veil:v1` (still opened: data already at the vendor).
//!
//! # Format v2 (changing anything here needs a new format version)
//!
//! For one key id `kid` with 32-byte data key `DEK` (see [`crate::crypto::keys`]):
//!
//! ```text
//! K_siv  = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v2/siv",  L = 64)  // AES-SIV-CMAC-512
//! K_xaes = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v2/xaes", L = 32)  // XAES-256-GCM
//! FP     = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v2/fingerprint", L = 16)
//!
//! body   = value bytes; for booleans one byte, 0x01 (true) or 0x00 (false): fixed width
//! PT     = type || body || 0x80 || 0x00 * k      ISO/IEC 7816-4 padding; k from `pad`:
//!            pad on:  len(body) + 1 rounded up to 16, 32, 64, 128, 256, then Padmé
//!            pad off: k = 0
//!
//! m = 'd': scope  = base64url(SHA-256("veil/v2/scope:" || kind || ":" || name)[0..9])
//!                   kind = "field" (name = the field path) or "domain" (a named domain)
//!          header = "veil:v2:" || kid || ":d:" || scope
//!          (V, C) = AES-SIV(K_siv, [header], PT)                 RFC 5297, one AD component
//!          sealed = header || ":" || base64url-no-pad(V || C)
//! m = 'r': header = "veil:v2:" || kid || ":r"
//!          N      = 24 random bytes (crate::crypto::nonce)
//!          (C, T) = XAES-256-GCM(K_xaes, N, header, PT)          C2SP XAES-256-GCM
//!          sealed = header || ":" || base64url-no-pad(N || C || T)
//! ```
//!
//! Why each piece (the bounds are worked out in docs/design.md, "Value format v2"):
//! - the scope in the SIV associated data makes equal values in different fields seal
//!   differently, so one known (field, plaintext) pair no longer decrypts that value in
//!   every other field; fields a user wants joined share a named domain;
//! - XAES-256-GCM derives a fresh AES-256-GCM key from the first 96 nonce bits, so random
//!   nonces collide only at 2⁻¹⁹³·q² instead of AES-GCM's 2⁻⁹⁷·q² under one key;
//! - padding to buckets hides a value's exact length; booleans are one byte either way.
//!
//! # Format v1 (opened, no longer written)
//!
//! ```text
//! K_siv = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v1/siv", L = 64)
//! K_gcm = HKDF-SHA256-Expand(PRK = DEK, info = "veil/v1/gcm", L = 32)
//! PT    = type || value;  header = "veil:v1:" || kid || ":" || m;  AD = header
//! d: payload = base64url-no-pad(AES-SIV(K_siv, [AD], PT))            (V || C)
//! r: payload = base64url-no-pad(N(12) || AES-256-GCM(K_gcm, N, AD, PT))
//! ```
//!
//! (HKDF-Expand only, RFC 5869 §2.3: the DEK is already a uniformly random HKDF output, so it
//! is used directly as the PRK, `Hkdf::from_prk`.) The type byte (`s`, `n`, `b`) is
//! authenticated because it is part of the plaintext; kid, mode and scope are authenticated
//! as associated data.
//!
//! # Cost
//!
//! [`SealingKey::new`] derives the subkeys and builds the keyed ciphers once. Sealing does no
//! heap allocation other than growing `out`: header and plaintext are written into `out`,
//! encrypted there in place, base64-encoded behind it and moved down. A v2 deterministic
//! value costs one CMAC over its header more than v1 (the header varies with the scope);
//! a v2 randomized value costs two AES blocks and a GCM key setup more (XAES's derived key).

use core::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use thiserror::Error;
use xaes_256_gcm::Xaes256Gcm;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::keys::{Dek, Fingerprint, Kid};
use crate::crypto::siv::PreparedSiv;
use crate::crypto::value::{
    Mode, SealedValue, Version, GCM_NONCE_LEN, GCM_TAG_LEN, PREFIX, PREFIX_V2, SCOPE_CHARS,
    SIV_TAG_LEN, TYPE_LEN, XAES_NONCE_LEN,
};

/// HKDF info for the v1 64-byte AES-SIV (CMAC-AES-256 + CTR-AES-256) key.
pub const SIV_KEY_INFO: &[u8] = b"veil/v1/siv";
/// HKDF info for the v1 32-byte AES-256-GCM key.
pub const GCM_KEY_INFO: &[u8] = b"veil/v1/gcm";
/// HKDF info for the v2 64-byte AES-SIV key.
pub const SIV2_KEY_INFO: &[u8] = b"veil/v2/siv";
/// HKDF info for the v2 32-byte XAES-256-GCM key.
pub const XAES_KEY_INFO: &[u8] = b"veil/v2/xaes";

/// The padding marker that ends the body of a v2 plaintext (ISO/IEC 7816-4).
const PAD_MARK: u8 = 0x80;
/// The smallest padded body (+ marker) with `pad` on: every short value looks alike.
pub const PAD_MIN: usize = 16;
/// Up to this size buckets are powers of two; above it Padmé (≤ 12 % overhead).
pub const PAD_POW2_MAX: usize = 256;

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

/// Length padding of v2 plaintexts (the `pad` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Padding {
    /// Bodies are padded to buckets ([`padded_len`]); the default.
    #[default]
    Buckets,
    /// Only the one-byte marker: the exact length shows.
    Off,
}

/// The length of body + marker + zeros for a body of `body_len` bytes: with
/// [`Padding::Buckets`], `n = body_len + 1` rounded up to 16, 32, 64, 128 or 256, and above
/// 256 to Padmé's next size (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files
/// and Communication with PURBs", PETS 2019: keep the top ⌊log₂ E⌋ + 1 bits of the length,
/// E = ⌊log₂ n⌋; at most 12 % overhead). `None` on overflow.
pub fn padded_len(body_len: usize, pad: Padding) -> Option<usize> {
    let n = body_len.checked_add(1)?;
    match pad {
        Padding::Off => Some(n),
        Padding::Buckets if n <= PAD_MIN => Some(PAD_MIN),
        Padding::Buckets if n <= PAD_POW2_MAX => n.checked_next_power_of_two(),
        Padding::Buckets => {
            let e = usize::BITS - 1 - n.leading_zeros();
            let s = (u32::BITS - 1 - e.leading_zeros()) + 1;
            let last = e.saturating_sub(s);
            let mask = (1usize << last) - 1;
            Some(n.checked_add(mask)? & !mask)
        }
    }
}

/// The scope of a deterministic v2 value: which field (or named cross-field domain) it
/// belongs to. Its 12-character tag is written in the value and is its SIV associated data,
/// so equal values in different scopes seal differently.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    text: [u8; SCOPE_CHARS],
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scope").field(&self.as_str()).finish()
    }
}

impl Scope {
    /// Stands in where no scope applies (randomized values carry none); never written.
    pub const UNSCOPED: Scope = Scope {
        text: [b'A'; SCOPE_CHARS],
    };

    /// The scope of a field: `path` is its dotted path with array indices dropped and, where
    /// the profile says so, names lower-cased (`request.headers.authorization`).
    pub fn field(path: &str) -> Scope {
        Scope::of("field", path)
    }

    /// A named cross-field domain (`deterministic_domains`).
    pub fn domain(name: &str) -> Scope {
        Scope::of("domain", name)
    }

    fn of(kind: &str, name: &str) -> Scope {
        let mut h = Sha256::new();
        h.update(b"veil/v2/scope:");
        h.update(kind.as_bytes());
        h.update(b":");
        h.update(name.as_bytes());
        let digest = h.finalize();
        let mut text = [b'A'; SCOPE_CHARS];
        if let Some(tag) = digest.get(..SCOPE_CHARS / 4 * 3) {
            // 9 bytes → exactly 12 characters: cannot fail.
            let _ = URL_SAFE_NO_PAD.encode_slice(tag, &mut text);
        }
        Scope { text }
    }

    /// The tag as written in a value (12 base64url characters).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.text).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8; SCOPE_CHARS] {
        &self.text
    }
}

/// How one value is sealed: mode, scope (deterministic mode) and padding.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    pub mode: Mode,
    pub scope: &'a Scope,
    pub pad: Padding,
}

/// Why sealing or opening failed. Never carries key or plaintext material.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CipherError {
    /// The system random generator failed (randomized mode needs a fresh nonce).
    #[error("the system random number generator failed")]
    Random,
    /// Wrong key, or the value (payload, kid, mode or scope) was altered.
    #[error("authentication failed: wrong key or altered value")]
    Authentication,
    /// Not decodable: bad base64, too short, an unknown type byte or bad padding inside.
    #[error("malformed sealed value")]
    Malformed,
    /// A boolean to seal that is not the text `true` or `false`.
    #[error("a boolean value must be `true` or `false`")]
    NotABoolean,
    /// The value names another key id than this key's.
    #[error("the value was sealed under another key id")]
    KidMismatch,
    /// The value is too large for the cipher (AES-GCM: 2^36 − 32 bytes) or for memory.
    #[error("value too large to seal")]
    TooLarge,
    /// This key id cannot be written in the value format (e.g. a year outside 0000–9999), so
    /// nothing sealed with it could be parsed back; the key refuses to seal.
    #[error("key id cannot be written in the value format")]
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
    /// v1 AES-SIV with the deterministic header as its one AD, prepared once (crate::crypto::siv).
    siv: PreparedSiv,
    /// v1 AES-256-GCM.
    gcm: Aes256Gcm,
    /// v2 AES-SIV; its AD (the scoped header) is given per value.
    siv2: PreparedSiv,
    /// v2 XAES-256-GCM.
    xaes: Xaes256Gcm,
}

fn expand<const N: usize>(
    hk: &Hkdf<Sha256>,
    info: &[u8],
) -> Result<Zeroizing<[u8; N]>, CipherError> {
    let mut k = Zeroizing::new([0u8; N]);
    hk.expand(info, &mut k[..])
        .map_err(|_| CipherError::KeySetup)?;
    Ok(k)
}

impl Ciphers {
    fn new(dek: &Dek, ad_d: &[u8], ad_d2: &[u8]) -> Result<Ciphers, CipherError> {
        let hk = Hkdf::<Sha256>::from_prk(dek.as_bytes()).map_err(|_| CipherError::KeySetup)?;
        let siv_key = expand::<64>(&hk, SIV_KEY_INFO)?;
        let gcm_key = expand::<32>(&hk, GCM_KEY_INFO)?;
        let siv2_key = expand::<64>(&hk, SIV2_KEY_INFO)?;
        let xaes_key = expand::<32>(&hk, XAES_KEY_INFO)?;
        Ok(Ciphers {
            siv: PreparedSiv::new(&siv_key, ad_d),
            gcm: Aes256Gcm::new(&(*gcm_key).into()),
            siv2: PreparedSiv::new(&siv2_key, ad_d2),
            xaes: Xaes256Gcm::new(&(*xaes_key).into()),
        })
    }
}

/// Cipher state for one kid, built once (key schedules computed once) and reused for every
/// value. `Send + Sync`. Its `Debug` shows the kid only.
pub struct SealingKey {
    kid: Kid,
    /// The data key's fingerprint ([`Dek::fingerprint`]): which key this is, not just
    /// which kid, so memos and key caches never mix two keys that share a kid.
    fingerprint: Fingerprint,
    /// `veil:v1:<kid>:d`, the header and associated data of v1 deterministic values.
    ad_d: Box<[u8]>,
    /// `veil:v1:<kid>:r`.
    ad_r: Box<[u8]>,
    /// `veil:v2:<kid>:d:`, the start of a v2 deterministic header (the scope follows).
    head_d2: Box<[u8]>,
    /// `veil:v2:<kid>:r`, the header of a v2 randomized value.
    head_r2: Box<[u8]>,
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
    /// Derives the subkeys of `dek` (see the module docs) and prepares the ciphers.
    ///
    /// Infallible by signature; a kid that cannot be written in the value format (so that
    /// [`SealedValue::parse`] would reject the output) gives a key whose every operation
    /// returns [`CipherError::UnencodableKid`].
    pub fn new(kid: Kid, dek: &Dek) -> SealingKey {
        let kid_text = kid.to_string();
        let canonical = kid_text.parse::<Kid>().map(|k| k == kid).unwrap_or(false);
        let text = |s: String| s.into_bytes().into_boxed_slice();
        let ad_d = text(format!("{PREFIX}{kid_text}:d"));
        let head_d2 = text(format!("{PREFIX_V2}{kid_text}:d:"));
        let ciphers = if canonical {
            Ciphers::new(dek, &ad_d, &head_d2)
        } else {
            Err(CipherError::UnencodableKid)
        };
        SealingKey {
            kid,
            fingerprint: dek.fingerprint(),
            ad_d,
            ad_r: text(format!("{PREFIX}{kid_text}:r")),
            head_d2,
            head_r2: text(format!("{PREFIX_V2}{kid_text}:r")),
            ciphers,
        }
    }

    pub fn kid(&self) -> Kid {
        self.kid
    }

    /// The fingerprint of the data key this was built from.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn ad_v1(&self, mode: Mode) -> &[u8] {
        match mode {
            Mode::Deterministic => &self.ad_d,
            Mode::Randomized => &self.ad_r,
        }
    }

    fn ciphers(&self) -> Result<&Ciphers, CipherError> {
        self.ciphers.as_ref().map_err(|e| *e)
    }

    /// Appends a v2 value (no JSON quotes) to `out`: `veil:v2:<kid>:d:<scope>:<payload>` or
    /// `veil:v2:<kid>:r:<payload>`.
    ///
    /// `value` is: for [`ValueType::String`] the UTF-8 bytes of the decoded string; for
    /// [`ValueType::Number`] the exact JSON number text; for [`ValueType::Bool`]
    /// `true`/`false` (anything else is [`CipherError::NotABoolean`]). Randomized mode draws
    /// the nonce from [`crate::crypto::nonce`]. On error `out` is left as it was.
    pub fn seal(
        &self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        match spec.mode {
            Mode::Deterministic => self.seal_siv2(spec.scope, spec.pad, ty, value, out),
            Mode::Randomized => {
                let mut nonce = [0u8; XAES_NONCE_LEN];
                crate::crypto::nonce::fill(&mut nonce)?;
                self.seal_xaes(spec.pad, ty, value, nonce, out)
            }
        }
    }

    /// [`SealingKey::seal`] in randomized mode with a caller-chosen nonce. For known-answer
    /// tests and interop vectors only.
    pub fn seal_v2_randomized_with_nonce(
        &self,
        pad: Padding,
        ty: ValueType,
        value: &[u8],
        nonce: [u8; XAES_NONCE_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        self.seal_xaes(pad, ty, value, nonce, out)
    }

    /// Appends a v1 value `veil:v1:<kid>:<m>:<payload>`. Format v1 is no longer written by
    /// Veil; this stays for tests that need data sealed the old way and for vectors.
    pub fn seal_v1_into(
        &self,
        mode: Mode,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        match mode {
            Mode::Deterministic => self.seal_siv(ty, value, out),
            Mode::Randomized => self.seal_gcm(ty, value, crate::crypto::nonce::fresh()?, out),
        }
    }

    /// [`SealingKey::seal_v1_into`] in randomized mode with a caller-chosen nonce. For
    /// known-answer tests only: reusing a nonce under one key breaks AES-GCM.
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
            &[self.ad_v1(Mode::Deterministic)],
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
            &[self.ad_v1(Mode::Randomized)],
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

    fn seal_siv2(
        &self,
        scope: &Scope,
        pad: Padding,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let ciphers = self.ciphers()?;
        let body = v2_body(ty, value)?;
        let padded = padded_len(body.len(), pad).ok_or(CipherError::TooLarge)?;
        // raw = V (16) || type || body || 0x80 || 0…; encrypted in place, V written last.
        let raw_len = padded
            .checked_add(SIV_TAG_LEN + TYPE_LEN)
            .ok_or(CipherError::TooLarge)?;
        self.seal_with(
            &[&self.head_d2, scope.as_bytes()],
            raw_len,
            out,
            |raw| {
                raw.extend_from_slice(&[0u8; SIV_TAG_LEN]);
                raw.push(ty.as_byte());
                push_padded(raw, body, padded);
            },
            |ad, raw| {
                let (tag, pt) = raw
                    .split_at_mut_checked(SIV_TAG_LEN)
                    .ok_or(CipherError::TooLarge)?;
                tag.copy_from_slice(&ciphers.siv2.encrypt_ad(ad, pt));
                Ok(())
            },
        )
    }

    fn seal_xaes(
        &self,
        pad: Padding,
        ty: ValueType,
        value: &[u8],
        nonce: [u8; XAES_NONCE_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let ciphers = self.ciphers()?;
        let body = v2_body(ty, value)?;
        let padded = padded_len(body.len(), pad).ok_or(CipherError::TooLarge)?;
        // raw = N (24) || type || body || 0x80 || 0… || T (16); T written last.
        let raw_len = padded
            .checked_add(XAES_NONCE_LEN + TYPE_LEN + GCM_TAG_LEN)
            .ok_or(CipherError::TooLarge)?;
        self.seal_with(
            &[&self.head_r2],
            raw_len,
            out,
            |raw| {
                raw.extend_from_slice(&nonce);
                raw.push(ty.as_byte());
                push_padded(raw, body, padded);
                raw.extend_from_slice(&[0u8; GCM_TAG_LEN]);
            },
            |ad, raw| {
                let pt_end = raw.len().saturating_sub(GCM_TAG_LEN);
                let (body, tag) = raw
                    .split_at_mut_checked(pt_end)
                    .ok_or(CipherError::TooLarge)?;
                let pt = body
                    .get_mut(XAES_NONCE_LEN..)
                    .ok_or(CipherError::TooLarge)?;
                let n = xaes_256_gcm::Nonce::from(nonce);
                let t = ciphers
                    .xaes
                    .encrypt_inout_detached(&n, ad, InOutBuf::from(pt))
                    .map_err(|_| CipherError::TooLarge)?;
                tag.copy_from_slice(&t);
                Ok(())
            },
        )
    }

    /// Writes the header (the concatenation of `header`) and `:` to `out`, lets `fill`
    /// append exactly `raw_len` raw bytes, lets `encrypt` transform them in place (given the
    /// header as AD), then replaces them by their base64url encoding. On error, `out` is
    /// zeroized back to its original length.
    fn seal_with(
        &self,
        header: &[&[u8]],
        raw_len: usize,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
        encrypt: impl FnOnce(&[u8], &mut [u8]) -> Result<(), CipherError>,
    ) -> Result<(), CipherError> {
        let header_len = header
            .iter()
            .try_fold(0usize, |n, part| n.checked_add(part.len()))
            .ok_or(CipherError::TooLarge)?;
        let enc_len = base64::encoded_len(raw_len, false).ok_or(CipherError::TooLarge)?;
        let start = out.len();
        // Room for header, ':', the raw bytes and (behind them) their encoding.
        let need = header_len
            .checked_add(1)
            .and_then(|n| n.checked_add(raw_len))
            .and_then(|n| n.checked_add(enc_len))
            .ok_or(CipherError::TooLarge)?;
        out.try_reserve(need).map_err(|_| CipherError::TooLarge)?;
        for part in header {
            out.extend_from_slice(part);
        }
        out.push(b':');
        let raw_start = out.len();
        fill(out);
        let result = match out.split_at_mut_checked(raw_start) {
            Some((head, raw)) if raw.len() == raw_len => match head.get(start..raw_start - 1) {
                Some(ad) => encrypt(ad, raw),
                None => Err(CipherError::TooLarge),
            },
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

    /// Checks the kid, decodes the payload, verifies and decrypts it (either format). Every
    /// failure is an error value: [`CipherError::KidMismatch`], [`CipherError::Malformed`]
    /// or [`CipherError::Authentication`].
    pub fn open(&self, v: &SealedValue<'_>) -> Result<Opened, CipherError> {
        if v.kid != self.kid {
            return Err(CipherError::KidMismatch);
        }
        let ciphers = self.ciphers()?;
        let payload = v.payload.as_bytes();
        let mut buf = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(payload.len())]);
        let n = URL_SAFE_NO_PAD
            .decode_slice(payload, &mut buf[..])
            .map_err(|_| CipherError::Malformed)?;
        buf.truncate(n);
        if n < v.mode.min_payload_bytes_in(v.version) {
            return Err(CipherError::Malformed);
        }
        // After decryption the plaintext (type || …) is at buf[pt_start..pt_end].
        let (pt_start, pt_end) = match v.mode {
            Mode::Deterministic => {
                let (tag, ct) = buf
                    .split_at_mut_checked(SIV_TAG_LEN)
                    .ok_or(CipherError::Malformed)?;
                let tag: [u8; SIV_TAG_LEN] =
                    (&*tag).try_into().map_err(|_| CipherError::Malformed)?;
                match v.version {
                    Version::V1 => ciphers
                        .siv
                        .decrypt(&tag, ct)
                        .map_err(|_| CipherError::Authentication)?,
                    Version::V2 => ciphers
                        .siv2
                        .decrypt_ad(v.header.as_bytes(), &tag, ct)
                        .map_err(|_| CipherError::Authentication)?,
                }
                (SIV_TAG_LEN, n)
            }
            Mode::Randomized => {
                let nonce_len = match v.version {
                    Version::V1 => GCM_NONCE_LEN,
                    Version::V2 => XAES_NONCE_LEN,
                };
                let (nonce, rest) = buf
                    .split_at_mut_checked(nonce_len)
                    .ok_or(CipherError::Malformed)?;
                let ct_len = rest
                    .len()
                    .checked_sub(GCM_TAG_LEN)
                    .ok_or(CipherError::Malformed)?;
                let (ct, tag) = rest
                    .split_at_mut_checked(ct_len)
                    .ok_or(CipherError::Malformed)?;
                let tag = aes_gcm::Tag::try_from(&*tag).map_err(|_| CipherError::Malformed)?;
                match v.version {
                    Version::V1 => {
                        let nonce = aes_gcm::Nonce::<U12>::try_from(&*nonce)
                            .map_err(|_| CipherError::Malformed)?;
                        ciphers
                            .gcm
                            .decrypt_inout_detached(
                                &nonce,
                                self.ad_v1(Mode::Randomized),
                                InOutBuf::from(ct),
                                &tag,
                            )
                            .map_err(|_| CipherError::Authentication)?;
                    }
                    Version::V2 => {
                        let nonce = xaes_256_gcm::Nonce::try_from(&*nonce)
                            .map_err(|_| CipherError::Malformed)?;
                        ciphers
                            .xaes
                            .decrypt_inout_detached(
                                &nonce,
                                v.header.as_bytes(),
                                InOutBuf::from(ct),
                                &tag,
                            )
                            .map_err(|_| CipherError::Authentication)?;
                    }
                }
                (nonce_len, nonce_len + ct_len)
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
        let value_end = match v.version {
            Version::V1 => pt_end,
            Version::V2 => {
                let padded = buf.get(value_start..pt_end).ok_or(CipherError::Malformed)?;
                value_start + unpadded_len(padded)?
            }
        };
        if v.version == Version::V2 && ty == ValueType::Bool {
            let text: &[u8] = match buf.get(value_start..value_end) {
                Some([1]) => b"true",
                Some([0]) => b"false",
                _ => return Err(CipherError::Malformed),
            };
            return Ok(Opened {
                ty,
                value: Zeroizing::new(text.to_vec()),
            });
        }
        buf.copy_within(value_start..value_end, 0);
        buf.truncate(value_end - value_start);
        Ok(Opened { ty, value: buf })
    }
}

/// The body of a v2 plaintext: the value bytes, or one byte for a boolean.
fn v2_body(ty: ValueType, value: &[u8]) -> Result<&[u8], CipherError> {
    match (ty, value) {
        (ValueType::Bool, b"true") => Ok(&[1]),
        (ValueType::Bool, b"false") => Ok(&[0]),
        (ValueType::Bool, _) => Err(CipherError::NotABoolean),
        _ => Ok(value),
    }
}

/// Appends `body`, the marker and zeros up to `padded` bytes in all.
fn push_padded(raw: &mut Vec<u8>, body: &[u8], padded: usize) {
    raw.extend_from_slice(body);
    raw.push(PAD_MARK);
    raw.resize(raw.len() + padded.saturating_sub(body.len() + 1), 0);
}

/// The body length of a padded v2 plaintext (after the type byte): the zeros at the end and
/// the marker before them removed. No marker: malformed.
fn unpadded_len(padded: &[u8]) -> Result<usize, CipherError> {
    let last = padded
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(CipherError::Malformed)?;
    match padded.get(last) {
        Some(&PAD_MARK) => Ok(last),
        _ => Err(CipherError::Malformed),
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
            crate::crypto::keys::Epoch::containing(400_000_000_000, Default::default()),
        );
        assert!(kid.epoch.year() > 9999);
        let key = SealingKey::new(kid, &Dek::from_bytes([7; 32]));
        let mut out = b"keep".to_vec();
        assert_eq!(
            key.seal_v1_into(Mode::Randomized, ValueType::Bool, b"true", &mut out),
            Err(CipherError::UnencodableKid)
        );
        assert_eq!(out, b"keep");
    }
}
