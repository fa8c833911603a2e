//! The worker's records in Envoy shared data, sealed: every read opens, every write seals
//! ([`veil_core::crypto::shared_record`]: a key derived from the keyservice token, the
//! record's name as associated data). Shared data is readable and writable by every plugin
//! of the proxy (Istio sets no VM id); data keys and relay pair keys must be neither
//! readable nor forgeable there. Used for the key records and the relay's pair table. A
//! record that does not open (another plugin's bytes, or a record from before sealing) is
//! read as empty and counted (`veil.shared.records_rejected`), so the next write replaces
//! it.

use std::cell::Cell;

use veil_core::crypto::shared_record::RecordKey;

use crate::host::{HostError, HostResult, SharedData};

/// The record key and the count of records that did not open (flushed to the metric by
/// the worker's tick).
pub struct Records {
    key: RecordKey,
    rejected: Cell<u64>,
}

impl Records {
    pub fn new(token: &str) -> Records {
        Records {
            key: RecordKey::from_token(token.as_bytes()),
            rejected: Cell::new(0),
        }
    }

    /// Shared data seen through the seal.
    pub fn over<'a>(&'a self, inner: &'a dyn SharedData) -> Sealed<'a> {
        Sealed {
            inner,
            records: self,
        }
    }

    /// Records that did not open since the last call.
    pub fn take_rejected(&self) -> u64 {
        self.rejected.replace(0)
    }
}

/// [`SharedData`] whose values are sealed records.
pub struct Sealed<'a> {
    inner: &'a dyn SharedData,
    records: &'a Records,
}

impl SharedData for Sealed<'_> {
    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        let Some((bytes, version)) = self.inner.shared_get(key)? else {
            return Ok(None);
        };
        match self.records.key.open(key, &bytes) {
            Ok(plain) => Ok(Some((plain.to_vec(), version))),
            Err(_) => {
                let n = self.records.rejected.get();
                self.records.rejected.set(n.saturating_add(1));
                // Read as empty (the callers' parsers refuse it); the version stays so a
                // CAS write replaces the record.
                Ok(Some((Vec::new(), version)))
            }
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        let sealed = self
            .records
            .key
            .seal(key, value)
            .map_err(|_| HostError::INTERNAL)?;
        self.inner.shared_set(key, &sealed, cas)
    }
}
