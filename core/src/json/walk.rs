//! The one structural JSON walker: drives the lexing primitives of [`super::scan`] over a
//! document once, bounded in depth, and tells a [`Visitor`] what it meets. The sealer, the
//! unsealer, the skip of a subtree and the search tree builder are visitors of it, so the
//! grammar, the depth bound and the error offsets live here only.
//!
//! No recursion: nesting is an explicit stack (a body nested 10,000 deep is a clean
//! [`JsonError::TooDeep`], not a stack overflow). The visitor is a generic parameter, so each
//! user gets its own monomorphised walker (the hot paths pay no dynamic dispatch).
//!
//! Strings come to the visitor as spans of the input, never decoded here: a visitor that
//! needs a string's text unescapes it (and so checks its `\u` surrogates); one that does not
//! (the unsealer, for most strings) pays nothing.

use super::scan::{self, JsonError, Literal, StrSpan};

/// What a walk reports. Every method has a default that does nothing, so a visitor names
/// only what it uses. `start..end` spans are byte offsets of the whole value in the input.
pub trait Visitor {
    /// The visitor's error; JSON errors of the walk convert into it.
    type Error: From<JsonError>;
    /// What the visitor keeps per open container; the walker holds the stack of them and
    /// hands the innermost back with each member.
    type Frame: Copy;

    /// A container starts at `start` (`{` or `[`). Returns its frame. Every `open` is
    /// matched by one [`Visitor::close`], also for an empty container.
    fn open(&mut self, start: usize, object: bool) -> Result<Self::Frame, Self::Error>;
    /// A member of the object `frame` begins: its key (content span, not decoded). Its value
    /// is visited next.
    fn key(&mut self, _frame: &Self::Frame, _key: StrSpan) -> Result<(), Self::Error> {
        Ok(())
    }
    /// An element of the array `frame` begins; its value is visited next.
    #[inline]
    fn element(&mut self, _frame: &Self::Frame) {}
    /// The container `frame` closed; `end` is the index after its closing bracket.
    #[inline]
    fn close(&mut self, _frame: Self::Frame, _end: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    /// A string value at `start..end` (quotes included); `span` is its content.
    #[inline]
    fn string(&mut self, _start: usize, _span: StrSpan, _end: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    /// A number value at `start..end` (its exact text).
    #[inline]
    fn number(&mut self, _start: usize, _end: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    /// `true`, `false` or `null` at `start..end`.
    #[inline]
    fn literal(&mut self, _lit: Literal, _start: usize, _end: usize) -> Result<(), Self::Error> {
        Ok(())
    }
}

const EXPECT_VALUE: &str = "a JSON value";

/// Walks a whole document: whitespace around one value, nothing after it. Does not check
/// the text is UTF-8 (callers do, once, with [`scan::check_text`]).
pub fn walk_document<V: Visitor>(
    input: &[u8],
    max_depth: usize,
    visitor: &mut V,
) -> Result<(), V::Error> {
    let i = scan::skip_ws(input, 0);
    if i >= input.len() {
        return Err(JsonError::Empty.into());
    }
    let end = scan::skip_ws(input, walk_value(input, i, max_depth, visitor)?);
    if end != input.len() {
        return Err(JsonError::Trailing { offset: end }.into());
    }
    Ok(())
}

/// Walks the one value that starts at `i` (after whitespace), nesting at most `max_depth`
/// containers deep from there; returns the index after it.
#[inline]
pub fn walk_value<V: Visitor>(
    input: &[u8],
    i: usize,
    max_depth: usize,
    visitor: &mut V,
) -> Result<usize, V::Error> {
    let mut stack: Vec<(bool, V::Frame)> = Vec::with_capacity(16);
    let mut i = scan::skip_ws(input, i);
    'value: loop {
        // A value starts at `i`.
        match input.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                if stack.len() >= max_depth {
                    return Err(JsonError::TooDeep {
                        offset: i,
                        limit: max_depth,
                    }
                    .into());
                }
                let object = open == b'{';
                let close = if object { b'}' } else { b']' };
                let frame = visitor.open(i, object)?;
                i = scan::skip_ws(input, i + 1);
                if input.get(i) == Some(&close) {
                    i += 1;
                    visitor.close(frame, i)?;
                } else {
                    stack.push((object, frame));
                    if object {
                        i = member(input, i, &frame, visitor)?;
                    } else {
                        visitor.element(&frame);
                    }
                    continue 'value;
                }
            }
            Some(b'"') => {
                let (span, next) = scan::scan_string(input, i)?;
                visitor.string(i, span, next)?;
                i = next;
            }
            Some(b'-' | b'0'..=b'9') => {
                let next = scan::scan_number(input, i)?;
                visitor.number(i, next)?;
                i = next;
            }
            Some(b't' | b'f' | b'n') => {
                let (lit, next) = scan::scan_literal(input, i)?;
                visitor.literal(lit, i, next)?;
                i = next;
            }
            Some(_) => {
                return Err(JsonError::Unexpected {
                    offset: i,
                    expected: EXPECT_VALUE,
                }
                .into())
            }
            None => {
                return Err(JsonError::Eof {
                    offset: i,
                    expected: EXPECT_VALUE,
                }
                .into())
            }
        }
        // After a value: close containers until one has another member.
        loop {
            let Some(&(object, frame)) = stack.last() else {
                return Ok(i);
            };
            i = scan::skip_ws(input, i);
            let close = if object { b'}' } else { b']' };
            match input.get(i) {
                Some(b',') => {
                    i = scan::skip_ws(input, i + 1);
                    if object {
                        i = member(input, i, &frame, visitor)?;
                    } else {
                        visitor.element(&frame);
                    }
                    continue 'value;
                }
                Some(&c) if c == close => {
                    i += 1;
                    stack.pop();
                    visitor.close(frame, i)?;
                }
                Some(_) => {
                    return Err(JsonError::Unexpected {
                        offset: i,
                        expected: if object { "',' or '}'" } else { "',' or ']'" },
                    }
                    .into())
                }
                None => {
                    return Err(JsonError::Eof {
                        offset: i,
                        expected: "a closing bracket",
                    }
                    .into())
                }
            }
        }
    }
}

