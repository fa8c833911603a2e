//! Strict RFC 8259 lexing primitives over bytes.
//!
//! The structural walker (`super::walk`) drives these over a document once; the sealer, a
//! visitor of it, never builds a tree: it copies structure bytes through unchanged and
//! replaces only the leaves the policy seals. The input is checked to be UTF-8 once up front,
//! so every slice between ASCII delimiters is valid UTF-8 too.

use thiserror::Error;

/// Why a body is not JSON. `offset` is a byte offset into the body; messages never quote
/// the body's content (it may be exactly what must not leak).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonError {
    #[error("body is not valid UTF-8 (at byte {offset})")]
    Utf8 { offset: usize },
    #[error("body starts with a byte-order mark, which JSON does not allow")]
    Bom,
    #[error("empty body where a JSON document was expected")]
    Empty,
    #[error("unexpected byte at {offset}: expected {expected}")]
    Unexpected {
        offset: usize,
        expected: &'static str,
    },
    #[error("unexpected end of body at {offset}: expected {expected}")]
    Eof {
        offset: usize,
        expected: &'static str,
    },
    #[error("invalid string escape at byte {offset}")]
    Escape { offset: usize },
    #[error("unpaired UTF-16 surrogate in a \\u escape at byte {offset}")]
    Surrogate { offset: usize },
    #[error("control character inside a string at byte {offset}")]
    ControlChar { offset: usize },
    #[error("invalid number at byte {offset}")]
    Number { offset: usize },
    #[error("nesting deeper than {limit} levels at byte {offset}")]
    TooDeep { offset: usize, limit: usize },
    #[error("trailing data after the JSON document at byte {offset}")]
    Trailing { offset: usize },
}

/// Checks that the whole body is UTF-8 without a BOM. Call once before walking; slices of
/// the returned text between ASCII delimiters need no further validation.
pub fn check_text(input: &[u8]) -> Result<&str, JsonError> {
    if input.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(JsonError::Bom);
    }
    core::str::from_utf8(input).map_err(|e| JsonError::Utf8 {
        offset: e.valid_up_to(),
    })
}

#[inline]
pub fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = input.get(i) {
        i += 1;
    }
    i
}

/// A lexed string: `start..end` covers the content between the quotes.
#[derive(Debug, Clone, Copy)]
pub struct StrSpan {
    pub start: usize,
    pub end: usize,
    pub escaped: bool,
}

