//! Keys: root versions, epochs, key ids and the derivation root → per-epoch data key.
//!
//! ```text
//! KEK   customer master key in the KMS/HSM; never leaves it
//! root  32 random bytes per root version; stored only wrapped by the KEK
//! DEK   per epoch: HKDF-SHA256(ikm = root, info = "veil/v1/dek/" + "YYYY-MM")
//! ```
//!
//! Epochs are derived from the clock alone, so replicas agree on the current data key with
//! no write and no coordination at a boundary.

use core::fmt;
use core::str::FromStr;

use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::calendar::{civil_from_days, days_from_civil, SECS_PER_DAY};

/// Errors from parsing key ids, epochs and rotation settings.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("rotation months must be a whole number from 1 to 120, got {0:?}")]
    RotationMonths(String),
    #[error("not an epoch label (YYYY-MM): {0:?}")]
    EpochLabel(String),
    #[error("not a key id (r<version>.<YYYY-MM>): {0:?}")]
    Kid(String),
    #[error("a root key is 32 bytes, got {0}")]
    RootLength(usize),
    #[error("a data key is 32 bytes, got {0}")]
    DekLength(usize),
    #[error("not a key fingerprint (32 hex digits): {0:?}")]
    Fingerprint(String),
    #[error("the data key for {0} does not match its fingerprint: refused")]
    FingerprintMismatch(String),
    #[error("the data key for {0} is not 32 bytes of base64url")]
    DekEncoding(String),
}

/// How many calendar months one epoch (one data key) lasts. `ENCRYPTION_ROTATION_MONTHS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RotationMonths(u16);

impl RotationMonths {
    pub const DEFAULT: RotationMonths = RotationMonths(12);
    pub const MAX: u16 = 120;

