//! Every keyservice callout goes through here: signed for that one request
//! ([`veil_core::keyservice_auth`]; Envoy at `debug` prints every header of a callout, so
//! the token itself is never in one) and sent to the keyservice cluster; the shell hands
//! the answer back as a [`crate::host::CalloutAnswer`], parsed by
//! [`veil_core::keyservice_answer`]. Callers: the key refresh, keys fetched on demand, the
//! relay.

use std::time::Duration;

use veil_core::config::KeyserviceConfig;
use veil_core::keyservice_auth::{sign, NONCE_LEN};

use crate::clock;
use crate::host::{CalloutId, CalloutRequest, Host, HostError};

/// Why a callout could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No clock or no randomness for the signature.
    Sign(&'static str),
    /// The host refused the callout (unknown cluster, no healthy host, ...).
    Dispatch(HostError),
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SendError::Sign(why) => write!(f, "cannot sign the keyservice request: {why}"),
            SendError::Dispatch(e) => write!(f, "cannot call the keyservice cluster ({e})"),
        }
    }
}

/// `Veil-HMAC-SHA256 t=…,n=…,s=…` for `method` `path` (with its query) and `body`, timed by
/// the host's wall clock (the keyservice shares it) and with a fresh nonce.
pub fn authorization(
    h: &dyn Host,
    ks: &KeyserviceConfig,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<String, SendError> {
    let secs = clock::wall_secs(h).map_err(|_| SendError::Sign("no host clock"))?;
    let secs = u64::try_from(secs).map_err(|_| SendError::Sign("host clock before 1970"))?;
    let mut nonce = [0u8; NONCE_LEN];
    h.fill_random(&mut nonce)
        .map_err(|_| SendError::Sign("no randomness for the request nonce"))?;
    Ok(sign(ks.token.as_bytes(), method, path, body, secs, nonce))
}

/// Signs and sends `method path` (with `body`, JSON) from the context `h` acts for.
pub fn send(
    h: &dyn Host,
    ks: &KeyserviceConfig,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<CalloutId, SendError> {
    let auth = authorization(h, ks, method, path, body.unwrap_or_default())?;
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", ks.authority.as_str()),
        ("authorization", auth.as_str()),
    ];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    h.callout(&CalloutRequest {
        cluster: &ks.cluster,
        headers: &headers,
        body,
        timeout: Duration::from_millis(ks.timeout_ms),
    })
    .map_err(SendError::Dispatch)
}
