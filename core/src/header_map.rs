//! The proxy-wasm header map wire form, both ways: a u32 count, then a (name length, value
//! length) u32 pair per header, then each name and value NUL-terminated; every integer is
//! little-endian. The filter reads a whole map with one hostcall and looks headers up here,
//! and writes a whole map back the same way (a hostcall per header costs a round trip
//! through V8's C API each).

use std::borrow::Cow;
use std::ops::Range;

/// A header map in the wire form, checked once when parsed.
#[derive(Debug, Clone, Default)]
pub struct HeaderMap {
    raw: Vec<u8>,
    /// (name, value) byte ranges into `raw`.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderMap {
    /// Parses the wire form; None if it is malformed (a count or a length that runs past the
    /// end). An empty buffer is an empty map.
    pub fn parse(raw: Vec<u8>) -> Option<HeaderMap> {
        if raw.is_empty() {
            return Some(HeaderMap::default());
        }
        let u32_at = |at: usize| -> Option<usize> {
            let b: [u8; 4] = raw.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(b)).ok()
        };
        let count = u32_at(0)?;
        let mut p = count.checked_mul(8)?.checked_add(4)?;
        let mut entries = Vec::with_capacity(count.min(256));
        for n in 0..count {
            let s = n.checked_mul(8)?.checked_add(4)?;
            let (klen, vlen) = (u32_at(s)?, u32_at(s.checked_add(4)?)?);
            let name = p..p.checked_add(klen)?;
            p = name.end.checked_add(1)?;
            let value = p..p.checked_add(vlen)?;
            p = value.end.checked_add(1)?;
            // The value lies after the name: in bounds means both are.
            raw.get(value.clone())?;
            entries.push((name, value));
        }
        Some(HeaderMap { raw, entries })
    }

    /// Every (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|(k, v)| {
            (
                self.raw.get(k.clone()).unwrap_or_default(),
                self.raw.get(v.clone()).unwrap_or_default(),
            )
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first value of `name` (Envoy's names are lowercase), bytes that are not UTF-8
    /// replaced: what a single-header read (`proxy_get_header_map_value`) answers.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// How many times `name` occurs.
    pub fn count(&self, name: &str) -> usize {
        self.iter().filter(|(k, _)| *k == name.as_bytes()).count()
    }

    /// Owned (name, value) pairs, in order.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

impl HeaderMap {
    /// A map of `entries` (name, value), copied once into the wire form: what a shell that
    /// can see the host's map in place (the native one) hands the roles.
    pub fn from_entries(entries: &[(&[u8], &[u8])]) -> HeaderMap {
        let size = entries
            .iter()
            .fold(4, |n, (k, v)| n + 8 + k.len() + v.len() + 2);
        let mut raw = Vec::with_capacity(size);
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX).to_le_bytes();
        raw.extend_from_slice(&n(entries.len()));
        for (k, v) in entries {
            raw.extend_from_slice(&n(k.len()));
            raw.extend_from_slice(&n(v.len()));
        }
        let mut ranges = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let name = raw.len()..raw.len() + k.len();
            raw.extend_from_slice(k);
            raw.push(0);
            let value = raw.len()..raw.len() + v.len();
            raw.extend_from_slice(v);
            raw.push(0);
            ranges.push((name, value));
        }
        HeaderMap {
            raw,
            entries: ranges,
        }
    }
}

/// Serializes `pairs` in the wire form.
pub fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = pairs
        .iter()
        .fold(4, |n, (k, v)| n + 8 + k.len() + v.len() + 2);
    let mut out = Vec::with_capacity(size);
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&n(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&n(k.len()));
        out.extend_from_slice(&n(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire bytes of `[(":path", "/a"), ("x", "")]`, written out by hand from the
    /// proxy-wasm ABI's description (not by `encode`).
    const TWO: &[u8] = b"\x02\x00\x00\x00\x05\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00:path\x00/a\x00x\x00\x00";

    /// The native shell builds maps from the host's entries: the same wire bytes and
    /// lookups as a parsed map, values kept as bytes (not made UTF-8).
    #[test]
    fn from_entries_is_the_parsed_map() {
        let m = HeaderMap::from_entries(&[(b":path", b"/a"), (b"x", b"")]);
        assert_eq!(m.raw, TWO);
        assert_eq!(m.get(":path").as_deref(), Some("/a"));
        assert_eq!(m.get("x").as_deref(), Some(""));
        let odd = HeaderMap::from_entries(&[(b"k", b"a\xffb")]);
        let parsed = HeaderMap::parse(odd.raw.clone()).unwrap();
        assert_eq!(
            odd.iter().collect::<Vec<_>>(),
            parsed.iter().collect::<Vec<_>>()
        );
        assert_eq!(odd.get("k").as_deref(), Some("a\u{fffd}b"));
        assert!(HeaderMap::from_entries(&[]).is_empty());
    }

    #[test]
    fn encode_writes_the_abi_form() {
        assert_eq!(encode(&[(":path", "/a"), ("x", "")]), TWO);
        assert_eq!(encode(&[]), b"\x00\x00\x00\x00");
    }

    #[test]
    fn parse_reads_the_abi_form() {
        let m = HeaderMap::parse(TWO.to_vec()).expect("valid");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(":path").as_deref(), Some("/a"));
        assert_eq!(m.get("x").as_deref(), Some(""));
        assert_eq!(m.get("y"), None);
        assert_eq!(
            m.to_pairs(),
            vec![(":path".into(), "/a".into()), ("x".into(), String::new())]
        );
        assert!(HeaderMap::parse(Vec::new()).expect("empty").is_empty());
    }

    #[test]
    fn the_first_value_wins_and_duplicates_are_counted() {
        let m = HeaderMap::parse(encode(&[("a", "1"), ("b", "2"), ("a", "3")])).expect("valid");
        assert_eq!(m.get("a").as_deref(), Some("1"));
        assert_eq!(m.count("a"), 2);
        assert_eq!(m.count("b"), 1);
        assert_eq!(m.count("c"), 0);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        let m = HeaderMap::parse(
            encode(&[("a", "x")])
                .into_iter()
                .map(|b| if b == b'x' { 0xff } else { b })
                .collect(),
        )
        .expect("valid");
        assert_eq!(m.get("a").as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn every_truncation_of_a_valid_map_is_refused() {
        let full = encode(&[(":method", "POST"), ("content-length", "12")]);
        // The last NUL is the only byte a reader never needs.
        for cut in 1..full.len() - 1 {
            assert!(
                HeaderMap::parse(full[..cut].to_vec()).is_none(),
                "a map cut at {cut} of {} bytes parsed",
                full.len()
            );
        }
        // Lengths far past the end, and a count that overflows the index.
        let mut huge = full.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(huge).is_none());
        let mut many = full;
        many[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(many).is_none());
    }

    #[test]
    fn encode_and_parse_agree() {
        let pairs = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("x-ü", "ä\u{0}b"),
        ];
        let m = HeaderMap::parse(encode(&pairs)).expect("valid");
        let back: Vec<(String, String)> = m.to_pairs();
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(back, want);
    }
}
