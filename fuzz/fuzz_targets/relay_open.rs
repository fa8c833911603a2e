//! The relay's part ciphers (docs/relay-protocol.md §3–4) with a fixed key: the request
//! cipher (`c2s`, nonce `part || seq`, AD with the request line) and an answer cipher (its
//! key from `s2c` and a response nonce, AD with flags, status and the request binding). The
//! input chooses the exchange, the answer's status and response nonce, and the bytes.
//! Properties: bytes that were not sealed do not open; seal → open gives the plaintext back;
//! a sealed part does not open under another part, seq, method, authority, status, binding
//! or response nonce, nor with one bit flipped, nor truncated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::relay::v2::{
    AnswerCipher, AnswerKind, Exchange, Part, RequestBinding, RequestCipher,
};
use veil_core::relay::wire::TAG_LEN;

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
    let mode = byte(&mut data);
    let pair_id = String::from_utf8_lossy(take(&mut data, 22)).into_owned();
    let mut seq = [0u8; 8];
    let s = take(&mut data, 8);
    seq[..s.len()].copy_from_slice(s);
    let seq = u64::from_le_bytes(seq);
    let mlen = usize::from(byte(&mut data) % 12);
    let method = String::from_utf8_lossy(take(&mut data, mlen)).into_owned();
    let status = 100 + u16::from(byte(&mut data)) * 3;
    let mut rn = [0u8; 32];
    let r = take(&mut data, 32);
    rn[..r.len()].copy_from_slice(r);
    let ex = Exchange {
        pair_id: &pair_id,
        seq,
        method: &method,
        scheme: "https",
        authority: "app.example",
    };
    let body = mode & 1 == 1;
    let part =
        [Part::RequestUrl, Part::RequestHeaders, Part::RequestBody][usize::from(mode / 2 % 3)];
    let c = RequestCipher::new(&[0x42; 32]);
    let a = AnswerCipher::new(&[0x43; 32], &rn).unwrap();
    let binding = RequestBinding([mode; 32]);
    let kind = if mode & 4 == 0 {
        AnswerKind::Headers
    } else {
        AnswerKind::HeadersBody
    };

    // The rest as a ciphertext that was never sealed: it opens under neither cipher.
    assert!(
        c.open(&ex, part, body, data).is_err(),
        "unsealed bytes opened"
    );
    assert!(a
        .open(&ex, Part::ResponseHeaders, kind, status, &binding, data)
        .is_err());

    // Request parts.
    let sealed = c.seal(&ex, part, body, data);
    let fits = part != Part::RequestBody || body;
    assert_eq!(
        sealed.is_ok(),
        fits,
        "seal of a part the flags do not allow"
    );
    if let Ok(sealed) = sealed {
        assert_eq!(sealed.len(), data.len() + TAG_LEN);
        assert_eq!(c.open(&ex, part, body, &sealed).as_deref(), Ok(data));
        let m2 = format!("{method}X");
        for other in [
            Exchange {
                seq: seq.wrapping_add(1),
                ..ex
            },
            Exchange { method: &m2, ..ex },
            Exchange {
                authority: "other.example",
                ..ex
            },
            Exchange {
                scheme: "http",
                ..ex
            },
        ] {
            assert!(
                c.open(&other, part, body, &sealed).is_err(),
                "opened elsewhere"
            );
        }
        let bit = usize::from(mode) * 7 % (sealed.len() * 8);
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.get_mut(bit / 8) {
            *b ^= 1 << (bit % 8);
        }
        assert!(
            c.open(&ex, part, body, &flipped).is_err(),
            "a flipped bit opened"
        );
        if let Some(t) = sealed.get(..sealed.len().saturating_sub(1)) {
            assert!(
                c.open(&ex, part, body, t).is_err(),
                "a truncated part opened"
            );
        }
    }

    // Answer parts.
    let sealed = a
        .seal(&ex, Part::ResponseHeaders, kind, status, &binding, data)
        .unwrap();
    assert_eq!(
        a.open(&ex, Part::ResponseHeaders, kind, status, &binding, &sealed)
            .as_deref(),
        Ok(data)
    );
    let other_status = if status == 999 { 100 } else { status + 1 };
    assert!(a
        .open(
            &ex,
            Part::ResponseHeaders,
            kind,
            other_status,
            &binding,
            &sealed
        )
        .is_err());
    let other_binding = RequestBinding([mode ^ 1; 32]);
    assert!(a
        .open(
            &ex,
            Part::ResponseHeaders,
            kind,
            status,
            &other_binding,
            &sealed
        )
        .is_err());
    let mut rn2 = rn;
    rn2[0] ^= 1;
    let a2 = AnswerCipher::new(&[0x43; 32], &rn2).unwrap();
    assert!(
        a2.open(&ex, Part::ResponseHeaders, kind, status, &binding, &sealed)
            .is_err(),
        "opened under another response nonce"
    );
});
