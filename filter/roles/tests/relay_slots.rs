//! The relay's pair table in shared data (`veil.relay.set.<n>`, `veil.relay.evicted`) on a
//! fake host: sealed like the key records, so another plugin of the proxy (Istio sets no
//! VM id) can neither read a pair's keys there nor plant a pair the filter adopts. Driven
//! through the table's own functions, whatever the wire protocol in front of them.

mod common;

use common::*;
use veil_core::crypto::shared_record::RecordKey;
use veil_core::relay::slots::{self, Set, Slot, SlotKeys};
use veil_roles::host::SharedData;
use veil_roles::roles::relay::pairs;

const PAIR: &str = "AAAAAAAAAAAAAAAAAAAAAA";
const CLIENT: &str = "client-of-the-pair";
const C2S: [u8; 32] = [3; 32];
const S2C: [u8; 32] = [4; 32];
/// `pair_cache_slots` of [`relay`] (8): 2 sets of 4 ways.
const SLOTS: usize = 8;
const SETS: usize = 2;

fn local() -> Fix {
    Fix::new(config(relay("local")))
}

fn now(f: &Fix) -> i64 {
    f.env.now_ms() / 1000
}

fn keys<'a>(pair_id: &'a str, now: i64) -> SlotKeys<'a> {
    SlotKeys {
        pair_id,
        client_id: CLIENT,
        c2s: &C2S,
        s2c: &S2C,
        expires_at: now + 3600,
        idle_ttl_secs: 600,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn relay_records(f: &Fix) -> Vec<String> {
    f.env
        .shared
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("veil.relay."))
        .collect()
}

/// Pair ids whose set is `set` (of [`SETS`]).
fn ids_in_set(set: u64, n: usize) -> Vec<String> {
    (0u32..)
        .map(|i| format!("{i:0>22}"))
        .filter(|id| slots::set_index(id, SETS) == set)
        .take(n)
        .collect()
}

/// Issue #18: the pair slots were plaintext in shared data, so every plugin of the proxy
/// could read each pair's keys (and decode or forge that client's traffic).
#[test]
fn pair_slots_and_the_eviction_log_are_sealed_in_shared_data() {
    let f = local();
    let t = now(&f);
    // Five pairs of one set (4 ways): the fifth evicts the least recently used live one,
    // which writes the eviction log too.
    // The first one has seen seq 5 and is the least recently used when the fifth comes.
    let ids = ids_in_set(slots::set_index(PAIR, SETS), 5);
    pairs::install(&*f.env, &f.worker, &keys(&ids[0], t), false, t).unwrap();
    let used = pairs::accept_local(&*f.env, &f.worker, &ids[0], CLIENT, 5, t, |_| Ok(()));
    assert!(used.unwrap().is_some());
    for id in &ids[1..] {
        pairs::install(&*f.env, &f.worker, &keys(id, t + 1), false, t + 1).unwrap();
    }
    assert_eq!(f.counter("veil.relay.slot_evictions"), 1);
    let names = relay_records(&f);
    assert!(
        names.contains(&"veil.relay.evicted".to_string()),
        "{names:?}"
    );
    let record_key = RecordKey::from_token(TOKEN.as_bytes());
    for name in &names {
        let raw = f.env.shared.get(name).unwrap();
        assert!(
            !contains(&raw, &C2S) && !contains(&raw, &S2C),
            "{name}: keys readable"
        );
        assert!(
            !contains(&raw, ids[0].as_bytes()),
            "{name}: pair id readable"
        );
        assert!(
            !contains(&raw, CLIENT.as_bytes()),
            "{name}: client id readable"
        );
        // Sealed under the token's key with its own name.
        record_key.open(name, &raw).unwrap();
    }
    let set_name = format!("veil.relay.set.{}", slots::set_index(PAIR, SETS));
    let plain = record_key
        .open(&set_name, &f.env.shared.get(&set_name).unwrap())
        .unwrap();
    let set = Set::parse(&plain, None, 4);
    assert_eq!(set.slots.len(), 4);
    assert!(set.find(&ids[4]).is_some() && set.find(&ids[0]).is_none());
    let log = record_key
        .open(
            "veil.relay.evicted",
            &f.env.shared.get("veil.relay.evicted").unwrap(),
        )
        .unwrap();
    assert_eq!(slots::evicted_max(&log, &ids[0]), Some(5));

    // Another worker (nothing in its VM cache) opens the sealed set: it finds the pair
    // and moves its window under CAS.
    let g = Fix::on(f.env.sibling(), config(relay("local")));
    let t = t + 1;
    let pair = pairs::lookup(&*g.env, &g.worker, &ids[4], CLIENT, t)
        .unwrap()
        .expect("the pair, from the sealed set");
    assert_eq!(pair.client_id, CLIENT);
    let accepted = pairs::accept_local(&*g.env, &g.worker, &ids[4], CLIENT, 1, t, |_| Ok(()));
    assert!(accepted.unwrap().is_some());
    // The evicted pair, fetched again, starts above its highest seq (the log opened).
    pairs::install(&*g.env, &g.worker, &keys(&ids[0], t), true, t).unwrap();
    let replay = pairs::accept_local(&*g.env, &g.worker, &ids[0], CLIENT, 5, t, |_| Ok(()));
    assert!(replay.is_err(), "seq 5 was seen before the eviction");
    let next = pairs::accept_local(&*g.env, &g.worker, &ids[0], CLIENT, 6, t, |_| Ok(()));
    assert!(next.unwrap().is_some());
    g.worker.tick(&*g.env);
    assert_eq!(g.counter("veil.shared.records_rejected"), 0);
}

