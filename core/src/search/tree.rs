//! The search body as a JSON tree that keeps what matters for a faithful rewrite: member
//! order and the exact text of numbers. Parsed strictly with the scanner the sealer uses
//! (`crate::json::scan`), bounded in depth; written back compactly.

use crate::json::scan::{self, JsonError, Literal};

/// A JSON tree that keeps what matters for a faithful rewrite: member order and the exact
/// text of numbers.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

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

pub(super) fn write(j: &J, out: &mut Vec<u8>) {
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

/// Parses strict JSON (nesting at most `max_depth`) into a tree.
pub(super) fn parse(input: &[u8], max_depth: usize) -> Result<J, JsonError> {
    scan::check_text(input)?;
    let p = Parser { input, max_depth };
    let start = scan::skip_ws(input, 0);
    if start >= input.len() {
        return Err(JsonError::Empty);
    }
    let (j, next) = p.value(start, 0)?;
    let end = scan::skip_ws(input, next);
    if end != input.len() {
        return Err(JsonError::Trailing { offset: end });
    }
    Ok(j)
}