    pub fn new(months: u16) -> Result<Self, KeyError> {
        if (1..=Self::MAX).contains(&months) {
            Ok(RotationMonths(months))
        } else {
            Err(KeyError::RotationMonths(months.to_string()))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for RotationMonths {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for RotationMonths {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u16 = s
            .trim()
            .parse()
            .map_err(|_| KeyError::RotationMonths(s.to_string()))?;
        Self::new(n)
    }
}

/// The first month of an epoch. An epoch starts on the first day of that month, 00:00 UTC.
///
/// Epoch starts are the months whose absolute index `year * 12 + (month - 1)` is a multiple
/// of N (months counted from January of year 0, proleptic Gregorian). For N dividing 12 that
/// is "every N months from January" of each year; for other N (5, 24) the sequence runs on
/// across years without a short epoch at each year's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    year: i32,
    /// 1..=12
    month: u8,
}

impl Epoch {
    /// The epoch that contains the instant `unix_secs` (seconds since 1970-01-01T00:00:00Z).
    pub fn containing(unix_secs: i64, rotation: RotationMonths) -> Epoch {
        let days = unix_secs.div_euclid(SECS_PER_DAY);
        let (year, month, _) = civil_from_days(days);
        let index = month_index(year, month);
        let start = index - index.rem_euclid(i64::from(rotation.get()));
        Epoch::from_month_index(start)
    }

    fn from_month_index(index: i64) -> Epoch {
        let year = index.div_euclid(12);
        let month = index.rem_euclid(12) + 1;
        Epoch {
            year: i32::try_from(year).unwrap_or(i32::MAX),
            month: u8::try_from(month).unwrap_or(1),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    /// Seconds since the Unix epoch at which this epoch starts.
    pub fn start_unix(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * SECS_PER_DAY
    }

    /// The epoch after this one.
    pub fn next(self, rotation: RotationMonths) -> Epoch {
        Epoch::from_month_index(month_index(self.year, self.month) + i64::from(rotation.get()))
    }

    /// Every epoch that overlaps the closed interval `[from_unix, to_unix]`, oldest first,
    /// at most `limit` of them (a search over a century must not produce thousands of terms).
    pub fn covering(
        from_unix: i64,
        to_unix: i64,
        rotation: RotationMonths,
        limit: usize,
    ) -> Vec<Epoch> {
        let mut out = Vec::new();
        if to_unix < from_unix {
            return out;
        }
        let last = Epoch::containing(to_unix, rotation);
        let mut e = Epoch::containing(from_unix, rotation);
        while e <= last && out.len() < limit {
            out.push(e);
            e = e.next(rotation);
        }
        out
    }

    /// `YYYY-MM`, the form used in key ids and in the HKDF info string.
    pub fn label(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Epoch {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::EpochLabel(s.to_string());
        let b = s.as_bytes();
        if b.len() != 7 || b.get(4) != Some(&b'-') || !s.is_char_boundary(4) {
            return Err(err());
        }
        let (y, m) = (s.get(..4).ok_or_else(err)?, s.get(5..).ok_or_else(err)?);
        if !y.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let year: i32 = y.parse().map_err(|_| err())?;
        let month: u8 = m.parse().map_err(|_| err())?;
        if !(1..=12).contains(&month) {
            return Err(err());
        }
        Ok(Epoch { year, month })
    }
}

fn month_index(year: i32, month: u8) -> i64 {
    i64::from(year) * 12 + i64::from(month) - 1
}

/// A key id: root version and epoch, written `r<version>.<YYYY-MM>` (e.g. `r1.2026-01`).
/// It names exactly one data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kid {
    pub root_version: u32,
    pub epoch: Epoch,
}

impl Kid {
    pub fn new(root_version: u32, epoch: Epoch) -> Kid {
        Kid {
            root_version,
            epoch,
        }
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}.{}", self.root_version, self.epoch)
    }
}

impl FromStr for Kid {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeyError::Kid(s.to_string());
        let rest = s.strip_prefix('r').ok_or_else(err)?;
        let (version, epoch) = rest.split_once('.').ok_or_else(err)?;
        if version.is_empty()
            || version.len() > 9
            || !version.bytes().all(|c| c.is_ascii_digit())
            || (version.len() > 1 && version.starts_with('0'))
        {
            return Err(err());
        }
        let root_version: u32 = version.parse().map_err(|_| err())?;
        if root_version == 0 {
            return Err(err());
        }
        let epoch: Epoch = epoch.parse().map_err(|_| err())?;
        Ok(Kid {
            root_version,
            epoch,
        })
    }
}

/// 32 random bytes of one root version. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RootKey([u8; 32]);

impl RootKey {
    pub fn from_bytes(bytes: [u8; 32]) -> RootKey {
        RootKey(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<RootKey, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::RootLength(bytes.len()))?;
        Ok(RootKey(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The data key of `epoch` under this root.
    pub fn derive_dek(&self, epoch: Epoch) -> Dek {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let info = format!("veil/v1/dek/{epoch}");
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
        let _ = hk.expand(info.as_bytes(), &mut out);
        Dek(out)
    }

    /// A key-check value: proves that an unwrapped root is the one that was stored, without
    /// revealing it. HMAC-SHA256(root, "veil/v1/kcv"), first 16 bytes.
    pub fn check_value(&self) -> [u8; 16] {
        use hmac::{KeyInit, Mac};
        let mut out = [0u8; 16];
        if let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            mac.update(b"veil/v1/kcv");
            let tag = mac.finalize().into_bytes();
            for (o, t) in out.iter_mut().zip(tag.iter()) {
                *o = *t;
            }
        }
        out
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

/// One epoch's data key (32 bytes). The filter turns it into cipher state once per kid.
/// Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Dek([u8; 32]);

impl Dek {
    pub fn from_bytes(bytes: [u8; 32]) -> Dek {
        Dek(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Dek, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::DekLength(bytes.len()))?;
        Ok(Dek(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Which key this is: HKDF-SHA256-Expand(PRK = DEK, "veil/v2/fingerprint", 16). Sent
    /// with each data key and checked on install, so a key id is bound to its key (a key
    /// that arrives under a kid with another key's fingerprint is refused, and caches keyed
    /// by fingerprint never answer for a different key with the same kid). One-way: it
    /// reveals nothing about the key.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut out = [0u8; 16];
        if let Ok(hk) = Hkdf::<Sha256>::from_prk(&self.0) {
            // 16 bytes is far below HKDF's limit: cannot fail.
            let _ = hk.expand(FINGERPRINT_INFO, &mut out);
        }
        Fingerprint(out)
    }
}

/// A data key as received (a keyservice answer, a shared-data record), checked before it is
/// installed: the kid parses, the key is 32 bytes of base64url (no padding), and its
/// fingerprint is the one that travelled with it. A key that arrives under a kid with
/// another key's fingerprint is refused, so a kid cannot silently name another key.
pub fn checked_dek(kid: &str, dek_b64url: &str, fingerprint: &str) -> Result<(Kid, Dek), KeyError> {
    use base64::Engine;
    let kid_parsed: Kid = kid.parse()?;
    let claimed: Fingerprint = fingerprint.parse()?;
    let bytes = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(dek_b64url)
            .map_err(|_| KeyError::DekEncoding(kid.to_string()))?,
    );
    let dek = Dek::from_slice(&bytes).map_err(|_| KeyError::DekEncoding(kid.to_string()))?;
    if dek.fingerprint() != claimed {
        return Err(KeyError::FingerprintMismatch(kid.to_string()));
    }
    Ok((kid_parsed, dek))
}

/// HKDF info of [`Dek::fingerprint`].
pub const FINGERPRINT_INFO: &[u8] = b"veil/v2/fingerprint";

/// The fingerprint of a data key ([`Dek::fingerprint`]); written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint(pub [u8; 16]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Fingerprint {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| KeyError::Fingerprint(s.to_string()))?;
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| KeyError::Fingerprint(s.to_string()))?;
        Ok(Fingerprint(arr))
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// Issue #18: a kid was not bound to its key. A key is installed only with the
    /// fingerprint that travelled with it.
    #[test]
    fn a_key_is_installed_only_with_its_fingerprint() {
        let dek = Dek::from_bytes([7; 32]);
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(dek.as_bytes());
        let fp = dek.fingerprint().to_string();
        let (kid, got) = checked_dek("r2.2026-01", &text, &fp).unwrap();
        assert_eq!(kid.to_string(), "r2.2026-01");
        assert_eq!(got.as_bytes(), dek.as_bytes());
        let other = Dek::from_bytes([8; 32]).fingerprint().to_string();
        assert_eq!(
            checked_dek("r2.2026-01", &text, &other).unwrap_err(),
            KeyError::FingerprintMismatch("r2.2026-01".into())
        );
        assert!(matches!(
            checked_dek("r2.2026-01", &text, "xyz"),
            Err(KeyError::Fingerprint(_))
        ));
        assert!(matches!(
            checked_dek("r2.2026-01", "AAAA", &fp),
            Err(KeyError::DekEncoding(_))
        ));
        assert!(matches!(
            checked_dek("r0.2026-01", &text, &fp),
            Err(KeyError::Kid(_))
        ));
        // The error never shows the key.
        let e = checked_dek("r2.2026-01", &text, &other)
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&text));
    }
}
