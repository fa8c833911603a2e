//! The seal role on a fake host: every state and refusal of docs/configuration.md.

mod common;

use std::io::Write;

use common::*;
use serde_json::json;
use veil_roles::host::{Action, BodyKind, HeaderKind};

const EVENT: &str = r#"{"request":{"uri":"https://x.test/a","verb":"POST","body":{"email":"ann@example.com","n":7}},"response":{"status":200}}"#;

fn sealed_event(f: &Fix) -> (veil_roles::testing::FakeHost, serde_json::Value) {
    let (h, mut s) = f.stream();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        "/collector/v1/events",
        &[
            ("content-type", "application/json"),
            ("content-length", "120"),
        ],
        EVENT.as_bytes(),
    );
    // A proxy-wasm-like host (the fake's default): the headers go on at once.
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert!(h.reply().is_none());
    let v = json_of(&body(&h, BodyKind::Request));
    (h, v)
}

#[test]
fn a_collector_event_is_sealed_under_the_current_kid() {
    let f = Fix::ready();
    let (h, v) = sealed_event(&f);
    let email = v["request"]["body"]["email"].as_str().unwrap();
    assert!(
        email.starts_with(&format!("veil:v2:{}:", f.current_kid(1))),
        "{email}"
    );
    assert!(
        v["request"]["body"]["n"].is_string(),
        "numbers are sealed by default"
    );
    assert_eq!(v["request"]["uri"], "https://x.test/a");
    // The sealed body has another length; the headers left without one (Envoy frames it).
    assert_eq!(h.get(HeaderKind::RequestHeaders, "content-length"), None);
    assert_eq!(f.counter("veil.seal.requests"), 1);
    assert_eq!(f.counter("veil.seal.values_sealed"), 2);
}

#[test]
fn a_host_that_holds_headers_gets_the_sealed_length() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    h.hold_headers();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        "/collector/v1/events",
        &[("content-length", "120")],
        EVENT.as_bytes(),
    );
    // The native shell: the headers wait for the sealed body and get its length.
    assert_eq!((a, b), (Action::Pause, Action::Continue));
    assert!(h.reply().is_none());
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "content-length"),
        Some(body(&h, BodyKind::Request).len().to_string())
    );
    assert_eq!(f.counter("veil.seal.requests"), 1);
}

#[test]
fn a_chunked_request_gets_no_length_it_did_not_have() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    h.hold_headers();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        "/collector/v1/events",
        &[("transfer-encoding", "chunked")],
        EVENT.as_bytes(),
    );
    assert_eq!((a, b), (Action::Pause, Action::Continue));
    assert_eq!(h.get(HeaderKind::RequestHeaders, "content-length"), None);
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "transfer-encoding")
            .as_deref(),
        Some("chunked")
    );
    assert_eq!(f.counter("veil.seal.requests"), 1);
}

#[test]
fn deterministic_values_repeat_and_the_memo_does_not_change_them() {
    let f = Fix::ready();
    let (_, a) = sealed_event(&f);
    let (_, b) = sealed_event(&f);
    assert_eq!(a["request"]["body"]["email"], b["request"]["body"]["email"]);
}

#[test]
fn the_json_profile_seals_all_but_the_excluded() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(
        &h,
        &mut s,
        "PUT",
        "/patients/1",
        &[],
        br#"{"id":"p1","name":"Ann","tags":["a"]}"#,
    );
    let v = json_of(&body(&h, BodyKind::Request));
    assert_eq!(v["id"], "p1");
    assert!(v["name"].as_str().unwrap().starts_with("veil:"));
    assert!(v["tags"][0].as_str().unwrap().starts_with("veil:"));
}

#[test]
fn a_request_without_a_body_passes_untouched() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (a, _) = send(
        &h,
        &mut s,
        "POST",
        "/collector/v1/events",
        &[("content-length", "0")],
        b"",
    );
    assert_eq!(a, Action::Continue);
    assert!(h.reply().is_none());
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "content-length")
            .as_deref(),
        Some("0")
    );
    assert_eq!(f.counter("veil.seal.requests"), 0);
}

#[test]
fn paths_outside_every_rule_pass_without_a_look_at_the_body() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (a, b) = send(&h, &mut s, "POST", "/elsewhere", &[], b"not json");
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert_eq!(body(&h, BodyKind::Request), b"not json");
}

