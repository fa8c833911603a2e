//! The relay role on a fake host: endpoints, pairing, encoded requests and responses, the
//! replay window (local and global), and each error code.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use veil_core::relay::v2::{
    AnswerCipher, AnswerKind, Exchange, Part, RequestBinding, RequestCipher, RequestControl,
    ResponseControl,
};
use veil_core::relay::wire::{encode_headers, encoded_path, TAG_LEN};
use veil_core::relay::ClientIdSecret;
use veil_roles::host::{Action, BodyKind, Direction, HeaderKind, StreamHost};
use veil_roles::testing::{answer, no_answer, FakeHost};
use veil_roles::Stream;

const PAIR: &str = "AAAAAAAAAAAAAAAAAAAAAA";
const C2S: [u8; 32] = [3; 32];
const S2C: [u8; 32] = [4; 32];
/// The origin the test client addresses (and the fake Envoy receives unless a test swaps it).
const AUTHORITY: &str = "veil.test";

fn client_id() -> String {
    ClientIdSecret::new(CLIENT_ID_SECRET.as_bytes())
        .unwrap()
        .issue([7; 16])
}

fn relay_fix(mode: &str) -> Fix {
    relay_fix_with(mode, json!({}))
}

/// A relay fixture with `extra` merged into the `relay` section.
fn relay_fix_with(mode: &str, extra: Value) -> Fix {
    let mut r = relay(mode);
    for (k, v) in extra.as_object().unwrap() {
        r["relay"][k] = v.clone();
    }
    let f = Fix::new(config(r));
    f.install_current(1);
    f
}

fn pair_json(f: &Fix, pair: &str, cid: &str) -> Value {
    json!({"pair_id": pair, "client_id": cid, "enc": "enc-1", "confirm": "confirm-1",
        "c2s": URL_SAFE_NO_PAD.encode(C2S), "s2c": URL_SAFE_NO_PAD.encode(S2C),
        "expires_at": f.env.now_ms() / 1000 + 3600, "idle_ttl_secs": 600})
}

/// What the test client keeps of a request to open its answer.
struct Sent {
    method: String,
    seq: u64,
    binding: RequestBinding,
}

impl Sent {
    /// Opens part `part` of an answer (`sealed`) made for this request.
    fn open(&self, h: &FakeHost, part: Part, status: u16, sealed: &[u8]) -> Vec<u8> {
        self.try_open(h, part, status, sealed)
            .expect("the answer opens")
    }

    fn try_open(&self, h: &FakeHost, part: Part, status: u16, sealed: &[u8]) -> Option<Vec<u8>> {
        let ctl = h.get(HeaderKind::ResponseHeaders, "x-veil-relay")?;
        let rc = ResponseControl::parse(&ctl).ok()?;
        assert_eq!((rc.pair_id, rc.seq), (PAIR, self.seq));
        let ex = Exchange {
            pair_id: PAIR,
            seq: self.seq,
            method: &self.method,
            scheme: "http",
            authority: AUTHORITY,
        };
        let c = AnswerCipher::new(&S2C, &rc.response_nonce).unwrap();
        c.open(&ex, part, rc.kind, status, &self.binding, sealed)
            .ok()
    }
}

