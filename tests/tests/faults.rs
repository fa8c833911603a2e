//! Faults on the seal side, under load, through real Envoy: the keyservice killed and
//! restarted, Envoy restarted. Every request either succeeds sealed or is refused with
//! `503 key-unavailable`; nothing reaches the vendor in plaintext. Each test prints its
//! counts (sent, succeeded, refused, leaked); leaked must be 0.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::json;
use veil_e2e::{wait_for, Stack, StackOptions};

const MARK: &str = "FAULTMARK-51c2e0";

fn body(i: u64) -> Vec<u8> {
    format!(
        r#"{{"request":{{"time":"2026-11-22T10:00:00Z","uri":"https://api.example.com/a","verb":"POST","body":{{"email":"{MARK}-{i}@example.com"}}}},"response":{{"time":"2026-11-22T10:00:01Z","status":200}}}}"#
    )
    .into_bytes()
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    /// Any other answer (or none): must stay 0.
    other: AtomicU64,
}

impl Counts {
    fn print(&self, what: &str, leaked: usize) {
        println!(
            "{what}: sent {}, succeeded {}, refused (503 key-unavailable) {}, other {}, leaked {leaked}",
            self.sent.load(Ordering::SeqCst),
            self.ok.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
            self.other.load(Ordering::SeqCst),
        );
    }
}

/// Sends events from `threads` threads until `stop`, counting outcomes.
fn load(
    listen: std::net::SocketAddr,
    threads: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> Vec<thread::JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let i = counts.sent.fetch_add(1, Ordering::SeqCst);
                    let r = veil_e2e::request(
                        listen,
                        "POST",
                        "/collector/v1/events",
                        &[("content-type", "application/json")],
                        &body(i),
                    );
                    let code = r.as_ref().ok().and_then(|r| {
                        (r.header("content-type") == Some("application/problem+json"))
                            .then(|| r.json()["code"].as_str().map(str::to_string))
                            .flatten()
                    });
                    match r.as_ref().map(|r| r.status) {
                        Ok(200) => counts.ok.fetch_add(1, Ordering::SeqCst),
                        Ok(503) if code.as_deref() == Some("key-unavailable") => {
                            counts.refused.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => {
                            eprintln!("unexpected answer: {:?} {code:?}", r.map(|r| r.status));
                            counts.other.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    // Paced, so a run stays under the recording upstream's 10,000 entries.
                    thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect()
}

/// Requests the vendor received whose body carries the marker in clear.
fn leaked(stack: &Stack) -> usize {
    stack
        .recorded()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(MARK))
        .count()
}

fn fast_refresh() -> StackOptions {
    let mut config = veil_e2e::demo_filter_config();
    // Refresh every second, so the outage is felt by the filter (failed fetches).
    config["keyservice"]["refresh_secs"] = json!(1);
    StackOptions {
        filter_config: config,
        ..Default::default()
    }
}

#[test]
fn keyservice_killed_and_restarted_under_load_seal_keeps_working_on_cached_keys() {
    let mut stack = Stack::start_with(fast_refresh());
    let (stop, counts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counts::default()),
    );
    let workers = load(stack.listen, 2, Arc::clone(&stop), Arc::clone(&counts));
    thread::sleep(Duration::from_millis(500));

    let failed_before = stack.stat("wasmcustom.veil.keys.fetch_failed");
    stack.kill_keyservice();
    let sent_at_kill = counts.sent.load(Ordering::SeqCst);
    // The outage is real: the filter's refreshes fail while requests go on.
    wait_for("failed key refreshes", Duration::from_secs(15), || {
        (stack.stat("wasmcustom.veil.keys.fetch_failed") >= failed_before + 2).then_some(())
    });
    let during_outage = counts.sent.load(Ordering::SeqCst) - sent_at_kill;
    let ok_before_restart = counts.ok.load(Ordering::SeqCst);
    stack.restart_keyservice("keyservice-restarted");
    let fetched = stack.stat("wasmcustom.veil.keys.fetch_ok");
    wait_for(
        "a key refresh after the restart",
        Duration::from_secs(15),
        || (stack.stat("wasmcustom.veil.keys.fetch_ok") > fetched).then_some(()),
    );
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let leaked = leaked(&stack);
    counts.print("keyservice killed and restarted", leaked);
    println!("  requests sent while the keyservice was down: {during_outage}");
    assert!(during_outage >= 5, "load went on during the outage");
    assert!(
        counts.ok.load(Ordering::SeqCst) > ok_before_restart,
        "succeeds after restart"
    );
    assert_eq!(
        counts.refused.load(Ordering::SeqCst),
        0,
        "cached keys cover the outage"
    );
    assert_eq!(counts.other.load(Ordering::SeqCst), 0);
    assert_eq!(leaked, 0);
    assert_eq!(
        stack.recorded().len() as u64,
        counts.ok.load(Ordering::SeqCst)
    );
}

#[test]
fn envoy_restarted_refuses_cleanly_until_the_key_arrives_then_seals() {
    let mut stack = Stack::start_with(fast_refresh());
    // Envoy comes back while the keyservice is down: no key yet.
    stack.kill_keyservice();
    stack.restart_envoy("envoy-restarted");
    let (stop, counts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counts::default()),
    );
    let workers = load(stack.listen, 2, Arc::clone(&stop), Arc::clone(&counts));
    wait_for("refusals before the key", Duration::from_secs(15), || {
        (counts.refused.load(Ordering::SeqCst) >= 10).then_some(())
    });
    assert_eq!(counts.ok.load(Ordering::SeqCst), 0, "no key, no success");
    assert!(
        stack.recorded().is_empty(),
        "nothing forwarded without a key"
    );
    stack.restart_keyservice("keyservice-restarted");
    wait_for(
        "successes after the key arrived",
        Duration::from_secs(20),
        || (counts.ok.load(Ordering::SeqCst) >= 20).then_some(()),
    );
    let refused_at = counts.refused.load(Ordering::SeqCst);
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let leaked = leaked(&stack);
    counts.print("Envoy restarted (keyservice down, then up)", leaked);
    assert_eq!(
        counts.refused.load(Ordering::SeqCst),
        refused_at,
        "once the key is there, nothing is refused"
    );
    assert_eq!(counts.other.load(Ordering::SeqCst), 0);
    assert_eq!(leaked, 0);
    assert_eq!(
        stack.recorded().len() as u64,
        counts.ok.load(Ordering::SeqCst)
    );
}

