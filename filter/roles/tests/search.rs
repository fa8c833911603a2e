//! The unseal route's search rewrite on a fake host.

mod common;

use common::*;
use serde_json::json;
use veil_roles::host::{Action, BodyKind, Direction, HeaderKind, StreamId};
use veil_roles::testing::answer;

const SEARCH: &str = "/api/v1/search/~/search/events";
const TERM: &str = r#"{"query":{"term":{"request.body.email":"a@b.c"}}}"#;

fn terms(h: &veil_roles::testing::FakeHost) -> Vec<String> {
    let v = json_of(&body(h, BodyKind::Request));
    v["query"]["terms"]["request.body.email"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn a_search_without_sealed_terms_passes_as_it_came() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let q = br#"{"query":{"term":{"request.verb":"POST"}}}"#;
    let (a, b) = send(&h, &mut s, "POST", &format!("{SEARCH}?from=-1h"), &[], q);
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert_eq!(body(&h, BodyKind::Request), q);
}

#[test]
fn a_sealed_term_is_rewritten_under_the_held_epoch_key() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-1h"),
        &[("content-length", "60")],
        TERM.as_bytes(),
    );
    assert_eq!(b, Action::Continue, "{:?}", h.reply());
    let t = terms(&h);
    // Format v2 (the field's scope) and v1 (events sealed before v2), under the one key.
    assert_eq!(t.len(), 2);
    assert!(
        t[0].starts_with(&format!("veil:v2:{}:d:", f.current_kid(1))),
        "{t:?}"
    );
    assert!(
        t[1].starts_with(&format!("veil:v1:{}:d:", f.current_kid(1))),
        "{t:?}"
    );
    assert_eq!(h.get(HeaderKind::RequestHeaders, "content-length"), None);
    assert_eq!(f.counter("veil.search.rewritten"), 1);
}

#[test]
fn a_search_over_an_older_epoch_waits_for_its_key() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-400d"),
        &[],
        TERM.as_bytes(),
    );
    assert_eq!((a, b), (Action::Continue, Action::Pause));
    let sent = f.sent();
    assert_eq!(sent.len(), 1);
    let old = kid(1, epoch_at(f.env.now_ms() - 400 * 86_400_000));
    assert_eq!(sent[0].line(), format!("GET /v1/data-keys/{old}"));
    let ready = s.on_callout(
        &h,
        sent[0].id,
        &answer(200, &serde_json::to_vec(&key_entry(&old)).unwrap()),
    );
    assert_eq!(ready, vec![StreamId(1)]);
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(*h.resumed.borrow(), vec![Direction::Request]);
    let t = terms(&h);
    assert_eq!(t.len(), 4, "one sealed term per epoch and format (v2, v1)");
    assert!(t[0].contains(&old) && t[1].contains(&old));
    assert!(t[2].contains(&f.current_kid(1)) && t[3].contains(&f.current_kid(1)));
}

#[test]
fn a_search_whose_epoch_key_is_unknown_is_refused_not_sent_in_plaintext() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-400d"),
        &[],
        TERM.as_bytes(),
    );
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &answer(404, b""));
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(refused(&h), (503, "key-unavailable".into()));
    assert!(h.resumed.borrow().is_empty());
    assert_eq!(body(&h, BodyKind::Request), TERM.as_bytes());
    assert_eq!(f.counter("veil.search.rejected"), 1);
}

#[test]
fn a_bad_time_range_is_refused_once_the_body_is_in() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=yesterday-ish"),
        &[],
        TERM.as_bytes(),
    );
    assert_eq!((a, b), (Action::Continue, Action::Pause));
    assert_eq!(refused(&h), (400, "bad-search".into()));
}

#[test]
fn a_search_that_is_not_json_is_refused() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-1h"),
        &[],
        b"{nope",
    );
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (400, "bad-json".into()));
}

#[test]
fn a_search_without_keys_yet_is_refused() {
    let f = Fix::new(config(json!({})));
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-1h"),
        &[],
        TERM.as_bytes(),
    );
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (503, "key-unavailable".into()));
}