/// Sets the request headers of an encoded request (and its body part, if any).
fn encode(
    h: &FakeHost,
    cid: &str,
    seq: u64,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Sent {
    encode_with(
        h,
        cid,
        PAIR,
        seq,
        method,
        path,
        &[("accept", "text/plain")],
        body,
    )
}

#[allow(clippy::too_many_arguments)]
fn encode_with(
    h: &FakeHost,
    cid: &str,
    pair: &str,
    seq: u64,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Sent {
    encode_on_wire(h, cid, pair, seq, method, path, headers, body, &[])
}

/// As [`encode_with`], with `wire` headers a hop adds (or swaps: `:authority`).
#[allow(clippy::too_many_arguments)]
fn encode_on_wire(
    h: &FakeHost,
    cid: &str,
    pair: &str,
    seq: u64,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    wire: &[(&str, &str)],
) -> Sent {
    let rc = RequestControl {
        client_id: cid,
        pair_id: pair,
        seq,
        body: body.is_some(),
    };
    let ex = Exchange {
        pair_id: pair,
        seq,
        method,
        scheme: "http",
        authority: AUTHORITY,
    };
    let c = RequestCipher::new(&C2S);
    let p = c
        .seal(&ex, Part::RequestUrl, rc.body, path.as_bytes())
        .unwrap();
    let list: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let eh = c
        .seal(&ex, Part::RequestHeaders, rc.body, &encode_headers(&list))
        .unwrap();
    let binding = RequestBinding::of(&p, &eh).unwrap();
    let wire_path = encoded_path("/veil", &URL_SAFE_NO_PAD.encode(&p));
    let ctl = rc.to_header_value();
    let eh = URL_SAFE_NO_PAD.encode(&eh);
    let authority = wire
        .iter()
        .find(|(n, _)| *n == ":authority")
        .map_or(AUTHORITY, |(_, v)| *v);
    let mut pairs = vec![
        (":method", method),
        (":scheme", "http"),
        (":path", wire_path.as_str()),
        (":authority", authority),
        ("x-veil-relay", ctl.as_str()),
        ("x-veil-relay-eh", eh.as_str()),
        ("content-type", "application/octet-stream"),
    ];
    pairs.extend(wire.iter().filter(|(n, _)| *n != ":authority"));
    let len;
    if let Some(b) = body {
        let sealed = c.seal(&ex, Part::RequestBody, true, b).unwrap();
        len = sealed.len().to_string();
        pairs.push(("content-length", len.as_str()));
        *h.request_body.borrow_mut() = sealed;
    }
    h.set_headers(HeaderKind::RequestHeaders, &pairs);
    Sent {
        method: method.to_string(),
        seq,
        binding,
    }
}

/// The code an authenticated refusal seals (part 6), opened as the client does.
fn sealed_code(h: &FakeHost, sent: &Sent) -> Option<String> {
    let r = h.reply()?;
    let ctl = r.header("x-veil-relay")?;
    let rc = ResponseControl::parse(ctl).ok()?;
    assert_eq!(rc.kind, AnswerKind::Error);
    let ex = Exchange {
        pair_id: PAIR,
        seq: sent.seq,
        method: &sent.method,
        scheme: "http",
        authority: AUTHORITY,
    };
    let eh = URL_SAFE_NO_PAD.decode(r.header("x-veil-relay-eh")?).ok()?;
    let c = AnswerCipher::new(&S2C, &rc.response_nonce).unwrap();
    let code = c
        .open(
            &ex,
            Part::Error,
            AnswerKind::Error,
            r.status,
            &sent.binding,
            &eh,
        )
        .ok()?;
    Some(String::from_utf8(code).unwrap())
}

/// An encoded GET whose pair the worker fetches from the keyservice first; returns the
/// stream, forwarded, and what the client keeps to open the answer.
fn first_request(f: &Fix, seq: u64) -> (FakeHost, Stream, Sent) {
    let (h, mut s) = f.stream();
    let cid = client_id();
    let sent = encode(&h, &cid, seq, "GET", "/app/items?x=1", None);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    let out = f.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].line(), format!("GET /v1/relay/pairs/{PAIR}"));
    let body = serde_json::to_vec(&pair_json(f, PAIR, &cid)).unwrap();
    assert!(s.on_callout(&h, out[0].id, &answer(200, &body)).is_empty());
    assert!(h.reply().is_none(), "{:?}", h.reply());
    assert_eq!(*h.resumed.borrow(), vec![Direction::Request]);
    (h, s, sent)
}

/// An encoded GET on a pair the worker holds: the header action.
fn next_request(f: &Fix, seq: u64) -> (FakeHost, Stream, Action) {
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), seq, "GET", "/app/items", None);
    let a = s.on_request_headers(&h, true);
    (h, s, a)
}

/// A pairing body of `n` entries (the keyservice checks them; the filter passes them on).
fn pairing_body(n: usize) -> Vec<u8> {
    let e: Vec<Value> = (0..n)
        .map(|i| json!({"enc": format!("e{i}"), "pk": format!("p{i}")}))
        .collect();
    serde_json::to_vec(&json!({"key_id": 1, "pairs": e})).unwrap()
}

#[test]
fn discovery_issues_a_client_id_and_keeps_a_valid_one() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/relay", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    let r = h.reply().unwrap();
    assert_eq!(
        (r.status, r.header("cache-control")),
        (200, Some("no-store"))
    );
    let v = r.json();
    let id = v["client_id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["version"].clone(), v["max_pairs"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(r.header("x-veil-client-id"), Some(id.as_str()));
    let (h, mut s) = f.stream();
    request(&h, "HEAD", "/veil/relay", &[("x-veil-client-id", &id)]);
    s.on_request_headers(&h, true);
    let r = h.reply().unwrap();
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-veil-client-id"), Some(id.as_str()));
}

#[test]
fn echo_answers_the_decoded_message_and_the_time() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/echo/hi%20there", &[]);
    s.on_request_headers(&h, true);
    let v = h.reply().unwrap().json();
    assert_eq!(v, json!({"echo": "hi there", "time": f.env.now_ms()}));
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/echo", &[]);
    s.on_request_headers(&h, true);
    assert_eq!(h.reply().unwrap().json()["echo"], Value::Null);
}

/// Review fix: the echo's decoder took the sign in `%+f` (`u8::from_str_radix`), turning
/// three characters into a control byte; the strict decoder shared with core keeps them.
#[test]
fn echo_keeps_a_percent_sign_that_is_not_an_escape() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/echo/a%+fb%2", &[]);
    s.on_request_headers(&h, true);
    assert_eq!(h.reply().unwrap().json()["echo"], "a%+fb%2");
}

#[test]
fn unknown_endpoints_and_bare_encoded_paths_are_refused() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/other", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    let r = h.reply().unwrap();
    assert_eq!(
        (r.status, r.code().unwrap()),
        (404, "relay-route-not-allowed".into())
    );
    assert_eq!(
        r.header("x-veil-relay-error"),
        Some("relay-route-not-allowed")
    );
    let (h, mut s) = f.stream();
    request(&h, "POST", "/veil/x/abc", &[]);
    s.on_request_headers(&h, false);
    assert_eq!(refused(&h), (400, "relay-bad-request".into()));
    assert_eq!(f.counter("veil.relay.refused"), 2);
}

