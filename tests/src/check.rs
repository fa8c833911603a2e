//! Checks shared by the seal tests: walk an original document and what the upstream
//! received side by side, leaf by leaf against an expectation; look for sealed plaintext
//! anywhere in forwarded bytes; unseal with the keyservice's keys.

use serde_json::Value;
use veil_core::crypto::cipher::SealingKey;
use veil_core::crypto::value::{Mode, SealedValue};
use veil_core::json::unseal_document;

use crate::{Recorded, Stack};

/// What a test expects of one (non-null) leaf of the original document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded unchanged.
    Plain,
    /// Replaced by a Veil value sealed in this mode.
    Sealed(Mode),
    /// A URL: scheme, host, path and query keys unchanged; every query value sealed in this
    /// mode.
    UriQuery(Mode),
}

/// What a walk found: the originals of sealed values, and the text that stays readable
/// (field names and plaintext leaves).
#[derive(Debug, Default, Clone)]
pub struct Found {
    pub sealed: Vec<String>,
    pub plaintext: Vec<String>,
}

impl Found {
    pub fn extend(&mut self, other: Found) {
        self.sealed.extend(other.sealed);
        self.plaintext.extend(other.plaintext);
    }
}

/// A leaf as a test writes it: strings without quotes, anything else as JSON text.
pub fn leaf_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Walks `orig` and `fwd` together: same structure and keys everywhere; each non-null leaf
/// is as `expect(path, leaf, parent)` says (path: member names joined by `.`, `*` for an
/// array element, `""` for the root; parent: the container holding the leaf); null stays
/// null. Returns what was sealed and what stayed readable.
pub fn check_document(
    orig: &Value,
    fwd: &Value,
    expect: &dyn Fn(&str, &Value, &Value) -> Expect,
) -> Found {
    let mut found = Found::default();
    walk(orig, fwd, "", &Value::Null, expect, &mut found);
    found
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_string()
    } else {
        format!("{path}.{seg}")
    }
}

fn walk(
    orig: &Value,
    fwd: &Value,
    path: &str,
    parent: &Value,
    expect: &dyn Fn(&str, &Value, &Value) -> Expect,
    found: &mut Found,
) {
    match (orig, fwd) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            assert_eq!(ka, kb, "keys differ at {path:?}");
            found.plaintext.extend(a.keys().cloned());
            for (k, v) in a {
                walk(v, &b[k], &join(path, k), orig, expect, found);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "array length differs at {path:?}");
            for (x, y) in a.iter().zip(b) {
                walk(x, y, &join(path, "*"), orig, expect, found);
            }
        }
        (Value::Null, _) => assert_eq!(fwd, &Value::Null, "null at {path:?} stays null"),
        (Value::Object(_) | Value::Array(_), _) => {
            panic!("{path:?}: a container was replaced by {fwd}")
        }
        (leaf, fwd_leaf) => match expect(path, leaf, parent) {
            Expect::Plain => {
                assert_eq!(leaf, fwd_leaf, "{path:?} stays plaintext");
                found.plaintext.push(leaf_text(leaf));
            }
            Expect::Sealed(mode) => {
                let s = fwd_leaf
                    .as_str()
                    .unwrap_or_else(|| panic!("{path:?} not sealed: {fwd_leaf}"));
                let v = SealedValue::parse(s)
                    .unwrap_or_else(|| panic!("{path:?} ({leaf}) not a Veil value: {s}"));
                assert_eq!(v.mode, mode, "{path:?} sealed in the wrong mode: {s}");
                found.sealed.push(leaf_text(leaf));
            }
            Expect::UriQuery(mode) => {
                let (o, f) = (
                    leaf.as_str()
                        .unwrap_or_else(|| panic!("{path:?}: not a URL")),
                    fwd_leaf
                        .as_str()
                        .unwrap_or_else(|| panic!("{path:?}: not a URL")),
                );
                let (o, o_frag) = o.split_once('#').map_or((o, None), |(a, f)| (a, Some(f)));
                let (f, f_frag) = f.split_once('#').map_or((f, None), |(a, f)| (a, Some(f)));
                let (o_base, o_query) = o.split_once('?').unwrap_or((o, ""));
                let (f_base, f_query) = f.split_once('?').unwrap_or((f, ""));
                assert_eq!(o_base, f_base, "{path:?}: the URL's path stays readable");
                found.plaintext.push(o_base.to_string());
                let mut sealed_parts: Vec<(&str, &str)> = Vec::new();
                if o_query.is_empty() {
                    assert_eq!(f_query, "", "{path:?}: no query");
                } else {
                    let (op, fp): (Vec<_>, Vec<_>) =
                        (o_query.split('&').collect(), f_query.split('&').collect());
                    assert_eq!(op.len(), fp.len(), "{path:?}: same query pieces");
                    for (op, fp) in op.into_iter().zip(fp) {
                        match op.split_once('=') {
                            Some((ok, ov)) => {
                                let (fk, fv) = fp.split_once('=').unwrap_or(("", fp));
                                assert_eq!(ok, fk, "{path:?}: query keys stay readable");
                                found.plaintext.push(ok.to_string());
                                if ov.is_empty() {
                                    assert_eq!(fv, "", "{path:?}: an empty value stays empty");
                                } else {
                                    sealed_parts.push((ov, fv));
                                }
                            }
                            None if op.is_empty() => assert_eq!(fp, ""),
                            None => sealed_parts.push((op, fp)),
                        }
                    }
                }
                match (o_frag, f_frag) {
                    (Some(of), Some(ff)) if !of.is_empty() => sealed_parts.push((of, ff)),
                    (of, ff) => assert_eq!(of, ff, "{path:?}: fragment"),
                }
                for (ov, fv) in sealed_parts {
                    // `%` before a v2 value: a query value sealed as its decoded text
                    // (veil_core::percent_form), re-encoded on unseal.
                    let fv = fv
                        .strip_prefix('%')
                        .filter(|r| r.starts_with("veil:v2:"))
                        .unwrap_or(fv);
                    let v = SealedValue::parse(fv)
                        .unwrap_or_else(|| panic!("{path:?}: {ov:?} not sealed: {fv}"));
                    assert_eq!(v.mode, mode, "{path:?}: query value mode");
                    found.sealed.push(ov.to_string());
                }
            }
        },
    }
}

