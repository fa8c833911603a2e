//! Percent-decoding (RFC 3986 §2.1), strict: a `%` followed by exactly two hex digits is a
//! byte; any other `%` (`%+f`, `%g0`, a `%` at the end) stays as it is. One decoder for the
//! search parameters and the relay's echo endpoint (`u8::from_str_radix` would take the
//! sign in `%+f`).

use std::borrow::Cow;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The bytes `s` percent-encodes (borrowed if it has no `%`). `+` is kept as it is.
pub fn decode(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let pair = b
            .get(i + 1)
            .copied()
            .and_then(hex)
            .zip(b.get(i + 2).copied().and_then(hex));
        match (c, pair) {
            (b'%', Some((h, l))) => {
                out.push(h << 4 | l);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_two_hex_digits_only() {
        assert_eq!(&*decode("a%20b%2Fc%2f"), b"a b/c/");
        assert_eq!(&*decode("%E2%82%AC+x"), "€+x".as_bytes());
        // Signs, non-hex digits and truncated escapes stay as they are.
        for raw in ["%+f", "%-1", "%g0", "%0", "%", "100%", "%%41"] {
            let want: &[u8] = if raw == "%%41" { b"%A" } else { raw.as_bytes() };
            assert_eq!(&*decode(raw), want, "{raw}");
        }
        assert!(matches!(decode("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
