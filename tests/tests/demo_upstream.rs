//! Black-box tests of the `veil-demo-upstream` binary, spoken to over raw HTTP/1.1 so that every
//! header the server sees is known and the recorded entries can be compared exactly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `veil-demo-upstream`; killed when dropped.
struct Upstream {
    child: Child,
    addr: SocketAddr,
}

impl Upstream {
    fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil-demo-upstream"));
        // Flags win over the environment; clear the env so the caller's shell cannot interfere.
        for var in [
            "VEIL_UPSTREAM_LISTEN",
            "VEIL_UPSTREAM_THREADS",
            "VEIL_UPSTREAM_MAX_RECORDED",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn veil-demo-upstream");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        // Forward the first line, then keep draining so `--log` output can never block the child.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let mut upstream = Upstream {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .expect("veil-demo-upstream did not print its listening line in time");
        let addr = line
            .strip_prefix("veil-demo-upstream listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        upstream.addr = addr.parse().expect("listening address");
        assert_ne!(upstream.addr.port(), 0);
        upstream
    }

    fn request(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(self.addr, method, target, headers, body)
    }

    fn recorded(&self) -> Value {
        let resp = self.request("GET", "/_recorded", &[], b"");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        serde_json::from_slice(&resp.body).expect("recorded is JSON")
    }

    fn clear(&self) {
        let resp = self.request("DELETE", "/_recorded", &[], b"");
        assert_eq!(resp.status, 204);
        assert!(resp.body.is_empty());
    }

    /// Waits (bounded) for the child to exit on its own.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Resp = veil_e2e::http::Response;

/// One HTTP/1.1 exchange on a fresh connection (the harness's client: request line, `host`,
/// the given headers, `content-length` unless a GET/DELETE has no body, `connection: close`).
fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    veil_e2e::http::request(addr, method, target, headers, body).expect("HTTP exchange")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().expect("body_base64 is a string"))
        .expect("valid standard base64")
}

#[test]
fn records_requests_exactly_and_clears() {
    let up = Upstream::start(&["--listen", "127.0.0.1:0"]);
    let host = up.addr.to_string();

    // Not recorded: health checks and the recording API itself.
    let health = up.request("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_eq!(up.recorded(), json!([]));

    let json_body = br#"{"user":{"email":"alice@example.com"},"n":1}"#;
    let resp = up.request(
        "POST",
        "/v1/events/batch",
        &[
            ("Content-Type", "application/json"),
            ("X-Moesif-Application-Id", "AppId123"),
            ("X-Repeated", "first"),
            ("x-repeated", "second"),
        ],
        json_body,
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"status": "ok"}));

    let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\r', b'\n']).collect();
    let resp = up.request(
        "PUT",
        "/upload/blob?kind=raw",
        &[("Content-Type", "application/octet-stream")],
        &binary,
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"status": "ok"}));

    let resp = up.request("GET", "/search?q=a%20b&n=1&q=c", &[("Accept", "*/*")], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"status": "ok"}));

    let recorded = up.recorded();
    let expected = json!([
        {
            "method": "POST",
            "path": "/v1/events/batch",
            "headers": {
                "host": host,
                "content-type": "application/json",
                "x-moesif-application-id": "AppId123",
                "x-repeated": "first, second",
                "content-length": json_body.len().to_string(),
                "connection": "close",
            },
            "body_base64": b64(json_body),
        },
        {
            "method": "PUT",
            "path": "/upload/blob?kind=raw",
            "headers": {
                "host": host,
                "content-type": "application/octet-stream",
                "content-length": binary.len().to_string(),
                "connection": "close",
            },
            "body_base64": b64(&binary),
        },
        {
            "method": "GET",
            "path": "/search?q=a%20b&n=1&q=c",
            "headers": {
                "host": host,
                "accept": "*/*",
                "connection": "close",
            },
            "body_base64": "",
        },
    ]);
    assert_eq!(recorded, expected);
    // The bodies round-trip byte for byte.
    assert_eq!(unb64(&recorded[0]["body_base64"]), json_body);
    assert_eq!(unb64(&recorded[1]["body_base64"]), binary);
    // Header names are lowercase even when sent mixed-case.
    for rec in recorded.as_array().unwrap() {
        for name in rec["headers"].as_object().unwrap().keys() {
            assert_eq!(name, &name.to_ascii_lowercase());
        }
    }

    up.clear();
    assert_eq!(up.recorded(), json!([]));

    // Recording goes on after a clear.
    up.request("DELETE", "/thing/7", &[], b"");
    let recorded = up.recorded();
    assert_eq!(recorded.as_array().unwrap().len(), 1);
    assert_eq!(recorded[0]["method"], "DELETE");
    assert_eq!(recorded[0]["path"], "/thing/7");
}

