//! What one worker holds (a proxy-wasm VM, or a native worker thread): the validated
//! configuration, its data keys, its relay pairs, its counters and reusable buffers.
//! Workers share nothing but the host's shared data.

use std::cell::RefCell;
use std::rc::Rc;

use veil_core::config::FilterConfig;
use veil_core::crypto::cipher::SealingKey;
use veil_core::json::Scratch;
use veil_core::memo::SealMemo;

use crate::host::SharedData;
use crate::keys::{KeyCache, KeyCtx, OnDemand, Refresh};
use crate::metrics::Metrics;
use crate::relay_cache::PairCache;

pub struct Worker {
    pub config: FilterConfig,
    pub metrics: Metrics,
    pub keys: RefCell<KeyCache>,
    /// This worker's shared-data records are sealed under a key from the keyservice token.
    pub records: crate::records::Records,
    /// Keys fetched on demand: callouts in flight and the streams waiting for them.
    pub ondemand: RefCell<OnDemand>,
    /// The current keys' fetch.
    pub refresh: RefCell<Refresh>,
    /// Relay pairs' key schedules, built once per worker.
    pub pairs: RefCell<PairCache>,
    buffers: RefCell<Buffers>,
}

/// Reusable per-worker working memory of the seal and unseal paths.
pub struct Buffers {
    pub scratch: Scratch,
    pub out: Vec<u8>,
    pub memo: SealMemo,
}

impl Worker {
    pub fn new(config: FilterConfig, metrics: Metrics) -> Worker {
        let records = crate::records::Records::new(&config.keyservice.token);
        let memo = SealMemo::new(config.seal_memo_entries, config.seal_memo_max_value_bytes);
        let keys = KeyCache::new(
            config.unseal_memo_entries,
            config.unseal_memo_max_value_bytes,
        );
        Worker {
            config,
            metrics,
            keys: RefCell::new(keys),
            ondemand: RefCell::new(OnDemand::default()),
            refresh: RefCell::new(Refresh::default()),
            pairs: RefCell::new(PairCache::default()),
            records,
            buffers: RefCell::new(Buffers {
                scratch: Scratch::default(),
                out: Vec::new(),
                memo,
            }),
        }
    }

    /// The parts of the worker the key flows use.
    pub fn key_ctx(&self) -> KeyCtx<'_> {
        KeyCtx {
            config: &self.config,
            records: &self.records,
            metrics: &self.metrics,
            cache: &self.keys,
            ondemand: &self.ondemand,
            refresh: &self.refresh,
        }
    }

    /// The key for sealing at `epoch_now` (the epoch clock, [`crate::clock::epoch_secs`]):
    /// from this worker's cache, or else from what another worker put in shared data. No
    /// callout on the request path.
    pub fn sealing_key(&self, shared: &dyn SharedData, epoch_now: i64) -> Option<Rc<SealingKey>> {
        let rotation = self.config.rotation;
        let mut keys = self.keys.try_borrow_mut().ok()?;
        if let Some(k) = keys.sealing_key(epoch_now, rotation) {
            return Some(k);
        }
        let _ = keys.refresh_from_shared(&self.records.over(shared));
        keys.sealing_key(epoch_now, rotation)
    }

    /// The current root version: from this worker's cache, or else from what another worker
    /// put in shared data (a worker that has not ticked yet still answers). No callout.
    /// The root versions a search covers (see [`crate::keys::cache::KeyCache::root_versions`]).
    pub fn root_versions(&self, shared: &dyn SharedData) -> Vec<u32> {
        let Ok(mut keys) = self.keys.try_borrow_mut() else {
            return Vec::new();
        };
        if keys.current_root().is_none() {
            let _ = keys.refresh_from_shared(&self.records.over(shared));
        }
        keys.root_versions()
    }

    pub fn current_root(&self, shared: &dyn SharedData) -> Option<u32> {
        let mut keys = self.keys.try_borrow_mut().ok()?;
        if keys.current_root().is_none() {
            let _ = keys.refresh_from_shared(&self.records.over(shared));
        }
        keys.current_root()
    }

    /// Runs `f` with the worker's reusable buffers and seal memo (fresh, memo-less ones if
    /// they are in use, which re-entrancy would cause: never a borrow panic).
    pub fn with_buffers<R>(&self, f: impl FnOnce(&mut Buffers) -> R) -> R {
        match self.buffers.try_borrow_mut() {
            Ok(mut b) => {
                b.out.clear();
                let r = f(&mut b);
                // Keep the capacity for the next body, within reason.
                if b.out.capacity() > 4 * self.config.max_body_bytes {
                    b.out = Vec::new();
                }
                r
            }
            Err(_) => f(&mut Buffers {
                scratch: Scratch::default(),
                out: Vec::new(),
                memo: SealMemo::new(0, 0),
            }),
        }
    }
}
