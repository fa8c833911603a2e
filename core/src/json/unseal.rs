//! The streaming unsealer: every string *value* that is a Veil value (or, inside a string
//! such as a URL, contains Veil values) with a known kid is replaced by what was sealed —
//! its original JSON type and exact text — wherever it sits. Object keys are never touched.
//!
//! A value that does not authenticate, or whose kid is unknown, stays as it is and is
//! counted: the response still arrives.

use super::scan::{self, JsonError, StrSpan};
use super::walk::{self, Visitor};
use crate::crypto::cipher::{CipherError, Opened, SealingKey, ValueType};
use crate::crypto::keys::Kid;
use crate::crypto::value::{SealedValue, PREFIX_ANY};

/// Finds the cipher state for a kid.
pub trait KeyLookup {
    fn key(&self, kid: Kid) -> Option<&SealingKey>;

    /// Opens `v` with its kid's key; `None` if the kid is not held. A lookup may memoize
    /// (the filter's does, [`crate::open_memo::OpenMemo`]).
    fn open(&self, v: &SealedValue<'_>) -> Option<Result<Opened, CipherError>> {
        self.key(v.kid).map(|k| k.open(v))
    }

    /// Hands what the whole string `text` opened to before (its type and plaintext) to
    /// `read`, if a memo holds it under its kid's current key (see
    /// [`crate::open_memo::OpenMemo::read_text`]; no copy of the plaintext); `false`: parse
    /// and open.
    fn read_memoized(&self, _text: &str, _read: &mut dyn FnMut(ValueType, &[u8])) -> bool {
        false
    }
}

impl KeyLookup for Vec<SealingKey> {
    fn key(&self, kid: Kid) -> Option<&SealingKey> {
        self.iter().find(|k| k.kid() == kid)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsealStats {
    pub opened: u32,
    /// Parsed as a Veil value but failed to authenticate (tampered, or the key is wrong).
    pub failed: u32,
    /// Parsed as a Veil value whose kid is not held.
    pub unknown_kid: u32,
}

/// Unseals `input` into `out`. Errors only if `input` is not JSON.
pub fn unseal_document(
    input: &[u8],
    keys: &dyn KeyLookup,
    max_depth: usize,
    out: &mut Vec<u8>,
) -> Result<UnsealStats, JsonError> {
    let text_in = scan::check_text(input)?;
    out.reserve(input.len());
    let mut u = Unsealer {
        input,
        text_in,
        keys,
        out,
        copied: 0,
        stats: UnsealStats::default(),
        text: Vec::new(),
    };
    walk::walk_document(input, max_depth, &mut u)?;
    u.out
        .extend_from_slice(input.get(u.copied..).unwrap_or_default());
    Ok(u.stats)
}

/// The unsealer as a visitor of the walk: only string values matter; everything else is
/// copied through in runs.
struct Unsealer<'a, 'k, 'o> {
    input: &'a [u8],
    /// `input` as the text it was checked to be: an unescaped string is a slice of it, with
    /// no copy and no second UTF-8 check.
    text_in: &'a str,
    keys: &'k dyn KeyLookup,
    out: &'o mut Vec<u8>,
    /// Input bytes before this index are already in `out`.
    copied: usize,
    stats: UnsealStats,
    /// A string's decoded text (reused).
    text: Vec<u8>,
}

impl Visitor for Unsealer<'_, '_, '_> {
    type Error = JsonError;
    type Frame = ();

    #[inline]
    fn open(&mut self, _: usize, _: bool) -> Result<(), JsonError> {
        Ok(())
    }

    #[inline]
    fn string(&mut self, start: usize, span: StrSpan, end: usize) -> Result<(), JsonError> {
        let raw = self.input.get(span.start..span.end).unwrap_or_default();
        if !contains_prefix(raw) {
            return Ok(());
        }
        let s = if span.escaped {
            self.text.clear();
            scan::unescape(raw, span.start, &mut self.text)?;
            core::str::from_utf8(&self.text).unwrap_or_default()
        } else {
            self.text_in.get(span.start..span.end).unwrap_or_default()
        };
        let (mark, opened) = (self.out.len(), self.stats.opened);
        self.out
            .extend_from_slice(self.input.get(self.copied..start).unwrap_or_default());
        unseal_string(s, self.keys, &mut self.stats, self.out);
        if self.stats.opened == opened {
            // Nothing opened: the string stays byte for byte as sent (its escapes
            // unchanged), so it is copied with the rest later.
            self.out.truncate(mark);
        } else {
            self.copied = end;
        }
        Ok(())
    }
}

