//! The keyservice's answers as the filter reads them (the callouts' bodies), and the key
//! record the filter keeps in Envoy shared data. Pure parsers of untrusted bytes: fuzzed
//! (`fuzz/fuzz_targets/keyservice_answer.rs`). Nothing here is ever logged: the answers
//! hold data keys and pair keys, which are wiped when a parsed answer is dropped.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::relay::RelayError;

/// Shared-data key holding the keyservice's last `/v1/data-keys/current` answer (with
/// `fetched_at` added), so that every worker uses one fetch.
pub const SHARED_KEY: &str = "veil.keys.current.v1";

/// The keyservice's `GET /v1/data-keys/current` answer (also what shared data holds, with
/// `fetched_at` added by the filter).
#[derive(Deserialize)]
pub struct CurrentKeys {
    pub current_root: u32,
    /// Every root version the keyservice serves (a search covers each; keys of a version no
    /// longer listed were destroyed and are dropped). Empty from an older keyservice.
    #[serde(default)]
    pub root_versions: Vec<u32>,
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub fetched_at: Option<i64>,
}

/// One key of an answer: `keys[]` of `/v1/data-keys/current`, or the whole answer of
/// `/v1/data-keys/{kid}` (its other fields are ignored).
#[derive(Deserialize, Serialize, Clone)]
pub struct KeyEntry {
    pub kid: String,
    pub dek: String,
    /// [`crate::crypto::keys::Dek::fingerprint`] in hex: checked on install ([`KeyEntry::dek`]).
    #[serde(default)]
    pub fingerprint: String,
}

impl KeyEntry {
    /// The kid and data key of this entry, checked: the kid parses, the key is 32 bytes of
    /// base64url, and its fingerprint is the one that came with it (a key that arrives
    /// under a kid with another key's fingerprint, or with none, is refused).
    pub fn dek(&self) -> Result<(crate::crypto::keys::Kid, crate::crypto::keys::Dek), KeysError> {
        use crate::crypto::keys::KeyError;
        crate::crypto::keys::checked_dek(&self.kid, &self.dek, &self.fingerprint).map_err(|e| {
            match e {
                KeyError::Kid(_) => KeysError::Kid(self.kid.clone()),
                KeyError::Fingerprint(_) | KeyError::FingerprintMismatch(_) => {
                    KeysError::Fingerprint(self.kid.clone())
                }
                _ => KeysError::Dek(self.kid.clone()),
            }
        })
    }
}

/// The DEK text is a secret: wiped when the parsed answer goes away.
impl Drop for KeyEntry {
    fn drop(&mut self) {
        self.dek.zeroize();
    }
}

/// Why keys could not be taken from an answer. Never contains key material.
#[derive(Debug)]
pub enum KeysError {
    Json(String),
    Kid(String),
    Dek(String),
    /// The data key does not match the fingerprint sent with it (or none was sent).
    Fingerprint(String),
    Empty,
}

impl core::fmt::Display for KeysError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeysError::Json(e) => write!(f, "key answer is not the expected JSON: {e}"),
            KeysError::Kid(k) => write!(f, "key answer has an invalid kid {k:?}"),
            KeysError::Dek(k) => write!(f, "key answer has an invalid data key for kid {k}"),
            KeysError::Fingerprint(k) => write!(
                f,
                "key answer's data key for kid {k} does not match its fingerprint: refused"
            ),
            KeysError::Empty => write!(f, "key answer has no keys"),
        }
    }
}

/// Parses `/v1/data-keys/current` (or the shared record made from it): at least one key.
/// An answer as JSON text. serde_json does not check the UTF-8 of strings it skips (an
/// unknown field's value), so an answer it parsed could still be refused later by
/// [`with_fetched_at`]; JSON text is UTF-8 (RFC 8259 §8.1), so any other bytes are refused here.
fn json_text(body: &[u8]) -> Option<&str> {
    core::str::from_utf8(body).ok()
}

pub fn parse_current(body: &[u8]) -> Result<CurrentKeys, KeysError> {
    let text = json_text(body).ok_or_else(|| KeysError::Json("answer is not UTF-8".into()))?;
    let keys: CurrentKeys =
        serde_json::from_str(text).map_err(|e| KeysError::Json(e.to_string()))?;
    if keys.keys.is_empty() {
        return Err(KeysError::Empty);
    }
    Ok(keys)
}

/// Parses `/v1/data-keys/{kid}`: one key entry.
pub fn parse_key(body: &[u8]) -> Result<KeyEntry, KeysError> {
    json_text(body)
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| KeysError::Json("answer is not a key".into()))
}

/// Adds `fetched_at` to a keyservice answer for shared data, without re-serializing keys
/// through a typed struct that might drop fields. `None` if the answer is not a JSON
/// object. The answer holds DEKs: the tree's strings are wiped before it is dropped, and
/// the result is wiped when the caller drops it.
pub fn with_fetched_at(body: &[u8], now_unix: i64) -> Option<Zeroizing<Vec<u8>>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let out = v
        .as_object_mut()
        .map(|o| {
            o.insert("fetched_at".into(), serde_json::Value::from(now_unix));
        })
        .and_then(|()| serde_json::to_vec(&v).ok())
        .map(Zeroizing::new);
    wipe(&mut v);
    out
}

