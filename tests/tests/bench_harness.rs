//! The load benchmark's harness (`bench/run.py`) end to end, very briefly, so a change that
//! breaks it (the generator, the configs it renders, the counters it reads, its output) fails
//! here and not in the next benchmark run. Loopback only; the debug binaries of this build.
//!
//! It checks that the harness runs, that each scenario's machine-readable line carries every
//! key, that the filter counted the requests and that callouts per request stay under the
//! design limits. No timing or throughput threshold: one-second rounds of debug binaries on a
//! shared machine measure nothing.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use veil_e2e::{envoy_bin, keyservice_bin, repo_root, wasm_path};

const SCENARIOS: [&str; 2] = ["seal", "relay-local"];

/// The shells measured: `--filter` of bench/run.py (each with its floor). The native shell
/// and its floor are target/native/libveil.so and libveilfloor.so (scripts/test.sh builds
/// them); the native cost target's transform timer is `veil-bench-transform` (bench/transform).
const SHELLS: &[&str] = &["wasm", "native"];

/// Every key of the machine-readable line with a fixed-rate phase (bench/README.md).
const KEYS: [&str; 18] = [
    "ratio",
    "rps_control",
    "rps_treatment",
    "rate_rps",
    "p50_added_ms",
    "p99_added_ms",
    "p999_added_ms",
    "rate_sustained",
    "rate_gen",
    "late_p99_us",
    "filter_us_per_req",
    "cpu_us_per_req_added",
    "callouts_per_req",
    "rss_delta_mib",
    "floor_ratio",
    "floor_gap",
    "filter",
    "targets",
];

/// The harness's own waits are bounded (each round: duration + 30 s); this bounds the whole.
const TIMEOUT: Duration = Duration::from_secs(420);

fn bin_dir() -> PathBuf {
    // Cargo builds this package's binaries (veil-bench-load, veil-demo-upstream,
    // veil-bench-seal-fixture) next to where the keyservice's debug build lands.
    let dir = Path::new(env!("CARGO_BIN_EXE_veil-bench-load"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let ks = keyservice_bin();
    assert!(
        dir.join("veil-keyservice").exists(),
        "{} is not next to {}: build with the same CARGO_TARGET_DIR",
        ks.display(),
        dir.display()
    );
    dir
}

fn run_harness(out_dir: &Path) -> String {
    let wrk = Command::new("wrk").arg("-v").output();
    assert!(
        wrk.is_ok(),
        "wrk is missing: scripts/setup.sh installs it (apt-get install wrk)"
    );
    let json = out_dir.join("bench.json");
    let log = out_dir.join("run.log");
    let out = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    let root = repo_root();
    let mut child = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("bench/run.py"))
        .args(["--scenario", &SCENARIOS.join(",")])
        .args(["--duration", "1", "--rounds", "1", "--warmup", "0.5"])
        .args([
            "--quiet-wait",
            "0",
            "--noisy-retries",
            "0",
            "--rate-fraction",
            "0.5",
        ])
        // Few relay clients: each pairs (X-Wing) before its round, slow in a debug build.
        .args(["--connections", "8"])
        .arg("--no-build")
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--wasm")
        .arg(wasm_path())
        .args([
            "--filter",
            if SHELLS.len() == 2 { "both" } else { SHELLS[0] },
        ])
        .arg("--envoy")
        .arg(envoy_bin())
        .arg("--json")
        .arg(&json)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start bench/run.py: {e} (scripts/setup.sh makes .venv)")
        });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("wait: {e}")) {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            // SIGTERM first: the harness then stops the Envoys and servers it started.
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            std::thread::sleep(Duration::from_secs(15));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bench/run.py still running after {TIMEOUT:?}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "bench/run.py failed ({status}):\n{text}");
    text
}