/// The distinct kids of the Veil values in `input` (a JSON document, or any text), at most
/// `limit`, in the order first seen. A cheap byte scan, no JSON parse: every kid the
/// unsealer could ask [`KeyLookup::key`] for is found (a value's kid stands in clear text
/// after the prefix); a kid in an object key is found too, which costs at most a key
/// lookup. Used to fetch missing keys before unsealing.
pub fn kids_in(input: &[u8], limit: usize) -> Vec<Kid> {
    let mut kids: Vec<Kid> = Vec::new();
    let p = PREFIX_ANY.as_bytes();
    let mut i = 0;
    while kids.len() < limit {
        // A SIMD substring search: this runs over every response body on an unseal route.
        let Some(at) = input
            .get(i..)
            .and_then(|rest| memchr::memmem::find(rest, p))
        else {
            break;
        };
        let after = i + at + p.len();
        i = after;
        // The version: `1:` or `2:`.
        if !matches!(input.get(after..after + 2), Some(b"1:" | b"2:")) {
            continue;
        }
        let start = after + 2;
        // `r<version>.<YYYY-MM>` is at most 19 bytes, then `:d:` or `:r:`.
        let Some(colon) = input
            .get(start..)
            .and_then(|rest| rest.iter().take(20).position(|&c| c == b':'))
        else {
            continue;
        };
        let mode = input.get(start + colon + 1..start + colon + 3);
        if !matches!(mode, Some(b"d:" | b"r:")) {
            continue;
        }
        let kid = input
            .get(start..start + colon)
            .and_then(|k| core::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<Kid>().ok());
        if let Some(kid) = kid {
            if !kids.contains(&kid) {
                kids.push(kid);
            }
        }
    }
    kids
}

/// Does `raw` hold something that starts like a Veil value (`veil:v1:` or `veil:v2:`)?
fn contains_prefix(raw: &[u8]) -> bool {
    find_prefix(raw).is_some()
}

/// Where the first `veil:v1:` or `veil:v2:` in `b` starts.
fn find_prefix(b: &[u8]) -> Option<usize> {
    // Every string value of a response comes through here, most of them short: a byte
    // compare per byte and a prefix compare per `v` beat a SIMD search's set-up (measured).
    let mut from = 0;
    while let Some(at) = b
        .get(from..)
        .and_then(|rest| rest.iter().position(|&c| c == b'v'))
    {
        let start = from + at;
        if crate::crypto::value::looks_sealed(b.get(start..).unwrap_or_default()) {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// The characters a Veil value is made of (prefix, kid, mode, base64url payload).
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'-' | b'_')
}

/// Writes the JSON value for string `s`: the original value if `s` is exactly one Veil
/// value; otherwise a JSON string with every embedded Veil value (e.g. URL query values)
/// replaced by its string plaintext.
fn unseal_string(s: &str, keys: &dyn KeyLookup, stats: &mut UnsealStats, out: &mut Vec<u8>) {
    // `s` is one Veil value: a value opened before is answered by its whole text, without
    // parsing it again (and written from the memo, without a copy); else parsed and opened.
    let hit = keys.read_memoized(s, &mut |ty, plain| {
        let ok = valid_json(ty, plain);
        count(ok, stats);
        write_value(ok.then_some((ty, plain)), s, out);
    });
    if hit {
        return;
    }
    if let Some(v) = SealedValue::parse(s) {
        let opened = open(&v, keys, stats);
        write_value(opened.as_ref().map(|(ty, p)| (*ty, p.as_slice())), s, out);
        return;
    }
    // Embedded values: each starts at a version prefix and runs over token characters.
    let b = s.as_bytes();
    let mut result: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let at = b.get(i..).and_then(find_prefix);
        let Some(p) = at else {
            result.extend_from_slice(b.get(i..).unwrap_or_default());
            break;
        };
        let start = i + p;
        result.extend_from_slice(b.get(i..start).unwrap_or_default());
        let mut end = start;
        while b.get(end).copied().is_some_and(is_token_char) {
            end += 1;
        }
        let token = s.get(start..end).unwrap_or_default();
        let parsed = SealedValue::parse(token);
        match parsed.and_then(|v| open(&v, keys, stats)) {
            Some((ValueType::String, plain)) => {
                // `%` right before a v2 value marks a query value sealed as its decoded text
                // (crate::json::seal::seal_uri_query): it comes back percent-encoded, byte for
                // byte as it was sent.
                let marked = parsed.is_some_and(|v| v.version == crate::crypto::value::Version::V2)
                    && result.last() == Some(&crate::percent_form::MARK);
                if marked {
                    result.pop();
                    crate::percent_form::encode_into(&plain, &mut result);
                } else {
                    result.extend_from_slice(&plain);
                }
            }
            _ => result.extend_from_slice(token.as_bytes()),
        }
        i = end.max(start + 1);
    }
    out.push(b'"');
    scan::escape_into(&result, out);
    out.push(b'"');
}

