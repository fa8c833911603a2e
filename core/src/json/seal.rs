//! The streaming sealer: one pass over the body, structure bytes copied through in runs,
//! only the leaves the policy seals replaced. No tree, no per-value allocation beyond the
//! output buffer. It is a visitor of the structural walker ([`super::walk`]), which holds the
//! nesting (bounded, no recursion); the sealer keeps the policy node and the field path.

use thiserror::Error;

use super::scan::{self, JsonError, Literal, StrSpan};
use super::walk::{self, Visitor};
use crate::crypto::cipher::{CipherError, Padding, Scope, SealingKey, Spec, ValueType};
use crate::crypto::value::Mode;
use crate::memo::SealMemo;

/// Seals one value (format v2). `&SealingKey` seals directly; [`Memoized`] adds the
/// deterministic memo.
pub trait ValueSealer {
    fn seal(
        &mut self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError>;
}

impl ValueSealer for &SealingKey {
    #[inline]
    fn seal(
        &mut self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        SealingKey::seal(self, spec, ty, value, out)
    }
}

/// A key plus the memo of its deterministic seals (see [`crate::memo`]).
pub struct Memoized<'a> {
    pub key: &'a SealingKey,
    pub memo: &'a mut SealMemo,
}

impl ValueSealer for Memoized<'_> {
    #[inline]
    fn seal(
        &mut self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        match spec.mode {
            Mode::Deterministic => self.memo.seal(self.key, spec, ty, value, out),
            Mode::Randomized => self.key.seal(spec, ty, value, out),
        }
    }
}

/// A leaf value as the policy sees it: strings decoded, numbers as their exact text.
#[derive(Debug, Clone, Copy)]
pub enum Leaf<'a> {
    Str(&'a str),
    Number(&'a str),
    Bool(bool),
    Null,
}

/// What to do with one leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafAction {
    Keep,
    Seal(Mode),
    /// A URL string: keep scheme, host and path readable; seal each query value and the
    /// fragment.
    SealUriQuery(Mode),
}

/// A policy is an automaton over the document's path: one `Node` per open container, moved
/// by field names and array elements, asked once per leaf. Nodes are small `Copy` values so
/// the walker's stack stays cheap.
pub trait Policy {
    type Node: Copy;
    fn root(&self) -> Self::Node;
    fn field(&self, parent: Self::Node, key: &str) -> Self::Node;
    fn element(&self, parent: Self::Node) -> Self::Node;
    fn leaf(&self, node: Self::Node, leaf: Leaf<'_>) -> LeafAction;
    /// A field whose string value the policy needs before walking this object's members
    /// (e.g. Moesif's `transfer_encoding`, which may come after `body`).
    fn lookahead(&self, _node: Self::Node) -> Option<&'static str> {
        None
    }
    /// Called with the look-ahead field's string value (None if absent or not a string).
    fn with_lookahead(&self, node: Self::Node, _value: Option<&str>) -> Self::Node {
        node
    }
    /// Whether the names of `parent`'s members are case-insensitive (HTTP headers): they
    /// are lower-cased in the field path that scopes a deterministic value.
    fn fold_case(&self, _parent: Self::Node) -> bool {
        false
    }
    /// The named domain of a deterministic value at `path` (dotted, array indices dropped),
    /// if the profile's `deterministic_domains` names one; else the field is its own scope.
    fn domain(&self, _path: &str) -> Option<Scope> {
        None
    }
    /// The scope of a deterministic value at `path`: its domain, else the field itself.
    fn scope(&self, path: &str) -> Scope {
        self.domain(path).unwrap_or_else(|| Scope::field(path))
    }
    /// Length padding of sealed values (the profile's `pad` option).
    fn padding(&self) -> Padding {
        Padding::Buckets
    }
}

#[derive(Debug, Error)]
pub enum SealError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("sealing failed: {0}")]
    Cipher(#[from] CipherError),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealStats {
    /// Values replaced by a Veil value (each sealed query value counts).
    pub sealed: u32,
}

/// The sealer's frame of an open container: its policy node and the length of its field
/// path (members append to it).
#[derive(Clone, Copy)]
struct Frame<N> {
    node: N,
    path_len: usize,
}

