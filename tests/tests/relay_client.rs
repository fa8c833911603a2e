//! The relay end to end with the Rust client (`client/`, lib and `veil-relay` CLI) through
//! real Envoy + filter + keyservice + demo upstream: every method and body kind through a
//! recording hop that sees no plaintext; two Envoy instances sharing one Redis-backed
//! keyservice serve one pairing and one replay window; a Redis restart makes the client
//! re-pair and the request still succeeds.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use veil_e2e::hop::{contains, RecordingHop};
use veil_e2e::relay as wire;
use veil_e2e::{Redis, Stack, StackOptions};
use veil_relay::{Client, Options};

/// A client pinned to the stack's relay key (taken out of band: `relay-key show`).
fn client(stack: &Stack, addr: std::net::SocketAddr, pairs: usize) -> Client {
    Client::new(
        &format!("http://{addr}/veil"),
        Options {
            pairs,
            timeout: Duration::from_secs(20),
            server_key: Some(stack.relay_key()),
            ..Options::default()
        },
    )
    .unwrap()
}

fn h(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn with_relay(relay: Value) -> Value {
    let mut config = veil_e2e::demo_filter_config();
    for (k, v) in relay.as_object().cloned().unwrap_or_default() {
        config["relay"][k] = v;
    }
    config
}

#[test]
fn client_lib_every_method_exactly_and_no_plaintext_on_the_wire() {
    let stack = Stack::start();
    let hop = RecordingHop::start(stack.listen);
    let c = client(&stack, hop.addr, 3);
    let binary: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    let text = b"{\"card\":\"4111-secret-card\"}".to_vec();
    let cases: Vec<(&str, &str, Option<Vec<u8>>)> = vec![
        ("GET", "/app/echo/a?token=secret-token-1", None),
        ("POST", "/app/echo/b?x=secret-x", Some(text.clone())),
        ("PUT", "/app/echo/c", Some(binary.clone())),
        ("PATCH", "/app/echo/d", Some(Vec::new())),
        ("DELETE", "/app/echo/e?hard=secret-hard", None),
    ];
    for (method, path, body) in &cases {
        stack.clear_recorded();
        let r = c
            .request(
                method,
                path,
                &h(&[
                    ("authorization", "Bearer secret-bearer"),
                    ("x-tenant", "secret-tenant"),
                ]),
                body.as_deref(),
            )
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let echo: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(echo["method"], *method);
        let rec = stack.recorded();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].method, *method);
        assert_eq!(rec[0].path, *path);
        assert_eq!(rec[0].body, body.clone().unwrap_or_default());
        assert_eq!(rec[0].header("authorization"), Some("Bearer secret-bearer"));
        assert_eq!(rec[0].header("x-tenant"), Some("secret-tenant"));
        assert!(rec[0].headers.keys().all(|k| !k.starts_with("x-veil-")));
    }
    // The answer the upstream crafted, exactly.
    let r = c
        .request(
            "POST",
            "/app/reflect",
            &h(&[
                ("x-reflect-status", "418"),
                ("x-reflect-content-type", "image/png"),
                ("x-reflect-header", "x-answer: secret-answer"),
            ]),
            Some(&binary),
        )
        .unwrap();
    assert_eq!((r.status, r.body.len()), (418, binary.len()));
    assert_eq!(r.body, binary);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("x-answer"), Some("secret-answer"));

    let wire_bytes = hop.all();
    for needle in [
        &b"/app/"[..],
        b"secret-token-1",
        b"secret-x",
        b"secret-hard",
        b"secret-bearer",
        b"secret-tenant",
        b"secret-card",
        b"secret-answer",
        b"image/png",
    ] {
        assert!(
            !contains(&wire_bytes, needle),
            "the hop saw {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(!contains(&wire_bytes, &binary[1000..1064]));
    let stats = c.stats();
    assert_eq!(stats.pairings, 1);
    assert_eq!(stats.repairs, 0);
}

fn relay_cli() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| veil_e2e::repo_root().join("target"));
    let p = target.join("debug/veil-relay");
    assert!(
        p.exists(),
        "{} is missing: cargo build -p veil-relay",
        p.display()
    );
    p
}

