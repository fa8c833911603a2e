//! End-to-end tests of the `veil-keyservice` binary: real processes, a temp dir, loopback only.

mod common;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use common::*;
use veil_core::crypto::keys::{Epoch, Kid, RootKey, RotationMonths};
use veil_keyservice::keyring::Keyring;
use veil_keyservice::providers::LocalProvider;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    veil_keyservice::keyring::now_unix()
}

/// Unwraps root `version` of the env's keyring through the library API.
fn unwrap_root(env: &Env, version: u32) -> RootKey {
    let keyring = Keyring::load(&env.keyring()).unwrap();
    let provider = LocalProvider::open(&env.kek(), "test").unwrap();
    let entry = keyring.roots.iter().find(|r| r.version == version).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(entry.unwrap(&provider))
        .unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn assert_problem(r: &Response, status: u16, type_suffix: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/problem+json")
    );
    let j = r.json();
    assert_eq!(j["status"], status);
    assert!(
        j["type"].as_str().unwrap().ends_with(type_suffix),
        "{}",
        r.body
    );
    assert!(
        j["title"].is_string() && j["detail"].is_string(),
        "{}",
        r.body
    );
    j
}

#[test]
fn init_status_serve_and_the_api() {
    let env = Env::new();

    // init: creates the KEK (an explicit, printed step) and the keyring, both 0600.
    let o = env.init();
    assert!(o.stdout.contains("created local KEK file"), "{}", o.stdout);
    assert!(o.stderr.contains("DEVELOPMENT ONLY"), "{}", o.stderr);
    assert_eq!(mode(&env.kek()), 0o600);
    assert_eq!(mode(&env.keyring()), 0o600);
    let provider = LocalProvider::open(&env.kek(), "test").unwrap();
    use veil_keyservice::providers::KeyProvider;
    let key_id = provider.key_id().to_string();
    assert!(o.stdout.contains(&key_id), "{}", o.stdout);
    let kek_hex = std::fs::read_to_string(env.kek())
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(kek_hex.len(), 64);

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.keyring()).unwrap()).unwrap();
    assert_eq!(doc["format"], "veil-keyring/1");
    let r1 = &doc["roots"][0];
    assert_eq!(r1["version"], 1);
    assert_eq!(r1["state"], "active");
    assert_eq!(r1["kek"]["provider"], "local");
    assert_eq!(r1["kek"]["key_id"], key_id.as_str());
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(r1["wrapped"].as_str().unwrap())
        .unwrap();
    assert_eq!(wrapped.len(), 12 + 32 + 16);
    let created = r1["created_at"].as_str().unwrap();
    assert!(created.len() == 20 && created.ends_with('Z'), "{created}");

    let root = unwrap_root(&env, 1);
    assert_eq!(r1["check"], hex::encode(root.check_value()));
    let root_hex = hex::encode(root.as_bytes());
    for out in [&o.stdout, &o.stderr] {
        assert!(!out.contains(&kek_hex) && !out.contains(&root_hex));
    }

    // status: every root unwraps and matches.
    let s = env.run(&["keyring", "status"]);
    assert!(s.status.success(), "{}", s.all());
    assert!(s.stdout.contains("r1"), "{}", s.stdout);
    assert!(s.stdout.contains("active"), "{}", s.stdout);
    assert!(s.stdout.contains("[current]"), "{}", s.stdout);
    assert!(
        s.stdout.contains("unwrap ok, check value ok"),
        "{}",
        s.stdout
    );
    assert!(s.stdout.contains(&key_id), "{}", s.stdout);
    assert!(s.stdout.contains(created), "{}", s.stdout);
    assert!(!s.all().contains(&kek_hex) && !s.all().contains(&root_hex));

    // serve.
    let server = env.serve();
    let rotation = RotationMonths::DEFAULT;

    let h = server.get("/healthz", None);
    assert_eq!(
        (h.status, h.json()),
        (200, serde_json::json!({"status":"ok"}))
    );
    assert_eq!(server.get("/readyz", None).status, 200);
    assert_eq!(metric(&server, "veil_keyservice_ready"), 1);

    // Current keys: the clock's epoch and the next one, equal to derive_dek of the root.
    let before = Epoch::containing(now(), rotation);
    let r = server.get("/v1/data-keys/current", Some(TOKEN));
    let after = Epoch::containing(now(), rotation);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").map(String::as_str),
        Some("no-store")
    );
    let j = r.json();
    assert_eq!(j["current_root"], 1);
    assert_eq!(j["rotation_months"], 12);
    let keys = j["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let kid0: Kid = keys[0]["kid"].as_str().unwrap().parse().unwrap();
    assert!(kid0.epoch == before || kid0.epoch == after, "{kid0}");
    let epoch = kid0.epoch;
    let expected = [epoch, epoch.next(rotation)];
    for (k, e) in keys.iter().zip(expected) {
        assert_eq!(k["kid"], Kid::new(1, e).to_string());
        assert_eq!(k["dek"], b64url(root.derive_dek(e).as_bytes()));
        assert_eq!(k["not_before"], e.start_unix());
        assert_eq!(k["not_after"], e.next(rotation).start_unix());
    }
    assert!(keys[0]["not_before"].as_i64().unwrap() <= now());
    assert!(now() < keys[0]["not_after"].as_i64().unwrap() + 5);
    assert_eq!(keys[0]["not_after"], keys[1]["not_before"]);

    // One kid: a past epoch, and the current one (same as in /current).
    let past: Epoch = "2020-01".parse().unwrap();
    let r = server.get("/v1/data-keys/r1.2020-01", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let k = r.json();
    assert_eq!(k["kid"], "r1.2020-01");
    assert_eq!(k["dek"], b64url(root.derive_dek(past).as_bytes()));
    assert_eq!(k["not_before"], past.start_unix());
    assert_eq!(k["not_after"], past.next(rotation).start_unix());
    let r = server.get(
        &format!("/v1/data-keys/{}", Kid::new(1, epoch)),
        Some(TOKEN),
    );
    assert_eq!(r.json(), keys[0]);

    // 401 without a token, with a wrong one, with another scheme.
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        for path in [
            "/v1/data-keys/current",
            "/v1/data-keys/r1.2020-01",
            "/v1/other",
        ] {
            let r = http_raw(server.port, path, auth.as_deref());
            let j = assert_problem(&r, 401, "unauthorized");
            assert!(!j.to_string().contains("dek"));
            assert!(r
                .headers
                .get("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")));
        }
    }
    // The scheme is case-insensitive.
    let r = http_raw(
        server.port,
        "/v1/data-keys/current",
        Some(&format!("bearer {TOKEN}")),
    );
    assert_eq!(r.status, 200);

    // 400 for a kid that does not parse; 404 for an unknown root or a not-yet-issued epoch.
    for bad in [
        "nope",
        "r0.2026-01",
        "r1.2026-13",
        "r1.2026-1",
        "1.2026-01",
        "r01.2026-01",
    ] {
        let r = server.get(&format!("/v1/data-keys/{bad}"), Some(TOKEN));
        assert_problem(&r, 400, "bad-kid");
    }
    let r = server.get("/v1/data-keys/r2.2020-01", Some(TOKEN));
    let j = assert_problem(&r, 404, "unknown-root");
    assert!(j["detail"].as_str().unwrap().contains("r2"));
    let far = epoch.next(rotation).next(rotation);
    let r = server.get(&format!("/v1/data-keys/r1.{far}"), Some(TOKEN));
    assert_problem(&r, 404, "kid-not-issued");
    assert_problem(&server.get("/nope", None), 404, "not-found");

    // Graceful stop on SIGTERM: exit 0.
    let out = server.stop();
    assert!(out.status.success(), "{}", out.all());
    assert!(
        out.stdout.contains("veil-keyservice stopped"),
        "{}",
        out.stdout
    );
}

