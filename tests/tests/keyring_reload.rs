//! Keys that reach every pod: the keyservice reads its keyring from a Secret volume laid out
//! as the kubelet lays it out (`keyring.json` → `..data/keyring.json`, `..data` → a
//! timestamped directory). A `keyring rotate-root` published by swapping `..data` (the
//! kubelet's atomic update) reaches the running keyservice without a restart, and the filter
//! seals with the new root while data sealed under the old one still opens.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use veil_e2e::check::{kids_in, unseal};
use veil_e2e::deploy::scratch_dir as scratch;
use veil_e2e::{demo_filter_config, fixture, keyservice_bin, wait_for, Stack, StackOptions};

/// Publishes `keyring` as the kubelet updates a Secret volume: the new content in a new
/// timestamped directory, then `..data` replaced by a rename of a fresh symlink.
fn publish(mount: &Path, generation: u32, keyring: &Path) {
    let dir = format!("..2026_12_06_00_00_0{generation}.{generation}");
    fs::create_dir(mount.join(&dir)).unwrap();
    fs::copy(keyring, mount.join(&dir).join("keyring.json")).unwrap();
    let tmp = mount.join("..data_tmp");
    symlink(&dir, &tmp).unwrap();
    fs::rename(&tmp, mount.join("..data")).unwrap();
    if !mount.join("keyring.json").exists() {
        symlink("..data/keyring.json", mount.join("keyring.json")).unwrap();
    }
}

fn keyring_cmd(work: &Path, args: &[&str]) {
    let out = Command::new(keyservice_bin())
        .args(args)
        .env("KMS_PROVIDER", "local")
        .env("VEIL_KEYRING", work.join("keyring.json"))
        .env("VEIL_LOCAL_KEK_FILE", work.join("kek.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// Sends one event and returns what reached the upstream.
fn seal_one(stack: &Stack, event: &[u8]) -> Vec<u8> {
    stack.clear_recorded();
    let r = stack.post_json("/collector/v1/events", event);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    rec[0].body.clone()
}

#[test]
fn a_root_rotated_in_the_mounted_secret_reaches_the_running_keyservice() {
    let work = scratch("keyring-reload-work");
    let mount = scratch("keyring-reload-mount");
    keyring_cmd(&work, &["keyring", "init"]);
    publish(&mount, 1, &work.join("keyring.json"));

    let mut filter = demo_filter_config();
    // The filter asks for the current keys every second (default 60 s).
    filter["keyservice"]["refresh_secs"] = 1.into();
    let stack = Stack::start_with(StackOptions {
        filter_config: filter,
        keyservice_env: vec![
            (
                "VEIL_KEYRING".into(),
                mount.join("keyring.json").display().to_string(),
            ),
            (
                "VEIL_LOCAL_KEK_FILE".into(),
                work.join("kek.key").display().to_string(),
            ),
            ("VEIL_KEYRING_RELOAD_SECS".into(), "1".into()),
        ],
        ..StackOptions::default()
    });
    let pid = stack.keyservice_proc.child.id();
    let event = fixture("event.json");
    let before = seal_one(&stack, &event);
    let kids = kids_in(&before);
    assert!(
        !kids.is_empty() && kids.iter().all(|k| k.starts_with("r1.")),
        "{kids:?}"
    );

    // rotate-root on the operator's copy, then the Secret update reaches the volume.
    keyring_cmd(&work, &["keyring", "rotate-root"]);
    let swapped = Instant::now();
    publish(&mount, 2, &work.join("keyring.json"));

    let after = wait_for(
        "the filter sealing under r2",
        Duration::from_secs(30),
        || {
            let body = seal_one(&stack, &event);
            let kids = kids_in(&body);
            kids.iter().all(|k| k.starts_with("r2.")).then_some(body)
        },
    );
    let took = swapped.elapsed();
    eprintln!("swap of ..data to the first value sealed under r2: {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(stack.keyservice_proc.child.id(), pid, "no restart");
    assert_eq!(
        stack.keyservice_metric("veil_keyservice_keyring_reloads_total", "outcome=\"ok\""),
        1
    );
    assert!(stack
        .keyservice_proc
        .log_text()
        .contains("keyring reloaded: the keyring file changed"));
    // Both generations still open: r1 stays active after a rotation.
    assert_eq!(unseal(&stack, &before), event);
    assert_eq!(unseal(&stack, &after), event);

    // A keyring that does not parse is not taken: the roots held stay, sealing goes on.
    let bad = work.join("bad.json");
    fs::write(&bad, b"{\"format\": \"not a keyring\"}").unwrap();
    publish(&mount, 3, &bad);
    wait_for("the failed reload counted", Duration::from_secs(10), || {
        (stack.keyservice_metric(
            "veil_keyservice_keyring_reloads_total",
            "outcome=\"failed\"",
        ) >= 1)
            .then_some(())
    });
    let still = seal_one(&stack, &event);
    assert!(kids_in(&still).iter().all(|k| k.starts_with("r2.")));
    assert_eq!(unseal(&stack, &still), event);
}
