//! The relay's `x-veil-relay` control headers (request and response, with the answer's
//! response nonce) on arbitrary header values. Properties: parsing never panics; an accepted
//! value re-formats to the same string (so there is one spelling per control); `seq` is in
//! 1..=2^53-1 and the pair id has the protocol's shape; a canonical decimal `seq` is accepted
//! exactly when it is in that range; and the key configuration re-encodes to what it parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::relay::v2;
use veil_core::relay::v2::MAX_SEQ;
use veil_core::relay::wire::is_pair_id;

const PAIR_ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = std::str::from_utf8(data) {
        if let Ok(c) = v2::RequestControl::parse(value) {
            assert_eq!(
                c.to_header_value(),
                value,
                "v2 request control does not round-trip"
            );
            assert!((1..=MAX_SEQ).contains(&c.seq) && is_pair_id(c.pair_id));
        }
        if let Ok(c) = v2::ResponseControl::parse(value) {
            assert_eq!(
                c.to_header_value(),
                value,
                "v2 response control does not round-trip"
            );
            assert!((1..=MAX_SEQ).contains(&c.seq) && is_pair_id(c.pair_id));
        }
    }
    if let Ok(k) = v2::KeyConfig::from_bytes(data) {
        let again = v2::KeyConfig::from_bytes(&k.to_bytes());
        assert_eq!(again.as_ref(), Ok(&k), "key config does not re-parse");
    }
    // Any u64 as a canonical decimal: accepted exactly in 1..=MAX_SEQ, with that value.
    if let Some(b) = data.get(..8) {
        let mut n = [0u8; 8];
        n.copy_from_slice(b);
        let seq = u64::from_le_bytes(n) >> (data.len() % 64);
        let rn = "A".repeat(43);
        let req = format!("v2,c,{PAIR_ID},{seq},uhb");
        let resp = format!("v2,{PAIR_ID},{seq},{rn},h");
        let in_range = (1..=MAX_SEQ).contains(&seq);
        assert_eq!(
            v2::RequestControl::parse(&req).map(|c| c.seq).ok(),
            in_range.then_some(seq)
        );
        assert_eq!(
            v2::ResponseControl::parse(&resp).map(|c| c.seq).ok(),
            in_range.then_some(seq)
        );
    }
});
