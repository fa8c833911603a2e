//! Signed requests (`Authorization: Veil-HMAC-SHA256 …`, what the filter sends) against the
//! real `veil-keyservice` binary: accepted once, refused when replayed, moved to another
//! path or body, or stamped too far from the clock; `Bearer` still works for direct clients.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use veil_core::keyservice_auth::sign;
use veil_core::relay::kem::ClientKem;
use veil_core::relay::ClientIdSecret;

/// One HTTP/1.1 request over loopback with any Authorization value, `Connection: close`.
fn call(port: u16, method: &str, path: &str, auth: &str, body: &[u8]) -> Response {
    http_request(port, method, path, Some(auth), Some(body))
}

fn now() -> u64 {
    veil_keyservice::keyring::now_unix() as u64
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).unwrap();
    n
}

fn signed(method: &str, path: &str, body: &[u8], t: u64) -> String {
    sign(TOKEN.as_bytes(), method, path, body, t, nonce())
}

fn assert_unauthorized(r: &Response, why: &str) {
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/problem+json"),
        "{why}"
    );
    assert_eq!(
        r.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer realm=\"veil-keyservice\""),
        "{why}"
    );
    assert!(
        r.json()["type"].as_str().unwrap().ends_with("unauthorized"),
        "{why}: {}",
        r.body
    );
}

#[test]
fn signed_requests_are_accepted_once_and_bound_to_their_request() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let port = server.port;
    let current = "/v1/data-keys/current";

    // A signed request succeeds.
    let auth = signed("GET", current, b"", now());
    let r = call(port, "GET", current, &auth, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 2);

    // The same header again: a replay.
    assert_unauthorized(&call(port, "GET", current, &auth, b""), "replayed");
    assert_eq!(metric(&server, "veil_keyservice_auth_replays_total"), 1);

    // A MAC made for another path (or method) does not open this one.
    let other = signed("GET", "/v1/data-keys/r1.2021-01", b"", now());
    assert_unauthorized(&call(port, "GET", current, &other, b""), "other path");
    let other = signed("POST", current, b"", now());
    assert_unauthorized(&call(port, "GET", current, &other, b""), "other method");

    // Stamped too far from the clock, either way.
    for t in [now() - 60, now() + 60] {
        let skewed = signed("GET", current, b"", t);
        assert_unauthorized(&call(port, "GET", current, &skewed, b""), "skewed");
    }
    assert_eq!(
        metric(&server, "veil_keyservice_auth_skew_failures_total"),
        2
    );

    // Malformed and token-less values.
    let garbled = auth.replace(",s=", ",s=x");
    assert_unauthorized(&call(port, "GET", current, &garbled, b""), "malformed");
    assert_unauthorized(
        &call(port, "GET", current, "Veil-HMAC-SHA256 t=1", b""),
        "truncated",
    );
    let wrong_token = sign(
        b"not-the-token-not-the-token-not-the-token",
        "GET",
        current,
        b"",
        now(),
        nonce(),
    );
    assert_unauthorized(
        &call(port, "GET", current, &wrong_token, b""),
        "wrong token",
    );

    // Bearer still works (direct clients).
    let r = call(port, "GET", current, &format!("Bearer {TOKEN}"), b"");
    assert_eq!(r.status, 200, "{}", r.body);

    // A signed POST: the body is covered by the MAC and still reaches the handler.
    let cid = ClientIdSecret::new(b"signed-auth-test-client-id-secret-0123")
        .unwrap()
        .issue([7; 16]);
    // A pairing entry (relay v2): `enc` to the relay key `k1` that `keyring init` made (any
    // X-Wing ciphertext decapsulates), `pk` the client's ephemeral key.
    let kem = ClientKem::generate_os().unwrap();
    let (enc, _) = veil_core::relay::kem::encapsulate_os(&kem.public_key()).unwrap();
    let body = serde_json::json!({"client_id": cid, "key_id": 1, "pairs": [{
        "enc": URL_SAFE_NO_PAD.encode(&enc), "pk": URL_SAFE_NO_PAD.encode(kem.public_key())}]})
    .to_string();
    let pairs = "/v1/relay/v2/pairs";
    let auth = signed("POST", pairs, body.as_bytes(), now());
    let tampered = body.replace(&cid, &cid.to_uppercase());
    assert_unauthorized(
        &call(port, "POST", pairs, &auth, tampered.as_bytes()),
        "other body",
    );
    let r = call(port, "POST", pairs, &auth, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["pairs"].as_array().unwrap().len(), 1);
    // …and a query string is part of what is signed.
    let q = signed("GET", current, b"", now());
    assert_unauthorized(
        &call(port, "GET", "/v1/data-keys/current?x=1", &q, b""),
        "query",
    );

    // replay + path + method + 2 skewed + 2 malformed + wrong token + body + query.
    assert_eq!(metric(&server, "veil_keyservice_auth_failures_total"), 10);
    assert_eq!(
        metric(&server, "veil_keyservice_auth_replay_cache_full_total"),
        0
    );
    let logs = server.stop().all();
    assert!(!logs.contains(TOKEN), "the token is never logged");
}
