//! The wire format of a sealed JSON value.
//!
//! ```text
//! v1 (read only; written before format v2):
//! veil:v1:r1.2026-01:d:<base64url-no-pad(SIV tag 16 || ciphertext)>
//! veil:v1:r1.2026-01:r:<base64url-no-pad(nonce 12 || ciphertext || GCM tag 16)>
//!
//! v2 (written today; see crate::crypto::cipher for the construction):
//! veil:v2:r1.2026-01:d:<scope 12>:<base64url-no-pad(SIV tag 16 || ciphertext)>
//! veil:v2:r1.2026-01:r:<base64url-no-pad(nonce 24 || ciphertext || GCM tag 16)>
//! ```
//!
//! The sealed value is carried as a JSON string; this module deals with the string's content
//! (no JSON quotes). Parsing is strict: a string either is exactly one of these formats, or
//! it is not ciphertext at all and is treated as plaintext by the callers. The cryptography
//! lives in [`crate::crypto::cipher`].

use core::str::FromStr;

use crate::crypto::keys::Kid;

/// Every v1 value starts with this.
pub const PREFIX: &str = "veil:v1:";
/// Every v2 value starts with this.
pub const PREFIX_V2: &str = "veil:v2:";
/// What both versions start with (the cheap scan for candidate values).
pub const PREFIX_ANY: &str = "veil:v";

/// Length of the AES-SIV synthetic IV (= tag) at the start of a deterministic payload.
pub(crate) const SIV_TAG_LEN: usize = 16;
/// Length of the AES-256-GCM nonce at the start of a v1 randomized payload.
pub(crate) const GCM_NONCE_LEN: usize = 12;
/// Length of the XAES-256-GCM nonce at the start of a v2 randomized payload.
pub(crate) const XAES_NONCE_LEN: usize = 24;
/// Length of the (X)AES-256-GCM tag at the end of a randomized payload.
pub(crate) const GCM_TAG_LEN: usize = 16;
/// The plaintext always holds at least the type byte.
pub(crate) const TYPE_LEN: usize = 1;
/// A v2 plaintext also holds at least the padding marker byte.
pub(crate) const PAD_MARK_LEN: usize = 1;
/// Characters of a v2 scope tag (9 bytes, base64url).
pub const SCOPE_CHARS: usize = 12;

/// The format version of a sealed value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// `veil:v1:`: AES-SIV / AES-256-GCM, no padding, no scope. Opened, never written.
    V1,
    /// `veil:v2:`: scoped AES-SIV / XAES-256-GCM, padded plaintext.
    V2,
}

/// Sealing mode, written as one character after the key id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `d`: AES-SIV (RFC 5297). Equal (kid, type, value) ⇒ equal sealed value.
    Deterministic,
    /// `r`: AES-256-GCM with a random 96-bit nonce (v1), XAES-256-GCM with a random
    /// 192-bit nonce (v2).
    Randomized,
}

impl Mode {
    /// The wire character: `'d'` or `'r'`.
    pub fn as_char(self) -> char {
        match self {
            Mode::Deterministic => 'd',
            Mode::Randomized => 'r',
        }
    }

    /// The wire byte: `b'd'` or `b'r'`.
    pub fn as_byte(self) -> u8 {
        match self {
            Mode::Deterministic => b'd',
            Mode::Randomized => b'r',
        }
    }

    /// `b'd'` / `b'r'` → mode; anything else → `None`.
    pub fn from_byte(b: u8) -> Option<Mode> {
        match b {
            b'd' => Some(Mode::Deterministic),
            b'r' => Some(Mode::Randomized),
            _ => None,
        }
    }

    /// The smallest possible decoded payload for this mode in format v1: the fixed overhead
    /// plus the type byte of the plaintext.
    pub fn min_payload_bytes(self) -> usize {
        self.min_payload_bytes_in(Version::V1)
    }

    /// The smallest possible decoded payload for this mode in `version`.
    pub fn min_payload_bytes_in(self, version: Version) -> usize {
        match (version, self) {
            (Version::V1, Mode::Deterministic) => SIV_TAG_LEN + TYPE_LEN,
            (Version::V1, Mode::Randomized) => GCM_NONCE_LEN + GCM_TAG_LEN + TYPE_LEN,
            (Version::V2, Mode::Deterministic) => SIV_TAG_LEN + TYPE_LEN + PAD_MARK_LEN,
            (Version::V2, Mode::Randomized) => {
                XAES_NONCE_LEN + GCM_TAG_LEN + TYPE_LEN + PAD_MARK_LEN
            }
        }
    }
}

/// A syntactically valid sealed value, borrowed from the string it was parsed from.
/// Nothing has been decrypted or authenticated yet: see [`crate::crypto::cipher::SealingKey::open`].
#[derive(Clone, Copy, Debug)]
pub struct SealedValue<'a> {
    pub version: Version,
    /// The key id exactly as written (canonical: it round-trips through [`Kid`]).
    pub kid_str: &'a str,
    pub kid: Kid,
    pub mode: Mode,
    /// v2 deterministic values: the scope tag (12 base64url characters). `None` otherwise.
    pub scope: Option<&'a str>,
    /// Everything before the payload's `:` (`veil:v2:<kid>:d:<scope>`): the associated data.
    pub header: &'a str,
    /// The base64url (no padding) payload, non-empty and well-formed.
    pub payload: &'a str,
}

