//! The `azure-keyvault` provider (official Azure SDK crates) against a DOUBLE of Key Vault and
//! Entra ID (`tests/azure/keyvault_double.py`): the published REST calls only, real
//! RSA-OAEP-256, real TLS with a test CA, the 401 challenge first. The client reaches it with
//! the production URLs through the standard `HTTPS_PROXY` (the double tunnels only its own
//! two names).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use veil_core::crypto::keys::RootKey;
use veil_keyservice::keyring::Keyring;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT: &str = "veil-app";
const SECRET: &str = "client-s3cret-value-for-tests";
const IDENTITY_HEADER: &str = "identity-header-value-for-tests";
/// The Kubernetes service-account token AKS workload identity projects into the pod.
const FEDERATED_TOKEN: &str = "federated-service-account-token-for-tests";

struct Double {
    _d: Daemon,
    proxy: u16,
    msi: u16,
    ca: PathBuf,
    keys_dir: PathBuf,
}

fn start_double(dir: &Path) -> Double {
    let keys_dir = dir.join("double-keys");
    std::fs::create_dir(&keys_dir).unwrap();
    let cfg = serde_json::json!({
        "tenant": TENANT,
        "clients": {
            CLIENT: {"secret": SECRET, "allowed": true, "assertion": FEDERATED_TOKEN},
            "no-role-app": {"secret": SECRET, "allowed": false},
        },
        "identity_header": IDENTITY_HEADER,
        "dump_dir": keys_dir,
        "keys": [
            {"name": "veil-kek", "size": 2048, "exp_days": 1000},
            {"name": "big", "size": 3072, "exp_days": 1000},
            {"name": "soon", "size": 2048, "exp_days": 100},
            {"name": "forever", "size": 2048, "exp_days": null},
            {"name": "rotating", "size": 2048, "exp_days": 1000, "rotate": true},
        ],
    });
    let cfg_path = dir.join("double.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let ca = dir.join("double-ca.pem");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/azure/keyvault_double.py");
    let mut child = Command::new(venv_bin("python"))
        .arg(script)
        .arg(&cfg_path)
        .arg(&ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the Key Vault double did not start: {e}: {line:?}"));
    Double {
        _d: Daemon(child),
        proxy: v["proxy"].as_u64().unwrap() as u16,
        msi: v["msi"].as_u64().unwrap() as u16,
        ca,
        keys_dir,
    }
}

/// The keyservice's environment: production URLs, reached through the double's proxy.
fn azure_env(d: &Double, key: &str) -> Env {
    let mut env = Env::new();
    env.set("KMS_PROVIDER", "azure-keyvault")
        .set("AZURE_VAULT_URL", "https://veil-test.vault.azure.net")
        .set("AZURE_KEY_NAME", key)
        .set("AZURE_TENANT_ID", TENANT)
        .set("AZURE_CLIENT_ID", CLIENT)
        .set("AZURE_CLIENT_SECRET", SECRET)
        .set("HTTPS_PROXY", &format!("http://127.0.0.1:{}", d.proxy))
        .set("SSL_CERT_FILE", &d.ca.display().to_string());
    env
}

/// Decrypts a wrapped root with the double's private key, outside the keyservice.
fn oaep_decrypt(d: &Double, key: &str, wrapped_b64: &str) -> Vec<u8> {
    let out = Command::new(venv_bin("python"))
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/azure/oaep_decrypt.py"))
        .arg(d.keys_dir.join(format!("{key}.pem")))
        .arg(wrapped_b64)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hex::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

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
fn client_secret_init_verify_check_serve_rotate() {
    let scratch = tempfile::tempdir().unwrap();
    let d = start_double(scratch.path());
    let env = azure_env(&d, "veil-kek");
    let o = env.init();
    assert!(o.stdout.contains("provider azure-keyvault"), "{}", o.all());
    let k = Keyring::load(&env.keyring()).unwrap();
    let r1 = &k.roots[0];
    assert_eq!(r1.kek.provider, "azure-keyvault");
    assert!(
        r1.kek
            .key_id
            .starts_with("https://veil-test.vault.azure.net/keys/veil-kek/"),
        "{}",
        r1.kek.key_id
    );
    // Really RSA-OAEP-256 under the vault's key: root || "veil/v1/root/r1".
    let plain = oaep_decrypt(&d, "veil-kek", &r1.wrapped);
    assert_eq!(&plain[32..], b"veil/v1/root/r1");
    let root = RootKey::from_slice(&plain[..32]).unwrap();
    assert_eq!(hex::encode(root.check_value()), r1.check);

    // The relay server key's seed too: seed || "veil/v1/relay-key/k1".
    let rk = &k.relay_keys[0];
    let plain_rk = oaep_decrypt(&d, "veil-kek", &rk.wrapped);
    assert_eq!(&plain_rk[32..], b"veil/v1/relay-key/k1");
    let seed: [u8; 32] = plain_rk[..32].try_into().unwrap();
    let server_key = veil_core::relay::v2::ServerKey::from_seed(1, seed).unwrap();
    assert_eq!(server_key.config().to_b64(), rk.config);
    let shown = env.run(&["relay-key", "show"]);
    assert_eq!(shown.stdout.trim(), rk.config, "{}", shown.all());

    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let v = env.run(&["keyring", "verify"]);
    assert!(v.status.success(), "{}", v.all());
    assert!(v.stdout.contains("all 2 root(s) verified"), "{}", v.stdout);
    assert!(v.stdout.contains("k1    active    ok"), "{}", v.stdout);

    let mut c = Env::new();
    c.vars = env.vars.clone();
    c.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let ch = c.run(&["check"]);
    assert!(ch.status.success(), "{}", ch.all());
    assert!(ch.stdout.contains("RSA 2048, enabled"), "{}", ch.stdout);

    let s = env.serve();
    assert_eq!(
        s.get("/v1/data-keys/current", Some(TOKEN)).json()["current_root"],
        2
    );
    assert_eq!(s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).status, 200);
    let logs = s.stop().all();
    assert!(logs.contains("\"operation\":\"UnwrapKey\""), "{logs}");
    assert!(!logs.contains(SECRET));
    assert!(!logs.contains(&hex::encode(root.as_bytes())));
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        assert!(!logs.contains(&base64::Engine::encode(&engine, root.as_bytes())));
        // The wrapped plaintext (root || version) as the SDK would carry it.
        assert!(!logs.contains(&base64::Engine::encode(&engine, &plain)));
    }

    // A root moved to another version slot does not unwrap (the version is in the plaintext).
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.keyring()).unwrap()).unwrap();
    let w1 = doc["roots"][0]["wrapped"].clone();
    doc["roots"][1]["wrapped"] = w1;
    std::fs::write(env.keyring(), doc.to_string()).unwrap();
    let v = env.run(&["keyring", "verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", v.all());
    assert!(
        v.stdout.contains("r2") && v.stdout.contains("does not authenticate"),
        "{}",
        v.stdout
    );
}

