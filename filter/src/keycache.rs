//! Data keys in the VM: fetched from the keyservice on `on_tick`, published in Envoy shared
//! data so every worker VM uses the same fetch, and turned into cipher state once per kid.
//! The request path only looks keys up here; it never waits for a callout.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use veil_core::cipher::SealingKey;
use veil_core::keys::{Dek, Epoch, Kid, RotationMonths};

use crate::host;

/// Shared-data key holding the keyservice's last `/v1/data-keys/current` answer.
pub const SHARED_KEY: &str = "veil.keys.current.v1";

/// The keyservice's `GET /v1/data-keys/current` answer (also what shared data holds, with
/// `fetched_at` added by the filter).
#[derive(Deserialize)]
pub struct CurrentKeys {
    pub current_root: u32,
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub fetched_at: Option<i64>,
}

#[derive(Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    pub dek: String,
}

/// Why keys could not be taken from an answer. Never contains key material.
#[derive(Debug)]
pub enum KeysError {
    Json(String),
    Kid(String),
    Dek(String),
    Empty,
}

impl core::fmt::Display for KeysError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeysError::Json(e) => write!(f, "key answer is not the expected JSON: {e}"),
            KeysError::Kid(k) => write!(f, "key answer has an invalid kid {k:?}"),
            KeysError::Dek(k) => write!(f, "key answer has an invalid data key for kid {k}"),
            KeysError::Empty => write!(f, "key answer has no keys"),
        }
    }
}

pub fn parse_current(body: &[u8]) -> Result<CurrentKeys, KeysError> {
    let keys: CurrentKeys =
        serde_json::from_slice(body).map_err(|e| KeysError::Json(e.to_string()))?;
    if keys.keys.is_empty() {
        return Err(KeysError::Empty);
    }
    Ok(keys)
}

/// The keys one VM holds.
#[derive(Default)]
pub struct KeyCache {
    current_root: Option<u32>,
    keys: Vec<Rc<SealingKey>>,
    /// CAS version of the shared-data record these keys came from.
    shared_version: Option<u32>,
    /// When the shared record was fetched from the keyservice (unix seconds).
    fetched_at: Option<i64>,
}

impl KeyCache {
    /// The sealing key for `now` (current root, epoch of `now`), if held.
    pub fn sealing_key(&self, now_unix: i64, rotation: RotationMonths) -> Option<Rc<SealingKey>> {
        let root = self.current_root?;
        let kid = Kid::new(root, Epoch::containing(now_unix, rotation));
        self.keys.iter().find(|k| k.kid() == kid).cloned()
    }

    pub fn fetched_at(&self) -> Option<i64> {
        self.fetched_at
    }

    /// Replaces the VM's keys with those of `answer`. Builds cipher state only for kids
    /// not already held.
    pub fn install(&mut self, answer: &CurrentKeys) -> Result<(), KeysError> {
        let mut keys = Vec::with_capacity(answer.keys.len());
        for entry in &answer.keys {
            let kid: Kid = entry
                .kid
                .parse()
                .map_err(|_| KeysError::Kid(entry.kid.clone()))?;
            if let Some(k) = self.keys.iter().find(|k| k.kid() == kid) {
                keys.push(Rc::clone(k));
                continue;
            }
            let bytes = zeroize::Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(entry.dek.as_bytes())
                    .map_err(|_| KeysError::Dek(entry.kid.clone()))?,
            );
            let dek = Dek::from_slice(&bytes).map_err(|_| KeysError::Dek(entry.kid.clone()))?;
            keys.push(Rc::new(SealingKey::new(kid, &dek)));
        }
        self.keys = keys;
        self.current_root = Some(answer.current_root);
        self.fetched_at = answer.fetched_at;
        Ok(())
    }

    /// Loads the shared-data record if it changed since this VM last read it.
    /// Returns true if new keys were installed.
    pub fn refresh_from_shared(&mut self) -> Result<bool, String> {
        let Some((bytes, version)) =
            host::get_shared(SHARED_KEY).map_err(|e| format!("get_shared_data status {}", e.0))?
        else {
            return Ok(false);
        };
        if self.shared_version == Some(version) {
            return Ok(false);
        }
        let answer = parse_current(&bytes).map_err(|e| e.to_string())?;
        self.install(&answer).map_err(|e| e.to_string())?;
        self.shared_version = Some(version);
        Ok(true)
    }
}

/// Adds `fetched_at` to a keyservice answer for shared data, without re-serializing keys
/// through a typed struct that might drop fields.
pub fn with_fetched_at(body: &[u8], now_unix: i64) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.as_object_mut()?
        .insert("fetched_at".into(), serde_json::Value::from(now_unix));
    serde_json::to_vec(&v).ok()
}
