//! What `veil-keyservice migrate` prints for each seed's documented example environment is
//! loaded by the real Envoy: the filter configuration (and, for the relay, the listener port,
//! the `app` cluster, the CORS policy and the response headers) put into the shipped
//! standalone config the way the report says (tests/deploy/splice_migrate.py), then
//! `envoy --mode validate`, which also configures the filter with it.

use std::ffi::OsStr;
use std::fs;
use std::process::Command;

use veil_e2e::deploy::{envoy_validate, py_ok, scratch_dir};
use veil_e2e::{keyservice_bin, repo_root, wasm_path};

#[test]
fn each_seed_example_migrates_into_a_config_envoy_loads() {
    let dir = scratch_dir("migrate-envoy");
    for (seed, example, config) in [
        ("moesif", "moesif-aws.env", "envoy/veil-seal.yaml"),
        ("moesif", "moesif-azure.env", "envoy/veil-seal.yaml"),
        ("mte-relay", "mte-relay.env", "envoy/veil-relay.yaml"),
        (
            "mte-relay",
            "mte-relay-minimal.env",
            "envoy/veil-relay.yaml",
        ),
    ] {
        let env_file = repo_root()
            .join("sidecar-keyservice/tests/migrate")
            .join(example);
        let out = Command::new(keyservice_bin())
            .args(["migrate", seed, "--env-file"])
            .arg(&env_file)
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{example}: {out:?}");
        let report = dir.join(format!("{example}.report"));
        fs::write(&report, &out.stdout).unwrap();
        let spliced = dir.join(format!("{example}.spliced.yaml"));
        py_ok(
            "splice_migrate.py",
            &[
                repo_root().join(config).as_os_str(),
                report.as_os_str(),
                spliced.as_os_str(),
            ],
        );
        let final_path = dir.join(format!("{example}.yaml"));
        py_ok(
            "override.py",
            &[
                spliced.as_os_str(),
                final_path.as_os_str(),
                OsStr::new(&format!("--wasm={}", wasm_path().display())),
            ],
        );
        envoy_validate(&final_path).unwrap_or_else(|e| panic!("{example}: {e}"));
        let text = fs::read_to_string(&final_path).unwrap();
        if seed == "mte-relay" {
            // The pieces are in: the origins, the upstream, the port of the example.
            assert!(text.contains("https://app.example.com"), "{text}");
        }
        if example == "mte-relay.env" {
            assert!(
                text.contains("port_value: 8443") && text.contains("x-service"),
                "{text}"
            );
        }
        if example == "mte-relay-minimal.env" {
            assert!(
                text.contains("api.example.com") && text.contains("sni"),
                "{text}"
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
