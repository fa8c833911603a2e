//! The relay in a real browser: headless Chromium runs tests/browser/relay_e2e.mjs (the
//! browser client served by the filter at /public/veil-relay.js) against Envoy + filter +
//! keyservice + demo upstream, through a recording hop that must see only ciphertext.
//! Two runs: the default local replay mode, and global mode with the keyservice (memory
//! store) restarted mid-session when the script asks.
//!
//! Needs node, the npm packages of client/browser (`npm ci` there) and Debian's chromium,
//! all installed by scripts/setup.sh.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use veil_e2e::hop::{contains, RecordingHop};
use veil_e2e::{http, keyservice_bin, repo_root, wait_for, Proc, Stack, StackOptions, TOKEN};

/// The relay section of the filter configuration: /app/* relayed, the replay window in
/// `mode` ("local": Envoy's shared data; "global": the keyservice, so a keyservice that lost
/// its sessions is noticed on the very next request and the client has to re-pair).
fn relay_config(mode: &str) -> Value {
    let mut c = veil_e2e::demo_filter_config();
    c["relay"] = json!({
        "prefix": "/veil",
        "client_id_secret": "browser-e2e client id secret, at least 32 bytes",
        "routes": ["/app/*"],
        "replay": { "mode": mode },
    });
    c
}

/// One browser at a time: two Chromiums at once on a 2-core machine only make both slow.
static BROWSER: Mutex<()> = Mutex::new(());

/// Stops the keyservice and starts a new one on the same address and keyring (its memory
/// session store starts empty), as `Stack::try_start_with` started it.
fn restart_keyservice(stack: &mut Stack) {
    stack.keyservice_proc.kill();
    let dir = stack.dir.clone();
    let mut cmd = Command::new(keyservice_bin());
    cmd.arg("serve")
        .env("VEIL_KEYRING", dir.join("keyring.json"))
        .env("VEIL_LOCAL_KEK_FILE", dir.join("kek.key"))
        .env("KMS_PROVIDER", "local")
        .env("VEIL_KEYSERVICE_LISTEN", stack.keyservice.to_string())
        .env("VEIL_KEYSERVICE_TOKEN", TOKEN)
        .env("VEIL_LOG", "debug");
    stack.keyservice_proc = Proc::spawn("keyservice", &dir, &mut cmd);
    let addr = stack.keyservice;
    wait_for("the restarted keyservice", Duration::from_secs(20), || {
        http::get(addr, "/readyz").ok().filter(|r| r.status == 200)
    });
}

/// Default deployment: local replay windows, two Envoy workers.
#[test]
fn browser_client_in_headless_chromium_local_replay() {
    run_browser("local", false);
}

/// Global replay windows, and the keyservice restarted mid-session.
#[test]
fn browser_client_in_headless_chromium_global_replay_keyservice_restart() {
    run_browser("global", true);
}

fn run_browser(mode: &str, restart: bool) {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut stack = Stack::start_with(StackOptions {
        filter_config: relay_config(mode),
        ..StackOptions::default()
    });
    let hop = RecordingHop::start(stack.listen);
    let origin = format!("http://127.0.0.1:{}", hop.addr.port());

    let script = repo_root().join("tests/browser/relay_e2e.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .env("VEIL_ORIGIN", &origin)
        .env("VEIL_RESTART", if restart { "1" } else { "0" })
        .env("VEIL_SERVER_KEY", stack.relay_pin())
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node {}: {e}", script.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));

    let started = Instant::now();
    let mut done: Option<Value> = None;
    let mut steps = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("node stdout");
        eprintln!("relay_e2e: {line}");
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "browser test took too long"
        );
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["need"] == "restart-keyservice" {
            assert!(
                restart,
                "the script asked for a restart it was not told to do"
            );
            restart_keyservice(&mut stack);
            writeln!(stdin, "ok").expect("answer node");
        } else if let Some(step) = msg["step"].as_str() {
            steps.push(step.to_owned());
        } else if msg["done"] == true {
            done = Some(msg);
        }
    }
    let status = child.wait().expect("node exit");
    if !status.success() {
        eprintln!("{}", stack.all_logs());
    }
    assert!(status.success(), "the browser script failed ({status})");
    let done = done.expect("the browser script did not finish");
    let expected: &[&str] = if restart {
        &["asset", "same-origin", "recovery", "cross-origin"]
    } else {
        &["asset", "same-origin", "cross-origin"]
    };
    assert_eq!(steps, expected, "every step ran");

    // The hop saw the relay requests (and CORS preflights for the cross-origin page)...
    let wire = hop.all();
    assert!(contains(&hop.to_server(), b"POST /veil/pair"));
    assert!(contains(&hop.to_server(), b"/veil/x/"));
    assert!(contains(&hop.to_server(), b"x-veil-relay: v2,"));
    assert!(
        contains(&hop.to_server(), b"OPTIONS /veil/x/"),
        "the cross-origin page sent CORS preflights"
    );
    // ...but none of the application's paths, queries, headers or bodies, either way.
    let secrets = done["secrets"].as_object().expect("secrets");
    assert!(secrets.len() >= 8);
    for (what, s) in secrets {
        let s = s.as_str().expect("secret text");
        assert!(
            !contains(&wire, s.as_bytes()),
            "{what} secret {s:?} crossed the hop in plaintext"
        );
    }
    for plain in [
        &b"/app/echo"[..],
        b"/app/reflect",
        b"application/x-demo",
        b"x-app-secret",
    ] {
        assert!(
            !contains(&wire, plain),
            "{} crossed the hop in plaintext",
            String::from_utf8_lossy(plain)
        );
    }
    // The upstream did get the decoded requests (the hop is not simply dropping them).
    let recorded = stack.recorded();
    assert!(
        recorded.len() >= 10,
        "the upstream recorded {} requests",
        recorded.len()
    );
}
