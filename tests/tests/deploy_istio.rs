//! The Istio manifests in `istio/`: every custom resource validates against the published
//! Istio CRD schema (tests/schemas), the rest passes structural checks, and the Envoy
//! config that results from applying the EnvoyFilter and a WasmPlugin to a base listener
//! (tests/deploy/istio_render.py, as istiod does) is run by the real Envoy with traffic.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use veil_e2e::check::{kids_in, unseal};
use veil_e2e::deploy::{envoy_validate, py, py_ok, scratch_dir, tls_vendor, Envoy, TestCa};
use veil_e2e::{fixture, free_port, http, render, repo_root, wasm_path, Stack};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Every file under `dir`, recursively, as `istio/...` paths.
fn files_under(dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(
                p.strip_prefix(repo_root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &t);
        } else {
            fs::copy(&p, &t).unwrap();
        }
    }
}

#[test]
fn every_manifest_validates_against_the_published_schemas() {
    let out = py_ok(
        "validate.py",
        &[os("istio"), repo_root().join("istio").as_os_str()],
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rendered: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut files: Vec<&str> = Vec::new();
    for line in out.lines() {
        let mut f = line.split(' ');
        match f.next() {
            Some("ok") => {
                files.push(f.next().unwrap());
                *kinds.entry(f.next().unwrap()).or_default() += 1;
            }
            // Strategic-merge patches: checked once merged, below.
            Some("patch") => files.push(f.next().unwrap()),
            Some("rendered") => {
                let k = f.next().unwrap();
                *rendered.entry((k, f.next().unwrap())).or_default() += 1;
            }
            _ => panic!("{line}"),
        }
    }
    let want: BTreeMap<&str, usize> = [
        ("Component", 4),
        ("DestinationRule", 2),
        ("Deployment", 2),
        ("EnvoyFilter", 3),
        ("Gateway", 2),
        ("Kustomization", 4),
        ("Secret", 2),
        ("Service", 2),
        ("ServiceAccount", 2),
        ("ServiceEntry", 1),
        ("VirtualService", 2),
        ("WasmPlugin", 2),
    ]
    .into();
    assert_eq!(kinds, want, "{out}");
    // `kubectl apply -k` of each mode: the keyservice patched into the gateway, with its
    // provider's ServiceAccount (IRSA), each checked against the Kubernetes schemas.
    assert_eq!(
        rendered.get(&("istio/gateway", "Deployment")),
        Some(&1),
        "{out}"
    );
    for mode in ["istio/gateway", "istio/sidecar-egress"] {
        assert_eq!(rendered.get(&(mode, "ServiceAccount")), Some(&1), "{out}");
        assert_eq!(rendered.get(&(mode, "EnvoyFilter")), Some(&1), "{out}");
    }
    // Every YAML file under istio/ was checked.
    let mut on_disk = Vec::new();
    files_under(&repo_root().join("istio"), &mut on_disk);
    on_disk.sort();
    files.sort();
    files.dedup();
    assert_eq!(files, on_disk);
}

/// Each provider component renders into a valid Deployment: the gateway with
/// azure-keyvault (workload identity) and with local (development), not only aws-kms.
#[test]
fn every_provider_overlay_renders_into_a_valid_deployment() {
    for (provider, needs) in [
        (
            "azure-keyvault",
            &["KMS_PROVIDER", "azure.workload.identity/use"][..],
        ),
        ("local", &["VEIL_LOCAL_KEK_FILE", "veil-kek"][..]),
    ] {
        let dir = scratch_dir("istio-provider");
        copy_tree(&repo_root().join("istio"), &dir.join("istio"));
        let k = dir.join("istio/gateway/kustomization.yaml");
        let text = fs::read_to_string(&k).unwrap();
        fs::write(
            &k,
            text.replace(
                "- ../keyservice/aws-kms",
                &format!("- ../keyservice/{provider}"),
            ),
        )
        .unwrap();
        let out = py_ok("validate.py", &[os("istio"), dir.join("istio").as_os_str()]);
        assert!(out.contains("Deployment veil-gateway"), "{out}");
        let dump = py_ok(
            "validate.py",
            &[os("render"), dir.join("istio/gateway").as_os_str()],
        );
        for n in needs {
            assert!(dump.contains(n), "{provider}: {n} not in {dump}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// The validator refuses what Istio, Kubernetes or the structural rules refuse: each
/// mutation of a shipped manifest (in a copy of istio/, rendered as a whole) is an error
/// naming the place.
#[test]
fn the_validator_refuses_broken_manifests() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "sidecar-egress/wasmplugin.yaml",
            "failStrategy: FAIL_CLOSE",
            "failStrategy: FAIL_CLOSED",
            "spec.failStrategy: 'FAIL_CLOSED' is not one of",
        ),
        (
            "sidecar-egress/wasmplugin.yaml",
            "pluginName: veil",
            "pluginNme: veil",
            "'pluginNme' was unexpected",
        ),
        (
            "base/envoyfilter-keyservice.yaml",
            "applyTo: CLUSTER",
            "applyTo: CLUSTERS",
            "configPatches.0.applyTo: 'CLUSTERS' is not one of",
        ),
        (
            "base/egress-moesif.yaml",
            "location: MESH_EXTERNAL",
            "location: OUTSIDE",
            "spec.location: 'OUTSIDE' is not one of",
        ),
        (
            "keyservice/keyservice-sidecar.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "securityContext.readOnlyRootFilesystem must be True",
        ),
        (
            "keyservice/keyservice-sidecar.yaml",
            "runAsNonRoot: true",
            "runAsNonRoot: false",
            "securityContext.runAsNonRoot must be True",
        ),
        (
            "keyservice/keyservice-sidecar.yaml",
            "key: token }",
            "key: tokn }",
            "Secret veil-keyservice has no key tokn",
        ),
        // Kubernetes' own schema (kubernetes-validate): a misspelt field, a wrong type.
        (
            "keyservice/keyservice-sidecar.yaml",
            "readinessProbe:",
            "readinesProbe:",
            "'readinesProbe' was unexpected",
        ),
        (
            "gateway/gateway.yaml",
            "replicas: 2",
            "replicas: two",
            "spec.replicas: 'two' is not of type 'integer'",
        ),
        (
            "keyservice/aws-kms/serviceaccount.yaml",
            "annotations:",
            "anotations:",
            "'anotations' was unexpected",
        ),
        (
            "relay/envoyfilter-relay-gateway.yaml",
            "operation: INSERT_BEFORE",
            "operation: INSERT_BEFOR",
            "patch.operation: 'INSERT_BEFOR' is not one of",
        ),
        (
            "relay/envoyfilter-relay-inbound.yaml",
            "context: SIDECAR_INBOUND",
            "context: INBOUND",
            "match.context: 'INBOUND' is not one of",
        ),
        (
            "relay/relay-env.yaml",
            "key: client-id-secret }",
            "key: client-secret }",
            "Secret veil-relay has no key client-secret",
        ),
        (
            "relay/gateway.yaml",
            "unmatchedPreflights: IGNORE",
            "unmatchedPreflights: DROP",
            "unmatchedPreflights: 'DROP' is not one of",
        ),
        (
            "keyservice/aws-kms/aws-kms.yaml",
            "serviceAccountName: veil-keyservice",
            "serviceAccountName: someone-else",
            "ServiceAccount someone-else is not deployed",
        ),
    ];
    for (file, from, to, msg) in cases {
        let dir = scratch_dir("istio-bad");
        copy_tree(&repo_root().join("istio"), &dir.join("istio"));
        let src = dir.join("istio").join(file);
        let text = fs::read_to_string(&src).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        fs::write(&src, text.replacen(from, to, 1)).unwrap();
        let out = py("validate.py", &[os("istio"), dir.join("istio").as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} with {to:?} validated");
        assert!(err.contains(msg), "{file} with {to:?}: {err}");
        let _ = fs::remove_dir_all(&dir);
    }
    // A kustomization naming a file that is not there.
    let dir = scratch_dir("istio-bad");
    let k = dir.join("kustomization.yaml");
    fs::write(
        &k,
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [gone.yaml]\n",
    )
    .unwrap();
    let out = py("validate.py", &[os("istio"), k.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resources: gone.yaml does not exist"));
    let _ = fs::remove_dir_all(&dir);
}

/// Renders `base` (a tests/deploy template) with its outbound clusters at the local TLS
/// vendor, applies the Istio resources with istio_render.py, points the EnvoyFilter's
/// keyservice cluster at the test keyservice and the DestinationRules' CA at the test CA,
/// and starts Envoy. Returns Envoy, its listen address, the renderer's report and the
/// vendor (kept running).
fn istio_envoy(
    stack: &Stack,
    dir: &Path,
    base: &str,
    resources: &[&str],
    render_args: &[&str],
) -> (Envoy, SocketAddr, String, Envoy) {
    let ca = TestCa::new(dir, &["api.moesif.net", "api.moesif.com"]);
    let (vendor, vendor_addr) = tls_vendor(dir, stack.upstream, &ca);
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let template = fs::read_to_string(repo_root().join("tests/deploy").join(base)).unwrap();
    let base_path = dir.join("base.yaml");
    fs::write(
        &base_path,
        render(
            &template,
            &[
                ("VEIL_ADMIN_PORT", admin.port().to_string()),
                ("VEIL_LISTEN_PORT", listen.port().to_string()),
                ("VEIL_UPSTREAM_PORT", vendor_addr.port().to_string()),
            ],
        ),
    )
    .unwrap();
    let rendered = dir.join("istio.yaml");
    let wasm = wasm_path();
    let res: Vec<_> = resources
        .iter()
        .map(|r| repo_root().join("istio").join(r))
        .collect();
    let mut args: Vec<&OsStr> = vec![base_path.as_os_str(), rendered.as_os_str()];
    args.extend(res.iter().map(|r| r.as_os_str()));
    args.extend(render_args.iter().map(|a| os(a)));
    args.extend([os("--wasm-file"), wasm.as_os_str()]);
    let report = py_ok("istio_render.py", &args);
    // The keyservice cluster exists only if the EnvoyFilter added it, and a TLS context
    // only if a DestinationRule made one: override.py refuses to change what is not there.
    let final_path = dir.join("envoy.yaml");
    py_ok(
        "override.py",
        &[
            rendered.as_os_str(),
            final_path.as_os_str(),
            os(&format!("--cluster=veil_keyservice={}", stack.keyservice)),
            os(&format!("--ca={}", ca.ca_cert.display())),
        ],
    );
    let envoy =
        Envoy::start("istio-envoy", dir, &final_path, admin).unwrap_or_else(|e| panic!("{e}"));
    envoy.wait_for_keys();
    (envoy, listen, report, vendor)
}

fn assert_sealed(stack: &Stack, body: &[u8], event: &[u8]) {
    assert!(!kids_in(body).is_empty(), "the event left sealed");
    let text = String::from_utf8_lossy(body);
    for secret in ["078-05-1120", "jane@example.com", "Jane Q. Public"] {
        assert!(!text.contains(secret), "{secret} left in the clear");
    }
    assert_eq!(unseal(stack, body), event, "unseals to the original");
}

#[test]
fn sidecar_egress_seals_what_the_app_sends_to_the_vendor() {
    let stack = Stack::start();
    let dir = scratch_dir("istio-sidecar");
    let (envoy, listen, report, _vendor) = istio_envoy(
        &stack,
        &dir,
        "istio-base-sidecar.yaml",
        &[
            "base/envoyfilter-keyservice.yaml",
            "base/egress-moesif.yaml",
            "sidecar-egress/wasmplugin.yaml",
        ],
        &[
            "--context=SIDECAR_OUTBOUND",
            "--labels=app=shop,veil.dev/keyservice=true",
            "--port=10080",
            "--namespace=shop",
        ],
    );
    assert!(report.contains("added cluster veil_keyservice"), "{report}");
    assert!(
        report.contains(
            "DestinationRule moesif-collector-tls: TLS origination on outbound|10080||api.moesif.net"
        ),
        "{report}"
    );
    assert!(
        report.contains("WasmPlugin veil-seal: inserted before envoy.filters.http.router"),
        "{report}"
    );
    // The app sends to the vendor's own host and path, as its SDK always did.
    stack.clear_recorded();
    let event = fixture("event.json");
    let r = http::request(
        listen,
        "POST",
        "/v1/events",
        &[
            ("host", "api.moesif.net:10080"),
            ("content-type", "application/json"),
        ],
        &event,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].path, "/v1/events");
    // Left over TLS (the DestinationRule), as the vendor's host.
    assert_eq!(rec[0].header("x-test-tls-sni"), Some("api.moesif.net"));
    assert_sealed(&stack, &rec[0].body, &event);
    assert!(envoy.stat("wasmcustom.veil.keys.fetch_ok") >= 1);
    let _ = fs::remove_dir_all(&dir);
}

/// The sidecar WasmPlugin matches outbound traffic to its port only: a workload without
/// the label, or a port other than 10080, gets no filter.
#[test]
fn sidecar_wasmplugin_selects_only_its_workloads_and_port() {
    let dir = scratch_dir("istio-select");
    let base = dir.join("base.yaml");
    let template =
        fs::read_to_string(repo_root().join("tests/deploy/istio-base-sidecar.yaml")).unwrap();
    fs::write(
        &base,
        render(
            &template,
            &[
                ("VEIL_ADMIN_PORT", "1".into()),
                ("VEIL_LISTEN_PORT", "2".into()),
                ("VEIL_UPSTREAM_PORT", "3".into()),
            ],
        ),
    )
    .unwrap();
    let plugin = repo_root().join("istio/sidecar-egress/wasmplugin.yaml");
    let ef = repo_root().join("istio/base/envoyfilter-keyservice.yaml");
    let wasm = wasm_path();
    let run = |labels: &str, port: &str, ctx: &str| {
        let out = dir.join("out.yaml");
        py_ok(
            "istio_render.py",
            &[
                base.as_os_str(),
                out.as_os_str(),
                ef.as_os_str(),
                plugin.as_os_str(),
                os(&format!("--labels={labels}")),
                os(&format!("--port={port}")),
                os(&format!("--context={ctx}")),
                os("--wasm-file"),
                wasm.as_os_str(),
            ],
        )
    };
    let on = run("veil.dev/keyservice=true", "10080", "SIDECAR_OUTBOUND");
    assert!(on.contains("WasmPlugin veil-seal"), "{on}");
    let other_port = run("veil.dev/keyservice=true", "80", "SIDECAR_OUTBOUND");
    assert!(!other_port.contains("WasmPlugin"), "{other_port}");
    let inbound = run("veil.dev/keyservice=true", "10080", "SIDECAR_INBOUND");
    assert!(!inbound.contains("WasmPlugin"), "{inbound}");
    let unlabelled = run("app=shop", "10080", "SIDECAR_OUTBOUND");
    assert!(unlabelled.trim().is_empty(), "{unlabelled}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn gateway_seals_collector_traffic_and_unseals_management_answers() {
    let stack = Stack::start();
    let dir = scratch_dir("istio-gateway");
    let (_envoy, listen, report, _vendor) = istio_envoy(
        &stack,
        &dir,
        "istio-base-gateway.yaml",
        &[
            "base/envoyfilter-keyservice.yaml",
            "base/egress-moesif.yaml",
            "gateway/wasmplugin.yaml",
        ],
        &[
            "--context=GATEWAY",
            "--labels=app=veil-gateway,istio=veil-gateway,veil.dev/keyservice=true",
            "--port=8080",
            "--namespace=veil",
        ],
    );
    assert!(
        report.contains("WasmPlugin veil-gateway: inserted before"),
        "{report}"
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
    assert_eq!(rec[0].path, "/v1/events");
    assert_eq!(rec[0].header("host"), Some("api.moesif.net"));
    assert_eq!(rec[0].header("x-test-tls-sni"), Some("api.moesif.net"));
    assert_sealed(&stack, &rec[0].body, &event);

    // The management API: the search goes out over TLS to api.moesif.com; the vendor's
    // answer holds the sealed event, which comes back unsealed.
    let r = http::request(
        listen,
        "POST",
        "/api/search/~/search/events",
        &[("content-type", "application/json")],
        &fixture("search-request-plaintext.json"),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = String::from_utf8_lossy(&r.body);
    assert!(
        !answer.contains("veil:v1:") && !answer.contains("veil:v2:"),
        "answer unsealed: {answer}"
    );
    assert!(
        answer.contains("jane@example.com"),
        "the event came back: {answer}"
    );
    let rec = stack.recorded();
    let search = rec.last().unwrap();
    assert_eq!(search.path, "/v1/search/~/search/events");
    assert_eq!(search.header("x-test-tls-sni"), Some("api.moesif.com"));
    let _ = fs::remove_dir_all(&dir);
}

/// Renders a relay base (tests/deploy/istio-base-relay-*.yaml, its app cluster at the demo
/// upstream) with istio/relay's resources as istiod and istio-agent would, validates it
/// with `envoy --mode validate`, points the keyservice cluster at the test keyservice and
/// starts Envoy.
fn relay_envoy(
    stack: &Stack,
    dir: &Path,
    base: &str,
    render_args: &[&str],
) -> (Envoy, SocketAddr, String) {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let template = fs::read_to_string(repo_root().join("tests/deploy").join(base)).unwrap();
    let base_path = dir.join("base.yaml");
    fs::write(
        &base_path,
        render(
            &template,
            &[
                ("VEIL_ADMIN_PORT", admin.port().to_string()),
                ("VEIL_LISTEN_PORT", listen.port().to_string()),
                ("VEIL_UPSTREAM_PORT", stack.upstream.port().to_string()),
            ],
        ),
    )
    .unwrap();
    let rendered = dir.join("istio.yaml");
    let wasm = wasm_path();
    let res: Vec<_> = [
        "base/envoyfilter-keyservice.yaml",
        "relay/gateway.yaml",
        "relay/envoyfilter-relay-gateway.yaml",
        "relay/envoyfilter-relay-inbound.yaml",
    ]
    .iter()
    .map(|r| repo_root().join("istio").join(r))
    .collect();
    let mut args: Vec<&OsStr> = vec![base_path.as_os_str(), rendered.as_os_str()];
    args.extend(res.iter().map(|r| r.as_os_str()));
    args.extend(render_args.iter().map(|a| os(a)));
    args.extend([os("--wasm-file"), wasm.as_os_str()]);
    let report = py_ok("istio_render.py", &args);
    let final_path = dir.join("envoy.yaml");
    py_ok(
        "override.py",
        &[
            rendered.as_os_str(),
            final_path.as_os_str(),
            os(&format!("--cluster=veil_keyservice={}", stack.keyservice)),
        ],
    );
    // The EnvoyFilter's filter and cluster configs, as loaded by the real Envoy.
    envoy_validate(&final_path).unwrap_or_else(|e| panic!("{e}"));
    let envoy =
        Envoy::start("istio-relay", dir, &final_path, admin).unwrap_or_else(|e| panic!("{e}"));
    envoy.wait_for_keys();
    (envoy, listen, report)
}

/// Pairs, sends one encoded request to a relayed route and checks the app got it decoded
/// and the client decodes the answer; a plaintext request to the route is refused.
fn relay_round_trip(stack: &Stack, listen: SocketAddr) {
    let r = http::get(listen, "/veil/relay").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-veil-client-id").unwrap_or_default().to_string();
    let pairs = veil_e2e::relay::pair(listen, &id, 1);
    stack.clear_recorded();
    let enc = pairs[0].encode(
        &id,
        1,
        "POST",
        "/api/orders?card=4111-secret",
        &[("x-app-secret", "secret-header")],
        Some(b"{\"note\":\"secret-body\"}"),
    );
    let r = enc.send(listen);
    let d = pairs[0]
        .decode(1, "POST", &r)
        .unwrap_or_else(|e| panic!("decoding the answer: {e} ({})", r.text()));
    assert_eq!(d.status, 200);
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].path, "/api/orders?card=4111-secret");
    assert_eq!(rec[0].header("x-app-secret"), Some("secret-header"));
    assert_eq!(rec[0].body, b"{\"note\":\"secret-body\"}");
    // The same request again: refused as a replay by the global window (in Redis).
    let r = enc.send(listen);
    assert_eq!(
        (r.status, r.header("x-veil-relay-error")),
        (409, Some("relay-replay")),
        "{}",
        r.text()
    );
    stack.clear_recorded();
    let r = http::request(listen, "POST", "/api/orders", &[], b"{\"card\":\"4111\"}").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(stack.recorded().is_empty());
}

#[test]
fn relay_on_the_gateway_decodes_with_cors_from_the_virtual_service() {
    let dir = scratch_dir("istio-relay-gw");
    let redis_dir = dir.join("redis");
    fs::create_dir_all(&redis_dir).unwrap();
    let redis = veil_e2e::Redis::start(&redis_dir);
    let stack = Stack::start_with(veil_e2e::StackOptions {
        keyservice_env: vec![("REDIS_URL".into(), redis.url())],
        ..Default::default()
    });
    let (envoy, listen, report) = relay_envoy(
        &stack,
        &dir,
        "istio-base-relay-gateway.yaml",
        &[
            "--context=GATEWAY",
            "--labels=app=veil-relay-gateway,istio=veil-relay-gateway,veil.dev/keyservice=true",
            "--port=8080",
            "--namespace=veil",
        ],
    );
    assert!(report.contains("added cluster veil_keyservice"), "{report}");
    assert!(
        report.contains("EnvoyFilter veil-relay-gateway: inserted veil-relay-gateway before envoy.filters.http.router"),
        "{report}"
    );
    assert!(!report.contains("veil-relay-inbound"), "{report}");
    assert!(
        report.contains("VirtualService veil-relay-gateway: corsPolicy"),
        "{report}"
    );
    relay_round_trip(&stack, listen);

    // CORS from the VirtualService: the configured origin gets a grant at the gateway, any
    // other none, and preflights never reach the app.
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
    assert_eq!(
        preflight("https://evil.example").header("access-control-allow-origin"),
        None
    );
    assert!(
        stack.recorded().is_empty(),
        "preflights never reach the app"
    );
    drop(envoy);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn relay_in_front_of_an_inbound_sidecar_decodes_for_the_app() {
    let dir = scratch_dir("istio-relay-in");
    let redis_dir = dir.join("redis");
    fs::create_dir_all(&redis_dir).unwrap();
    let redis = veil_e2e::Redis::start(&redis_dir);
    let stack = Stack::start_with(veil_e2e::StackOptions {
        keyservice_env: vec![("REDIS_URL".into(), redis.url())],
        ..Default::default()
    });
    let (envoy, listen, report) = relay_envoy(
        &stack,
        &dir,
        "istio-base-relay-inbound.yaml",
        &[
            "--context=SIDECAR_INBOUND",
            "--labels=app=shop,veil.dev/relay=true,veil.dev/keyservice=true",
            "--port=8080",
            "--namespace=shop",
        ],
    );
    assert!(
        report.contains("EnvoyFilter veil-relay-inbound: inserted veil-relay-inbound before envoy.filters.http.router"),
        "{report}"
    );
    assert!(!report.contains("inserted veil-relay-gateway"), "{report}");
    relay_round_trip(&stack, listen);
    drop(envoy);
    let _ = fs::remove_dir_all(&dir);
}

/// Two replicas of the relay gateway, each with its own keyservice sidecar, on one Redis
/// (as `kubectl apply -k istio/relay` deploys them): a pairing made through one replica is
/// used through the other, and a request accepted by one is refused as a replay by the
/// other (the `global` window).
#[test]
fn relay_gateway_replicas_share_pairings_and_the_replay_window() {
    let dir = scratch_dir("istio-relay-replicas");
    let redis_dir = dir.join("redis");
    fs::create_dir_all(&redis_dir).unwrap();
    let redis = veil_e2e::Redis::start(&redis_dir);
    let replica = |keyring: Vec<(String, String)>| {
        let mut keyservice_env = vec![("REDIS_URL".into(), redis.url())];
        keyservice_env.extend(keyring);
        Stack::start_with(veil_e2e::StackOptions {
            keyservice_env,
            ..Default::default()
        })
    };
    // Both replicas read one keyring (in the mesh: the one keyring Secret): the pair keys in
    // Redis are sealed under a key derived from it.
    let a = replica(Vec::new());
    let b = replica(vec![
        (
            "VEIL_KEYRING".into(),
            a.dir.join("keyring.json").display().to_string(),
        ),
        (
            "VEIL_LOCAL_KEK_FILE".into(),
            a.dir.join("kek.key").display().to_string(),
        ),
    ]);
    let args = [
        "--context=GATEWAY",
        "--labels=app=veil-relay-gateway,istio=veil-relay-gateway,veil.dev/keyservice=true",
        "--port=8080",
        "--namespace=veil",
    ];
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    fs::create_dir_all(&dir_a).unwrap();
    fs::create_dir_all(&dir_b).unwrap();
    let (envoy_a, listen_a, _) = relay_envoy(&a, &dir_a, "istio-base-relay-gateway.yaml", &args);
    let (envoy_b, listen_b, _) = relay_envoy(&b, &dir_b, "istio-base-relay-gateway.yaml", &args);

    // Client id and pairing through replica A.
    let r = http::get(listen_a, "/veil/relay").unwrap();
    let id = r.header("x-veil-client-id").unwrap_or_default().to_string();
    let pairs = veil_e2e::relay::pair(listen_a, &id, 1);
    // The encoded request through replica B: its keyservice finds the pair in Redis. Both
    // replicas serve one public host (the gateway's): the request names it, as through the
    // load balancer in front of them.
    b.clear_recorded();
    let enc = pairs[0]
        .encode(&id, 1, "GET", "/api/orders/7", &[], None)
        .with_wire_header("host", &listen_a.to_string());
    let r = enc.send(listen_b);
    let d = pairs[0]
        .decode(1, "GET", &r)
        .unwrap_or_else(|e| panic!("decoding B's answer: {e} ({})", r.text()));
    assert_eq!(d.status, 200);
    assert_eq!(
        b.recorded().len(),
        1,
        "the app behind B got the decoded request"
    );
    // The same request replayed to replica A: refused by the shared window.
    a.clear_recorded();
    let r = enc.send(listen_a);
    assert_eq!(
        (r.status, r.header("x-veil-relay-error")),
        (409, Some("relay-replay")),
        "{}",
        r.text()
    );
    assert!(a.recorded().is_empty());
    drop((envoy_a, envoy_b));
    let _ = fs::remove_dir_all(&dir);
}

/// More than one Envoy on one pairing store ⇒ `global` replay (issue #17 item 4): every
/// shipped multi-replica config — compose, the Istio relay placements, the deployment
/// guides' examples — is checked by `tests/deploy/replay_modes.py`, which counts the Envoys
/// each relay config runs on. A copy of the tree with one placement switched to `local` (or
/// compose scaled to two Envoys, or a guide's example saying `local`) is refused.
#[test]
fn multi_replica_relay_configs_use_global_replay() {
    let out = py_ok("replay_modes.py", &[]);
    for line in [
        "ok istio/relay/envoyfilter-relay-gateway.yaml EnvoyFilter veil-relay-gateway envoys=2 mode=global",
        "ok istio/relay/envoyfilter-relay-inbound.yaml EnvoyFilter veil-relay-inbound envoys=many mode=global",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    // compose runs one Envoy (fixed address and ports), either shell: `local` is allowed
    for shell in ["wasm", "native"] {
        let want = format!("ok compose/envoy-{shell}.yaml envoys=1 ");
        assert!(out.lines().any(|l| l.starts_with(&want)), "{want}:\n{out}");
    }

    let root = repo_root();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "istio/relay/envoyfilter-relay-gateway.yaml",
            "\"mode\": \"global\"",
            "\"mode\": \"local\"",
            "veil-relay-gateway: relay replay mode 'local' with 2 Envoys",
        ),
        (
            "istio/relay/envoyfilter-relay-inbound.yaml",
            "\"mode\": \"global\"",
            "\"replay_was\": {}",
            "veil-relay-inbound: relay replay mode 'local' with many Envoys",
        ),
        (
            "docker-compose.yml",
            "    restart: unless-stopped\n\n  # Creates the demo keyring",
            "    restart: unless-stopped\n    deploy:\n      replicas: 2\n\n  # Creates the demo keyring",
            "compose/envoy-native.yaml: relay replay mode 'local' with 2 Envoys",
        ),
        (
            "docs/deploy-envoy.md",
            "## Relay (`envoy/veil-relay.yaml`)\n",
            "## Relay (`envoy/veil-relay.yaml`)\n\n```json\n\"relay\": {\"prefix\": \"/veil\", \"replay\": {\"mode\": \"local\"}}\n```\n",
            "docs/deploy-envoy.md:",
        ),
    ];
    for (i, (file, from, to, msg)) in cases.iter().enumerate() {
        let dir = scratch_dir("replay-modes");
        for part in ["istio", "compose", "docs"] {
            copy_tree(&root.join(part), &dir.join(part));
        }
        fs::copy(
            root.join("docker-compose.yml"),
            dir.join("docker-compose.yml"),
        )
        .unwrap();
        let text = fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "case {i}: {file} has no {from:?}");
        fs::write(dir.join(file), text.replacen(from, to, 1)).unwrap();
        let out = py("replay_modes.py", &[dir.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} ({file}) passed");
        assert!(err.contains(msg), "case {i}: {err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