#[test]
fn cli_veil_relay() {
    let stack = Stack::start();
    let url = format!("http://{}/veil", stack.listen);
    let pin = stack.relay_pin();
    let dir = stack.dir.join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("body.bin");
    std::fs::write(&data, b"cli body \x00\x01\x02").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(relay_cli())
            .args(["--url", &url, "--server-key", &pin])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "-H",
        "x-cli: yes",
        "POST",
        "/app/reflect?from=cli",
        "--data",
        &format!("@{}", data.display()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, b"cli body \x00\x01\x02");
    assert!(err.contains("HTTP 200"), "{err}");
    let rec = stack.recorded();
    assert_eq!(
        rec.last().map(|r| r.path.as_str()),
        Some("/app/reflect?from=cli")
    );
    assert_eq!(rec.last().and_then(|r| r.header("x-cli")), Some("yes"));

    // A decoded 404 is still an answer (exit 0), or 22 with --fail.
    let (code, _, err) = run(&["GET", "/app/reflect", "-H", "x-reflect-status: 404"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    let (code, _, _) = run(&[
        "--fail",
        "GET",
        "/app/reflect",
        "-H",
        "x-reflect-status: 404",
    ]);
    assert_eq!(code, Some(22));
    // A relay refusal (the decoded path is outside the relay routes) fails.
    let (code, _, err) = run(&["GET", "/admin"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("relay-route-not-allowed"), "{err}");
}

fn redis_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("veil-e2e-redis-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two Envoys on one Redis-backed keyservice (global replay): a pairing made through one is
/// served by the other, and a request replayed to the other instance is refused.
#[test]
fn two_envoys_share_one_pairing_and_window() {
    let redis = Redis::start(&redis_dir("two"));
    let config = with_relay(json!({"replay": {"mode": "global"}}));
    let stack = Stack::start_with(StackOptions {
        filter_config: config.clone(),
        keyservice_env: vec![("REDIS_URL".into(), redis.url())],
        ..Default::default()
    });
    let second = stack.start_extra_envoy(&config);
    let id = wire::discover(stack.listen);
    let p = wire::pair(stack.listen, &id, 1).remove(0);
    // Both instances serve one origin (as behind a load balancer): the requests name the
    // first's authority, which the parts are bound to, whichever instance they reach.
    let host = stack.listen.to_string();
    let e1 = p
        .encode(&id, 1, "POST", "/app/echo/one", &[], Some(b"first"))
        .with_wire_header("host", &host);
    let r = e1.send(second.listen);
    assert_eq!(p.decode(1, "POST", &r).unwrap().status, 200);
    // The same request to the instance that paired: the shared window refuses it.
    let r = e1.send(stack.listen);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.header("x-veil-relay-error"), Some("relay-replay"));
    // Both serve further requests on the pair.
    for (seq, addr) in [(2, stack.listen), (3, second.listen), (4, stack.listen)] {
        let r = p
            .encode(&id, seq, "GET", "/app/echo", &[], None)
            .with_wire_header("host", &host)
            .send(addr);
        assert_eq!(p.decode(seq, "GET", &r).unwrap().status, 200, "seq {seq}");
    }
    // And the R1 client through either instance.
    let c = client(&stack, second.listen, 1);
    assert_eq!(
        c.request("GET", "/app/echo/x", &[], None).unwrap().status,
        200
    );
}

/// Global mode on Redis: Redis restarts (every session lost); the client's next request is
/// refused `relay-pair-unknown`, it re-pairs and the request succeeds.
#[test]
fn redis_restart_client_repairs() {
    let mut redis = Redis::start(&redis_dir("restart"));
    let stack = Stack::start_with(StackOptions {
        filter_config: with_relay(json!({"replay": {"mode": "global"}})),
        keyservice_env: vec![("REDIS_URL".into(), redis.url())],
        ..Default::default()
    });
    let c = client(&stack, stack.listen, 2);
    for i in 0..3 {
        let r = c
            .request(
                "POST",
                "/app/reflect",
                &[],
                Some(format!("before {i}").as_bytes()),
            )
            .unwrap();
        assert_eq!(r.body, format!("before {i}").as_bytes());
    }
    assert_eq!(c.stats().repairs, 0);
    // Twice: the keyservice's first store call after each restart meets the dropped
    // connection and must retry on a new one, so the client's very next (idempotent)
    // request succeeds (re-pairing: the pairs are gone) with no relay-unavailable between.
    for round in 0..2 {
        redis.restart();
        let body = format!("after restart {round}");
        let r = c
            .request("PUT", "/app/reflect", &[], Some(body.as_bytes()))
            .unwrap_or_else(|e| panic!("first request after Redis restart {round}: {e}"));
        assert_eq!(r.body, body.as_bytes());
    }
    // A POST is never sent twice (protocol v2 §6): after a restart its first attempt is
    // refused `relay-pair-unknown` (unauthenticated: it cannot tell the relay from a hop)
    // and reported; the client replaced the dead pair, so the caller's next POST works.
    let one = client(&stack, stack.listen, 1);
    let r = one
        .request("POST", "/app/reflect", &[], Some(b"post"))
        .unwrap();
    assert_eq!(r.body, b"post");
    redis.restart();
    stack.clear_recorded();
    let e = one
        .request("POST", "/app/reflect", &[], Some(b"post after restart"))
        .unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-pair-unknown"), "{e}");
    assert_eq!(one.stats().retries, 0, "a POST is not retried");
    assert!(stack.recorded().is_empty(), "{:?}", stack.recorded());
    let r = one
        .request("POST", "/app/reflect", &[], Some(b"post again"))
        .unwrap();
    assert_eq!(r.body, b"post again");
    assert!(c.stats().repairs >= 1, "{:?}", c.stats());
    let r = c.request("GET", "/app/echo", &[], None).unwrap();
    assert_eq!(r.status, 200);
}
