//! What one VM (one Envoy worker thread) holds: the validated configuration, its data keys,
//! its counters and reusable buffers.

use std::cell::RefCell;
use std::rc::Rc;

use veil_core::cipher::SealingKey;
use veil_core::config::FilterConfig;
use veil_core::json::Scratch;

use crate::keycache::KeyCache;
use crate::metrics::Metrics;

pub struct VmState {
    pub config: FilterConfig,
    pub keys: RefCell<KeyCache>,
    pub metrics: Metrics,
    buffers: RefCell<(Scratch, Vec<u8>)>,
}

impl VmState {
    pub fn new(config: FilterConfig, metrics: Metrics) -> VmState {
        VmState {
            config,
            keys: RefCell::new(KeyCache::default()),
            metrics,
            buffers: RefCell::new((Scratch::default(), Vec::new())),
        }
    }

    /// The key for sealing now: from this VM's cache, or else from what another worker put
    /// in shared data. No callout on the request path.
    pub fn sealing_key(&self, now_unix: i64) -> Option<Rc<SealingKey>> {
        let rotation = self.config.rotation;
        let mut keys = self.keys.try_borrow_mut().ok()?;
        if let Some(k) = keys.sealing_key(now_unix, rotation) {
            return Some(k);
        }
        let _ = keys.refresh_from_shared();
        keys.sealing_key(now_unix, rotation)
    }

    /// Runs `f` with the VM's reusable scratch and output buffers (fresh ones if they are
    /// in use, which re-entrancy would cause: never a borrow panic).
    pub fn with_buffers<R>(&self, f: impl FnOnce(&mut Scratch, &mut Vec<u8>) -> R) -> R {
        match self.buffers.try_borrow_mut() {
            Ok(mut b) => {
                let (scratch, out) = &mut *b;
                out.clear();
                let r = f(scratch, out);
                // Keep the capacity for the next body, within reason.
                if out.capacity() > 4 * self.config.max_body_bytes {
                    *out = Vec::new();
                }
                r
            }
            Err(_) => f(&mut Scratch::default(), &mut Vec::new()),
        }
    }
}
