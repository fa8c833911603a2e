//! The `Authorization` value of every keyservice callout: signed for that one request
//! ([`veil_core::keyservice_auth`]). Envoy at `debug` prints every header of a callout, so
//! the token itself must never be in one; it stays in the VM.

use veil_core::config::KeyserviceConfig;
use veil_core::keyservice_auth::{sign, NONCE_LEN};

use crate::host;

/// `Veil-HMAC-SHA256 t=…,n=…,s=…` for `method` `path` (with its query) and `body`, timed by
/// the host clock (the keyservice shares it) and with a fresh nonce.
pub fn authorization(
    ks: &KeyserviceConfig,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<String, &'static str> {
    let now = host::now().map_err(|_| "no host clock")?;
    let secs = u64::try_from(host::unix_secs(now)).map_err(|_| "host clock before 1970")?;
    let mut nonce = [0u8; NONCE_LEN];
    veil_core::nonce::fill(&mut nonce).map_err(|_| "no randomness for the request nonce")?;
    Ok(sign(ks.token.as_bytes(), method, path, body, secs, nonce))
}
