//! `veil-keyservice migrate`: each seed's documented example environment (tests/migrate/*.env)
//! migrates with one command; secrets are never printed; unknown variables are named;
//! contradictory ones are an error naming them.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_veil-keyservice"));
    c.env_clear();
    c
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/migrate")
        .join(name)
}

fn migrate(seed: &str, file: &std::path::Path) -> Output {
    bin()
        .args(["migrate", seed, "--env-file"])
        .arg(file)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> (String, String) {
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    (out, err)
}

/// The filter configuration block of the report.
fn filter_json(out: &str) -> Value {
    let start = out.find("# ---- filter configuration").unwrap();
    let body = &out[start..];
    let open = body.find('{').unwrap();
    let mut depth = 0;
    for (i, c) in body[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return serde_json::from_str(&body[open..open + i + 1]).unwrap();
                }
            }
            _ => {}
        }
    }
    panic!("no JSON in {out}")
}

#[test]
fn moesif_aws_example_migrates_with_kms_provider_unset() {
    let (out, err) = ok(&migrate("moesif", &fixture("moesif-aws.env")));
    assert!(out.contains("\nKMS_PROVIDER=aws-kms\n"), "{out}");
    assert!(out.contains(
        "\nAWS_CUSTOMER_KEY_ID=arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\n"
    ));
    assert!(out.contains("\nENCRYPTION_ROTATION_MONTHS=12\n"), "{out}");
    // Credentials are named, never printed.
    assert!(
        out.contains("# AWS_SECRET_ACCESS_KEY: a secret, not printed"),
        "{out}"
    );
    for secret in [
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AKIAIOSFODNN7EXAMPLE",
        "example-management-api-key-not-a-real-one",
    ] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }
    assert!(out.contains("# MOESIF_APPLICATION_ID: not needed"), "{out}");
    assert!(
        out.contains("# MOESIF_MANAGEMENT_API_KEY: not stored in Veil"),
        "{out}"
    );
    let f = filter_json(&out);
    assert_eq!(f["rotation_months"], 12);
    assert_eq!(f["routes"][0]["prefix"], "/collector");
    assert_eq!(f["routes"][0]["seal"]["profile"], "moesif");
    assert_eq!(
        f["routes"][1]["unseal"]["search"]["seal_route"],
        "/collector"
    );
    assert!(err.is_empty(), "{err}");
}

#[test]
fn moesif_azure_example_takes_kms_provider_azure_as_written() {
    let (out, _) = ok(&migrate("moesif", &fixture("moesif-azure.env")));
    assert!(out.contains("\nKMS_PROVIDER=azure-keyvault\n"), "{out}");
    assert!(out.contains("\nAZURE_VAULT_URL=https://contoso-moesif.vault.azure.net/\n"));
    assert!(out.contains("\nAZURE_KEY_NAME=moesif-kek\n"));
    assert!(out.contains("\nAZURE_TENANT_ID=72f988bf-86f1-41af-91ab-2d7cd011db47\n"));
    assert!(out.contains("# AZURE_CLIENT_SECRET: a secret, not printed"));
    assert!(!out.contains("example~client~secret"));
    // MOESIF_ENCRYPTION_ROTATION_MONTHS reaches the keyservice and the filter alike.
    assert!(out.contains("\nENCRYPTION_ROTATION_MONTHS=6\n"), "{out}");
    assert_eq!(filter_json(&out)["rotation_months"], 6);
}

#[test]
fn moesif_from_the_process_environment_and_encryption_disabled() {
    let o = bin()
        .args(["migrate", "moesif"])
        .env("KMS_PROVIDER", "AZURE")
        .env("AZURE_VAULT_URL", "https://v.vault.azure.net")
        .env("AZURE_KEY_NAME", "k")
        .env("MOESIF_ENCRYPTION_ENABLED", "false")
        .env("MOESIF_SOMETHING_NEW", "1")
        .env("PATH", "/usr/bin")
        .output()
        .unwrap();
    let (out, err) = ok(&o);
    assert!(out.contains("\nKMS_PROVIDER=azure-keyvault\n"), "{out}");
    assert_eq!(
        filter_json(&out)["routes"][0]["seal"]["options"]["enabled"],
        false
    );
    // Unknown variables of the seed's namespace are named; unrelated ones are not.
    assert!(
        err.contains("warning: MOESIF_SOMETHING_NEW: not a setting"),
        "{err}"
    );
    assert!(!err.contains("PATH"), "{err}");
}