/// The last machine-readable line of `scenario` and `shell`: `NAME key=value ... filter=SHELL`.
fn machine_line(text: &str, scenario: &str, shell: &str) -> HashMap<String, String> {
    let prefix = format!("{scenario} ratio=");
    let tag = format!(" filter={shell} ");
    let line = text
        .lines()
        .rfind(|l| l.starts_with(&prefix) && l.contains(&tag))
        .unwrap_or_else(|| panic!("no machine-readable line for {scenario} ({shell}):\n{text}"));
    line.split_whitespace()
        .skip(1)
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{scenario}: {kv:?} is not key=value in {line:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn bench_harness_runs_seal_and_relay_local() {
    let out_dir = std::env::temp_dir().join(format!("veil-bench-harness-{}", std::process::id()));
    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("{}: {e}", out_dir.display()));
    let text = run_harness(&out_dir);

    for (sc, shell) in SCENARIOS
        .iter()
        .flat_map(|sc| SHELLS.iter().map(move |sh| (*sc, *sh)))
    {
        let kv = machine_line(&text, sc, shell);
        for key in KEYS {
            let v = kv
                .get(key)
                .unwrap_or_else(|| panic!("{sc}: no {key}= in its machine line {kv:?}"));
            match key {
                "rate_sustained" => assert!(v == "yes" || v == "no", "{sc}: {key}={v}"),
                "targets" => assert!(v == "pass" || v == "fail", "{sc}: {key}={v}"),
                "rate_gen" => assert_eq!(v, "veil", "{sc}: the fixed rate is veil-bench-load's"),
                "filter" => assert_eq!(v, shell, "{sc}: the line's shell"),
                _ => assert!(
                    v.parse::<f64>().is_ok_and(f64::is_finite),
                    "{sc}: {key}={v} is not a number"
                ),
            }
        }
    }

    // The native cost target's inputs (issue #16): the seal transform timed natively, the
    // floor's own cost, and the bound the harness checks.
    let kv = machine_line(&text, "seal", "native");
    // And the body-rewriting floor (identity transform) it is read against.
    for key in [
        "transform_us",
        "floor_cpu_us_per_req_added",
        "cost_bound_us",
        "rewrite_floor_ratio",
        "rewrite_floor_cpu_us_per_req_added",
        "rewrite_floor_rss_delta_mib",
    ] {
        let v = kv
            .get(key)
            .unwrap_or_else(|| panic!("seal (native): no {key}= in its machine line {kv:?}"));
        assert!(
            v.parse::<f64>().is_ok_and(f64::is_finite),
            "seal (native): {key}={v} is not a number"
        );
    }

    let json = out_dir.join("bench.json");
    let doc: Value = serde_json::from_slice(
        &fs::read(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    let results = doc["results"].as_array().cloned().unwrap_or_default();
    for (sc, shell) in SCENARIOS
        .iter()
        .flat_map(|sc| SHELLS.iter().map(move |sh| (*sc, *sh)))
    {
        let r = results
            .iter()
            .find(|r| r["scenario"] == sc && r["filter"] == shell)
            .unwrap_or_else(|| panic!("{sc} ({shell}): not in the JSON results"));
        let sent = r["treatment_requests"].as_u64().unwrap_or(0);
        let counted = r["filter_counted"].as_u64().unwrap_or(0);
        assert!(sent > 0, "{sc}: no treatment request completed");
        // wrk stops with requests in flight that the filter counted but wrk did not.
        assert!(
            counted >= sent,
            "{sc}: the filter counted {counted} of {sent} requests"
        );
        assert_eq!(
            r["filter_rejected_or_failed"].as_u64(),
            Some(0),
            "{sc}: the filter rejected or failed requests"
        );
        let per_req = r["callouts_per_req"].as_f64().unwrap_or(f64::INFINITY);
        let max = r["callouts_max"].as_f64().unwrap_or(0.0);
        // The same comparison as the harness's target (bench/run.py `targets`).
        let ok = if max >= 1.0 {
            per_req <= max
        } else {
            per_req < max
        };
        assert!(
            ok,
            "{sc}: {per_req} keyservice callouts per request (limit {max})"
        );
        assert!(
            r["rate_target"].as_f64().is_some_and(|x| x > 0.0),
            "{sc}: no fixed-rate phase"
        );
    }
    let _ = fs::remove_dir_all(&out_dir);
}