#[test]
fn plaintext_on_a_relayed_route_is_refused_and_other_paths_pass() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/app/items", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    assert_eq!(refused(&h), (403, "relay-required".into()));
    let (h, mut s) = f.stream();
    request(&h, "GET", "/static/logo.png", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Continue);
    assert!(h.reply().is_none());
}

#[test]
fn a_pairing_goes_through_the_keyservice_and_answers_no_key() {
    let f = relay_fix("local");
    let cid = client_id();
    let (h, mut s) = f.stream();
    request(&h, "POST", "/veil/pair", &[("x-veil-client-id", &cid)]);
    assert_eq!(s.on_request_headers(&h, false), Action::Pause);
    let b = pairing_body(1);
    *h.request_body.borrow_mut() = b.clone();
    assert_eq!(s.on_request_body(&h, b.len(), true), Action::Pause);
    let sent = f.sent();
    assert_eq!(sent[0].line(), "POST /v1/relay/v2/pairs");
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    let asked: Value = serde_json::from_slice(sent[0].body.as_ref().unwrap()).unwrap();
    assert_eq!(
        asked,
        json!({"client_id": cid, "key_id": 1, "pairs": [{"enc": "e0", "pk": "p0"}]})
    );
    let body = serde_json::to_vec(&json!({"pairs": [pair_json(&f, PAIR, &cid)]})).unwrap();
    s.on_callout(&h, sent[0].id, &answer(200, &body));
    let r = h.reply().unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["pairs"][0],
        json!({"pair_id": PAIR, "enc": "enc-1", "confirm": "confirm-1",
            "expires_at": f.env.now_ms() / 1000 + 3600})
    );
    assert_eq!(f.counter("veil.relay.pairings"), 1);
    // The pair is in its slot: the first request needs no callout.
    let (h, _, a) = next_request(&f, 1);
    assert_eq!(a, Action::Continue, "{:?}", h.reply());
    assert!(f.sent().is_empty());
}

#[test]
fn a_pairing_with_a_bad_client_id_or_body_is_refused() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "POST", "/veil/pair", &[("x-veil-client-id", "forged")]);
    s.on_request_headers(&h, false);
    assert_eq!(refused(&h), (401, "relay-bad-client-id".into()));
    for (body, why) in [
        (pairing_body(3), "over max_pairs"),
        (pairing_body(0), "no entry"),
        (br#"{"keys":["k1"]}"#.to_vec(), "the v1 body"),
    ] {
        let (h, mut s) = f.stream();
        request(
            &h,
            "POST",
            "/veil/pair",
            &[("x-veil-client-id", &client_id())],
        );
        s.on_request_headers(&h, false);
        *h.request_body.borrow_mut() = body.clone();
        s.on_request_body(&h, body.len(), true);
        assert_eq!(refused(&h), (400, "relay-bad-request".into()), "{why}");
    }
    assert!(f.sent().is_empty());
}

#[test]
fn a_pairing_the_keyservice_refuses_or_fails_is_answered_with_its_code() {
    let f = relay_fix("local");
    let unknown_key = br#"{"code":"relay-key-unknown","status":400}"#;
    let no_confirm = {
        let mut p = pair_json(&f, PAIR, "c");
        p.as_object_mut().unwrap().remove("confirm");
        serde_json::to_vec(&json!({"pairs": [p]})).unwrap()
    };
    // A 200 with two pairs for one entry is another number of pairs.
    let two =
        serde_json::to_vec(&json!({"pairs": [pair_json(&f, PAIR, "c"), pair_json(&f, PAIR, "c")]}))
            .unwrap();
    for (a, want) in [
        (answer(400, unknown_key), (400, "relay-key-unknown")),
        (answer(400, b"{}"), (400, "relay-bad-request")),
        (answer(500, b"{}"), (503, "relay-unavailable")),
        (no_answer(), (503, "relay-unavailable")),
        (answer(200, &two), (503, "relay-unavailable")),
        (answer(200, &no_confirm), (503, "relay-unavailable")),
    ] {
        let (h, mut s) = f.stream();
        request(
            &h,
            "POST",
            "/veil/pair",
            &[("x-veil-client-id", &client_id())],
        );
        s.on_request_headers(&h, false);
        let b = pairing_body(1);
        *h.request_body.borrow_mut() = b.clone();
        s.on_request_body(&h, b.len(), true);
        let sent = f.sent();
        s.on_callout(&h, sent[0].id, &a);
        assert_eq!(refused(&h), (want.0, want.1.to_string()), "{want:?}");
    }
}

#[test]
fn the_key_configurations_are_served_from_the_keyservice() {
    let f = relay_fix("local");
    let config = veil_core::relay::v2::ServerKey::from_seed(1, [9; 32])
        .unwrap()
        .config()
        .clone();
    let list = veil_core::relay::v2::KeyConfig::encode_list(&[config]);
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/keys", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    let sent = f.sent();
    assert_eq!(sent[0].line(), "GET /v1/relay/keys");
    s.on_callout(&h, sent[0].id, &answer(200, &list));
    let r = h.reply().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/ohttp-keys"));
    assert_eq!(r.body, list);
    // A keyservice answer that is no key list is not passed on.
    let (h, mut s) = f.stream();
    request(&h, "GET", "/veil/keys", &[]);
    s.on_request_headers(&h, true);
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &answer(200, b"{}"));
    assert_eq!(refused(&h), (503, "relay-unavailable".into()));
}

