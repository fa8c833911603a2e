//! The key refresh on a fake host: first fetch, refresh, keyservice down, bad answers.

mod common;

use common::*;
use serde_json::json;
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
    let shared: serde_json::Value =
        serde_json::from_slice(&f.env.shared.get("veil.keys.current.v1").unwrap()).unwrap();
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
    // A failed answer backs off from the start again (the count restarts with each
    // fetch: as before the move; see the report of issue #15).
    f.worker
        .on_root_callout(&*f.env, sent[0].id, &answer(503, b""));
    assert_eq!(f.counter("veil.keys.fetch_failed"), 2);
    f.env.advance_ms(399);
    f.worker.tick(&*f.env);
    assert!(current_fetches(&f).is_empty());
    f.env.advance_ms(1);
    f.worker.tick(&*f.env);
    assert_eq!(current_fetches(&f).len(), 1);
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