/// Issue #18: a body on GET/HEAD/OPTIONS to an unknown collector route left unsealed.
/// A body on any method to an unknown route of a sealed prefix is refused; a request
/// without a body passes.
#[test]
fn an_unknown_moesif_route_is_refused_with_a_body_on_any_method() {
    let f = Fix::ready();
    for (n, method) in ["POST", "GET", "HEAD", "OPTIONS", "DELETE"]
        .iter()
        .enumerate()
    {
        let (h, mut s) = f.stream();
        let (a, _) = send(
            &h,
            &mut s,
            method,
            "/collector/v1/other",
            &[],
            b"{\"token\":\"x\"}",
        );
        assert_eq!(a, Action::Pause, "{method}");
        assert_eq!(refused(&h), (404, "route-not-sealed".into()), "{method}");
        assert_eq!(f.counter("veil.seal.rejected.route"), n as i64 + 1);
    }
    let (h, mut s) = f.stream();
    request(&h, "GET", "/collector/v1/other", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Continue);
    assert!(h.reply().is_none());
}

#[test]
fn a_disabled_moesif_profile_passes_and_counts() {
    let f = Fix::new(config(json!({"routes": [
        {"prefix": "/collector", "seal": {"profile": "moesif", "options": {"enabled": false}}}]})));
    f.install_current(1);
    let (h, mut s) = f.stream();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        "/collector/v1/events",
        &[],
        EVENT.as_bytes(),
    );
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert_eq!(body(&h, BodyKind::Request), EVENT.as_bytes());
    assert_eq!(f.counter("veil.seal.passthrough"), 1);
}

#[test]
fn an_unsupported_content_encoding_is_refused_at_the_headers() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    request(&h, "POST", "/patients", &[("content-encoding", "br")]);
    assert_eq!(s.on_request_headers(&h, false), Action::Pause);
    assert_eq!(refused(&h), (415, "unsupported-content-encoding".into()));
    assert_eq!(f.counter("veil.seal.rejected.encoding"), 1);
    // The stream stays stopped.
    assert_eq!(s.on_request_body(&h, 3, true), Action::Pause);
    assert_eq!(s.on_request_trailers(&h), Action::Pause);
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    request(&h, "POST", "/patients", &[("content-length", "4097")]);
    assert_eq!(s.on_request_headers(&h, false), Action::Pause);
    assert_eq!(refused(&h), (413, "body-too-large".into()));
}

#[test]
fn a_body_growing_over_the_limit_is_refused_while_buffering() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    request(&h, "POST", "/patients", &[]);
    assert_eq!(s.on_request_headers(&h, false), Action::Continue);
    assert_eq!(s.on_request_body(&h, 100, false), Action::Pause);
    assert!(h.reply().is_none());
    assert_eq!(s.on_request_body(&h, 4097, false), Action::Pause);
    assert_eq!(refused(&h), (413, "body-too-large".into()));
    assert_eq!(f.counter("veil.seal.rejected.too_large"), 1);
}

#[test]
fn a_body_that_is_not_json_is_refused_and_never_forwarded() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (_, b) = send(&h, &mut s, "POST", "/patients", &[], b"{\"a\": tru");
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (400, "bad-json".into()));
    assert_eq!(f.counter("veil.seal.rejected.bad_json"), 1);
    assert_eq!(body(&h, BodyKind::Request), b"{\"a\": tru");
}

#[test]
fn a_gzip_body_is_decoded_sealed_and_forwarded_identity() {
    let f = Fix::ready();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"id":"x","name":"Ann"}"#).unwrap();
    let gz = gz.finish().unwrap();
    let (h, mut s) = f.stream();
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        "/patients",
        &[("content-encoding", "gzip"), ("content-length", "999")],
        &gz,
    );
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert_eq!(h.get(HeaderKind::RequestHeaders, "content-encoding"), None);
    assert_eq!(h.get(HeaderKind::RequestHeaders, "content-length"), None);
    let v = json_of(&body(&h, BodyKind::Request));
    assert!(v["name"].as_str().unwrap().starts_with("veil:"));
}

#[test]
fn a_corrupt_gzip_body_is_refused() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        "/patients",
        &[("content-encoding", "gzip")],
        b"\x1f\x8bnope",
    );
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (400, "bad-content-encoding".into()));
}

