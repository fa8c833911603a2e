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

use std::borrow::Cow;

use thiserror::Error;

use crate::calendar::parse_time;
use crate::crypto::cipher::{CipherError, Padding, Scope, SealingKey, Spec, ValueType};
use crate::crypto::keys::{Epoch, Kid, RotationMonths};
use crate::crypto::value::Mode;
use crate::json::scan::{self, JsonError, Literal};
use crate::json::seal::seal_uri_query;
use crate::json::{Leaf, LeafAction, Policy, ValueSealer};
use crate::policy::moesif::{Entity, MoesifPolicy, MoesifRules, Route};

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

// ---------------------------------------------------------------------------------------
// Which fields are sealed
// ---------------------------------------------------------------------------------------

/// What the seal policy does with a value at a field path (`["request","body","email"]`).
pub trait FieldPolicy {
    fn action(&self, field: &[&str], leaf: Leaf<'_>) -> LeafAction;
    /// The scope and padding a deterministic value at `field` is sealed with (format v2),
    /// exactly as the collector's sealer computes them.
    fn shape(&self, field: &[&str]) -> (Scope, Padding);
}

/// The `moesif` policy seen from a search over events: a field path is walked from the
/// event root exactly as the collector's sealer walks a document.
pub struct MoesifEvents(MoesifPolicy);

impl MoesifEvents {
    pub fn new(rules: std::sync::Arc<MoesifRules>) -> MoesifEvents {
        MoesifEvents::for_entity(Entity::Event, rules)
    }

    /// The policy seen from a search over `entity` (users and companies searches name
    /// fields from the user / company root, `metadata.email`).
    pub fn for_entity(entity: Entity, rules: std::sync::Arc<MoesifRules>) -> MoesifEvents {
        MoesifEvents(MoesifPolicy::new(
            Route {
                entity,
                batch: false,
            },
            rules,
        ))
    }
}

impl FieldPolicy for MoesifEvents {
    fn action(&self, field: &[&str], leaf: Leaf<'_>) -> LeafAction {
        let p = &self.0;
        let node = field.iter().fold(p.root(), |n, seg| p.field(n, seg));
        p.leaf(node, leaf)
    }

    fn shape(&self, field: &[&str]) -> (Scope, Padding) {
        let p = &self.0;
        let mut path = String::new();
        let mut node = p.root();
        for seg in field {
            if !path.is_empty() {
                path.push('.');
            }
            if p.fold_case(node) {
                path.push_str(&seg.to_ascii_lowercase());
            } else {
                path.push_str(seg);
            }
            node = p.field(node, seg);
        }
        (p.scope(&path), p.padding())
    }
}

/// Seals in format v1 (scope and padding ignored): the search terms that find events
/// sealed before format v2.
struct V1<'k>(&'k SealingKey);

impl ValueSealer for V1<'_> {
    fn seal(
        &mut self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        self.0.seal_v1_into(spec.mode, ty, value, out)
    }
}

// ---------------------------------------------------------------------------------------
// The search body
// ---------------------------------------------------------------------------------------

/// A JSON tree that keeps what matters for a faithful rewrite: member order and the exact
/// text of numbers.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// A parsed search body.
#[derive(Debug, Clone)]
pub struct SearchBody(J);

struct Parser<'a> {
    input: &'a [u8],
    max_depth: usize,
}

impl Parser<'_> {
    fn string(&self, i: usize) -> Result<(String, usize), JsonError> {
        let (span, next) = scan::scan_string(self.input, i)?;
        let raw = self.input.get(span.start..span.end).unwrap_or_default();
        let mut buf = Vec::new();
        if span.escaped {
            scan::unescape(raw, span.start, &mut buf)?;
        } else {
            buf.extend_from_slice(raw);
        }
        let s = String::from_utf8(buf).map_err(|_| JsonError::Utf8 { offset: span.start })?;
        Ok((s, next))
    }

    fn value(&self, i: usize, depth: usize) -> Result<(J, usize), JsonError> {
        let input = self.input;
        match input.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                if depth >= self.max_depth {
                    return Err(JsonError::TooDeep {
                        offset: i,
                        limit: self.max_depth,
                    });
                }
                let object = open == b'{';
                let close = if object { b'}' } else { b']' };
                let mut members = Vec::new();
                let mut items = Vec::new();
                let mut j = scan::skip_ws(input, i + 1);
                if input.get(j) == Some(&close) {
                    let v = if object {
                        J::Obj(members)
                    } else {
                        J::Arr(items)
                    };
                    return Ok((v, j + 1));
                }
                loop {
                    if object {
                        if input.get(j) != Some(&b'"') {
                            return Err(JsonError::Unexpected {
                                offset: j,
                                expected: "'\"' starting an object key",
                            });
                        }
                        let (k, after) = self.string(j)?;
                        let c = scan::skip_ws(input, after);
                        if input.get(c) != Some(&b':') {
                            return Err(JsonError::Unexpected {
                                offset: c,
                                expected: "':' after an object key",
                            });
                        }
                        let (v, next) = self.value(scan::skip_ws(input, c + 1), depth + 1)?;
                        members.push((k, v));
                        j = next;
                    } else {
                        let (v, next) = self.value(j, depth + 1)?;
                        items.push(v);
                        j = next;
                    }
                    j = scan::skip_ws(input, j);
                    match input.get(j) {
                        Some(b',') => j = scan::skip_ws(input, j + 1),
                        Some(&c) if c == close => {
                            let v = if object {
                                J::Obj(members)
                            } else {
                                J::Arr(items)
                            };
                            return Ok((v, j + 1));
                        }
                        Some(_) => {
                            return Err(JsonError::Unexpected {
                                offset: j,
                                expected: "',' or a closing bracket",
                            })
                        }
                        None => {
                            return Err(JsonError::Eof {
                                offset: j,
                                expected: "a closing bracket",
                            })
                        }
                    }
                }
            }
            Some(b'"') => {
                let (s, next) = self.string(i)?;
                Ok((J::Str(s), next))
            }
            Some(b'-' | b'0'..=b'9') => {
                let next = scan::scan_number(input, i)?;
                let text = core::str::from_utf8(input.get(i..next).unwrap_or_default())
                    .unwrap_or_default();
                Ok((J::Num(text.to_string()), next))
            }
            Some(b't' | b'f' | b'n') => {
                let (lit, next) = scan::scan_literal(input, i)?;
                let v = match lit {
                    Literal::True => J::Bool(true),
                    Literal::False => J::Bool(false),
                    Literal::Null => J::Null,
                };
                Ok((v, next))
            }
            Some(_) => Err(JsonError::Unexpected {
                offset: i,
                expected: "a JSON value",
            }),
            None => Err(JsonError::Eof {
                offset: i,
                expected: "a JSON value",
            }),
        }
    }
}

fn write(j: &J, out: &mut Vec<u8>) {
    match j {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(true) => out.extend_from_slice(b"true"),
        J::Bool(false) => out.extend_from_slice(b"false"),
        J::Num(n) => out.extend_from_slice(n.as_bytes()),
        J::Str(s) => {
            out.push(b'"');
            scan::escape_into(s.as_bytes(), out);
            out.push(b'"');
        }
        J::Arr(items) => {
            out.push(b'[');
            for (n, v) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        J::Obj(members) => {
            out.push(b'{');
            for (n, (k, v)) in members.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                scan::escape_into(k.as_bytes(), out);
                out.extend_from_slice(b"\":");
                write(v, out);
            }
            out.push(b'}');
        }
    }
}