#[test]
fn an_encoded_request_is_decoded_after_its_pair_is_fetched() {
    let f = relay_fix("local");
    let (h, _, _) = first_request(&f, 1);
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, ":path").as_deref(),
        Some("/app/items?x=1")
    );
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "accept").as_deref(),
        Some("text/plain")
    );
    for gone in ["x-veil-relay", "x-veil-relay-eh", "content-type"] {
        assert_eq!(h.get(HeaderKind::RequestHeaders, gone), None, "{gone}");
    }
    assert_eq!(f.counter("veil.relay.requests"), 1);
    assert_eq!(f.counter("veil.relay.pair_fetches"), 1);
}

#[test]
fn the_next_request_on_a_held_pair_continues_at_its_headers() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, _, a) = next_request(&f, 2);
    assert_eq!(a, Action::Continue);
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, ":path").as_deref(),
        Some("/app/items")
    );
    assert!(f.sent().is_empty());
}

#[test]
fn a_replayed_seq_is_refused() {
    let f = relay_fix("local");
    first_request(&f, 5);
    let (h, _, a) = next_request(&f, 5);
    assert_eq!(a, Action::Pause);
    assert_eq!(refused(&h), (409, "relay-replay".into()));
    assert_eq!(f.counter("veil.relay.replays_refused"), 1);
}

#[test]
fn the_window_moves_with_the_highest_seq() {
    let f = relay_fix("local");
    first_request(&f, 20);
    // Window 8: 13..=19 are still accepted once, 12 is behind it.
    assert_eq!(next_request(&f, 13).2, Action::Continue);
    let (h, _, a) = next_request(&f, 12);
    assert_eq!(a, Action::Pause);
    assert_eq!(refused(&h).1, "relay-replay");
    assert_eq!(next_request(&f, 30).2, Action::Continue);
    assert_eq!(
        next_request(&f, 22).2,
        Action::Pause,
        "now behind the window"
    );
}

#[test]
fn a_seq_above_2_pow_53_minus_1_is_a_bad_request() {
    let f = relay_fix("local");
    let (h, _, a) = next_request(&f, 1 << 53);
    assert_eq!(a, Action::Pause);
    assert_eq!(refused(&h), (400, "relay-bad-request".into()));
    assert!(f.sent().is_empty());
}

#[test]
fn another_clients_pair_is_unknown_to_it() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let other = ClientIdSecret::new(CLIENT_ID_SECRET.as_bytes())
        .unwrap()
        .issue([9; 16]);
    let (h, mut s) = f.stream();
    encode(&h, &other, 2, "GET", "/app/items", None);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    assert_eq!(refused(&h), (401, "relay-pair-unknown".into()));
}

#[test]
fn a_forged_client_id_is_refused_before_any_lookup() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    encode(&h, "forged-client", 1, "GET", "/app/items", None);
    s.on_request_headers(&h, true);
    assert_eq!(refused(&h), (401, "relay-bad-client-id".into()));
    assert!(f.sent().is_empty());
}

#[test]
fn a_pair_the_keyservice_does_not_know_is_remembered() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), 1, "GET", "/app/items", None);
    s.on_request_headers(&h, true);
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &answer(404, b""));
    assert_eq!(refused(&h), (401, "relay-pair-unknown".into()));
    let (h, _, a) = next_request(&f, 2);
    assert_eq!(a, Action::Pause);
    assert_eq!(refused(&h).1, "relay-pair-unknown");
    assert!(f.sent().is_empty(), "no second callout for an unknown pair");
}

#[test]
fn a_pair_fetch_that_fails_is_unavailable() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), 1, "GET", "/app/items", None);
    s.on_request_headers(&h, true);
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &no_answer());
    assert_eq!(refused(&h), (503, "relay-unavailable".into()));
}

#[test]
fn an_expired_pair_is_unknown() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    let cid = client_id();
    encode(&h, &cid, 1, "GET", "/app/items", None);
    s.on_request_headers(&h, true);
    let sent = f.sent();
    let mut p = pair_json(&f, PAIR, &cid);
    p["expires_at"] = json!(f.env.now_ms() / 1000);
    s.on_callout(
        &h,
        sent[0].id,
        &answer(200, &serde_json::to_vec(&p).unwrap()),
    );
    assert_eq!(refused(&h), (401, "relay-pair-unknown".into()));
}

#[test]
fn tampered_parts_do_not_open_and_use_up_no_seq() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), 2, "GET", "/app/items", None);
    let eh = h
        .get(HeaderKind::RequestHeaders, "x-veil-relay-eh")
        .unwrap();
    let mut bad = eh.into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    let pairs = h.pairs(HeaderKind::RequestHeaders);
    let mut refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let bad = String::from_utf8(bad).unwrap();
    for p in refs.iter_mut() {
        if p.0 == "x-veil-relay-eh" {
            p.1 = &bad;
        }
    }
    h.set_headers(HeaderKind::RequestHeaders, &refs);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    assert_eq!(refused(&h), (400, "relay-decode-failed".into()));
    assert_eq!(
        next_request(&f, 2).2,
        Action::Continue,
        "seq 2 is still unused"
    );
}

