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
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
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