/// Reused buffers, so a VM seals many bodies without reallocating.
#[derive(Default)]
pub struct Scratch {
    text: Vec<u8>,
    key: Vec<u8>,
    uri: Vec<u8>,
    /// The field path of the current value: `request.body.email` (array indices dropped).
    path: String,
    /// Field scopes already computed (one SHA-256 per path, not per value).
    scopes: FieldScopes,
}

/// The most field scopes a [`FieldScopes`] holds before it starts over: paths come from
/// request bodies, so the cache is bounded (≈ 1024 × (path + 12 bytes)).
const FIELD_SCOPES_MAX: usize = 1024;

/// A bounded cache of [`Scope::field`]: the scope tag is a SHA-256 of the field path, the
/// same for every value at that path, and a document repeats its paths (every event of a
/// batch, every header of every request). A pure function's results: nothing secret.
#[derive(Default)]
struct FieldScopes {
    map: std::collections::HashMap<Box<str>, Scope, foldhash::fast::RandomState>,
}

impl FieldScopes {
    fn field(&mut self, path: &str) -> Scope {
        if let Some(s) = self.map.get(path) {
            return *s;
        }
        let scope = Scope::field(path);
        if self.map.len() >= FIELD_SCOPES_MAX {
            self.map.clear();
        }
        self.map.insert(path.into(), scope);
        scope
    }
}

