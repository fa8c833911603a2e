//! The worker's records in shared data (the key records and the relay's pair table).
//!
//! Where the host's shared data is readable and writable by every plugin of the proxy
//! ([`SharedScope::Proxy`]: proxy-wasm, and Istio sets no VM id), every record is sealed
//! ([`veil_core::crypto::shared_record`]: a key derived from the keyservice token, the
//! record's name as associated data): data keys and relay pair keys must be neither
//! readable nor forgeable there. A record that does not open (another plugin's bytes, or a
//! record from before sealing) is read as empty and counted (`veil.shared.records_rejected`),
//! so the next write replaces it.
//!
//! Where it is this filter's alone ([`SharedScope::Filter`]: the native shell's process
//! memory), records are stored as they are: no other plugin reaches them, and code that
//! could (another dynamic module in the process) could read the token as well. One rule
//! for every record.
//!
//! Opening costs ~28 µs per relay set in wasm (software AES), and a `local`-mode request
//! reads its set each time. So the worker keeps, per record name, the last sealed bytes it
//! opened or wrote and their plaintext: bytes read back equal to them (nobody wrote since)
//! are not opened again. At most one entry per record name the worker touched
//! (`pair_cache_slots / 4` sets, the eviction log, two key records): about twice the
//! records' size, ~2 MB per worker with every set of the default 4096 slots full.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use veil_core::crypto::shared_record::RecordKey;
use zeroize::Zeroizing;

use crate::host::{HostError, HostResult, SharedData, SharedScope};

/// A record's sealed bytes as last opened or written, and their plaintext.
struct Opened {
    sealed: Vec<u8>,
    plain: Zeroizing<Vec<u8>>,
}

/// The record key, the worker's last opened records, and the count of records that did not
/// open (flushed to the metric by the worker's tick).
pub struct Records {
    key: RecordKey,
    opened: RefCell<HashMap<String, Opened>>,
    opens: Cell<u64>,
    rejected: Cell<u64>,
}

impl Records {
    pub fn new(token: &str) -> Records {
        Records {
            key: RecordKey::from_token(token.as_bytes()),
            opened: RefCell::new(HashMap::new()),
            opens: Cell::new(0),
            rejected: Cell::new(0),
        }
    }

    /// Shared data seen through the records' codec: sealed unless `inner` is this filter's
    /// alone.
    pub fn over<'a>(&'a self, inner: &'a dyn SharedData) -> RecordStore<'a> {
        RecordStore {
            inner,
            records: self,
            scope: inner.shared_scope(),
        }
    }

    /// Records that did not open since the last call.
    pub fn take_rejected(&self) -> u64 {
        self.rejected.replace(0)
    }

    /// Records opened (decrypted) so far: the reads the last-opened cache did not answer.
    /// For tests and measurements.
    pub fn opens(&self) -> u64 {
        self.opens.get()
    }

    fn remember(&self, key: &str, sealed: Vec<u8>, plain: Zeroizing<Vec<u8>>) {
        if let Ok(mut m) = self.opened.try_borrow_mut() {
            m.insert(key.to_string(), Opened { sealed, plain });
        }
    }

    fn open(&self, key: &str, bytes: Vec<u8>) -> Option<Vec<u8>> {
        if let Ok(m) = self.opened.try_borrow() {
            if let Some(o) = m.get(key).filter(|o| o.sealed == bytes) {
                return Some(o.plain.to_vec());
            }
        }
        self.opens.set(self.opens.get().saturating_add(1));
        let plain = self.key.open(key, &bytes).ok()?;
        let out = plain.to_vec();
        self.remember(key, bytes, plain);
        Some(out)
    }
}

/// [`SharedData`] whose values are the worker's records: sealed where the host's scope is
/// [`SharedScope::Proxy`], as they are where it is [`SharedScope::Filter`].
pub struct RecordStore<'a> {
    inner: &'a dyn SharedData,
    records: &'a Records,
    scope: SharedScope,
}

impl SharedData for RecordStore<'_> {
    fn shared_scope(&self) -> SharedScope {
        self.scope
    }

    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        let Some((bytes, version)) = self.inner.shared_get(key)? else {
            return Ok(None);
        };
        if self.scope == SharedScope::Filter {
            return Ok(Some((bytes, version)));
        }
        match self.records.open(key, bytes) {
            Some(plain) => Ok(Some((plain, version))),
            None => {
                let n = self.records.rejected.get();
                self.records.rejected.set(n.saturating_add(1));
                // Read as empty (the callers' parsers refuse it); the version stays so a
                // CAS write replaces the record.
                Ok(Some((Vec::new(), version)))
            }
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        if self.scope == SharedScope::Filter {
            return self.inner.shared_set(key, value, cas);
        }
        let sealed = self
            .records
            .key
            .seal(key, value)
            .map_err(|_| HostError::INTERNAL)?;
        self.inner.shared_set(key, &sealed, cas)?;
        self.records
            .remember(key, sealed, Zeroizing::new(value.to_vec()));
        Ok(())
    }
}