#[test]
fn echo_reflects_the_request_and_is_recorded() {
    let up = Upstream::start(&["--listen", "127.0.0.1:0"]);
    let host = up.addr.to_string();
    let body = br#"{"card":"4111111111111111"}"#;

    let resp = up.request(
        "POST",
        "/app/echo/users/42?verbose=1&x=%2F",
        &[("Content-Type", "application/json"), ("X-Trace", "t1")],
        body,
    );
    assert_eq!(resp.status, 200);
    let echo = resp.json();
    assert_eq!(
        echo,
        json!({
            "method": "POST",
            "path": "/app/echo/users/42",
            "query": "verbose=1&x=%2F",
            "headers": {
                "host": host,
                "content-type": "application/json",
                "x-trace": "t1",
                "content-length": body.len().to_string(),
                "connection": "close",
            },
            "body_base64": b64(body),
        })
    );
    assert_eq!(unb64(&echo["body_base64"]), body);

    let echo = up.request("GET", "/app/echo", &[], b"").json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/app/echo");
    assert_eq!(echo["query"], Value::Null);
    assert_eq!(echo["body_base64"], "");

    // Not an echo path: a plain recorded 200.
    let other = up.request("GET", "/app/echoes", &[], b"").json();
    assert_eq!(other, json!({"status": "ok"}));

    let recorded = up.recorded();
    let paths: Vec<&str> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/app/echo/users/42?verbose=1&x=%2F",
            "/app/echo",
            "/app/echoes"
        ]
    );
    assert_eq!(unb64(&recorded[0]["body_base64"]), body);
}

#[test]
fn bound_drops_the_oldest() {
    let up = Upstream::start(&["--listen", "127.0.0.1:0", "--max-recorded", "3"]);
    for i in 0..5 {
        let resp = up.request("POST", &format!("/n/{i}"), &[], format!("{i}").as_bytes());
        assert_eq!(resp.status, 200);
    }
    let recorded = up.recorded();
    let got: Vec<(String, Vec<u8>)> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                unb64(&r["body_base64"]),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/n/2".to_owned(), b"2".to_vec()),
            ("/n/3".to_owned(), b"3".to_vec()),
            ("/n/4".to_owned(), b"4".to_vec()),
        ]
    );
}

#[test]
fn large_bodies_are_accepted_and_no_record_records_nothing() {
    // Above axum's 2 MiB default limit.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();

    let up = Upstream::start(&["--listen", "127.0.0.1:0", "--max-recorded", "2"]);
    let resp = up.request("POST", "/big", &[], &big);
    assert_eq!(resp.status, 200);
    let recorded = up.recorded();
    assert_eq!(recorded.as_array().unwrap().len(), 1);
    assert_eq!(unb64(&recorded[0]["body_base64"]), big);
    drop(up);

    let up = Upstream::start(&[
        "--listen",
        "127.0.0.1:0",
        "--no-record",
        "--log",
        "--threads",
        "2",
    ]);
    assert_eq!(up.request("POST", "/big", &[], &big).status, 200);
    assert_eq!(up.request("GET", "/x?y=1", &[], b"").status, 200);
    assert_eq!(
        up.request("POST", "/app/echo", &[], b"hi").json()["body_base64"],
        b64(b"hi")
    );
    assert_eq!(up.recorded(), json!([]));
}

#[cfg(unix)]
#[test]
fn env_configuration_and_graceful_stop_on_sigterm() {
    let mut up = Upstream::start_with_env(
        &[],
        &[
            ("VEIL_UPSTREAM_LISTEN", "127.0.0.1:0"),
            ("VEIL_UPSTREAM_MAX_RECORDED", "1"),
            ("VEIL_UPSTREAM_THREADS", "1"),
        ],
    );
    assert!(up.addr.ip().is_loopback());
    up.request("GET", "/a", &[], b"");
    up.request("GET", "/b", &[], b"");
    let recorded = up.recorded();
    assert_eq!(recorded.as_array().unwrap().len(), 1);
    assert_eq!(recorded[0]["path"], "/b");

    let status = Command::new("kill")
        .args(["-TERM", &up.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = up
        .wait_exit(Duration::from_secs(15))
        .expect("veil-demo-upstream did not stop after SIGTERM");
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
}
