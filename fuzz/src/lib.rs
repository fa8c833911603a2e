//! What the fuzz targets share: a fixed test key, the filter's limits, and the checks that
//! turn "did not crash" into properties.

use serde::de::IgnoredAny;
use veil_core::crypto::cipher::SealingKey;
use veil_core::config::DEFAULT_MAX_DEPTH;
use veil_core::crypto::keys::{Dek, Epoch, Kid};

/// The nesting limit the filter uses by default.
pub const MAX_DEPTH: usize = DEFAULT_MAX_DEPTH;

/// A fixed key (root version 1, epoch `month`), never a real one.
pub fn key(month: &str) -> SealingKey {
    let epoch: Epoch = month
        .parse()
        .unwrap_or_else(|_| unreachable!("fixed epoch"));
    let kid = Kid::new(1, epoch);
    SealingKey::new(kid, &Dek::from_bytes([0x5a; 32]))
}

/// Panics unless `bytes` is one complete JSON document (serde_json's strict reader).
pub fn assert_json(bytes: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(bytes) {
        panic!(
            "{what} is not JSON: {e}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// The deepest nesting of `[`/`{` outside strings (only meaningful for valid JSON).
pub fn depth(bytes: &[u8]) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// True if serde_json reads `bytes` as one document *and* its strings have a UTF-8 form
/// (serde_json's `Value` refuses lone surrogates, as Veil does).
pub fn serde_accepts(bytes: &[u8]) -> bool {
    !bytes.starts_with(&[0xEF, 0xBB, 0xBF])
        && serde_json::from_slice::<serde_json::Value>(bytes).is_ok()
}

/// `unseal(seal(x)) == x`: byte for byte when `x` writes no string escapes (the unsealer
/// writes a string back in its shortest escaping, not the original spelling), otherwise
/// the same JSON value.
pub fn assert_round_trip(input: &[u8], back: &[u8]) {
    if !input.contains(&b'\\') {
        assert!(back == input, "unseal(seal(x)) != x");
    } else if let Ok(want) = serde_json::from_slice::<serde_json::Value>(input) {
        let got: serde_json::Value = serde_json::from_slice(back)
            .unwrap_or_else(|e| panic!("unsealed output is not JSON: {e}"));
        assert_eq!(got, want, "unseal(seal(x)) is another value");
    }
}