#[test]
fn a_decoded_path_outside_the_routes_is_refused() {
    let f = relay_fix("local");
    first_request(&f, 1);
    for path in ["/admin", "/app/../admin", "/collector/v1/events"] {
        let (h, mut s) = f.stream();
        encode(&h, &client_id(), 2, "GET", path, None);
        s.on_request_headers(&h, true);
        assert_eq!(
            refused(&h),
            (404, "relay-route-not-allowed".into()),
            "{path}"
        );
    }
}

#[test]
fn a_body_part_is_opened_and_the_request_held_until_then() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode(
        &h,
        &client_id(),
        2,
        "POST",
        "/app/items",
        Some(b"{\"a\":1}"),
    );
    assert_eq!(
        s.on_request_headers(&h, false),
        Action::Pause,
        "held until the body opened"
    );
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "content-length")
            .as_deref(),
        Some("7")
    );
    let n = h.request_body.borrow().len();
    assert_eq!(n, 7 + TAG_LEN);
    assert_eq!(s.on_request_body(&h, n, false), Action::Pause);
    assert_eq!(s.on_request_body(&h, n, true), Action::Continue);
    assert_eq!(body(&h, BodyKind::Request), b"{\"a\":1}");
}

#[test]
fn a_body_part_that_does_not_open_is_refused() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode(
        &h,
        &client_id(),
        2,
        "POST",
        "/app/items",
        Some(b"{\"a\":1}"),
    );
    s.on_request_headers(&h, false);
    h.request_body.borrow_mut()[0] ^= 1;
    let n = h.request_body.borrow().len();
    assert_eq!(s.on_request_body(&h, n, true), Action::Pause);
    assert_eq!(refused(&h), (400, "relay-decode-failed".into()));
}

#[test]
fn a_body_without_a_body_part_is_refused() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s, a) = next_request(&f, 2);
    assert_eq!(a, Action::Continue);
    assert_eq!(s.on_request_body(&h, 3, true), Action::Pause);
    assert_eq!(refused(&h), (400, "relay-bad-request".into()));
}

#[test]
fn the_response_is_sealed_for_the_client() {
    let f = relay_fix("local");
    let (h, mut s, sent) = first_request(&f, 1);
    h.set_headers(
        HeaderKind::ResponseHeaders,
        &[
            (":status", "201"),
            ("content-type", "application/json"),
            ("content-length", "9"),
            ("x-app", "secret"),
            ("date", "today"),
        ],
    );
    assert_eq!(s.on_response_headers(&h, false), Action::Continue);
    let ctl = h.get(HeaderKind::ResponseHeaders, "x-veil-relay").unwrap();
    let rc = ResponseControl::parse(&ctl).unwrap();
    assert_eq!(
        (rc.pair_id, rc.seq, rc.kind),
        (PAIR, 1, AnswerKind::HeadersBody)
    );
    assert_eq!(h.get(HeaderKind::ResponseHeaders, "x-app"), None);
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "date").as_deref(),
        Some("today")
    );
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-type")
            .as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        h.get(HeaderKind::ResponseHeaders, "content-length")
            .as_deref(),
        Some("25")
    );
    let eh = h
        .get(HeaderKind::ResponseHeaders, "x-veil-relay-eh")
        .unwrap();
    let eh = URL_SAFE_NO_PAD.decode(eh).unwrap();
    let headers = sent.open(&h, Part::ResponseHeaders, 201, &eh);
    assert!(String::from_utf8_lossy(&headers).contains("secret"));
    // Under another status (a hop's change) it does not open.
    assert!(sent.try_open(&h, Part::ResponseHeaders, 200, &eh).is_none());
    *h.response_body.borrow_mut() = b"{\"ok\":1}\n".to_vec();
    assert_eq!(s.on_response_body(&h, 9, true), Action::Continue);
    let sealed = body(&h, BodyKind::Response);
    assert_eq!(
        sent.open(&h, Part::ResponseBody, 201, &sealed),
        b"{\"ok\":1}\n"
    );
}

/// Issue #17: v1 sealed answers under `s2c` with the nonce `part || seq`, so the same
/// request accepted twice (another Envoy, a restart: here a fresh worker with its own
/// shared data, `local` mode) was answered under one key and nonce. Each answer now draws
/// its own response nonce: same request, same upstream answer, different ciphertexts, each
/// opening for the client.
#[test]
fn a_request_accepted_twice_is_answered_under_two_keys() {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let f = relay_fix("local");
        let (h, mut s, sent) = first_request(&f, 1);
        h.set_headers(
            HeaderKind::ResponseHeaders,
            &[(":status", "200"), ("content-type", "application/json")],
        );
        s.on_response_headers(&h, false);
        *h.response_body.borrow_mut() = b"{\"balance\":100}".to_vec();
        s.on_response_body(&h, 15, true);
        let eh = h
            .get(HeaderKind::ResponseHeaders, "x-veil-relay-eh")
            .unwrap();
        let sealed = body(&h, BodyKind::Response);
        assert_eq!(
            sent.open(&h, Part::ResponseBody, 200, &sealed),
            b"{\"balance\":100}"
        );
        seen.push((eh, sealed));
    }
    assert_ne!(seen[0].0, seen[1].0, "headers part");
    assert_ne!(seen[0].1, seen[1].1, "body part");
}