/// Asserts that no sealed plaintext long enough that a chance match in base64 is negligible
/// (64^-6) appears in `haystack`, raw or JSON-escaped, except those that also stand in a
/// readable place (e.g. the `Host` header's value is part of the readable URI).
pub fn assert_no_leak(haystack: &[u8], found: &Found, what: &str) {
    let hay = String::from_utf8_lossy(haystack);
    let public = |s: &str| found.plaintext.iter().any(|p| p.contains(s));
    for s in found.sealed.iter().filter(|s| s.len() >= 6 && !public(s)) {
        let escaped = serde_json::to_string(s).unwrap_or_default();
        let escaped = escaped
            .strip_prefix('"')
            .and_then(|e| e.strip_suffix('"'))
            .unwrap_or(&escaped);
        assert!(
            !hay.contains(s.as_str()),
            "{what} contains sealed plaintext {s:?}"
        );
        assert!(
            !hay.contains(escaped),
            "{what} contains sealed plaintext (escaped) {s:?}"
        );
    }
}

/// The key ids of the Veil values in `doc`.
pub fn kids_in(doc: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(doc);
    // Format v2 (written today) and v1 (sealed before).
    let mut kids: Vec<String> = ["veil:v1:", "veil:v2:"]
        .iter()
        .flat_map(|p| text.match_indices(p))
        .filter_map(|(i, _)| text.get(i + 8..)?.split(':').next().map(str::to_string))
        .collect();
    kids.sort();
    kids.dedup();
    kids
}

/// Unseals `body` with the keyservice's keys for every kid in it; every value must open.
pub fn unseal(stack: &Stack, body: &[u8]) -> Vec<u8> {
    let keys: Vec<SealingKey> = kids_in(body).iter().map(|k| stack.sealing_key(k)).collect();
    let mut out = Vec::new();
    let stats = unseal_document(body, &keys, 128, &mut out)
        .unwrap_or_else(|e| panic!("forwarded body is not JSON: {e}"));
    assert_eq!(
        (stats.failed, stats.unknown_kid),
        (0, 0),
        "every sealed value opens"
    );
    out
}

/// Posts `body` to `path` through Envoy and checks what the upstream received: exactly one
/// request at `upstream_path`, a correct length if one was sent, each leaf as `expect` says,
/// no sealed plaintext in the forwarded body or headers, and unsealing it gives `body` back
/// byte for byte. Returns the record and what was found.
pub fn post_and_check(
    stack: &Stack,
    path: &str,
    upstream_path: &str,
    body: &[u8],
    expect: &dyn Fn(&str, &Value, &Value) -> Expect,
) -> (Recorded, Found) {
    stack.clear_recorded();
    let resp = stack.post_json(path, body);
    assert_eq!(resp.status, 200, "POST {path}: {}", resp.text());
    let mut rec = stack.recorded();
    assert_eq!(rec.len(), 1, "POST {path}: one request upstream");
    let fwd = rec.remove(0);
    assert_eq!(
        (fwd.method.as_str(), fwd.path.as_str()),
        ("POST", upstream_path)
    );
    if let Some(len) = fwd.header("content-length") {
        assert_eq!(len.parse::<usize>().ok(), Some(fwd.body.len()));
    }
    let orig_v: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{path}: test body: {e}"));
    let fwd_v: Value = serde_json::from_slice(&fwd.body)
        .unwrap_or_else(|e| panic!("{path}: forwarded body is not JSON: {e}"));
    let mut found = check_document(&orig_v, &fwd_v, expect);
    assert_no_leak(&fwd.body, &found, &format!("{path}: forwarded body"));
    // The request's own content-type header is the client's, not document data.
    found.plaintext.push("application/json".into());
    let headers = serde_json::to_string(&fwd.headers).unwrap_or_default();
    assert_no_leak(
        headers.as_bytes(),
        &found,
        &format!("{path}: forwarded headers"),
    );
    assert_eq!(
        unseal(stack, &fwd.body),
        body,
        "{path}: unsealing gives back the exact bytes"
    );
    (fwd, found)
}
