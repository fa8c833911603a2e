//! The unseal role on a fake host: responses, kids fetched on demand (waiters, shared
//! claims, negative cache, failures), and the search rewrite.

mod common;

use std::io::Write;

use common::*;
use serde_json::json;
use veil_roles::host::{Action, BodyKind, Direction, HeaderKind, StreamId};
use veil_roles::testing::{answer, no_answer, FakeHost};
use veil_roles::Stream;

const DOC: &str = r#"{"id":"p1","email":"ann@example.com","n":3}"#;

fn doc() -> serde_json::Value {
    json_of(DOC.as_bytes())
}

/// A GET on the unseal route whose response carries `sealed`.
fn get_response(f: &Fix, path: &str, sealed: &[u8]) -> (FakeHost, Stream, Action) {
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", path, &[("accept-encoding", "br")], b"");
    let (a, b) = respond(
        &h,
        &mut s,
        "200",
        &[("content-type", "application/json")],
        sealed,
    );
    assert_eq!(a, Action::Continue);
    (h, s, b)
}

#[test]
fn a_response_under_a_held_kid_is_unsealed() {
    let f = Fix::ready();
    let sealed = seal_with(&f, &doc());
    assert_ne!(json_of(&sealed), doc());
    let (h, _, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Continue);
    assert_eq!(json_of(&body(&h, BodyKind::Response)), doc());
    // Asked for an encoding the filter can decode.
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "accept-encoding")
            .as_deref(),
        Some("gzip, deflate")
    );
    assert_eq!(h.get(HeaderKind::ResponseHeaders, "content-length"), None);
    assert_eq!(f.counter("veil.unseal.values_opened"), 2);
    assert_eq!(f.counter("veil.unseal.responses"), 1);
    assert!(f.sent().is_empty());
}

#[test]
fn a_response_that_is_not_json_passes_as_it_came() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    let (a, b) = respond(
        &h,
        &mut s,
        "200",
        &[("content-type", "text/html"), ("content-length", "5")],
        b"<p>x",
    );
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-length")
            .as_deref(),
        Some("5")
    );
    assert_eq!(f.counter("veil.unseal.passthrough"), 1);
}

#[test]
fn a_response_without_a_body_passes() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    assert_eq!(
        respond(&h, &mut s, "204", &[], b""),
        (Action::Continue, Action::Continue)
    );
}

#[test]
fn a_gzip_response_is_decoded_unsealed_and_forwarded_identity() {
    let f = Fix::ready();
    let sealed = seal_with(&f, &doc());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&sealed).unwrap();
    let gz = gz.finish().unwrap();
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    let (_, b) = respond(
        &h,
        &mut s,
        "200",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &gz,
    );
    assert_eq!(b, Action::Continue);
    assert_eq!(h.get(HeaderKind::ResponseHeaders, "content-encoding"), None);
    // A refusal may follow: the hold header asks a later filter to hold the headers.
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "x-veil-hold-response")
            .as_deref(),
        Some("1")
    );
    assert_eq!(json_of(&body(&h, BodyKind::Response)), doc());
}

#[test]
fn a_compressed_response_that_does_not_decode_is_refused() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    let (_, b) = respond(
        &h,
        &mut s,
        "200",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        b"\x1f\x8bxx",
    );
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (502, "unseal-failed".into()));
}

#[test]
fn an_unsupported_response_encoding_passes_untouched() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    let (_, b) = respond(
        &h,
        &mut s,
        "200",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        b"xx",
    );
    assert_eq!(b, Action::Continue);
    assert_eq!(body(&h, BodyKind::Response), b"xx");
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-encoding")
            .as_deref(),
        Some("br")
    );
}

#[test]
fn a_response_declared_over_the_limit_passes_sealed() {
    let f = Fix::ready();
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    let (_, b) = respond(
        &h,
        &mut s,
        "200",
        &[
            ("content-type", "application/json"),
            ("content-length", "5000"),
        ],
        b"{}",
    );
    assert_eq!(b, Action::Continue);
    assert_eq!(f.counter("veil.unseal.too_large"), 1);
}

