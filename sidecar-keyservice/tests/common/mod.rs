//! Helpers for the end-to-end tests: run the real binary in a temp dir with a clean
//! environment, talk HTTP/1.1 to it over loopback, always bounded in time.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_veil-keyservice");
pub const TOKEN: &str = "tok-Zq8fJ2mW4xV7bN1cR5tY9uP3sL6kH0dG";
/// How long any one command or start-up may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A temp dir with a keyring path, a KEK path and a clean environment for the binary.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub vars: HashMap<String, String>,
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = HashMap::new();
        vars.insert(
            "VEIL_KEYRING".into(),
            dir.path().join("veil-keyring.json").display().to_string(),
        );
        vars.insert(
            "VEIL_LOCAL_KEK_FILE".into(),
            dir.path().join("veil-local-kek.key").display().to_string(),
        );
        Env { dir, vars }
    }

    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("veil-keyring.json")
    }

    pub fn kek(&self) -> PathBuf {
        self.dir.path().join("veil-local-kek.key")
    }

    pub fn set(&mut self, k: &str, v: &str) -> &mut Env {
        self.vars.insert(k.into(), v.into());
        self
    }

    pub fn unset(&mut self, k: &str) -> &mut Env {
        self.vars.remove(k);
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_clear()
            .envs(&self.vars)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs the binary to completion (killed after [`LIMIT`]).
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).spawn().unwrap();
        let out = Captured::start(child);
        let status = out.wait(LIMIT).expect("command did not finish in time");
        out.output(status)
    }

    /// Runs the binary with `input` on its standard input (killed after [`LIMIT`]).
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut c = self.command(args);
        c.stdin(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let out = Captured::start(child);
        let status = out.wait(LIMIT).expect("command did not finish in time");
        out.output(status)
    }

    /// `keyring init`, which must succeed.
    pub fn init(&self) -> Output {
        let o = self.run(&["keyring", "init"]);
        assert!(o.status.success(), "init failed: {}", o.all());
        o
    }

    /// Starts `serve` on a free loopback port and waits for its "listening on" line.
    pub fn serve(&self) -> Server {
        let port = free_port();
        let mut c = self.command(&["serve"]);
        c.env("VEIL_KEYSERVICE_LISTEN", format!("127.0.0.1:{port}"));
        if !self.vars.contains_key("VEIL_KEYSERVICE_TOKEN")
            && !self.vars.contains_key("VEIL_KEYSERVICE_TOKEN_FILE")
        {
            c.env("VEIL_KEYSERVICE_TOKEN", TOKEN);
        }
        let cap = Captured::start(c.spawn().unwrap());
        let want = format!("veil-keyservice listening on 127.0.0.1:{port}");
        let deadline = Instant::now() + LIMIT;
        loop {
            if cap.stdout.lock().unwrap().contains(&want) {
                break;
            }
            let exited = cap.child.lock().unwrap().try_wait().unwrap();
            if let Some(status) = exited {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "serve exited early ({status}): {}",
                    cap.output(status).all()
                );
            }
            assert!(Instant::now() < deadline, "serve did not start in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            port,
            cap: Some(cap),
        }
    }
}

