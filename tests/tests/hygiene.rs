//! Secrets stay out of logs and the filter cannot talk to the keyservice without its token.
//! The whole stack runs at its most verbose (Envoy `debug` with `wasm:trace`, the
//! keyservice at `trace`); every log is searched for marked plaintext, the token and the
//! data keys, raw, JSON-escaped, base64 and hex, on every line (the filter's callouts are
//! signed, so Envoy's header dumps carry no token).

use base64::Engine;
use serde_json::{json, Value};
use veil_e2e::{http, Stack, StackOptions, TOKEN};

/// Marked values sent in sealed places; each must never appear in a log.
const MARKS: &[&str] = &[
    "HYGMARK-ssn-0c11e5",
    "HYGMARK-mail-8e2b@example.com",
    "HYGMARK-q-19d7",
];
const WRONG_TOKEN: &str = "HYGWRONG-token-token-token-token-0000";

/// A secret in the forms a log line could carry it.
fn forms(secret: &[u8]) -> Vec<String> {
    let std = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8_lossy(secret).into_owned();
    let escaped = serde_json::to_string(&text).unwrap();
    let mut out = vec![
        text.clone(),
        escaped.trim_matches('"').to_string(),
        std.encode(secret),
        url.encode(secret),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    // base64 at the other two alignments, edge characters dropped.
    for shift in 1..3 {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(secret);
        let enc = std.encode(&padded);
        out.push(
            enc.get(4..enc.len().saturating_sub(4))
                .unwrap_or_default()
                .to_string(),
        );
    }
    out.retain(|s| s.len() >= 8);
    out
}

fn verbose_stack() -> Stack {
    Stack::start_with(StackOptions {
        keyservice_env: vec![("VEIL_LOG".into(), "trace".into())],
        envoy_log_args: vec![
            "--log-level".into(),
            "debug".into(),
            "--component-log-level".into(),
            "wasm:trace,http:trace,dynamic_modules:trace".into(),
        ],
        ..Default::default()
    })
}

#[test]
fn no_plaintext_key_or_token_in_any_log_at_debug_and_trace() {
    let mut stack = verbose_stack();
    let event = |body: Value| {
        json!({
            "request": {"time": "2026-11-22T10:00:00Z", "uri": format!("https://api.example.com/a?q={}", MARKS[2]),
                        "verb": "POST", "headers": {"x-ssn": MARKS[0]}, "body": body},
            "response": {"time": "2026-11-22T10:00:01Z", "status": 200, "body": {"email": MARKS[1]}}
        })
        .to_string()
    };
    // Sealed, refused as bad JSON, refused as too deep: all carry the marks.
    let ok = stack.post_json(
        "/collector/v1/events",
        event(json!({"ssn": MARKS[0]})).as_bytes(),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let bad = format!("{}garbage", event(json!({"ssn": MARKS[0]})));
    assert_eq!(
        stack
            .post_json("/collector/v1/events", bad.as_bytes())
            .status,
        400
    );
    let deep = event(json!(null)).replace(
        "null",
        &format!("{}\"{}\"{}", "[".repeat(200), MARKS[0], "]".repeat(200)),
    );
    assert_eq!(
        stack
            .post_json("/collector/v1/events", deep.as_bytes())
            .status,
        400
    );
    // A plaintext search on the unseal route: the term is sealed on its way to the vendor.
    let search = json!({"post_filter": {"bool": {"must": [{"term": {"request.body.email.raw": MARKS[1]}}]}}});
    let s = stack.post_json(
        "/api/search/~/search/events?from=-1d",
        search.to_string().as_bytes(),
    );
    assert!(s.status < 500, "search: {} {}", s.status, s.text());
    // The keyservice without a token and with a wrong one: 401 problem+json.
    for auth in [None, Some(format!("Bearer {WRONG_TOKEN}"))] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = http::request(
            stack.keyservice,
            "GET",
            "/v1/data-keys/current",
            &headers,
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let t = r.json()["type"].as_str().unwrap_or_default().to_string();
        assert!(t.ends_with("unauthorized"), "{t}");
    }
    assert!(stack.keyservice_metric("veil_keyservice_auth_failures_total", "") >= 2);

    // The data keys the filter holds.
    let auth = format!("Bearer {TOKEN}");
    let r = http::request(
        stack.keyservice,
        "GET",
        "/v1/data-keys/current",
        &[("authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let mut secrets: Vec<Vec<u8>> = MARKS.iter().map(|m| m.as_bytes().to_vec()).collect();
    secrets.push(TOKEN.as_bytes().to_vec());
    secrets.push(WRONG_TOKEN.as_bytes().to_vec());
    for k in r.json()["keys"].as_array().unwrap() {
        let dek = k["dek"].as_str().unwrap();
        secrets.push(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(dek)
                .unwrap(),
        );
    }
    // Read the logs only once Envoy has flushed them: stop it first.
    stack.envoy.kill();
    let logs = stack.all_log_files();
    // The logs are verbose (so the search below is not vacuous)…
    assert!(logs.contains("[debug]"), "Envoy logged at debug");
    assert!(logs.contains("[trace]"), "Envoy logged at trace");
    // proxy-wasm prefixes the filter's lines with `wasm log`; a dynamic module's go to
    // Envoy's `dynamic_modules` logger.
    let own_lines = match stack.shell {
        veil_e2e::Shell::Wasm => "wasm log",
        veil_e2e::Shell::Native => "[dynamic_modules]",
    };
    assert!(logs.contains(own_lines), "the filter's own lines are there");
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("TRACE"),
        "keyservice at trace"
    );
    println!(
        "searched {} bytes of logs for {} secrets",
        logs.len(),
        secrets.len()
    );
    // Envoy's own `router` component, at debug, dumps every header of every request it
    // routes, the filter's keyservice callouts included: they are there, and signed (the
    // token itself never leaves the VM).
    let dumps = logs
        .lines()
        .filter(|l| l.contains("'authorization', 'Veil-HMAC-SHA256 t="))
        .count();
    println!("Envoy header dumps of signed keyservice callouts: {dumps}");
    assert!(
        dumps >= 1,
        "Envoy dumped the filter's callouts, with the Veil-HMAC-SHA256 scheme"
    );
    // …and hold none of the secrets in any form, on any line.
    for s in &secrets {
        for f in forms(s) {
            assert!(
                !logs.contains(&f),
                "a secret appeared in the logs (form {} chars)",
                f.len()
            );
        }
    }
}

#[test]
fn filter_config_without_a_token_is_refused() {
    for (keyservice, want) in [
        (
            json!({"cluster": "veil_keyservice"}),
            "a bearer token is required",
        ),
        (
            json!({"token_env": "VEIL_NO_SUCH_VARIABLE"}),
            "VEIL_NO_SUCH_VARIABLE is not set",
        ),
        (
            json!({"token": TOKEN, "token_env": "VEIL_KEYSERVICE_TOKEN"}),
            "not both",
        ),
    ] {
        let mut config = veil_e2e::demo_filter_config();
        config["keyservice"] = keyservice;
        let err = Stack::try_start_with(StackOptions {
            filter_config: config,
            wait_for_keys: false,
            ..Default::default()
        })
        .err()
        .unwrap_or_else(|| panic!("Envoy must refuse a config without a usable token ({want})"));
        assert!(err.contains(want), "Envoy's log says why ({want}):\n{err}");
    }
}