fn open(
    v: &SealedValue<'_>,
    keys: &dyn KeyLookup,
    stats: &mut UnsealStats,
) -> Option<(ValueType, zeroize::Zeroizing<Vec<u8>>)> {
    let Some(opened) = keys.open(v) else {
        stats.unknown_kid += 1;
        return None;
    };
    accept(opened, stats)
}

/// Writes the JSON value a whole-string Veil value `s` stands for: what it opened to, or
/// (`None`: not opened) the string as it was.
fn write_value(opened: Option<(ValueType, &[u8])>, s: &str, out: &mut Vec<u8>) {
    match opened {
        Some((ValueType::String, plain)) => {
            out.push(b'"');
            scan::escape_into(plain, out);
            out.push(b'"');
        }
        Some((_, plain)) => out.extend_from_slice(plain),
        None => {
            out.push(b'"');
            scan::escape_into(s.as_bytes(), out);
            out.push(b'"');
        }
    }
}

/// Whether an opened plaintext is valid JSON for its type: never emit invalid JSON, even
/// for a value that authenticated.
fn valid_json(ty: ValueType, plain: &[u8]) -> bool {
    match ty {
        ValueType::String => core::str::from_utf8(plain).is_ok(),
        ValueType::Number => !plain.is_empty() && scan::scan_number(plain, 0) == Ok(plain.len()),
        ValueType::Bool => plain == b"true" || plain == b"false",
    }
}

/// Counts an authenticated value as opened (valid) or failed.
fn count(valid: bool, stats: &mut UnsealStats) {
    if valid {
        stats.opened += 1;
    } else {
        stats.failed += 1;
    }
}

/// An opened value that is valid JSON for its type (counted as opened), or `None` (counted
/// as failed).
fn accept(
    opened: Result<Opened, CipherError>,
    stats: &mut UnsealStats,
) -> Option<(ValueType, zeroize::Zeroizing<Vec<u8>>)> {
    match opened {
        Ok(o) => {
            let valid = valid_json(o.ty, &o.value);
            count(valid, stats);
            valid.then_some((o.ty, o.value))
        }
        Err(_) => {
            stats.failed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `unseal` fuzz target: a string that starts like a Veil value but opens
    /// nothing came back re-escaped (`\/` → `/`, `\\` kept), so an answer with nothing to
    /// open was not forwarded byte for byte.
    #[test]
    fn a_string_with_the_prefix_that_opens_nothing_stays_byte_for_byte() {
        let keys = vec![SealingKey::new(
            "r1.2026-01".parse::<Kid>().unwrap(),
            &crate::crypto::keys::Dek::from_bytes([1; 32]),
        )];
        for doc in [
            r#""veil:v1:!11qq^qqn\\\\nqq\/\\n""#,
            r#"{"a":["x veil:v1:r1.2026-01:d:AAAA \u00e9\/"]}"#,
            r#"{"u":"https:\/\/x?q=veil:v1:r9.2026-01:d:QUFBQUFBQUFBQUFBQUFBQUFB"}"#,
        ] {
            let mut out = Vec::new();
            let stats = unseal_document(doc.as_bytes(), &keys, 16, &mut out).unwrap();
            assert_eq!(stats.opened, 0, "{doc}");
            assert_eq!(String::from_utf8(out).unwrap(), doc);
        }
    }

    #[test]
    fn kids_in_finds_each_kid_once_in_order() {
        let doc =
            br#"{"a":"veil:v1:r2.2025-01:d:AAAAAAAAAAAAAAAAAAAAAAA","b":["veil:v1:r1.2026-01:r:x",
            "https://h/p?q=veil:v1:r2.2025-01:d:QUJD&x=veil:v1:r3.2024-07:d:QUJD"],
            "not":"veil:v1:r1.2026-13:d:AAAA","nor":"veil:v1:r1.2026-01:x:AAAA","end":"veil:v1:"}"#;
        let kids: Vec<String> = kids_in(doc, 10).iter().map(|k| k.to_string()).collect();
        assert_eq!(kids, ["r2.2025-01", "r1.2026-01", "r3.2024-07"]);
        let v2 = br#"["veil:v2:r4.2026-01:d:AAAAAAAAAAAA:AAAA","veil:v3:r5.2026-01:d:x","veil:v2:r1.2026-01:r:x"]"#;
        let kids: Vec<String> = kids_in(v2, 10).iter().map(|k| k.to_string()).collect();
        assert_eq!(kids, ["r4.2026-01", "r1.2026-01"]);
        assert_eq!(kids_in(doc, 2).len(), 2);
        assert!(kids_in(b"{}", 10).is_empty());
        assert!(kids_in(b"veil:v1:r1.2026-01", 10).is_empty());
    }
}
