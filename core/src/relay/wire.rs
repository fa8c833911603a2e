//! The encodings every relay party shares (docs/relay-protocol.md §3–4): the encoded
//! `:path`, pair ids, the headers JSON and the header rules of decoded requests and visible
//! responses. The key schedule, nonces, associated data and control headers are
//! [`super::v2`]'s.

use super::RelayError;

/// AES-GCM tag length, appended to every sealed part.
pub const TAG_LEN: usize = 16;
/// Length of a pair id (b64url of 16 bytes).
pub const PAIR_ID_LEN: usize = 22;
/// The marker between the prefix and the sealed path: `P "/x/" b64url(...)`.
pub const PATH_MARK: &str = "/x/";

/// Whether `s` looks like a pair id: 22 base64url characters.
pub fn is_pair_id(s: &str) -> bool {
    s.len() == PAIR_ID_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The encoded `:path`: `prefix "/x/" b64`.
pub fn encoded_path(prefix: &str, sealed_b64: &str) -> String {
    format!("{}{PATH_MARK}{sealed_b64}", prefix.trim_end_matches('/'))
}

/// The sealed path part of an encoded `:path` (`None` if it is not `prefix "/x/" ...`).
/// Anything after a `?` is not part of it.
pub fn sealed_path_part<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    let b64 = rest.strip_prefix(PATH_MARK)?;
    let b64 = b64.split_once('?').map_or(b64, |(p, _)| p);
    (!b64.is_empty()).then_some(b64)
}

/// Request header names the filter refuses in the decoded headers: framing and hop-by-hop
/// headers (the filter and Envoy own them), and `origin` and `referer`, which the browser
/// sets on the wire and a page's script cannot: a decoded header replaces the wire header
/// of the same name, so a malicious page could otherwise encode its own `origin` and pass
/// an upstream's Origin (CSRF) check.
pub const FORBIDDEN_REQUEST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
    "origin",
    "referer",
];

/// Name prefixes refused in the decoded request headers: `x-veil-` (the relay's own) and
/// `sec-` (`sec-fetch-*`, `sec-ch-*`, …: set by the browser only, by the fetch spec's rule
/// that scripts may not set `sec-` names, so an encoded one would be a forgery).
pub const FORBIDDEN_REQUEST_HEADER_PREFIXES: &[&str] = &["x-veil-", "sec-"];

/// Whether the protocol keeps `name` (lowercase) out of the decoded request headers.
pub fn is_forbidden_request_header(name: &str) -> bool {
    FORBIDDEN_REQUEST_HEADERS.contains(&name)
        || FORBIDDEN_REQUEST_HEADER_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// The headers JSON: `[[name, value], ...]` in order.
pub fn encode_headers<N: serde::Serialize, V: serde::Serialize>(list: &[(N, V)]) -> Vec<u8> {
    serde_json::to_vec(list).unwrap_or_default()
}

/// A lowercase HTTP token (RFC 9110 `tchar`, no uppercase): no pseudo-headers, no spaces.
pub fn is_lowercase_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
        })
}

/// A field value Envoy forwards as is: no control characters other than tab.
fn is_field_value(v: &str) -> bool {
    v.bytes().all(|c| c == b'\t' || (c >= 0x20 && c != 0x7f))
}

fn decode_headers(bytes: &[u8]) -> Result<Vec<(String, String)>, RelayError> {
    let list: Vec<(String, String)> = serde_json::from_slice(bytes)
        .map_err(|_| RelayError::DecodeFailed("headers are not a JSON array of pairs"))?;
    for (name, value) in &list {
        if !is_lowercase_token(name) {
            return Err(RelayError::DecodeFailed(
                "a header name is not a lowercase token",
            ));
        }
        if !is_field_value(value) {
            return Err(RelayError::DecodeFailed(
                "a header value holds control characters",
            ));
        }
    }
    Ok(list)
}

/// Decoded request headers, refused when a name is not a lowercase token, is forbidden
/// ([`is_forbidden_request_header`]) or a value holds control characters.
pub fn decode_request_headers(bytes: &[u8]) -> Result<Vec<(String, String)>, RelayError> {
    let list = decode_headers(bytes)?;
    if list.iter().any(|(n, _)| is_forbidden_request_header(n)) {
        return Err(RelayError::DecodeFailed("a decoded header is not allowed"));
    }
    Ok(list)
}

/// Decoded response headers (the client's side): lowercase tokens, clean values.
pub fn decode_response_headers(bytes: &[u8]) -> Result<Vec<(String, String)>, RelayError> {
    decode_headers(bytes)
}

