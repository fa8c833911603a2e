//! The search body as a JSON tree that keeps what matters for a faithful rewrite: member
//! order and the exact text of numbers. Built by a visitor of the walker the sealer uses
//! (`crate::json::walk`), so strict and bounded in depth alike; written back compactly.

use crate::json::scan::{self, JsonError, Literal, StrSpan};
use crate::json::walk::{self, Visitor};

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

/// A container being built.
enum Open {
    /// Members so far; the last one's value is a placeholder until its value is visited.
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
}

/// The tree builder as a visitor of the walk (`crate::json::walk`).
struct Builder<'a> {
    input: &'a [u8],
    open: Vec<Open>,
    root: Option<J>,
}

impl Builder<'_> {
    fn text(&self, span: StrSpan) -> Result<String, JsonError> {
        let raw = self.input.get(span.start..span.end).unwrap_or_default();
        let mut buf = Vec::new();
        if span.escaped {
            scan::unescape(raw, span.start, &mut buf)?;
        } else {
            buf.extend_from_slice(raw);
        }
        String::from_utf8(buf).map_err(|_| JsonError::Utf8 { offset: span.start })
    }

    /// Puts a finished value where the walk is: the pending member, the next element, or
    /// the root.
    fn place(&mut self, v: J) {
        match self.open.last_mut() {
            Some(Open::Obj(members)) => {
                if let Some(last) = members.last_mut() {
                    last.1 = v;
                }
            }
            Some(Open::Arr(items)) => items.push(v),
            None => self.root = Some(v),
        }
    }
}

impl Visitor for Builder<'_> {
    type Error = JsonError;
    type Frame = ();

    fn open(&mut self, _: usize, object: bool) -> Result<(), JsonError> {
        self.open.push(if object {
            Open::Obj(Vec::new())
        } else {
            Open::Arr(Vec::new())
        });
        Ok(())
    }

    fn key(&mut self, _: &(), key: StrSpan) -> Result<(), JsonError> {
        let k = self.text(key)?;
        if let Some(Open::Obj(members)) = self.open.last_mut() {
            members.push((k, J::Null));
        }
        Ok(())
    }

    fn close(&mut self, _: (), _: usize) -> Result<(), JsonError> {
        let v = match self.open.pop() {
            Some(Open::Obj(members)) => J::Obj(members),
            Some(Open::Arr(items)) => J::Arr(items),
            None => return Ok(()),
        };
        self.place(v);
        Ok(())
    }

    fn string(&mut self, _: usize, span: StrSpan, _: usize) -> Result<(), JsonError> {
        let s = self.text(span)?;
        self.place(J::Str(s));
        Ok(())
    }

    fn number(&mut self, start: usize, end: usize) -> Result<(), JsonError> {
        let text = core::str::from_utf8(self.input.get(start..end).unwrap_or_default())
            .unwrap_or_default();
        self.place(J::Num(text.to_string()));
        Ok(())
    }

    fn literal(&mut self, lit: Literal, _: usize, _: usize) -> Result<(), JsonError> {
        self.place(match lit {
            Literal::True => J::Bool(true),
            Literal::False => J::Bool(false),
            Literal::Null => J::Null,
        });
        Ok(())
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
    let mut b = Builder {
        input,
        open: Vec::new(),
        root: None,
    };
    walk::walk_document(input, max_depth, &mut b)?;
    b.root.ok_or(JsonError::Empty)
}