/// Issue #17: `:authority` and scheme are in the request parts' AD. A request a hop sends
/// to another virtual host does not open there; the refusal is authenticated (it opens for
/// the client, whose binding is the request's).
#[test]
fn an_authority_swap_does_not_open_and_the_refusal_is_authenticated() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    let sent = encode_on_wire(
        &h,
        &client_id(),
        PAIR,
        2,
        "GET",
        "/app/items",
        &[],
        None,
        &[(":authority", "other.test")],
    );
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    assert_eq!(refused(&h), (400, "relay-decode-failed".into()));
    assert_eq!(
        sealed_code(&h, &sent).as_deref(),
        Some("relay-decode-failed")
    );
    // A scheme swap too.
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), 3, "GET", "/app/items", None);
    h.replace_header(HeaderKind::RequestHeaders, ":scheme", "https")
        .unwrap();
    s.on_request_headers(&h, true);
    assert_eq!(refused(&h), (400, "relay-decode-failed".into()));
    // With `public_origin` the filter binds the configured origin, not the received one.
    let f = relay_fix_with("local", json!({"public_origin": "http://veil.test"}));
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode_on_wire(
        &h,
        &client_id(),
        PAIR,
        2,
        "GET",
        "/app/items",
        &[],
        None,
        &[(":authority", "internal.lb:8080")],
    );
    assert_eq!(
        s.on_request_headers(&h, true),
        Action::Continue,
        "{:?}",
        h.reply()
    );
}

/// Issue #17: wire headers a hop adds reached the upstream. Only the allow-list does now;
/// `forward_wire_headers` adds names; a decoded header wins over a wire one.
#[test]
fn only_allow_listed_wire_headers_reach_the_upstream() {
    let hop = [
        ("cookie", "hop=1"),
        ("authorization", "Bearer hop"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.test"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6"),
        ("accept-encoding", "gzip"),
        ("x-custom-hop", "1"),
        ("user-agent", "browser/1"),
        ("sec-fetch-mode", "cors"),
        ("traceparent", "00-abc-def-01"),
    ];
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode_on_wire(
        &h,
        &client_id(),
        PAIR,
        2,
        "GET",
        "/app/items",
        &[("accept", "text/plain"), ("authorization", "Bearer app")],
        None,
        &hop,
    );
    assert_eq!(s.on_request_headers(&h, true), Action::Continue);
    let got = |n: &str| h.get(HeaderKind::RequestHeaders, n);
    for gone in [
        "cookie",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "accept-encoding",
        "x-custom-hop",
        "x-veil-relay",
        "content-type",
    ] {
        assert_eq!(got(gone), None, "{gone}");
    }
    assert_eq!(
        got("authorization").as_deref(),
        Some("Bearer app"),
        "sealed wins"
    );
    assert_eq!(got("accept").as_deref(), Some("text/plain"));
    assert_eq!(got("user-agent").as_deref(), Some("browser/1"));
    assert_eq!(got("sec-fetch-mode").as_deref(), Some("cors"));
    assert_eq!(got("traceparent").as_deref(), Some("00-abc-def-01"));
    assert_eq!(got(":authority").as_deref(), Some(AUTHORITY));
    assert_eq!(
        got("x-forwarded-proto").as_deref(),
        Some("http"),
        "the bound scheme, not the hop's"
    );
    // Without a sealed authorization, the hop's is dropped too.
    let (h, mut s) = f.stream();
    encode_on_wire(
        &h,
        &client_id(),
        PAIR,
        3,
        "GET",
        "/app/items",
        &[],
        None,
        &hop,
    );
    s.on_request_headers(&h, true);
    assert_eq!(h.get(HeaderKind::RequestHeaders, "authorization"), None);
    // `forward_wire_headers` names more.
    let f = relay_fix_with(
        "local",
        json!({"forward_wire_headers": ["Cookie", "x-custom-hop"]}),
    );
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode_on_wire(
        &h,
        &client_id(),
        PAIR,
        2,
        "GET",
        "/app/items",
        &[],
        None,
        &hop,
    );
    s.on_request_headers(&h, true);
    let got = |n: &str| h.get(HeaderKind::RequestHeaders, n);
    assert_eq!(got("cookie").as_deref(), Some("hop=1"));
    assert_eq!(got("x-custom-hop").as_deref(), Some("1"));
    assert_eq!(got("x-forwarded-for"), None);
}

/// Issue #17: a sealed `cookie` was accepted without a decision. It is refused unless
/// `allow_sealed_cookie` is on, with its own code (authenticated, not retried).
#[test]
fn a_sealed_cookie_is_refused_unless_allowed() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    let sent = encode_with(
        &h,
        &client_id(),
        PAIR,
        2,
        "GET",
        "/app/items",
        &[("cookie", "session=1")],
        None,
    );
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    assert_eq!(refused(&h), (400, "relay-header-not-allowed".into()));
    assert!(h.reply().unwrap().json()["detail"]
        .as_str()
        .unwrap()
        .contains("allow_sealed_cookie"));
    assert_eq!(
        sealed_code(&h, &sent).as_deref(),
        Some("relay-header-not-allowed")
    );
    assert_eq!(next_request(&f, 2).2, Action::Continue, "seq 2 is unused");
    let f = relay_fix_with("local", json!({"allow_sealed_cookie": true}));
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    encode_with(
        &h,
        &client_id(),
        PAIR,
        2,
        "GET",
        "/app/items",
        &[("cookie", "session=1")],
        None,
    );
    assert_eq!(s.on_request_headers(&h, true), Action::Continue);
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, "cookie").as_deref(),
        Some("session=1")
    );
}

