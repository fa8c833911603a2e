//! JSON path selectors (a subset of JSONPath, RFC 9535) compiled into one automaton.
//!
//! Grammar (offsets in error messages count characters from 0):
//!
//! ```text
//! selector   = "$" *step
//! step       = "." name            ; member `name` of an object
//!            | "." "*"             ; any child: every member or element
//!            | "[" quoted "]"      ; member by any name: ['odd key'], ["a.b"]
//!            | "[" "*" "]"         ; any child
//!            | ".." name | ".." "*" | ".." "[" (quoted / "*") "]"
//!                                  ; the same, at any depth below (descendants)
//! name       = 1*(letter / digit / "_" / "-")     ; Unicode letters and digits
//! quoted     = "'" *char "'" / DQUOTE *char DQUOTE  ; JSON escapes: \' \" \\ \/ \b \f \n \r \t \uXXXX
//! ```
//!
//! Blanks are allowed inside brackets only. Names match exactly (case-sensitive) against the
//! decoded member name. Array indices and slices (`[0]`, `[1:3]`), filters and unions are not
//! supported: the walker does not number elements, and a policy that seals "the first card"
//! but not the second is not one anybody should rely on.
//!
//! A selector *matches* a node when its steps lead from the root to it; a leaf is *covered*
//! by a selector that matches the leaf or any container above it.
//!
//! # The automaton
//!
//! Every step of every selector is one bit of a `u64` (so at most [`MAX_STEPS`] steps per
//! rule, include and exclude together): bit `k` set in a [`Node`] means "the step of bit `k`
//! is next to match here". Moving to a child is a handful of mask operations plus one string
//! comparison per *distinct* name among the active named steps; no allocation, no path
//! string. A descendant step keeps its own bit alive below (a self-loop). The last step of a
//! selector sets a flag instead of a bit: `INCLUDED` for an include, `EXCLUDED` for an
//! exclude. Both flags stick for the whole subtree, and bits that can no longer change the
//! decision are dropped, so most of a document runs on a node with no bits at all.

use core::fmt;

/// Most selector steps (bits) one rule may hold, include and exclude together.
pub const MAX_STEPS: usize = 64;

/// What one step matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A member with exactly this (decoded) name.
    Key(String),
    /// Any member of an object or element of an array.
    Any,
}

/// One step of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `..`: matches at any depth below the current node, not only among its children.
    pub descendant: bool,
    pub name: Name,
}

/// A parsed selector: `$` followed by its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub steps: Vec<Step>,
}

/// Why a selector does not parse, and where (a character offset from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.message, self.offset)
    }
}

