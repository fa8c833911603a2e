//! What one VM (one Envoy worker thread) holds: the validated configuration, its data keys,
//! its counters and reusable buffers.

use std::cell::RefCell;
use std::rc::Rc;

use veil_core::cipher::SealingKey;
use veil_core::config::FilterConfig;
use veil_core::json::Scratch;
use veil_core::memo::SealMemo;

use crate::keycache::KeyCache;
use crate::metrics::Metrics;
use crate::ondemand::OnDemand;
use crate::relay::pairs::PairCache;

pub struct VmState {
    pub config: FilterConfig,
    pub keys: RefCell<KeyCache>,
    pub metrics: Metrics,
    /// Keys fetched on demand: callouts in flight and the streams waiting for them.
    pub ondemand: RefCell<OnDemand>,
    /// Relay pairs' key schedules, built once per VM.
    pub pairs: RefCell<PairCache>,
    buffers: RefCell<Buffers>,
}

/// Reusable per-VM working memory of the seal path.
pub struct Buffers {
    pub scratch: Scratch,
    pub out: Vec<u8>,
    pub memo: SealMemo,
}

impl VmState {
    pub fn new(config: FilterConfig, metrics: Metrics) -> VmState {
        let memo = SealMemo::new(config.seal_memo_entries, config.seal_memo_max_value_bytes);
        let keys = KeyCache::new(config.seal_memo_entries, config.seal_memo_max_value_bytes);
        VmState {
            config,
            keys: RefCell::new(keys),
            metrics,
            ondemand: RefCell::new(OnDemand::default()),
            pairs: RefCell::new(PairCache::default()),
            buffers: RefCell::new(Buffers {
                scratch: Scratch::default(),
                out: Vec::new(),
                memo,
            }),
        }
    }

    /// The key for sealing now: from this VM's cache, or else from what another worker put
    /// in shared data. No callout on the request path.
    pub fn sealing_key(&self, now_unix: i64) -> Option<Rc<SealingKey>> {
        let now_unix = now_unix.saturating_add(self.config.test_clock_offset_secs);
        let rotation = self.config.rotation;
        let mut keys = self.keys.try_borrow_mut().ok()?;
        if let Some(k) = keys.sealing_key(now_unix, rotation) {
            return Some(k);
        }
        let _ = keys.refresh_from_shared();
        keys.sealing_key(now_unix, rotation)
    }

    /// Runs `f` with the VM's reusable buffers and seal memo (fresh, memo-less ones if they
    /// are in use, which re-entrancy would cause: never a borrow panic).
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
