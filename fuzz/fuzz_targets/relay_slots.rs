//! The relay's pair table in shared data (core::relay::slots): a set of slots and the
//! eviction log, as other workers wrote them, on arbitrary bytes. Properties: parsing
//! never panics and never reads past the value; a set holds at most `ways` slots, each of
//! the layout's length; a parsed set re-encodes to bytes that parse to the same slots; the
//! accessors of every slot are total; the eviction log stays a whole number of entries,
//! within its bound, and answers the latest `seq` pushed for a pair.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::relay::slots::{evicted_max, evicted_push, Set, EVICTED_ENTRY};

const PAIR: &str = "AAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    let ways = usize::from(data.first().copied().unwrap_or(4) % 8) + 1;
    let set = Set::parse(data, Some(1), ways);
    assert!(set.slots.len() <= ways);
    for s in &set.slots {
        let _ = (s.pair_id(), s.client_id(), s.c2s(), s.s2c());
        let _ = (s.expires_at(), s.idle_ttl(), s.last_used(), s.touched(), s.window());
        let _ = s.is_live(s.last_used());
        let mut t = s.clone();
        let _ = t.take_touch(i64::MAX / 2);
    }
    let again = Set::parse(&set.encode(), None, ways);
    assert_eq!(again.slots.len(), set.slots.len());
    for (a, b) in again.slots.iter().zip(&set.slots) {
        assert_eq!(a.bytes(), b.bytes());
    }
    let log = evicted_push(data, PAIR.as_bytes(), 42, 8);
    assert_eq!(log.len() % EVICTED_ENTRY, 0);
    assert!(log.len() / EVICTED_ENTRY <= 8);
    assert_eq!(evicted_max(&log, PAIR), Some(42));
    let _ = evicted_max(data, PAIR);
});