#[test]
fn a_tampered_value_is_kept_and_counted_with_keep() {
    let f = Fix::ready();
    let mut v = json_of(&seal_with(&f, &doc()));
    let email = v["email"].as_str().unwrap().to_string();
    let mut t = email.into_bytes();
    let last = t.len() - 2;
    t[last] = if t[last] == b'A' { b'B' } else { b'A' };
    v["email"] = json!(String::from_utf8(t).unwrap());
    let (h, _, b) = get_response(&f, "/api/v1/x", &serde_json::to_vec(&v).unwrap());
    assert_eq!(b, Action::Continue);
    let out = json_of(&body(&h, BodyKind::Response));
    assert_eq!(out["email"], v["email"]);
    assert_eq!(out["n"], 3);
    assert_eq!(f.counter("veil.unseal.values_failed"), 1);
}

#[test]
fn a_tampered_value_on_a_reject_route_is_a_502() {
    let f = Fix::ready();
    let mut v = json_of(&seal_with(&f, &doc()));
    v["email"] = json!(format!("{}A", &v["email"].as_str().unwrap()[..60]));
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/strict/x", &[], b"");
    let (_, b) = respond(
        &h,
        &mut s,
        "200",
        &[("content-type", "application/json")],
        &serde_json::to_vec(&v).unwrap(),
    );
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "x-veil-hold-response")
            .as_deref(),
        Some("1")
    );
    assert_eq!(b, Action::Pause);
    assert_eq!(refused(&h), (502, "unseal-failed".into()));
    assert_eq!(f.counter("veil.unseal.rejected"), 1);
}

#[test]
fn trailers_finish_a_response() {
    let f = Fix::ready();
    let sealed = seal_with(&f, &doc());
    let (h, mut s) = f.stream();
    send(&h, &mut s, "GET", "/api/v1/x", &[], b"");
    h.set_headers(
        HeaderKind::ResponseHeaders,
        &[(":status", "200"), ("content-type", "application/json")],
    );
    s.on_response_headers(&h, false);
    *h.response_body.borrow_mut() = sealed.clone();
    assert_eq!(s.on_response_body(&h, sealed.len(), false), Action::Pause);
    assert_eq!(s.on_response_trailers(&h), Action::Continue);
    assert_eq!(json_of(&body(&h, BodyKind::Response)), doc());
}

/// A GET whose response (headers as given) is answered on a host that holds paused headers
/// (the native shell): the response headers' action and the body's.
fn held_response(
    f: &Fix,
    path: &str,
    extra: &[(&str, &str)],
    sealed: &[u8],
) -> (FakeHost, Stream, Action, Action) {
    let (h, mut s) = f.stream();
    h.hold_headers();
    send(&h, &mut s, "GET", path, &[], b"");
    let (a, b) = respond(&h, &mut s, "200", extra, sealed);
    (h, s, a, b)
}

#[test]
fn held_headers_get_the_unsealed_bodys_length() {
    let f = Fix::ready();
    let sealed = seal_with(&f, &doc());
    let len = sealed.len().to_string();
    let (h, _, a, b) = held_response(
        &f,
        "/api/v1/x",
        &[
            ("content-type", "application/json"),
            ("content-length", &len),
        ],
        &sealed,
    );
    // Held until the body is rewritten, then released with it.
    assert_eq!((a, b), (Action::Pause, Action::Continue));
    let out = body(&h, BodyKind::Response);
    assert_eq!(json_of(&out), doc());
    assert_ne!(out.len(), sealed.len());
    assert_eq!(
        h.values(HeaderKind::ResponseHeaders, "content-length"),
        vec![out.len().to_string()]
    );
    // No later filter needs to hold them.
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "x-veil-hold-response"),
        None
    );
}

#[test]
fn held_headers_of_an_untouched_response_keep_their_length() {
    let f = Fix::ready();
    let (h, _, a, b) = held_response(
        &f,
        "/api/v1/x",
        &[
            ("content-type", "application/json"),
            ("content-length", "7"),
        ],
        br#"{"a":1}"#,
    );
    assert_eq!((a, b), (Action::Pause, Action::Continue));
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-length")
            .as_deref(),
        Some("7")
    );
}

