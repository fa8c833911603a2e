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

use crate::calendar::is_rfc3339;
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
