//! The keys of a relay pairing request (`{"keys": [...]}`): the body read as JSON, its
//! `keys` checked by `veil_core::relay::pairing::decode_public_keys` (what the keyservice's
//! `POST /v1/relay/pair` runs). The first input byte chooses `max` (1..=16); with its low
//! bit set, the rest builds a list of keys of lengths near the X-Wing key length (some with
//! a corrupted character) instead of being read as JSON. Properties: never panics; accepted
//! keys number 1..=max, each exactly `PUBLIC_KEY_LEN` bytes, and each is the one spelling of
//! its bytes (re-encoding gives the input string); for built lists the outcome is exactly
//! the one the lengths, the count and the corruption call for.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use veil_core::relay::kem::PUBLIC_KEY_LEN;
use veil_core::relay::pairing::{decode_public_keys, PairingKeysError};

fn check_accepted(keys: &[String], max: usize, pks: &[Vec<u8>]) {
    assert!(
        (1..=max).contains(&pks.len()),
        "accepted {} keys, max {max}",
        pks.len()
    );
    assert_eq!(pks.len(), keys.len());
    for (k, pk) in keys.iter().zip(pks) {
        assert_eq!(
            pk.len(),
            PUBLIC_KEY_LEN,
            "accepted a key of {} bytes",
            pk.len()
        );
        assert_eq!(&URL_SAFE_NO_PAD.encode(pk), k, "two spellings of one key");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(first >> 1) % 16 + 1;
    if first & 1 == 0 {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        let Some(keys) = body.get("keys").cloned() else {
            return;
        };
        let Ok(keys) = serde_json::from_value::<Vec<String>>(keys) else {
            return;
        };
        if let Ok(pks) = decode_public_keys(&keys, max) {
            check_accepted(&keys, max, &pks);
        }
        return;
    }
    // Built lists: each key one control byte (length delta, corruption) then a fill byte.
    let mut keys = Vec::new();
    let mut expected: Result<(), PairingKeysError> = Ok(());
    for (index, pair) in rest.chunks(2).take(24).enumerate() {
        let ctl = pair.first().copied().unwrap_or(0);
        let fill = pair.get(1).copied().unwrap_or(0);
        let len = (PUBLIC_KEY_LEN + usize::from(ctl % 5)).saturating_sub(2);
        let bytes: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        let mut k = URL_SAFE_NO_PAD.encode(&bytes);
        let corrupt = ctl & 0x80 != 0;
        if corrupt {
            k.push('=');
        }
        keys.push(k);
        if expected.is_ok() {
            if corrupt {
                expected = Err(PairingKeysError::NotBase64 { index });
            } else if len != PUBLIC_KEY_LEN {
                expected = Err(PairingKeysError::BadLength { index, len });
            }
        }
    }
    if keys.is_empty() || keys.len() > max {
        expected = Err(PairingKeysError::Count {
            got: keys.len(),
            max,
        });
    }
    let got = decode_public_keys(&keys, max);
    assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), expected);
    if let Ok(pks) = got {
        check_accepted(&keys, max, &pks);
    }
});