/// Issue #17: error answers on a known pair are authenticated (flags `e`, the code sealed
/// under a fresh answer key and the request's binding); before the pair is known they
/// cannot be, and carry no control header.
#[test]
fn refusals_on_a_known_pair_are_authenticated() {
    let f = relay_fix("local");
    first_request(&f, 5);
    let (h, mut s) = f.stream();
    let sent = encode(&h, &client_id(), 5, "GET", "/app/items", None);
    s.on_request_headers(&h, true);
    assert_eq!(refused(&h), (409, "relay-replay".into()));
    assert_eq!(sealed_code(&h, &sent).as_deref(), Some("relay-replay"));
    let (h, mut s) = f.stream();
    let sent = encode(&h, &client_id(), 6, "GET", "/admin", None);
    s.on_request_headers(&h, true);
    assert_eq!(
        sealed_code(&h, &sent).as_deref(),
        Some("relay-route-not-allowed")
    );
    // Another request's binding does not open it: the answer is about exactly this one.
    let (h2, _) = f.stream();
    let other = encode(&h2, &client_id(), 6, "GET", "/app/other", None);
    assert_eq!(sealed_code(&h, &other), None);
    // Unknown pair, bad client id: no control header.
    let (h, mut s) = f.stream();
    encode_with(
        &h,
        &client_id(),
        "BBBBBBBBBBBBBBBBBBBBBB",
        1,
        "GET",
        "/app/x",
        &[],
        None,
    );
    s.on_request_headers(&h, true);
    let sent = f.sent();
    s.on_callout(&h, sent[0].id, &answer(404, b""));
    assert_eq!(refused(&h).1, "relay-pair-unknown");
    assert_eq!(h.reply().unwrap().header("x-veil-relay"), None);
}

#[test]
fn response_trailers_are_dropped_and_an_oversized_response_refused() {
    let f = relay_fix("local");
    let (h, mut s, _) = first_request(&f, 1);
    h.set_headers(HeaderKind::ResponseHeaders, &[(":status", "200")]);
    s.on_response_headers(&h, false);
    h.set_headers(HeaderKind::ResponseTrailers, &[("grpc-status", "0")]);
    *h.response_body.borrow_mut() = b"x".to_vec();
    assert_eq!(s.on_response_body(&h, 1, false), Action::Pause);
    assert_eq!(s.on_response_trailers(&h), Action::Continue);
    assert!(h.pairs(HeaderKind::ResponseTrailers).is_empty());
    let (h, mut s, _) = first_request(&relay_fix("local"), 1);
    h.set_headers(HeaderKind::ResponseHeaders, &[(":status", "200")]);
    s.on_response_headers(&h, false);
    assert_eq!(s.on_response_body(&h, 4097, false), Action::Pause);
    assert_eq!(refused(&h), (413, "relay-too-large".into()));
}

fn global_request(f: &Fix, seq: u64) -> (FakeHost, Stream, veil_roles::testing::Sent) {
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), seq, "GET", "/app/items", None);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    let mut sent = f.sent();
    if sent[0].line() == format!("GET /v1/relay/pairs/{PAIR}") {
        let body = serde_json::to_vec(&pair_json(f, PAIR, &client_id())).unwrap();
        s.on_callout(&h, sent[0].id, &answer(200, &body));
        sent = f.sent();
    }
    assert_eq!(sent[0].line(), format!("POST /v1/relay/pairs/{PAIR}/seq"));
    assert_eq!(
        sent[0].body.as_deref(),
        Some(format!("{{\"seq\":{seq}}}").as_bytes())
    );
    let one = sent.into_iter().next().unwrap();
    (h, s, one)
}

#[test]
fn global_mode_asks_the_keyservice_for_every_seq() {
    let f = relay_fix("global");
    let (h, mut s, check) = global_request(&f, 1);
    s.on_callout(&h, check.id, &answer(200, b"{}"));
    assert_eq!(*h.resumed.borrow(), vec![Direction::Request]);
    assert_eq!(
        h.get(HeaderKind::RequestHeaders, ":path").as_deref(),
        Some("/app/items")
    );
    // The pair is held now: the next request asks only for its seq.
    let (h, mut s, check) = global_request(&f, 1);
    s.on_callout(&h, check.id, &answer(409, b""));
    assert_eq!(refused(&h), (409, "relay-replay".into()));
}

#[test]
fn global_mode_forgets_a_pair_the_keyservice_no_longer_knows() {
    let f = relay_fix("global");
    let (h, mut s, check) = global_request(&f, 1);
    s.on_callout(&h, check.id, &answer(404, b""));
    assert_eq!(refused(&h), (401, "relay-pair-unknown".into()));
    let (h, mut s) = f.stream();
    encode(&h, &client_id(), 2, "GET", "/app/items", None);
    s.on_request_headers(&h, true);
    assert_eq!(refused(&h).1, "relay-pair-unknown");
    assert!(f.sent().is_empty());
}

#[test]
fn global_mode_without_a_keyservice_is_unavailable() {
    let f = relay_fix("global");
    let (h, mut s, check) = global_request(&f, 1);
    s.on_callout(&h, check.id, &no_answer());
    assert_eq!(refused(&h), (503, "relay-unavailable".into()));
}

