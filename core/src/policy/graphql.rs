//! Is a string a GraphQL executable document? A recogniser (no tree is built) of the
//! GraphQL specification's (October 2021) executable documents: operations and fragments,
//! selection sets, arguments, variables, directives, every value form, comments, block
//! strings. Used by the `moesif` profile to keep `request.body.query` readable only when it
//! really is a GraphQL document (`encrypt_graphql_query: false`); the prefix heuristic it
//! replaces kept `"query jane@example.com"` readable.
//!
//! Bounded: nesting deeper than [`MAX_DEPTH`] is "not GraphQL" (so it is sealed), and the
//! recursion is bounded by it.

/// Deepest nesting of selection sets, lists and objects accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok<'a> {
    Punct(u8),
    Spread,
    Name(&'a str),
    Number,
    Str,
    Var(&'a str),
}

struct Lexer<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Lexer<'a> {
    fn peek_byte(&self, k: usize) -> Option<u8> {
        self.s.as_bytes().get(self.i + k).copied()
    }

    /// The next token; `Err` on a lexical error, `Ok(None)` at the end.
    fn next(&mut self) -> Result<Option<Tok<'a>>, ()> {
        loop {
            match self.peek_byte(0) {
                Some(b' ' | b'\t' | b'\n' | b'\r' | b',') => self.i += 1,
                Some(0xEF)
                    if self
                        .s
                        .get(self.i..)
                        .is_some_and(|r| r.starts_with('\u{feff}')) =>
                {
                    self.i += 3
                }
                Some(b'#') => {
                    while !matches!(self.peek_byte(0), None | Some(b'\n' | b'\r')) {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
        let Some(c) = self.peek_byte(0) else {
            return Ok(None);
        };
        match c {
            b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'|'
            | b'}' => {
                self.i += 1;
                if c == b'$' {
                    let name = self.name().ok_or(())?;
                    return Ok(Some(Tok::Var(name)));
                }
                Ok(Some(Tok::Punct(c)))
            }
            b'.' => {
                if self.peek_byte(1) == Some(b'.') && self.peek_byte(2) == Some(b'.') {
                    self.i += 3;
                    Ok(Some(Tok::Spread))
                } else {
                    Err(())
                }
            }
            b'"' => self.string().map(|()| Some(Tok::Str)),
            b'-' | b'0'..=b'9' => self.number().map(|()| Some(Tok::Number)),
            b'_' | b'A'..=b'Z' | b'a'..=b'z' => Ok(self.name().map(Tok::Name)),
            _ => Err(()),
        }
    }

    fn name(&mut self) -> Option<&'a str> {
        let start = self.i;
        match self.peek_byte(0) {
            Some(b'_' | b'A'..=b'Z' | b'a'..=b'z') => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek_byte(0),
            Some(b'_' | b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        self.s.get(start..self.i)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek_byte(0).is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), ()> {
        if self.peek_byte(0) == Some(b'-') {
            self.i += 1;
        }
        let lead_zero = self.peek_byte(0) == Some(b'0');
        let n = self.digits();
        if n == 0 || (lead_zero && n > 1) {
            return Err(());
        }
        if self.peek_byte(0) == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(());
            }
        }
        if matches!(self.peek_byte(0), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek_byte(0), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(());
            }
        }
        // A number may not be followed directly by a name start or a dot.
        match self.peek_byte(0) {
            Some(b'_' | b'A'..=b'Z' | b'a'..=b'z' | b'.') => Err(()),
            _ => Ok(()),
        }
    }

    fn string(&mut self) -> Result<(), ()> {
        let block = self
            .s
            .get(self.i..)
            .is_some_and(|r| r.starts_with("\"\"\""));
        if block {
            self.i += 3;
            loop {
                let rest = self.s.get(self.i..).ok_or(())?;
                if rest.starts_with("\\\"\"\"") {
                    self.i += 4;
                } else if rest.starts_with("\"\"\"") {
                    self.i += 3;
                    return Ok(());
                } else if let Some(ch) = rest.chars().next() {
                    self.i += ch.len_utf8();
                } else {
                    return Err(());
                }
            }
        }
        self.i += 1;
        loop {
            let rest = self.s.get(self.i..).ok_or(())?;
            let ch = rest.chars().next().ok_or(())?;
            match ch {
                '"' => {
                    self.i += 1;
                    return Ok(());
                }
                '\n' | '\r' => return Err(()),
                '\\' => {
                    let esc = rest.as_bytes().get(1).copied().ok_or(())?;
                    match esc {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = rest.get(2..6).ok_or(())?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return Err(());
                            }
                            self.i += 6;
                        }
                        _ => return Err(()),
                    }
                }
                c => self.i += c.len_utf8(),
            }
        }
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Option<Tok<'a>>,
}