/// Zeroizes every string of a JSON tree (in place).
fn wipe(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

/// One relay pair as the keyservice answers it (`c2s`/`s2c` never leave the filter).
#[derive(Deserialize)]
pub struct PairAnswer {
    pub pair_id: String,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Pairing (v2) only: `ct_e`, the encapsulation to the client's ephemeral key.
    #[serde(default)]
    pub enc: Option<String>,
    /// Pairing (v2) only: the key confirmation the client checks.
    #[serde(default)]
    pub confirm: Option<String>,
    pub c2s: String,
    pub s2c: String,
    pub expires_at: i64,
    pub idle_ttl_secs: u64,
}

impl Drop for PairAnswer {
    fn drop(&mut self) {
        self.c2s.zeroize();
        self.s2c.zeroize();
    }
}

/// A decoded 32-byte pair key, zeroized on drop.
pub type PairKey = Zeroizing<[u8; 32]>;

impl PairAnswer {
    /// The two keys (`c2s`, `s2c`), decoded (32 bytes each).
    pub fn keys(&self) -> Result<(PairKey, PairKey), RelayError> {
        let one = |b64: &str| -> Result<PairKey, RelayError> {
            let v = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(b64)
                    .map_err(|_| RelayError::Unavailable("bad key from keyservice"))?,
            );
            let k: [u8; 32] = v
                .as_slice()
                .try_into()
                .map_err(|_| RelayError::Unavailable("bad key from keyservice"))?;
            Ok(Zeroizing::new(k))
        };
        Ok((one(&self.c2s)?, one(&self.s2c)?))
    }

    /// The idle TTL, saturated to `u32`.
    pub fn idle_ttl(&self) -> u32 {
        u32::try_from(self.idle_ttl_secs).unwrap_or(u32::MAX)
    }
}

/// `POST /v1/relay/v2/pairs`'s answer.
#[derive(Deserialize)]
pub struct PairingAnswer {
    pub pairs: Vec<PairAnswer>,
}

/// Parses a relay answer (`PairAnswer`, `PairingAnswer`); anything else is
/// `relay-unavailable` (the keyservice misbehaves, not the client).
pub fn parse_relay<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RelayError> {
    json_text(body)
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or(RelayError::Unavailable("bad keyservice answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_needs_a_key() {
        assert!(matches!(
            parse_current(br#"{"current_root":1,"keys":[]}"#),
            Err(KeysError::Empty)
        ));
        let k = parse_current(br#"{"current_root":2,"keys":[{"kid":"r2.2026-01","dek":"x"}]}"#)
            .unwrap();
        assert_eq!((k.current_root, k.keys.len(), k.fetched_at), (2, 1, None));
    }

    /// Found by the `keyservice_answer` fuzz target: serde_json skips an unknown field's
    /// string without checking its UTF-8, so the answer parsed but could not be stored.
    #[test]
    fn an_answer_that_is_not_utf8_is_refused_even_in_an_unknown_field() {
        let body = b"{\"current_root\":1,\"keys\":[{\"kid\":\"r1.2026-01\",\"dek\":\"x\"}],\"x\":\"\xfd\xff\"}";
        assert!(matches!(parse_current(body), Err(KeysError::Json(_))));
        assert!(with_fetched_at(body, 1).is_none());
        assert!(parse_key(b"{\"kid\":\"r1.2026-01\",\"dek\":\"x\",\"x\":\"\xfd\"}").is_err());
        let a = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let pair = |extra: &[u8]| {
            let mut b = format!(
                r#"{{"pair_id":"p","c2s":"{a}","s2c":"{a}","expires_at":5,"idle_ttl_secs":9,"x":""#
            )
            .into_bytes();
            b.extend_from_slice(extra);
            b.extend_from_slice(b"\"}");
            b
        };
        assert!(parse_relay::<PairAnswer>(&pair(b"ok")).is_ok());
        assert!(parse_relay::<PairAnswer>(&pair(b"\xfd")).is_err());
    }

    #[test]
    fn fetched_at_is_added_and_kept_by_the_parser() {
        let out =
            with_fetched_at(br#"{"current_root":1,"keys":[{"kid":"a","dek":"b"}]}"#, 77).unwrap();
        assert_eq!(parse_current(&out).unwrap().fetched_at, Some(77));
        assert!(with_fetched_at(b"[1]", 1).is_none());
        assert!(with_fetched_at(b"nope", 1).is_none());
    }

    #[test]
    fn pair_keys_must_be_32_bytes() {
        let a = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let short = URL_SAFE_NO_PAD.encode([7u8; 31]);
        let ok = format!(
            r#"{{"pair_id":"p","c2s":"{a}","s2c":"{a}","expires_at":5,"idle_ttl_secs":99999999999}}"#
        );
        let p: PairAnswer = parse_relay(ok.as_bytes()).unwrap();
        assert_eq!(*p.keys().unwrap().0, [7u8; 32]);
        assert_eq!(p.idle_ttl(), u32::MAX);
        let bad = ok.replacen(&a, &short, 1);
        let p: PairAnswer = parse_relay(bad.as_bytes()).unwrap();
        assert!(p.keys().is_err());
        assert!(parse_relay::<PairingAnswer>(b"{}").is_err());
    }
}