#[test]
fn held_headers_of_a_gzip_response_get_the_decoded_length() {
    let f = Fix::ready();
    let plain = br#"{"a":1,"b":"no sealed value here"}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain).unwrap();
    let gz = gz.finish().unwrap();
    let len = gz.len().to_string();
    let (h, _, a, b) = held_response(
        &f,
        "/api/v1/x",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("content-length", &len),
        ],
        &gz,
    );
    assert_eq!((a, b), (Action::Pause, Action::Continue));
    assert_eq!(body(&h, BodyKind::Response), plain);
    assert_eq!(h.get(HeaderKind::ResponseHeaders, "content-encoding"), None);
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-length")
            .as_deref(),
        Some(plain.len().to_string().as_str())
    );
}

#[test]
fn held_headers_of_a_tampered_value_on_a_reject_route_become_a_502() {
    let f = Fix::ready();
    let mut v = json_of(&seal_with(&f, &doc()));
    v["email"] = json!(format!("{}A", &v["email"].as_str().unwrap()[..60]));
    let (h, _, a, b) = held_response(
        &f,
        "/strict/x",
        &[("content-type", "application/json")],
        &serde_json::to_vec(&v).unwrap(),
    );
    assert_eq!((a, b), (Action::Pause, Action::Pause));
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "x-veil-hold-response"),
        None
    );
    assert_eq!(refused(&h), (502, "unseal-failed".into()));
}

#[test]
fn held_headers_get_the_length_when_a_parked_response_is_unsealed() {
    let (sealed, want) = old_response();
    let f = Fix::ready();
    let (h, mut s, a, b) = held_response(
        &f,
        "/api/v1/x",
        &[("content-type", "application/json")],
        &sealed,
    );
    assert_eq!((a, b), (Action::Pause, Action::Pause));
    let sent = f.sent();
    let ready = s.on_callout(&h, sent[0].id, &key_answer(&want));
    assert_eq!(ready, vec![StreamId(1)]);
    f.worker.run_parked(&h, StreamId(1));
    let out = body(&h, BodyKind::Response);
    assert_eq!(json_of(&out), doc());
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-length"),
        Some(out.len().to_string())
    );
    assert_eq!(*h.resumed.borrow(), vec![Direction::Response]);
}

/// A response sealed 400 days ago (a kid the worker does not hold), and its kid.
fn old_response() -> (Vec<u8>, String) {
    let old = sealer_days_ago(400, 1);
    (seal_with(&old, &doc()), old.current_kid(1))
}

fn key_answer(kid: &str) -> veil_roles::host::CalloutAnswer {
    answer(200, &serde_json::to_vec(&key_entry(kid)).unwrap())
}

#[test]
fn a_kid_not_held_is_fetched_on_demand_and_the_stream_resumed() {
    let (sealed, want) = old_response();
    let f = Fix::ready();
    let (h, mut s, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Pause, "the stream waits for its kid");
    let sent = f.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].line(), format!("GET /v1/data-keys/{want}"));
    let auth = sent[0].header("authorization").unwrap();
    assert!(auth.starts_with("Veil-HMAC-SHA256 ") && !auth.contains(TOKEN));
    assert_eq!(f.counter("veil.keys.kid_waits"), 1);
    // Still waiting: later response callbacks keep it paused.
    assert_eq!(s.on_response_trailers(&h), Action::Pause);
    let ready = s.on_callout(&h, sent[0].id, &key_answer(&want));
    assert_eq!(ready, vec![StreamId(1)]);
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(json_of(&body(&h, BodyKind::Response)), doc());
    assert_eq!(*h.resumed.borrow(), vec![Direction::Response]);
    assert_eq!(f.counter("veil.keys.kid_fetch_ok"), 1);
    // The key is published for the other workers and the claim released.
    // (Sealed in shared data under the token's record key.)
    let raw = f.env.shared.get("veil.keys.ondemand.v1").unwrap();
    assert!(
        !raw.windows(want.len()).any(|w| w == want.as_bytes()),
        "sealed"
    );
    let key = veil_core::crypto::shared_record::RecordKey::from_token(TOKEN.as_bytes());
    let rec = String::from_utf8(key.open("veil.keys.ondemand.v1", &raw).unwrap().to_vec()).unwrap();
    assert!(
        rec.contains(&want) && rec.contains("\"claims\":[]"),
        "{rec}"
    );
    // Run twice: nothing is parked any more.
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(h.resumed.borrow().len(), 1);
}

