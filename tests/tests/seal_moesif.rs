//! Moesif collector events through real Envoy with the Veil filter: what reaches the
//! upstream is sealed per policy, nothing sealed leaks, and unsealing gives back the
//! original bytes exactly.

use std::time::Duration;

use serde_json::{json, Value};
use veil_core::crypto::value::SealedValue;
use veil_e2e::check::{assert_no_leak, unseal, Found};
use veil_e2e::{fixture, wait_for, Shell, Stack, StackOptions};

/// The plaintext fields of an event (DESIGN.md, "Seal: policies"): paths relative to the
/// event, `*` = any array element.
const EVENT_PLAINTEXT: &[&str] = &[
    "request.time",
    "request.verb",
    "request.api_version",
    "response.time",
    "response.status",
    "user_id",
    "company_id",
    "direction",
    "weight",
    "transaction_id",
    "api_version",
];

/// Walks original and forwarded documents together: same structure and keys; a leaf is
/// either plaintext (listed) and unchanged, or a Veil value.
fn check_event(orig: &Value, fwd: &Value, path: &str, found: &mut Found) {
    match (orig, fwd) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            assert_eq!(ka, kb, "keys differ at {path:?}");
            found.plaintext.extend(a.keys().cloned());
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                check_event(v, &b[k], &p, found);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "array length differs at {path}");
            for (x, y) in a.iter().zip(b) {
                check_event(x, y, &format!("{path}.*"), found);
            }
        }
        (Value::Null, _) => assert_eq!(fwd, &Value::Null, "null at {path}"),
        (leaf, fwd_leaf) => {
            if path == "request.uri" {
                let (o, f) = (leaf.as_str().unwrap(), fwd_leaf.as_str().unwrap());
                let (o_base, o_query) = o.split_once('?').unwrap_or((o, ""));
                let (f_base, f_query) = f.split_once('?').unwrap_or((f, ""));
                assert_eq!(o_base, f_base, "uri path stays readable");
                found.plaintext.push(o_base.to_string());
                for (op, fp) in o_query.split('&').zip(f_query.split('&')) {
                    let (ok, ov) = op.split_once('=').unwrap();
                    let (fk, fv) = fp.split_once('=').unwrap();
                    assert_eq!(ok, fk, "query key stays readable");
                    assert!(SealedValue::parse(fv).is_some(), "query value sealed: {fv}");
                    found.sealed.push(ov.to_string());
                }
            } else if EVENT_PLAINTEXT.contains(&path) {
                assert_eq!(leaf, fwd_leaf, "{path} stays plaintext");
                found.plaintext.push(leaf.to_string());
            } else {
                let s = fwd_leaf
                    .as_str()
                    .unwrap_or_else(|| panic!("{path} not sealed: {fwd_leaf}"));
                assert!(
                    SealedValue::parse(s).is_some(),
                    "{path} not a Veil value: {s}"
                );
                found.sealed.push(match leaf {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
        }
    }
}

/// The client sent a length. The native shell holds the headers until the body is sealed and
/// forwards the sealed length; proxy-wasm cannot (a paused headers callback gets no body
/// without `allow_on_headers_stop_iteration`), so its headers leave without a length and
/// Envoy frames the body chunked. Either way no stale length reaches the upstream.
fn assert_framing(fwd: &veil_e2e::Recorded) {
    match Shell::from_env() {
        Shell::Native => {
            let len = fwd
                .header("content-length")
                .unwrap_or_else(|| panic!("no content-length forwarded: {:?}", fwd.headers));
            assert_eq!(len.parse::<usize>().unwrap(), fwd.body.len());
            assert_eq!(fwd.header("transfer-encoding"), None);
        }
        Shell::Wasm => assert_eq!(fwd.header("content-length"), None, "{:?}", fwd.headers),
    }
}

fn seal_and_check(stack: &Stack, route: &str, fixture_name: &str) {
    stack.clear_recorded();
    let original = fixture(fixture_name);
    let resp = stack.post_json(&format!("/collector{route}"), &original);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    let fwd = &rec[0];
    assert_eq!((fwd.method.as_str(), fwd.path.as_str()), ("POST", route));
    assert_framing(fwd);

    let orig_v: Value = serde_json::from_slice(&original).unwrap();
    let fwd_v: Value = serde_json::from_slice(&fwd.body).expect("forwarded body is JSON");
    let mut found = Found::default();
    match (&orig_v, &fwd_v) {
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                check_event(x, y, "", &mut found);
            }
        }
        _ => check_event(&orig_v, &fwd_v, "", &mut found),
    }
    assert!(
        found.sealed.len() >= 25,
        "only {} values sealed",
        found.sealed.len()
    );
    assert_no_leak(&fwd.body, &found, "forwarded body");
    // The request's own content-type header is the client's, not event data.
    found.plaintext.push("application/json".into());
    assert_no_leak(
        serde_json::to_string(&fwd.headers).unwrap().as_bytes(),
        &found,
        "forwarded headers",
    );
    assert_eq!(
        unseal(stack, &fwd.body),
        original,
        "unseal gives back the exact bytes"
    );
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