#[test]
fn managed_identity_and_refusals() {
    let scratch = tempfile::tempdir().unwrap();
    let d = start_double(scratch.path());
    // App Service managed identity: no tenant, no secret.
    let mut env = azure_env(&d, "veil-kek");
    env.unset("AZURE_TENANT_ID")
        .unset("AZURE_CLIENT_ID")
        .unset("AZURE_CLIENT_SECRET")
        .set(
            "IDENTITY_ENDPOINT",
            &format!("http://127.0.0.1:{}/msi/token", d.msi),
        )
        .set("IDENTITY_HEADER", IDENTITY_HEADER);
    let o = env.init();
    assert!(o.stdout.contains("provider azure-keyvault"), "{}", o.all());
    let s = env.run(&["keyring", "status"]);
    assert!(s.stdout.contains("managed identity"), "{}", s.stdout);

    let mut wrong = azure_env(&d, "veil-kek");
    wrong.set("AZURE_CLIENT_SECRET", "not-the-secret");
    let o = wrong.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    let line = error_line(&o);
    assert!(line.contains("provider refused"), "{line}");
    assert!(
        line.contains("AADSTS7000215") || line.contains("401"),
        "{line}"
    );
    assert!(!line.contains("not-the-secret"), "{line}");
    assert!(!wrong.keyring().exists());

    let mut norole = azure_env(&d, "veil-kek");
    norole.set("AZURE_CLIENT_ID", "no-role-app");
    let o = norole.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(error_line(&o).contains("access denied"), "{}", o.stderr);

    let missing = azure_env(&d, "nope");
    let o = missing.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(error_line(&o).contains("no such key"), "{}", o.stderr);
}