#[test]
fn metrics_count_data_key_requests_and_auth_failures() {
    let env = Env::new();
    env.init();
    let server = env.serve();
    let cur = "veil_keyservice_data_key_requests_total{endpoint=\"current\"}";
    let kid = "veil_keyservice_data_key_requests_total{endpoint=\"kid\"}";
    let auth = "veil_keyservice_auth_failures_total";
    assert_eq!(metric(&server, cur), 0);
    assert_eq!(metric(&server, kid), 0);
    assert_eq!(metric(&server, auth), 0);

    for _ in 0..3 {
        assert_eq!(server.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
    }
    assert_eq!(
        server.get("/v1/data-keys/r1.2021-01", Some(TOKEN)).status,
        200
    );
    assert_eq!(
        server.get("/v1/data-keys/r1.2022-01", Some(TOKEN)).status,
        200
    );
    assert_eq!(server.get("/v1/data-keys/current", None).status, 401);
    assert_eq!(server.get("/v1/data-keys/current", Some("x")).status, 401);
    // Health, readiness and metrics are not data-key requests.
    server.get("/healthz", None);
    server.get("/readyz", None);

    assert_eq!(metric(&server, cur), 3);
    assert_eq!(metric(&server, kid), 2);
    assert_eq!(metric(&server, auth), 2);
    let m = server.get("/metrics", None);
    assert!(m
        .headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    assert!(m
        .body
        .contains("# TYPE veil_keyservice_data_key_requests_total counter"));
    assert!(m.body.contains("veil_keyservice_ready 1"));
}

#[test]
fn trace_logs_never_contain_token_keys_or_kek() {
    let mut env = Env::new();
    env.init();
    env.set("VEIL_LOG", "trace");
    let kek_hex = std::fs::read_to_string(env.kek())
        .unwrap()
        .trim()
        .to_string();
    let root = unwrap_root(&env, 1);
    let server = env.serve();

    let mut deks = Vec::new();
    let r = server.get("/v1/data-keys/current?probe=QUERYSECRET123", Some(TOKEN));
    assert_eq!(r.status, 200);
    for k in r.json()["keys"].as_array().unwrap() {
        deks.push(k["dek"].as_str().unwrap().to_string());
    }
    let r = server.get("/v1/data-keys/r1.2019-01", Some(TOKEN));
    assert_eq!(r.status, 200);
    deks.push(r.json()["dek"].as_str().unwrap().to_string());
    let wrong = "WRONGTOKEN-WRONGTOKEN-WRONGTOKEN-0001";
    assert_eq!(server.get("/v1/data-keys/current", Some(wrong)).status, 401);
    assert_eq!(server.get("/v1/data-keys/bad", Some(TOKEN)).status, 400);
    assert_eq!(
        server.get("/v1/data-keys/r9.2019-01", Some(TOKEN)).status,
        404
    );
    server.get("/metrics", None);

    let out = server.stop();
    assert!(out.status.success());
    let logs = out.all();
    // The logs did record the requests (so the check below is not vacuous)…
    assert!(
        logs.contains("\"path\":\"/v1/data-keys/current\""),
        "{logs}"
    );
    assert!(logs.contains("\"level\":\"TRACE\""), "{logs}");
    // …and none of the secrets.
    let mut secrets = vec![
        TOKEN.to_string(),
        wrong.to_string(),
        "QUERYSECRET123".to_string(),
        kek_hex.clone(),
        kek_hex.to_uppercase(),
        hex::encode(root.as_bytes()),
        b64url(root.as_bytes()),
    ];
    for d in &deks {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(d)
            .unwrap();
        secrets.push(d.clone());
        secrets.push(base64::engine::general_purpose::STANDARD.encode(&raw));
        secrets.push(hex::encode(&raw));
    }
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret appeared in the logs");
    }
    assert!(!logs.to_ascii_lowercase().contains("authorization"));
}

#[test]
fn serve_refuses_a_missing_keyring_and_never_creates_one() {
    let mut c = Env::new();
    c.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let o = c.run(&["serve"]);
    assert!(!o.status.success());
    let line = o.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("veil-keyservice keyring init"), "{line}");
    assert!(line.contains("veil-keyring.json"), "{line}");
    assert!(!c.keyring().exists() && !c.kek().exists());
    // Default command is serve too; default keyring path is relative to the working directory.
    let mut d = Env::new();
    d.unset("VEIL_KEYRING").set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let o = d.run(&[]);
    assert!(!o.status.success());
    assert!(
        o.stderr.contains("keyring veil-keyring.json: not found"),
        "{}",
        o.stderr
    );
    assert!(!d.keyring().exists());
    // status too.
    let o = d.run(&["keyring", "status"]);
    assert!(!o.status.success());
    assert!(o.stderr.contains("keyring init"), "{}", o.stderr);
}