/// A child with its stdout and stderr collected by threads.
pub struct Captured {
    pub child: Arc<Mutex<Child>>,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Captured {
    fn start(mut child: Child) -> Captured {
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (pipe, buf) in [
            (Box::new(out) as Box<dyn Read + Send>, stdout.clone()),
            (Box::new(err) as Box<dyn Read + Send>, stderr.clone()),
        ] {
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    buf.lock().unwrap().push_str(&line);
                    line.clear();
                }
            }));
        }
        Captured {
            child: Arc::new(Mutex::new(child)),
            stdout,
            stderr,
            readers,
        }
    }

    /// Waits up to `limit`; on timeout kills the child and returns None.
    fn wait(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.lock().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let mut c = self.child.lock().unwrap();
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(self, status: ExitStatus) -> Output {
        for r in self.readers {
            let _ = r.join();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

/// A running `serve`; killed on drop if not stopped.
pub struct Server {
    pub port: u16,
    cap: Option<Captured>,
}

impl Server {
    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        http_get(self.port, path, token)
    }

    fn cap(&self) -> &Captured {
        self.cap.as_ref().unwrap()
    }

    pub fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.cap().stdout.lock().unwrap(),
            self.cap().stderr.lock().unwrap()
        )
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(mut self) -> Output {
        let pid = self.cap().child.lock().unwrap().id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let cap = self.cap.take().unwrap();
        let status = cap
            .wait(LIMIT)
            .expect("serve did not stop after SIGTERM in time");
        cap.output(status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(cap) = &self.cap {
            if let Ok(mut c) = cap.child.lock() {
                if let Ok(None) = c.try_wait() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A minimal HTTP/1.1 GET over loopback (`Connection: close`, read to EOF, 10 s timeout).
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> Response {
    http_raw(port, path, token.map(|t| format!("Bearer {t}")).as_deref())
}

/// Like [`http_get`] with an arbitrary Authorization header value.
pub fn http_raw(port: u16, path: &str, authorization: Option<&str>) -> Response {
    http_request(port, "GET", path, authorization, None)
}

/// One HTTP/1.1 exchange over loopback (`Connection: close`, read to EOF, 10 s timeout); a
/// body is sent as JSON.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&[u8]>,
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked")),
        "chunked responses are not expected"
    );
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Reads a Prometheus counter or gauge value from `/metrics`.
pub fn metric(server: &Server, name_and_labels: &str) -> u64 {
    let r = server.get("/metrics", None);
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name_and_labels} ")))
        .unwrap_or_else(|| panic!("{name_and_labels} not in metrics:\n{}", r.body))
        .trim()
        .parse()
        .unwrap()
}

/// A child process killed (and reaped) on drop: the servers tests start.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The project's virtualenv (scripts/setup.sh creates it); a test that needs it fails with
/// a hint rather than skipping.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (installs requirements.txt into .venv)",
        p.display()
    );
    p
}

/// Waits until something accepts TCP connections on `port` (bounded by [`LIMIT`]).
pub fn wait_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("server exited early: {s}");
        }
        assert!(
            Instant::now() < deadline,
            "server on port {port} did not start in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `tests/aws/moto_setup.py` created.
pub struct MotoSetup {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub key: String,
    pub disabled_key: String,
    pub role: String,
    pub denied_role: String,
    pub untrusted_role: String,
}

/// A real moto server (KMS, STS, IAM) on a free loopback port with IAM enforced after the
/// setup script's 11 requests.
pub fn start_moto() -> (Daemon, MotoSetup) {
    start_moto_enforcing(true)
}

/// `enforce_iam: false`: moto checks no signature or policy (for calls moto cannot
/// authorize, like the unsigned AssumeRoleWithWebIdentity of IRSA).
pub fn start_moto_enforcing(enforce_iam: bool) -> (Daemon, MotoSetup) {
    let port = free_port();
    let mut child = Command::new(venv_bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env(
            "INITIAL_NO_AUTH_ACTION_COUNT",
            if enforce_iam { "11" } else { "1000000" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child);
    let daemon = Daemon(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aws/moto_setup.py");
    let out = Command::new(venv_bin("python"))
        .arg(script)
        .arg(&endpoint)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "moto setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = |k: &str| v[k].as_str().unwrap().to_string();
    let setup = MotoSetup {
        endpoint,
        access_key_id: g("access_key_id"),
        secret_access_key: g("secret_access_key"),
        key: g("key"),
        disabled_key: g("disabled_key"),
        role: g("role"),
        denied_role: g("denied_role"),
        untrusted_role: g("untrusted_role"),
    };
    (daemon, setup)
}

/// A TCP forwarder from a loopback port to another, that can be switched off and on: stands
/// for a network path to the KMS that breaks and heals.
pub struct Forwarder {
    pub port: u16,
    target: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    /// A forwarder on a free port, not listening yet.
    pub fn new(target: u16) -> Forwarder {
        Forwarder {
            port: free_port(),
            target,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            thread: None,
        }
    }

    pub fn start(&mut self) {
        use std::sync::atomic::Ordering;
        self.stop.store(false, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, target) = (self.stop.clone(), self.target);
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        inbound.set_nonblocking(false).unwrap();
                        let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (mut a, mut b) in [
                            (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                            (outbound, inbound),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut a, &mut b);
                                let _ = b.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Stops accepting (the listening socket closes; new connections are refused).
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}