/// `i` is at the opening quote. Returns the content span and the index after the closing
/// quote. Escapes are checked for form here; `\u` surrogate pairing is checked by `unescape`
/// (which every escaped string goes through before it is sealed or matched).
#[inline]
pub fn scan_string(input: &[u8], i: usize) -> Result<(StrSpan, usize), JsonError> {
    let start = i + 1;
    let mut j = start;
    let mut escaped = false;
    loop {
        j = skip_plain(input, j);
        match input.get(j) {
            Some(b'"') => {
                return Ok((
                    StrSpan {
                        start,
                        end: j,
                        escaped,
                    },
                    j + 1,
                ))
            }
            Some(b'\\') => {
                escaped = true;
                match input.get(j + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                    Some(b'u') => {
                        let hex = input.get(j + 2..j + 6).ok_or(JsonError::Eof {
                            offset: input.len(),
                            expected: "four hex digits",
                        })?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(JsonError::Escape { offset: j });
                        }
                        j += 6;
                    }
                    Some(_) => return Err(JsonError::Escape { offset: j }),
                    None => {
                        return Err(JsonError::Eof {
                            offset: input.len(),
                            expected: "an escape character",
                        })
                    }
                }
            }
            Some(&c) if c < 0x20 => return Err(JsonError::ControlChar { offset: j }),
            Some(_) => j += 1,
            None => {
                return Err(JsonError::Eof {
                    offset: input.len(),
                    expected: "'\"' closing a string",
                })
            }
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Marks (high bit of the byte) every `"`, `\\` and control byte (< 0x20) of the 8-byte
/// word (little-endian: byte 0 first). The classic has-zero-byte / has-less-than tests: a
/// borrow can mark a byte *after* a marked one, never before, so the lowest mark is exact.
#[inline]
fn special_mask(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    quote | backslash | control
}

/// Skips string bytes that need no attention 8 at a time; returns the index of the first
/// `"`, `\\` or control byte, or of the last (< 8) bytes, which the byte loop handles.
#[inline]
fn skip_plain(input: &[u8], mut j: usize) -> usize {
    while let Some(word) = input.get(j..j + 8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let mask = special_mask(u64::from_le_bytes(word));
        if mask != 0 {
            return j + (mask.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    j
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let h = raw.get(at..at + 4)?;
    let s = core::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Decodes the escapes of a string's content (`raw` = bytes between the quotes, already
/// scanned) into `out` as UTF-8. Lone surrogates are an error: they have no UTF-8 form.
pub fn unescape(raw: &[u8], base: usize, out: &mut Vec<u8>) -> Result<(), JsonError> {
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c != b'\\' {
            // Copy the run up to the next backslash in one go.
            let run_end = raw
                .get(i..)
                .and_then(|r| r.iter().position(|&b| b == b'\\'))
                .map_or(raw.len(), |p| i + p);
            out.extend_from_slice(raw.get(i..run_end).unwrap_or_default());
            i = run_end;
            continue;
        }
        let esc = raw
            .get(i + 1)
            .copied()
            .ok_or(JsonError::Escape { offset: base + i })?;
        let simple = match esc {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0C),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            _ => return Err(JsonError::Escape { offset: base + i }),
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
            continue;
        }
        let hi = hex4(raw, i + 2).ok_or(JsonError::Escape { offset: base + i })?;
        let (code, used) = if (0xD800..0xDC00).contains(&hi) {
            // A high surrogate must be followed by `\u` + a low surrogate.
            let lo = if raw.get(i + 6) == Some(&b'\\') && raw.get(i + 7) == Some(&b'u') {
                hex4(raw, i + 8)
            } else {
                None
            };
            match lo {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                    (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12)
                }
                _ => return Err(JsonError::Surrogate { offset: base + i }),
            }
        } else if (0xDC00..0xE000).contains(&hi) {
            return Err(JsonError::Surrogate { offset: base + i });
        } else {
            (hi, 6)
        };
        let ch = char::from_u32(code).ok_or(JsonError::Surrogate { offset: base + i })?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        i += used;
    }
    Ok(())
}

/// Writes `s` as JSON string content (no quotes), escaping what JSON requires. The bytes
/// that need it (`"`, `\\`, controls) are the lexer's special bytes: runs without one are
/// skipped 8 at a time ([`skip_plain`]) and copied whole.
pub fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    let mut i = 0;
    loop {
        i = skip_plain(s, i);
        let Some(&c) = s.get(i) else {
            break;
        };
        i += 1;
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0C => Some(b"\\f"),
            _ => None,
        };
        if esc.is_none() && c >= 0x20 {
            continue;
        }
        out.extend_from_slice(s.get(run..i - 1).unwrap_or_default());
        run = i;
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(c >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(c & 0xF)).copied().unwrap_or(b'0'));
            }
        }
    }
    out.extend_from_slice(s.get(run..).unwrap_or_default());
}

