//! Veil's core: everything that can be a pure function.
//!
//! No I/O and no proxy-wasm here, so every piece builds for `wasm32-wasip1` and natively
//! and is tested natively. The filter's roles (`veil-roles`) call these functions between
//! the host's callbacks; the keyservice uses the key derivation and the relay crypto
//! (pairing, the replay window).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod calendar;
pub mod config;
pub mod crypto;
pub mod encoding;
pub mod header_map;
pub mod json;
pub mod keyservice_answer;
pub mod keyservice_auth;
pub mod memo;
pub mod ondemand_record;
pub mod open_memo;
pub mod percent;
pub mod percent_form;
pub mod policy;
pub mod problem;
pub mod relay;
pub mod search;
pub mod two_generation_cache;