impl std::error::Error for SelectorError {}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn err(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn unexpected(&self) -> SelectorError {
        match self.peek() {
            Some(c) => self.err(format!("unexpected {c:?}")),
            None => self.err("unexpected end"),
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn name(&mut self) -> Result<Name, SelectorError> {
        match self.peek() {
            Some('*') => {
                self.pos += 1;
                Ok(Name::Any)
            }
            Some(c) if is_name_char(c) => {
                let mut s = String::new();
                while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
                    s.push(c);
                    self.pos += 1;
                }
                Ok(Name::Key(s))
            }
            None => Err(self.err("expected a name or '*'")),
            Some(_) => Err(self.unexpected()),
        }
    }

    /// At `[`.
    fn bracket(&mut self) -> Result<Name, SelectorError> {
        self.pos += 1;
        self.skip_blanks();
        let name = match self.peek() {
            Some('*') => {
                self.pos += 1;
                Name::Any
            }
            Some(q @ ('\'' | '"')) => Name::Key(self.quoted(q)?),
            Some(c) if c.is_ascii_digit() || c == '-' || c == ':' => {
                return Err(self.err("array indices and slices are not supported (use [*])"))
            }
            None => return Err(self.err("unterminated '['")),
            Some(_) => return Err(self.unexpected()),
        };
        self.skip_blanks();
        match self.peek() {
            Some(']') => {
                self.pos += 1;
                Ok(name)
            }
            Some(',') => Err(self.err("unions are not supported (write one selector each)")),
            None => Err(self.err("unterminated '['")),
            Some(_) => Err(self.unexpected()),
        }
    }

    /// At the opening quote `q`.
    fn quoted(&mut self, q: char) -> Result<String, SelectorError> {
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(SelectorError {
                    offset: start,
                    message: "unterminated quoted name".into(),
                });
            };
            self.pos += 1;
            if c == q {
                return Ok(s);
            }
            if c != '\\' {
                s.push(c);
                continue;
            }
            let Some(e) = self.peek() else {
                continue;
            };
            self.pos += 1;
            let decoded = match e {
                '\'' | '"' | '\\' | '/' => e,
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => self.unicode_escape()?,
                _ => {
                    self.pos -= 1;
                    return Err(self.err(format!("unknown escape '\\{e}'")));
                }
            };
            s.push(decoded);
        }
    }

    /// After `\u`: four hex digits, a surrogate pair as two escapes.
    fn unicode_escape(&mut self) -> Result<char, SelectorError> {
        let at = self.pos.saturating_sub(2);
        let bad = || SelectorError {
            offset: at,
            message: "bad \\u escape".into(),
        };
        let hi = self.hex4().ok_or_else(bad)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.peek() != Some('\\') || self.chars.get(self.pos + 1) != Some(&'u') {
                return Err(bad());
            }
            self.pos += 2;
            let lo = self.hex4().ok_or_else(bad)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(bad());
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(bad)
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.peek()?.to_digit(16)?;
            v = v * 16 + d;
            self.pos += 1;
        }
        Some(v)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            pos: 0,
        };
        if p.peek() != Some('$') {
            return Err(match p.peek() {
                None => p.err("empty selector: expected '$'"),
                Some(_) => p.err("a selector starts with '$'"),
            });
        }
        p.pos = 1;
        let mut steps = Vec::new();
        while let Some(c) = p.peek() {
            let step = match c {
                '.' => {
                    p.pos += 1;
                    if p.peek() == Some('.') {
                        p.pos += 1;
                        let name = if p.peek() == Some('[') {
                            p.bracket()?
                        } else {
                            p.name()?
                        };
                        Step {
                            descendant: true,
                            name,
                        }
                    } else {
                        Step {
                            descendant: false,
                            name: p.name()?,
                        }
                    }
                }
                '[' => Step {
                    descendant: false,
                    name: p.bracket()?,
                },
                _ => return Err(p.unexpected()),
            };
            steps.push(step);
        }
        Ok(Selector { steps })
    }
}

impl fmt::Display for Selector {
    /// The canonical text: shorthand names where possible, brackets otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for s in &self.steps {
            let dots = if s.descendant { ".." } else { "" };
            match &s.name {
                Name::Any if s.descendant => write!(f, "..*")?,
                Name::Any => f.write_str("[*]")?,
                Name::Key(k) if !k.is_empty() && k.chars().all(is_name_char) => {
                    write!(f, "{}{k}", if s.descendant { ".." } else { "." })?
                }
                Name::Key(k) => {
                    f.write_str(dots)?;
                    f.write_str("['")?;
                    for c in k.chars() {
                        match c {
                            '\'' => f.write_str("\\'")?,
                            '\\' => f.write_str("\\\\")?,
                            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                            c => write!(f, "{c}")?,
                        }
                    }
                    f.write_str("']")?;
                }
            }
        }
        Ok(())
    }
}

/// Which list a selector came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Include,
    Exclude,
}

/// A compile error: which selector (list and index) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub list: List,
    pub index: usize,
    pub error: SelectorError,
}

const INCLUDED: u8 = 1;
const EXCLUDED: u8 = 2;

/// A position in the document for the automaton: the active step bits plus the sticky
/// include/exclude flags. 16 bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    states: u64,
    flags: u8,
}

impl Node {
    /// Covered by an include and by no exclude.
    #[inline]
    pub fn selected(self) -> bool {
        self.flags == INCLUDED
    }
}