/// The equality queries this module understands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Query {
    Term,
    Terms,
    Match,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Term => "term",
            Query::Terms => "terms",
            Query::Match => "match",
        }
    }
}

/// One walk over the body: counts (dry run, `keys` = None) or rewrites.
struct Rewriter<'a> {
    policy: &'a dyn FieldPolicy,
    keys: Option<&'a [&'a SealingKey]>,
    terms: usize,
    rewritten: usize,
}

/// What the policy does with one scalar term value.
enum ValueAction {
    Keep,
    Seal(ValueType, Scope, Padding),
    SealUri(Scope, Padding),
}

fn scalar_leaf(v: &J) -> Option<Leaf<'_>> {
    match v {
        J::Str(s) => Some(Leaf::Str(s)),
        J::Num(n) => Some(Leaf::Number(n)),
        J::Bool(b) => Some(Leaf::Bool(*b)),
        J::Null => Some(Leaf::Null),
        J::Arr(_) | J::Obj(_) => None,
    }
}

fn get<'j>(members: &'j [(String, J)], key: &str) -> Option<&'j J> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl Rewriter<'_> {
    fn value_action(
        &self,
        q: Query,
        field: &str,
        segments: &[&str],
        v: &J,
    ) -> Result<ValueAction, SearchError> {
        let not = |why| SearchError::NotRewritable {
            query: q.name(),
            field: field.to_string(),
            why,
        };
        let Some(leaf) = scalar_leaf(v) else {
            // A form this module does not know: fine on a plaintext field, refused on a
            // sealed one.
            return match self.policy.action(segments, Leaf::Str("")) {
                LeafAction::Keep => Ok(ValueAction::Keep),
                _ => Err(not("unsupported query form on a sealed field")),
            };
        };
        let ty = match v {
            J::Num(_) => ValueType::Number,
            J::Bool(_) => ValueType::Bool,
            _ => ValueType::String,
        };
        match self.policy.action(segments, leaf) {
            LeafAction::Keep => Ok(ValueAction::Keep),
            LeafAction::Seal(Mode::Deterministic) => {
                let (scope, pad) = self.policy.shape(segments);
                Ok(ValueAction::Seal(ty, scope, pad))
            }
            LeafAction::Seal(Mode::Randomized) | LeafAction::SealUriQuery(Mode::Randomized) => Err(
                not("the field is sealed in randomized mode, so equality cannot be searched"),
            ),
            LeafAction::SealUriQuery(Mode::Deterministic) => match v {
                J::Str(_) => {
                    let (scope, pad) = self.policy.shape(segments);
                    Ok(ValueAction::SealUri(scope, pad))
                }
                _ => Ok(ValueAction::Keep),
            },
        }
    }

    /// The ciphertexts of `v` under every key (in key order), each in format v2 and v1:
    /// events sealed before and after format v2 are found alike.
    fn ciphertexts(
        &mut self,
        action: &ValueAction,
        v: &J,
        out: &mut Vec<J>,
    ) -> Result<(), SearchError> {
        let bytes: &[u8] = match v {
            J::Str(s) => s.as_bytes(),
            J::Num(n) => n.as_bytes(),
            J::Bool(true) => b"true",
            J::Bool(false) => b"false",
            J::Null | J::Arr(_) | J::Obj(_) => b"",
        };
        let keys = self.keys.unwrap_or_default();
        self.terms = self
            .terms
            .saturating_add(keys.len().saturating_mul(TERMS_PER_KEY).max(1));
        if self.terms > MAX_TERMS {
            return Err(SearchError::TooManyTerms { limit: MAX_TERMS });
        }
        for key in keys {
            for v1 in [false, true] {
                let mut buf = Vec::new();
                let r = match action {
                    ValueAction::Seal(ty, scope, pad) => {
                        let spec = Spec {
                            mode: Mode::Deterministic,
                            scope,
                            pad: *pad,
                        };
                        if v1 {
                            key.seal_v1_into(Mode::Deterministic, *ty, bytes, &mut buf)
                        } else {
                            key.seal(spec, *ty, bytes, &mut buf)
                        }
                    }
                    ValueAction::SealUri(scope, pad) => {
                        let spec = Spec {
                            mode: Mode::Deterministic,
                            scope,
                            pad: *pad,
                        };
                        if v1 {
                            seal_uri_query(bytes, &mut V1(key), spec, &mut buf).map(|_| ())
                        } else {
                            seal_uri_query(bytes, &mut &**key, spec, &mut buf).map(|_| ())
                        }
                    }
                    ValueAction::Keep => {
                        buf.extend_from_slice(bytes);
                        Ok(())
                    }
                };
                r.map_err(SearchError::Cipher)?;
                out.push(J::Str(String::from_utf8_lossy(&buf).into_owned()));
            }
        }
        Ok(())
    }

    /// `members` is the object under `term` / `terms` / `match`. Returns the new `terms`
    /// object if the query must be rewritten.
    fn query(&mut self, q: Query, members: &[(String, J)]) -> Result<Option<J>, SearchError> {
        const OPTIONS: [&str; 2] = ["boost", "_name"];
        let fields: Vec<&(String, J)> = members
            .iter()
            .filter(|(k, _)| q != Query::Terms || !OPTIONS.contains(&k.as_str()))
            .collect();
        let mut out: Option<J> = None;
        for (field, v) in fields.iter().map(|m| (&m.0, &m.1)) {
            let raw = field.strip_suffix(".raw");
            let path = raw.unwrap_or(field);
            let segments: Vec<&str> = path.split('.').collect();
            // The value(s) and the options carried over to `terms`.
            let (values, carried): (Vec<&J>, Vec<(String, J)>) = match (q, v) {
                (Query::Terms, J::Arr(items)) => (items.iter().collect(), Vec::new()),
                (Query::Term, J::Obj(o)) | (Query::Match, J::Obj(o)) => {
                    let key = if q == Query::Term { "value" } else { "query" };
                    let carried = o
                        .iter()
                        .filter(|(k, _)| OPTIONS.contains(&k.as_str()))
                        .cloned()
                        .collect();
                    match get(o, key) {
                        Some(inner) => (vec![inner], carried),
                        None => (vec![v], carried),
                    }
                }
                _ => (vec![v], Vec::new()),
            };
            let mut actions = Vec::with_capacity(values.len());
            for value in &values {
                actions.push(self.value_action(q, field, &segments, value)?);
            }
            if actions.iter().all(|a| matches!(a, ValueAction::Keep)) {
                continue;
            }
            if q == Query::Match && raw.is_none() {
                return Err(SearchError::NotRewritable {
                    query: q.name(),
                    field: field.to_string(),
                    why: "a sealed value can only be matched exactly: use its `.raw` field",
                });
            }
            if fields.len() != 1 {
                return Err(SearchError::NotRewritable {
                    query: q.name(),
                    field: field.to_string(),
                    why: "a query on a sealed field must name exactly one field",
                });
            }
            if let (Query::Term, J::Obj(o)) = (q, v) {
                if o.iter()
                    .any(|(k, v)| k == "case_insensitive" && *v == J::Bool(true))
                {
                    return Err(SearchError::NotRewritable {
                        query: q.name(),
                        field: field.to_string(),
                        why: "case_insensitive cannot apply to ciphertexts",
                    });
                }
            }
            self.rewritten += 1;
            let mut list = Vec::new();
            for (value, action) in values.iter().zip(&actions) {
                match action {
                    ValueAction::Keep => list.push((*value).clone()),
                    sealed => self.ciphertexts(sealed, value, &mut list)?,
                }
            }
            let mut obj = vec![(field.to_string(), J::Arr(list))];
            obj.extend(carried);
            if q == Query::Terms {
                obj.extend(
                    members
                        .iter()
                        .filter(|(k, _)| OPTIONS.contains(&k.as_str()))
                        .cloned(),
                );
            }
            out = Some(J::Obj(obj));
        }
        Ok(out)
    }

    /// The whole body: an object whose members are on the allow-list
    /// ([`ALLOWED_TOP`]); anything else is refused before anything leaves.
    fn body(&mut self, j: &mut J) -> Result<(), SearchError> {
        let J::Obj(members) = j else {
            return Err(not_allowed("a search body that is not an object", ""));
        };
        for (k, v) in members.iter_mut() {
            match k.as_str() {
                "query" | "post_filter" => self.clause(v, k)?,
                "aggs" | "aggregations" => self.aggs(v)?,
                "sort" => self.sort(v)?,
                "_source" | "stored_fields" | "docvalue_fields" => field_list(v, k)?,
                "size"
                | "from"
                | "track_total_hits"
                | "timeout"
                | "terminate_after"
                | "min_score"
                | "explain"
                | "version"
                | "seq_no_primary_term"
                | "track_scores" => scalar(v, k)?,
                other => return Err(not_allowed(other, "the body")),
            }
        }
        Ok(())
    }

    /// One query clause: an object with exactly one member, a query type on the allow-list.
    fn clause(&mut self, j: &mut J, at: &str) -> Result<(), SearchError> {
        let J::Obj(members) = j else {
            return Err(not_allowed("a query that is not an object", at));
        };
        let [(k, v)] = members.as_mut_slice() else {
            return Err(not_allowed("a query object with other than one member", at));
        };
        let kind = k.clone();
        match kind.as_str() {
            "bool" => self.compound(
                v,
                &kind,
                &["must", "filter", "should", "must_not"],
                &["minimum_should_match", "boost", "_name"],
            ),
            "constant_score" => self.compound(v, &kind, &["filter"], &["boost", "_name"]),
            "dis_max" => self.compound(v, &kind, &["queries"], &["tie_breaker", "boost", "_name"]),
            "nested" => self.compound(
                v,
                &kind,
                &["query"],
                &["path", "score_mode", "ignore_unmapped", "boost", "_name"],
            ),
            "match_all" | "match_none" => options_only(v, &kind, &["boost", "_name"]),
            "exists" => options_only(v, &kind, &["field", "boost", "_name"]),
            "ids" => options_only(v, &kind, &["values", "boost", "_name"]),
            "term" | "terms" | "match" => {
                let q = match kind.as_str() {
                    "term" => Query::Term,
                    "terms" => Query::Terms,
                    _ => Query::Match,
                };
                let J::Obj(o) = &*v else {
                    return Err(not_allowed("a query that is not an object", &kind));
                };
                if let Some(new) = self.query(q, o)? {
                    *k = "terms".to_string();
                    *v = new;
                }
                Ok(())
            }
            "prefix"
            | "wildcard"
            | "regexp"
            | "fuzzy"
            | "range"
            | "match_phrase"
            | "match_phrase_prefix"
            | "match_bool_prefix" => {
                let J::Obj(o) = &*v else {
                    return Err(not_allowed("a query that is not an object", &kind));
                };
                self.not_on_sealed(&kind, o)
            }
            // Not on the allow-list: query_string, simple_query_string, multi_match,
            // combined_fields, more_like_this, span_*, terms_set, script, script_score,
            // function_score, intervals, wrapper, percolate, … Each can carry a value to a
            // field Veil cannot see or check, so none is forwarded.
            other => Err(not_allowed(other, at)),
        }
    }

    /// `bool`, `constant_score`, `dis_max`, `nested`: `clauses` hold a query or a list of
    /// queries; `options` are scalars (or, for `path`, a field name).
    fn compound(
        &mut self,
        v: &mut J,
        kind: &str,
        clauses: &[&str],
        options: &[&str],
    ) -> Result<(), SearchError> {
        let J::Obj(members) = v else {
            return Err(not_allowed("a query that is not an object", kind));
        };
        for (k, v) in members.iter_mut() {
            if clauses.contains(&k.as_str()) {
                match v {
                    J::Arr(items) => {
                        for item in items {
                            self.clause(item, kind)?;
                        }
                    }
                    other => self.clause(other, kind)?,
                }
            } else if options.contains(&k.as_str()) {
                scalar(v, k)?;
            } else {
                return Err(not_allowed(k, kind));
            }
        }
        Ok(())
    }

    /// `aggs`: name → definition.
    fn aggs(&mut self, j: &mut J) -> Result<(), SearchError> {
        let J::Obj(aggs) = j else {
            return Err(not_allowed("aggregations that are not an object", "aggs"));
        };
        for (_, def) in aggs.iter_mut() {
            self.aggregation(def)?;
        }
        Ok(())
    }

    /// One aggregation definition: one type on the allow-list, its options, and optional
    /// sub-aggregations and `meta`. Options that carry values (`include`, `exclude`,
    /// `missing`, `ranges`) are refused on a sealed field: they would be plaintext.
    fn aggregation(&mut self, def: &mut J) -> Result<(), SearchError> {
        let J::Obj(members) = def else {
            return Err(not_allowed("an aggregation that is not an object", "aggs"));
        };
        let mut types = 0;
        for (k, v) in members.iter_mut() {
            let kind = k.as_str();
            let options: &[&str] = match kind {
                "aggs" | "aggregations" => {
                    self.aggs(v)?;
                    continue;
                }
                "meta" => continue,
                "filter" => {
                    types += 1;
                    self.clause(v, "filter")?;
                    continue;
                }
                "filters" => {
                    types += 1;
                    self.filters(v)?;
                    continue;
                }
                "top_hits" => {
                    types += 1;
                    self.top_hits(v)?;
                    continue;
                }
                "terms" => &[
                    "field",
                    "size",
                    "shard_size",
                    "min_doc_count",
                    "shard_min_doc_count",
                    "order",
                    "show_term_doc_count_error",
                    "collect_mode",
                    "execution_hint",
                    "missing",
                    "include",
                    "exclude",
                ],
                "date_histogram" => &[
                    "field",
                    "calendar_interval",
                    "fixed_interval",
                    "interval",
                    "format",
                    "time_zone",
                    "min_doc_count",
                    "extended_bounds",
                    "hard_bounds",
                    "order",
                    "offset",
                    "keyed",
                    "missing",
                ],
                "histogram" => &[
                    "field",
                    "interval",
                    "min_doc_count",
                    "extended_bounds",
                    "hard_bounds",
                    "order",
                    "offset",
                    "keyed",
                    "missing",
                ],
                "range" | "date_range" => {
                    &["field", "ranges", "keyed", "format", "time_zone", "missing"]
                }
                "cardinality" => &["field", "precision_threshold", "missing"],
                "value_count" | "min" | "max" | "avg" | "sum" | "stats" | "extended_stats" => {
                    &["field", "missing", "format"]
                }
                "percentiles" => &["field", "percents", "keyed", "tdigest", "missing"],
                "missing" => &["field"],
                "nested" | "reverse_nested" => &["path"],
                "global" => &[],
                other => return Err(not_allowed(other, "aggs")),
            };
            types += 1;
            self.agg_options(kind, v, options)?;
        }
        if types != 1 {
            return Err(not_allowed(
                "an aggregation with other than one type",
                "aggs",
            ));
        }
        Ok(())
    }

    fn agg_options(&mut self, kind: &str, v: &J, allowed: &[&str]) -> Result<(), SearchError> {
        let J::Obj(o) = v else {
            return Err(not_allowed("an aggregation that is not an object", kind));
        };
        let field = match get(o, "field") {
            Some(J::Str(f)) => Some(f.as_str()),
            Some(_) => return Err(not_allowed("a `field` that is not a string", kind)),
            None => None,
        };
        for (k, v) in o {
            if !allowed.contains(&k.as_str()) {
                return Err(not_allowed(k, kind));
            }
            // Nothing below an option is a query or a script: plain data only.
            no_objects_named(v, &["script", "params"], kind)?;
            if matches!(k.as_str(), "include" | "exclude" | "missing" | "ranges") {
                if let Some(f) = field {
                    if self.field_is_sealed(f) {
                        return Err(SearchError::NotRewritable {
                            query: "aggregation",
                            field: f.to_string(),
                            why: "`include`, `exclude`, `missing` and `ranges` carry values, \
                                  which cannot be sealed here: refused on a sealed field",
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn filters(&mut self, v: &mut J) -> Result<(), SearchError> {
        let J::Obj(o) = v else {
            return Err(not_allowed("`filters` that is not an object", "aggs"));
        };
        for (k, v) in o.iter_mut() {
            match (k.as_str(), v) {
                ("filters", J::Obj(named)) => {
                    for (_, q) in named.iter_mut() {
                        self.clause(q, "filters")?;
                    }
                }
                ("filters", J::Arr(items)) => {
                    for q in items.iter_mut() {
                        self.clause(q, "filters")?;
                    }
                }
                ("other_bucket" | "other_bucket_key" | "keyed", v) => scalar(v, k)?,
                (other, _) => return Err(not_allowed(other, "filters")),
            }
        }
        Ok(())
    }

    fn top_hits(&mut self, v: &mut J) -> Result<(), SearchError> {
        let J::Obj(o) = v else {
            return Err(not_allowed("`top_hits` that is not an object", "aggs"));
        };
        for (k, v) in o.iter_mut() {
            match k.as_str() {
                "size" | "from" => scalar(v, k)?,
                "sort" => self.sort(v)?,
                "_source" | "stored_fields" | "docvalue_fields" => field_list(v, k)?,
                other => return Err(not_allowed(other, "top_hits")),
            }
        }
        Ok(())
    }

    /// `sort`: field names, `_score`, `_doc`, or `{field: order | {options}}`. A `missing`
    /// other than `_first` / `_last` is a value: refused on a sealed field.
    fn sort(&mut self, v: &J) -> Result<(), SearchError> {
        let items: Vec<&J> = match v {
            J::Arr(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            match item {
                J::Str(_) => {}
                J::Obj(o) => {
                    for (field, spec) in o {
                        if field.starts_with('_') && !matches!(field.as_str(), "_score" | "_doc") {
                            return Err(not_allowed(field, "sort"));
                        }
                        match spec {
                            J::Str(_) => {}
                            J::Obj(opts) => {
                                for (k, ov) in opts {
                                    match k.as_str() {
                                        "order" | "mode" | "unmapped_type" | "format"
                                        | "numeric_type" => scalar(ov, k)?,
                                        "missing" => {
                                            let keyword = matches!(ov, J::Str(m) if m == "_first" || m == "_last");
                                            if !keyword && self.field_is_sealed(field) {
                                                return Err(not_allowed(
                                                    "`missing` with a value on a sealed field",
                                                    "sort",
                                                ));
                                            }
                                            scalar(ov, k)?;
                                        }
                                        other => return Err(not_allowed(other, "sort")),
                                    }
                                }
                            }
                            _ => {
                                return Err(not_allowed(
                                    "a sort that is not a name or object",
                                    "sort",
                                ))
                            }
                        }
                    }
                }
                _ => return Err(not_allowed("a sort that is not a name or object", "sort")),
            }
        }
        Ok(())
    }

    /// Does the policy seal anything (of any type) at this field (`.raw` removed)?
    fn field_is_sealed(&self, field: &str) -> bool {
        let path = field.strip_suffix(".raw").unwrap_or(field);
        let segments: Vec<&str> = path.split('.').collect();
        [Leaf::Str("x"), Leaf::Number("1"), Leaf::Bool(true)]
            .into_iter()
            .any(|leaf| !matches!(self.policy.action(&segments, leaf), LeafAction::Keep))
    }

    /// Queries that cannot match ciphertexts (ranges, prefixes, patterns, phrases) are
    /// refused on sealed fields: forwarded, they would carry the protected plaintext.
    fn not_on_sealed(&self, kind: &str, members: &[(String, J)]) -> Result<(), SearchError> {
        const VALUES: [&str; 8] = ["value", "query", "gt", "gte", "lt", "lte", "from", "to"];
        for (field, v) in members {
            let path = field.strip_suffix(".raw").unwrap_or(field);
            let segments: Vec<&str> = path.split('.').collect();
            let values: Vec<&J> = match v {
                J::Obj(o) => o
                    .iter()
                    .filter(|(k, _)| VALUES.contains(&k.as_str()))
                    .map(|(_, v)| v)
                    .collect(),
                other => vec![other],
            };
            let sealed = values.iter().any(|v| {
                scalar_leaf(v).is_some_and(|leaf| {
                    !matches!(self.policy.action(&segments, leaf), LeafAction::Keep)
                })
            });
            if sealed {
                return Err(SearchError::NotRewritable {
                    query: match kind {
                        "prefix" => "prefix",
                        "wildcard" => "wildcard",
                        "regexp" => "regexp",
                        "fuzzy" => "fuzzy",
                        "range" => "range",
                        _ => "match_phrase",
                    },
                    field: field.clone(),
                    why: "only equality (term, terms, match on .raw) can be searched on a sealed field",
                });
            }
        }
        Ok(())
    }
}

/// A construct not on the allow-list. `construct` is a DSL name or a description; a name
/// that is not a plain identifier is not echoed (it could be anything a client sent).
fn not_allowed(construct: &str, at: &str) -> SearchError {
    let plain = |s: &str| {
        s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b' ' | b'`'))
    };
    SearchError::NotAllowed {
        construct: if plain(construct) {
            construct.to_string()
        } else {
            "<a member>".to_string()
        },
        at: if plain(at) {
            at.to_string()
        } else {
            String::new()
        },
    }
}

/// A scalar option (number, string, boolean, null).
fn scalar(v: &J, at: &str) -> Result<(), SearchError> {
    match v {
        J::Arr(_) | J::Obj(_) => Err(not_allowed("a structured value", at)),
        _ => Ok(()),
    }
}

/// `_source`-like options: field names (strings, lists of strings, `{includes, excludes}`,
/// `{field, format}`) or a boolean.
fn field_list(v: &J, at: &str) -> Result<(), SearchError> {
    match v {
        J::Bool(_) | J::Str(_) => Ok(()),
        J::Arr(items) => items.iter().try_for_each(|i| field_list(i, at)),
        J::Obj(o) => o.iter().try_for_each(|(k, v)| match k.as_str() {
            "includes" | "excludes" | "include" | "exclude" | "field" | "format" => {
                field_list(v, at)
            }
            other => Err(not_allowed(other, at)),
        }),
        J::Null | J::Num(_) => Err(not_allowed("a value that is not a field name", at)),
    }
}

/// A query that only takes options (`match_all`, `exists`, `ids`): its members are on
/// `allowed`, and their values are scalars or lists of scalars.
fn options_only(v: &J, kind: &str, allowed: &[&str]) -> Result<(), SearchError> {
    let J::Obj(o) = v else {
        return Err(not_allowed("a query that is not an object", kind));
    };
    for (k, v) in o {
        if !allowed.contains(&k.as_str()) {
            return Err(not_allowed(k, kind));
        }
        match v {
            J::Arr(items) => items.iter().try_for_each(|i| scalar(i, k))?,
            other => scalar(other, k)?,
        }
    }
    Ok(())
}

/// Refuses any object member named in `names` anywhere below `v`.
fn no_objects_named(v: &J, names: &[&str], at: &str) -> Result<(), SearchError> {
    match v {
        J::Arr(items) => items
            .iter()
            .try_for_each(|i| no_objects_named(i, names, at)),
        J::Obj(o) => o.iter().try_for_each(|(k, v)| {
            if names.contains(&k.as_str()) {
                Err(not_allowed(k, at))
            } else {
                no_objects_named(v, names, at)
            }
        }),
        _ => Ok(()),
    }
}

impl SearchBody {
    /// Parses a search body (strict JSON, nesting at most `max_depth`).
    pub fn parse(input: &[u8], max_depth: usize) -> Result<SearchBody, SearchError> {
        scan::check_text(input)?;
        let p = Parser { input, max_depth };
        let start = scan::skip_ws(input, 0);
        if start >= input.len() {
            return Err(JsonError::Empty.into());
        }
        let (j, next) = p.value(start, 0)?;
        let end = scan::skip_ws(input, next);
        if end != input.len() {
            return Err(JsonError::Trailing { offset: end }.into());
        }
        Ok(SearchBody(j))
    }

    /// How many equality queries name a field `policy` seals deterministically (each needs
    /// rewriting). Errors as [`SearchBody::rewrite`] would, without any key.
    pub fn sealed_terms(&self, policy: &dyn FieldPolicy) -> Result<usize, SearchError> {
        let mut copy = self.0.clone();
        let mut r = Rewriter {
            policy,
            keys: None,
            terms: 0,
            rewritten: 0,
        };
        r.body(&mut copy)?;
        Ok(r.rewritten)
    }

    /// Rewrites every equality query on a deterministically sealed field into a `terms`
    /// query listing the value sealed under each of `keys` (one per epoch). Returns how
    /// many queries were rewritten.
    pub fn rewrite(
        &mut self,
        policy: &dyn FieldPolicy,
        keys: &[&SealingKey],
    ) -> Result<usize, SearchError> {
        let mut r = Rewriter {
            policy,
            keys: Some(keys),
            terms: 0,
            rewritten: 0,
        };
        r.body(&mut self.0)?;
        Ok(r.rewritten)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write(&self.0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::Dek;
    use crate::json::unseal_document;
    use crate::policy::moesif::MoesifOptions;
    use std::sync::Arc;

    const NOW: i64 = 1_795_000_000; // 2026-11-18T09:46:40Z

    #[test]
    fn query_params_are_percent_decoded() {
        let p = "/search/~/search/events?x=1&from=2026-01-01T00%3A00%3A00%2B01%3A00&to=now";
        assert_eq!(
            query_param(p, "from").as_deref(),
            Some("2026-01-01T00:00:00+01:00")
        );
        assert_eq!(query_param(p, "to").as_deref(), Some("now"));
        assert_eq!(query_param(p, "nope"), None);
        assert_eq!(query_param("/x", "from"), None);
        assert_eq!(
            query_param("/x?from=-7d&from=-1d", "from").as_deref(),
            Some("-7d")
        );
    }

    fn epochs(path: &str, rotation: u16, max: usize) -> Result<Vec<String>, SearchError> {
        let r = RotationMonths::new(rotation).unwrap();
        search_epochs(path, NOW, r, DEFAULT_FROM, max)
            .map(|v| v.iter().map(|e| e.label()).collect())
    }

    #[test]
    fn the_time_range_selects_epochs() {
        // Default: the last year, through now.
        assert_eq!(epochs("/s", 12, 24).unwrap(), ["2025-01", "2026-01"]);
        assert_eq!(epochs("/s?from=-7d", 12, 24).unwrap(), ["2026-01"]);
        assert_eq!(
            epochs("/s?from=2024-06-01&to=2025-03-01", 12, 24).unwrap(),
            ["2024-01", "2025-01"]
        );
        // `to` gets a day of late arrivals: events of Dec 31 may be sealed on Jan 1.
        assert_eq!(
            epochs("/s?from=2025-12-01&to=2025-12-31T12:00:00Z", 12, 24).unwrap(),
            ["2025-01", "2026-01"]
        );
        // Never past now: the next epoch holds nothing yet.
        assert_eq!(
            epochs("/s?from=-1d&to=%2B400d", 12, 24).unwrap(),
            ["2026-01"]
        );
        assert_eq!(
            epochs("/s?from=%2B1d&to=%2B2d", 12, 24).unwrap(),
            ["2026-01"]
        );
        assert_eq!(
            epochs("/s?from=-3M", 1, 24).unwrap(),
            ["2026-08", "2026-09", "2026-10", "2026-11"]
        );
        assert_eq!(epochs("/s?from=-23M", 1, 24).unwrap().len(), 24);
        assert_eq!(
            epochs("/s?from=-24M", 1, 24),
            Err(SearchError::TooManyEpochs {
                epochs: 25,
                limit: 24
            })
        );
        assert_eq!(
            epochs("/s?from=-1d&to=-2d", 12, 24),
            Err(SearchError::Order)
        );
        assert_eq!(
            epochs("/s?from=soon", 12, 24),
            Err(SearchError::Time("from"))
        );
        assert_eq!(epochs("/s?to=later", 12, 24), Err(SearchError::Time("to")));
    }

    #[test]
    fn events_search_paths() {
        assert!(is_events_search("/search/~/search/events"));
        assert!(is_events_search("/search/~/search/events?from=-7d"));
        assert!(is_events_search("/v1/search/~/search/events/"));
        assert!(!is_events_search("/search/~/search/users"));
        assert!(!is_events_search("/search/~/count/events"));
    }

    fn key(kid: &str) -> SealingKey {
        let kid: Kid = kid.parse().unwrap();
        let mut dek = [0u8; 32];
        dek[..7].copy_from_slice(&kid.to_string().as_bytes()[..7]);
        SealingKey::new(kid, &Dek::from_bytes(dek))
    }

    /// A deterministic v1 value (sealed before format v2).
    fn det(key: &SealingKey, ty: ValueType, v: &str) -> String {
        let mut out = Vec::new();
        key.seal_v1_into(Mode::Deterministic, ty, v.as_bytes(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A deterministic v2 value of `field` (default scope, padded).
    fn det2(key: &SealingKey, field: &str, ty: ValueType, v: &str) -> String {
        let scope = Scope::field(field);
        let spec = Spec {
            mode: Mode::Deterministic,
            scope: &scope,
            pad: Padding::Buckets,
        };
        let mut out = Vec::new();
        key.seal(spec, ty, v.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The terms a value becomes under one key: v2 of its field, then v1.
    fn both(key: &SealingKey, field: &str, ty: ValueType, v: &str) -> Vec<String> {
        vec![det2(key, field, ty, v), det(key, ty, v)]
    }

    fn policy(options: serde_json::Value) -> MoesifEvents {
        let o: MoesifOptions = serde_json::from_value(options).unwrap();
        MoesifEvents::new(Arc::new(MoesifRules::new(&o)))
    }

    fn rewrite(
        body: &str,
        p: &MoesifEvents,
        keys: &[&SealingKey],
    ) -> Result<serde_json::Value, SearchError> {
        let mut b = SearchBody::parse(body.as_bytes(), 128)?;
        b.rewrite(p, keys)?;
        Ok(serde_json::from_slice(&b.to_vec()).unwrap())
    }

    #[test]
    fn the_fixture_search_is_rewritten_for_every_epoch() {
        let (k1, k2) = (key("r1.2025-01"), key("r1.2026-01"));
        let body = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/moesif/search-request-plaintext.json"
        ))
        .unwrap();
        let p = policy(serde_json::json!({}));
        let parsed = SearchBody::parse(body.as_bytes(), 128).unwrap();
        assert_eq!(parsed.sealed_terms(&p).unwrap(), 1);
        let v = rewrite(&body, &p, &[&k1, &k2]).unwrap();
        let must = &v["post_filter"]["bool"]["must"][0];
        assert!(must.get("term").is_none());
        let f = "request.body.patient.email";
        let want: Vec<String> = [&k1, &k2]
            .iter()
            .flat_map(|k| both(k, f, ValueType::String, "jane@example.com"))
            .collect();
        assert_eq!(
            must["terms"]["request.body.patient.email.raw"],
            serde_json::json!(want)
        );
        // The terms *aggregation* and everything else are untouched.
        let orig: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["aggs"], orig["aggs"]);
        assert_eq!(v["sort"], orig["sort"]);
        assert_eq!(v["size"], orig["size"]);
        // Ciphertexts open to the plaintext term.
        let text = serde_json::to_vec(&must).unwrap();
        let mut out = Vec::new();
        let keys = vec![key("r1.2025-01"), key("r1.2026-01")];
        let stats = unseal_document(&text, &keys, 16, &mut out).unwrap();
        assert_eq!(stats.opened, 4);
        assert!(String::from_utf8(out).unwrap().contains("jane@example.com"));
    }

    #[test]
    fn term_terms_and_match_forms() {
        let k = key("r1.2026-01");
        let p = policy(serde_json::json!({}));
        let email = both(&k, "request.body.email", ValueType::String, "a@b.c");
        let amount = both(&k, "request.body.amount", ValueType::Number, "1.50");
        let email_in_amount = both(&k, "request.body.amount", ValueType::String, "a@b.c");
        let v = rewrite(
            r#"{"query":{"bool":{"filter":[
                {"term":{"request.body.email":{"value":"a@b.c","boost":2}}},
                {"terms":{"request.body.amount.raw":[1.50,"a@b.c"],"boost":1.0}},
                {"match":{"metadata.plan.raw":{"query":"gold","operator":"and"}}},
                {"term":{"user_id.raw":"u1"}},
                {"terms":{"company_id":["c1","c2"]}},
                {"match":{"request.verb":"POST"}},
                {"term":{"response.status":201}},
                {"term":{"request.uri.raw":"https://x.io/p?q=1"}},
                {"term":{"request.body.note":null}}
            ]}}}"#,
            &p,
            &[&k],
        )
        .unwrap();
        let f = &v["query"]["bool"]["filter"];
        assert_eq!(
            f[0],
            serde_json::json!({"terms": {"request.body.email": email, "boost": 2}})
        );
        assert_eq!(
            f[1],
            serde_json::json!({"terms": {"request.body.amount.raw": [&amount[0], &amount[1], &email_in_amount[0], &email_in_amount[1]], "boost": 1.0}})
        );
        assert_eq!(
            f[2],
            serde_json::json!({"terms": {"metadata.plan.raw": both(&k, "metadata.plan", ValueType::String, "gold")}})
        );
        // Plaintext fields stay as they are.
        assert_eq!(f[3], serde_json::json!({"term": {"user_id.raw": "u1"}}));
        assert_eq!(
            f[4],
            serde_json::json!({"terms": {"company_id": ["c1", "c2"]}})
        );
        assert_eq!(f[5], serde_json::json!({"match": {"request.verb": "POST"}}));
        assert_eq!(f[6], serde_json::json!({"term": {"response.status": 201}}));
        assert_eq!(
            f[8],
            serde_json::json!({"term": {"request.body.note": null}})
        );
        // A URL keeps scheme, host and path; the query value is sealed as the sealer does.
        let uri = f[7]["terms"]["request.uri.raw"][0].as_str().unwrap();
        let tag = Scope::field("request.uri");
        assert!(
            uri.starts_with(&format!(
                "https://x.io/p?q=veil:v2:r1.2026-01:d:{}:",
                tag.as_str()
            )),
            "{uri}"
        );
        let uri = f[7]["terms"]["request.uri.raw"][1].as_str().unwrap();
        assert!(
            uri.starts_with("https://x.io/p?q=veil:v1:r1.2026-01:d:"),
            "{uri}"
        );
        // The exact number text is what is sealed.
        let mut body =
            SearchBody::parse(br#"{"query":{"term":{"request.body.n":1.50}}}"#, 8).unwrap();
        body.rewrite(&p, &[&k]).unwrap();
        let n = both(&k, "request.body.n", ValueType::Number, "1.50");
        assert!(String::from_utf8(body.to_vec()).unwrap().contains(&n[0]));
        assert!(String::from_utf8(body.to_vec()).unwrap().contains(&n[1]));
    }

    #[test]
    fn options_change_what_is_rewritten() {
        let k = key("r1.2026-01");
        // Numbers not sealed: a number term stays; headers not sealed: stays.
        let p = policy(
            serde_json::json!({"encrypt_numerics": false, "encrypt_request_headers": false}),
        );
        let body = r#"{"query":{"bool":{"must":[{"term":{"request.body.n":5}},{"term":{"request.headers.Host.raw":"h"}}]}}}"#;
        let v = rewrite(body, &p, &[&k]).unwrap();
        assert_eq!(v, serde_json::from_str::<serde_json::Value>(body).unwrap());
        // A skipped body field stays readable, so its term stays.
        let p = policy(serde_json::json!({"request_body_skip": ["email"]}));
        let body = r#"{"query":{"term":{"request.body.email.raw":"a@b.c"}}}"#;
        assert_eq!(
            rewrite(body, &p, &[&k]).unwrap(),
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        );
    }

    #[test]
    fn terms_that_cannot_be_rewritten_are_refused() {
        let k = key("r1.2026-01");
        let p = policy(serde_json::json!({}));
        let err = |body: &str, p: &MoesifEvents| rewrite(body, p, &[&k]).unwrap_err().to_string();
        // Booleans are randomized by default.
        assert!(
            err(r#"{"query":{"term":{"request.body.consent":true}}}"#, &p).contains("randomized")
        );
        // `match` on an analyzed (non-.raw) sealed field.
        assert!(err(r#"{"query":{"match":{"request.body.email":"a@b.c"}}}"#, &p).contains(".raw"));
        // Unknown forms on sealed fields.
        assert!(err(
            r#"{"query":{"terms":{"request.body.email":{"index":"x","id":"1"}}}}"#,
            &p
        )
        .contains("unsupported"));
        assert!(err(
            r#"{"query":{"term":{"request.body.email":{"value":"a","case_insensitive":true}}}}"#,
            &p
        )
        .contains("case_insensitive"));
        let rp = policy(serde_json::json!({"mode": "randomized"}));
        assert!(err(r#"{"query":{"term":{"ip_address":"1.2.3.4"}}}"#, &rp).contains("randomized"));
        // Messages never contain the value.
        let e = err(
            r#"{"query":{"match":{"request.body.secret":"hunter2hunter2"}}}"#,
            &p,
        );
        assert!(!e.contains("hunter2"), "{e}");
        // Too many terms.
        let many: Vec<String> = (0..MAX_TERMS + 1).map(|i| format!("v{i}")).collect();
        let body =
            serde_json::json!({"query": {"terms": {"request.body.email": many}}}).to_string();
        assert_eq!(
            rewrite(&body, &p, &[&k]).unwrap_err(),
            SearchError::TooManyTerms { limit: MAX_TERMS }
        );
    }

    #[test]
    fn queries_that_cannot_match_ciphertexts_are_refused_on_sealed_fields() {
        let k = key("r1.2026-01");
        let p = policy(serde_json::json!({"encrypt_numerics": false}));
        for body in [
            r#"{"query":{"prefix":{"request.body.email.raw":"jane@"}}}"#,
            r#"{"query":{"wildcard":{"request.body.email":{"value":"j*e"}}}}"#,
            r#"{"query":{"range":{"request.body.dob":{"gte":"1980-01-01"}}}}"#,
            r#"{"query":{"match_phrase":{"request.body.notes":"improved glucose"}}}"#,
        ] {
            let e = rewrite(body, &p, &[&k]).unwrap_err().to_string();
            assert!(e.contains("only equality"), "{body}: {e}");
            assert!(!e.contains("jane") && !e.contains("glucose"), "{e}");
        }
        // On plaintext fields (or plaintext numbers) they are fine.
        for body in [
            r#"{"query":{"range":{"request.time":{"gte":"2026-01-01","lt":"2026-02-01"}}}}"#,
            r#"{"query":{"range":{"request.body.amount":{"gte":10}}}}"#,
            r#"{"query":{"prefix":{"user_id.raw":"user_"}}}"#,
        ] {
            let v = rewrite(body, &p, &[&k]).unwrap();
            assert_eq!(v, serde_json::from_str::<serde_json::Value>(body).unwrap());
        }
    }

    #[test]
    fn aggregation_filters_are_rewritten_but_definitions_are_not() {
        let k = key("r1.2026-01");
        let p = policy(serde_json::json!({}));
        let v = rewrite(
            r#"{"aggs":{"a":{"filter":{"term":{"request.body.email.raw":"x@y.z"}},
                           "aggs":{"b":{"terms":{"field":"request.body.email.raw","size":5}}}}}}"#,
            &p,
            &[&k],
        )
        .unwrap();
        assert_eq!(
            v["aggs"]["a"]["filter"]["terms"]["request.body.email.raw"],
            serde_json::json!(both(&k, "request.body.email", ValueType::String, "x@y.z"))
        );
        assert_eq!(
            v["aggs"]["a"]["aggs"]["b"],
            serde_json::json!({"terms": {"field": "request.body.email.raw", "size": 5}})
        );
    }

    #[test]
    fn bodies_round_trip_exactly_and_bad_ones_are_errors() {
        let p = policy(serde_json::json!({}));
        let text = r#"{"size":50,"n":1.50,"big":123456789012345678901234567890,"e":1e400,"s":"caf\u00e9 \"q\"","a":[true,false,null,{}],"o":{}}"#;
        let b = SearchBody::parse(text.as_bytes(), 8).unwrap();
        // Not a search body: its members are not on the allow-list.
        assert!(matches!(
            b.sealed_terms(&p),
            Err(SearchError::NotAllowed { .. })
        ));
        let out = String::from_utf8(b.to_vec()).unwrap();
        assert_eq!(out, text.replace("\\u00e9", "é"));
        assert!(matches!(
            SearchBody::parse(b"{\"a\":1} x", 8),
            Err(SearchError::Json(JsonError::Trailing { .. }))
        ));
        assert!(matches!(
            SearchBody::parse(b"", 8),
            Err(SearchError::Json(JsonError::Empty))
        ));
        assert!(matches!(
            SearchBody::parse(b"{\"a\":01}", 8),
            Err(SearchError::Json(_))
        ));
        let deep = "[".repeat(2000) + &"]".repeat(2000);
        assert!(matches!(
            SearchBody::parse(deep.as_bytes(), 128),
            Err(SearchError::Json(JsonError::TooDeep { limit: 128, .. }))
        ));
    }

    #[test]
    fn search_kids_use_the_given_root() {
        let e: Vec<Epoch> = vec!["2025-01".parse().unwrap(), "2026-01".parse().unwrap()];
        let kids: Vec<String> = search_kids(3, &e).iter().map(|k| k.to_string()).collect();
        assert_eq!(kids, ["r3.2025-01", "r3.2026-01"]);
    }

    /// Issue #18: each construct of the review carried `jane@example.com` to the vendor
    /// unchanged (the rewrite was a deny-list). Each is now refused before anything leaves,
    /// and the refusal never echoes the value.
    #[test]
    fn constructs_off_the_allow_list_are_refused() {
        let k = key("r1.2026-01");
        let p = policy(serde_json::json!({}));
        for body in [
            r#"{"query":{"span_term":{"request.body.email":"jane@example.com"}}}"#,
            r#"{"query":{"terms_set":{"request.body.email":{"terms":["jane@example.com"],"minimum_should_match_field":"n"}}}}"#,
            r#"{"query":{"combined_fields":{"query":"jane@example.com","fields":["request.body.email"]}}}"#,
            r#"{"query":{"more_like_this":{"fields":["request.body.email"],"like":"jane@example.com","min_term_freq":1}}}"#,
            r#"{"query":{"bool":{"filter":[{"script":{"script":{"source":"doc['request.body.email.raw'].value == params.e","params":{"e":"jane@example.com"}}}}]}}}"#,
            r#"{"query":{"script_score":{"query":{"match_all":{}},"script":{"source":"1","params":{"e":"jane@example.com"}}}}}"#,
            r#"{"query":{"query_string":{"query":"request.body.email:jane@example.com"}}}"#,
            r#"{"query":{"simple_query_string":{"query":"jane@example.com"}}}"#,
            r#"{"query":{"multi_match":{"query":"jane@example.com","fields":["request.body.*"]}}}"#,
            r#"{"query":{"function_score":{"query":{"term":{"user_id":"u"}},"functions":[{"filter":{"term":{"request.body.email.raw":"jane@example.com"}},"weight":2}]}}}"#,
            r#"{"query":{"wrapper":{"query":"eyJ0ZXJtIjp7InJlcXVlc3QuYm9keS5lbWFpbC5yYXciOiJqYW5lQGV4YW1wbGUuY29tIn19"}}}"#,
            r#"{"query":{"intervals":{"request.body.notes":{"match":{"query":"jane@example.com"}}}}}"#,
            r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","include":["jane@example.com"]}}}}"#,
            r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","include":"jane@example\\.com"}}}}"#,
            r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","exclude":["jane@example.com"]}}}}"#,
            r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","missing":"jane@example.com"}}}}"#,
            r#"{"aggs":{"a":{"terms":{"field":"user_id","script":{"source":"'jane@example.com'"}}}}}"#,
            r#"{"aggs":{"a":{"significant_text":{"field":"request.body.notes"}}}}"#,
            r#"{"sort":[{"_script":{"type":"string","script":{"source":"'jane@example.com'"}}}]}"#,
            r#"{"sort":[{"request.body.email.raw":{"order":"asc","missing":"jane@example.com"}}]}"#,
            r#"{"search_after":["jane@example.com"]}"#,
            r#"{"highlight":{"fields":{"request.body.email":{"highlight_query":{"term":{"request.body.email":"jane@example.com"}}}}}}"#,
            r#"{"query":{"term":{"request.body.email.raw":"x"},"extra":{"term":{"request.body.email.raw":"jane@example.com"}}}}"#,
            r#"{"query":{"bool":{"must":[{"match_all":{}}],"unknown":{"term":{"request.body.email.raw":"jane@example.com"}}}}}"#,
            r#"["jane@example.com"]"#,
        ] {
            let e = rewrite(body, &p, &[&k]);
            let Err(e) = e else {
                panic!("forwarded: {body}");
            };
            let text = e.to_string();
            assert!(!text.contains("jane"), "{body}: {text}");
            let parsed = SearchBody::parse(body.as_bytes(), 128).unwrap();
            assert!(parsed.sealed_terms(&p).is_err(), "{body}");
        }
    }

    /// What the allow-list lets through, unchanged or rewritten.
    #[test]
    fn allowed_constructs_pass_or_are_rewritten() {
        let k = key("r1.2026-01");
        let p = policy(serde_json::json!({}));
        for body in [
            r#"{"query":{"match_all":{}},"size":10,"from":0,"track_total_hits":true,"_source":{"includes":["request.*"]},"sort":["_score",{"request.time":"desc"},{"request.body.email.raw":{"order":"asc","missing":"_last"}}]}"#,
            r#"{"query":{"bool":{"filter":[{"exists":{"field":"request.body.email"}},{"ids":{"values":["a","b"]}},{"range":{"request.time":{"gte":"now-7d"}}}],"minimum_should_match":1}}}"#,
            r#"{"aggs":{"t":{"terms":{"field":"user_id","include":["u1"],"size":5},"aggs":{"c":{"cardinality":{"field":"company_id"}}}},"h":{"date_histogram":{"field":"request.time","calendar_interval":"day"},"meta":{"x":1}},"top":{"top_hits":{"size":1,"sort":[{"request.time":"desc"}]}}}}"#,
            r#"{"query":{"constant_score":{"filter":{"dis_max":{"queries":[{"match_none":{}}],"tie_breaker":0.5}}}}}"#,
        ] {
            let v = rewrite(body, &p, &[&k]).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(
                v,
                serde_json::from_str::<serde_json::Value>(body).unwrap(),
                "{body}"
            );
        }
        // Equality inside any allowed compound is rewritten.
        let v = rewrite(
            r#"{"query":{"nested":{"path":"x","query":{"constant_score":{"filter":{"term":{"request.body.email.raw":"a@b.c"}}}}}},
                "aggs":{"f":{"filters":{"filters":{"one":{"term":{"request.body.email.raw":"a@b.c"}}}}}}}"#,
            &p,
            &[&k],
        )
        .unwrap();
        let want = serde_json::json!(both(&k, "request.body.email", ValueType::String, "a@b.c"));
        assert_eq!(
            v["query"]["nested"]["query"]["constant_score"]["filter"]["terms"]
                ["request.body.email.raw"],
            want
        );
        assert_eq!(
            v["aggs"]["f"]["filters"]["filters"]["one"]["terms"]["request.body.email.raw"],
            want
        );
    }

    /// Issue #18: `/search/~/search/users` and `/count/events` were not inspected at all.
    /// They are classified, and their bodies go through the same check; every other
    /// endpoint with a body is refused.
    #[test]
    fn every_management_endpoint_with_a_body_is_checked_or_refused() {
        assert_eq!(
            management_route("/search/~/search/events?from=-7d"),
            Management::Search(Entity::Event)
        );
        assert_eq!(
            management_route("/v1/search/~/search/users/"),
            Management::Search(Entity::User)
        );
        assert_eq!(
            management_route("/search/~/search/companies"),
            Management::Search(Entity::Company)
        );
        assert_eq!(
            management_route("/search/~/count/events"),
            Management::Count(Entity::Event)
        );
        assert_eq!(
            management_route("/v1/search/~/count/users"),
            Management::Count(Entity::User)
        );
        for other in [
            "/search/~/search/actions",
            "/search/~/delete/events",
            "/workspaces/123",
            "/v1/~/dashboards",
            "/search/~/searchx/events",
            "/search/events",
            "",
        ] {
            assert_eq!(management_route(other), Management::Refused, "{other}");
        }
        // A users search names user fields: metadata is sealed, user_id is not.
        let k = key("r1.2026-01");
        let o: MoesifOptions = serde_json::from_value(serde_json::json!({})).unwrap();
        let users = MoesifEvents::for_entity(Entity::User, Arc::new(MoesifRules::new(&o)));
        let mut b = SearchBody::parse(
            br#"{"query":{"bool":{"must":[{"term":{"metadata.email.raw":"jane@example.com"}},{"term":{"user_id":"u1"}}]}}}"#,
            64,
        )
        .unwrap();
        assert_eq!(b.rewrite(&users, &[&k]).unwrap(), 1);
        let v: serde_json::Value = serde_json::from_slice(&b.to_vec()).unwrap();
        assert_eq!(
            v["query"]["bool"]["must"][0]["terms"]["metadata.email.raw"],
            serde_json::json!(both(
                &k,
                "metadata.email",
                ValueType::String,
                "jane@example.com"
            ))
        );
        assert_eq!(
            v["query"]["bool"]["must"][1],
            serde_json::json!({"term": {"user_id": "u1"}})
        );
        // A count body is the same language: a construct off the list is refused.
        let count = SearchBody::parse(
            br#"{"query":{"span_term":{"request.body.email":"jane@example.com"}}}"#,
            64,
        )
        .unwrap();
        assert!(count.sealed_terms(&p_events()).is_err());
    }

    fn p_events() -> MoesifEvents {
        policy(serde_json::json!({}))
    }

    /// Issue #18: "a search only covers the current root version". The kids of a search are
    /// every root version × every epoch; with both formats, a value sealed under any of
    /// them, before or after format v2, is among the terms.
    #[test]
    fn searches_cover_every_root_version_and_both_formats() {
        let e: Vec<Epoch> = vec!["2025-01".parse().unwrap(), "2026-01".parse().unwrap()];
        let kids: Vec<String> = search_kids_for(&[1, 2], &e)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            kids,
            ["r1.2025-01", "r1.2026-01", "r2.2025-01", "r2.2026-01"]
        );
        let keys: Vec<SealingKey> = kids.iter().map(|k| key(k)).collect();
        let refs: Vec<&SealingKey> = keys.iter().collect();
        let p = p_events();
        let v = rewrite(
            r#"{"query":{"term":{"request.body.email.raw":"jane@example.com"}}}"#,
            &p,
            &refs,
        )
        .unwrap();
        let terms = v["query"]["terms"]["request.body.email.raw"]
            .as_array()
            .unwrap();
        assert_eq!(terms.len(), 8);
        // Data sealed under the old root in 2025, in v1 (before this change) and in v2, is
        // found by the plaintext search.
        let old = key("r1.2025-01");
        for sealed in both(
            &old,
            "request.body.email",
            ValueType::String,
            "jane@example.com",
        ) {
            assert!(terms.contains(&serde_json::json!(sealed)));
        }
    }
}
