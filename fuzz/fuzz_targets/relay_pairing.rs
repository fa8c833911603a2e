//! The entries of a relay pairing request (`{"key_id", "pairs": [{"enc", "pk"}]}`): the body
//! read as JSON, its entries checked by `veil_core::relay::v2::decode_offers` (what the
//! keyservice's `POST /v1/relay/v2/pairs` runs). The first input byte chooses `max`
//! (1..=16); with its low bit set, the rest builds entries of lengths near the X-Wing lengths
//! (some with a corrupted character) instead of being read as JSON. Properties: never
//! panics; accepted entries number 1..=max, each `enc` exactly `CIPHERTEXT_LEN` and `pk`
//! `PUBLIC_KEY_LEN` bytes, each the one spelling of its bytes; for built lists the outcome
//! is exactly the one the lengths, the count and the corruption call for.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use veil_core::relay::kem::{CIPHERTEXT_LEN, PUBLIC_KEY_LEN};
use veil_core::relay::v2::{decode_offers, OfferError, OfferWire};

fn check_accepted(entries: &[(String, String)], max: usize, offers: &[OfferWire]) {
    assert!(
        (1..=max).contains(&offers.len()),
        "accepted {}",
        offers.len()
    );
    assert_eq!(offers.len(), entries.len());
    for ((enc, pk), o) in entries.iter().zip(offers) {
        assert_eq!((o.enc.len(), o.pk.len()), (CIPHERTEXT_LEN, PUBLIC_KEY_LEN));
        assert_eq!(&URL_SAFE_NO_PAD.encode(&o.enc), enc, "two spellings");
        assert_eq!(&URL_SAFE_NO_PAD.encode(&o.pk), pk, "two spellings");
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
        let Some(pairs) = body.get("pairs").and_then(|p| p.as_array()) else {
            return;
        };
        let entries: Vec<(String, String)> = pairs
            .iter()
            .filter_map(|e| {
                Some((
                    e.get("enc")?.as_str()?.to_string(),
                    e.get("pk")?.as_str()?.to_string(),
                ))
            })
            .collect();
        if let Ok(offers) = decode_offers(&entries, max) {
            check_accepted(&entries, max, &offers);
        }
        return;
    }
    // Built lists: each entry one control byte (length delta, corruption) then a fill byte.
    let mut entries = Vec::new();
    let mut expected: Result<(), OfferError> = Ok(());
    for (index, pair) in rest.chunks(2).take(24).enumerate() {
        let ctl = pair.first().copied().unwrap_or(0);
        let fill = pair.get(1).copied().unwrap_or(0);
        let delta = usize::from(ctl % 5);
        let bytes = |n: usize| -> Vec<u8> { (0..n).map(|i| fill.wrapping_add(i as u8)).collect() };
        let enc_len = (CIPHERTEXT_LEN + delta).saturating_sub(2);
        let mut enc = URL_SAFE_NO_PAD.encode(bytes(enc_len));
        let pk = URL_SAFE_NO_PAD.encode(bytes(PUBLIC_KEY_LEN));
        let corrupt = ctl & 0x80 != 0;
        if corrupt {
            enc.push('=');
        }
        entries.push((enc, pk));
        if expected.is_ok() {
            if corrupt {
                expected = Err(OfferError::NotBase64 { index });
            } else if enc_len != CIPHERTEXT_LEN {
                expected = Err(OfferError::BadLength { index });
            }
        }
    }
    if entries.is_empty() || entries.len() > max {
        expected = Err(OfferError::Count {
            got: entries.len(),
            max,
        });
    }
    let got = decode_offers(&entries, max);
    assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), expected);
    if let Ok(offers) = got {
        check_accepted(&entries, max, &offers);
    }
});
