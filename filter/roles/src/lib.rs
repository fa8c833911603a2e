//! Veil's filter logic, written once against the host seam ([`host`]): the per-stream roles
//! (seal, unseal, relay, the browser asset) and the worker-wide state (key cache, key
//! refresh, keys fetched on demand, relay pairs, counters). No proxy-wasm here: the
//! proxy-wasm shell (`veil-filter`) and the native module each implement [`host::Host`] and
//! [`host::StreamHost`] and call the roles' entry points.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod host;
