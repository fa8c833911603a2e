//! Signed keyservice requests: `Authorization: Veil-HMAC-SHA256 t=…,n=…,s=…`.
//!
//! Why: Envoy at `debug` prints every header of the filter's callouts, so a bearer token
//! sent there ends up in logs, and it releases data keys forever. A signature over one
//! request is useless elsewhere: it names the method, path and body, expires with the
//! allowed clock skew, and the keyservice refuses a nonce it has seen. The token itself
//! never leaves the VM.
//!
//! `s` = base64url (no padding) of HMAC-SHA256(token, [`CONTEXT`] ‖ method ‖ "\n" ‖
//! path-and-query ‖ "\n" ‖ t ‖ "\n" ‖ n ‖ "\n" ‖ hex(SHA-256(body))), `t` in Unix seconds
//! (decimal, no leading zeros), `n` 16 random bytes in lowercase hex.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The authorization scheme (matched case-insensitively, like every HTTP auth scheme).
pub const SCHEME: &str = "Veil-HMAC-SHA256";
/// Domain separation: a MAC made for something else under the token never verifies here.
pub const CONTEXT: &str = "veil-keyservice-request-v1\n";
/// Bytes of a request nonce.
pub const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;

/// Why a signed authorization value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("authorization: not the Veil-HMAC-SHA256 scheme")]
    WrongScheme,
    #[error("authorization: malformed Veil-HMAC-SHA256 value: {0}")]
    Malformed(&'static str),
    #[error("authorization: timestamp {t} is more than {max_skew_secs} s from now ({now})")]
    Skew {
        t: u64,
        now: i64,
        max_skew_secs: u64,
    },
    #[error("authorization: the Veil-HMAC-SHA256 MAC does not match this request")]
    BadMac,
}

fn mac(
    token: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    t: u64,
    nonce_hex: &str,
) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    // HMAC takes keys of any length; the error branch cannot happen.
    if let Ok(mut m) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(token) {
        let body_hash = hex::encode(Sha256::digest(body).as_slice());
        let t_text = t.to_string();
        let parts: [&str; 10] = [
            CONTEXT,
            method,
            "\n",
            path,
            "\n",
            t_text.as_str(),
            "\n",
            nonce_hex,
            "\n",
            body_hash.as_str(),
        ];
        for part in parts {
            m.update(part.as_bytes());
        }
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// The `Authorization` value for one request (`path` with its query string, as sent).
pub fn sign(
    token: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    unix_secs: u64,
    nonce: [u8; NONCE_LEN],
) -> String {
    let n = hex::encode(nonce);
    let s = URL_SAFE_NO_PAD.encode(mac(token, method, path, body, unix_secs, &n));
    format!("{SCHEME} t={unix_secs},n={n},s={s}")
}

/// True if `value` uses this scheme (so a caller can tell it from `Bearer`).
pub fn is_signed(value: &str) -> bool {
    value
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
}

/// Checks a signed `Authorization` value against the request it came with. Returns the
/// nonce, for the caller's replay cache (a valid signature can be replayed until then).
pub fn verify(
    token: &[u8],
    header_value: &str,
    method: &str,
    path: &str,
    body: &[u8],
    now_secs: i64,
    max_skew_secs: u64,
) -> Result<[u8; NONCE_LEN], AuthError> {
    let (scheme, params) = header_value.split_once(' ').ok_or(AuthError::WrongScheme)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::WrongScheme);
    }
    let mut parts = params.split(',');
    let t_text = field(parts.next(), "t=")?;
    let n_text = field(parts.next(), "n=")?;
    let s_text = field(parts.next(), "s=")?;
    if parts.next().is_some() {
        return Err(AuthError::Malformed("unexpected parameter after s"));
    }
    let canonical_decimal = !t_text.is_empty()
        && t_text.len() <= 20
        && t_text.bytes().all(|b| b.is_ascii_digit())
        && (t_text == "0" || !t_text.starts_with('0'));
    let t: u64 = canonical_decimal
        .then(|| t_text.parse().ok())
        .flatten()
        .ok_or(AuthError::Malformed("t is not a decimal Unix time"))?;
    let mut nonce = [0u8; NONCE_LEN];
    if n_text.len() != 2 * NONCE_LEN
        || !n_text
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(n_text, &mut nonce).is_err()
    {
        return Err(AuthError::Malformed("n is not 32 lowercase hex digits"));
    }
    let presented = URL_SAFE_NO_PAD
        .decode(s_text)
        .ok()
        .filter(|s| s.len() == MAC_LEN)
        .ok_or(AuthError::Malformed("s is not a base64url HMAC-SHA256"))?;
    let expected = mac(token, method, path, body, t, n_text);
    if !bool::from(expected.as_slice().ct_eq(presented.as_slice())) {
        return Err(AuthError::BadMac);
    }
    let skew = (i128::from(now_secs) - i128::from(t)).unsigned_abs();
    if skew > u128::from(max_skew_secs) {
        return Err(AuthError::Skew {
            t,
            now: now_secs,
            max_skew_secs,
        });
    }
    Ok(nonce)
}

