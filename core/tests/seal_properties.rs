//! Properties of the streaming sealer on random JSON:
//! - unseal(seal(doc)) == doc, byte for byte (whitespace and number text included);
//! - the sealed document is JSON with the same structure and keys;
//! - the sealer accepts exactly what serde_json (the reference parser) accepts.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use veil_core::crypto::cipher::SealingKey;
use veil_core::crypto::keys::{Dek, Epoch, Kid};
use veil_core::crypto::value::Mode;
use veil_core::json::{
    seal_document, seal_document_with, unseal_document, Leaf, LeafAction, Memoized, Policy, Scratch,
};
use veil_core::memo::SealMemo;
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};

fn key() -> SealingKey {
    let kid = Kid::new(1, "2026-01".parse::<Epoch>().unwrap());
    SealingKey::new(kid, &Dek::from_bytes([7u8; 32]))
}

/// Seals every leaf: strings and numbers deterministically, booleans randomized.
struct SealAll;

impl Policy for SealAll {
    type Node = ();
    fn root(&self) {}
    fn field(&self, _: (), _: &str) {}
    fn element(&self, _: ()) {}
    fn leaf(&self, _: (), leaf: Leaf<'_>) -> LeafAction {
        match leaf {
            Leaf::Bool(_) => LeafAction::Seal(Mode::Randomized),
            Leaf::Null => LeafAction::Keep,
            _ => LeafAction::Seal(Mode::Deterministic),
        }
    }
}

/// Seals every non-null leaf deterministically.
struct DetAll;

