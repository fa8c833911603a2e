//! Envoy stats counters (shown by Envoy as `wasmcustom.veil.*`).

use crate::host;

/// Counter ids, defined once per VM. A counter that could not be defined is `None` and
/// simply not counted.
#[derive(Default, Clone, Copy)]
pub struct Metrics {
    pub seal_requests: Option<u32>,
    pub seal_values: Option<u32>,
    pub seal_passthrough: Option<u32>,
    pub rejected_bad_json: Option<u32>,
    pub rejected_too_large: Option<u32>,
    pub rejected_encoding: Option<u32>,
    pub rejected_route: Option<u32>,
    pub rejected_no_key: Option<u32>,
    pub seal_failed: Option<u32>,
    pub key_fetch_ok: Option<u32>,
    pub key_fetch_failed: Option<u32>,
    pub hostcall_failed: Option<u32>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let c = |name: &str| host::define_counter(name).ok();
        Metrics {
            seal_requests: c("veil.seal.requests"),
            seal_values: c("veil.seal.values_sealed"),
            seal_passthrough: c("veil.seal.passthrough"),
            rejected_bad_json: c("veil.seal.rejected.bad_json"),
            rejected_too_large: c("veil.seal.rejected.too_large"),
            rejected_encoding: c("veil.seal.rejected.encoding"),
            rejected_route: c("veil.seal.rejected.route"),
            rejected_no_key: c("veil.seal.rejected.no_key"),
            seal_failed: c("veil.seal.failed"),
            key_fetch_ok: c("veil.keys.fetch_ok"),
            key_fetch_failed: c("veil.keys.fetch_failed"),
            hostcall_failed: c("veil.hostcall_failed"),
        }
    }

    #[inline]
    pub fn add(id: Option<u32>, by: i64) {
        if let Some(id) = id {
            host::increment(id, by);
        }
    }
}