type R = Result<(), ()>;

impl<'a> Parser<'a> {
    fn bump(&mut self) -> R {
        self.tok = self.lex.next()?;
        Ok(())
    }

    fn eat(&mut self, t: Tok<'a>) -> Result<bool, ()> {
        if self.tok == Some(t) {
            self.bump()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect(&mut self, t: Tok<'a>) -> R {
        if self.eat(t)? {
            Ok(())
        } else {
            Err(())
        }
    }

    fn name(&mut self) -> Result<&'a str, ()> {
        match self.tok {
            Some(Tok::Name(n)) => {
                self.bump()?;
                Ok(n)
            }
            _ => Err(()),
        }
    }

    fn document(&mut self) -> R {
        self.bump()?;
        if self.tok.is_none() {
            return Err(());
        }
        while self.tok.is_some() {
            self.definition()?;
        }
        Ok(())
    }

    fn definition(&mut self) -> R {
        match self.tok {
            Some(Tok::Punct(b'{')) => self.selection_set(0),
            Some(Tok::Name("query" | "mutation" | "subscription")) => {
                self.bump()?;
                if matches!(self.tok, Some(Tok::Name(_))) {
                    self.name()?;
                }
                if self.tok == Some(Tok::Punct(b'(')) {
                    self.variable_definitions()?;
                }
                self.directives(0)?;
                self.selection_set(0)
            }
            Some(Tok::Name("fragment")) => {
                self.bump()?;
                if self.name()? == "on" {
                    return Err(());
                }
                if self.name()? != "on" {
                    return Err(());
                }
                self.name()?;
                self.directives(0)?;
                self.selection_set(0)
            }
            _ => Err(()),
        }
    }

    fn variable_definitions(&mut self) -> R {
        self.expect(Tok::Punct(b'('))?;
        loop {
            match self.tok {
                Some(Tok::Var(_)) => self.bump()?,
                _ => return Err(()),
            }
            self.expect(Tok::Punct(b':'))?;
            self.ty(0)?;
            if self.eat(Tok::Punct(b'='))? {
                self.value(true, 0)?;
            }
            self.directives(0)?;
            if self.eat(Tok::Punct(b')'))? {
                return Ok(());
            }
        }
    }

    fn ty(&mut self, depth: usize) -> R {
        if depth > MAX_DEPTH {
            return Err(());
        }
        if self.eat(Tok::Punct(b'['))? {
            self.ty(depth + 1)?;
            self.expect(Tok::Punct(b']'))?;
        } else {
            self.name()?;
        }
        self.eat(Tok::Punct(b'!'))?;
        Ok(())
    }

    fn directives(&mut self, depth: usize) -> R {
        while self.eat(Tok::Punct(b'@'))? {
            self.name()?;
            if self.tok == Some(Tok::Punct(b'(')) {
                self.arguments(depth)?;
            }
        }
        Ok(())
    }

    fn arguments(&mut self, depth: usize) -> R {
        self.expect(Tok::Punct(b'('))?;
        loop {
            self.name()?;
            self.expect(Tok::Punct(b':'))?;
            self.value(false, depth)?;
            if self.eat(Tok::Punct(b')'))? {
                return Ok(());
            }
        }
    }

    fn value(&mut self, constant: bool, depth: usize) -> R {
        if depth > MAX_DEPTH {
            return Err(());
        }
        match self.tok {
            Some(Tok::Var(_)) if !constant => self.bump(),
            Some(Tok::Number | Tok::Str | Tok::Name(_)) => self.bump(),
            Some(Tok::Punct(b'[')) => {
                self.bump()?;
                while !self.eat(Tok::Punct(b']'))? {
                    self.value(constant, depth + 1)?;
                }
                Ok(())
            }
            Some(Tok::Punct(b'{')) => {
                self.bump()?;
                while !self.eat(Tok::Punct(b'}'))? {
                    self.name()?;
                    self.expect(Tok::Punct(b':'))?;
                    self.value(constant, depth + 1)?;
                }
                Ok(())
            }
            _ => Err(()),
        }
    }

    fn selection_set(&mut self, depth: usize) -> R {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.expect(Tok::Punct(b'{'))?;
        loop {
            self.selection(depth)?;
            if self.eat(Tok::Punct(b'}'))? {
                return Ok(());
            }
        }
    }

    fn selection(&mut self, depth: usize) -> R {
        if self.eat(Tok::Spread)? {
            match self.tok {
                Some(Tok::Name("on")) => {
                    self.bump()?;
                    self.name()?;
                    self.directives(depth)?;
                    self.selection_set(depth + 1)
                }
                Some(Tok::Name(_)) => {
                    self.name()?;
                    self.directives(depth)
                }
                _ => {
                    self.directives(depth)?;
                    self.selection_set(depth + 1)
                }
            }
        } else {
            self.name()?;
            if self.eat(Tok::Punct(b':'))? {
                self.name()?;
            }
            if self.tok == Some(Tok::Punct(b'(')) {
                self.arguments(depth)?;
            }
            self.directives(depth)?;
            if self.tok == Some(Tok::Punct(b'{')) {
                self.selection_set(depth + 1)?;
            }
            Ok(())
        }
    }
}

/// Whether `s` is a GraphQL executable document (syntax only).
pub fn is_executable_document(s: &str) -> bool {
    let mut p = Parser {
        lex: Lexer { s, i: 0 },
        tok: None,
    };
    p.document().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        for ok in [
            "query Patient($id: ID!) { patient(id: $id) { name } }",
            "  { patient { name } }",
            "mutation{a}",
            "{ a(x: 1, y: -2.5e3, s: \"x\\u00e9\", b: true, n: null, e: RED, l: [1 2], o: {k: $v}) }",
            "query Q($v: [Int!]! = [1]) @dir(x: 1) { ...F ... on T { id } ... @include(if: $v) { id } }\nfragment F on T { id alias: other }",
            "# comment\n{ a } # trailing",
            "subscription S { x }",
            "{ a(s: \"\"\"block \\\"\"\" string\"\"\") }",
            "query { a } query B { b }",
        ] {
            assert!(is_executable_document(ok), "{ok}");
        }
        for bad in [
            "",
            "query jane@example.com",
            "query: jane@example.com",
            "queryset=1",
            "SELECT ssn FROM patients",
            "jane@example.com",
            "{",
            "{ }",
            "{ a } }",
            "query { a(x: ) }",
            "query ($v Int) { a }",
            "{ a(x: 01) }",
            "{ a(x: \"unterminated) }",
            "fragment on on T { a }",
            "type Query { a: Int }",
            "{ a(x: 1.) }",
            "{ a(x: 1x) }",
        ] {
            assert!(!is_executable_document(bad), "{bad}");
        }
        let nested = |n: usize| format!("{{ {}a{}", "b { ".repeat(n - 1), " }".repeat(n));
        assert!(is_executable_document(&nested(20)));
        assert!(is_executable_document(&nested(MAX_DEPTH)));
        assert!(!is_executable_document(&nested(200)));
    }
}