/// Issue #18: a set another plugin wrote (plaintext, holding a pair whose keys it chose)
/// was adopted: requests under its keys were accepted as that client's. Now it does not
/// open, is counted, and the pair comes from the keyservice (whose install replaces it).
#[test]
fn a_slot_another_plugin_published_is_not_adopted() {
    let f = local();
    let t = now(&f);
    let forged = Set {
        slots: vec![Slot::build(&keys(PAIR, t), t).unwrap()],
        cas: None,
    }
    .encode();
    for n in 0..SLOTS {
        f.env
            .shared_set(&format!("veil.relay.set.{n}"), &forged, None)
            .unwrap();
    }
    assert!(
        pairs::lookup(&*f.env, &f.worker, PAIR, CLIENT, t)
            .unwrap()
            .is_none(),
        "global mode: the planted pair is adopted"
    );
    let local = pairs::accept_local(&*f.env, &f.worker, PAIR, CLIENT, 1, t, |_| Ok(()));
    assert!(
        local.unwrap().is_none(),
        "local mode: the planted pair is adopted"
    );
    f.worker.tick(&*f.env);
    assert!(f.counter("veil.shared.records_rejected") >= 2);

    // The keyservice's pair replaces the planted set (a CAS write over its version).
    pairs::install(&*f.env, &f.worker, &keys(PAIR, t), true, t).unwrap();
    let set_name = format!("veil.relay.set.{}", slots::set_index(PAIR, SETS));
    let raw = f.env.shared.get(&set_name).unwrap();
    assert_ne!(&raw[..], &forged[..]);
    let g = Fix::on(f.env.sibling(), config(relay("local")));
    assert!(pairs::lookup(&*g.env, &g.worker, PAIR, CLIENT, t)
        .unwrap()
        .is_some());
}

/// Task E: a `local`-mode request opened its set on every read (~28 µs in wasm). A set
/// whose bytes are those this worker last opened or wrote is not opened again; a set
/// another worker rewrote is.
#[test]
fn an_unchanged_set_is_not_opened_again_and_a_changed_one_is() {
    let f = local();
    let t = now(&f);
    pairs::install(&*f.env, &f.worker, &keys(PAIR, t), false, t).unwrap();
    let opens = f.worker.records.opens();
    for seq in 1..=3 {
        let ok = pairs::accept_local(&*f.env, &f.worker, PAIR, CLIENT, seq, t, |_| Ok(()));
        assert!(ok.unwrap().is_some(), "seq {seq}");
    }
    assert_eq!(
        f.worker.records.opens(),
        opens,
        "its own writes: not opened"
    );

    // Another worker moves the window: the bytes changed, so the next read opens them
    // (and sees that worker's window: its seq is refused here).
    let g = Fix::on(f.env.sibling(), config(relay("local")));
    let ok = pairs::accept_local(&*g.env, &g.worker, PAIR, CLIENT, 4, t, |_| Ok(()));
    assert!(ok.unwrap().is_some());
    let replay = pairs::accept_local(&*f.env, &f.worker, PAIR, CLIENT, 4, t, |_| Ok(()));
    assert!(replay.is_err(), "seq 4 seen by the other worker");
    assert_eq!(f.worker.records.opens(), opens + 1, "changed bytes: opened");
    // Sealed bytes that do not open are not answered from the cache.
    let set_name = format!("veil.relay.set.{}", slots::set_index(PAIR, SETS));
    let mut raw = f.env.shared.get(&set_name).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    f.env.shared_set(&set_name, &raw, None).unwrap();
    let gone = pairs::accept_local(&*f.env, &f.worker, PAIR, CLIENT, 5, t, |_| Ok(()));
    assert!(gone.unwrap().is_none(), "an altered set reads as empty");
    f.worker.tick(&*f.env);
    assert_eq!(f.counter("veil.shared.records_rejected"), 1);
}

/// Task E: where the shell's shared data is the filter's alone (native: libveil's own
/// memory, no other plugin reaches it), the pair table is stored as it is: nothing sealed,
/// nothing opened; another worker reads it the same way.
#[test]
fn a_private_shared_data_holds_the_pair_table_unsealed() {
    let env = veil_roles::testing::FakeEnv::new();
    env.set_shared_scope(veil_roles::host::SharedScope::Filter);
    let f = Fix::on(env, config(relay("local")));
    let t = now(&f);
    pairs::install(&*f.env, &f.worker, &keys(PAIR, t), false, t).unwrap();
    let ok = pairs::accept_local(&*f.env, &f.worker, PAIR, CLIENT, 1, t, |_| Ok(()));
    assert!(ok.unwrap().is_some());
    let set_name = format!("veil.relay.set.{}", slots::set_index(PAIR, SETS));
    let raw = f.env.shared.get(&set_name).unwrap();
    let set = Set::parse(&raw, None, 4);
    assert!(set.find(PAIR).is_some(), "the set's own encoding, unsealed");
    assert!(RecordKey::from_token(TOKEN.as_bytes())
        .open(&set_name, &raw)
        .is_err());
    let g = Fix::on(f.env.sibling(), config(relay("local")));
    let replay = pairs::accept_local(&*g.env, &g.worker, PAIR, CLIENT, 1, t, |_| Ok(()));
    assert!(replay.is_err(), "the other worker reads the window");
    let next = pairs::accept_local(&*g.env, &g.worker, PAIR, CLIENT, 2, t, |_| Ok(()));
    assert!(next.unwrap().is_some());
    assert_eq!(f.worker.records.opens() + g.worker.records.opens(), 0);
}