#[test]
fn envoy_restarted_with_the_keyservice_up_first_requests_succeed_or_503() {
    let mut stack = Stack::start_with(fast_refresh());
    stack.restart_envoy("envoy-restarted");
    let (stop, counts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counts::default()),
    );
    let workers = load(stack.listen, 2, Arc::clone(&stop), Arc::clone(&counts));
    wait_for("successes after restart", Duration::from_secs(20), || {
        (counts.ok.load(Ordering::SeqCst) >= 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let leaked = leaked(&stack);
    counts.print("Envoy restarted (keyservice up)", leaked);
    assert_eq!(counts.other.load(Ordering::SeqCst), 0);
    assert_eq!(leaked, 0);
    assert_eq!(
        stack.recorded().len() as u64,
        counts.ok.load(Ordering::SeqCst)
    );
}

/// The filter's clock is moved (test-only `test_clock_offset_secs`) so the next epoch
/// starts 15 s after the test starts (on the filter's clock); load runs across the boundary. The keyservice always serves the current
/// and the next epoch's key, so no request fails and the kid changes mid-load.
#[test]
fn epoch_boundary_crossed_under_load_no_request_fails() {
    use veil_core::crypto::keys::{Epoch, RotationMonths};
    let rotation = RotationMonths::new(1).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let current = Epoch::containing(now, rotation);
    let next = current.next(rotation);
    let offset = next.start_unix() - 15 - now;
    // When the filter's clock crosses, in real time.
    let crossing = std::time::Instant::now() + Duration::from_secs(15);
    let mut config = veil_e2e::demo_filter_config();
    config["rotation_months"] = json!(1);
    config["test_clock_offset_secs"] = json!(offset);
    let stack = Stack::start_with(StackOptions {
        filter_config: config,
        keyservice_env: vec![("ENCRYPTION_ROTATION_MONTHS".into(), "1".into())],
        ..Default::default()
    });
    let start = crossing - Duration::from_secs(4);
    thread::sleep(start.saturating_duration_since(std::time::Instant::now()));
    let (stop, counts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counts::default()),
    );
    let workers = load(stack.listen, 2, Arc::clone(&stop), Arc::clone(&counts));
    // Run from ~4 s before to 4 s after the boundary.
    thread::sleep(
        (crossing + Duration::from_secs(4)).saturating_duration_since(std::time::Instant::now()),
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let rec = stack.recorded();
    let kids: Vec<Vec<String>> = rec
        .iter()
        .map(|r| veil_e2e::check::kids_in(&r.body))
        .collect();
    let (before, after) = (
        format!("r1.{}", current.label()),
        format!("r1.{}", next.label()),
    );
    let n_before = kids.iter().filter(|k| *k == &vec![before.clone()]).count();
    let n_after = kids.iter().filter(|k| *k == &vec![after.clone()]).count();
    let leaked = leaked(&stack);
    counts.print("epoch boundary crossed", leaked);
    println!("  sealed under {before}: {n_before}, under {after}: {n_after}");
    assert!(
        n_before >= 5 && n_after >= 5,
        "load ran on both sides of the boundary"
    );
    assert_eq!(
        n_before + n_after,
        rec.len(),
        "every body sealed under one of the two"
    );
    assert_eq!(
        counts.refused.load(Ordering::SeqCst),
        0,
        "no request failed"
    );
    assert_eq!(counts.other.load(Ordering::SeqCst), 0);
    assert_eq!(leaked, 0);
    assert_eq!(rec.len() as u64, counts.ok.load(Ordering::SeqCst));
}