#[test]
fn events_are_sealed_per_policy_and_unseal_exactly() {
    let stack = Stack::start();
    seal_and_check(&stack, "/v1/events", "event.json");
    seal_and_check(&stack, "/v1/events/batch", "events-batch.json");
    // A chunked request stays chunked: the filter adds no length the client did not send.
    stack.clear_recorded();
    let event = fixture("event.json");
    let resp = stack.send(
        "POST",
        "/collector/v1/events",
        &[
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
        ],
        &event,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rec = stack.recorded();
    assert_eq!(
        rec[0].header("content-length"),
        None,
        "{:?}",
        rec[0].headers
    );
    assert_ne!(rec[0].body, event, "sealed");
    assert_eq!(unseal(&stack, &rec[0].body), event, "round trip");
    assert!(stack.stat("wasmcustom.veil.seal.requests") >= 3);
    assert!(stack.stat("wasmcustom.veil.seal.values_sealed") >= 31);
}

#[test]
fn deterministic_values_are_equal_within_an_epoch() {
    let stack = Stack::start();
    let body = br#"[{"request":{"time":"2026-11-22T10:00:00Z","ip_address":"203.0.113.7"},"user_id":"u1"},
                    {"request":{"time":"2026-11-22T10:00:01Z","ip_address":"203.0.113.7"},"user_id":"u2"},
                    {"request":{"time":"2026-11-22T10:00:02Z","ip_address":"203.0.113.8"},"user_id":"u3"}]"#;
    assert_eq!(
        stack.post_json("/collector/v1/events/batch", body).status,
        200
    );
    let v: Value = serde_json::from_slice(&stack.recorded()[0].body).unwrap();
    let ip = |i: usize| v[i]["request"]["ip_address"].as_str().unwrap().to_string();
    assert_eq!(ip(0), ip(1), "equal plaintexts, equal ciphertexts");
    assert_ne!(ip(0), ip(2), "different plaintexts differ");
}

#[test]
fn no_keyservice_call_per_event_in_steady_state() {
    let stack = Stack::start();
    let event = fixture("event.json");
    // Let every worker settle its first fetch.
    std::thread::sleep(Duration::from_millis(500));
    let ks_before = stack.keyservice_metric("veil_keyservice_data_key_requests_total", "");
    let callouts_before = stack.stat("cluster.veil_keyservice.upstream_rq_total");
    for _ in 0..100 {
        assert_eq!(stack.post_json("/collector/v1/events", &event).status, 200);
    }
    let ks_after = stack.keyservice_metric("veil_keyservice_data_key_requests_total", "");
    let callouts_after = stack.stat("cluster.veil_keyservice.upstream_rq_total");
    assert!(
        ks_before >= 1,
        "the filter fetched its key from the keyservice"
    );
    assert_eq!(
        ks_after, ks_before,
        "keyservice saw key requests during 100 events"
    );
    assert_eq!(
        callouts_after, callouts_before,
        "filter made callouts during 100 events"
    );
    assert_eq!(stack.stat("wasmcustom.veil.seal.requests"), 100);
}

fn assert_problem(resp: &veil_e2e::Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    let p = resp.json();
    assert_eq!(p["status"], status);
    assert_eq!(p["code"], code);
}