/// `i` is at a member's key: scans it and its colon, tells the visitor; returns the index
/// of the member's value.
#[inline]
fn member<V: Visitor>(
    input: &[u8],
    i: usize,
    frame: &V::Frame,
    visitor: &mut V,
) -> Result<usize, V::Error> {
    if input.get(i) != Some(&b'"') {
        return Err(JsonError::Unexpected {
            offset: i,
            expected: "'\"' starting an object key",
        }
        .into());
    }
    let (span, after) = scan::scan_string(input, i)?;
    visitor.key(frame, span)?;
    let k = scan::skip_ws(input, after);
    if input.get(k) != Some(&b':') {
        return Err(JsonError::Unexpected {
            offset: k,
            expected: "':' after an object key",
        }
        .into());
    }
    Ok(scan::skip_ws(input, k + 1))
}

/// The visitor that only checks: [`skip_value`] is a walk with it.
struct Skip;

impl Visitor for Skip {
    type Error = JsonError;
    type Frame = ();
    #[inline]
    fn open(&mut self, _: usize, _: bool) -> Result<(), JsonError> {
        Ok(())
    }
}

/// Skips one whole value starting at `i` (after whitespace) without interpreting it, with
/// the walker's strictness and a depth bound of its own. Used for look-ahead.
pub fn skip_value(input: &[u8], i: usize, max_depth: usize) -> Result<usize, JsonError> {
    walk_value(input, i, max_depth, &mut Skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the events of a walk as text.
    #[derive(Default)]
    struct Trace(Vec<String>);

    impl Visitor for Trace {
        type Error = JsonError;
        type Frame = usize;
        fn open(&mut self, start: usize, object: bool) -> Result<usize, JsonError> {
            self.0.push(format!("open {object} {start}"));
            Ok(start)
        }
        fn key(&mut self, frame: &usize, key: StrSpan) -> Result<(), JsonError> {
            self.0
                .push(format!("key {frame} {}..{}", key.start, key.end));
            Ok(())
        }
        fn element(&mut self, frame: &usize) {
            self.0.push(format!("element {frame}"));
        }
        fn close(&mut self, frame: usize, end: usize) -> Result<(), JsonError> {
            self.0.push(format!("close {frame} {end}"));
            Ok(())
        }
        fn string(&mut self, start: usize, _: StrSpan, end: usize) -> Result<(), JsonError> {
            self.0.push(format!("string {start}..{end}"));
            Ok(())
        }
        fn number(&mut self, start: usize, end: usize) -> Result<(), JsonError> {
            self.0.push(format!("number {start}..{end}"));
            Ok(())
        }
        fn literal(&mut self, lit: Literal, start: usize, end: usize) -> Result<(), JsonError> {
            self.0.push(format!("literal {lit:?} {start}..{end}"));
            Ok(())
        }
    }

    #[test]
    fn events_come_in_document_order_with_spans() {
        let doc = br#" {"a": [1, "x", {}], "b" : null} "#;
        let mut t = Trace::default();
        walk_document(doc, 4, &mut t).unwrap();
        assert_eq!(
            t.0,
            [
                "open true 1",
                "key 1 3..4",
                "open false 7",
                "element 7",
                "number 8..9",
                "element 7",
                "string 11..14",
                "element 7",
                "open true 16",
                "close 16 18",
                "close 7 19",
                "key 1 22..23",
                "literal Null 27..31",
                "close 1 32",
            ]
        );
    }

    #[test]
    fn depth_is_bounded_and_errors_carry_offsets() {
        let deep = "[".repeat(10_000);
        assert_eq!(
            walk_document(deep.as_bytes(), 64, &mut Skip),
            Err(JsonError::TooDeep {
                offset: 64,
                limit: 64
            })
        );
        assert_eq!(walk_document(b"[[1]]", 2, &mut Skip), Ok(()));
        assert!(walk_document(b"[[[1]]]", 2, &mut Skip).is_err());
        assert_eq!(walk_document(b"  ", 2, &mut Skip), Err(JsonError::Empty));
        assert_eq!(
            walk_document(b"{} x", 2, &mut Skip),
            Err(JsonError::Trailing { offset: 3 })
        );
        assert_eq!(
            walk_document(br#"{"a" 1}"#, 2, &mut Skip),
            Err(JsonError::Unexpected {
                offset: 5,
                expected: "':' after an object key"
            })
        );
        assert_eq!(
            walk_document(b"[1 2]", 2, &mut Skip),
            Err(JsonError::Unexpected {
                offset: 3,
                expected: "',' or ']'"
            })
        );
        assert_eq!(skip_value(b"  [1, {\"a\": 2}] ,", 0, 2), Ok(15));
    }
}
