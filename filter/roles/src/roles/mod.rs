//! The per-stream roles, each a state machine of its own.

pub mod asset;
pub mod relay;
pub mod seal;
pub mod unseal;
