//! The relay's decoded headers JSON (`[[name, value], ...]`, request part 2 and response
//! part 4) on arbitrary bytes. Properties: decoding never panics; an accepted list
//! re-encodes and decodes to the same list; an accepted request list never holds a name the
//! protocol forbids (checked here against the protocol's list, not the core's function:
//! pseudo-headers, `host`, `content-length`, `transfer-encoding`, hop-by-hop names,
//! `origin`, `referer`, `x-veil-*`, `sec-*`); names are lowercase tokens and values hold no
//! control character but tab; a request list is accepted exactly when the response decoder
//! accepts it and it holds no forbidden name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::relay::wire::{
    decode_request_headers, decode_response_headers, encode_headers, is_forbidden_request_header,
};

const FORBIDDEN: &[&str] = &[
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

fn forbidden(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("x-veil-")
        || name.starts_with("sec-")
        || FORBIDDEN.contains(&name)
}

fn well_formed(list: &[(String, String)]) {
    for (n, v) in list {
        assert!(!n.is_empty(), "empty name");
        assert!(
            n.bytes().all(|c| c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || b"!#$%&'*+-.^_`|~".contains(&c)),
            "name {n:?} is not a lowercase token"
        );
        assert!(
            v.bytes().all(|c| c == b'\t' || (c >= 0x20 && c != 0x7f)),
            "value of {n:?} holds a control character"
        );
    }
}

type Decode = fn(&[u8]) -> Result<Vec<(String, String)>, veil_core::relay::RelayError>;

fn round_trips(list: &[(String, String)], decode: Decode) {
    let again = encode_headers(list);
    assert_eq!(
        decode(&again).as_deref(),
        Ok(list),
        "headers do not round-trip"
    );
}

fuzz_target!(|data: &[u8]| {
    let req = decode_request_headers(data);
    let resp = decode_response_headers(data);
    if let Ok(list) = &req {
        well_formed(list);
        for (n, _) in list {
            assert!(!forbidden(n), "accepted the forbidden request header {n:?}");
        }
        round_trips(list, decode_request_headers);
        assert_eq!(resp.as_ref(), Ok(list));
    }
    if let Ok(list) = &resp {
        well_formed(list);
        round_trips(list, decode_response_headers);
        let any_forbidden = list.iter().any(|(n, _)| is_forbidden_request_header(n));
        assert_eq!(
            req.is_ok(),
            !any_forbidden,
            "request and response decoders disagree"
        );
    }
});