/// Response headers that stay visible (not sealed): pseudo-headers, `set-cookie`, `date`,
/// `server`, `vary`, `cache-control`, `strict-transport-security`, `x-request-id`,
/// `access-control-*`, hop-by-hop headers, and `extra` (`visible_response_headers`,
/// compared without case). `name` is lowercase, as Envoy hands it over.
pub fn is_visible_response_header(name: &str, extra: &[String]) -> bool {
    const VISIBLE: &[&str] = &[
        "set-cookie",
        "date",
        "server",
        "vary",
        "cache-control",
        "strict-transport-security",
        "x-request-id",
        // hop-by-hop (RFC 9110 §7.6.1 and the classic list)
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
    ];
    name.starts_with(':')
        || name.starts_with("access-control-")
        || VISIBLE.contains(&name)
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(encoded_path("/veil", "abc"), "/veil/x/abc");
        assert_eq!(encoded_path("/veil/", "abc"), "/veil/x/abc");
        assert_eq!(sealed_path_part("/veil", "/veil/x/abc"), Some("abc"));
        assert_eq!(sealed_path_part("/veil", "/veil/x/abc?q"), Some("abc"));
        assert_eq!(sealed_path_part("/veil", "/veil/x/"), None);
        assert_eq!(sealed_path_part("/veil", "/veil/y/abc"), None);
        assert_eq!(sealed_path_part("/veil", "/other/x/abc"), None);
    }

    #[test]
    fn headers_json() {
        let list = vec![
            ("accept".to_string(), "a/b".to_string()),
            ("x-app".to_string(), "1".to_string()),
            ("x-app".to_string(), "2\tthree".to_string()),
        ];
        let json = encode_headers(&list);
        assert_eq!(
            json,
            br#"[["accept","a/b"],["x-app","1"],["x-app","2\tthree"]]"#
        );
        assert_eq!(decode_request_headers(&json).unwrap(), list);
        assert_eq!(decode_request_headers(b"[]").unwrap(), vec![]);
        for bad in [
            &br#"[["Accept","x"]]"#[..],
            br#"[[":path","/x"]]"#,
            br#"[["host","x"]]"#,
            br#"[["content-length","1"]]"#,
            br#"[["transfer-encoding","chunked"]]"#,
            br#"[["te","trailers"]]"#,
            br#"[["x-veil-relay","x"]]"#,
            br#"[["a b","x"]]"#,
            br#"[["","x"]]"#,
            br#"[["a","x\r\ny: z"]]"#,
            br#"[["a","x\u0000"]]"#,
            br#"[["a","x","y"]]"#,
            br#"[["a"]]"#,
            br#"{"a":"x"}"#,
            br#"[["a",1]]"#,
            b"not json",
        ] {
            assert!(
                decode_request_headers(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // the response side allows content-length and friends, still checks shape
        let r = decode_response_headers(br#"[["content-length","3"],["etag","\"x\""]]"#).unwrap();
        assert_eq!(r.len(), 2);
        assert!(decode_response_headers(br#"[["Content-Type","x"]]"#).is_err());
    }

    #[test]
    fn browser_controlled_request_headers_are_refused() {
        // A page's script could otherwise replace what the browser put on the wire (a
        // decoded header replaces the wire header of the same name): Origin-based CSRF
        // checks, Fetch Metadata and client hints would trust a forgery.
        for name in [
            "origin",
            "referer",
            "sec-fetch-site",
            "sec-fetch-mode",
            "sec-fetch-dest",
            "sec-fetch-user",
            "sec-ch-ua",
            "sec-ch-ua-platform",
            "sec-websocket-key",
            "sec-",
        ] {
            let json = encode_headers(&[
                ("accept".to_string(), "*/*".to_string()),
                (name.to_string(), "https://evil.example".to_string()),
            ]);
            let e = decode_request_headers(&json).unwrap_err();
            assert_eq!(e.code(), "relay-decode-failed", "{name}");
            assert!(is_forbidden_request_header(name), "{name}");
        }
        // Look-alikes are ordinary application headers; the response side is not limited.
        for name in [
            "origin-x",
            "x-origin",
            "referrer",
            "secret",
            "sec",
            "x-sec-fetch",
        ] {
            let list = vec![(name.to_string(), "v".to_string())];
            assert_eq!(
                decode_request_headers(&encode_headers(&list)).unwrap(),
                list,
                "{name}"
            );
        }
        assert_eq!(
            decode_response_headers(br#"[["origin","o"],["sec-x","1"]]"#)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn visible_response_headers() {
        let extra = vec!["X-Trace".to_string()];
        for v in [
            ":status",
            "set-cookie",
            "date",
            "server",
            "vary",
            "cache-control",
            "strict-transport-security",
            "x-request-id",
            "access-control-allow-origin",
            "connection",
            "transfer-encoding",
            "x-trace",
        ] {
            assert!(is_visible_response_header(v, &extra), "{v}");
        }
        for s in [
            "content-type",
            "content-length",
            "content-encoding",
            "etag",
            "x-app",
            "location",
        ] {
            assert!(!is_visible_response_header(s, &extra), "{s}");
        }
    }
}
