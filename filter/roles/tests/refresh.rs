//! The key refresh on a fake host: first fetch, refresh, keyservice down, bad answers.

mod common;

use common::*;
use serde_json::json;
use veil_roles::host::SharedData;
use veil_roles::testing::{answer, no_answer};

fn current_fetches(f: &Fix) -> Vec<veil_roles::testing::Sent> {
    f.sent()
        .into_iter()
        .filter(|s| s.line() == "GET /v1/data-keys/current")
        .collect()
}

fn fresh() -> Fix {
    Fix::new(config(json!({})))
}

#[test]
fn the_first_tick_fetches_installs_and_publishes_the_current_keys() {
    let f = fresh();
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].cluster, "veil_keyservice");
    assert_eq!(sent[0].header(":authority"), Some("veil-keyservice"));
    assert!(sent[0]
        .header("authorization")
        .unwrap()
        .starts_with("Veil-HMAC-SHA256 t="));
    assert_eq!(sent[0].timeout, std::time::Duration::from_millis(1000));
    let k = f.current_kid(1);
    f.worker.on_root_callout(
        &*f.env,
        sent[0].id,
        &answer(200, &current_answer(1, std::slice::from_ref(&k))),
    );
    assert_eq!(f.counter("veil.keys.fetch_ok"), 1);
    // Issue #18: the record is sealed under a key from the keyservice token, the record's
    // name as associated data: not readable by other plugins of the proxy.
    let raw = f.env.shared.get("veil.keys.current.v1").unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&raw).is_err());
    let key = veil_core::crypto::shared_record::RecordKey::from_token(TOKEN.as_bytes());
    assert!(key.open("veil.keys.ondemand.v1", &raw).is_err());
    let shared: serde_json::Value =
        serde_json::from_slice(&key.open("veil.keys.current.v1", &raw).unwrap()).unwrap();
    assert_eq!(shared["fetched_at"], json!(f.env.now_ms() / 1000));
    assert_eq!(shared["keys"][0]["kid"], json!(k));
    // Held and fresh: the next ticks send nothing.
    f.worker.tick(&*f.env);
    assert!(f.sent().is_empty());
}

#[test]
fn keys_are_fetched_again_after_refresh_secs() {
    let f = Fix::ready();
    f.env.advance_ms(59_000);
    f.worker.tick(&*f.env);
    assert!(current_fetches(&f).is_empty());
    f.env.advance_ms(1_000);
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1);
}

#[test]
fn a_keyservice_that_does_not_answer_backs_off() {
    let f = fresh();
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    f.worker.on_root_callout(&*f.env, sent[0].id, &no_answer());
    assert_eq!(f.counter("veil.keys.fetch_failed"), 1);
    assert!(f.env.log_text().contains("no :status"));
    // 200 ms << 1 = 400 ms of backoff.
    f.env.advance_ms(399);
    f.worker.tick(&*f.env);
    assert!(current_fetches(&f).is_empty());
    f.env.advance_ms(1);
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    assert_eq!(sent.len(), 1);
    // A second failure in a row, an error status this time, backs off longer: 800 ms (the
    // count used to restart with each fetch, so a keyservice answering 503 was asked every
    // 400 ms forever).
    f.worker
        .on_root_callout(&*f.env, sent[0].id, &answer(503, b""));
    assert_eq!(f.counter("veil.keys.fetch_failed"), 2);
    f.env.advance_ms(799);
    f.worker.tick(&*f.env);
    assert!(current_fetches(&f).is_empty(), "still backing off");
    f.env.advance_ms(1);
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1);
}

/// Error statuses grow the backoff as failed calls do, to at most 5 s; keys installed
/// reset it.
#[test]
fn error_statuses_back_off_longer_each_time_up_to_5_s() {
    let f = fresh();
    f.worker.tick(&*f.env);
    let mut sent = current_fetches(&f);
    for (status, wait) in [
        (503, 400),
        (500, 800),
        (401, 1_600),
        (503, 3_200),
        (429, 5_000),
        (503, 5_000),
    ] {
        f.worker
            .on_root_callout(&*f.env, sent[0].id, &answer(status, b""));
        f.env.advance_ms(wait - 1);
        f.worker.tick(&*f.env);
        assert!(current_fetches(&f).is_empty(), "{status}: before {wait} ms");
        f.env.advance_ms(1);
        f.worker.tick(&*f.env);
        sent = current_fetches(&f);
        assert_eq!(sent.len(), 1, "{status}: after {wait} ms");
    }
    f.worker.on_root_callout(
        &*f.env,
        sent[0].id,
        &answer(200, &current_answer(1, &[f.current_kid(1)])),
    );
    assert_eq!(f.counter("veil.keys.fetch_ok"), 1);
    // Stale again after refresh_secs; the next failure starts from 400 ms.
    f.env.advance_ms(60_000);
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    f.worker
        .on_root_callout(&*f.env, sent[0].id, &answer(503, b""));
    f.env.advance_ms(400);
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1, "reset by the success");
}