impl Policy for DetAll {
    type Node = ();
    fn root(&self) {}
    fn field(&self, _: (), _: &str) {}
    fn element(&self, _: ()) {}
    fn leaf(&self, _: (), leaf: Leaf<'_>) -> LeafAction {
        match leaf {
            Leaf::Null => LeafAction::Keep,
            _ => LeafAction::Seal(Mode::Deterministic),
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[\\u{0}-\\u{1f}\"\\\\/a-z\\u{80}-\\u{10ffff}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_\"\\\\é]{0,10}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The document with every leaf replaced by null: structure and keys only.
fn shape(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        _ => Value::Null,
    }
}

fn round_trip<P: Policy>(doc: &[u8], policy: &P) {
    let k = key();
    let mut sealed = Vec::new();
    seal_document(doc, policy, &k, 128, &mut Scratch::default(), &mut sealed).unwrap();
    let sealed_v: Value = serde_json::from_slice(&sealed).expect("sealed output is JSON");
    let doc_v: Value = serde_json::from_slice(doc).unwrap();
    assert_eq!(
        shape(&sealed_v),
        shape(&doc_v),
        "structure and keys preserved"
    );
    let keys = vec![k];
    let mut opened = Vec::new();
    let stats = unseal_document(&sealed, &keys, 128, &mut opened).unwrap();
    assert_eq!(stats.failed + stats.unknown_kid, 0);
    assert_eq!(
        String::from_utf8_lossy(&opened),
        String::from_utf8_lossy(doc),
        "unseal(seal(doc)) == doc"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn seal_all_round_trips_compact_and_pretty(v in json_value()) {
        round_trip(&serde_json::to_vec(&v).unwrap(), &SealAll);
        round_trip(&serde_json::to_vec_pretty(&v).unwrap(), &SealAll);
    }

    #[test]
    fn moesif_policy_round_trips(v in json_value(), batch in any::<bool>()) {
        let route = Route::from_path(if batch { "/v1/events/batch" } else { "/v1/events" }).unwrap();
        let policy = MoesifPolicy::new(route, Arc::new(MoesifRules::new(&MoesifOptions::default())));
        round_trip(&serde_json::to_vec(&v).unwrap(), &policy);
    }

    /// The deterministic memo never changes a result: memoized sealing (cold, then warm, with
    /// a memo small enough to evict) is byte-identical to direct sealing.
    #[test]
    fn memoized_sealing_is_identical(v in json_value()) {
        let doc = serde_json::to_vec(&v).unwrap();
        let k = key();
        let mut direct = Vec::new();
        seal_document(&doc, &DetAll, &k, 128, &mut Scratch::default(), &mut direct).unwrap();
        let mut memo = SealMemo::new(8, 64);
        for _ in 0..2 {
            let mut memoized = Vec::new();
            let mut sealer = Memoized { key: &k, memo: &mut memo };
            seal_document_with(&doc, &DetAll, &mut sealer, 128, &mut Scratch::default(), &mut memoized).unwrap();
            prop_assert_eq!(&memoized, &direct);
        }
    }

    /// Byte-level mutations of valid JSON: the sealer accepts exactly what serde_json accepts.
    #[test]
    fn accepts_exactly_what_serde_json_accepts(
        v in json_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut doc = serde_json::to_vec(&v).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(doc.len() + 1);
            match op {
                0 => doc.insert(i, byte),
                1 if i < doc.len() => { doc.remove(i); }
                _ if i < doc.len() => doc[i] = byte,
                _ => {}
            }
        }
        let reference = serde_json::from_slice::<Value>(&doc);
        if let Err(e) = &reference {
            // serde_json converts numbers to f64 and refuses overflow; Veil keeps the text.
            prop_assume!(!e.to_string().contains("number out of range"));
        }
        let mut out = Vec::new();
        let ours = seal_document(&doc, &SealAll, &key(), 128, &mut Scratch::default(), &mut out);
        prop_assert_eq!(ours.is_ok(), reference.is_ok(), "doc: {:?}", String::from_utf8_lossy(&doc));
    }
}

#[test]
fn exact_number_text_and_escapes_survive() {
    let doc = br#"{"a":1.50,"b":-0,"c":1e400,"d":123456789012345678901234567890,"e":"caf\u00e9 \ud83d\ude00 \"q\" \n","f":[true,false,null]}"#;
    let k = key();
    let mut sealed = Vec::new();
    let stats =
        seal_document(doc, &SealAll, &k, 128, &mut Scratch::default(), &mut sealed).unwrap();
    assert_eq!(stats.sealed, 7);
    let keys = vec![k];
    let mut opened = Vec::new();
    unseal_document(&sealed, &keys, 128, &mut opened).unwrap();
    let text = String::from_utf8(opened).unwrap();
    assert!(text.contains(r#""e":"café 😀 \"q\" \n""#), "{text}");
    for exact in ["1.50", "-0", "1e400", "123456789012345678901234567890"] {
        assert!(text.contains(exact), "{exact} kept exactly: {text}");
    }
}

#[test]
fn refusals_are_precise() {
    let k = key();
    let mut out = Vec::new();
    let mut err = |doc: &[u8]| {
        seal_document(doc, &SealAll, &k, 16, &mut Scratch::default(), &mut out)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(b""), "empty body where a JSON document was expected");
    assert_eq!(
        err(b"\xEF\xBB\xBF{}"),
        "body starts with a byte-order mark, which JSON does not allow"
    );
    assert_eq!(
        err(b"{\"a\":\"\\ud800\"}"),
        "unpaired UTF-16 surrogate in a \\u escape at byte 6"
    );
    assert_eq!(
        err(b"{\"a\":\"\xff\"}"),
        "body is not valid UTF-8 (at byte 6)"
    );
    assert_eq!(
        err(b"{} x"),
        "trailing data after the JSON document at byte 3"
    );
    assert_eq!(err(&[b'['; 17]), "nesting deeper than 16 levels at byte 16");
    assert_eq!(err(b"{\"a\":01}"), "invalid number at byte 5");
    // A 10,000-deep document is refused without recursion.
    let deep = [vec![b'['; 10_000], vec![b']'; 10_000]].concat();
    assert!(err(&deep).starts_with("nesting deeper than 16 levels"));
}