#[test]
fn init_twice_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.init();
    let before = std::fs::read(env.keyring()).unwrap();
    let kek_before = std::fs::read(env.kek()).unwrap();
    let o = env.run(&["keyring", "init"]);
    assert!(!o.status.success());
    assert!(o.stderr.contains("error: keyring"), "{}", o.stderr);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    assert_eq!(std::fs::read(env.keyring()).unwrap(), before);
    assert_eq!(std::fs::read(env.kek()).unwrap(), kek_before);
    // No temp files were left in the directory.
    let names: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn init_reuses_an_existing_kek() {
    let env = Env::new();
    env.init();
    let kek = std::fs::read(env.kek()).unwrap();
    std::fs::remove_file(env.keyring()).unwrap();
    let o = env.init();
    assert!(
        o.stdout.contains("using existing local KEK file"),
        "{}",
        o.stdout
    );
    assert_eq!(std::fs::read(env.kek()).unwrap(), kek);
}

/// Rewrites root 0 of the keyring with `f`.
fn tamper(env: &Env, f: impl FnOnce(&mut serde_json::Value)) {
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.keyring()).unwrap()).unwrap();
    f(&mut doc["roots"][0]);
    std::fs::write(env.keyring(), serde_json::to_string(&doc).unwrap()).unwrap();
}