#[test]
fn an_answer_without_keys_is_a_failure_and_installs_nothing() {
    let f = fresh();
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    f.worker.on_root_callout(
        &*f.env,
        sent[0].id,
        &answer(200, br#"{"current_root":1,"keys":[]}"#),
    );
    assert_eq!(f.counter("veil.keys.fetch_failed"), 1);
    assert!(f.env.shared.get("veil.keys.current.v1").is_none());
    let (h, mut s) = f.stream();
    send(&h, &mut s, "POST", "/patients", &[], br#"{"a":"b"}"#);
    assert_eq!(refused(&h).1, "key-unavailable");
}

#[test]
fn an_answer_with_a_bad_key_is_a_failure_that_names_no_key() {
    let f = fresh();
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    let bad = format!(
        r#"{{"current_root":1,"keys":[{{"kid":"{}","dek":"c2VjcmV0LWtleQ"}}]}}"#,
        f.current_kid(1)
    );
    f.worker
        .on_root_callout(&*f.env, sent[0].id, &answer(200, bad.as_bytes()));
    assert_eq!(f.counter("veil.keys.fetch_failed"), 1);
    assert!(!f.env.log_text().contains("c2VjcmV0LWtleQ"));
}

#[test]
fn fetches_that_cannot_be_sent_back_off_longer_each_time() {
    let f = fresh();
    f.env.fail("callout");
    f.worker.tick(&*f.env);
    // 400 ms, then 800 ms, then 1.6 s.
    for wait in [400, 800, 1_600] {
        f.env.advance_ms(wait - 1);
        f.worker.tick(&*f.env);
        let before = f.counter("veil.keys.fetch_failed");
        f.env.advance_ms(1);
        f.worker.tick(&*f.env);
        assert_eq!(
            f.counter("veil.keys.fetch_failed"),
            before + 1,
            "after {wait} ms"
        );
    }
}

#[test]
fn a_fetch_that_cannot_be_sent_backs_off() {
    let f = fresh();
    f.env.fail("callout");
    f.worker.tick(&*f.env);
    assert_eq!(f.counter("veil.keys.fetch_failed"), 1);
    f.env.heal("callout");
    f.worker.tick(&*f.env);
    assert!(current_fetches(&f).is_empty(), "backing off");
    f.env.advance_ms(400);
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1);
}

#[test]
fn a_fetch_that_cannot_be_signed_is_not_sent() {
    let f = fresh();
    f.env.fail("fill_random");
    f.worker.tick(&*f.env);
    assert!(f.sent().is_empty());
    assert_eq!(f.counter("veil.keys.fetch_failed"), 1);
    assert!(f.env.log_text().contains("cannot sign"));
}

#[test]
fn a_fetch_in_flight_is_not_repeated_until_it_timed_out() {
    let f = fresh();
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1);
    f.env.advance_ms(1_999);
    f.worker.tick(&*f.env);
    assert!(current_fetches(&f).is_empty());
    f.env.advance_ms(1);
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1, "timeout + 1 s: asked again");
}

#[test]
fn keys_another_worker_published_are_adopted_by_the_tick() {
    let one = Fix::ready();
    let two = Fix::on(one.env.sibling(), config(json!({})));
    two.worker.tick(&*two.env);
    assert!(two.sent().is_empty(), "no fetch of its own");
}

#[test]
fn an_answer_to_another_callout_is_not_the_refresh() {
    let f = fresh();
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    let other = veil_roles::host::CalloutId(sent[0].id.0 + 100);
    f.worker.on_root_callout(
        &*f.env,
        other,
        &answer(200, &current_answer(1, &[f.current_kid(1)])),
    );
    assert_eq!(f.counter("veil.keys.fetch_ok"), 0);
    f.worker.on_root_callout(
        &*f.env,
        sent[0].id,
        &answer(200, &current_answer(1, &[f.current_kid(1)])),
    );
    assert_eq!(f.counter("veil.keys.fetch_ok"), 1);
}

