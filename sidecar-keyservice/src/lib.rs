//! `veil-keyservice`: Veil's native sidecar. It holds the keyring's roots (unwrapped from
//! their key-encryption key at start) and hands per-epoch data keys to the filter over a
//! loopback HTTP API authenticated by a bearer token.
//!
//! - [`config`]: environment variables and flags, validated at start.
//! - [`providers`]: the [`providers::KeyProvider`] trait (wrap/unwrap/generate a root under a
//!   KEK) and one module per provider, each with its own settings: `local` (development
//!   only), `aws_kms`, `cloudhsm` (`aws-cloudhsm`, PKCS#11), `azure_keyvault`.
//! - [`keyring`]: the keyring file (format, atomic writes, unwrapping and check values).
//! - [`server`]: the HTTP API (state, auth, handlers, problems), graceful shutdown.
//! - [`cli`]: `serve`, `keyring init`, `keyring status`; [`manage`]: `keyring rotate-root`,
//!   `rewrap`, `verify`, `destroy`, and `check`; [`migrate`]: `migrate moesif | mte-relay`.
//! - [`relay`]: the relay's pairing, session store (memory or Redis) and API.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod cli;
pub mod config;
pub mod keyring;
pub mod logging;
pub mod manage;
pub mod migrate;
pub mod providers;
pub mod relay;
pub mod server;
