//! Plaintext search over sealed events: rewriting a management-API search body (Elasticsearch
//! query DSL, Moesif's `POST /search/~/search/events`) so that its equality terms on fields
//! the seal policy seals deterministically match the ciphertexts the vendor stores.
//!
//! A deterministic ciphertext depends on the kid, i.e. on the epoch the value was sealed in.
//! The time range of the search (`from` / `to` query parameters) says which epochs can hold
//! matching events, so each plaintext term becomes a `terms` query listing its ciphertext
//! under every one of those epochs' keys (current root):
//!
//! ```text
//! {"term":  {"request.body.patient.email.raw": "jane@example.com"}}
//!   ⇒ {"terms": {"request.body.patient.email.raw": ["veil:v1:r1.2025-01:d:…", "veil:v1:r1.2026-01:d:…"]}}
//! ```
//!
//! Which fields are sealed, and how, is asked of the seal policy itself by walking the
//! field's path ([`FieldPolicy`]), so the search and the collector can never disagree.
//! Terms on plaintext fields are left as they are. A term that names a sealed field but
//! cannot be rewritten (randomized mode, or `match` on an analyzed field) is an error: the
//! search would otherwise send the plaintext the seal policy protects to the vendor.
//!
//! Everything here is pure: the filter supplies the clock, the keys and the body.
//!
//! Here: the settings and limits, the time range → epochs → kids, and which management
//! endpoint a body goes to. The body as a JSON tree is `tree`; which fields are sealed,
//! `fields`; the rewriter and its allow-list, `rewrite`; times are read by
//! [`crate::calendar::parse_time`].

use std::borrow::Cow;

use thiserror::Error;

use crate::calendar::parse_time;
use crate::crypto::cipher::{CipherError, SealingKey};
use crate::crypto::keys::{Epoch, Kid, RotationMonths};
use crate::json::scan::JsonError;
use crate::policy::moesif::{Entity, MoesifRules};

mod fields;
mod rewrite;
#[cfg(test)]
mod tests;
mod tree;

pub use fields::{FieldPolicy, MoesifEvents};
use tree::J;

/// How much later than its own timestamp an event may have been sealed (SDKs batch and
/// retry). The epochs searched run from `from` to `to` plus this, never past now.
pub const LATE_ARRIVAL_SECS: i64 = 86_400;

/// Default `default_from`: a search without `from` covers the last year.
pub const DEFAULT_FROM: &str = "-1y";

/// Default and largest `max_epochs`.
pub const DEFAULT_MAX_EPOCHS: usize = 24;
pub const MAX_MAX_EPOCHS: usize = 240;

/// Most ciphertext terms one search may be rewritten into (values × keys × formats).
pub const MAX_TERMS: usize = 4096;

/// Ciphertext terms per value and key: format v2 (written today) and v1 (data sealed before).
pub const TERMS_PER_KEY: usize = 2;

/// The `search` settings of an unseal route (validated configuration).
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// The seal policy whose deterministic fields are searchable.
    pub rules: std::sync::Arc<MoesifRules>,
    /// `from` when the request has none (a time as [`crate::calendar::parse_time`] reads it).
    pub default_from: String,
    /// Most epochs one search covers; a wider range is refused.
    pub max_epochs: usize,
}

/// Why a search cannot be rewritten. Messages name fields and limits, never values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SearchError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("query parameter `{0}` is not a time (RFC 3339, `now`, or relative like `-7d`, `-24h`, `now-1M`)")]
    Time(&'static str),
    #[error("`from` is after `to`")]
    Order,
    #[error("the time range covers {epochs} key epochs, more than max_epochs ({limit}); narrow `from`/`to`")]
    TooManyEpochs { epochs: usize, limit: usize },
    #[error("`{query}` on `{field}`: {why}")]
    NotRewritable {
        query: &'static str,
        field: String,
        why: &'static str,
    },
    #[error("the search needs more than {limit} ciphertext terms (values × epochs)")]
    TooManyTerms { limit: usize },
    #[error("sealing a search term failed: {0}")]
    Cipher(CipherError),
    /// Fail closed: the management path forwards only what it can check.
    #[error("{construct} (in {at}) is not on the search allow-list: Veil cannot check that it carries no sealed value in plaintext")]
    NotAllowed { construct: String, at: String },
}

// ---------------------------------------------------------------------------------------
// Time range
// ---------------------------------------------------------------------------------------