#[test]
fn a_search_body_over_the_limit_is_refused() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    request(&h, "POST", SEARCH, &[]);
    s.on_request_headers(&h, false);
    assert_eq!(s.on_request_body(&h, 5000, false), Action::Pause);
    assert_eq!(refused(&h), (413, "body-too-large".into()));
}

/// A worker that has not ticked yet (its first tick is up to 200 ms after start) takes the
/// keys another worker published, as the seal role does, instead of answering 503.
#[test]
fn a_search_on_a_worker_that_has_not_ticked_uses_the_shared_keys() {
    let one = Fix::ready();
    let two = Fix::on(one.env.sibling(), config(json!({})));
    let (h, mut s) = two.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-1h"),
        &[],
        TERM.as_bytes(),
    );
    assert_eq!(b, Action::Continue, "{:?}", h.reply());
    assert_eq!(terms(&h).len(), 2, "v2 and v1");
    assert!(two.sent().is_empty());
}

/// Issue #18: `/search/~/search/users` and `/count/events` were not inspected at all, and
/// any other management endpoint carried its body to the vendor unchecked.
#[test]
fn every_management_endpoint_with_a_body_is_checked_or_refused() {
    let f = Fix::ready();
    // A users search names user fields (`metadata.*` is sealed): rewritten.
    let (h, mut s) = f.stream();
    let users = br#"{"query":{"term":{"metadata.email.raw":"a@b.c"}}}"#;
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        "/api/search/~/search/users?from=-1h",
        &[],
        users,
    );
    assert_eq!(b, Action::Continue, "{:?}", h.reply());
    let v = json_of(&body(&h, BodyKind::Request));
    let t = v["query"]["terms"]["metadata.email.raw"]
        .as_array()
        .unwrap();
    assert_eq!(t.len(), 2, "{v}");
    assert!(!String::from_utf8_lossy(&body(&h, BodyKind::Request)).contains("a@b.c"));
    // A count takes the same language: rewritten, and refused off the allow-list.
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        "/api/search/~/count/events?from=-1h",
        &[],
        TERM.as_bytes(),
    );
    assert_eq!(b, Action::Continue, "{:?}", h.reply());
    assert_eq!(terms(&h).len(), 2);
    let (h, mut s) = f.stream();
    let span = br#"{"query":{"span_term":{"request.body.email":"a@b.c"}}}"#;
    let (_, b) = send(&h, &mut s, "POST", "/api/search/~/count/events", &[], span);
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (400, "bad-search".into()));
    // Any other endpoint with a body: refused, nothing leaves.
    for path in [
        "/api/workspaces/1",
        "/api/search/~/search/actions",
        "/api/v1/~/dashboards",
    ] {
        let (h, mut s) = f.stream();
        let (_, b) = send(&h, &mut s, "PUT", path, &[], br#"{"note":"a@b.c"}"#);
        assert_eq!(b, Action::Pause, "{path}");
        assert_eq!(refused(&h), (400, "bad-search".into()), "{path}");
        let (status, _) = refused(&h);
        assert_eq!(status, 400);
    }
    // Without a body it passes.
    let (h, mut s) = f.stream();
    request(&h, "GET", "/api/workspaces/1", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Continue);
    assert!(h.reply().is_none());
}

/// Issue #18: a search only covered the current root version. Kids are asked for every
/// root version the keyservice serves.
#[test]
fn a_search_covers_every_root_version_served() {
    let f = Fix::new(config(json!({})));
    let kids: Vec<String> = vec![f.current_kid(2)];
    let mut answer_doc: serde_json::Value = json_of(&current_answer(2, &kids));
    answer_doc["root_versions"] = json!([1, 2]);
    f.install_answer(&serde_json::to_vec(&answer_doc).unwrap());
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        &format!("{SEARCH}?from=-1h"),
        &[],
        TERM.as_bytes(),
    );
    // r1's key of this epoch is not held: it is fetched on demand first.
    assert_eq!(b, Action::Pause, "{:?}", h.reply());
    let lines: Vec<String> = f.sent().iter().map(|r| r.line()).collect();
    assert!(
        lines.contains(&format!("GET /v1/data-keys/{}", f.current_kid(1))),
        "asked for the r1 key: {lines:?}"
    );
}
