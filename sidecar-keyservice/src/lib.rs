//! `veil-keyservice`: Veil's native sidecar. It holds the keyring's roots (unwrapped from
//! their key-encryption key at start) and hands per-epoch data keys to the filter over a
//! loopback HTTP API authenticated by a bearer token.
//!
//! - [`config`]: environment variables and flags, validated at start.
//! - [`provider`]: the [`provider::KeyProvider`] trait (wrap/unwrap/generate a root under a
//!   KEK) and the development-only local provider; the cloud providers: [`aws_kms`],
//!   [`pkcs11`] (`aws-cloudhsm`), [`azure`] (`azure-keyvault`).
//! - [`keyring`]: the keyring file (format, atomic writes, unwrapping and check values).
//! - [`server`]: the HTTP API, metrics, graceful shutdown.
//! - [`cli`]: `serve`, `keyring init`, `keyring status`; [`manage`]: `keyring rotate-root`,
//!   `rewrap`, `verify`, `destroy`, and `check`.
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

pub mod aws_kms;
pub mod azure;
pub mod cli;
pub mod config;
pub mod keyring;
pub mod logging;
pub mod manage;
pub mod pkcs11;
pub mod provider;
pub mod relay;
pub mod server;
