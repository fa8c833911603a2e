//! The relay through real Envoy at the wire level (the test-side client of
//! `veil_e2e::relay`, which lets a test pick every `seq`, replay and tamper): endpoints,
//! exact requests and responses, replay windows, refusals with their stable codes, and a
//! recording hop in front of Envoy that never sees plaintext.

use serde_json::{json, Value};
use veil_e2e::hop::{contains, RecordingHop};
use veil_e2e::relay::{self, RawPair};
use veil_e2e::{http, Stack, StackOptions};

fn assert_relay_error(r: &http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{code}: {}", r.text());
    assert_eq!(r.header("x-veil-relay-error"), Some(code), "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{code}"
    );
    assert_eq!(r.json()["code"], code);
    // On a known pair the refusal is also sealed for the client (flags `e`); the test that
    // knows the request opens it (`assert_authenticated`).
    if let Some(ctl) = r.header("x-veil-relay") {
        let rc = veil_core::relay::v2::ResponseControl::parse(ctl).unwrap();
        assert_eq!(rc.kind, veil_core::relay::v2::AnswerKind::Error, "{code}");
    }
}

/// The refusal of `e` opens for the client with `e`'s binding and names `code`.
fn assert_authenticated(p: &RawPair, e: &relay::Encoded, r: &http::Response, code: &str) {
    assert_eq!(
        p.decode_for(e, r).unwrap_err(),
        format!("authenticated {code}")
    );
}

fn stack_with(relay: Value) -> Stack {
    let mut config = veil_e2e::demo_filter_config();
    for (k, v) in relay.as_object().cloned().unwrap_or_default() {
        config["relay"][k] = v;
    }
    Stack::start_with(StackOptions {
        filter_config: config,
        ..Default::default()
    })
}

fn paired(stack: &Stack) -> (String, RawPair) {
    let id = relay::discover(stack.listen);
    let mut pairs = relay::pair(stack.listen, &id, 1);
    (id, pairs.remove(0))
}

#[test]
fn discovery_echo_and_plaintext_refusals() {
    let stack = Stack::start();
    // GET P/relay issues an id, re-validates it, replaces a forged one.
    let r = http::get(stack.listen, "/veil/relay").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    let id = v["client_id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["version"].clone(), v["max_pairs"].clone()),
        (json!(2), json!(5))
    );
    assert_eq!(r.header("x-veil-client-id"), Some(id.as_str()));
    assert_eq!(id.len(), 101);
    let again = http::request(
        stack.listen,
        "GET",
        "/veil/relay",
        &[("x-veil-client-id", &id)],
        b"",
    )
    .unwrap();
    assert_eq!(again.json()["client_id"], id.as_str());
    let mut forged = id.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let fresh = http::request(
        stack.listen,
        "GET",
        "/veil/relay",
        &[("x-veil-client-id", &forged)],
        b"",
    )
    .unwrap();
    let fresh_id = fresh.json()["client_id"].as_str().unwrap().to_string();
    assert_ne!(fresh_id, forged);
    assert_ne!(fresh_id, id);
    let head = http::request(stack.listen, "HEAD", "/veil/relay", &[], b"").unwrap();
    assert_eq!(head.status, 200);
    assert!(head
        .header("x-veil-client-id")
        .is_some_and(|h| h.len() == 101));

    // Echo, in plaintext.
    let e = http::get(stack.listen, "/veil/echo").unwrap().json();
    assert_eq!(e["echo"], Value::Null);
    assert!(e["time"].as_i64().unwrap() > 1_700_000_000_000);
    let e = http::get(stack.listen, "/veil/echo/hello%20relay")
        .unwrap()
        .json();
    assert_eq!(e["echo"], "hello relay");

    // Plaintext on a relayed route, unknown endpoints under the prefix.
    assert_relay_error(
        &http::get(stack.listen, "/app/echo?q=1").unwrap(),
        403,
        "relay-required",
    );
    assert_relay_error(
        &http::get(stack.listen, "/veil/nope").unwrap(),
        404,
        "relay-route-not-allowed",
    );
    // Pairing needs a valid client id.
    let r = http::request(
        stack.listen,
        "POST",
        "/veil/pair",
        &[
            ("x-veil-client-id", &forged),
            ("content-type", "application/json"),
        ],
        br#"{"key_id":1,"pairs":[{"enc":"AAAA","pk":"AAAA"}]}"#,
    )
    .unwrap();
    assert_relay_error(&r, 401, "relay-bad-client-id");
    // Nothing of this reached the upstream.
    assert!(stack.recorded().is_empty(), "{:?}", stack.recorded());
    // Routes outside the relay and the filter's rules reach nothing: the demo has no
    // catch-all to the vendor (issue #18), Envoy answers 404 itself.
    assert_eq!(http::get(stack.listen, "/elsewhere").unwrap().status, 404);
    assert!(stack.recorded().is_empty(), "{:?}", stack.recorded());
}