/// Issue #18: a kid was not bound to its key. A key whose fingerprint does not match is
/// refused (nothing installed, the failure counted, the key never logged); a key without
/// a fingerprint likewise.
#[test]
fn a_key_that_does_not_match_its_fingerprint_is_refused() {
    for fp in [Some("00112233445566778899aabbccddeeff"), None] {
        let f = fresh();
        let kid = f.current_kid(1);
        let mut entry = key_entry(&kid);
        match fp {
            Some(fp) => entry["fingerprint"] = json!(fp),
            None => {
                entry.as_object_mut().unwrap().remove("fingerprint");
            }
        }
        let dek = entry["dek"].as_str().unwrap().to_string();
        let body = serde_json::to_vec(&json!({"current_root": 1, "keys": [entry]})).unwrap();
        f.install_answer(&body);
        assert_eq!(f.counter("veil.keys.fetch_failed"), 1, "{fp:?}");
        assert_eq!(f.worker.keys.borrow().current_root(), None);
        assert!(!f.env.log_text().contains(&dek));
    }
}

/// Issue #18: `keyring destroy` took effect in running filters only at restart. The next
/// answer without the destroyed root version drops its keys; a key re-made under a kid the
/// filter holds replaces the old one.
#[test]
fn a_destroyed_root_is_dropped_and_a_remade_kid_replaced_at_the_next_refresh() {
    let f = fresh();
    let (k1, k2) = (f.current_kid(1), f.current_kid(2));
    let doc = |root: u32, roots: serde_json::Value, entries: Vec<serde_json::Value>| {
        serde_json::to_vec(&json!({"current_root": root, "root_versions": roots, "keys": entries}))
            .unwrap()
    };
    f.install_answer(&doc(2, json!([1, 2]), vec![key_entry(&k1), key_entry(&k2)]));
    let kid1: veil_core::crypto::keys::Kid = k1.parse().unwrap();
    let kid2: veil_core::crypto::keys::Kid = k2.parse().unwrap();
    assert!(f.worker.keys.borrow().key_for(kid1).is_some());
    let old_fp = f.worker.keys.borrow().key_for(kid2).unwrap().fingerprint();
    // r1 destroyed; r2 re-made with another key (as a keyring that reused numbers would).
    let mut remade = key_entry(&k2);
    let other = veil_core::crypto::keys::Dek::from_bytes([0x77; 32]);
    remade["dek"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        other.as_bytes()
    ));
    remade["fingerprint"] = json!(other.fingerprint().to_string());
    f.env.advance_ms(61_000);
    f.install_answer(&doc(2, json!([2]), vec![remade]));
    let keys = f.worker.keys.borrow();
    assert!(
        keys.key_for(kid1).is_none(),
        "the destroyed root's key is gone"
    );
    let now = keys.key_for(kid2).unwrap().fingerprint();
    assert_ne!(now, old_fp);
    assert_eq!(now, other.fingerprint());
    assert_eq!(keys.root_versions(), vec![2]);
}

/// Issue #18: a record another plugin of the proxy publishes under the keys' name (a key of
/// its own, in plaintext) is not adopted: it does not open, it is counted, and the worker
/// fetches its own keys.
#[test]
fn a_forged_shared_record_is_ignored_and_counted() {
    let one = fresh();
    let forged = current_answer(1, &[one.current_kid(1)]);
    one.env
        .shared_set("veil.keys.current.v1", &forged, None)
        .unwrap();
    one.worker.tick(&*one.env);
    assert_eq!(one.worker.keys.borrow().current_root(), None, "not adopted");
    assert_eq!(current_fetches(&one).len(), 1, "fetches its own");
    assert!(one.counter("veil.shared.records_rejected") >= 1);
}

/// Task E: where the shell's shared data is the filter's alone (native), the key record is
/// published as it is, and another worker adopts it.
#[test]
fn a_private_shared_data_holds_the_key_record_unsealed() {
    let env = veil_roles::testing::FakeEnv::new();
    env.set_shared_scope(veil_roles::host::SharedScope::Filter);
    let f = Fix::on(env, config(json!({})));
    f.worker.tick(&*f.env);
    let sent = current_fetches(&f);
    let k = f.current_kid(1);
    f.worker.on_root_callout(
        &*f.env,
        sent[0].id,
        &answer(200, &current_answer(1, std::slice::from_ref(&k))),
    );
    let raw = f.env.shared.get("veil.keys.current.v1").unwrap();
    let shared: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(shared["keys"][0]["kid"], json!(k));
    let two = Fix::on(f.env.sibling(), config(json!({})));
    two.worker.tick(&*two.env);
    assert!(two.sent().is_empty(), "adopted, no fetch of its own");
    assert_eq!(two.worker.records.opens(), 0);
}