/// Include and exclude selectors compiled into one automaton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selectors {
    /// The root node (bits of every selector's first step, flags of `$` selectors).
    root: Node,
    /// Steps that match any child.
    wild: u64,
    /// Steps that match a name (one of `names`).
    named: u64,
    /// Descendant steps: their bit stays set below.
    descendant: u64,
    /// The last step of an include / of an exclude.
    last_include: u64,
    last_exclude: u64,
    /// Every bit of include / exclude selectors.
    include_bits: u64,
    exclude_bits: u64,
    /// Distinct names, each with the bits of the steps that match it.
    names: Vec<(Box<str>, u64)>,
}

impl Selectors {
    /// Parses and compiles. Fails on the first selector that does not parse, or the one
    /// that takes the total past [`MAX_STEPS`].
    pub fn compile<I, E, S1, S2>(include: I, exclude: E) -> Result<Selectors, CompileError>
    where
        I: IntoIterator<Item = S1>,
        E: IntoIterator<Item = S2>,
        S1: AsRef<str>,
        S2: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for (index, s) in include.into_iter().enumerate() {
            let sel = Selector::parse(s.as_ref()).map_err(|error| CompileError {
                list: List::Include,
                index,
                error,
            })?;
            parsed.push((List::Include, index, sel));
        }
        for (index, s) in exclude.into_iter().enumerate() {
            let sel = Selector::parse(s.as_ref()).map_err(|error| CompileError {
                list: List::Exclude,
                index,
                error,
            })?;
            parsed.push((List::Exclude, index, sel));
        }
        Self::from_selectors(&parsed)
    }

    /// Compiles parsed selectors (`(list, index in its list, selector)`).
    pub fn from_selectors(parsed: &[(List, usize, Selector)]) -> Result<Selectors, CompileError> {
        let mut c = Selectors {
            root: Node {
                states: 0,
                flags: 0,
            },
            wild: 0,
            named: 0,
            descendant: 0,
            last_include: 0,
            last_exclude: 0,
            include_bits: 0,
            exclude_bits: 0,
            names: Vec::new(),
        };
        let mut root_flags = 0;
        let mut bit = 0usize;
        for (list, index, sel) in parsed {
            let n = sel.steps.len();
            if n == 0 {
                root_flags |= match list {
                    List::Include => INCLUDED,
                    List::Exclude => EXCLUDED,
                };
                continue;
            }
            if bit + n > MAX_STEPS {
                return Err(CompileError {
                    list: *list,
                    index: *index,
                    error: SelectorError {
                        offset: 0,
                        message: format!(
                            "too many selector steps: at most {MAX_STEPS} per rule, include and exclude together"
                        ),
                    },
                });
            }
            c.root.states |= 1 << bit;
            for (k, step) in sel.steps.iter().enumerate() {
                let b = 1u64 << (bit + k);
                match list {
                    List::Include => c.include_bits |= b,
                    List::Exclude => c.exclude_bits |= b,
                }
                if step.descendant {
                    c.descendant |= b;
                }
                match &step.name {
                    Name::Any => c.wild |= b,
                    Name::Key(k) => {
                        c.named |= b;
                        match c.names.iter_mut().find(|(n, _)| **n == **k) {
                            Some((_, m)) => *m |= b,
                            None => c.names.push((k.as_str().into(), b)),
                        }
                    }
                }
                if k + 1 == n {
                    match list {
                        List::Include => c.last_include |= b,
                        List::Exclude => c.last_exclude |= b,
                    }
                }
            }
            bit += n;
        }
        c.root = c.settle(c.root.states, root_flags);
        Ok(c)
    }

    #[inline]
    pub fn root(&self) -> Node {
        self.root
    }

    /// The node of member `key` of the object at `parent`.
    #[inline]
    pub fn field(&self, parent: Node, key: &str) -> Node {
        let active = parent.states;
        if active == 0 {
            return parent;
        }
        let mut hit = active & self.wild;
        let named = active & self.named;
        if named != 0 {
            for (name, mask) in &self.names {
                if mask & named != 0 && **name == *key {
                    hit |= mask & named;
                }
            }
        }
        self.advance(parent, hit)
    }

    /// The node of an element of the array at `parent`.
    #[inline]
    pub fn element(&self, parent: Node) -> Node {
        let active = parent.states;
        if active == 0 {
            return parent;
        }
        self.advance(parent, active & self.wild)
    }

    #[inline]
    fn advance(&self, parent: Node, hit: u64) -> Node {
        let last = self.last_include | self.last_exclude;
        let mut flags = parent.flags;
        if hit & self.last_exclude != 0 {
            flags |= EXCLUDED;
        }
        if hit & self.last_include != 0 {
            flags |= INCLUDED;
        }
        let states = ((hit & !last) << 1) | (parent.states & self.descendant);
        self.settle(states, flags)
    }

    /// Drops the bits that can no longer change the decision below this node.
    #[inline]
    fn settle(&self, states: u64, flags: u8) -> Node {
        let states = if flags & EXCLUDED != 0 {
            0
        } else if flags & INCLUDED != 0 {
            states & self.exclude_bits
        } else if states & self.include_bits == 0 {
            0
        } else {
            states
        };
        Node { states, flags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        match Selector::parse(s) {
            Ok(x) => format!("parsed: {x:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn key(k: &str, descendant: bool) -> Step {
        Step {
            descendant,
            name: Name::Key(k.into()),
        }
    }

    fn any(descendant: bool) -> Step {
        Step {
            descendant,
            name: Name::Any,
        }
    }

    #[test]
    fn parses_the_grammar() {
        let p = |s: &str| Selector::parse(s).unwrap().steps;
        assert_eq!(p("$"), vec![]);
        assert_eq!(p("$.a.b"), vec![key("a", false), key("b", false)]);
        assert_eq!(p("$..email"), vec![key("email", true)]);
        assert_eq!(
            p("$.items[*].card"),
            vec![key("items", false), any(false), key("card", false)]
        );
        assert_eq!(p("$.*"), vec![any(false)]);
        assert_eq!(p("$..*"), vec![any(true)]);
        assert_eq!(p("$..[*]"), vec![any(true)]);
        assert_eq!(p("$['odd key']"), vec![key("odd key", false)]);
        assert_eq!(p("$[ \"a.b\" ]"), vec![key("a.b", false)]);
        assert_eq!(p("$..['x y']"), vec![key("x y", true)]);
        assert_eq!(p(r"$['it\'s']"), vec![key("it's", false)]);
        assert_eq!(
            p(r#"$["q\"\\\/\n\u00e9\ud83d\ude00"]"#),
            vec![key("q\"\\/\né😀", false)]
        );
        assert_eq!(p("$.x-request-id"), vec![key("x-request-id", false)]);
        assert_eq!(
            p("$.données.ünïcode_1"),
            vec![key("données", false), key("ünïcode_1", false)]
        );
        assert_eq!(p("$[*][*]"), vec![any(false), any(false)]);
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(err(""), "empty selector: expected '$' at 0");
        assert_eq!(err("a.b"), "a selector starts with '$' at 0");
        assert_eq!(err("$.item[]"), "unexpected ']' at 7");
        assert_eq!(err("$.a]"), "unexpected ']' at 3");
        assert_eq!(err("$."), "expected a name or '*' at 2");
        assert_eq!(err("$..."), "unexpected '.' at 3");
        assert_eq!(err("$.a b"), "unexpected ' ' at 3");
        assert_eq!(err("$a"), "unexpected 'a' at 1");
        assert_eq!(
            err("$.items[0]"),
            "array indices and slices are not supported (use [*]) at 8"
        );
        assert_eq!(err("$['a'"), "unterminated '[' at 5");
        assert_eq!(err("$['a"), "unterminated quoted name at 2");
        assert_eq!(
            err("$['a','b']"),
            "unions are not supported (write one selector each) at 5"
        );
        assert_eq!(err(r"$['\x']"), r"unknown escape '\x' at 4");
        assert_eq!(err(r"$['\ud800']"), r"bad \u escape at 3");
        assert_eq!(
            err("$.é]"),
            "unexpected ']' at 3",
            "offsets count characters"
        );
        assert_eq!(err("$[?(@.a)]"), "unexpected '?' at 2");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "$",
            "$.a.b",
            "$..email",
            "$.items[*].card",
            "$['odd key']",
            "$..['x y']",
            r"$['it\'s \\ ok']",
            "$..*",
            "$['']",
            "$['\\u0001']",
        ] {
            let sel = Selector::parse(s).unwrap();
            let again = Selector::parse(&sel.to_string()).unwrap();
            assert_eq!(sel, again, "{s} -> {sel}");
        }
    }

    enum Seg<'a> {
        F(&'a str),
        E,
    }

    fn decide(c: &Selectors, path: &[Seg<'_>]) -> bool {
        let mut n = c.root();
        for s in path {
            n = match s {
                Seg::F(k) => c.field(n, k),
                Seg::E => c.element(n),
            };
        }
        n.selected()
    }

    #[test]
    fn include_and_exclude() {
        use Seg::{E, F};
        let none: [&str; 0] = [];
        let c = Selectors::compile(["$"], none).unwrap();
        assert!(decide(&c, &[]));
        assert!(decide(&c, &[F("a"), E, F("b")]));

        let c = Selectors::compile(["$.a.b"], none).unwrap();
        assert!(decide(&c, &[F("a"), F("b")]));
        assert!(decide(&c, &[F("a"), F("b"), F("c"), E]), "under a match");
        assert!(!decide(&c, &[F("a")]));
        assert!(!decide(&c, &[F("a"), F("c")]));
        assert!(!decide(&c, &[F("b")]));
        assert!(!decide(&c, &[F("a"), E]), "names do not match elements");

        let c = Selectors::compile(["$..email"], none).unwrap();
        assert!(decide(&c, &[F("email")]));
        assert!(decide(&c, &[F("x"), E, E, F("y"), F("email")]));
        assert!(!decide(&c, &[F("x"), F("Email")]), "case-sensitive");
        assert!(!decide(&c, &[F("emails")]));

        let c = Selectors::compile(["$.items[*].card"], ["$.items[*].card.last4"]).unwrap();
        assert!(decide(&c, &[F("items"), E, F("card"), F("number")]));
        assert!(!decide(&c, &[F("items"), E, F("card"), F("last4")]));
        assert!(!decide(&c, &[F("items"), E, F("sku")]));
        assert!(
            decide(&c, &[F("items"), F("x"), F("card")]),
            "[*] is any child, members too"
        );

        // exclude wins, at any depth below
        let c = Selectors::compile(["$..card"], ["$.public"]).unwrap();
        assert!(decide(&c, &[F("a"), F("card")]));
        assert!(!decide(&c, &[F("public"), F("card")]));
        assert!(!decide(&c, &[F("public"), E, F("x"), F("card"), F("n")]));

        // an allowlist: everything but
        let c = Selectors::compile(["$"], ["$.id", "$..created_at", "$.m[*][*].pub"]).unwrap();
        assert!(!decide(&c, &[F("id")]));
        assert!(decide(&c, &[F("x"), F("id")]));
        assert!(!decide(&c, &[F("x"), E, F("created_at")]));
        assert!(!decide(&c, &[F("m"), E, E, F("pub")]));
        assert!(decide(&c, &[F("m"), E, F("pub")]));
        assert!(decide(&c, &[F("m"), E, E, F("secret")]));

        // excluding the root seals nothing
        let c = Selectors::compile(["$..a"], ["$"]).unwrap();
        assert!(!decide(&c, &[F("a")]));
    }

    #[test]
    fn nodes_settle_to_no_bits() {
        let c = Selectors::compile(["$.a.b"], ["$.x"]).unwrap();
        let n = c.field(c.root(), "zzz");
        assert_eq!(n.states, 0, "no include can match below");
        let n = c.field(c.field(c.root(), "a"), "b");
        assert!(n.selected());
        assert_eq!(
            n.states, 0,
            "the exclude only matches at the root's children"
        );
    }

    #[test]
    fn at_most_64_steps() {
        let long = format!("${}", ".a".repeat(40));
        let c = Selectors::compile([long.as_str()], [long.as_str()]).unwrap_err();
        assert_eq!((c.list, c.index), (List::Exclude, 0));
        assert!(c.error.message.starts_with("too many selector steps"));
        let exactly = format!("${}", ".a".repeat(24));
        assert!(Selectors::compile([long.as_str()], [exactly.as_str()]).is_ok());
    }
}