/// Every method, with and without bodies (empty, binary, up to the limit): the upstream gets
/// the application's request exactly, the client the upstream's answer exactly, and the hop
/// in front of Envoy sees none of the plaintext.
#[test]
fn requests_and_responses_exactly_and_no_plaintext_on_the_wire() {
    let stack = Stack::start();
    let hop = RecordingHop::start(stack.listen);
    let id = relay::discover(hop.addr);
    let pairs = relay::pair(hop.addr, &id, 2);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let at_limit = vec![b'L'; 1024 * 1024];
    let cases: Vec<(&str, &str, Option<&[u8]>)> = vec![
        ("GET", "/app/echo/users/42?verbose=1&q=secret-query", None),
        ("DELETE", "/app/echo/items/7?why=secret-delete", None),
        (
            "POST",
            "/app/echo/notes?draft=true",
            Some(b"{\"note\":\"secret-body-text\"}"),
        ),
        ("PUT", "/app/echo/blob", Some(&binary)),
        ("PATCH", "/app/echo/empty", Some(b"")),
    ];
    for (i, (method, path, body)) in cases.iter().enumerate() {
        let p = &pairs[i % 2];
        let seq = (i / 2 + 1) as u64;
        stack.clear_recorded();
        let headers = [
            ("accept", "application/json"),
            ("x-app-secret", "secret-header-value"),
            ("x-app-repeated", "one"),
            ("x-app-repeated", "two"),
        ];
        let enc = p.encode(&id, seq, method, path, &headers, *body);
        let r = enc.send(hop.addr);
        let d = p
            .decode(seq, method, &r)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(d.status, 200, "{method} {path}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(d.sealed_header("content-type"), Some("application/json"));
        // The demo route's response_headers_to_add reaches the client (sealed).
        assert_eq!(d.sealed_header("x-veil-demo-app"), Some("relayed"));
        let echo = d.json();
        let (plain_path, query) = path
            .split_once('?')
            .map_or((*path, None), |(a, b)| (a, Some(b)));
        assert_eq!(echo["method"], *method);
        assert_eq!(echo["path"], plain_path);
        assert_eq!(echo["query"], json!(query));
        // What the upstream recorded: the request as the application made it.
        let rec = stack.recorded();
        assert_eq!(rec.len(), 1, "{method} {path}");
        let rec = &rec[0];
        assert_eq!(rec.method, *method);
        assert_eq!(rec.path, *path);
        assert_eq!(rec.body, body.unwrap_or_default(), "{method} {path}");
        assert_eq!(rec.header("x-app-secret"), Some("secret-header-value"));
        assert_eq!(rec.header("x-app-repeated"), Some("one, two"));
        assert_eq!(rec.header("accept"), Some("application/json"));
        assert!(
            rec.headers.keys().all(|k| !k.starts_with("x-veil-")),
            "{:?}",
            rec.headers
        );
        assert_ne!(rec.header("content-type"), Some("application/octet-stream"));
        if let Some(b) = body {
            assert_eq!(
                rec.header("content-length"),
                Some(b.len().to_string().as_str())
            );
        }
    }
    // A body at the relay's limit (1 MiB) both ways.
    stack.clear_recorded();
    let p = &pairs[0];
    let r = p
        .encode(
            &id,
            10,
            "POST",
            "/app/reflect?size=max",
            &[("x-reflect-content-type", "text/plain")],
            Some(&at_limit),
        )
        .send(hop.addr);
    let d = p.decode(10, "POST", &r).unwrap();
    assert_eq!(d.body.as_deref(), Some(&at_limit[..]));
    assert_eq!(stack.recorded()[0].body, at_limit);
    // The hop carried only ciphertext of paths, queries, app headers and bodies.
    let wire = hop.all();
    for needle in [
        &b"/app/"[..],
        b"verbose=1",
        b"secret-query",
        b"secret-delete",
        b"secret-header-value",
        b"x-app-secret",
        b"secret-body-text",
        b"relayed",
        b"\"method\"",
    ] {
        assert!(
            !contains(&wire, needle),
            "the hop saw {:?} in plaintext",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(!contains(&wire, &binary[..64]));
    assert!(contains(&hop.to_server(), b"x-veil-relay: v2,"));
    assert!(contains(&hop.to_client(), b"x-veil-relay: v2,"));
}

/// Statuses, crafted headers, binary and empty bodies come back as the upstream sent them;
/// `set-cookie` and `cache-control` stay visible, content headers are sealed.
#[test]
fn crafted_responses_come_back_exactly() {
    let stack = Stack::start();
    let (id, p) = paired(&stack);
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let enc = p.encode(
        &id,
        1,
        "POST",
        "/app/reflect",
        &[
            ("x-reflect-status", "201"),
            ("x-reflect-content-type", "application/x-thing"),
            ("x-reflect-header", "etag: \"v1\""),
            ("x-reflect-header", "set-cookie: sid=1; HttpOnly"),
            ("x-reflect-header", "cache-control: private"),
            ("x-reflect-header", "x-app-answer: forty-two"),
        ],
        Some(&body),
    );
    let r = enc.send(stack.listen);
    let d = p.decode(1, "POST", &r).unwrap();
    assert_eq!(d.status, 201);
    assert_eq!(d.body.as_deref(), Some(&body[..]));
    assert_eq!(d.sealed_header("content-type"), Some("application/x-thing"));
    assert_eq!(d.sealed_header("etag"), Some("\"v1\""));
    assert_eq!(d.sealed_header("x-app-answer"), Some("forty-two"));
    assert_eq!(
        d.sealed_header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(r.header("set-cookie"), Some("sid=1; HttpOnly"));
    assert_eq!(r.header("cache-control"), Some("private"));
    assert!(r.header("etag").is_none() && r.header("x-app-answer").is_none());
    assert_eq!(r.body.len(), body.len() + 16);

    // An empty answer: no body part (flags h).
    let enc = p.encode(
        &id,
        2,
        "GET",
        "/app/reflect",
        &[("x-reflect-status", "204")],
        None,
    );
    let r = enc.send(stack.listen);
    let d = p.decode(2, "GET", &r).unwrap();
    assert_eq!(d.status, 204);
    assert_eq!(d.body, None);
    assert!(r.header("x-veil-relay").unwrap().ends_with(",h"));

    // HEAD: no body part, the length of the body it would have is sealed.
    let enc = p.encode(&id, 3, "HEAD", "/app/echo/head", &[], None);
    let r = enc.send(stack.listen);
    let d = p.decode(3, "HEAD", &r).unwrap();
    assert_eq!((d.status, &d.body), (200, &None));
    let len: usize = d.sealed_header("content-length").unwrap().parse().unwrap();
    assert!(len > 50, "{len}");
    assert_eq!(stack.recorded().last().unwrap().method, "HEAD");
}

fn replay_checks(stack: &Stack) {
    let (id, p) = paired(stack);
    let ok = |seq: u64| {
        let r = p
            .encode(&id, seq, "GET", "/app/echo", &[], None)
            .send(stack.listen);
        p.decode(seq, "GET", &r).map(|d| d.status)
    };
    let first = p.encode(&id, 1, "POST", "/app/echo", &[], Some(b"pay once"));
    let r = first.send(stack.listen);
    assert_eq!(p.decode(1, "POST", &r).unwrap().status, 200);
    // The same bytes again.
    assert_relay_error(&first.send(stack.listen), 409, "relay-replay");
    // Reordered within the window: accepted once each.
    assert_eq!(ok(5), Ok(200));
    assert_eq!(ok(3), Ok(200));
    assert_eq!(ok(4), Ok(200));
    let r = p
        .encode(&id, 3, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_relay_error(&r, 409, "relay-replay");
    // Beyond the window (128): too old.
    assert_eq!(ok(300), Ok(200));
    let r = p
        .encode(&id, 100, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_relay_error(&r, 409, "relay-replay");
    assert_eq!(ok(200), Ok(200));
    // Only the accepted requests reached the upstream.
    assert_eq!(stack.recorded().len(), 6);
}

#[test]
fn replay_and_reorder_local_window() {
    replay_checks(&Stack::start());
}

#[test]
fn replay_and_reorder_global_window() {
    replay_checks(&stack_with(json!({"replay": {"mode": "global"}})));
}

/// Refusals: each failure answers its stable code and nothing reaches the upstream.
#[test]
fn refusals_with_stable_codes() {
    let stack = stack_with(json!({
        "max_body_bytes": 1000,
        "pass_through_routes": ["/app/echo/public/*"],
    }));
    let (id, p) = paired(&stack);
    let other_id = relay::discover(stack.listen);
    let send = |e: &relay::Encoded| e.send(stack.listen);

    // A tampered headers part, a tampered body, a tampered path.
    let mut e = p.encode(&id, 1, "POST", "/app/echo", &[("a", "b")], Some(b"x"));
    let eh = e
        .headers
        .iter_mut()
        .find(|(n, _)| n == "x-veil-relay-eh")
        .unwrap();
    eh.1 = tamper_b64(&eh.1);
    assert_relay_error(&send(&e), 400, "relay-decode-failed");
    let mut e = p.encode(&id, 2, "POST", "/app/echo", &[], Some(b"body"));
    e.body[0] ^= 1;
    assert_relay_error(&send(&e), 400, "relay-decode-failed");
    let mut e = p.encode(&id, 3, "GET", "/app/echo", &[], None);
    e.target = format!(
        "/veil/x/{}",
        tamper_b64(e.target.strip_prefix("/veil/x/").unwrap())
    );
    assert_relay_error(&send(&e), 400, "relay-decode-failed");
    // The method is bound: the same parts under another method do not open.
    let mut e = p.encode(&id, 4, "GET", "/app/echo", &[], None);
    e.method = "DELETE".into();
    let r = send(&e);
    assert_relay_error(&r, 400, "relay-decode-failed");
    // The refusal is the relay's about exactly this request: it opens for the client.
    let mut asked = e.clone();
    asked.method = "GET".into();
    assert_authenticated(&p, &asked, &r, "relay-decode-failed");
    // A decoded header that is not allowed.
    let e = p.encode(&id, 5, "GET", "/app/echo", &[("host", "evil")], None);
    assert_relay_error(&send(&e), 400, "relay-header-not-allowed");
    // Browser-controlled headers sealed by a page's script, next to the browser's own wire
    // values: refused, so they can never replace what the browser sent (CSRF via Origin,
    // Fetch Metadata). Each case on a fresh seq, none moves the window or is forwarded.
    for (i, (name, forged, wire)) in [
        ("origin", "https://app.example", "https://evil.example"),
        ("referer", "https://app.example/", "https://evil.example/"),
        ("sec-fetch-site", "same-origin", "cross-site"),
        ("sec-fetch-mode", "navigate", "cors"),
        ("sec-ch-ua", "\"forged\"", "\"browser\""),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = p.encode(
            &id,
            40 + i as u64,
            "GET",
            "/app/echo",
            &[(name, forged)],
            None,
        );
        e.headers.push((name.to_string(), wire.to_string()));
        assert_relay_error(&send(&e), 400, "relay-header-not-allowed");
    }
    // Client ids: forged, or another valid client's.
    let e = p.encode(&other_id, 6, "GET", "/app/echo", &[], None);
    assert_relay_error(&send(&e), 401, "relay-pair-unknown");
    let forged = format!("{}0", &id[..id.len() - 1]);
    let forged = if forged == id {
        format!("{}1", &id[..id.len() - 1])
    } else {
        forged
    };
    let e = p.encode(&forged, 7, "GET", "/app/echo", &[], None);
    assert_relay_error(&send(&e), 401, "relay-bad-client-id");
    // An unknown pair (the keyservice answers 404).
    let ghost = RawPair::made_up("AAAAAAAAAAAAAAAAAAAAAA", stack.listen);
    for seq in 1..=6 {
        let e = ghost.encode(&id, seq, "GET", "/app/echo", &[], None);
        assert_relay_error(&send(&e), 401, "relay-pair-unknown");
    }
    // Asked once per worker VM at most (2 workers), then remembered as unknown.
    let lookups = stack.keyservice_metric("veil_keyservice_relay_lookups_total", "unknown");
    assert!((1..=2).contains(&lookups), "{lookups}");
    // Decoded paths outside the routes, or not plain.
    for path in [
        "/admin",
        "/veil/relay",
        "/app/../admin",
        "/app/%2e%2e/admin",
    ] {
        let e = p.encode(&id, 10 + path.len() as u64, "GET", path, &[], None);
        let r = send(&e);
        assert_relay_error(&r, 404, "relay-route-not-allowed");
        assert_authenticated(&p, &e, &r, "relay-route-not-allowed");
    }
    // Control header shapes; a version 1 header is refused (no downgrade).
    let mut e = p.encode(&id, 30, "GET", "/app/echo", &[], None);
    e.headers[0].1 = format!("v1,{id},{},30,uh", p.pair_id);
    assert_relay_error(&send(&e), 400, "relay-bad-request");
    let mut e = p.encode(&id, 30, "GET", "/app/echo", &[], None);
    e.headers[0].1 = format!("v2,{id},{},0,uh", p.pair_id);
    assert_relay_error(&send(&e), 400, "relay-bad-request");
    let mut e = p.encode(&id, 31, "GET", "/app/echo", &[], None);
    e.headers[0].1 = format!("v2,{id},{},31,uhb", p.pair_id);
    assert_relay_error(&send(&e), 400, "relay-bad-request");
    let mut e = p.encode(&id, 9_007_199_254_740_992, "GET", "/app/echo", &[], None);
    e.headers[0].1 = format!("v2,{id},{},9007199254740992,uh", p.pair_id);
    assert_relay_error(&send(&e), 400, "relay-bad-request");
    // Over the relay's body limit (1000 here).
    let e = p.encode(&id, 32, "POST", "/app/echo", &[], Some(&[7u8; 1001]));
    let r = send(&e);
    assert_relay_error(&r, 413, "relay-too-large");
    assert_authenticated(&p, &e, &r, "relay-too-large");
    let e = p.encode(&id, 33, "POST", "/app/reflect", &[], Some(&[7u8; 1000]));
    let d = p.decode(33, "POST", &send(&e)).unwrap();
    assert_eq!((d.status, d.body), (200, Some(vec![7u8; 1000])));
    // Only that one reached the upstream.
    assert_eq!(stack.recorded().len(), 1);
    // An answer over the limit (the echo of 900 bytes is ~1.3 KB of JSON) is refused.
    let e = p.encode(&id, 34, "POST", "/app/echo", &[], Some(&[7u8; 900]));
    assert_relay_error(&send(&e), 413, "relay-too-large");
    // pass_through_routes: plaintext allowed there, and only there.
    stack.clear_recorded();
    let r = http::get(stack.listen, "/app/echo/public/page?x=1").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/app/echo/public/page");
    assert_relay_error(
        &http::get(stack.listen, "/app/echo/private").unwrap(),
        403,
        "relay-required",
    );
    assert_eq!(stack.recorded().len(), 1);
    // The browser's own wire values reach the upstream unchanged.
    stack.clear_recorded();
    let mut e = p.encode(&id, 50, "GET", "/app/reflect", &[("x-app", "1")], None);
    for (n, v) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        e.headers.push((n.to_string(), v.to_string()));
    }
    assert_eq!(p.decode(50, "GET", &send(&e)).unwrap().status, 200);
    let seen = stack.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("origin"), Some("https://evil.example"));
    assert_eq!(seen[0].header("sec-fetch-site"), Some("cross-site"));
    assert_eq!(seen[0].header("x-app"), Some("1"));
}

/// Flips one character of a base64url string (still base64url).
fn tamper_b64(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    b[5] = if b[5] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// CORS comes from Envoy's CORS filter in front of Veil: preflights are answered before the
/// filter, and relay answers expose the relay's headers to the page.
#[test]
fn cors_preflight_and_exposed_headers() {
    let stack = Stack::start();
    let origin = "http://localhost:5173";
    let r = http::request(
        stack.listen,
        "OPTIONS",
        "/veil/x/anything",
        &[
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "x-veil-relay,x-veil-relay-eh,content-type",
            ),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    let allow = r.header("access-control-allow-headers").unwrap_or_default();
    for h in ["x-veil-relay", "x-veil-relay-eh", "x-veil-client-id"] {
        assert!(allow.contains(h), "{allow}");
    }
    assert!(r
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("PATCH") && m.contains("DELETE")));
    // An encoded answer and a relay refusal, cross-origin.
    let (id, p) = paired(&stack);
    let mut e = p.encode(&id, 1, "GET", "/app/echo", &[], None);
    e.headers.push(("origin".into(), origin.into()));
    let r = e.send(stack.listen);
    assert_eq!(p.decode(1, "GET", &r).unwrap().status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for h in ["x-veil-relay", "x-veil-relay-eh", "x-veil-relay-error"] {
        assert!(expose.contains(h), "{expose}");
    }
    let r = http::request(stack.listen, "GET", "/app/echo", &[("origin", origin)], b"").unwrap();
    assert_relay_error(&r, 403, "relay-required");
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    // Another origin gets no CORS grant.
    let r = http::request(
        stack.listen,
        "GET",
        "/veil/echo",
        &[("origin", "https://evil.example")],
        b"",
    )
    .unwrap();
    assert!(r.header("access-control-allow-origin").is_none());
}

/// `local` mode with one slot: every new pair takes the slot of the previous one. A pair
/// fetched back from the keyservice keeps refusing what it had seen (the eviction log), so
/// an old request cannot be replayed through an eviction.
#[test]
fn local_window_survives_slot_eviction() {
    let stack = stack_with(json!({"pair_cache_slots": 1}));
    let id = relay::discover(stack.listen);
    let a = relay::pair(stack.listen, &id, 1).remove(0);
    let sent: Vec<relay::Encoded> = (1..=3)
        .map(|seq| a.encode(&id, seq, "POST", "/app/echo", &[], Some(b"once")))
        .collect();
    for (i, e) in sent.iter().enumerate() {
        let r = e.send(stack.listen);
        assert_eq!(a.decode(i as u64 + 1, "POST", &r).unwrap().status, 200);
    }
    // A second pairing takes the only slot.
    let b = relay::pair(stack.listen, &id, 1).remove(0);
    assert!(stack.stat("wasmcustom.veil.relay.slot_evictions") >= 1);
    // Replaying a's requests: a is fetched back, its window still refuses them.
    for e in &sent {
        assert_relay_error(&e.send(stack.listen), 409, "relay-replay");
    }
    let r = a
        .encode(&id, 4, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_eq!(a.decode(4, "GET", &r).unwrap().status, 200);
    // b, evicted in turn before its first request, still works from seq 1.
    let r = b
        .encode(&id, 1, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_eq!(b.decode(1, "GET", &r).unwrap().status, 200);
    assert!(stack.stat("wasmcustom.veil.relay.pair_fetches") >= 2);
}

/// `local` mode with 4 slots, i.e. one set of 4 ways: every pair hashes to the same set,
/// yet 4 live pairs keep their own ways and never evict each other (no eviction, no fetch,
/// round after round); a fifth takes the least recently used one's way, so the table stays
/// bounded at 4, and the evicted pair comes back by a fetch with its window intact. (A
/// direct-mapped table of 4 slots put 4 pairs in distinct slots with probability 3/32, so
/// against it this test fails 29 times in 32.)
#[test]
fn colliding_live_pairs_share_a_set_without_evicting() {
    let stack = stack_with(json!({"pair_cache_slots": 4}));
    let id = relay::discover(stack.listen);
    let evictions = stack.stat("wasmcustom.veil.relay.slot_evictions");
    let fetches = stack.stat("wasmcustom.veil.relay.pair_fetches");
    let pairs = relay::pair(stack.listen, &id, 4);
    // Installing 4 pairs in one set evicted none of them.
    assert_eq!(
        stack.stat("wasmcustom.veil.relay.slot_evictions"),
        evictions
    );
    for seq in 1..=3u64 {
        for p in &pairs {
            let r = p
                .encode(&id, seq, "POST", "/app/echo", &[], Some(b"x"))
                .send(stack.listen);
            assert_eq!(p.decode(seq, "POST", &r).unwrap().status, 200);
        }
    }
    assert_eq!(
        stack.stat("wasmcustom.veil.relay.slot_evictions"),
        evictions
    );
    assert_eq!(stack.stat("wasmcustom.veil.relay.pair_fetches"), fetches);
    // Pairs[0] is the least recently used: a fifth pair takes its way.
    let old = pairs[0].encode(&id, 3, "POST", "/app/echo", &[], Some(b"x"));
    let fifth = relay::pair(stack.listen, &id, 1).remove(0);
    assert_eq!(
        stack.stat("wasmcustom.veil.relay.slot_evictions"),
        evictions + 1
    );
    let r = fifth
        .encode(&id, 1, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_eq!(fifth.decode(1, "GET", &r).unwrap().status, 200);
    // The others kept their ways: no fetch for them.
    for p in &pairs[1..] {
        let r = p
            .encode(&id, 4, "GET", "/app/echo", &[], None)
            .send(stack.listen);
        assert_eq!(p.decode(4, "GET", &r).unwrap().status, 200);
    }
    assert_eq!(stack.stat("wasmcustom.veil.relay.pair_fetches"), fetches);
    // The evicted one is fetched back; its window still refuses what it had seen.
    assert_relay_error(&old.send(stack.listen), 409, "relay-replay");
    assert_eq!(
        stack.stat("wasmcustom.veil.relay.pair_fetches"),
        fetches + 1
    );
}

/// Many requests on one pair at once, over Envoy's two workers: every `seq` is accepted once
/// (the slot's compare-and-swap loses no update), and each is refused when sent again.
#[test]
fn concurrent_requests_on_one_pair_across_workers() {
    let stack = Stack::start();
    let (id, p) = paired(&stack);
    let encoded: Vec<relay::Encoded> = (1..=48u64)
        .map(|seq| p.encode(&id, seq, "POST", "/app/echo", &[], Some(b"x")))
        .collect();
    let listen = stack.listen;
    let run = |expect: u16| {
        std::thread::scope(|s| {
            for chunk in encoded.chunks(6) {
                s.spawn(move || {
                    for e in chunk {
                        let r = e.send(listen);
                        assert_eq!(r.status, expect, "{}", r.text());
                    }
                });
            }
        });
    };
    run(200);
    run(409);
    assert_eq!(stack.recorded().len(), 48);
}

/// A pair idle for longer than the keyservice's idle TTL is refused (`relay-pair-unknown`,
/// from the filter's slot in `local` mode); the Rust client then re-pairs by itself.
#[test]
fn idle_pairs_are_refused_and_the_client_repairs() {
    let stack = Stack::start_with(StackOptions {
        keyservice_env: vec![("RELAY_IDLE_TTL_SECS".into(), "1".into())],
        ..Default::default()
    });
    let (id, p) = paired(&stack);
    let r = p
        .encode(&id, 1, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_eq!(p.decode(1, "GET", &r).unwrap().status, 200);
    let client = veil_relay::Client::new(
        &format!("http://{}/veil", stack.listen),
        veil_relay::Options {
            pairs: 1,
            server_key: Some(relay::keys(stack.listen)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        client
            .request("GET", "/app/echo", &[], None)
            .unwrap()
            .status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = p
        .encode(&id, 2, "GET", "/app/echo", &[], None)
        .send(stack.listen);
    assert_relay_error(&r, 401, "relay-pair-unknown");
    assert_eq!(
        client
            .request("GET", "/app/echo", &[], None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(client.stats().repairs, 1);
}

/// Without the keyservice: `local` mode keeps serving known pairs (no callout per request);
/// pairing, unknown pairs and `global` mode answer `relay-unavailable`.
#[test]
fn keyservice_down() {
    for mode in ["local", "global"] {
        let mut stack = stack_with(json!({"replay": {"mode": mode}}));
        let (id, p) = paired(&stack);
        stack.keyservice_proc.kill();
        let r = p
            .encode(&id, 1, "GET", "/app/echo", &[], None)
            .send(stack.listen);
        if mode == "local" {
            assert_eq!(p.decode(1, "GET", &r).unwrap().status, 200, "{mode}");
        } else {
            assert_relay_error(&r, 503, "relay-unavailable");
        }
        let r = http::request(
            stack.listen,
            "POST",
            "/veil/pair",
            &[
                ("x-veil-client-id", &id),
                ("content-type", "application/json"),
            ],
            br#"{"key_id":1,"pairs":[{"enc":"AAAA","pk":"AAAA"}]}"#,
        )
        .unwrap();
        assert_relay_error(&r, 503, "relay-unavailable");
        let ghost = RawPair::made_up("BBBBBBBBBBBBBBBBBBBBBB", stack.listen);
        let r = ghost
            .encode(&id, 1, "GET", "/app/echo", &[], None)
            .send(stack.listen);
        assert_relay_error(&r, 503, "relay-unavailable");
    }
}

/// `local` mode sends no request to the keyservice, yet a busy pair stays alive there: past
/// half the idle TTL the filter touches it, so after an Envoy restart or an eviction it can
/// still be fetched.
#[test]
fn local_mode_keeps_busy_pairs_alive_in_the_keyservice() {
    let stack = Stack::start_with(StackOptions {
        keyservice_env: vec![("RELAY_IDLE_TTL_SECS".into(), "2".into())],
        ..Default::default()
    });
    let (_, idle) = paired(&stack);
    let (busy_id, busy) = paired(&stack);
    let started = std::time::Instant::now();
    let mut seq = 0;
    while started.elapsed() < std::time::Duration::from_millis(4500) {
        seq += 1;
        let r = busy
            .encode(&busy_id, seq, "GET", "/app/echo", &[], None)
            .send(stack.listen);
        assert_eq!(busy.decode(seq, "GET", &r).unwrap().status, 200);
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
    let lookup = |pair_id: &str| {
        http::request(
            stack.keyservice,
            "GET",
            &format!("/v1/relay/pairs/{pair_id}"),
            &[("authorization", &format!("Bearer {}", veil_e2e::TOKEN))],
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(lookup(&busy.pair_id), 200, "the busy pair was kept alive");
    assert_eq!(lookup(&idle.pair_id), 404, "the idle one was dropped");
}

/// A bad relay section keeps Envoy from starting (fail closed), naming the path at fault.
#[test]
fn invalid_relay_config_is_refused_naming_the_path() {
    for (relay, message) in [
        (
            json!({"routes": ["app/*"]}),
            "relay.routes[0]: must start with '/'",
        ),
        (
            json!({"client_id_secret_env": "VEIL_NO_SUCH_VARIABLE"}),
            "relay.client_id_secret_env",
        ),
    ] {
        let mut config = veil_e2e::demo_filter_config();
        for (k, v) in relay.as_object().cloned().unwrap_or_default() {
            config["relay"][k] = v;
        }
        let err = Stack::try_start_with(StackOptions {
            filter_config: config,
            ..Default::default()
        })
        .err()
        .unwrap_or_else(|| panic!("Envoy must refuse {relay}"));
        assert!(err.contains(message), "{message}:\n{err}");
    }
}

/// An encoded request over HTTP/2 (curl, h2c prior knowledge), as a CDN or load balancer
/// would send it to Envoy: decoded for the upstream, encoded back, body included.
#[test]
fn http2_downstream() {
    let stack = Stack::start();
    let (id, p) = paired(&stack);
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let e = p.encode(
        &id,
        1,
        "PUT",
        "/app/reflect?over=h2",
        &[("x-reflect-content-type", "application/x-h2")],
        Some(&body),
    );
    let dir = stack.dir.join("h2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("req.bin"), &e.body).unwrap();
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--http2-prior-knowledge", "-X", &e.method])
        .arg("-D")
        .arg(dir.join("head.txt"))
        .arg("-o")
        .arg(dir.join("resp.bin"))
        .arg("--data-binary")
        .arg(format!("@{}", dir.join("req.bin").display()));
    for (n, v) in &e.headers {
        cmd.args(["-H", &format!("{n}: {v}")]);
    }
    let out = cmd
        .arg(format!("http://{}{}", stack.listen, e.target))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(dir.join("head.txt")).unwrap();
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let r = http::Response {
        status: 200,
        headers,
        body: std::fs::read(dir.join("resp.bin")).unwrap(),
    };
    let d = p.decode(1, "PUT", &r).unwrap();
    assert_eq!(d.body.as_deref(), Some(&body[..]));
    assert_eq!(d.sealed_header("content-type"), Some("application/x-h2"));
    let rec = stack.recorded();
    assert_eq!(
        rec.last().map(|r| r.path.as_str()),
        Some("/app/reflect?over=h2")
    );
    assert_eq!(rec.last().map(|r| r.body.clone()), Some(body));
}

/// A relayed request skips the route rules, so with `routes` empty (any path may be relayed)
/// a decoded Moesif event for the sealed collector route must still never leave in plaintext:
/// the relay refuses every path a seal or unseal rule claims.
#[test]
fn relayed_requests_never_bypass_the_seal_rules() {
    let stack = stack_with(json!({"routes": []}));
    let (id, p) = paired(&stack);
    let event = veil_e2e::fixture("event.json");
    let mut seq = 0;
    for path in ["/collector/v1/events", "/api/search/~/search/events"] {
        seq += 1;
        let e = p.encode(
            &id,
            seq,
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(&event),
        );
        assert_relay_error(&e.send(stack.listen), 404, "relay-route-not-allowed");
    }
    assert!(stack.recorded().is_empty(), "{:?}", stack.recorded());
    // Any other path is relayed.
    let e = p.encode(&id, seq + 1, "POST", "/app/echo", &[], Some(b"ok"));
    let r = e.send(stack.listen);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stack.recorded().len(), 1);
}