#[test]
fn without_a_key_the_request_is_refused_not_forwarded() {
    let f = Fix::new(config(json!({})));
    let (h, mut s) = f.stream();
    let (_, b) = send(&h, &mut s, "POST", "/patients", &[], br#"{"name":"Ann"}"#);
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (503, "key-unavailable".into()));
    assert_eq!(f.counter("veil.seal.rejected.no_key"), 1);
    assert_eq!(body(&h, BodyKind::Request), br#"{"name":"Ann"}"#);
}

#[test]
fn keys_another_worker_fetched_are_used_without_a_callout() {
    let one = Fix::ready();
    let two = Fix::on(one.env.sibling(), config(json!({})));
    let (h, mut s) = two.stream();
    send(&h, &mut s, "POST", "/patients", &[], br#"{"name":"Ann"}"#);
    let v = json_of(&body(&h, BodyKind::Request));
    assert!(v["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("veil:v2:{}:", one.current_kid(1))));
    assert!(two.sent().is_empty());
}

#[test]
fn a_sealed_body_over_max_sealed_body_bytes_is_refused() {
    let f = Fix::new(config(json!({"max_sealed_body_bytes": 64})));
    f.install_current(1);
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        "/patients",
        &[],
        br#"{"a":1,"b":2,"c":3}"#,
    );
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (413, "body-too-large".into()));
    assert!(h.reply().unwrap().json()["detail"]
        .as_str()
        .unwrap()
        .contains("max_sealed_body_bytes"));
}

#[test]
fn a_body_that_cannot_be_replaced_is_a_seal_failure() {
    let f = Fix::ready();
    f.env.fail("replace_body");
    let (h, mut s) = f.stream();
    let (_, b) = send(&h, &mut s, "POST", "/patients", &[], br#"{"name":"Ann"}"#);
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (500, "seal-failed".into()));
    assert_eq!(f.counter("veil.seal.failed"), 1);
}

#[test]
fn a_length_header_that_cannot_be_removed_is_a_seal_failure() {
    let f = Fix::ready();
    f.env.fail("remove_header");
    let (h, mut s) = f.stream();
    request(&h, "POST", "/patients", &[("content-length", "5")]);
    assert_eq!(s.on_request_headers(&h, false), Action::Pause);
    assert_eq!(refused(&h), (500, "seal-failed".into()));
}

#[test]
fn a_length_header_that_cannot_be_set_is_a_seal_failure() {
    let f = Fix::ready();
    f.env.fail("replace_header");
    let (h, mut s) = f.stream();
    h.hold_headers();
    let plain = br#"{"name":"Ann"}"#;
    let (a, b) = send(
        &h,
        &mut s,
        "POST",
        "/patients",
        &[("content-length", "14")],
        plain,
    );
    assert_eq!((a, b), (Action::Pause, Action::Pause));
    assert_eq!(refused(&h), (500, "seal-failed".into()));
    assert_eq!(f.counter("veil.seal.requests"), 0);
}

#[test]
fn unreadable_request_headers_are_refused() {
    let f = Fix::ready();
    f.env.fail("headers");
    let (h, mut s) = f.stream();
    request(&h, "POST", "/patients", &[]);
    assert_eq!(s.on_request_headers(&h, false), Action::Pause);
    assert_eq!(refused(&h).0, 500);
}

#[test]
fn trailers_end_a_body_whose_last_chunk_was_not_marked() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    request(&h, "POST", "/patients", &[]);
    s.on_request_headers(&h, false);
    *h.request_body.borrow_mut() = br#"{"name":"Ann"}"#.to_vec();
    assert_eq!(s.on_request_body(&h, 14, false), Action::Pause);
    assert_eq!(s.on_request_trailers(&h), Action::Continue);
    let v = json_of(&body(&h, BodyKind::Request));
    assert!(v["name"].as_str().unwrap().starts_with("veil:"));
    // Forwarded: later callbacks continue.
    assert_eq!(s.on_request_body(&h, 14, true), Action::Continue);
}

#[test]
fn a_refusal_that_cannot_be_sent_keeps_the_stream_stopped() {
    let f = Fix::ready();
    f.env.fail("send_local_response");
    let (h, mut s) = f.stream();
    let (_, b) = send(&h, &mut s, "POST", "/patients", &[], b"nope");
    assert_eq!(b, Action::Pause);
    assert!(h.reply().is_none());
    assert_eq!(f.counter("veil.hostcall_failed"), 1);
}

#[test]
fn a_refusal_names_no_content() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(
        &h,
        &mut s,
        "POST",
        "/patients",
        &[],
        b"{\"secret-value\": x}",
    );
    let r = h.reply().unwrap();
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(!String::from_utf8_lossy(&r.body).contains("secret-value"));
    assert!(!f.env.log_text().contains("secret-value"));
}
