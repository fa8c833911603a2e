//! Query values sealed as their decoded text, restored to the exact bytes sent.
//!
//! A client may send `?email=ada%40example.org` in a URI and `ada@example.org` in a body.
//! Sealed as sent, the two never match. So a query value that holds percent-escapes is
//! sealed as its decoded text, **if** encoding that text again with one fixed encoder gives
//! back exactly the bytes sent; the sealed value is then written after a `%` mark, and the
//! unsealer encodes the opened text again. Any other value (no escapes, lower-case hex,
//! needless escapes, invalid UTF-8) is sealed as sent, as before, and comes back as sent.
//!
//! The encoder is JavaScript's `encodeURIComponent` (what the Moesif SDKs' URLs hold):
//! every byte but `A–Z a–z 0–9 - _ . ! ~ * ' ( )` as `%XX`, upper-case hex, UTF-8.

/// Written right before a sealed query value that holds decoded text.
pub const MARK: u8 = b'%';

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Appends `text` percent-encoded (see the module docs).
pub fn encode_into(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text {
        if unreserved(b) {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
            out.push(HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0'));
        }
    }
}

/// The decoded text of `v` if `v` holds an escape, decodes to UTF-8, and encodes back to
/// exactly `v`; `None` otherwise (seal `v` as it is).
pub fn decoded(v: &[u8]) -> Option<Vec<u8>> {
    if !v.contains(&b'%') {
        return None;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&c) = v.get(i) {
        if c == b'%' {
            let hex = |j: usize| v.get(j).and_then(|h| (*h as char).to_digit(16));
            let (h, l) = (hex(i + 1)?, hex(i + 2)?);
            out.push(u8::try_from(h * 16 + l).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    core::str::from_utf8(&out).ok()?;
    let mut again = Vec::with_capacity(v.len());
    encode_into(&out, &mut again);
    (again == v).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_forms_decode() {
        assert_eq!(
            decoded(b"ada%40example.org").as_deref(),
            Some(&b"ada@example.org"[..])
        );
        assert_eq!(
            decoded(b"Zo%C3%AB%20B").as_deref(),
            Some("Zoë B".as_bytes())
        );
        for sent in [
            &b"ada@example.org"[..], // no escape: sealed as sent
            b"ada%40example%2eorg",  // a needless escape
            b"ada%40example.org%",   // a lone %
            b"a%zz",
            b"ada%4aexample", // lower-case hex is not what the encoder writes
            b"%FF",           // not UTF-8
            b"a+b%40c",       // '+' would be encoded
        ] {
            assert_eq!(decoded(sent), None, "{}", String::from_utf8_lossy(sent));
        }
        let mut out = Vec::new();
        encode_into("a b@c/ë~".as_bytes(), &mut out);
        assert_eq!(out, b"a%20b%40c%2F%C3%AB~");
    }
}
