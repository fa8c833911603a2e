//! Client ids: `uuid "." hex(HMAC-SHA256(secret, uuid))` (docs/relay-protocol.md §1). The
//! filter can check one without any state, and a client cannot forge one.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::RelayError;

/// Shortest accepted `client_id_secret`.
pub const MIN_SECRET_LEN: usize = 32;
/// Length of a client id: 36 (uuid) + 1 + 64 (hex HMAC).
pub const CLIENT_ID_LEN: usize = 36 + 1 + 64;

/// The HMAC key of client ids (`relay.client_id_secret`).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClientIdSecret(Vec<u8>);

impl core::fmt::Debug for ClientIdSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientIdSecret(<redacted>)")
    }
}

impl ClientIdSecret {
    /// A secret of at least 32 bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, RelayError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(RelayError::BadRequest(
                "client id secret shorter than 32 bytes",
            ));
        }
        Ok(ClientIdSecret(bytes.to_vec()))
    }

    /// The client id for these 16 random bytes (the version-4 bits are set here).
    pub fn issue(&self, mut uuid_bytes: [u8; 16]) -> String {
        if let Some(b) = uuid_bytes.get_mut(6) {
            *b = (*b & 0x0f) | 0x40;
        }
        if let Some(b) = uuid_bytes.get_mut(8) {
            *b = (*b & 0x3f) | 0x80;
        }
        let h = hex::encode(uuid_bytes);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            h.get(0..8).unwrap_or_default(),
            h.get(8..12).unwrap_or_default(),
            h.get(12..16).unwrap_or_default(),
            h.get(16..20).unwrap_or_default(),
            h.get(20..32).unwrap_or_default()
        );
        let mac = hex::encode(self.mac(uuid.as_bytes()));
        format!("{uuid}.{mac}")
    }

    /// A fresh client id from the system RNG.
    pub fn issue_random(&self) -> Result<String, RelayError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|_| RelayError::Unavailable("no randomness"))?;
        Ok(self.issue(b))
    }

    /// Whether `client_id` was issued under this secret (the HMAC is compared in constant
    /// time; the shape checks only look at public structure).
    pub fn verify(&self, client_id: &str) -> bool {
        let Some((uuid, mac_hex)) = client_id.split_once('.') else {
            return false;
        };
        if !is_v4_uuid(uuid) || mac_hex.len() != 64 {
            return false;
        }
        let mut expected = [0u8; 64];
        if hex::encode_to_slice(self.mac(uuid.as_bytes()), &mut expected).is_err() {
            return false;
        }
        expected.ct_eq(mac_hex.as_bytes()).into()
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // HMAC takes keys of any length; the error branch cannot happen.
        if let Ok(mut m) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            m.update(msg);
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        out
    }
}

/// Lowercase hyphenated version-4 (RFC 9562 variant) UUID, as `issue` writes it.
fn is_v4_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    b.iter().enumerate().all(|(i, &c)| match i {
        8 | 13 | 18 | 23 => c == b'-',
        14 => c == b'4',
        19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
        _ => matches!(c, b'0'..=b'9' | b'a'..=b'f'),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issue_formats_a_v4_uuid_and_its_hmac() {
        let s = ClientIdSecret::new(SECRET).unwrap();
        let id = s.issue([0xff; 16]);
        assert_eq!(id.len(), CLIENT_ID_LEN);
        let (uuid, mac) = id.split_once('.').unwrap();
        assert_eq!(uuid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
        m.update(uuid.as_bytes());
        assert_eq!(mac, hex::encode(m.finalize().into_bytes()));
        assert_eq!(
            s.issue([0; 16]).split_once('.').unwrap().0,
            "00000000-0000-4000-8000-000000000000"
        );
        assert!(s.verify(&id));
    }

    #[test]
    fn verify_refuses_forgeries_and_other_secrets() {
        let s = ClientIdSecret::new(SECRET).unwrap();
        let other = ClientIdSecret::new(b"another secret that is long enough!!").unwrap();
        let id = s.issue_random().unwrap();
        assert!(s.verify(&id));
        assert!(!other.verify(&id));
        assert!(!s.verify(&other.issue_random().unwrap()));
        // one flipped hex digit in the mac, and in the uuid
        let mut flipped = id.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(!s.verify(core::str::from_utf8(&flipped).unwrap()));
        let mut flipped = id.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!s.verify(core::str::from_utf8(&flipped).unwrap()));
        // uppercase, truncated, missing dot, empty
        assert!(!s.verify(&id.to_uppercase()));
        assert!(!s.verify(&id[..id.len() - 1]));
        assert!(!s.verify(&id.replace('.', "")));
        assert!(!s.verify(""));
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(ClientIdSecret::new(&SECRET[..31]).is_err());
        assert!(!format!("{:?}", ClientIdSecret::new(SECRET).unwrap()).contains("0123"));
    }
}
