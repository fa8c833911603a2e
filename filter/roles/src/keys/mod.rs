//! Data keys in a worker: the cache, the key refresh and keys fetched on demand. Each flow
//! takes a [`KeyCtx`] (the parts of the worker it uses), so nothing here depends on the
//! worker or on a role.

use std::cell::RefCell;

use veil_core::config::FilterConfig;

use crate::metrics::Metrics;

pub mod cache;
pub mod ondemand;
pub mod refresh;

pub use cache::KeyCache;
pub use ondemand::OnDemand;
pub use refresh::Refresh;

/// What the key flows use of a worker.
pub struct KeyCtx<'a> {
    pub config: &'a FilterConfig,
    /// Shared-data records are sealed ([`crate::records`]).
    pub records: &'a crate::records::Records,
    pub metrics: &'a Metrics,
    pub cache: &'a RefCell<KeyCache>,
    pub ondemand: &'a RefCell<OnDemand>,
    pub refresh: &'a RefCell<Refresh>,
}
