//! Veil's filter logic, written once against the host seam ([`host`]): the per-stream roles
//! (seal, unseal, relay, the browser asset) and the worker-wide state (key cache, key
//! refresh, keys fetched on demand, relay pairs, counters). No proxy-wasm here: the
//! proxy-wasm shell (`veil-filter`) and the native module each implement [`host::Host`] and
//! [`host::StreamHost`] and call the entry points in [`stream`].
//!
//! Layers (each uses only those above it): `host`, `clock`, `metrics`, `reply`,
//! `keyservice`, `parked` → `keys`, `relay_cache` → `worker` → `roles` → `stream`.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod clock;
pub mod host;
pub mod keys;
pub mod keyservice;
pub mod metrics;
pub mod parked;
pub mod records;
pub mod relay_cache;
pub mod reply;
pub mod roles;
pub mod stream;
#[cfg(any(test, feature = "fake"))]
pub mod testing;
pub mod worker;

pub use stream::{refuse_unconfigured, Stream, TICK};
pub use worker::Worker;