impl<'a> SealedValue<'a> {
    /// `None` means "not a Veil value", which is not an error: any other string is plaintext.
    ///
    /// Strict: the prefix [`PREFIX`] or [`PREFIX_V2`], a key id that parses with
    /// [`Kid::from_str`], a mode character `d` or `r`, for v2 `d` a scope of exactly
    /// [`SCOPE_CHARS`] base64url characters, then a non-empty payload of base64url-no-pad
    /// characters whose length is a possible base64 length (not `4k + 1`), whose unused
    /// trailing bits are zero (canonical encoding, so decoding cannot fail), and which
    /// decodes to at least [`Mode::min_payload_bytes_in`] bytes. No padding `=`, no
    /// whitespace.
    pub fn parse(s: &'a str) -> Option<SealedValue<'a>> {
        let (version, rest) = match s.strip_prefix(PREFIX) {
            Some(rest) => (Version::V1, rest),
            None => (Version::V2, s.strip_prefix(PREFIX_V2)?),
        };
        let (kid_str, rest) = split_colon(rest)?;
        let kid = Kid::from_str(kid_str).ok()?;
        let bytes = rest.as_bytes();
        let mode = Mode::from_byte(*bytes.first()?)?;
        if bytes.get(1) != Some(&b':') {
            return None;
        }
        // Bytes 0 and 1 are ASCII, so index 2 is a char boundary.
        let mut rest = rest.get(2..)?;
        let mut scope = None;
        if version == Version::V2 && mode == Mode::Deterministic {
            let (tag, after) = split_colon(rest)?;
            if tag.len() != SCOPE_CHARS || !tag.bytes().all(|c| b64url_value(c).is_some()) {
                return None;
            }
            scope = Some(tag);
            rest = after;
        }
        let payload = rest;
        if decoded_len(payload.as_bytes())? < mode.min_payload_bytes_in(version) {
            return None;
        }
        let header = s.get(..s.len().checked_sub(payload.len() + 1)?)?;
        Some(SealedValue {
            version,
            kid_str,
            kid,
            mode,
            scope,
            header,
            payload,
        })
    }
}

/// Cheap check used on hot paths before [`SealedValue::parse`]: starts with [`PREFIX`] or
/// [`PREFIX_V2`].
pub fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(PREFIX.as_bytes()) || bytes.starts_with(PREFIX_V2.as_bytes())
}

/// The length of the version prefix `bytes` starts with (`veil:v1:` or `veil:v2:`), if any.
pub fn prefix_len(bytes: &[u8]) -> Option<usize> {
    looks_sealed(bytes).then_some(PREFIX.len())
}

/// The value of one base64url character, or `None` for any other byte.
/// Each byte's base64url value, 0xff for a byte outside the alphabet: one load per
/// character of a payload (the unsealer checks every payload it meets). Built at compile
/// time: an index out of range here is a build error, never a panic at run time.
#[allow(clippy::indexing_slicing)]
const B64URL: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'-' as usize] = 62;
    t[b'_' as usize] = 63;
    t
};

#[inline]
fn b64url_value(c: u8) -> Option<u8> {
    B64URL.get(usize::from(c)).copied().filter(|&v| v != 0xff)
}

/// Splits at the first `:` (ASCII, so both sides are on char boundaries). A byte loop: the
/// pieces of a sealed value's header are a few bytes long.
#[inline]
fn split_colon(s: &str) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == b':')?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// The decoded length of a canonical unpadded base64url string, or `None` if `s` is empty,
/// has a non-alphabet byte, has an impossible length, or has non-zero trailing bits.
fn decoded_len(s: &[u8]) -> Option<usize> {
    let (&last, _) = s.split_last()?;
    if s.iter().any(|&c| B64URL.get(usize::from(c)) == Some(&0xff)) {
        return None;
    }
    let last = b64url_value(last)?;
    let tail = match s.len() % 4 {
        0 => 0,
        // 2 chars = 12 bits carry 1 byte: the low 4 bits of the last char must be zero.
        2 if last & 0x0f == 0 => 1,
        // 3 chars = 18 bits carry 2 bytes: the low 2 bits of the last char must be zero.
        3 if last & 0x03 == 0 => 2,
        _ => return None,
    };
    Some(s.len() / 4 * 3 + tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn decoded_len_matches_base64_crate() {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for n in 0..40usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let enc = engine.encode(&data);
            if n == 0 {
                assert_eq!(decoded_len(enc.as_bytes()), None);
            } else {
                assert_eq!(decoded_len(enc.as_bytes()), Some(n), "{enc}");
            }
        }
        // Non-canonical trailing bits are rejected here and by the base64 crate alike.
        assert_eq!(decoded_len(b"AB"), None);
        assert!(engine.decode("AB").is_err());
        assert_eq!(decoded_len(b"AQ"), Some(1));
        assert_eq!(decoded_len(b"AAB"), None);
        assert!(engine.decode("AAB").is_err());
        assert_eq!(decoded_len(b"AAE"), Some(2));
        assert_eq!(decoded_len(b"AAAAA"), None);
    }
}