/// `i` is at the first byte of a number. Returns the index after it. Strict grammar:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. The text is kept exactly, so `1e400`
/// and 30-digit integers are fine: nothing here converts to a float.
#[inline]
pub fn scan_number(input: &[u8], i: usize) -> Result<usize, JsonError> {
    let err = |offset| JsonError::Number { offset };
    let digits = |mut j: usize| {
        let s = j;
        while let Some(b'0'..=b'9') = input.get(j) {
            j += 1;
        }
        (j, j > s)
    };
    let mut j = i;
    if input.get(j) == Some(&b'-') {
        j += 1;
    }
    match input.get(j) {
        Some(b'0') => {
            j += 1;
            // No leading zeros: `01` is not a JSON number.
            if input.get(j).is_some_and(u8::is_ascii_digit) {
                return Err(err(i));
            }
        }
        Some(b'1'..=b'9') => j = digits(j).0,
        _ => return Err(err(i)),
    }
    if input.get(j) == Some(&b'.') {
        let (k, any) = digits(j + 1);
        if !any {
            return Err(err(i));
        }
        j = k;
    }
    if let Some(b'e' | b'E') = input.get(j) {
        j += 1;
        if let Some(b'+' | b'-') = input.get(j) {
            j += 1;
        }
        let (k, any) = digits(j);
        if !any {
            return Err(err(i));
        }
        j = k;
    }
    Ok(j)
}

/// `i` is at `t`, `f` or `n`. Returns the literal and the index after it.
#[inline]
pub fn scan_literal(input: &[u8], i: usize) -> Result<(Literal, usize), JsonError> {
    let rest = input.get(i..).unwrap_or_default();
    if rest.starts_with(b"true") {
        Ok((Literal::True, i + 4))
    } else if rest.starts_with(b"false") {
        Ok((Literal::False, i + 5))
    } else if rest.starts_with(b"null") {
        Ok((Literal::Null, i + 4))
    } else {
        Err(JsonError::Unexpected {
            offset: i,
            expected: "a JSON value",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    True,
    False,
    Null,
}

#[cfg(test)]
mod swar_tests {
    use super::*;

    fn special(b: u8) -> bool {
        b == b'"' || b == b'\\' || b < 0x20
    }

    #[test]
    fn the_lowest_mark_is_the_first_special_byte() {
        // Fillers around the byte: plain ASCII and bytes >= 0x80 (UTF-8), which the
        // less-than test must not take for control bytes; and a second byte after it.
        for filler in [b'a', 0x20, 0x7f, 0x80, 0xc3, 0xff] {
            for pos in 0..8 {
                for b in 0..=255u8 {
                    for after in [filler, b'"', 0x00, 0x01] {
                        let mut w = [filler; 8];
                        w[pos] = b;
                        if pos < 7 {
                            w[7] = after;
                        }
                        let expect = w.iter().position(|&x| special(x));
                        let mask = special_mask(u64::from_le_bytes(w));
                        let got = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
                        assert_eq!(got, expect, "{w:?}");
                    }
                }
            }
        }
    }

    /// `escape_into` as it was before it skipped plain runs a word at a time: one byte at a
    /// time.
    fn escape_bytewise(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &c in s {
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0C => out.extend_from_slice(b"\\f"),
                c if c < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn escaping_skips_plain_runs_and_escapes_every_special_byte_at_every_position() {
        for len in 0..20 {
            for pos in 0..len.max(1) {
                for b in 0..=255u8 {
                    for filler in [b'a', 0x7f, 0xc3, b'"'] {
                        let mut s = vec![filler; len];
                        if let Some(x) = s.get_mut(pos) {
                            *x = b;
                        }
                        let mut out = b"prefix".to_vec();
                        escape_into(&s, &mut out);
                        let mut want = b"prefix".to_vec();
                        want.extend(escape_bytewise(&s));
                        assert_eq!(out, want, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn strings_scan_the_same_at_every_alignment() {
        for pad in 0..9 {
            for (body, end) in [
                ("plain text that is longer than a word", None),
                ("tab\there", Some(3)),
                ("q\\\"uote and more text after it", None),
                ("ünïcödé ∑ text", None),
            ] {
                let s = format!("{}\"{body}\"", " ".repeat(pad));
                let r = scan_string(s.as_bytes(), pad);
                match end {
                    None => {
                        let (span, next) = r.unwrap();
                        assert_eq!(&s[span.start..span.end], body);
                        assert_eq!(next, s.len());
                    }
                    Some(at) => assert_eq!(
                        r.unwrap_err(),
                        JsonError::ControlChar {
                            offset: pad + 1 + at
                        }
                    ),
                }
            }
        }
    }
}
