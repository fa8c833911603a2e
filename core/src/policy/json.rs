//! The `json` profile: any JSON API. Which leaves are sealed is said with JSON path
//! selectors ([`super::jsonpath`]):
//!
//! - a leaf is sealed iff it is at or under a node matched by some `include` selector and
//!   not at or under a node matched by any `exclude` selector (exclude wins);
//! - `include` defaults to `["$"]`, the whole document, so `exclude` alone is an allowlist
//!   of readable fields and a field nobody listed is sealed (fail closed). An explicit empty
//!   `include` is refused rather than read as "seal nothing";
//! - inside the selected region the type switches apply as in the `moesif` profile; `null`
//!   is never sealed; field names are never sealed.

use serde::Deserialize;

use super::jsonpath::{CompileError, List, Node, Selectors};
use super::{DomainsOption, ModeName, TypeSwitches, ValueShape};
use crate::crypto::cipher::{Padding, Scope};
use crate::json::{Leaf, LeafAction, Policy};

/// The options of the `json` profile. Every field has a default; see
/// `docs/configuration.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonOptions {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub mode: ModeName,
    pub boolean_mode: ModeName,
    pub encrypt_numerics: bool,
    pub encrypt_dates: bool,
    pub encrypt_booleans: bool,
    /// Pad sealed values to length buckets (format v2). Default on.
    pub pad: bool,
    /// Named domains whose fields share deterministic ciphertexts. Default none.
    pub deterministic_domains: DomainsOption,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            include: vec!["$".into()],
            exclude: Vec::new(),
            mode: ModeName::Deterministic,
            boolean_mode: ModeName::Randomized,
            encrypt_numerics: true,
            encrypt_dates: true,
            encrypt_booleans: true,
            pad: true,
            deterministic_domains: DomainsOption::new(),
        }
    }
}

/// Why the options do not compile: the option (`include` / `exclude`), the index in it
/// (None: the list as a whole) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonOptionsError {
    pub field: &'static str,
    pub index: Option<usize>,
    pub message: String,
}

/// The `json` options compiled once at configuration time. It is the policy itself: the
/// `json` profile has no per-request state.
#[derive(Debug, Clone)]
pub struct JsonRules {
    selectors: Selectors,
    switches: TypeSwitches,
    shape: ValueShape,
}

impl JsonRules {
    pub fn new(o: &JsonOptions) -> Result<JsonRules, JsonOptionsError> {
        if o.include.is_empty() {
            return Err(JsonOptionsError {
                field: "include",
                index: None,
                message: "must hold at least one selector (leave it out to seal the whole \
                          document)"
                    .into(),
            });
        }
        let selectors = Selectors::compile(&o.include, &o.exclude).map_err(
            |CompileError { list, index, error }| JsonOptionsError {
                field: match list {
                    List::Include => "include",
                    List::Exclude => "exclude",
                },
                index: Some(index),
                message: error.to_string(),
            },
        )?;
        Ok(JsonRules {
            selectors,
            switches: TypeSwitches {
                mode: o.mode.into(),
                boolean_mode: o.boolean_mode.into(),
                numerics: o.encrypt_numerics,
                dates: o.encrypt_dates,
                booleans: o.encrypt_booleans,
            },
            shape: ValueShape::new(o.pad, &o.deterministic_domains).map_err(|e| {
                JsonOptionsError {
                    field: "deterministic_domains",
                    index: None,
                    message: format!("domain {:?}: {}", e.domain, e.message),
                }
            })?,
        })
    }
}

impl Policy for JsonRules {
    type Node = Node;

    #[inline]
    fn root(&self) -> Node {
        self.selectors.root()
    }

    #[inline]
    fn field(&self, parent: Node, key: &str) -> Node {
        self.selectors.field(parent, key)
    }

    #[inline]
    fn element(&self, parent: Node) -> Node {
        self.selectors.element(parent)
    }

    #[inline]
    fn leaf(&self, node: Node, leaf: Leaf<'_>) -> LeafAction {
        if node.selected() {
            self.switches.seal(leaf)
        } else {
            LeafAction::Keep
        }
    }

    fn domain(&self, path: &str) -> Option<Scope> {
        self.shape.domain(path)
    }

    fn padding(&self) -> Padding {
        self.shape.padding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::value::Mode;

    fn rules(v: serde_json::Value) -> Result<JsonRules, JsonOptionsError> {
        let o: JsonOptions = serde_json::from_value(v).unwrap();
        JsonRules::new(&o)
    }

    #[test]
    fn defaults_seal_everything() {
        let r = JsonRules::new(&JsonOptions::default()).unwrap();
        let n = r.field(r.element(r.field(r.root(), "a")), "b");
        assert_eq!(
            r.leaf(n, Leaf::Str("x")),
            LeafAction::Seal(Mode::Deterministic)
        );
        assert_eq!(
            r.leaf(n, Leaf::Bool(true)),
            LeafAction::Seal(Mode::Randomized)
        );
        assert_eq!(
            r.leaf(n, Leaf::Number("1")),
            LeafAction::Seal(Mode::Deterministic)
        );
        assert_eq!(r.leaf(n, Leaf::Null), LeafAction::Keep);
        assert_eq!(
            r.leaf(r.root(), Leaf::Str("a scalar document")),
            LeafAction::Seal(Mode::Deterministic)
        );
    }

    #[test]
    fn switches_apply_inside_the_selection() {
        let r = rules(serde_json::json!({
            "include": ["$.s"], "mode": "randomized", "boolean_mode": "deterministic",
            "encrypt_numerics": false, "encrypt_dates": false}))
        .unwrap();
        let s = r.field(r.root(), "s");
        assert_eq!(
            r.leaf(s, Leaf::Str("x")),
            LeafAction::Seal(Mode::Randomized)
        );
        assert_eq!(
            r.leaf(s, Leaf::Bool(false)),
            LeafAction::Seal(Mode::Deterministic)
        );
        assert_eq!(r.leaf(s, Leaf::Number("1")), LeafAction::Keep);
        assert_eq!(r.leaf(s, Leaf::Str("2026-11-22")), LeafAction::Keep);
        let t = r.field(r.root(), "t");
        assert_eq!(r.leaf(t, Leaf::Str("x")), LeafAction::Keep);
    }

    #[test]
    fn errors_name_the_selector() {
        let e = rules(serde_json::json!({"include": ["$.a", "$.b", "$.item[]"]})).unwrap_err();
        assert_eq!(
            e,
            JsonOptionsError {
                field: "include",
                index: Some(2),
                message: "unexpected ']' at 7".into()
            }
        );
        let e = rules(serde_json::json!({"exclude": ["$.a", "b"]})).unwrap_err();
        assert_eq!((e.field, e.index), ("exclude", Some(1)));
        let e = rules(serde_json::json!({"include": []})).unwrap_err();
        assert_eq!((e.field, e.index), ("include", None));
    }
}