#[test]
fn bad_input_is_refused_and_nothing_is_forwarded() {
    let mut config = veil_e2e::demo_filter_config();
    config["max_body_bytes"] = json!(4096);
    let stack = Stack::start_with(StackOptions {
        filter_config: config,
        ..Default::default()
    });
    let secret = br#"{"request":{"time":"2026-11-22T10:00:00Z","body":{"ssn":"078-05-1120"}},"#;
    assert_problem(
        &stack.post_json("/collector/v1/events", secret),
        400,
        "bad-json",
    );
    assert_problem(
        &stack.post_json("/collector/v1/events", b"{\"a\":1} trailing"),
        400,
        "bad-json",
    );
    assert_problem(
        &stack.post_json("/collector/v1/events/batch", &fixture("events-batch.json")),
        413,
        "body-too-large",
    );
    // Without content-length (chunked), the limit is enforced on the buffered body.
    assert_problem(
        &stack.send(
            "POST",
            "/collector/v1/events/batch",
            &[("transfer-encoding", "chunked")],
            &fixture("events-batch.json"),
        ),
        413,
        "body-too-large",
    );
    assert_problem(
        &stack.send(
            "POST",
            "/collector/v1/events",
            &[("content-encoding", "br")],
            b"{}",
        ),
        415,
        "unsupported-content-encoding",
    );
    assert_problem(
        &stack.post_json("/collector/v1/unknown", b"{}"),
        404,
        "route-not-sealed",
    );
    assert!(stack.recorded().is_empty(), "nothing reached the upstream");

    // Issue #18: a body on GET (or HEAD, OPTIONS) to an unknown route left unsealed.
    for method in ["GET", "OPTIONS", "DELETE"] {
        assert_problem(
            &stack.send(
                method,
                "/collector/v1/config",
                &[("content-type", "application/json")],
                br#"{"ssn":"078-05-1120"}"#,
            ),
            404,
            "route-not-sealed",
        );
    }
    assert!(stack.recorded().is_empty(), "nothing reached the upstream");

    // Reads on the collector prefix pass untouched.
    assert_eq!(
        stack.send("GET", "/collector/v1/config", &[], b"").status,
        200
    );
    let rec = stack.recorded();
    assert_eq!((rec.len(), rec[0].path.as_str()), (1, "/v1/config"));
    assert!(!stack.all_logs().contains("078-05-1120"));
}

#[test]
fn without_a_data_key_requests_get_503_and_nothing_is_forwarded() {
    let mut config = veil_e2e::demo_filter_config();
    // The keyservice refuses this token, so the filter never gets a key.
    config["keyservice"] = json!({"token": "wrong-token-wrong-token-wrong-token-0000"});
    let stack = Stack::start_with(StackOptions {
        filter_config: config,
        wait_for_keys: false,
        ..Default::default()
    });
    wait_for("a failed key fetch", Duration::from_secs(10), || {
        (stack.stat("wasmcustom.veil.keys.fetch_failed") >= 1).then_some(())
    });
    assert_problem(
        &stack.post_json("/collector/v1/events", &fixture("event.json")),
        503,
        "key-unavailable",
    );
    assert!(stack.recorded().is_empty());
    assert!(stack.keyservice_metric("veil_keyservice_auth_failures_total", "") >= 1);
}

#[test]
fn an_invalid_filter_config_is_refused_by_envoy_naming_the_path() {
    let mut config = veil_e2e::demo_filter_config();
    config["routes"][0]["prefix"] = json!("collector");
    let err = Stack::try_start_with(StackOptions {
        filter_config: config,
        ..Default::default()
    })
    .err()
    .expect("Envoy must refuse the configuration");
    assert!(
        err.contains("routes[0].prefix: must start with '/'"),
        "Envoy's log names the path:\n{err}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_bodies_are_decoded_sealed_and_forwarded_identity() {
    let stack = Stack::start();
    let batch = fixture("events-batch.json");
    for (encoding, body) in [("gzip", gzip(&batch)), ("deflate", zlib(&batch))] {
        stack.clear_recorded();
        let resp = stack.send(
            "POST",
            "/collector/v1/events/batch",
            &[
                ("content-type", "application/json"),
                ("content-encoding", encoding),
            ],
            &body,
        );
        assert_eq!(resp.status, 200, "{encoding}: {}", resp.text());
        let rec = stack.recorded();
        assert_eq!(
            rec[0].header("content-encoding"),
            None,
            "{encoding}: forwarded as identity"
        );
        assert_framing(&rec[0]);
        let fwd: Value = serde_json::from_slice(&rec[0].body).expect("forwarded body is JSON");
        let ssn = fwd[0]["request"]["body"]["patient"]["ssn"]
            .as_str()
            .unwrap();
        assert!(SealedValue::parse(ssn).is_some(), "{encoding}: sealed");
        assert_eq!(
            unseal(&stack, &rec[0].body),
            batch,
            "{encoding}: round trip"
        );
    }
    stack.clear_recorded();
    // 64 MiB of JSON whitespace compress to ~64 KiB: refused at the 1 MiB limit, no OOM.
    let mut bomb_doc = b"[".to_vec();
    bomb_doc.resize(64 << 20, b' ');
    bomb_doc.push(b']');
    let bomb = gzip(&bomb_doc);
    assert!(bomb.len() < 1 << 20);
    let resp = stack.send(
        "POST",
        "/collector/v1/events/batch",
        &[("content-encoding", "gzip")],
        &bomb,
    );
    assert_problem(&resp, 413, "body-too-large");
    let resp = stack.send(
        "POST",
        "/collector/v1/events",
        &[("content-encoding", "gzip")],
        b"not gzip at all",
    );
    assert_problem(&resp, 400, "bad-content-encoding");
    assert!(stack.recorded().is_empty());
    assert_eq!(stack.stat("wasm.veil.vm_reload_success"), 0);
}