#[test]
fn a_callout_that_cannot_be_sent_is_unavailable() {
    let f = relay_fix("local");
    f.env.fail("callout");
    let (h, _, a) = next_request(&f, 1);
    assert_eq!(a, Action::Pause);
    assert_eq!(refused(&h), (503, "relay-unavailable".into()));
}

#[test]
fn pairs_share_a_slot_table_across_workers() {
    let a = relay_fix("local");
    first_request(&a, 1);
    let b = Fix::on(a.env.sibling(), config(relay("local")));
    let (h, _, act) = next_request(&b, 2);
    assert_eq!(act, Action::Continue, "{:?}", h.reply());
    assert!(b.sent().is_empty(), "worker b reads the pair from its slot");
    // And the window is shared: a replay on worker a of b's seq is refused.
    assert_eq!(next_request(&a, 2).2, Action::Pause);
}

#[test]
fn the_browser_module_is_served_with_its_integrity() {
    let f = relay_fix("local");
    let (h, mut s) = f.stream();
    request(&h, "GET", "/public/veil-relay.js", &[]);
    assert_eq!(s.on_request_headers(&h, true), Action::Pause);
    let r = h.reply().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("x-veil-integrity").unwrap().starts_with("sha384-"));
    let etag = r.header("etag").unwrap().to_string();
    let (h, mut s) = f.stream();
    request(
        &h,
        "GET",
        "/public/veil-relay.js?v=1",
        &[("if-none-match", &etag)],
    );
    s.on_request_headers(&h, true);
    assert_eq!(h.reply().unwrap().status, 304);
    let (h, mut s) = f.stream();
    request(&h, "POST", "/public/veil-relay.js", &[]);
    s.on_request_headers(&h, false);
    assert_eq!(h.reply().unwrap().status, 405);
}

/// A body part announced over the limit is refused at the headers, authenticated, and uses
/// up no `seq`.
#[test]
fn an_announced_oversized_body_is_refused_authenticated() {
    let f = relay_fix("local");
    first_request(&f, 1);
    let (h, mut s) = f.stream();
    let sent = encode(
        &h,
        &client_id(),
        2,
        "POST",
        "/app/items",
        Some(&[7u8; 4097]),
    );
    assert_eq!(s.on_request_headers(&h, false), Action::Pause);
    assert_eq!(refused(&h), (413, "relay-too-large".into()));
    assert_eq!(sealed_code(&h, &sent).as_deref(), Some("relay-too-large"));
    assert_eq!(next_request(&f, 2).2, Action::Continue, "seq 2 is unused");
}

/// One relayed exchange as `make bench`'s relay-local runs it (a 1 KB JSON body POSTed, a
/// 1 KB JSON answer), on a pair the worker holds: the request is encoded beforehand, so only
/// the filter's callbacks run here.
#[inline(never)]
fn relay_drive_one(h: &FakeHost, s: &mut Stream, n: usize, answer: &[u8]) {
    assert_eq!(s.on_request_headers(h, false), Action::Pause);
    assert_eq!(s.on_request_body(h, n, true), Action::Continue);
    h.set_headers(
        HeaderKind::ResponseHeaders,
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "1024"),
            ("date", "Mon, 07 Dec 2026 02:00:00 GMT"),
            ("x-envoy-upstream-service-time", "1"),
        ],
    );
    assert_eq!(s.on_response_headers(h, false), Action::Continue);
    *h.response_body.borrow_mut() = answer.to_vec();
    assert_eq!(s.on_response_body(h, answer.len(), true), Action::Continue);
}

/// Not a check: the driver for instruction counts of the relay path (bench/RESULTS.md), e.g.
/// `VEIL_RELAY_DRIVE=400 valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect='*relay_drive_one*' <the relay test binary, --release> --ignored --exact
/// relay_drive_for_instruction_counts`, divided by the count.
#[test]
#[ignore]
fn relay_drive_for_instruction_counts() {
    let runs: u64 = std::env::var("VEIL_RELAY_DRIVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let f = relay_fix("local");
    first_request(&f, 1);
    let cid = client_id();
    let body = vec![b'a'; 1024];
    let answer = vec![b'b'; 1024];
    let streams: Vec<(FakeHost, Stream, usize)> = (0..runs)
        .map(|i| {
            let (h, s) = f.stream();
            encode_on_wire(
                &h,
                &cid,
                PAIR,
                i + 2,
                "POST",
                "/app/reflect",
                &[("content-type", "application/json"), ("accept", "*/*")],
                Some(&body),
                &[
                    ("user-agent", "veil-relay/0.1"),
                    ("x-forwarded-proto", "http"),
                    ("x-request-id", "2f1c7a9e-5b7e-4f7e-9d0a-1c2b3d4e5f60"),
                    ("x-envoy-expected-rq-timeout-ms", "15000"),
                ],
            );
            let n = h.request_body.borrow().len();
            (h, s, n)
        })
        .collect();
    for (h, mut s, n) in streams {
        relay_drive_one(&h, &mut s, n, &answer);
        assert_eq!(body_of(&h), answer.len() + TAG_LEN);
    }
}

fn body_of(h: &FakeHost) -> usize {
    h.response_body.borrow().len()
}
