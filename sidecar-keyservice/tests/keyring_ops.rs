//! Keyring operations with the local provider: rotate-root while replicas serve, verify with
//! a wrong KEK, destroy (confirmation, irreversibility), rewrap to a new KEK, and three
//! replicas handing out identical data keys.

mod common;

use common::*;
use veil_keyservice::keyring::{Keyring, RootState};

fn error_line(o: &Output) -> String {
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "want exactly one error line: {}", o.stderr);
    lines[0].to_string()
}

#[test]
fn three_replicas_hand_out_identical_keys_and_pick_up_a_rotated_root() {
    let env = Env::new();
    env.init();
    let replicas: Vec<Server> = (0..3).map(|_| env.serve()).collect();
    let current: Vec<serde_json::Value> = replicas
        .iter()
        .map(|s| s.get("/v1/data-keys/current", Some(TOKEN)).json())
        .collect();
    assert_eq!(current[0]["current_root"], 1);
    assert!(current.iter().all(|c| *c == current[0]), "{current:?}");
    let old: Vec<serde_json::Value> = replicas
        .iter()
        .map(|s| s.get("/v1/data-keys/r1.2025-01", Some(TOKEN)).json())
        .collect();
    assert!(old.iter().all(|c| *c == old[0]));

    // A new root while they run: a filter that meets r2 data asks any replica for it, and
    // each one loads it from the keyring on demand; r1 keeps being served.
    let o = env.run(&["keyring", "rotate-root"]);
    assert!(o.status.success(), "{}", o.all());
    let k = Keyring::load(&env.keyring()).unwrap();
    assert_eq!(k.current_version(), Some(2));
    let r2: Vec<serde_json::Value> = replicas
        .iter()
        .map(|s| {
            let r = s.get("/v1/data-keys/r2.2026-01", Some(TOKEN));
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
        })
        .collect();
    assert!(r2.iter().all(|c| *c == r2[0]));
    assert_ne!(r2[0]["dek"], old[0]["dek"]);
    for s in &replicas {
        assert_eq!(
            s.get("/v1/data-keys/r1.2025-01", Some(TOKEN)).json(),
            old[0]
        );
        assert_eq!(
            s.get("/v1/data-keys/current", Some(TOKEN)).json()["current_root"],
            2
        );
        // An unknown root is still a 404 after the reload.
        assert_eq!(s.get("/v1/data-keys/r9.2026-01", Some(TOKEN)).status, 404);
    }
    for s in replicas {
        s.stop();
    }
}

