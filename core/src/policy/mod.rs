//! Seal policies: which leaves of a JSON document are sealed, and how.
//!
//! A policy is an automaton over the document path (see [`crate::json::Policy`]). The
//! type switches shared by every profile live in [`TypeSwitches`].
//!
//! Profiles: [`moesif`] (Moesif's collector formats) and [`json`] (any JSON API, with the
//! selectors of [`jsonpath`]).

pub mod graphql;
pub mod json;
pub mod jsonpath;
pub mod moesif;
#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::crypto::cipher::{Padding, Scope};
use crate::crypto::value::Mode;
use crate::json::{Leaf, LeafAction};

/// `deterministic` | `randomized` in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    Deterministic,
    Randomized,
}

impl From<ModeName> for Mode {
    fn from(m: ModeName) -> Mode {
        match m {
            ModeName::Deterministic => Mode::Deterministic,
            ModeName::Randomized => Mode::Randomized,
        }
    }
}

/// Which leaf types a sealed region seals, and in which mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeSwitches {
    pub mode: Mode,
    /// Booleans have two values: deterministic sealing would hide nothing, so they get
    /// their own mode (randomized by default).
    pub boolean_mode: Mode,
    pub numerics: bool,
    pub dates: bool,
    pub booleans: bool,
}

impl TypeSwitches {
    /// The action for a leaf inside a region the policy seals.
    #[inline]
    pub fn seal(&self, leaf: Leaf<'_>) -> LeafAction {
        match leaf {
            Leaf::Str(s) => {
                if !self.dates && is_rfc3339(s) {
                    LeafAction::Keep
                } else {
                    LeafAction::Seal(self.mode)
                }
            }
            Leaf::Number(_) if self.numerics => LeafAction::Seal(self.mode),
            Leaf::Bool(_) if self.booleans => LeafAction::Seal(self.boolean_mode),
            Leaf::Number(_) | Leaf::Bool(_) | Leaf::Null => LeafAction::Keep,
        }
    }
}

/// How values are shaped before sealing (format v2), the same in every profile: length
/// padding (`pad`) and the scope of deterministic values (`deterministic_domains`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueShape {
    pad: Padding,
    /// Field path → the scope of its named domain. Few entries: a linear scan.
    domains: Vec<(String, Scope)>,
}

/// `deterministic_domains` in configuration: domain name → the field paths it joins.
pub type DomainsOption = BTreeMap<String, Vec<String>>;

/// A `deterministic_domains` entry that cannot be used: the domain and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    pub domain: String,
    pub message: String,
}

impl ValueShape {
    /// `pad`: bucket padding on or off. `domains`: each named domain lists field paths
    /// (dotted, array indices dropped, header names lower-case) whose deterministic values
    /// share one scope, so equal values in them seal alike and can be joined. A path may
    /// be in one domain only; a domain needs a name and at least one path.
    pub fn new(pad: bool, domains: &DomainsOption) -> Result<ValueShape, DomainError> {
        let mut list: Vec<(String, Scope)> = Vec::new();
        for (name, paths) in domains {
            let err = |message: String| DomainError {
                domain: name.clone(),
                message,
            };
            if name.is_empty() {
                return Err(err("a domain needs a name".into()));
            }
            if paths.is_empty() {
                return Err(err("a domain needs at least one field path".into()));
            }
            let scope = Scope::domain(name);
            for path in paths {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(err(format!("{path:?} is not a dotted field path")));
                }
                if list.iter().any(|(p, _)| p == path) {
                    return Err(err(format!("{path:?} is already in another domain")));
                }
                list.push((path.clone(), scope));
            }
        }
        Ok(ValueShape {
            pad: if pad { Padding::Buckets } else { Padding::Off },
            domains: list,
        })
    }

    /// As [`ValueShape::new`], keeping what is valid (configuration validates first).
    pub fn lenient(pad: bool, domains: &DomainsOption) -> ValueShape {
        ValueShape::new(pad, domains).unwrap_or_else(|_| {
            let mut shape = ValueShape::new(pad, &DomainsOption::new()).unwrap_or_default();
            for (name, paths) in domains {
                for path in paths {
                    if !shape.domains.iter().any(|(p, _)| p == path) {
                        shape.domains.push((path.clone(), Scope::domain(name)));
                    }
                }
            }
            shape
        })
    }

    /// The named domain of a deterministic value at `path`, if it is in one.
    pub fn domain(&self, path: &str) -> Option<Scope> {
        self.domains
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, s)| *s)
    }

    /// The scope of a deterministic value at `path`: its named domain, else the field.
    pub fn scope(&self, path: &str) -> Scope {
        self.domain(path).unwrap_or_else(|| Scope::field(path))
    }

    pub fn padding(&self) -> Padding {
        self.pad
    }
}

