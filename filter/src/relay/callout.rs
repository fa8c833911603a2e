//! The filter's relay callouts to the keyservice (its loopback cluster, signed requests): a
//! pairing, a pair fetched by id, and (replay mode `global`) a sequence number check. Each is
//! dispatched from the stream's own context, which gets the answer and resumes itself.
//!
//! An answer without `:status` (reset, timeout, cluster overflow) is a failure:
//! `relay-unavailable`, like any status the API does not define.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proxy_wasm::types::{BufferType, MapType};
use serde::Deserialize;
use veil_core::relay::RelayError;
use zeroize::{Zeroize, Zeroizing};

use crate::host;
use crate::vm::VmState;

/// Largest keyservice answer read (a pairing of 16 keys is ~30 KiB).
const MAX_ANSWER: usize = 256 * 1024;

pub fn dispatch(
    vm: &VmState,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<u32, RelayError> {
    let ks = &vm.config.keyservice;
    let auth = crate::callout_auth::authorization(ks, method, path, body.unwrap_or_default())
        .map_err(RelayError::Unavailable)?;
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", ks.authority.as_str()),
        ("authorization", auth.as_str()),
    ];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    proxy_wasm::hostcalls::dispatch_http_call(
        &ks.cluster,
        headers,
        body,
        vec![],
        Duration::from_millis(ks.timeout_ms),
    )
    .map_err(|_| RelayError::Unavailable("cannot call the keyservice"))
}

/// The answer's status (None: the call failed) and body.
pub fn answer(body_size: usize) -> (Option<u16>, Zeroizing<Vec<u8>>) {
    let status = host::get_header(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok());
    let body = host::get_buffer(
        BufferType::HttpCallResponseBody,
        0,
        body_size.min(MAX_ANSWER),
    )
    .unwrap_or_default();
    (status, Zeroizing::new(body))
}

/// One pair as the keyservice answers it (`c2s`/`s2c` never leave the filter).
#[derive(Deserialize)]
pub struct PairAnswer {
    pub pair_id: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub ciphertext: Option<String>,
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
pub type Key = Zeroizing<[u8; 32]>;

impl PairAnswer {
    /// The two keys (`c2s`, `s2c`), decoded (32 bytes each).
    pub fn keys(&self) -> Result<(Key, Key), RelayError> {
        let one = |b64: &str| -> Result<Key, RelayError> {
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

    pub fn idle_ttl(&self) -> u32 {
        u32::try_from(self.idle_ttl_secs).unwrap_or(u32::MAX)
    }
}

#[derive(Deserialize)]
pub struct PairingAnswer {
    pub pairs: Vec<PairAnswer>,
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RelayError> {
    serde_json::from_slice(body).map_err(|_| RelayError::Unavailable("bad keyservice answer"))
}