fn assert_refused(env: &Env, needle: &str) {
    let mut e = Env::new();
    e.vars = env.vars.clone();
    e.set("VEIL_KEYSERVICE_TOKEN", TOKEN).set(
        "VEIL_KEYSERVICE_LISTEN",
        &format!("127.0.0.1:{}", free_port()),
    );
    let o = e.run(&["serve"]);
    assert!(!o.status.success(), "serve accepted a bad keyring");
    assert!(!o.stdout.contains("listening on"), "{}", o.stdout);
    let line = o.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("roots[0] (r1)"), "{line}");
    assert!(line.contains(needle), "{line}");
    let s = env.run(&["keyring", "status"]);
    assert!(!s.status.success(), "status accepted a bad keyring");
    assert!(s.stdout.contains("FAILED"), "{}", s.stdout);
    assert!(s.stderr.contains("error: "), "{}", s.stderr);
}

#[test]
fn tampered_check_value_is_refused() {
    let env = Env::new();
    env.init();
    tamper(&env, |r| {
        let c = r["check"].as_str().unwrap();
        let flipped = if c.starts_with('0') { "1" } else { "0" };
        r["check"] = format!("{flipped}{}", &c[1..]).into();
    });
    assert_refused(&env, "does not match its check value");
}

#[test]
fn flipped_wrapped_byte_is_refused() {
    let env = Env::new();
    env.init();
    tamper(&env, |r| {
        let std = base64::engine::general_purpose::STANDARD;
        let mut w = std.decode(r["wrapped"].as_str().unwrap()).unwrap();
        w[30] ^= 0x01;
        r["wrapped"] = std.encode(w).into();
    });
    assert_refused(&env, "does not authenticate");
}

#[test]
fn root_wrapped_under_another_kek_is_refused() {
    let env = Env::new();
    env.init();
    std::fs::remove_file(env.kek()).unwrap();
    LocalProvider::create(&env.kek(), "test").unwrap();
    assert_refused(&env, "the configured KEK is local local:");
}