#[test]
fn verify_catches_a_wrong_kek_before_it_matters() {
    let mut env = Env::new();
    env.init();
    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let v = env.run(&["keyring", "verify"]);
    assert!(v.status.success(), "{}", v.all());
    assert!(v.stdout.contains("all 2 root(s) verified"), "{}", v.stdout);

    // Another KEK file (e.g. a restored backup of the wrong one).
    let other = env.dir.path().join("other.key");
    std::fs::write(&other, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    env.set("VEIL_LOCAL_KEK_FILE", &other.display().to_string());
    let v = env.run(&["keyring", "verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", v.all());
    let line = error_line(&v);
    assert!(
        line.contains("2 of 2 root(s) and 1 of 1 relay key(s) failed verification"),
        "{line}"
    );
    assert!(v.stdout.contains("FAILED"), "{}", v.stdout);
}

#[test]
fn rewrap_to_a_new_local_kek_keeps_every_data_key() {
    let env = Env::new();
    env.init();
    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let s = env.serve();
    let before: Vec<_> = ["r1.2026-01", "r2.2026-01", "r1.2020-01"]
        .iter()
        .map(|k| s.get(&format!("/v1/data-keys/{k}"), Some(TOKEN)).json())
        .collect();
    s.stop();
    let new_kek = env.dir.path().join("new-kek.key");
    let o = env.run(&[
        "keyring",
        "rewrap",
        "--to",
        &format!("VEIL_LOCAL_KEK_FILE={}", new_kek.display()),
    ]);
    assert!(o.status.success(), "{}", o.all());
    assert!(o.stdout.contains("re-wrapped [r1, r2, k1]"), "{}", o.stdout);
    let mut moved = Env::new();
    moved.vars = env.vars.clone();
    moved.set("VEIL_LOCAL_KEK_FILE", &new_kek.display().to_string());
    let s = moved.serve();
    let after: Vec<_> = ["r1.2026-01", "r2.2026-01", "r1.2020-01"]
        .iter()
        .map(|k| s.get(&format!("/v1/data-keys/{k}"), Some(TOKEN)).json())
        .collect();
    s.stop();
    assert_eq!(before, after);
    // The old KEK no longer opens it; a second rewrap has nothing to do.
    assert_eq!(env.run(&["keyring", "verify"]).status.code(), Some(1));
    let o = moved.run(&[
        "keyring",
        "rewrap",
        "--to",
        &format!("VEIL_LOCAL_KEK_FILE={}", new_kek.display()),
    ]);
    assert!(
        o.status.success() && o.stdout.contains("nothing to do"),
        "{}",
        o.all()
    );
    let o = moved.run(&["keyring", "rewrap", "--to", "garbage"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(error_line(&o).contains("VAR=VALUE"));
}

#[test]
fn destroy_asks_for_confirmation_and_shreds_the_root() {
    let env = Env::new();
    env.init();
    // The last active root cannot go.
    let o = env.run(&["keyring", "destroy", "1", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(error_line(&o).contains("last active root"), "{}", o.stderr);
    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let before = std::fs::read_to_string(env.keyring()).unwrap();

    // No confirmation on stdin (a script without --yes): refused, nothing changes.
    let o = env.run(&["keyring", "destroy", "r1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(error_line(&o).contains("not confirmed"), "{}", o.stderr);
    assert!(o.stderr.contains("cannot be undone"), "{}", o.stderr);
    let o = env.run_stdin(&["keyring", "destroy", "r1"], "yes\n");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(env.keyring()).unwrap(), before);

    let o = env.run_stdin(&["keyring", "destroy", "r1"], "destroy r1\n");
    assert!(o.status.success(), "{}", o.all());
    let k = Keyring::load(&env.keyring()).unwrap();
    // r1 stays as a tombstone: no wrapped key, never reused.
    assert_eq!(
        k.roots
            .iter()
            .map(|r| (r.version, r.state, r.wrapped.is_empty()))
            .collect::<Vec<_>>(),
        vec![
            (1, RootState::Destroyed, true),
            (2, RootState::Active, false)
        ]
    );
    let s = env.serve();
    assert_eq!(s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).status, 404);
    assert_eq!(s.get("/v1/data-keys/r2.2026-01", Some(TOKEN)).status, 200);
    s.stop();
    let o = env.run(&["keyring", "destroy", "r1", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(error_line(&o).contains("no root r1"));
    // A new rotation never reuses a destroyed version... (r3 after r2; r1 is gone for good).
    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let k = Keyring::load(&env.keyring()).unwrap();
    assert_eq!(k.current_version(), Some(3));
}

/// Issue #18: `keyring destroy` of the current r2 then `rotate-root` made a new r2, so one
/// kid named two keys, and running keyservices kept serving the destroyed root until
/// restart. Now the version is a tombstone (the next root is r3), a running keyservice stops
/// serving the destroyed root within its reload interval, and every answer carries the
/// data key's fingerprint and the root versions served.
#[test]
fn a_destroyed_root_version_is_never_reused_and_stops_being_served() {
    let env = Env::new();
    env.init();
    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let s = env.serve();
    let current = s.get("/v1/data-keys/current", Some(TOKEN)).json();
    assert_eq!(current["current_root"], 2);
    assert_eq!(current["root_versions"], serde_json::json!([1, 2]));
    let r2 = s.get("/v1/data-keys/r2.2026-01", Some(TOKEN)).json();
    // The fingerprint is the data key's (HKDF-Expand(DEK, "veil/v2/fingerprint", 16)).
    let dek = veil_core::crypto::keys::Dek::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r2["dek"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(r2["fingerprint"], dek.fingerprint().to_string());

    let o = env.run(&["keyring", "destroy", "r2", "--yes"]);
    assert!(o.status.success(), "{}", o.all());
    // The running keyservice reads the keyring live (VEIL_KEYRING_RELOAD_SECS).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = s.get("/v1/data-keys/current", Some(TOKEN)).json();
        if c["root_versions"] == serde_json::json!([1]) {
            assert_eq!(c["current_root"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still served: {c}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(s.get("/v1/data-keys/r2.2026-01", Some(TOKEN)).status, 404);
    s.stop();

    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let k = Keyring::load(&env.keyring()).unwrap();
    assert_eq!(k.current_version(), Some(3), "r2 is never issued again");
    let s = env.serve();
    let r3 = s.get("/v1/data-keys/r3.2026-01", Some(TOKEN)).json();
    assert_ne!(r3["fingerprint"], r2["fingerprint"]);
    assert_eq!(s.get("/v1/data-keys/r2.2026-01", Some(TOKEN)).status, 404);
    let o = env.run(&["keyring", "verify"]);
    assert!(o.status.success(), "{}", o.all());
    s.stop();
}

#[test]
fn check_reports_config_provider_and_keyring() {
    let mut env = Env::new();
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.contains("serve     FAILED"), "{}", o.stdout);
    assert!(o.stdout.contains("provider  FAILED"), "{}", o.stdout);
    env.init();
    env.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let o = env.run(&["check"]);
    assert!(o.status.success(), "{}", o.all());
    assert!(o.stdout.contains("round trip"), "{}", o.stdout);
    assert!(o.stdout.contains("check     ok"), "{}", o.stdout);
    env.set("KMS_PROVIDER", "aws-kms");
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        error_line(&o).contains("AWS_CUSTOMER_KEY_ID"),
        "{}",
        o.stderr
    );
}
