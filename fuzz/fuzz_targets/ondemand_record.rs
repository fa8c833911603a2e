//! The on-demand key record other workers write to shared data
//! (core::ondemand_record), on arbitrary bytes. Properties: parsing never panics; after
//! `prune` no list is over its bound and no mark has expired; the record re-serializes to
//! bytes that parse back to the same lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::ondemand_record::{OnDemandRecord, SHARED_MAX_KEYS, SHARED_MAX_MARKS};

fuzz_target!(|data: &[u8]| {
    let (now, bytes) = match data.split_first_chunk::<8>() {
        Some((n, rest)) => (i64::from_le_bytes(*n) >> 8, rest),
        None => (0, data),
    };
    let Ok(mut rec) = OnDemandRecord::parse(bytes) else {
        return;
    };
    rec.prune(now);
    assert!(rec.keys.len() <= SHARED_MAX_KEYS);
    assert!(rec.unknown.len() <= SHARED_MAX_MARKS && rec.claims.len() <= SHARED_MAX_MARKS);
    assert!(rec.unknown.iter().chain(&rec.claims).all(|m| m.until > now));
    let again = OnDemandRecord::parse(&rec.to_vec()).expect("a record re-parses");
    assert_eq!(again.unknown, rec.unknown);
    assert_eq!(again.claims, rec.claims);
    assert_eq!(again.keys.len(), rec.keys.len());
    for m in &rec.claims {
        let _ = rec.claim_of(&m.kid, now);
        assert!(rec.claim_of(&m.kid, now).is_some());
    }
});
