//! Every read of the clock. Two readings, each with its one use:
//!
//! - the host's wall clock ([`wall_ms`], [`wall_secs`]): the keyservice protocol (request
//!   signatures, pair lifetimes, key fetch timers, claim deadlines), which the keyservice
//!   checks against the same clock;
//! - the epoch clock ([`epoch_secs`]): the wall clock plus the test-only
//!   `test_clock_offset_secs`, for every choice of an epoch (the key a body is sealed
//!   under, the epochs a search covers, whether the current epoch's key is held).

use std::time::UNIX_EPOCH;

use veil_core::config::FilterConfig;

use crate::host::{Host, HostError, HostResult};

/// The host's clock in unix milliseconds.
pub fn wall_ms(h: &dyn Host) -> HostResult<i64> {
    let d = h
        .now()?
        .duration_since(UNIX_EPOCH)
        .map_err(|_| HostError::INTERNAL)?;
    i64::try_from(d.as_millis()).map_err(|_| HostError::INTERNAL)
}

/// The host's clock in unix seconds.
pub fn wall_secs(h: &dyn Host) -> HostResult<i64> {
    wall_ms(h).map(|ms| ms / 1000)
}

/// The clock epochs are chosen by (unix seconds): the wall clock moved by
/// `test_clock_offset_secs`.
pub fn epoch_secs(h: &dyn Host, config: &FilterConfig) -> HostResult<i64> {
    wall_secs(h).map(|s| s.saturating_add(config.test_clock_offset_secs))
}
