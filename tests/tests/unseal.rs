//! The unseal route (the vendor's management API) through real Envoy: plaintext searches find
//! sealed events, answers come back decrypted with their types and exact text, older epochs
//! are fetched on demand (one keyservice request per kid however many streams need it), and
//! what cannot be opened is kept (or refused with `reject`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use veil_core::crypto::cipher::{Padding, Scope, SealingKey, Spec, ValueType};
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::crypto::value::{Mode, SealedValue};
use veil_e2e::{fixture, http, Shell, Stack, StackOptions};

const SEARCH: &str = "/api/search/~/search/events";

/// The demo filter configuration with the unseal route set to `unseal`.
fn config_with(unseal: Value) -> Value {
    let mut config = veil_e2e::demo_filter_config();
    let routes = config["routes"].as_array_mut().expect("routes");
    routes.retain(|r| r["prefix"] != "/api");
    routes.push(json!({"prefix": "/api", "unseal": unseal}));
    config
}

fn start(unseal: Value, concurrency: u32) -> Stack {
    Stack::start_with(StackOptions {
        filter_config: config_with(unseal),
        concurrency,
        ..Default::default()
    })
}

fn keep_stack() -> Stack {
    start(json!({"search": {"seal_route": "/collector"}}), 2)
}

fn seal(key: &SealingKey, mode: Mode, ty: ValueType, v: &str) -> String {
    let mut out = Vec::new();
    key.seal_v1_into(mode, ty, v.as_bytes(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn det(key: &SealingKey, v: &str) -> String {
    seal(key, Mode::Deterministic, ValueType::String, v)
}

/// The same value with one payload character changed (still a well-formed Veil value).
fn tamper(v: &str) -> String {
    let mut b = v.as_bytes().to_vec();
    let i = b.len() - 6;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    let t = String::from_utf8(b).unwrap();
    assert!(SealedValue::parse(&t).is_some());
    t
}

fn search(stack: &Stack, query: &str, body: &Value, headers: &[(&str, &str)]) -> http::Response {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    stack.send(
        "POST",
        &format!("{SEARCH}{query}"),
        &h,
        body.to_string().as_bytes(),
    )
}

/// Has the vendor answer `body` through the unseal route, as the vendor would send it: the
/// body is stashed at the upstream directly, then fetched through Envoy without a request
/// body (a body to an endpoint the unseal route cannot check is refused, issue #18).
fn reflect(stack: &Stack, body: &[u8], headers: &[(&str, &str)]) -> http::Response {
    let r = http::request(stack.upstream, "POST", "/v1/reflect/stash", &[], body).unwrap();
    assert_eq!(r.status, 200);
    stack.send("GET", "/api/reflect", headers, b"")
}

/// Issue #18: a body to a management endpoint the unseal route cannot check is refused
/// before anything leaves; `/search/~/count/events` and `/search/~/search/users` are
/// checked like the events search.
#[test]
fn management_bodies_are_checked_or_refused_through_envoy() {
    let stack = keep_stack();
    let before = stack.recorded().len();
    let resp = stack.send(
        "PUT",
        "/api/workspaces/w1",
        &[("content-type", "application/json")],
        br#"{"note":"jane@example.com"}"#,
    );
    assert_problem(&resp, 400, "bad-search");
    let resp = stack.send(
        "POST",
        "/api/search/~/count/events",
        &[("content-type", "application/json")],
        br#"{"query":{"span_term":{"request.body.email":"jane@example.com"}}}"#,
    );
    assert_problem(&resp, 400, "bad-search");
    assert!(
        !resp.text().contains("jane"),
        "the refusal does not echo the value: {}",
        resp.text()
    );
    assert_eq!(stack.recorded().len(), before, "nothing reached the vendor");
    assert!(!stack.all_logs().contains("jane@example.com"));
}

fn assert_problem(resp: &http::Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(resp.json()["code"], code, "{}", resp.text());
}

/// The last search the upstream received.
fn last_search(stack: &Stack) -> veil_e2e::Recorded {
    stack
        .recorded()
        .into_iter()
        .rev()
        .find(|r| r.path.starts_with("/v1/search/"))
        .expect("a search reached the upstream")
}

fn kid_requests(stack: &Stack) -> u64 {
    stack.keyservice_metric(
        "veil_keyservice_data_key_requests_total",
        "endpoint=\"kid\"",
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn plaintext_search_finds_sealed_events_and_the_answer_comes_back_decrypted() {
    let stack = keep_stack();
    let batch = fixture("events-batch.json");
    let events: Vec<Value> = serde_json::from_slice(&batch).unwrap();
    assert_eq!(
        stack.post_json("/collector/v1/events/batch", &batch).status,
        200
    );
    // One more event with number texts a float round trip would change.
    let exact = br#"{"request":{"time":"2026-11-22T10:00:00.000Z","verb":"POST","uri":"https://api.acme.com/v1/pay?card=4111","body":{"patient":{"email":"exact@example.com","name":"Exact Numbers"},"price":1.50,"big":123456789012345678901234567890,"tiny":1e-7,"consent":true}},"response":{"time":"2026-11-22T10:00:00.010Z","status":200},"user_id":"u-exact"}"#;
    assert_eq!(stack.post_json("/collector/v1/events", exact).status, 200);
    // What the vendor stores is sealed.
    let stored = stack.recorded();
    let stored_text = String::from_utf8_lossy(&stored[0].body).into_owned();
    assert!(!stored_text.contains("ada@example.com"));
    assert!(!String::from_utf8_lossy(&stored[1].body).contains("1.50"));

    let email = "ada@example.com";
    let expected: Vec<&Value> = events
        .iter()
        .filter(|e| e["request"]["body"]["patient"]["email"] == email)
        .collect();
    assert!(!expected.is_empty());
    let query = json!({
        "post_filter": {"bool": {"must": [{"term": {"request.body.patient.email.raw": email}}]}},
        "size": 50,
        "sort": [{"request.body.patient.name.raw": {"order": "desc"}}],
        "aggs": {"by_email": {"terms": {"field": "request.body.patient.email.raw", "size": 10}}}
    });
    let resp = search(&stack, "?from=-7d&to=now", &query, &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["hits"]["total"], expected.len());
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), expected.len());
    for hit in hits {
        // Every value is back with its type: the whole event equals what the client sent.
        let source = &hit["_source"];
        assert!(
            expected.contains(&source),
            "a hit is not an original event: {source}"
        );
        let name = &source["request"]["body"]["patient"]["name"];
        assert_eq!(hit["sort"], json!([name]), "sort values are decrypted");
    }
    assert_eq!(
        v["aggregations"]["by_email"]["buckets"][0],
        json!({"key": email, "doc_count": expected.len()}),
        "bucket keys are decrypted"
    );
    // The search that reached the vendor carries ciphertexts, not the plaintext term.
    let rec = last_search(&stack);
    assert_eq!(rec.path, "/v1/search/~/search/events?from=-7d&to=now");
    let sent = String::from_utf8_lossy(&rec.body).into_owned();
    assert!(!sent.contains(email), "{sent}");
    let sent: Value = serde_json::from_str(&sent).unwrap();
    let terms = &sent["post_filter"]["bool"]["must"][0]["terms"]["request.body.patient.email.raw"];
    assert!(
        terms
            .as_array()
            .unwrap()
            .iter()
            .all(|t| SealedValue::parse(t.as_str().unwrap()).is_some()),
        "{terms}"
    );

    // Exact number text and types.
    let resp = search(
        &stack,
        "",
        &json!({"query": {"term": {"request.body.patient.email.raw": "exact@example.com"}}}),
        &[],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert!(text.contains(r#""price":1.50"#), "{text}");
    assert!(
        text.contains(r#""big":123456789012345678901234567890"#),
        "{text}"
    );
    assert!(text.contains(r#""tiny":1e-7"#), "{text}");
    assert!(text.contains(r#""consent":true"#), "{text}");
    assert!(
        text.contains("https://api.acme.com/v1/pay?card=4111"),
        "{text}"
    );
    let hit = &resp.json()["hits"]["hits"][0]["_source"];
    let orig: Value = serde_json::from_slice(exact).unwrap();
    assert_eq!(hit, &orig);

    assert!(stack.stat("wasmcustom.veil.search.rewritten") >= 2);
    assert!(stack.stat("wasmcustom.veil.unseal.responses") >= 2);
    assert_eq!(stack.stat("wasmcustom.veil.unseal.values_failed"), 0);
    assert_eq!(stack.stat("wasmcustom.veil.unseal.values_unknown_kid"), 0);
    let logs = stack.all_logs();
    for secret in [email, "431-29-7468", "exact@example.com", "Ada Lovelace"] {
        assert!(!logs.contains(secret), "logs contain {secret}");
    }
}

#[test]
fn values_sealed_under_older_epochs_are_found_and_decrypted_on_demand() {
    let stack = keep_stack();
    let (k24, k25) = (
        stack.sealing_key("r1.2024-01"),
        stack.sealing_key("r1.2025-01"),
    );
    // Events the vendor stored in earlier epochs (sealed as the collector route would).
    let old = |key: &SealingKey, email: &str| {
        json!({"request": {"time": "2025-06-01T00:00:00.000Z", "verb": "GET",
                "body": {"patient": {"email": det(key, email)},
                         "amount": seal(key, Mode::Deterministic, ValueType::Number, "10.10"),
                         "consent": seal(key, Mode::Randomized, ValueType::Bool, "false")}},
               "user_id": "u-old"})
    };
    // And one sealed in format v2 by today's collector (issue #18: v1 data sealed before
    // the change and v2 data are found by one plaintext search).
    let v2 = |key: &SealingKey, email: &str| {
        let scope = Scope::field("request.body.patient.email");
        let spec = Spec {
            mode: Mode::Deterministic,
            scope: &scope,
            pad: Padding::Buckets,
        };
        let mut out = Vec::new();
        key.seal(spec, ValueType::String, email.as_bytes(), &mut out)
            .unwrap();
        json!({"request": {"time": "2025-07-01T00:00:00.000Z", "verb": "GET",
                "body": {"patient": {"email": String::from_utf8(out).unwrap()}}},
               "user_id": "u-v2"})
    };
    let batch = json!([
        old(&k24, "old@example.com"),
        old(&k25, "old@example.com"),
        old(&k25, "other@example.com"),
        v2(&k25, "old@example.com")
    ]);
    let r = http::request(
        stack.upstream,
        "POST",
        "/v1/events/batch",
        &[("content-type", "application/json")],
        batch.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);

    let fetched = stack.stat("wasmcustom.veil.keys.kid_fetch_ok");
    // The range covers 2024-01, 2025-01 and 2026-01: the term matches both old epochs.
    let resp = search(
        &stack,
        "?from=2024-03-01T00%3A00%3A00Z",
        &json!({"query": {"bool": {"filter": [{"term": {"request.body.patient.email.raw": "old@example.com"}}]}}}),
        &[],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["hits"]["total"], 3, "{v}");
    for hit in v["hits"]["hits"].as_array().unwrap() {
        let body = &hit["_source"]["request"]["body"];
        assert_eq!(body["patient"]["email"], "old@example.com");
        if hit["_source"]["user_id"] == "u-old" {
            assert_eq!(body["consent"], false);
        }
    }
    assert!(resp.text().contains(r#""amount":10.10"#), "{}", resp.text());
    // 2024-01 and 2025-01 were not prefetched (only the current and next epoch are).
    assert!(stack.stat("wasmcustom.veil.keys.kid_fetch_ok") >= fetched + 2);
    assert_eq!(stack.stat("wasmcustom.veil.unseal.values_unknown_kid"), 0);

    // Without `from`, the default (-1y) does not reach 2024: only the 2025 event matches.
    let resp = search(
        &stack,
        "",
        &json!({"query": {"term": {"request.body.patient.email.raw": "old@example.com"}}}),
        &[],
    );
    assert_eq!(resp.json()["hits"]["total"], 2, "{}", resp.text());
}

#[test]
fn unknown_kids_and_tampered_values_are_kept_and_counted() {
    let stack = keep_stack();
    let current = stack.sealing_key("r1.2026-01");
    let good = det(&current, "kept-secret-1");
    let tampered = tamper(&det(&current, "kept-secret-2"));
    let stranger = SealingKey::new(
        "r7.2025-01".parse::<Kid>().unwrap(),
        &Dek::from_bytes([9; 32]),
    );
    let unknown = det(&stranger, "kept-secret-3");
    let body = format!(r#"{{"a":"{good}","b":"{tampered}","c":"{unknown}","d":"plain","n":1.50}}"#);
    let before = kid_requests(&stack);
    let resp = reflect(&stack, body.as_bytes(), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["a"], "kept-secret-1");
    assert_eq!(v["b"], tampered, "a value that does not authenticate stays");
    assert_eq!(v["c"], unknown, "a value under an unknown kid stays");
    assert_eq!(v["d"], "plain");
    assert!(resp.text().contains(r#""n":1.50"#));
    assert_eq!(stack.stat("wasmcustom.veil.unseal.values_failed"), 1);
    assert_eq!(stack.stat("wasmcustom.veil.unseal.values_unknown_kid"), 1);
    assert_eq!(stack.stat("wasmcustom.veil.keys.kid_fetch_unknown"), 1);
    assert_eq!(kid_requests(&stack), before + 1, "one lookup of r7.2025-01");
    // The unknown kid is remembered: no second keyservice request.
    for _ in 0..3 {
        assert_eq!(reflect(&stack, body.as_bytes(), &[]).status, 200);
    }
    assert_eq!(kid_requests(&stack), before + 1);
    assert_eq!(stack.stat("wasmcustom.veil.unseal.values_unknown_kid"), 4);
    let logs = stack.all_logs();
    assert!(!logs.contains("kept-secret"), "logs contain plaintext");
    assert!(!logs.contains(&tampered[30..]), "logs contain a kept value");
}

#[test]
fn reject_turns_unopenable_values_into_502() {
    let stack = start(json!({"on_unseal_error": "reject"}), 2);
    let current = stack.sealing_key("r1.2026-01");
    let ok = json!({"a": det(&current, "fine")});
    let resp = reflect(&stack, ok.to_string().as_bytes(), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["a"], "fine");

    let tampered = tamper(&det(&current, "broken"));
    let resp = reflect(
        &stack,
        json!({"a": det(&current, "fine"), "b": tampered})
            .to_string()
            .as_bytes(),
        &[],
    );
    assert_problem(&resp, 502, "unseal-failed");
    assert!(!resp.text().contains("fine") && !resp.text().contains(&tampered));

    let stranger = SealingKey::new(
        "r5.2026-01".parse::<Kid>().unwrap(),
        &Dek::from_bytes([3; 32]),
    );
    let resp = reflect(
        &stack,
        json!({"c": det(&stranger, "x")}).to_string().as_bytes(),
        &[],
    );
    assert_problem(&resp, 502, "unseal-failed");
    assert_eq!(stack.stat("wasmcustom.veil.unseal.rejected"), 2);
    // Search is off on this route: search bodies pass untouched.
    stack.clear_recorded();
    let q = json!({"query": {"term": {"request.body.patient.email.raw": "a@b.c"}}});
    assert_eq!(search(&stack, "", &q, &[]).status, 200);
    assert_eq!(stack.recorded()[0].body, q.to_string().as_bytes());
}

#[test]
fn gzip_responses_are_decoded_unsealed_and_forwarded_identity() {
    let stack = keep_stack();
    assert_eq!(
        stack
            .post_json("/collector/v1/events", &fixture("event.json"))
            .status,
        200
    );
    // The vendor answers gzip (the client accepts it): the client gets identity JSON.
    let resp = search(
        &stack,
        "",
        &json!({"query": {"term": {"user_id.raw": "user_12345"}}}),
        &[("accept-encoding", "br, gzip, zstd")],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-encoding"), None);
    let v = resp.json();
    assert_eq!(v["hits"]["total"], 1);
    assert_eq!(
        v["hits"]["hits"][0]["_source"],
        serde_json::from_slice::<Value>(&fixture("event.json")).unwrap()
    );
    // Only encodings the filter can decode were offered to the vendor.
    assert_eq!(
        last_search(&stack).header("accept-encoding"),
        Some("gzip, deflate")
    );

    // A gzip body with sealed values, reflected.
    let current = stack.sealing_key("r1.2026-01");
    let doc = json!({"a": det(&current, "zipped"), "b": [1, 2]}).to_string();
    let resp = reflect(
        &stack,
        &gzip(doc.as_bytes()),
        &[("x-reflect-content-encoding", "gzip")],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.json(), json!({"a": "zipped", "b": [1, 2]}));
    // The native shell holds the headers until the body is rewritten: the answer carries the
    // new body's length (proxy-wasm cannot hold them: its length is removed, Envoy chunks it).
    if Shell::from_env() == Shell::Native {
        let len = resp.body.len().to_string();
        assert_eq!(resp.header("content-length"), Some(len.as_str()));
        assert_eq!(resp.header("transfer-encoding"), None);
    }

    // Nothing sealed inside: forwarded decoded all the same (the encoding was decided
    // with the headers).
    let plain = gzip(br#"{"nothing":"sealed"}"#);
    let resp = reflect(&stack, &plain, &[("x-reflect-content-encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.body, br#"{"nothing":"sealed"}"#);
    assert_eq!(resp.header("x-veil-hold-response"), None);

    // A corrupt gzip body can be forwarded neither decoded nor as it is: 502.
    let resp = reflect(
        &stack,
        b"not gzip",
        &[("x-reflect-content-encoding", "gzip")],
    );
    assert_problem(&resp, 502, "unseal-failed");
    // One that decodes past max_body_bytes likewise.
    let mut big = br#"{"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 2 << 20));
    big.extend_from_slice(br#""}"#);
    let zipped = gzip(&big);
    assert!(zipped.len() < 1 << 20);
    let resp = reflect(&stack, &zipped, &[("x-reflect-content-encoding", "gzip")]);
    assert_problem(&resp, 502, "unseal-failed");
    // One whose compressed length is already over the limit is left alone from the start.
    let mut huge = Vec::new();
    while huge.len() <= 1 << 20 {
        huge.extend_from_slice(format!("{:x}", huge.len().wrapping_mul(2654435761)).as_bytes());
    }
    let resp = reflect(
        &stack,
        &huge,
        &[
            ("x-reflect-content-encoding", "gzip"),
            ("x-reflect-content-type", "application/json"),
        ],
    );
    assert_eq!(
        (resp.status, resp.header("content-encoding")),
        (200, Some("gzip"))
    );
    assert_eq!(resp.body, huge);
}

#[test]
fn non_json_and_oversized_responses_pass_untouched() {
    let mut config = config_with(json!({}));
    config["max_body_bytes"] = json!(4096);
    let stack = Stack::start_with(StackOptions {
        filter_config: config,
        ..Default::default()
    });
    let current = stack.sealing_key("r1.2026-01");
    let sealed = det(&current, "stays-sealed");

    let text = format!("value: {sealed}\n");
    let resp = reflect(
        &stack,
        text.as_bytes(),
        &[("x-reflect-content-type", "text/plain")],
    );
    assert_eq!((resp.status, resp.text()), (200, text));
    assert_eq!(resp.header("content-type"), Some("text/plain"));

    let broken = format!("{{\"a\":\"{sealed}\"");
    let resp = reflect(&stack, broken.as_bytes(), &[]);
    assert_eq!(resp.text(), broken, "JSON that does not parse passes");

    let big = json!({"a": sealed, "pad": "x".repeat(5000)}).to_string();
    let resp = reflect(&stack, big.as_bytes(), &[]);
    assert_eq!(resp.text(), big, "over max_body_bytes: passes sealed");
    assert_eq!(stack.stat("wasmcustom.veil.unseal.too_large"), 1);
    assert!(stack.stat("wasmcustom.veil.unseal.passthrough") >= 2);

    // Responses without a body and other routes are not touched at all.
    assert_eq!(stack.send("GET", "/api/healthz", &[], b"").status, 200);
    let small = json!({"a": sealed}).to_string();
    let resp = reflect(&stack, small.as_bytes(), &[]);
    assert_eq!(resp.json(), json!({"a": "stays-sealed"}));
    assert!(!stack.all_logs().contains("stays-sealed"));
}

#[test]
fn searches_that_cannot_be_rewritten_are_refused_and_nothing_leaves() {
    let stack = keep_stack();
    stack.clear_recorded();
    let term = |field: &str, v: Value| json!({"query": {"term": {field: v}}});
    // Booleans are sealed randomized: equality cannot be searched.
    assert_problem(
        &search(&stack, "", &term("request.body.consent", json!(true)), &[]),
        400,
        "bad-search",
    );
    // `match` on an analyzed sealed field.
    assert_problem(
        &search(
            &stack,
            "",
            &json!({"query": {"match": {"request.body.notes": "glucose secret"}}}),
            &[],
        ),
        400,
        "bad-search",
    );
    let q = term("request.body.patient.email.raw", json!("leak@example.com"));
    assert_problem(
        &search(&stack, "?from=yesterday", &q, &[]),
        400,
        "bad-search",
    );
    assert_problem(
        &search(&stack, "?from=-1d&to=-2d", &q, &[]),
        400,
        "bad-search",
    );
    let resp = search(&stack, "?from=-30y", &q, &[]);
    assert_problem(&resp, 400, "bad-search");
    assert!(resp.json()["detail"]
        .as_str()
        .unwrap()
        .contains("max_epochs"));
    let resp = stack.send(
        "POST",
        SEARCH,
        &[("content-type", "application/json")],
        br#"{"query":{"term":{"request.body.patient.email.raw":"leak@example.com"}}"#,
    );
    assert_problem(&resp, 400, "bad-json");
    assert!(
        stack.recorded().is_empty(),
        "no plaintext search reached the vendor"
    );
    let logs = stack.all_logs();
    assert!(!logs.contains("leak@example.com") && !logs.contains("glucose secret"));

    // A term on a plaintext field is forwarded as it came.
    let q = term("user_id.raw", json!("user_12345"));
    assert_eq!(search(&stack, "", &q, &[]).status, 200);
    assert_eq!(stack.recorded()[0].body, q.to_string().as_bytes());
}

/// `n` streams through the unseal route at once, each answered (the upstream holds the
/// answers until all `n` arrived) with values under one kid no VM holds yet. Returns how
/// many streams had to wait for the key.
fn one_unseen_kid(stack: &Arc<Stack>, kid: &str, n: usize) -> u64 {
    let key = stack.sealing_key(kid);
    let body = format!(
        r#"{{"v":"{}","n":"{}"}}"#,
        det(&key, "many-at-once"),
        seal(&key, Mode::Deterministic, ValueType::Number, "2.50")
    );
    let stat = |name: &str| stack.stat(&format!("wasmcustom.veil.{name}"));
    let (requests, fetched, waits, opened) = (
        kid_requests(stack),
        stat("keys.kid_fetch_ok"),
        stat("keys.kid_waits"),
        stat("unseal.values_opened"),
    );
    let barrier = n.to_string();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (stack, body, barrier) = (Arc::clone(stack), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                http::request(
                    stack.listen,
                    "POST",
                    "/api/reflect",
                    &[
                        ("content-type", "application/json"),
                        ("x-demo-barrier", barrier.as_str()),
                    ],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    for t in threads {
        let resp = t.join().unwrap().expect("response");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), r#"{"v":"many-at-once","n":2.50}"#);
    }
    assert_eq!(
        kid_requests(stack),
        requests + 1,
        "{n} streams needing {kid} made one keyservice request"
    );
    assert_eq!(stat("keys.kid_fetch_ok"), fetched + 1);
    assert_eq!(stat("unseal.values_opened"), opened + 2 * n as u64);
    // Later requests find the key in the VM or in shared data.
    assert_eq!(reflect(stack, body.as_bytes(), &[]).status, 200);
    assert_eq!(kid_requests(stack), requests + 1);
    stat("keys.kid_waits") - waits
}

/// Runs [`one_unseen_kid`] with fresh kids until streams did wait for one another (the
/// answers arrive together, but a fast keyservice can still answer before Envoy has read
/// them all on a busy machine): the waiting streams are then resumed from another context.
fn concurrent_unseen_kid(concurrency: u32, n: usize) {
    let stack = Arc::new(start(json!({}), concurrency));
    // Let every worker settle its first key fetch.
    std::thread::sleep(Duration::from_millis(500));
    let mut waited = Vec::new();
    for kid in [
        "r1.2023-01",
        "r1.2022-01",
        "r1.2021-01",
        "r1.2020-01",
        "r1.2019-01",
    ] {
        let w = one_unseen_kid(&stack, kid, n);
        waited.push(w);
        if w >= 2 {
            break;
        }
    }
    assert!(
        waited.iter().any(|w| *w >= 2),
        "streams never waited for a shared fetch: {waited:?}"
    );
    if concurrency > 1 {
        // The other worker found the claim taken and took the key from shared data.
        assert!(stack.stat("wasmcustom.veil.keys.kid_from_shared") >= 1);
    }
}

#[test]
fn concurrent_streams_in_one_worker_share_one_key_request() {
    concurrent_unseen_kid(1, 12);
}

#[test]
fn concurrent_streams_across_workers_share_one_key_request() {
    concurrent_unseen_kid(2, 12);
}

#[test]
fn the_search_double_answers_from_recorded_events() {
    let stack = keep_stack();
    let events = json!([
        {"user_id": "u1", "request": {"verb": "GET", "body": {"tags": ["a", "b"], "n": 2}}, "transaction_id": "t1"},
        {"user_id": "u2", "request": {"verb": "POST", "body": {"tags": ["b"], "n": 1}}},
        {"user_id": "u3", "request": {"verb": "POST", "body": {"tags": ["c"], "n": 3}}}
    ]);
    let post = |path: &str, body: &Value| {
        http::request(
            stack.upstream,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(post("/v1/events/batch", &events).status, 200);
    let ask = |q: Value| {
        let r = post("/v1/search/~/search/events", &q);
        assert_eq!(r.status, 200);
        r.json()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_source"]["user_id"].as_str().unwrap().to_string())
            .collect()
    };
    let v = ask(json!({"query": {"bool": {"must": [{"term": {"request.verb.raw": "POST"}}]}}}));
    assert_eq!(
        (v["hits"]["total"].clone(), ids(&v)),
        (json!(2), vec!["u2".to_string(), "u3".into()])
    );
    let v = ask(
        json!({"post_filter": {"terms": {"request.body.tags": ["b"]}}, "sort": [{"request.body.n": "desc"}]}),
    );
    assert_eq!(ids(&v), ["u1", "u2"]);
    assert_eq!(v["hits"]["hits"][0]["sort"], json!([2]));
    assert_eq!(v["hits"]["hits"][0]["_id"], "t1");
    let v = ask(json!({"query": {"match": {"user_id": {"query": "u3"}}},
                       "aggs": {"verbs": {"terms": {"field": "request.verb.raw"}}}}));
    assert_eq!(ids(&v), ["u3"]);
    assert_eq!(
        v["aggregations"]["verbs"]["buckets"],
        json!([{"key": "POST", "doc_count": 1}])
    );
    let v = ask(json!({"size": 1}));
    assert_eq!((v["hits"]["total"].clone(), ids(&v).len()), (json!(3), 1));
}

#[test]
fn without_the_keyservice_values_stay_sealed_and_searches_fail_closed() {
    let mut stack = keep_stack();
    let key = stack.sealing_key("r1.2021-01");
    let sealed = det(&key, "needs-an-old-key");
    stack.keyservice_proc.kill();
    let resp = reflect(&stack, json!({"v": sealed}).to_string().as_bytes(), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["v"], sealed, "kept as it is");
    assert!(stack.stat("wasmcustom.veil.keys.kid_fetch_failed") >= 1);
    assert_eq!(stack.stat("wasmcustom.veil.keys.kid_fetch_unknown"), 0);

    let searches = |s: &Stack| {
        s.recorded()
            .iter()
            .filter(|r| r.path.starts_with("/v1/search/"))
            .count()
    };
    let q = json!({"query": {"term": {"request.body.patient.email.raw": "down@example.com"}}});
    let resp = search(&stack, "?from=2021-02-01", &q, &[]);
    assert_problem(&resp, 503, "key-unavailable");
    assert_eq!(searches(&stack), 0, "the plaintext search did not leave");
    // Epochs whose keys the VM holds need no keyservice.
    assert_eq!(search(&stack, "?from=-7d", &q, &[]).status, 200);
    assert_eq!(searches(&stack), 1);
    assert!(!stack.all_logs().contains("down@example.com"));
}
