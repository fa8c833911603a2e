//! Work a stream parks while the keys it needs are fetched on demand
//! ([`crate::keys::ondemand`]); the unseal role makes and completes it.

use std::sync::Arc;

use veil_core::crypto::keys::Kid;
use veil_core::search::{SearchBody, SearchConfig};

use crate::host::Direction;

pub enum Job {
    Search(SearchJob),
    Unseal(UnsealJob),
}

impl Job {
    /// The direction the stream resumes once the job is done.
    pub fn direction(&self) -> Direction {
        match self {
            Job::Search(_) => Direction::Request,
            Job::Unseal(_) => Direction::Response,
        }
    }
}

/// A search body ready to be rewritten once its epochs' keys are held.
pub struct SearchJob {
    pub(crate) search: Arc<SearchConfig>,
    /// Whose fields the body's queries name (events, users, companies).
    pub(crate) entity: veil_core::policy::moesif::Entity,
    pub(crate) kids: Vec<Kid>,
    pub(crate) body: SearchBody,
    /// Size of the buffered request body (replaced whole).
    pub(crate) size: usize,
}

/// A response body (decoded) ready to be unsealed once its kids are resolved.
pub struct UnsealJob {
    pub(crate) body: Vec<u8>,
    /// Size of the buffered response body (replaced whole).
    pub(crate) size: usize,
    /// The body was gzip/deflate and its `content-encoding` was dropped: it must be
    /// replaced by its decoded form whatever happens.
    pub(crate) decoded: bool,
    pub(crate) reject: bool,
    /// The response headers are held: a new body also sets `content-length`.
    pub(crate) held: bool,
}
