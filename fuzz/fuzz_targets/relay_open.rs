//! The relay's part cipher (AES-256-GCM, nonce and AD from the part context) with a fixed
//! key. The input chooses the part, the context (pair id, seq, method, flags, status) and
//! the bytes. Properties: opening bytes that were not sealed fails (a forgery would need the
//! tag: 2^-128); seal → open gives back the plaintext for any plaintext and context; the
//! sealed part does not open under another part, seq, method or status, nor with any one
//! bit flipped; seal and open fail exactly when the context has no AD (a status outside
//! 100..=999 on a response part, or a status on a request part); a failed open leaves no
//! plaintext in the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::relay::wire::TAG_LEN;
use veil_core::relay::{Part, PartCipher, PartContext};

const PARTS: [Part; 5] = [
    Part::RequestUrl,
    Part::RequestHeaders,
    Part::RequestBody,
    Part::ResponseHeaders,
    Part::ResponseBody,
];

/// Takes the first `n` bytes (fewer if the input is shorter).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fn byte(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let cipher = PartCipher::new(&[0x42; 32]);
    let mode = byte(&mut data);
    let part = PARTS[usize::from(mode % 5)];
    let other = PARTS[usize::from((mode / 5) % 5)];
    let pair_id = String::from_utf8_lossy(take(&mut data, 22)).into_owned();
    let mut seq = [0u8; 8];
    let s = take(&mut data, 8);
    seq[..s.len()].copy_from_slice(s);
    let seq = u64::from_le_bytes(seq);
    let mlen = usize::from(byte(&mut data) % 12);
    let method = String::from_utf8_lossy(take(&mut data, mlen)).into_owned();
    let flags = ["uh", "uhb", "h", "hb"][usize::from(byte(&mut data) % 4)];
    let st = take(&mut data, 2);
    let status = match st {
        [a, b] if b & 0x80 == 0 => Some(u16::from_le_bytes([*a, *b]) % 1100),
        _ => None,
    };
    let ctx = PartContext {
        pair_id: &pair_id,
        seq,
        method: &method,
        flags,
        status,
    };
    let has_ad = ctx.ad(part).is_ok();
    assert_eq!(
        has_ad,
        match (part.is_response(), status) {
            (false, None) => true,
            (true, Some(s)) => (100..=999).contains(&s),
            _ => false,
        }
    );

    // The rest as a ciphertext that was never sealed: it must not open.
    let mut buf = data.to_vec();
    assert!(
        cipher.open_in_place(part, &ctx, &mut buf).is_err(),
        "unsealed bytes opened"
    );
    if data.len() < TAG_LEN {
        assert!(cipher.open(part, &ctx, data).is_err());
    }

    // The rest as a plaintext: seal → open round-trips, and nothing else opens it.
    let sealed = cipher.seal(part, &ctx, data);
    assert_eq!(sealed.is_ok(), has_ad, "seal without AD");
    let Ok(sealed) = sealed else { return };
    assert_eq!(sealed.len(), data.len() + TAG_LEN);
    assert_eq!(
        cipher.open(part, &ctx, &sealed).as_deref(),
        Ok(data),
        "seal/open round trip"
    );
    let b64 = cipher.seal_b64(part, &ctx, data).unwrap_or_default();
    assert_eq!(cipher.open_b64(part, &ctx, &b64).as_deref(), Ok(data));
    if other != part {
        assert!(
            cipher.open(other, &ctx, &sealed).is_err(),
            "opened as another part"
        );
    }
    let later = PartContext {
        seq: seq.wrapping_add(1),
        ..ctx
    };
    assert!(
        cipher.open(part, &later, &sealed).is_err(),
        "opened under another seq"
    );
    let m2 = format!("{method}X");
    let other_method = PartContext { method: &m2, ..ctx };
    assert!(
        cipher.open(part, &other_method, &sealed).is_err(),
        "opened under another method"
    );
    if let Some(s) = status {
        let st2 = PartContext {
            status: Some(if s == 999 { 100 } else { s + 1 }),
            ..ctx
        };
        assert!(
            cipher.open(part, &st2, &sealed).is_err(),
            "opened under another status"
        );
    }
    let bit = usize::from(mode) * 7 % (sealed.len() * 8);
    let mut flipped = sealed.clone();
    if let Some(b) = flipped.get_mut(bit / 8) {
        *b ^= 1 << (bit % 8);
    }
    let before = flipped.clone();
    assert!(
        cipher.open_in_place(part, &ctx, &mut flipped).is_err(),
        "a flipped bit opened"
    );
    assert_eq!(flipped, before, "a failed open changed the buffer");
    if sealed.len() > TAG_LEN {
        let truncated = sealed.get(..sealed.len() - 1).unwrap_or_default();
        assert!(
            cipher.open(part, &ctx, truncated).is_err(),
            "a truncated part opened"
        );
    }
});
