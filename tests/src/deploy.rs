//! Helpers for the deployment tests (tests/tests/deploy_*.rs): the Python tools in
//! `tests/deploy/` (run with the project's `.venv` python), Envoy in `--mode validate` and as
//! a running process on free loopback ports, and a throwaway test CA made with openssl.

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{envoy_bin, free_port, http, native_module_dir, repo_root, wait_for, Proc};

/// The relay client-id secret given to Envoy (`VEIL_RELAY_CLIENT_ID_SECRET`, as
/// envoy/veil-relay.yaml names it).
pub const RELAY_SECRET: &str = "deploy-test relay client id secret, 32+ bytes";

/// The project's virtualenv python (scripts/setup.sh installs requirements.txt into it).
pub fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Runs `tests/deploy/<script>` (or a repository path containing `/`) with `args`.
pub fn py(script: &str, args: &[&OsStr]) -> Output {
    let path = if script.contains('/') {
        repo_root().join(script)
    } else {
        repo_root().join("tests/deploy").join(script)
    };
    Command::new(python())
        .arg(&path)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Like [`py`], panicking with stderr unless it succeeds; returns stdout.
pub fn py_ok(script: &str, args: &[&OsStr]) -> String {
    let out = py(script, args);
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh private directory under the system temp dir.
pub fn scratch_dir(what: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "veil-deploy-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// `envoy --mode validate -c config`: Ok, or Envoy's output as the error.
pub fn envoy_validate(config: &Path) -> Result<(), String> {
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native_module_dir())
        .env("VEIL_KEYSERVICE_TOKEN", crate::TOKEN)
        .env("VEIL_RELAY_CLIENT_ID_SECRET", RELAY_SECRET)
        .output()
        .unwrap_or_else(|e| panic!("envoy: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} does not validate ({}):\n{}{}",
            config.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    pub proc: Proc,
    pub admin: SocketAddr,
    /// The shell its config loads Veil with (a DynamicModuleFilter means native).
    pub shell: crate::Shell,
}

impl Envoy {
    /// Starts Envoy on `config` (whose admin address is `admin`) and waits for `/ready`;
    /// if it exits first, returns its log as the error.
    pub fn start(
        name: &'static str,
        dir: &Path,
        config: &Path,
        admin: SocketAddr,
    ) -> Result<Envoy, String> {
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(config)
            // Shipped native configs load `libveil.so` by name from the search path.
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native_module_dir())
            .args(["--concurrency", "1", "--log-level", "info"])
            .args(["--disable-hot-restart", "--base-id"])
            .arg(free_port().to_string())
            .env("VEIL_KEYSERVICE_TOKEN", crate::TOKEN)
            .env("VEIL_RELAY_CLIENT_ID_SECRET", RELAY_SECRET);
        let mut proc = Proc::spawn(name, dir, &mut cmd);
        wait_for(&format!("{name} /ready"), Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Some(Err(format!(
                    "{name} exited ({status}):\n{}",
                    proc.log_text()
                )));
            }
            http::get(admin, "/ready")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| Ok(()))
        })?;
        let native = fs::read_to_string(config)
            .map(|c| c.contains("DynamicModuleFilter"))
            .unwrap_or(false);
        let shell = if native {
            crate::Shell::Native
        } else {
            crate::Shell::Wasm
        };
        Ok(Envoy { proc, admin, shell })
    }

    /// A counter or gauge from the admin API (0 if absent).
    pub fn stat(&self, name: &str) -> u64 {
        let name = &self.shell.stat_name(name);
        let Ok(r) = http::get(
            self.admin,
            &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
        ) else {
            return 0;
        };
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}: "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Waits until the Veil filter in this Envoy fetched its first data key.
    pub fn wait_for_keys(&self) {
        wait_for(
            "the filter's first key fetch",
            Duration::from_secs(15),
            || (self.stat("wasmcustom.veil.keys.fetch_ok") >= 1).then_some(()),
        );
    }
}

/// A test CA and a server certificate it signed for `names` (PEM files in a directory).
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// Makes a P-256 CA valid for one day and a server certificate for `names`.
    pub fn new(dir: &Path, names: &[&str]) -> TestCa {
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            san.join(",")
        );
        fs::write(dir.join("server.ext"), ext).unwrap_or_else(|e| panic!("server.ext: {e}"));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=veil test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(dir, &ca);
        let mut req = vec!["req"];
        req.extend(ec);
        let cn = format!("/CN={}", names.first().copied().unwrap_or("localhost"));
        req.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", &cn]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        TestCa {
            ca_cert: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

/// The local TLS "vendor": an Envoy terminating TLS for api.moesif.net / api.moesif.com
/// with `ca`'s server certificate (tests/deploy/tls-upstream.yaml), forwarding to
/// `upstream` with the SNI and TLS version as request headers. Returns it and its address.
pub fn tls_vendor(dir: &Path, upstream: SocketAddr, ca: &TestCa) -> (Envoy, SocketAddr) {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let template = fs::read_to_string(repo_root().join("tests/deploy/tls-upstream.yaml"))
        .unwrap_or_else(|e| panic!("tests/deploy/tls-upstream.yaml: {e}"));
    let yaml = crate::render(
        &template,
        &[
            ("VEIL_ADMIN_PORT", admin.port().to_string()),
            ("VEIL_LISTEN_PORT", listen.port().to_string()),
            ("VEIL_TLS_CERT", ca.cert.display().to_string()),
            ("VEIL_TLS_KEY", ca.key.display().to_string()),
            ("VEIL_UPSTREAM_PORT", upstream.port().to_string()),
        ],
    );
    let path = dir.join("tls-vendor.yaml");
    fs::write(&path, yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let envoy = Envoy::start("tls-vendor", dir, &path, admin).unwrap_or_else(|e| panic!("{e}"));
    (envoy, listen)
}
