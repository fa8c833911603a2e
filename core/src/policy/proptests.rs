//! The `json` profile against a naive reference: random documents, random include/exclude
//! selectors (written in random but equivalent syntax), and a matcher that builds every
//! leaf's path and tries each selector on each of its prefixes. The compiled automaton, and
//! the whole profile through `seal_document`, must agree with it on every leaf.

use proptest::prelude::*;
use serde_json::Value;

use super::json::{JsonOptions, JsonRules};
use super::jsonpath::{Name, Selector, Selectors, Step};
use crate::crypto::cipher::SealingKey;
use crate::crypto::keys::{Dek, Epoch, Kid};
use crate::crypto::value::SealedValue;
use crate::json::{seal_document, unseal_document, Scratch};

/// Member names used by both the documents and the selectors, so selectors hit often. Some
/// need brackets in a selector and escapes in JSON.
const NAMES: &[&str] = &[
    "a", "b", "email", "card", "odd key", "x.y", "é", "q\"'\\", "",
];

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index,
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES).prop_map(str::to_string)
}

fn doc() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z0-9 @.\"]{0,12}".prop_map(Value::String),
        Just(Value::String("2026-11-22".into())),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn step() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        prop_oneof![
            1 => Just(Name::Any),
            4 => name().prop_map(Name::Key),
        ],
    )
        .prop_map(|(descendant, name)| Step { descendant, name })
}

fn selector() -> impl Strategy<Value = Selector> {
    prop::collection::vec(step(), 0..4).prop_map(|steps| Selector { steps })
}

/// Writes a selector in one of the equivalent syntaxes `style` picks, per step.
fn render(sel: &Selector, style: u64) -> String {
    let mut out = String::from("$");
    for (i, s) in sel.steps.iter().enumerate() {
        let pick = (style >> (2 * i)) & 3;
        let dots = if s.descendant { ".." } else { "" };
        match &s.name {
            Name::Any => {
                out += dots;
                out += match (pick, s.descendant) {
                    (1, _) => "[*]",
                    (2, _) => "[ * ]",
                    (_, true) => "*",
                    (_, false) => ".*",
                };
            }
            Name::Key(k) => {
                let plain = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
                if plain && pick == 0 {
                    out += if s.descendant { ".." } else { "." };
                    out += k;
                } else {
                    let q = if pick & 1 == 0 { '\'' } else { '"' };
                    out += dots;
                    out.push('[');
                    out.push(q);
                    for c in k.chars() {
                        if c == q || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push(q);
                    out.push(']');
                }
            }
        }
    }
    out
}

fn seg_matches(name: &Name, seg: &Seg) -> bool {
    match (name, seg) {
        (Name::Any, _) => true,
        (Name::Key(k), Seg::Key(s)) => k == s,
        (Name::Key(_), Seg::Index) => false,
    }
}

/// Does `steps` lead from the root exactly to the node at `path`?
fn full_match(steps: &[Step], path: &[Seg]) -> bool {
    let Some((first, rest)) = steps.split_first() else {
        return path.is_empty();
    };
    if first.descendant {
        (0..path.len())
            .any(|j| seg_matches(&first.name, &path[j]) && full_match(rest, &path[j + 1..]))
    } else {
        !path.is_empty() && seg_matches(&first.name, &path[0]) && full_match(rest, &path[1..])
    }
}

/// Is the node at `path` at or under a node `sel` matches?
fn covers(sel: &Selector, path: &[Seg]) -> bool {
    (0..=path.len()).any(|k| full_match(&sel.steps, &path[..k]))
}

fn reference(include: &[Selector], exclude: &[Selector], path: &[Seg]) -> bool {
    include.iter().any(|s| covers(s, path)) && !exclude.iter().any(|s| covers(s, path))
}

/// Every leaf with its path.
fn leaves<'v>(v: &'v Value, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, &'v Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(Seg::Key(k.clone()));
                leaves(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for x in a {
                path.push(Seg::Index);
                leaves(x, path, out);
                path.pop();
            }
        }
        leaf => out.push((path.clone(), leaf)),
    }
}

/// The leaves of two documents of the same shape, in the order of [`leaves`].
fn walk_pair<'a>(orig: &Value, sealed: &'a Value, out: &mut Vec<(Value, &'a Value)>) {
    match (orig, sealed) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            for (k, x) in a {
                walk_pair(x, &b[k], out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                walk_pair(x, y, out);
            }
        }
        (x, y) => out.push((x.clone(), y)),
    }
}

fn key() -> SealingKey {
    let kid = Kid::new(1, "2026-01".parse::<Epoch>().unwrap());
    SealingKey::new(kid, &Dek::from_bytes([9u8; 32]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn automaton_agrees_with_the_reference(
        doc in doc(),
        include in prop::collection::vec((selector(), any::<u64>()), 1..4),
        exclude in prop::collection::vec((selector(), any::<u64>()), 0..3),
    ) {
        let inc_text: Vec<String> = include.iter().map(|(s, st)| render(s, *st)).collect();
        let exc_text: Vec<String> = exclude.iter().map(|(s, st)| render(s, *st)).collect();
        // The parser reads back what was generated, in whichever syntax.
        for ((s, _), t) in include.iter().chain(&exclude).zip(inc_text.iter().chain(&exc_text)) {
            prop_assert_eq!(&Selector::parse(t).unwrap(), s, "{}", t);
        }
        let inc: Vec<Selector> = include.into_iter().map(|x| x.0).collect();
        let exc: Vec<Selector> = exclude.into_iter().map(|x| x.0).collect();
        let compiled = Selectors::compile(&inc_text, &exc_text).unwrap();

        let mut all = Vec::new();
        leaves(&doc, &mut Vec::new(), &mut all);
        for (path, _) in &all {
            let mut n = compiled.root();
            for seg in path {
                n = match seg {
                    Seg::Key(k) => compiled.field(n, k),
                    Seg::Index => compiled.element(n),
                };
            }
            prop_assert_eq!(n.selected(), reference(&inc, &exc, path), "path {:?}", path);
        }

        // The whole profile, through the streaming sealer: a leaf is sealed iff the
        // reference selects it (and it is not null); unsealing gives the bytes back.
        let rules = JsonRules::new(&JsonOptions {
            include: inc_text,
            exclude: exc_text,
            ..JsonOptions::default()
        })
        .unwrap();
        let input = serde_json::to_vec(&doc).unwrap();
        let key = key();
        let mut out = Vec::new();
        seal_document(&input, &rules, &key, 128, &mut Scratch::default(), &mut out).unwrap();
        let sealed: Value = serde_json::from_slice(&out).unwrap();
        let mut pairs = Vec::new();
        walk_pair(&doc, &sealed, &mut pairs);
        prop_assert_eq!(pairs.len(), all.len());
        for ((orig, fwd), (path, _)) in pairs.iter().zip(&all) {
            let want = reference(&inc, &exc, path) && !orig.is_null();
            let is_sealed = fwd.as_str().and_then(SealedValue::parse).is_some();
            prop_assert_eq!(is_sealed, want, "path {:?}: {} -> {}", path, orig, fwd);
            if !want {
                prop_assert_eq!(orig, *fwd);
            }
        }
        let mut back = Vec::new();
        let stats = unseal_document(&out, &vec![key], 128, &mut back).unwrap();
        prop_assert_eq!(stats.failed, 0);
        prop_assert_eq!(back, input);
    }
}