#[test]
fn kek_file_with_open_permissions_is_refused() {
    let mut env = Env::new();
    env.init();
    std::fs::set_permissions(env.kek(), std::fs::Permissions::from_mode(0o644)).unwrap();
    env.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let o = env.run(&["serve"]);
    assert!(!o.status.success());
    assert!(
        o.stderr.contains("error: VEIL_LOCAL_KEK_FILE"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("0644"), "{}", o.stderr);
}

#[test]
fn token_is_required_and_must_be_long() {
    let mut env = Env::new();
    env.init();
    let o = env.run(&["serve"]);
    assert!(!o.status.success());
    assert!(
        o.stderr.contains("error: VEIL_KEYSERVICE_TOKEN"),
        "{}",
        o.stderr
    );

    let short = "only-31-characters-long-token-x";
    assert_eq!(short.len(), 31);
    env.set("VEIL_KEYSERVICE_TOKEN", short);
    let o = env.run(&["serve"]);
    assert!(!o.status.success());
    assert!(o.stderr.contains("VEIL_KEYSERVICE_TOKEN"), "{}", o.stderr);
    assert!(o.stderr.contains("at least 32 characters"), "{}", o.stderr);
    assert!(!o.all().contains(short));
    assert!(!o.stdout.contains("listening on"));

    // From a file.
    let f = env.dir.path().join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    env.unset("VEIL_KEYSERVICE_TOKEN")
        .set("VEIL_KEYSERVICE_TOKEN_FILE", f.to_str().unwrap());
    let server = env.serve();
    assert_eq!(server.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
}

#[test]
fn non_loopback_listen_is_refused() {
    let mut env = Env::new();
    env.init();
    env.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    for addr in ["0.0.0.0:9911", "[::]:9911", "192.0.2.1:9911"] {
        env.set("VEIL_KEYSERVICE_LISTEN", addr);
        let o = env.run(&["serve"]);
        assert!(!o.status.success(), "{addr}");
        assert!(
            o.stderr.contains("error: VEIL_KEYSERVICE_LISTEN"),
            "{}",
            o.stderr
        );
        assert!(
            o.stderr.contains("VEIL_KEYSERVICE_ALLOW_NON_LOOPBACK=true"),
            "{}",
            o.stderr
        );
        assert!(!o.stdout.contains("listening on"));
    }
    let o = env.run(&["serve", "--listen", "0.0.0.0:9911"]);
    assert!(o.stderr.contains("error: --listen"), "{}", o.stderr);
}

#[test]
fn config_errors_are_one_line_and_name_the_setting() {
    let mut env = Env::new();
    env.set("KMS_PROVIDER", "aws-kms");
    let o = env.run(&["keyring", "init"]);
    assert!(!o.status.success());
    assert_eq!(
        o.stderr.trim(),
        "error: AWS_CUSTOMER_KEY_ID: required with KMS_PROVIDER=aws-kms (the KMS key ARN, key id or alias that wraps the roots)"
    );
    assert!(!env.kek().exists() && !env.keyring().exists());

    env.set("KMS_PROVIDER", "vault");
    let o = env.run(&["keyring", "status"]);
    assert!(!o.status.success());
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(o
        .stderr
        .contains("local, aws-kms, aws-cloudhsm, azure-keyvault"));

    let mut env = Env::new();
    env.set("ENCRYPTION_ROTATION_MONTHS", "0");
    let o = env.run(&["keyring", "init"]);
    assert!(!o.status.success());
    assert!(
        o.stderr.starts_with("error: ENCRYPTION_ROTATION_MONTHS"),
        "{}",
        o.stderr
    );

    let mut env = Env::new();
    env.set("VEIL_LOG_FORMAT", "xml");
    let o = env.run(&["keyring", "init"]);
    assert!(
        o.stderr.starts_with("error: VEIL_LOG_FORMAT"),
        "{}",
        o.stderr
    );
    assert!(!o.status.success());
}

#[test]
fn rotation_months_shape_the_epochs() {
    let mut env = Env::new();
    env.init();
    env.set("MOESIF_ENCRYPTION_ROTATION_MONTHS", "3");
    let root = unwrap_root(&env, 1);
    let server = env.serve();
    let r = server.get("/v1/data-keys/current", Some(TOKEN));
    let j = r.json();
    assert_eq!(j["rotation_months"], 3);
    let rot = RotationMonths::new(3).unwrap();
    let kid: Kid = j["keys"][0]["kid"].as_str().unwrap().parse().unwrap();
    assert!((kid.epoch.month() - 1) % 3 == 0, "{kid}");
    assert_eq!(
        j["keys"][1]["kid"],
        Kid::new(1, kid.epoch.next(rot)).to_string()
    );
    assert_eq!(
        j["keys"][1]["dek"],
        b64url(root.derive_dek(kid.epoch.next(rot)).as_bytes())
    );
}