/// Seals `input` (a whole JSON document) into `out` per `policy` under `key`.
/// On error `out` holds a partial document and must be discarded.
pub fn seal_document<P: Policy>(
    input: &[u8],
    policy: &P,
    key: &SealingKey,
    max_depth: usize,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<SealStats, SealError> {
    seal_document_with(input, policy, &mut &*key, max_depth, scratch, out)
}

/// [`seal_document`] with any [`ValueSealer`] (e.g. [`Memoized`]).
pub fn seal_document_with<P: Policy, S: ValueSealer>(
    input: &[u8],
    policy: &P,
    sealer: &mut S,
    max_depth: usize,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<SealStats, SealError> {
    let text = scan::check_text(input)?;
    let mut w = Sealer {
        input,
        text,
        policy,
        sealer,
        out,
        copied: 0,
        stats: SealStats::default(),
        scratch,
        node: policy.root(),
        max_depth,
    };
    w.out.reserve(input.len() * 2 + 64);
    w.scratch.path.clear();
    walk::walk_document(input, max_depth, &mut w)?;
    let rest = input.get(w.copied..).unwrap_or_default();
    w.out.extend_from_slice(rest);
    Ok(w.stats)
}

/// The sealer as a visitor of the walk: copies structure bytes through in runs and replaces
/// the leaves the policy seals.
struct Sealer<'a, 'p, 'k, 's, P: Policy, S: ValueSealer> {
    input: &'a [u8],
    /// `input` as text (validated once).
    text: &'a str,
    policy: &'p P,
    sealer: &'k mut S,
    out: &'s mut Vec<u8>,
    /// Input bytes before this index are already in `out`.
    copied: usize,
    stats: SealStats,
    scratch: &'s mut Scratch,
    /// The policy node of the value the walk visits next.
    node: P::Node,
    max_depth: usize,
}

impl<P: Policy, S: ValueSealer> Visitor for Sealer<'_, '_, '_, '_, P, S> {
    type Error = SealError;
    type Frame = Frame<P::Node>;

    #[inline]
    fn open(&mut self, start: usize, object: bool) -> Result<Self::Frame, SealError> {
        if object {
            if let Some(name) = self.policy.lookahead(self.node) {
                let v = self.lookahead(start, name)?;
                self.node = self.policy.with_lookahead(self.node, v.as_deref());
            }
        }
        Ok(Frame {
            node: self.node,
            path_len: self.scratch.path.len(),
        })
    }

    /// Sets the member's node, and the field path to the parent's plus this name.
    #[inline]
    fn key(&mut self, frame: &Self::Frame, span: StrSpan) -> Result<(), SealError> {
        let fold = self.policy.fold_case(frame.node);
        let path = &mut self.scratch.path;
        path.truncate(frame.path_len);
        if frame.path_len > 0 {
            path.push('.');
        }
        self.node = if span.escaped {
            self.scratch.key.clear();
            scan::unescape(
                self.input.get(span.start..span.end).unwrap_or_default(),
                span.start,
                &mut self.scratch.key,
            )?;
            let key = core::str::from_utf8(&self.scratch.key).unwrap_or_default();
            push_name(path, key, fold);
            self.policy.field(frame.node, key)
        } else {
            let key = str_at(self.text, span.start, span.end);
            push_name(path, key, fold);
            self.policy.field(frame.node, key)
        };
        Ok(())
    }

    #[inline]
    fn element(&mut self, frame: &Self::Frame) {
        self.scratch.path.truncate(frame.path_len);
        self.node = self.policy.element(frame.node);
    }

    #[inline]
    fn close(&mut self, frame: Self::Frame, _end: usize) -> Result<(), SealError> {
        self.scratch.path.truncate(frame.path_len);
        Ok(())
    }

    #[inline]
    fn string(&mut self, start: usize, span: StrSpan, end: usize) -> Result<(), SealError> {
        self.string_leaf(self.node, start, span, end)
    }

    #[inline]
    fn number(&mut self, start: usize, end: usize) -> Result<(), SealError> {
        let text = str_at(self.text, start, end);
        let action = self.policy.leaf(self.node, Leaf::Number(text));
        self.apply(action, ValueType::Number, text.as_bytes(), start, end)
    }

    #[inline]
    fn literal(&mut self, lit: Literal, start: usize, end: usize) -> Result<(), SealError> {
        let leaf = match lit {
            Literal::True => Leaf::Bool(true),
            Literal::False => Leaf::Bool(false),
            Literal::Null => Leaf::Null,
        };
        let action = self.policy.leaf(self.node, leaf);
        if lit != Literal::Null {
            let text = str_at(self.text, start, end);
            self.apply(action, ValueType::Bool, text.as_bytes(), start, end)?;
        }
        Ok(())
    }
}

impl<P: Policy, S: ValueSealer> Sealer<'_, '_, '_, '_, P, S> {
    fn string_leaf(
        &mut self,
        node: P::Node,
        start: usize,
        span: StrSpan,
        end: usize,
    ) -> Result<(), SealError> {
        let input = self.input;
        let raw = input.get(span.start..span.end).unwrap_or_default();
        if !span.escaped {
            let text = str_at(self.text, span.start, span.end);
            let action = self.policy.leaf(node, Leaf::Str(text));
            return self.apply(action, ValueType::String, raw, start, end);
        }
        let mut text = core::mem::take(&mut self.scratch.text);
        text.clear();
        let result = scan::unescape(raw, span.start, &mut text)
            .map_err(SealError::from)
            .and_then(|()| {
                let s = core::str::from_utf8(&text).unwrap_or_default();
                let action = self.policy.leaf(node, Leaf::Str(s));
                self.apply(action, ValueType::String, &text, start, end)
            });
        self.scratch.text = text;
        result
    }

    /// Replaces input `start..end` (a whole JSON value) per `action`.
    fn apply(
        &mut self,
        action: LeafAction,
        ty: ValueType,
        value: &[u8],
        start: usize,
        end: usize,
    ) -> Result<(), SealError> {
        if action == LeafAction::Keep {
            return Ok(());
        }
        let before = self.input.get(self.copied..start).unwrap_or_default();
        self.out.extend_from_slice(before);
        self.copied = end;
        self.out.push(b'"');
        let (LeafAction::Seal(mode) | LeafAction::SealUriQuery(mode)) = action else {
            return Ok(());
        };
        // Randomized values carry no scope: the SHA-256 of the path is spent only when used.
        let scope = match mode {
            Mode::Deterministic => {
                let path = &self.scratch.path;
                match self.policy.domain(path) {
                    Some(domain) => domain,
                    None => self.scratch.scopes.field(path),
                }
            }
            Mode::Randomized => Scope::UNSCOPED,
        };
        let spec = Spec {
            mode,
            scope: &scope,
            pad: self.policy.padding(),
        };
        match action {
            LeafAction::Keep => {}
            LeafAction::Seal(_) => {
                self.sealer.seal(spec, ty, value, self.out)?;
                self.stats.sealed += 1;
            }
            LeafAction::SealUriQuery(_) => {
                let mut uri = core::mem::take(&mut self.scratch.uri);
                uri.clear();
                let r = seal_uri_query(value, &mut *self.sealer, spec, &mut uri);
                if let Ok(n) = r {
                    self.stats.sealed += n;
                    scan::escape_into(&uri, self.out);
                }
                self.scratch.uri = uri;
                r?;
            }
        }
        self.out.push(b'"');
        Ok(())
    }

    /// Finds the string value of direct member `name` of the object starting at `i`.
    fn lookahead(&mut self, i: usize, name: &str) -> Result<Option<String>, SealError> {
        let input = self.input;
        let mut j = scan::skip_ws(input, i + 1);
        if input.get(j) == Some(&b'}') {
            return Ok(None);
        }
        loop {
            if input.get(j) != Some(&b'"') {
                return Err(JsonError::Unexpected {
                    offset: j,
                    expected: "'\"' starting an object key",
                }
                .into());
            }
            let (kspan, after) = scan::scan_string(input, j)?;
            let mut key = Vec::new();
            scan::unescape(
                input.get(kspan.start..kspan.end).unwrap_or_default(),
                kspan.start,
                &mut key,
            )?;
            let k = scan::skip_ws(input, after);
            if input.get(k) != Some(&b':') {
                return Err(JsonError::Unexpected {
                    offset: k,
                    expected: "':' after an object key",
                }
                .into());
            }
            let v = scan::skip_ws(input, k + 1);
            if key == name.as_bytes() && input.get(v) == Some(&b'"') {
                let (vspan, _) = scan::scan_string(input, v)?;
                let mut val = Vec::new();
                scan::unescape(
                    input.get(vspan.start..vspan.end).unwrap_or_default(),
                    vspan.start,
                    &mut val,
                )?;
                return Ok(String::from_utf8(val).ok());
            }
            let after_v = walk::skip_value(input, v, self.max_depth)?;
            let n = scan::skip_ws(input, after_v);
            match input.get(n) {
                Some(b',') => j = scan::skip_ws(input, n + 1),
                _ => return Ok(None),
            }
        }
    }
}

/// Appends a member name to a field path, lower-cased when the names are case-insensitive.
fn push_name(path: &mut String, name: &str, fold: bool) {
    if fold {
        path.extend(name.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        path.push_str(name);
    }
}

/// Spans end on ASCII delimiters of validated text, so this is an O(1) boundary check
/// that never fails; an empty string stands in rather than a panic if it ever did.
#[inline]
fn str_at(text: &str, start: usize, end: usize) -> &str {
    text.get(start..end).unwrap_or_default()
}

/// Seals each query value, the fragment and any userinfo (`admin:hunter2@`) of a URL,
/// keeping scheme, host, port, path and query keys readable (analytics group by route). A
/// query piece without `=` is sealed whole. Writes the new URL (unescaped text) to `out`;
/// returns how many values were sealed.
pub fn seal_uri_query<S: ValueSealer>(
    uri: &[u8],
    key: &mut S,
    spec: Spec<'_>,
    out: &mut Vec<u8>,
) -> Result<u32, CipherError> {
    let mut sealed = 0;
    let (main, fragment) = match uri.iter().position(|&b| b == b'#') {
        Some(p) => (uri.get(..p).unwrap_or_default(), uri.get(p + 1..)),
        None => (uri, None),
    };
    let (before_query, query) = match main.iter().position(|&b| b == b'?') {
        Some(q) => (main.get(..q).unwrap_or_default(), main.get(q + 1..)),
        None => (main, None),
    };
    // Userinfo: between `//` and the last `@` before the path. Credentials, always sealed.
    match userinfo(before_query) {
        Some((start, end)) => {
            out.extend_from_slice(before_query.get(..start).unwrap_or_default());
            let info = before_query.get(start..end).unwrap_or_default();
            key.seal(spec, ValueType::String, info, out)?;
            sealed += 1;
            out.extend_from_slice(before_query.get(end..).unwrap_or_default());
        }
        None => out.extend_from_slice(before_query),
    }
    match query {
        None => {}
        Some(query) => {
            out.push(b'?');
            for (n, piece) in query.split(|&b| b == b'&').enumerate() {
                if n > 0 {
                    out.push(b'&');
                }
                if piece.is_empty() {
                    continue;
                }
                match piece.iter().position(|&b| b == b'=') {
                    Some(eq) => {
                        out.extend_from_slice(piece.get(..=eq).unwrap_or_default());
                        let v = piece.get(eq + 1..).unwrap_or_default();
                        if !v.is_empty() {
                            // Sealed as its decoded text (so `ada%40example.org` seals like
                            // `ada@example.org`), marked to be re-encoded on unseal; only
                            // when re-encoding gives back the exact bytes sent.
                            match crate::percent_form::decoded(v) {
                                Some(text) => {
                                    out.push(crate::percent_form::MARK);
                                    key.seal(spec, ValueType::String, &text, out)?;
                                }
                                None => key.seal(spec, ValueType::String, v, out)?,
                            }
                            sealed += 1;
                        }
                    }
                    None => {
                        key.seal(spec, ValueType::String, piece, out)?;
                        sealed += 1;
                    }
                }
            }
        }
    }
    if let Some(f) = fragment {
        out.push(b'#');
        if !f.is_empty() {
            key.seal(spec, ValueType::String, f, out)?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// The span of a URL's userinfo (without the `@`): after `//` (scheme or scheme-relative),
/// up to the last `@` of the authority (which ends at the first `/`). `None`: there is none.
fn userinfo(url: &[u8]) -> Option<(usize, usize)> {
    let start = url.windows(2).position(|w| w == b"//")? + 2;
    let authority = url.get(start..)?;
    let auth_len = authority
        .iter()
        .position(|&b| b == b'/')
        .unwrap_or(authority.len());
    let at = authority
        .get(..auth_len)?
        .iter()
        .rposition(|&b| b == b'@')?;
    (at > 0).then_some((start, start + at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cipher::{Padding, Scope};
    use crate::crypto::keys::{Dek, Kid};
    use crate::json::unseal_document;

    /// Seals every leaf deterministically; one path is in a named domain.
    struct AllDeterministic;

    impl Policy for AllDeterministic {
        type Node = ();
        fn root(&self) {}
        fn field(&self, _: (), _: &str) {}
        fn element(&self, _: ()) {}
        fn leaf(&self, _: (), _: Leaf<'_>) -> LeafAction {
            LeafAction::Seal(Mode::Deterministic)
        }
        fn domain(&self, path: &str) -> Option<Scope> {
            (path == "d").then(|| Scope::domain("joined"))
        }
    }

    /// The walker caches field scopes (one SHA-256 per path): every value, also past the
    /// cache's bound and on a second document through the same scratch, still seals under
    /// its own field's scope, and a domain still wins over the field.
    #[test]
    fn cached_field_scopes_are_each_fields_own() {
        let key = SealingKey::new(
            "r1.2026-01".parse::<Kid>().unwrap(),
            &Dek::from_bytes([9; 32]),
        );
        let n = FIELD_SCOPES_MAX + 100;
        let mut doc = String::from("{\"d\":\"v\"");
        for i in 0..n {
            doc.push_str(&format!(",\"f{i}\":\"v\",\"g{i}\":{{\"h\":\"v\"}}"));
        }
        doc.push('}');
        let expect = |scope: Scope| {
            let mut v = Vec::new();
            let spec = Spec {
                mode: Mode::Deterministic,
                scope: &scope,
                pad: Padding::Buckets,
            };
            key.seal(spec, ValueType::String, b"v", &mut v).unwrap();
            format!("\"{}\"", String::from_utf8(v).unwrap())
        };
        let mut scratch = Scratch::default();
        for _ in 0..2 {
            let mut out = Vec::new();
            seal_document(
                doc.as_bytes(),
                &AllDeterministic,
                &key,
                8,
                &mut scratch,
                &mut out,
            )
            .unwrap();
            let sealed: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(sealed["d"].to_string(), expect(Scope::domain("joined")));
            for i in [0, FIELD_SCOPES_MAX - 1, FIELD_SCOPES_MAX, n - 1] {
                let f = format!("f{i}");
                assert_eq!(sealed[&f].to_string(), expect(Scope::field(&f)), "{f}");
                let g = format!("g{i}");
                let path = format!("{g}.h");
                assert_eq!(
                    sealed[&g]["h"].to_string(),
                    expect(Scope::field(&path)),
                    "{path}"
                );
            }
        }
    }

    /// Issue #18: URI userinfo (`admin:hunter2@`) stayed readable.
    #[test]
    fn userinfo_is_sealed_and_comes_back() {
        let key = SealingKey::new(
            "r1.2026-01".parse::<Kid>().unwrap(),
            &Dek::from_bytes([9; 32]),
        );
        let scope = Scope::field("request.uri");
        let spec = Spec {
            mode: Mode::Deterministic,
            scope: &scope,
            pad: Padding::Buckets,
        };
        for (url, sealed_parts) in [
            ("https://admin:hunter2@api.example.com:8443/v1/x?q=1#f", 3),
            ("https://token@api.example.com/", 1),
            ("//user:pw@h/p", 1),
            ("https://api.example.com/p/a@b?x=y", 1),
            ("https://a@b@host/p", 1),
            ("https://api.example.com", 0),
        ] {
            let mut out = Vec::new();
            let n = seal_uri_query(url.as_bytes(), &mut &key, spec, &mut out).unwrap();
            assert_eq!(n, sealed_parts, "{url}");
            let text = String::from_utf8(out.clone()).unwrap();
            assert!(
                !text.contains("hunter2") && !text.contains("user:pw"),
                "{text}"
            );
            assert!(!text.contains("token@") && !text.contains("a@b@"), "{text}");
            assert!(
                text.contains("api.example.com") || text.contains("h/p") || text.contains("host/p"),
                "{text}"
            );
            let doc = format!("\"{}\"", text);
            let mut back = Vec::new();
            unseal_document(
                doc.as_bytes(),
                &vec![SealingKey::new(key.kid(), &Dek::from_bytes([9; 32]))],
                8,
                &mut back,
            )
            .unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), format!("\"{url}\""));
        }
    }

    /// Issue #18: query values were sealed in their percent-encoded form, so
    /// `ada%40example.org` in a URI and `ada@example.org` in a body never matched. Now the
    /// decoded text is sealed (one ciphertext for both, in one scope or domain), and the URI
    /// comes back byte for byte.
    #[test]
    fn query_values_are_sealed_as_decoded_text_and_restored_exactly() {
        let key = SealingKey::new(
            "r1.2026-01".parse::<Kid>().unwrap(),
            &Dek::from_bytes([9; 32]),
        );
        let scope = Scope::domain("email");
        let spec = Spec {
            mode: Mode::Deterministic,
            scope: &scope,
            pad: Padding::Buckets,
        };
        let mut body_value = Vec::new();
        key.seal(spec, ValueType::String, b"ada@example.org", &mut body_value)
            .unwrap();
        let body_value = String::from_utf8(body_value).unwrap();
        for url in [
            "https://x.io/p?email=ada%40example.org&n=1",
            "https://x.io/p?email=ada@example.org&n=1",
        ] {
            let mut out = Vec::new();
            seal_uri_query(url.as_bytes(), &mut &key, spec, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(&body_value), "{url} -> {text}");
            let doc = format!("\"{text}\"");
            let mut back = Vec::new();
            let keys = vec![SealingKey::new(key.kid(), &Dek::from_bytes([9; 32]))];
            unseal_document(doc.as_bytes(), &keys, 8, &mut back).unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), format!("\"{url}\""));
        }
        // A form that would not come back exactly is sealed as sent (and comes back so).
        let url = "https://x.io/p?email=ada%40example%2eorg";
        let mut out = Vec::new();
        seal_uri_query(url.as_bytes(), &mut &key, spec, &mut out).unwrap();
        let doc = format!("\"{}\"", String::from_utf8(out).unwrap());
        let mut back = Vec::new();
        let keys = vec![SealingKey::new(key.kid(), &Dek::from_bytes([9; 32]))];
        unseal_document(doc.as_bytes(), &keys, 8, &mut back).unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), format!("\"{url}\""));
    }
}