#[test]
fn streams_waiting_for_one_kid_share_one_callout() {
    let (sealed, want) = old_response();
    let f = Fix::ready();
    let (h1, mut s1, _) = get_response(&f, "/api/v1/x", &sealed);
    let (h2, _s2, b2) = get_response(&f, "/api/v1/y", &sealed);
    assert_eq!(b2, Action::Pause);
    let sent = f.sent();
    assert_eq!(sent.len(), 1, "one callout for both");
    let mut ready = s1.on_callout(&h1, sent[0].id, &key_answer(&want));
    ready.sort();
    assert_eq!(ready, vec![StreamId(1), StreamId(2)]);
    f.worker.run_parked(&h1, StreamId(1));
    f.worker.run_parked(&h2, StreamId(2));
    assert_eq!(json_of(&body(&h2, BodyKind::Response)), doc());
    assert_eq!(*h2.resumed.borrow(), vec![Direction::Response]);
}

#[test]
fn an_unknown_kid_is_kept_sealed_and_remembered() {
    let (sealed, _) = old_response();
    let f = Fix::ready();
    let (h, mut s, _) = get_response(&f, "/api/v1/x", &sealed);
    let sent = f.sent();
    let ready = s.on_callout(&h, sent[0].id, &answer(404, b"{}"));
    assert_eq!(ready, vec![StreamId(1)]);
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(body(&h, BodyKind::Response), sealed);
    assert_eq!(f.counter("veil.keys.kid_fetch_unknown"), 1);
    assert_eq!(f.counter("veil.unseal.values_unknown_kid"), 2);
    // The negative cache: the next response with that kid is answered without a callout.
    let (h, _, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Continue);
    assert!(f.sent().is_empty());
    assert_eq!(body(&h, BodyKind::Response), sealed);
}

#[test]
fn the_negative_cache_expires_after_unknown_kid_cache_secs() {
    let (sealed, _) = old_response();
    let f = Fix::ready();
    let (h, mut s, _) = get_response(&f, "/api/v1/x", &sealed);
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &answer(404, b"{}"));
    f.env.advance_ms(31_000);
    let (_, _, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Pause);
    assert_eq!(f.sent().len(), 1, "asked again");
}

#[test]
fn a_failed_fetch_releases_the_stream_with_its_values_sealed() {
    let (sealed, _) = old_response();
    let f = Fix::ready();
    let (h, mut s, _) = get_response(&f, "/api/v1/x", &sealed);
    let sent = f.sent();
    let ready = s.on_callout(&h, sent[0].id, &no_answer());
    assert_eq!(ready, vec![StreamId(1)]);
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(body(&h, BodyKind::Response), sealed);
    assert_eq!(f.counter("veil.keys.kid_fetch_failed"), 1);
    // Failed for a second: no callout; then asked again.
    let (_, _, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Continue);
    f.env.advance_ms(1_001);
    let (_, _, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Pause);
}

