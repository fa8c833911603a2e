//! Veil's filter as an Envoy dynamic module (`libveil.so`), loaded by Envoy's
//! `envoy.filters.http.dynamic_modules` filter: the second shell next to the proxy-wasm one
//! (`filter/`), for standalone Envoy, the gateway and compose, where the Envoy binary is ours
//! to choose. The same filter JSON configures both (parsed by `veil_core::config`).
//!
//! - [`ffi`]: the only `unsafe` code: our own declarations of Envoy's dynamic-module ABI
//!   v0.2.0 (Envoy 1.40), the exported hooks, and safe handles over them.
//! - [`shell`]: the filter config and the per-stream exchange, written against those handles.
//!
//! Build with `cargo build -p veil-native --profile native` (target/native/libveil.so): that
//! profile unwinds on panic so every hook's `catch_unwind` can answer fail-closed; a build
//! that aborts on panic is refused at compile time.
#![deny(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

#[cfg(panic = "abort")]
compile_error!(
    "veil-native needs panic=unwind (its hooks catch panics so none crosses into Envoy): \
     build it with `cargo build -p veil-native --profile native`"
);

mod ffi;
mod host;
mod shell;
