//! Envoy stats counters (proxy-wasm shows them as `wasmcustom.veil.*`).

use crate::host::Host;

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
    pub unseal_responses: Option<u32>,
    pub unseal_values: Option<u32>,
    pub unseal_failed: Option<u32>,
    pub unseal_unknown_kid: Option<u32>,
    pub unseal_passthrough: Option<u32>,
    pub unseal_too_large: Option<u32>,
    pub unseal_rejected: Option<u32>,
    pub search_rewritten: Option<u32>,
    pub search_rejected: Option<u32>,
    pub kid_fetch_ok: Option<u32>,
    pub kid_fetch_unknown: Option<u32>,
    pub kid_fetch_failed: Option<u32>,
    pub kid_from_shared: Option<u32>,
    pub kid_waits: Option<u32>,
    pub relay_requests: Option<u32>,
    pub relay_refused: Option<u32>,
    pub relay_pairings: Option<u32>,
    pub relay_pair_fetches: Option<u32>,
    pub relay_replays: Option<u32>,
    pub relay_slot_evictions: Option<u32>,
    /// Shared-data records that did not open (another plugin's bytes, or forged).
    pub shared_records_rejected: Option<u32>,
}

impl Metrics {
    /// Defines every counter (at configuration time).
    pub fn define(h: &dyn Host) -> Metrics {
        let c = |name: &str| h.define_counter(name).ok();
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
            unseal_responses: c("veil.unseal.responses"),
            unseal_values: c("veil.unseal.values_opened"),
            unseal_failed: c("veil.unseal.values_failed"),
            unseal_unknown_kid: c("veil.unseal.values_unknown_kid"),
            unseal_passthrough: c("veil.unseal.passthrough"),
            unseal_too_large: c("veil.unseal.too_large"),
            unseal_rejected: c("veil.unseal.rejected"),
            search_rewritten: c("veil.search.rewritten"),
            search_rejected: c("veil.search.rejected"),
            kid_fetch_ok: c("veil.keys.kid_fetch_ok"),
            kid_fetch_unknown: c("veil.keys.kid_fetch_unknown"),
            kid_fetch_failed: c("veil.keys.kid_fetch_failed"),
            kid_from_shared: c("veil.keys.kid_from_shared"),
            kid_waits: c("veil.keys.kid_waits"),
            relay_requests: c("veil.relay.requests"),
            relay_refused: c("veil.relay.refused"),
            relay_pairings: c("veil.relay.pairings"),
            relay_pair_fetches: c("veil.relay.pair_fetches"),
            relay_replays: c("veil.relay.replays_refused"),
            relay_slot_evictions: c("veil.relay.slot_evictions"),
            shared_records_rejected: c("veil.shared.records_rejected"),
        }
    }

    #[inline]
    pub fn add(h: &dyn Host, id: Option<u32>, by: i64) {
        if let Some(id) = id {
            h.increment_counter(id, by);
        }
    }
}