/// The value of one `name=value` parameter, in its fixed place.
fn field<'a>(part: Option<&'a str>, prefix: &str) -> Result<&'a str, AuthError> {
    part.and_then(|p| p.strip_prefix(prefix))
        .ok_or(AuthError::Malformed("expected t=…,n=…,s=… in that order"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &[u8] = b"tok-Zq8fJ2mW4xV7bN1cR5tY9uP3sL6kH0dG";
    const T: u64 = 1_767_225_600;
    const NONCE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const PATH: &str = "/v1/relay/pairs/AAAAAAAAAAAAAAAAAAAAAA/seq?x=1";
    const BODY: &[u8] = br#"{"seq":7}"#;

    // Both expected values were computed independently with Python 3's standard library:
    //   msg = ("veil-keyservice-request-v1\n" + method + "\n" + path + "\n" + str(t) + "\n"
    //          + n + "\n" + hashlib.sha256(body).hexdigest()).encode()
    //   s = base64.urlsafe_b64encode(hmac.new(token, msg, hashlib.sha256).digest()).rstrip(b"=")
    const KAT_POST: &str = "Veil-HMAC-SHA256 t=1767225600,n=000102030405060708090a0b0c0d0e0f,s=JNenSGlkyMh9lLojXt53B0xzF8GOsBU7AS6yayVx2Aw";
    const KAT_GET: &str = "Veil-HMAC-SHA256 t=1767225600,n=000102030405060708090a0b0c0d0e0f,s=66fEZQ7ZmIFnx8Y7Zm7cUhmQCjw6qyInUHWzrA7Z_M4";

    fn ok(v: &str, method: &str, path: &str, body: &[u8]) -> Result<[u8; 16], AuthError> {
        verify(TOKEN, v, method, path, body, T as i64, 5)
    }

    #[test]
    fn known_answer_vectors() {
        assert_eq!(sign(TOKEN, "POST", PATH, BODY, T, NONCE), KAT_POST);
        assert_eq!(
            sign(TOKEN, "GET", "/v1/data-keys/current", b"", T, NONCE),
            KAT_GET
        );
        assert_eq!(ok(KAT_POST, "POST", PATH, BODY), Ok(NONCE));
        assert_eq!(ok(KAT_GET, "GET", "/v1/data-keys/current", b""), Ok(NONCE));
    }

    #[test]
    fn tampered_requests_are_refused() {
        assert_eq!(ok(KAT_POST, "GET", PATH, BODY), Err(AuthError::BadMac));
        assert_eq!(
            ok(
                KAT_POST,
                "POST",
                "/v1/relay/pairs/AAAAAAAAAAAAAAAAAAAAAA/seq",
                BODY
            ),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            ok(KAT_POST, "POST", PATH, br#"{"seq":8}"#),
            Err(AuthError::BadMac)
        );
        assert_eq!(ok(KAT_POST, "POST", PATH, b""), Err(AuthError::BadMac));
        let t = KAT_POST.replace("t=1767225600", "t=1767225601");
        assert_eq!(ok(&t, "POST", PATH, BODY), Err(AuthError::BadMac));
        let n = KAT_POST.replace("0e0f,", "0e0e,");
        assert_eq!(ok(&n, "POST", PATH, BODY), Err(AuthError::BadMac));
        let s = KAT_POST.replace("s=J", "s=K");
        assert_eq!(ok(&s, "POST", PATH, BODY), Err(AuthError::BadMac));
        assert_eq!(
            verify(
                b"another-token-another-token-0000",
                KAT_POST,
                "POST",
                PATH,
                BODY,
                T as i64,
                5
            ),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn skew_is_refused_both_ways_and_allowed_within() {
        for now in [T as i64 - 5, T as i64, T as i64 + 5] {
            assert_eq!(
                verify(TOKEN, KAT_GET, "GET", "/v1/data-keys/current", b"", now, 5),
                Ok(NONCE)
            );
        }
        for now in [T as i64 - 6, T as i64 + 6, 0, i64::MIN, i64::MAX] {
            assert!(matches!(
                verify(TOKEN, KAT_GET, "GET", "/v1/data-keys/current", b"", now, 5),
                Err(AuthError::Skew { t: T, .. })
            ));
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        let g = |v: &str| ok(v, "GET", "/v1/data-keys/current", b"");
        let base = KAT_GET;
        assert_eq!(g("Bearer abc"), Err(AuthError::WrongScheme));
        assert_eq!(g(""), Err(AuthError::WrongScheme));
        assert_eq!(g("Veil-HMAC-SHA256"), Err(AuthError::WrongScheme));
        assert_eq!(
            g(&base.replace("Veil-HMAC-SHA256", "veil-hmac-sha256")),
            Ok(NONCE)
        );
        for bad in [
            "Veil-HMAC-SHA256 ".to_string(),
            base.replace("t=", "T="),
            base.replace("t=1767225600", "t="),
            base.replace("t=1767225600", "t=01767225600"),
            base.replace("t=1767225600", "t=+1767225600"),
            base.replace("t=1767225600", "t=-1"),
            base.replace("t=1767225600", "t=99999999999999999999"),
            base.replace(
                "000102030405060708090a0b0c0d0e0f",
                "000102030405060708090A0B0C0D0E0F",
            ),
            base.replace(
                "000102030405060708090a0b0c0d0e0f",
                "000102030405060708090a0b0c0d0e",
            ),
            base.replace(
                "000102030405060708090a0b0c0d0e0f",
                "000102030405060708090a0b0c0d0e0g",
            ),
            base.replace(",s=", ",x="),
            base.replace("_M4", "_M"),
            base.replace("_M4", "_M5"),
            format!("{base}="),
            format!("{base},x=1"),
            base.replace(",n=", ", n="),
            base.replace(' ', "  "),
        ] {
            assert!(matches!(g(&bad), Err(AuthError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn is_signed_tells_the_schemes_apart() {
        assert!(is_signed(KAT_GET));
        assert!(!is_signed("Bearer tok"));
        assert!(!is_signed("Veil-HMAC-SHA256x t=1"));
    }

    proptest! {
        #[test]
        fn verify_never_panics(v in ".{0,200}", now in any::<i64>(), skew in any::<u64>()) {
            let _ = verify(TOKEN, &v, "GET", "/", b"", now, skew);
            let _ = verify(TOKEN, &format!("Veil-HMAC-SHA256 {v}"), "GET", "/", b"", now, skew);
        }

        #[test]
        fn sign_then_verify(method in "[A-Z]{1,7}", path in "/[ -~]{0,60}",
                            body in proptest::collection::vec(any::<u8>(), 0..200),
                            t in 0u64..=4_000_000_000, nonce in any::<[u8; 16]>()) {
            let v = sign(TOKEN, &method, &path, &body, t, nonce);
            prop_assert_eq!(verify(TOKEN, &v, &method, &path, &body, t as i64, 0), Ok(nonce));
        }
    }
}