/// The value of query parameter `name` in a request path (`/x?from=-7d&to=now`),
/// percent-decoded (`+` is kept: it is an offset sign in times). The first occurrence wins.
pub fn query_param<'a>(path: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let query = path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    match crate::percent::decode(s) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// The epochs a search on `path` (its `from` / `to` parameters) must cover, oldest first:
/// from the epoch of `from` through that of `to` + [`LATE_ARRIVAL_SECS`], never past the
/// epoch of `now` (nothing is sealed in the future). Absent `from` is `default_from`,
/// absent `to` is `now`.
pub fn search_epochs(
    path: &str,
    now_unix: i64,
    rotation: RotationMonths,
    default_from: &str,
    max_epochs: usize,
) -> Result<Vec<Epoch>, SearchError> {
    let from = match query_param(path, "from") {
        Some(v) => parse_time(&v, now_unix).ok_or(SearchError::Time("from"))?,
        None => parse_time(default_from, now_unix).ok_or(SearchError::Time("from"))?,
    };
    let to = match query_param(path, "to") {
        Some(v) => parse_time(&v, now_unix).ok_or(SearchError::Time("to"))?,
        None => now_unix,
    };
    if from > to {
        return Err(SearchError::Order);
    }
    let first = from.min(now_unix);
    let last = to.saturating_add(LATE_ARRIVAL_SECS).clamp(first, now_unix);
    // One more than the limit tells "too many" apart from "exactly the limit".
    let epochs = Epoch::covering(first, last, rotation, max_epochs.saturating_add(1));
    if epochs.len() > max_epochs {
        let total = count_epochs(first, last, rotation);
        return Err(SearchError::TooManyEpochs {
            epochs: total,
            limit: max_epochs,
        });
    }
    Ok(epochs)
}

fn count_epochs(first: i64, last: i64, rotation: RotationMonths) -> usize {
    let a = Epoch::containing(first, rotation);
    let b = Epoch::containing(last, rotation);
    let months = |e: Epoch| i64::from(e.year()) * 12 + i64::from(e.month());
    let n = (months(b) - months(a)) / i64::from(rotation.get()) + 1;
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The kids a search under `root` needs, one per epoch, in epoch order.
pub fn search_kids(root: u32, epochs: &[Epoch]) -> Vec<Kid> {
    epochs.iter().map(|e| Kid::new(root, *e)).collect()
}

/// What a management-API request that carries a body is, by its path (after the route
/// prefix). Fail closed: only the searches and counts Veil can check go on; every other
/// endpoint with a body is refused (it might carry a sealed field's value in plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Management {
    /// `/search/~/search/{events,users,companies}`: checked and rewritten.
    Search(Entity),
    /// `/search/~/count/{events,users,companies}`: the same query language, checked and
    /// rewritten.
    Count(Entity),
    /// Any other endpoint: a body is refused (`400 bad-search`).
    Refused,
}

impl Management {
    /// The entity whose fields the body's queries name, if the body can be checked.
    pub fn entity(self) -> Option<Entity> {
        match self {
            Management::Search(e) | Management::Count(e) => Some(e),
            Management::Refused => None,
        }
    }
}

/// Classifies `rest` (the path after the route prefix; query string ignored; `/v1` before
/// `search` and one trailing slash accepted).
pub fn management_route(rest: &str) -> Management {
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    let path = path.strip_suffix('/').unwrap_or(path);
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let Some(tail) = path.strip_prefix("/search/~/") else {
        return Management::Refused;
    };
    let (kind, name) = tail.split_once('/').unwrap_or((tail, ""));
    let entity = match name {
        "events" => Entity::Event,
        "users" => Entity::User,
        "companies" => Entity::Company,
        _ => return Management::Refused,
    };
    match kind {
        "search" => Management::Search(entity),
        "count" => Management::Count(entity),
        _ => Management::Refused,
    }
}

/// The kids a search needs: every root version in `roots` × every epoch, in root then
/// epoch order. Data sealed under an older root version is found too (a root is rotated,
/// its old data stays at the vendor).
pub fn search_kids_for(roots: &[u32], epochs: &[Epoch]) -> Vec<Kid> {
    roots
        .iter()
        .flat_map(|r| epochs.iter().map(move |e| Kid::new(*r, *e)))
        .collect()
}

/// Is `rest` (the path after the route prefix) the events search?
pub fn is_events_search(rest: &str) -> bool {
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    let path = path.strip_suffix('/').unwrap_or(path);
    let path = path.strip_prefix("/v1").unwrap_or(path);
    path == "/search/~/search/events"
}

/// A parsed search body.
#[derive(Debug, Clone)]
pub struct SearchBody(J);

impl SearchBody {
    /// Parses a search body (strict JSON, nesting at most `max_depth`).
    pub fn parse(input: &[u8], max_depth: usize) -> Result<SearchBody, SearchError> {
        Ok(SearchBody(tree::parse(input, max_depth)?))
    }

    /// How many equality queries name a field `policy` seals deterministically (each needs
    /// rewriting). Errors as [`SearchBody::rewrite`] would, without any key.
    pub fn sealed_terms(&self, policy: &dyn FieldPolicy) -> Result<usize, SearchError> {
        let mut copy = self.0.clone();
        rewrite::rewrite(&mut copy, policy, None)
    }

    /// Rewrites every equality query on a deterministically sealed field into a `terms`
    /// query listing the value sealed under each of `keys` (one per epoch). Returns how
    /// many queries were rewritten.
    pub fn rewrite(
        &mut self,
        policy: &dyn FieldPolicy,
        keys: &[&SealingKey],
    ) -> Result<usize, SearchError> {
        rewrite::rewrite(&mut self.0, policy, Some(keys))
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        tree::write(&self.0, &mut out);
        out
    }
}
