//! The keyservice's answers as the filter parses them (core::keyservice_answer), on
//! arbitrary bytes: `/v1/data-keys/current` (and the shared record made from it), one key
//! by kid, a relay pair and a pairing. Properties: parsing never panics; an accepted current
//! answer has a key; `with_fetched_at` of any object keeps its keys and parses back with
//! that time; a pair's keys are 32 bytes when they decode at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::keyservice_answer::{
    parse_current, parse_key, parse_relay, with_fetched_at, PairAnswer, PairingAnswer,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = parse_current(data) {
        assert!(!k.keys.is_empty());
        let shared = with_fetched_at(data, 1_700_000_000).expect("an object gets fetched_at");
        let again = parse_current(&shared).expect("the shared record parses");
        assert_eq!(again.fetched_at, Some(1_700_000_000));
        assert_eq!(again.keys.len(), k.keys.len());
        assert_eq!(again.current_root, k.current_root);
    }
    let _ = with_fetched_at(data, -1);
    let _ = parse_key(data);
    if let Ok(p) = parse_relay::<PairAnswer>(data) {
        if let Ok((c2s, s2c)) = p.keys() {
            assert_eq!((c2s.len(), s2c.len()), (32, 32));
        }
        let _ = p.idle_ttl();
    }
    if let Ok(p) = parse_relay::<PairingAnswer>(data) {
        for pair in &p.pairs {
            let _ = pair.keys();
        }
    }
});
