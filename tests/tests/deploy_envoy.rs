//! The standalone Envoy configs in `envoy/`, each loaded by the real pinned Envoy: every one
//! validates (`--mode validate` also configures the Veil filter, so its plugin JSON is
//! checked too), and the Seal config runs traffic with TLS origination to a local TLS
//! "vendor" whose certificate comes from a test CA.

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use veil_core::relay::ClientIdSecret;
use veil_e2e::check::{kids_in, unseal};
use veil_e2e::deploy::{
    envoy_validate, py_ok, scratch_dir, tls_vendor, Envoy, TestCa, RELAY_SECRET,
};
use veil_e2e::{
    fixture, free_port, http, native_module, relay, render, repo_root, wasm_path, Stack,
};

/// The configs shipped in `envoy/` (YAML only; the demo's filter JSON is its companion).
const SHIPPED: &[&str] = &[
    "veil-demo.yaml",
    "veil-relay-native.yaml",
    "veil-relay.yaml",
    "veil-seal-native.yaml",
    "veil-seal.yaml",
];

fn s(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// `tests/deploy/override.py` on `src` with `args` into `dir/out`.
fn override_config(src: &Path, dir: &Path, out: &str, args: &[String]) -> PathBuf {
    let dst = dir.join(out);
    let mut a: Vec<&OsStr> = vec![s(src), s(&dst)];
    a.extend(args.iter().map(OsStr::new));
    py_ok("override.py", &a);
    dst
}

#[test]
fn every_config_in_the_envoy_folder_is_covered_and_validates() {
    let mut found: Vec<String> = fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    found.sort();
    assert_eq!(found, SHIPPED, "a new config in envoy/ needs a test here");
    let dir = scratch_dir("validate");
    let wasm = format!("--wasm={}", wasm_path().display());

    // The demo template, rendered by the script the demo and compose use.
    let demo = dir.join("demo.yaml");
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/render-envoy.py"))
        .arg(repo_root().join("envoy/veil-demo.yaml"))
        .arg(&demo)
        .envs([
            ("VEIL_LISTEN_ADDR", "127.0.0.1"),
            ("VEIL_LISTEN_PORT", "10000"),
            ("VEIL_ADMIN_ADDR", "127.0.0.1"),
            ("VEIL_ADMIN_PORT", "9901"),
            ("VEIL_UPSTREAM_ADDR", "127.0.0.1"),
            ("VEIL_UPSTREAM_PORT", "18080"),
            ("VEIL_KEYSERVICE_ADDR", "127.0.0.1"),
            ("VEIL_KEYSERVICE_PORT", "9911"),
        ])
        .env_remove("VEIL_FILTER")
        .env("VEIL_WASM", wasm_path())
        .env(
            "VEIL_FILTER_CONFIG_FILE",
            repo_root().join("envoy/veil-demo.filter.json"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "render-envoy.py: {out:?}");
    envoy_validate(&demo).unwrap_or_else(|e| panic!("{e}"));

    // The seal config as shipped, only the wasm path pointed at the build.
    let seal = override_config(
        &repo_root().join("envoy/veil-seal.yaml"),
        &dir,
        "seal.yaml",
        std::slice::from_ref(&wasm),
    );
    envoy_validate(&seal).unwrap_or_else(|e| panic!("{e}"));

    // The relay config as shipped, only the wasm path pointed at the build.
    let relay = override_config(
        &repo_root().join("envoy/veil-relay.yaml"),
        &dir,
        "relay.yaml",
        std::slice::from_ref(&wasm),
    );
    envoy_validate(&relay).unwrap_or_else(|e| panic!("{e}"));

    // The native variants as shipped: they load `libveil.so` by name from the search path
    // (envoy_validate points ENVOY_DYNAMIC_MODULES_SEARCH_PATH at the installed build).
    native_module();
    for name in ["veil-seal-native.yaml", "veil-relay-native.yaml"] {
        envoy_validate(&repo_root().join("envoy").join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    let _ = fs::remove_dir_all(&dir);
}

/// The native Seal config, its addresses pointed at the test processes, runs in the real Envoy
/// with the module found on the search path: events reach the TLS vendor sealed.
#[test]
fn native_seal_config_seals_through_the_module() {
    native_module();
    let stack = Stack::start();
    let dir = scratch_dir("seal-native");
    let ca = TestCa::new(&dir, &["api.moesif.net", "api.moesif.com"]);
    let (_vendor, vendor_addr) = tls_vendor(&dir, stack.upstream, &ca);
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let args = vec![
        format!("--listen={listen}"),
        format!("--admin={admin}"),
        format!("--cluster=moesif_collector={vendor_addr}"),
        format!("--cluster=moesif_api={vendor_addr}"),
        format!("--cluster=veil_keyservice={}", stack.keyservice),
        format!("--ca={}", ca.ca_cert.display()),
    ];
    let path = override_config(
        &repo_root().join("envoy/veil-seal-native.yaml"),
        &dir,
        "seal-native.yaml",
        &args,
    );
    let envoy = Envoy::start("seal-native", &dir, &path, admin).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(envoy.shell, veil_e2e::Shell::Native);
    envoy.wait_for_keys();
    assert!(
        envoy.proc.log_text().contains("ABI version v0.2.0 matched"),
        "{}",
        envoy.proc.log_text()
    );
    stack.clear_recorded();
    let event = fixture("event.json");
    let r = http::request(
        listen,
        "POST",
        "/collector/v1/events",
        &[("content-type", "application/json")],
        &event,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].header("x-test-tls-sni"), Some("api.moesif.net"));
    assert!(!kids_in(&rec[0].body).is_empty(), "the event left sealed");
    assert_eq!(
        unseal(&stack, &rec[0].body),
        event,
        "unseals to the original"
    );
    assert!(envoy.stat("wasmcustom.veil.seal.requests") >= 1);
    let _ = fs::remove_dir_all(&dir);
}

/// `--mode validate` runs the filter's `on_configure`: an invalid plugin configuration is a
/// validation failure, so validating a config also checks its Veil JSON.
#[test]
fn validate_mode_configures_the_filter() {
    let dir = scratch_dir("validate-bad");
    let template = fs::read_to_string(repo_root().join("envoy/veil-demo.yaml")).unwrap();
    let vars = |cfg: &str| {
        vec![
            ("VEIL_LISTEN_ADDR", "127.0.0.1".to_string()),
            ("VEIL_LISTEN_PORT", "10000".into()),
            ("VEIL_ADMIN_ADDR", "127.0.0.1".into()),
            ("VEIL_ADMIN_PORT", "9901".into()),
            ("VEIL_UPSTREAM_ADDR", "127.0.0.1".into()),
            ("VEIL_UPSTREAM_PORT", "18080".into()),
            ("VEIL_KEYSERVICE_ADDR", "127.0.0.1".into()),
            ("VEIL_KEYSERVICE_PORT", "9911".into()),
            veil_e2e::Shell::from_env().binary_var(),
            ("VEIL_FILTER_CONFIG", cfg.to_string()),
        ]
    };
    let good = dir.join("good.yaml");
    let cfg = veil_e2e::demo_filter_config().to_string();
    fs::write(&good, render(&template, &vars(&cfg))).unwrap();
    envoy_validate(&good).unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.join("bad.yaml");
    let cfg = r#"{"keyservice":{"cluster":"veil_keyservice","token_env":"VEIL_KEYSERVICE_TOKEN"},"routes":[{"prefix":"collector","seal":{"profile":"moesif"}}]}"#;
    fs::write(&bad, render(&template, &vars(cfg))).unwrap();
    let e = envoy_validate(&bad).expect_err("an invalid plugin config must not validate");
    assert!(e.contains("routes[0].prefix: must start with '/'"), "{e}");
    let _ = fs::remove_dir_all(&dir);
}

/// The shipped seal config with its addresses pointed at the test processes; `ca` replaces
/// the system CA bundle when given.
fn seal_envoy(
    stack: &Stack,
    dir: &Path,
    vendor: SocketAddr,
    ca: Option<&Path>,
) -> (Envoy, SocketAddr) {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut args = vec![
        format!("--listen={listen}"),
        format!("--admin={admin}"),
        format!("--cluster=moesif_collector={vendor}"),
        format!("--cluster=moesif_api={vendor}"),
        format!("--cluster=veil_keyservice={}", stack.keyservice),
        format!("--wasm={}", wasm_path().display()),
    ];
    if let Some(ca) = ca {
        args.push(format!("--ca={}", ca.display()));
    }
    let path = override_config(
        &repo_root().join("envoy/veil-seal.yaml"),
        dir,
        "seal.yaml",
        &args,
    );
    let envoy = Envoy::start("seal", dir, &path, admin).unwrap_or_else(|e| panic!("{e}"));
    envoy.wait_for_keys();
    (envoy, listen)
}

#[test]
fn seal_config_seals_and_originates_tls_with_sni_and_validation() {
    let stack = Stack::start();
    let dir = scratch_dir("seal-tls");
    let ca = TestCa::new(&dir, &["api.moesif.net", "api.moesif.com"]);
    let (vendor, vendor_addr) = tls_vendor(&dir, stack.upstream, &ca);
    let (seal, listen) = seal_envoy(&stack, &dir, vendor_addr, Some(&ca.ca_cert));

    // Collector: sealed, to api.moesif.net over TLS.
    stack.clear_recorded();
    let event = fixture("event.json");
    let r = http::request(
        listen,
        "POST",
        "/collector/v1/events",
        &[("content-type", "application/json")],
        &event,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    let fwd = &rec[0];
    assert_eq!(
        (fwd.method.as_str(), fwd.path.as_str()),
        ("POST", "/v1/events")
    );
    assert_eq!(fwd.header("host"), Some("api.moesif.net"));
    assert_eq!(fwd.header("x-test-tls-sni"), Some("api.moesif.net"));
    let version = fwd.header("x-test-tls-version").unwrap_or_default();
    assert!(matches!(version, "TLSv1.2" | "TLSv1.3"), "{version:?}");
    assert!(!kids_in(&fwd.body).is_empty(), "the event left sealed");
    let text = String::from_utf8_lossy(&fwd.body);
    for secret in [
        "078-05-1120",
        "jane@example.com",
        "Jane Q. Public",
        "203.0.113.7",
    ] {
        assert!(!text.contains(secret), "{secret} left in the clear");
    }
    assert_eq!(unseal(&stack, &fwd.body), event, "unseals to the original");
    assert!(seal.stat("cluster.moesif_collector.ssl.handshake") >= 1);

    // Management API: to api.moesif.com over TLS, /api/ becomes /v1/; the vendor's answer
    // holds the sealed event, which comes back unsealed.
    let search = fixture("search-request-plaintext.json");
    let r = http::request(
        listen,
        "POST",
        "/api/search/~/search/events",
        &[("content-type", "application/json")],
        &search,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = stack.recorded();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[1].path, "/v1/search/~/search/events");
    assert_eq!(rec[1].header("host"), Some("api.moesif.com"));
    assert_eq!(rec[1].header("x-test-tls-sni"), Some("api.moesif.com"));
    assert!(seal.stat("cluster.moesif_api.ssl.handshake") >= 1);
    let answer = String::from_utf8_lossy(&r.body);
    assert!(
        !answer.contains("veil:v1:") && !answer.contains("veil:v2:"),
        "the answer is unsealed: {answer}"
    );
    assert!(
        answer.contains("jane@example.com"),
        "the event came back: {answer}"
    );

    // Nothing but the two routes reaches the vendor.
    stack.clear_recorded();
    let r = http::request(listen, "POST", "/v1/events", &[], &event).unwrap();
    assert_eq!(r.status, 404);
    assert!(stack.recorded().is_empty());
    drop((seal, vendor));
    let _ = fs::remove_dir_all(&dir);
}

/// With the shipped trust (the system CA bundle), a vendor whose certificate does not chain
/// to it gets no request at all: the handshake fails verification.
#[test]
fn seal_config_refuses_a_vendor_certificate_outside_the_system_bundle() {
    let stack = Stack::start();
    let dir = scratch_dir("seal-untrusted");
    let ca = TestCa::new(&dir, &["api.moesif.net", "api.moesif.com"]);
    let (vendor, vendor_addr) = tls_vendor(&dir, stack.upstream, &ca);
    let (seal, listen) = seal_envoy(&stack, &dir, vendor_addr, None);
    stack.clear_recorded();
    let r = http::request(
        listen,
        "POST",
        "/collector/v1/events",
        &[("content-type", "application/json")],
        &fixture("event.json"),
    )
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(stack.recorded().is_empty(), "nothing reached the vendor");
    assert!(seal.stat("cluster.moesif_collector.ssl.fail_verify_error") >= 1);
    drop((seal, vendor));
    let _ = fs::remove_dir_all(&dir);
}

/// The shipped relay config, addresses pointed at the test processes, runs: it issues
/// client ids signed with the secret from the environment, Envoy's CORS filter answers
/// preflights for the configured origin only, pass-through routes reach the app with the
/// added headers, an encoded request reaches the app decoded and its answer decodes, and a
/// plaintext request to a relayed route is refused before the app.
#[test]
fn relay_config_runs_pairing_encoded_requests_cors_and_route_rules() {
    let stack = Stack::start();
    let dir = scratch_dir("relay");
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let path = override_config(
        &repo_root().join("envoy/veil-relay.yaml"),
        &dir,
        "relay.yaml",
        &[
            format!("--listen={listen}"),
            format!("--admin={admin}"),
            format!("--cluster=app={}", stack.upstream),
            format!("--cluster=veil_keyservice={}", stack.keyservice),
            format!("--wasm={}", wasm_path().display()),
        ],
    );
    let envoy = Envoy::start("relay", &dir, &path, admin).unwrap_or_else(|e| panic!("{e}"));
    stack.clear_recorded();

    // Client id: signed with VEIL_RELAY_CLIENT_ID_SECRET, as the seed's CLIENT_ID_SECRET.
    let r = http::get(listen, "/veil/relay").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-veil-client-id").unwrap_or_default().to_string();
    let secret = ClientIdSecret::new(RELAY_SECRET.as_bytes()).unwrap();
    assert!(
        secret.verify(&id),
        "{id:?} is signed with the configured secret"
    );
    let other = ClientIdSecret::new(b"another secret of at least 32 bytes.....").unwrap();
    assert!(!other.verify(&id));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["version"].as_i64(), v["client_id"].as_str()),
        (Some(2), Some(id.as_str()))
    );

    // Pairing and one encoded request to a relayed route: the app gets the plaintext
    // request, the client decodes the answer, nothing readable crossed in between.
    let pairs = relay::pair(listen, &id, 1);
    stack.clear_recorded();
    let enc = pairs[0].encode(
        &id,
        1,
        "POST",
        "/api/orders?card=4111-secret",
        &[("x-app-secret", "secret-header")],
        Some(b"{\"note\":\"secret-body\"}"),
    );
    for secret in ["/api/orders", "4111-secret", "secret-header", "secret-body"] {
        let wire = format!("{} {:?}", enc.target, enc.headers);
        assert!(!wire.contains(secret), "{secret} on the wire");
        assert!(!String::from_utf8_lossy(&enc.body).contains(secret));
    }
    let r = enc.send(listen);
    let d = pairs[0]
        .decode(1, "POST", &r)
        .unwrap_or_else(|e| panic!("decoding the answer: {e} ({})", r.text()));
    assert_eq!(d.status, 200);
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        (rec[0].method.as_str(), rec[0].path.as_str()),
        ("POST", "/api/orders?card=4111-secret")
    );
    assert_eq!(rec[0].header("x-app-secret"), Some("secret-header"));
    assert_eq!(rec[0].body, b"{\"note\":\"secret-body\"}");
    // HEADERS on a relayed answer: kept readable (visible_response_headers).
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    // CORS: a preflight from the configured origin is answered by Envoy...
    stack.clear_recorded();
    let preflight = |origin: &str| {
        http::request(
            listen,
            "OPTIONS",
            "/veil/pair",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type, x-veil-client-id",
                ),
            ],
            b"",
        )
        .unwrap()
    };
    let ok = preflight("https://app.example.com");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let methods = ok
        .header("access-control-allow-methods")
        .unwrap_or_default();
    for m in ["OPTIONS", "HEAD", "GET", "POST"] {
        assert!(methods.contains(m), "{m} allowed: {methods}");
    }
    // ...and gets no CORS grant from any other origin.
    // The relay's own answers carry the grant too (a cross-origin client reads them).
    let r = http::request(
        listen,
        "GET",
        "/veil/relay",
        &[("origin", "https://app.example.com")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("x-veil-client-id"), "{exposed}");
    let evil = preflight("https://evil.example");
    assert_eq!(evil.header("access-control-allow-origin"), None);
    assert!(
        stack.recorded().is_empty(),
        "preflights never reach the app"
    );

    // Pass-through route: to the app as it is, with the added response header (HEADERS).
    let r = http::get(listen, "/health").unwrap();
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].path, "/health");

    // A relayed route in plaintext: refused by the filter, nothing reaches the app.
    stack.clear_recorded();
    let r = http::request(listen, "POST", "/api/orders", &[], b"{\"card\":\"4111\"}").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let p: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["code"], "relay-required");
    assert!(stack.recorded().is_empty());
    // A /veil/ path the relay does not serve stops at Envoy.
    let r = http::get(listen, "/veil/unknown").unwrap();
    assert_eq!(
        (r.status, r.header("x-veil-relay-error")),
        (404, Some("relay-route-not-allowed"))
    );
    assert!(stack.recorded().is_empty());
    drop(envoy);
    let _ = fs::remove_dir_all(&dir);
}