#[test]
fn a_key_answer_that_is_not_a_key_counts_as_failed() {
    let (sealed, _) = old_response();
    let f = Fix::ready();
    let (h, mut s, _) = get_response(&f, "/api/v1/x", &sealed);
    let sent = f.sent();
    let ready = s.on_callout(
        &h,
        sent[0].id,
        &answer(200, br#"{"kid":"r9.2001-01","dek":"AA"}"#),
    );
    assert_eq!(ready, vec![StreamId(1)]);
    assert_eq!(f.counter("veil.keys.kid_fetch_failed"), 1);
    assert!(!f.env.log_text().contains("\"dek\""));
}

#[test]
fn a_callout_that_cannot_be_sent_releases_the_stream_at_once() {
    let (sealed, _) = old_response();
    let f = Fix::ready();
    f.env.fail("callout");
    let (h, _, b) = get_response(&f, "/api/v1/x", &sealed);
    assert_eq!(b, Action::Continue);
    assert_eq!(body(&h, BodyKind::Response), sealed);
    assert_eq!(f.counter("veil.keys.kid_fetch_failed"), 1);
}

#[test]
fn a_kid_another_worker_claimed_is_waited_for_and_adopted_by_the_tick() {
    let (sealed, want) = old_response();
    let a = Fix::ready();
    let b = Fix::on(a.env.sibling(), config(json!({})));
    let (ha, mut sa, _) = get_response(&a, "/api/v1/x", &sealed);
    let (hb, _sb, bb) = get_response(&b, "/api/v1/x", &sealed);
    assert_eq!(bb, Action::Pause);
    assert!(b.sent().is_empty(), "worker b found the kid claimed");
    let sent = a.sent();
    sa.on_callout(&ha, sent[0].id, &key_answer(&want));
    let ready = b.worker.tick(&*b.env);
    assert_eq!(ready, vec![StreamId(1)]);
    b.worker.run_parked(&hb, StreamId(1));
    assert_eq!(json_of(&body(&hb, BodyKind::Response)), doc());
    assert_eq!(b.counter("veil.keys.kid_from_shared"), 1);
}

#[test]
fn a_claim_whose_worker_went_quiet_is_taken_over_by_the_tick() {
    let (sealed, want) = old_response();
    let a = Fix::ready();
    let b = Fix::on(a.env.sibling(), config(json!({})));
    let _ = get_response(&a, "/api/v1/x", &sealed);
    a.sent();
    let (hb, _sb, _) = get_response(&b, "/api/v1/x", &sealed);
    // Worker a never answers; its claim (timeout + 1 s) expires.
    b.env.advance_ms(2_001);
    assert!(b.worker.tick(&*b.env).is_empty());
    let sent = b.sent();
    let fetch: Vec<_> = sent.iter().filter(|s| s.line().contains(&want)).collect();
    assert_eq!(fetch.len(), 1, "the tick fetches it as the root");
    let ready = b
        .worker
        .on_root_callout(&*b.env, fetch[0].id, &key_answer(&want));
    assert_eq!(ready, vec![StreamId(1)]);
    b.worker.run_parked(&hb, StreamId(1));
    assert_eq!(json_of(&body(&hb, BodyKind::Response)), doc());
}

#[test]
fn a_destroyed_stream_hands_its_fetch_to_the_tick_for_the_others() {
    let (sealed, want) = old_response();
    let f = Fix::ready();
    let (h1, mut s1, _) = get_response(&f, "/api/v1/x", &sealed);
    let (h2, _s2, _) = get_response(&f, "/api/v1/x", &sealed);
    f.sent();
    s1.on_destroy(&h1);
    let ready = f.worker.tick(&*f.env);
    assert!(ready.is_empty());
    let sent = f.sent();
    assert_eq!(sent.iter().filter(|s| s.line().contains(&want)).count(), 1);
    let ready = f
        .worker
        .on_root_callout(&*f.env, sent[0].id, &key_answer(&want));
    assert_eq!(ready, vec![StreamId(2)]);
    f.worker.run_parked(&h2, StreamId(2));
    assert_eq!(json_of(&body(&h2, BodyKind::Response)), doc());
}

#[test]
fn a_waiter_is_released_after_two_callout_timeouts() {
    let (sealed, _) = old_response();
    let f = Fix::ready();
    let (h, _s, _) = get_response(&f, "/api/v1/x", &sealed);
    f.env.advance_ms(2 * 1000 + 2001);
    let ready = f.worker.tick(&*f.env);
    assert_eq!(ready, vec![StreamId(1)]);
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(body(&h, BodyKind::Response), sealed);
    assert_eq!(*h.resumed.borrow(), vec![Direction::Response]);
}

#[test]
fn an_answer_for_another_owner_is_not_taken() {
    let (sealed, want) = old_response();
    let f = Fix::ready();
    let (h, _s, _) = get_response(&f, "/api/v1/x", &sealed);
    let sent = f.sent();
    // The same id delivered to another stream (native ids count per stream) is not ours.
    let mut other = Stream::new(f.worker.clone(), StreamId(9));
    assert!(other
        .on_callout(&h, sent[0].id, &key_answer(&want))
        .is_empty());
    assert_eq!(f.counter("veil.keys.kid_fetch_ok"), 0);
}

#[test]
fn a_resume_that_fails_is_counted() {
    let (sealed, want) = old_response();
    let f = Fix::ready();
    let (h, mut s, _) = get_response(&f, "/api/v1/x", &sealed);
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &key_answer(&want));
    f.env.fail("resume");
    f.worker.run_parked(&h, StreamId(1));
    assert_eq!(f.counter("veil.hostcall_failed"), 1);
}