/// RFC 3339 `full-date` (`2026-11-22`) or `date-time` (`2026-11-22T10:00:00.000Z`,
/// `...+01:00`). Only the shape is checked, plus month/day/hour ranges.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: core::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
    };
    let num = |r: core::ops::Range<usize>| {
        b.get(r)
            .map(|d| d.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')))
            .unwrap_or(0)
    };
    if b.len() < 10
        || !digits(0..4)
        || b.get(4) != Some(&b'-')
        || !digits(5..7)
        || b.get(7) != Some(&b'-')
        || !digits(8..10)
    {
        return false;
    }
    if !(1..=12).contains(&num(5..7)) || !(1..=31).contains(&num(8..10)) {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || !digits(11..13)
        || b.get(13) != Some(&b':')
        || !digits(14..16)
        || b.get(16) != Some(&b':')
        || !digits(17..19)
        || num(11..13) > 23
        || num(14..16) > 59
        || num(17..19) > 60
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && digits(i + 1..i + 3)
                && b.get(i + 3) == Some(&b':')
                && digits(i + 4..i + 6)
        }
        _ => false,
    }
}

/// Case-insensitive name lists (`*_skip` options), matched at any depth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet(Vec<String>);

impl NameSet {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> NameSet {
        NameSet(
            names
                .into_iter()
                .map(|s| s.as_ref().to_ascii_lowercase())
                .collect(),
        )
    }

    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_shapes() {
        for ok in [
            "2026-11-22",
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.000Z",
            "2026-11-22t10:00:00z",
            "2026-11-22T10:00:00+01:00",
            "2026-11-22 10:00:00-05:30",
            "2016-12-31T23:59:60Z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-11",
            "2026-13-01",
            "2026-00-10",
            "2026-11-32",
            "20261122",
            "2026-11-22T",
            "2026-11-22T10:00:00",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0100",
            "Sun, 22 Nov 2026 10:00:00 GMT",
            "2026-11-22x",
            "078-05-1120",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn domains_scope_their_fields_and_bad_ones_are_refused() {
        let d: DomainsOption = serde_json::from_value(serde_json::json!({
            "email": ["request.body.email", "response.body.owner"],
        }))
        .unwrap();
        let shape = ValueShape::new(true, &d).unwrap();
        assert_eq!(
            shape.scope("request.body.email"),
            shape.scope("response.body.owner")
        );
        assert_eq!(shape.scope("request.body.email"), Scope::domain("email"));
        assert_eq!(
            shape.scope("request.body.name"),
            Scope::field("request.body.name")
        );
        assert_ne!(Scope::field("email"), Scope::domain("email"));
        assert_eq!(shape.padding(), Padding::Buckets);
        assert_eq!(ValueShape::new(false, &d).unwrap().padding(), Padding::Off);
        for bad in [
            serde_json::json!({"": ["a"]}),
            serde_json::json!({"x": []}),
            serde_json::json!({"x": ["a..b"]}),
            serde_json::json!({"x": [""]}),
            serde_json::json!({"x": ["a"], "y": ["a"]}),
        ] {
            let d: DomainsOption = serde_json::from_value(bad.clone()).unwrap();
            assert!(ValueShape::new(true, &d).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_sets_ignore_case() {
        let s = NameSet::new(["Authorization", "x-request-id"]);
        assert!(s.contains("authorization"));
        assert!(s.contains("X-Request-ID"));
        assert!(!s.contains("x-request"));
    }
}