#[test]
fn moesif_mixes_and_contradictions_are_errors_naming_the_variables() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "AWS_CUSTOMER_KEY_ID=alias/k\nAZURE_VAULT_URL=https://v.vault.azure.net\nAZURE_KEY_NAME=k\n",
            &["KMS_PROVIDER", "AWS_CUSTOMER_KEY_ID (aws-kms)", "AZURE_VAULT_URL, AZURE_KEY_NAME (azure-keyvault)"][..],
        ),
        (
            "KMS_PROVIDER=Azure\nAZURE_VAULT_URL=https://v.vault.azure.net\nAZURE_KEY_NAME=k\nAWS_CUSTOMER_KEY_ID=alias/k\n",
            &["KMS_PROVIDER / AWS_CUSTOMER_KEY_ID", "belong(s) to aws-kms"][..],
        ),
        (
            "KMS_PROVIDER=gcp\n",
            &["KMS_PROVIDER: unknown provider \"gcp\""][..],
        ),
        (
            "AWS_CUSTOMER_KEY_ID=alias/k\nENCRYPTION_ROTATION_MONTHS=3\nMOESIF_ENCRYPTION_ROTATION_MONTHS=6\n",
            &["ENCRYPTION_ROTATION_MONTHS / MOESIF_ENCRYPTION_ROTATION_MONTHS", "disagree"][..],
        ),
        (
            "AWS_CUSTOMER_KEY_ID=alias/k\nMOESIF_ENCRYPTION_ENABLED=maybe\n",
            &["MOESIF_ENCRYPTION_ENABLED"][..],
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("{i}.env"));
        std::fs::write(&p, text).unwrap();
        let o = migrate("moesif", &p);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{text} migrated");
        assert!(o.stdout.is_empty(), "{text}: printed a partial report");
        for w in *want {
            assert!(err.contains(w), "{text}: {err} lacks {w}");
        }
    }
}

#[test]
fn mte_relay_example_migrates_to_relay_config_and_envoy_pieces() {
    let (out, err) = ok(&migrate("mte-relay", &fixture("mte-relay.env")));
    assert!(
        !out.contains("example-client-id-secret"),
        "the client id secret printed"
    );
    assert!(out.contains(
        "# VEIL_RELAY_CLIENT_ID_SECRET: a secret, not printed: set it to the value of CLIENT_ID_SECRET"
    ));
    assert!(out.contains("\nREDIS_URL=redis://redis:6379\n"), "{out}");
    assert!(out.contains("\nVEIL_LOG=debug\n"), "{out}");
    let f = filter_json(&out);
    let r = &f["relay"];
    assert_eq!(r["client_id_secret_env"], "VEIL_RELAY_CLIENT_ID_SECRET");
    assert_eq!(r["routes"], serde_json::json!(["/api/*", "/login"]));
    assert_eq!(
        r["pass_through_routes"],
        serde_json::json!(["/health", "/public/*"])
    );
    assert_eq!(
        r["replay"]["mode"], "global",
        "REDIS_URL: the window is shared"
    );
    assert_eq!(
        r["visible_response_headers"],
        serde_json::json!(["x-content-type-options", "x-service"])
    );
    assert!(out.contains("port_value: 8443"), "{out}");
    assert!(
        out.contains("socket_address: { address: \"app\", port_value: 3000 }"),
        "{out}"
    );
    assert!(out.contains(
        "- exact: \"https://app.example.com\"\n  - exact: \"https://admin.example.com\""
    ));
    assert!(
        out.contains("allow_methods: \"GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD\""),
        "{out}"
    );
    assert!(
        out.contains("key: \"x-service\", value: \"relay\""),
        "{out}"
    );
    assert!(out.contains("# MAX_POOL_SIZE: none"), "{out}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn mte_relay_minimal_example_and_an_https_upstream() {
    let (out, _) = ok(&migrate("mte-relay", &fixture("mte-relay-minimal.env")));
    let f = filter_json(&out);
    assert_eq!(
        f["relay"]["replay"]["mode"], "local",
        "no REDIS_URL: one replica's window"
    );
    // MTE_ROUTES unset: the seed encodes every route, so every route requires the relay.
    assert_eq!(f["relay"]["routes"], serde_json::json!(["/*"]));
    assert!(out.contains("port_value: 8080"), "the seed's default PORT");
    assert!(out.contains("port_value: 443"), "{out}");
    assert!(out.contains("sni: \"api.example.com\""), "{out}");
    assert!(
        out.contains("allow_methods: \"GET, POST, PUT, DELETE, OPTIONS, HEAD\""),
        "{out}"
    );
}

#[test]
fn mte_relay_bad_or_contradictory_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = "UPSTREAM=http://app:3000\nCLIENT_ID_SECRET=example-client-id-secret-0123456789abcdef\nCORS_ORIGINS=https://a.example\n";
    let cases = [
        (
            "PASS_THROUGH_ROUTES=/a\nPASSTHROUGH_ROUTES=/b\n",
            "PASS_THROUGH_ROUTES / PASSTHROUGH_ROUTES",
        ),
        ("HEADERS=x-a: 1\n", "HEADERS: not a JSON object"),
        ("CORS_ORIGINS=*\n", "CORS_ORIGINS: \"*\""),
        (
            "CLIENT_ID_SECRET=short-secret\n",
            "CLIENT_ID_SECRET: must be at least 32 bytes",
        ),
        ("UPSTREAM=app:3000\n", "UPSTREAM"),
        ("PORT=http\n", "PORT"),
        ("REDIS_URL=localhost:6379\n", "REDIS_URL"),
    ];
    for (extra, want) in cases {
        let p = dir.path().join("e.env");
        std::fs::write(&p, format!("{base}{extra}")).unwrap();
        let o = migrate("mte-relay", &p);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra} migrated");
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!err.contains("short-secret"), "a secret echoed: {err}");
    }
    // Unknown variables are named and not carried over.
    let p = dir.path().join("u.env");
    std::fs::write(&p, format!("{base}DOMAIN_MAP={{}}\n")).unwrap();
    let (_, err) = ok(&migrate("mte-relay", &p));
    assert!(err.contains("warning: DOMAIN_MAP: not a setting"), "{err}");
}
