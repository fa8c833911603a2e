//! `SealedValue::parse` on arbitrary strings, and seal → parse → open on arbitrary values.
//! Properties: what parses re-formats to the same text with a canonical kid; opening it
//! never panics; a sealed value always parses, with its kid and mode, and opens to what was
//! sealed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::crypto::cipher::{Padding, Scope, Spec, ValueType};
use veil_core::crypto::value::{Mode, SealedValue};
use veil_fuzz::key;

fuzz_target!(|data: &[u8]| {
    let key = key("2026-01");
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(v) = SealedValue::parse(s) {
            let again = format!("{}:{}", v.header, v.payload);
            assert!(v.header.contains(&format!(":{}:{}", v.kid_str, v.mode.as_char())));
            assert_eq!(again, s, "parse(format(v)) != v");
            assert_eq!(v.kid.to_string(), v.kid_str, "kid not canonical");
            let _ = key.open(&v);
        }
    }
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let mode = if pick & 1 == 0 {
        Mode::Deterministic
    } else {
        Mode::Randomized
    };
    let ty = match pick >> 1 & 3 {
        0 => ValueType::String,
        1 => ValueType::Number,
        _ => ValueType::Bool,
    };
    // A boolean is `true` or `false` (the walker only ever passes those).
    let value: &[u8] = match (ty, pick >> 3 & 1) {
        (ValueType::Bool, 0) => b"true",
        (ValueType::Bool, _) => b"false",
        _ => value,
    };
    let scope = Scope::field(&String::from_utf8_lossy(value));
    let pad = if pick & 0x80 == 0 { Padding::Buckets } else { Padding::Off };
    let mut out = Vec::new();
    key.seal(Spec { mode, scope: &scope, pad }, ty, value, &mut out)
        .unwrap_or_else(|e| panic!("seal: {e}"));
    let text = std::str::from_utf8(&out).unwrap_or_else(|e| panic!("sealed text: {e}"));
    let v =
        SealedValue::parse(text).unwrap_or_else(|| panic!("sealed value does not parse: {text}"));
    assert_eq!(v.kid, key.kid());
    assert_eq!(v.mode, mode);
    let opened = key.open(&v).unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(opened.ty, ty);
    assert!(*opened.value == value, "open(seal(x)) != x");
});