/// AKS workload identity: tenant, client id and the federated token file (what the webhook
/// injects), no secret: the token is sent as the client assertion.
#[test]
fn workload_identity() {
    let scratch = tempfile::tempdir().unwrap();
    let d = start_double(scratch.path());
    let token = scratch.path().join("azure-identity-token");
    std::fs::write(&token, FEDERATED_TOKEN).unwrap();
    let mut env = azure_env(&d, "veil-kek");
    env.unset("AZURE_CLIENT_SECRET")
        .set("AZURE_FEDERATED_TOKEN_FILE", &token.display().to_string());
    let o = env.init();
    assert!(o.stdout.contains("provider azure-keyvault"), "{}", o.all());
    let s = env.run(&["keyring", "status"]);
    assert!(
        s.stdout.contains("workload identity veil-app"),
        "{}",
        s.stdout
    );
    assert!(!s.all().contains(FEDERATED_TOKEN));

    // Another token: refused by Entra ID (the double), named, not echoed.
    let other = scratch.path().join("other-token");
    std::fs::write(&other, "a-token-entra-does-not-know").unwrap();
    let mut wrong = azure_env(&d, "veil-kek");
    wrong
        .unset("AZURE_CLIENT_SECRET")
        .set("AZURE_FEDERATED_TOKEN_FILE", &other.display().to_string());
    let o = wrong.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    let line = error_line(&o);
    assert!(line.contains("provider refused"), "{line}");
    assert!(!line.contains("a-token-entra-does-not-know"), "{line}");
}

#[test]
fn key_constraints_say_what_is_wrong() {
    let scratch = tempfile::tempdir().unwrap();
    let d = start_double(scratch.path());
    // The double sets "soon" to expire 100 days after it starts: 99 days left once a second
    // has passed, 100 within the same second.
    for (key, wants) in [
        ("big", &["key size is 3072 bits"][..]),
        (
            "soon",
            &["the key expires in 99 days", "the key expires in 100 days"][..],
        ),
        ("forever", &["no expiry date"][..]),
        ("rotating", &["auto-rotation is on"][..]),
    ] {
        let mentions = |text: &str| wants.iter().any(|w| text.contains(w));
        let env = azure_env(&d, key);
        let o = env.run(&["keyring", "init"]);
        assert_eq!(o.status.code(), Some(1), "{key}: {}", o.all());
        let line = error_line(&o);
        assert!(
            line.contains("does not meet the constraints"),
            "{key}: {line}"
        );
        assert!(mentions(&line), "{key}: {line}");
        assert!(!env.keyring().exists());
        let mut c = Env::new();
        c.vars = env.vars.clone();
        c.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
        let ch = c.run(&["check"]);
        assert_eq!(ch.status.code(), Some(1), "{key}: {}", ch.all());
        assert!(mentions(&ch.stdout), "{key}: {}", ch.stdout);
    }
}

#[test]
fn rewrap_local_to_key_vault_keeps_data_keys() {
    let scratch = tempfile::tempdir().unwrap();
    let d = start_double(scratch.path());
    let az = azure_env(&d, "veil-kek");
    let mut local = Env::new();
    local
        .vars
        .insert("VEIL_KEYRING".into(), az.keyring().display().to_string());
    local.init();
    let s = local.serve();
    let before = s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json();
    s.stop();
    for k in ["HTTPS_PROXY", "SSL_CERT_FILE"] {
        local.set(k, &az.vars[k]);
    }
    let to: Vec<String> = [
        "KMS_PROVIDER",
        "AZURE_VAULT_URL",
        "AZURE_KEY_NAME",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
    ]
    .iter()
    .map(|k| format!("{k}={}", az.vars[*k]))
    .collect();
    let mut args = vec!["keyring", "rewrap"];
    for t in &to {
        args.extend(["--to", t.as_str()]);
    }
    let pin = local.run(&["relay-key", "show"]).stdout;
    let o = local.run(&args);
    assert!(o.status.success(), "{}", o.all());
    assert!(o.stdout.contains("re-wrapped [r1, k1]"), "{}", o.stdout);
    assert_eq!(
        az.run(&["relay-key", "show"]).stdout,
        pin,
        "the pin is unchanged"
    );
    let s = az.serve();
    assert_eq!(
        s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json(),
        before
    );
    s.stop();
}
