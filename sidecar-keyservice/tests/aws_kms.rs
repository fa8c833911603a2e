//! The `aws-kms` provider against a real moto server (KMS, STS, IAM with IAM enforced):
//! static keys, an assumed role, a denied role, a wrong key id, a disabled key, a rewrap from
//! the local provider, and a KMS that is unreachable at start and later.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use common::*;
use veil_core::crypto::keys::{Epoch, RootKey, RotationMonths};
use veil_keyservice::config::Secret;
use veil_keyservice::providers::aws_kms::{encryption_context, AwsKmsConfig};

use veil_keyservice::keyring::Keyring;
use veil_keyservice::providers::WrapContext;

fn aws_env(m: &MotoSetup) -> Env {
    let mut env = Env::new();
    let empty = env.dir.path().join("aws-empty-config");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    env.set("KMS_PROVIDER", "aws-kms")
        .set("AWS_CUSTOMER_KEY_ID", &m.key)
        .set("AWS_ENDPOINT_URL", &m.endpoint)
        .set("AWS_ACCESS_KEY_ID", &m.access_key_id)
        .set("AWS_SECRET_ACCESS_KEY", &m.secret_access_key)
        // No shared config files or IMDS lookups from the test machine.
        .set("AWS_CONFIG_FILE", &empty)
        .set("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .set("AWS_EC2_METADATA_DISABLED", "true");
    env
}

/// Decrypts a keyring root straight through moto with the test's own SDK client (not the
/// keyservice's code path): the wrapped root must really be a KMS ciphertext under the key,
/// bound to its version's encryption context.
fn kms_decrypt(m: &MotoSetup, wrapped_b64: &str, version: u32) -> Result<RootKey, String> {
    kms_decrypt_as(m, wrapped_b64, WrapContext::Root(version))
}

/// As [`kms_decrypt`], under any wrap context (a relay server key's seed).
fn kms_decrypt_as(m: &MotoSetup, wrapped_b64: &str, ctx: WrapContext) -> Result<RootKey, String> {
    let cfg = AwsKmsConfig {
        key_id: m.key.clone(),
        region: "us-west-2".into(),
        static_credentials: Some((
            m.access_key_id.clone(),
            Secret::new(m.secret_access_key.clone()),
            None,
        )),
        role_arn: None,
        role_session_name: "test".into(),
        endpoint_url: Some(m.endpoint.clone()),
    };
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(wrapped_b64)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sdk = veil_keyservice::providers::aws_kms::sdk_config(&cfg).await;
        let kms = aws_sdk_kms::Client::new(&sdk);
        let out = kms
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await
            .map_err(|e| format!("{}", aws_sdk_kms::error::DisplayErrorContext(&e)))?;
        RootKey::from_slice(out.plaintext.unwrap().as_ref()).map_err(|e| e.to_string())
    })
}

fn keyring(env: &Env) -> Keyring {
    Keyring::load(&env.keyring()).unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
fn static_keys_init_verify_check_serve_rotate() {
    let (_moto, m) = start_moto();
    let env = aws_env(&m);
    let o = env.init();
    assert!(o.stdout.contains("provider aws-kms"), "{}", o.stdout);
    assert!(!o.stderr.contains("DEVELOPMENT ONLY"), "{}", o.stderr);
    let k = keyring(&env);
    let r1 = &k.roots[0];
    assert_eq!(r1.kek.provider, "aws-kms");
    assert_eq!(r1.kek.key_id, m.key);
    // The wrapped root is a KMS ciphertext moto decrypts, under version 1's context only.
    let root = kms_decrypt(&m, &r1.wrapped, 1).unwrap();
    assert_eq!(hex::encode(root.check_value()), r1.check);
    let e = kms_decrypt(&m, &r1.wrapped, 2).unwrap_err();
    assert!(e.contains("InvalidCiphertext"), "{e}");

    // The relay server key's seed is a KMS ciphertext too, under its own context only.
    let rk = &k.relay_keys[0];
    assert_eq!((rk.id, rk.kek.key_id.as_str()), (1, m.key.as_str()));
    let seed = kms_decrypt_as(&m, &rk.wrapped, WrapContext::RelayKey(1)).unwrap();
    let server_key = veil_core::relay::v2::ServerKey::from_seed(1, *seed.as_bytes()).unwrap();
    assert_eq!(server_key.config().to_b64(), rk.config);
    let e = kms_decrypt(&m, &rk.wrapped, 1).unwrap_err();
    assert!(e.contains("InvalidCiphertext"), "{e}");
    let shown = env.run(&["relay-key", "show"]);
    assert!(shown.status.success(), "{}", shown.all());
    assert_eq!(shown.stdout.trim(), rk.config);

    let v = env.run(&["keyring", "verify"]);
    assert!(v.status.success(), "{}", v.all());
    assert!(v.stdout.contains("r1    active    ok"), "{}", v.stdout);
    assert!(v.stdout.contains("k1    active    ok"), "{}", v.stdout);

    let mut c = Env::new();
    c.vars = env.vars.clone();
    c.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let ch = c.run(&["check"]);
    assert!(ch.status.success(), "{}", ch.all());
    assert!(ch.stdout.contains("DescribeKey"), "{}", ch.stdout);
    assert!(ch.stdout.contains("round trip"), "{}", ch.stdout);
    assert!(ch.stdout.contains("check     ok"), "{}", ch.stdout);

    // At trace level too (the SDK's own logs included), no key material and no secret.
    let mut traced = Env::new();
    traced.vars = env.vars.clone();
    traced.set("VEIL_LOG", "trace");
    let s = traced.serve();
    let body = s.get("/v1/data-keys/current", Some(TOKEN)).json();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let epoch = Epoch::containing(now, RotationMonths::DEFAULT);
    assert_eq!(
        body["keys"][0]["dek"].as_str().unwrap(),
        b64url(root.derive_dek(epoch).as_bytes())
    );
    let logs = s.stop().all();
    // One log line per KMS call, with operation, key id, outcome and latency; no key bytes.
    let decrypt_line = logs
        .lines()
        .find(|l| l.contains("veil_keyservice::kms") && l.contains("\"operation\":\"Decrypt\""))
        .unwrap_or_else(|| panic!("no Decrypt log line: {logs}"));
    assert!(decrypt_line.contains(&m.key), "{decrypt_line}");
    assert!(
        decrypt_line.contains("\"outcome\":\"ok\""),
        "{decrypt_line}"
    );
    assert!(decrypt_line.contains("latency_ms"), "{decrypt_line}");
    assert!(!logs.contains(&hex::encode(root.as_bytes())));
    assert!(!logs.contains(&b64url(root.as_bytes())));
    assert!(!logs.contains(&base64::engine::general_purpose::STANDARD.encode(root.as_bytes())));
    assert!(!logs.contains(body["keys"][0]["dek"].as_str().unwrap()));
    assert!(!logs.contains(&m.secret_access_key));

    // rotate-root: r2 is generated by KMS too; r1 keeps unwrapping.
    let o = env.run(&["keyring", "rotate-root"]);
    assert!(o.status.success(), "{}", o.all());
    let k = keyring(&env);
    assert_eq!(k.roots.len(), 2);
    let root2 = kms_decrypt(&m, &k.roots[1].wrapped, 2).unwrap();
    assert_eq!(hex::encode(root2.check_value()), k.roots[1].check);
    assert_ne!(root2.as_bytes(), root.as_bytes());
    assert!(env.run(&["keyring", "verify"]).status.success());

    // rotate-relay-key: k2 is generated by KMS (GenerateDataKey under k2's context).
    let o = env.run(&["keyring", "rotate-relay-key"]);
    assert!(o.status.success(), "{}", o.all());
    let k = keyring(&env);
    let seed2 = kms_decrypt_as(&m, &k.relay_keys[1].wrapped, WrapContext::RelayKey(2)).unwrap();
    assert_ne!(seed2.as_bytes(), seed.as_bytes());
    let shown = env.run(&["relay-key", "show"]);
    assert_eq!(shown.stdout.trim(), k.relay_keys[1].config);
    assert!(env.run(&["keyring", "verify"]).status.success());
}

#[test]
fn assumed_role_works_and_a_denied_role_is_refused() {
    let (_moto, m) = start_moto();
    let mut env = aws_env(&m);
    env.set("AWS_SECURE_PROXY_ROLE_ARN", &m.role);
    let o = env.init();
    assert!(o.stdout.contains("provider aws-kms"), "{}", o.stdout);
    let s = env.run(&["keyring", "status"]);
    assert!(s.status.success(), "{}", s.all());
    assert!(
        s.stdout.contains(&format!("role {}", m.role)),
        "{}",
        s.stdout
    );
    let k = keyring(&env);
    let root = kms_decrypt(&m, &k.roots[0].wrapped, 1).unwrap();
    assert_eq!(hex::encode(root.check_value()), k.roots[0].check);

    // The role without KMS rights: assume-role succeeds, KMS refuses; nothing is written.
    let mut denied = aws_env(&m);
    denied.set("AWS_SECURE_PROXY_ROLE_ARN", &m.denied_role);
    let o = denied.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    let line = error_line(&o);
    assert!(line.contains("provider refused"), "{line}");
    assert!(line.contains("GenerateDataKey"), "{line}");
    assert!(
        line.contains("access denied") || line.contains("AccessDenied"),
        "{line}"
    );
    assert!(!denied.keyring().exists());

    // A role whose trust policy does not name this user: STS refuses AssumeRole.
    let mut untrusted = aws_env(&m);
    untrusted.set("AWS_SECURE_PROXY_ROLE_ARN", &m.untrusted_role);
    let o = untrusted.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    let line = error_line(&o);
    assert!(line.contains("provider refused"), "{line}");
    assert!(
        line.contains("AssumeRole") || line.contains("sts:AssumeRole"),
        "{line}"
    );
    assert!(!untrusted.keyring().exists());

    // Static keys that moto does not know: refused before any key is made.
    let mut bogus = aws_env(&m);
    bogus
        .set("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
        .set("AWS_SECRET_ACCESS_KEY", "nope");
    let o = bogus.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(error_line(&o).contains("provider refused"), "{}", o.stderr);
    assert!(!bogus.keyring().exists());
}

/// IRSA: no static keys; EKS's pod identity webhook sets AWS_ROLE_ARN and
/// AWS_WEB_IDENTITY_TOKEN_FILE, and the SDK's default chain exchanges the projected token
/// (STS AssumeRoleWithWebIdentity) for the role's credentials. moto answers that unsigned
/// call only with IAM enforcement off, so this shows the wiring (token file read, STS
/// called, KMS called with what it returned), not the role's policy.
#[test]
fn irsa_web_identity_without_static_keys() {
    let (_moto, m) = start_moto_enforcing(false);
    let mut env = aws_env(&m);
    let token = env.dir.path().join("eks-token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.e30.projected-service-account-token",
    )
    .unwrap();
    env.unset("AWS_ACCESS_KEY_ID")
        .unset("AWS_SECRET_ACCESS_KEY")
        .set("AWS_ROLE_ARN", &m.role)
        .set("AWS_WEB_IDENTITY_TOKEN_FILE", &token.display().to_string());
    let o = env.init();
    assert!(o.stdout.contains("provider aws-kms"), "{}", o.all());
    let k = keyring(&env);
    let root = kms_decrypt(&m, &k.roots[0].wrapped, 1).unwrap();
    assert_eq!(hex::encode(root.check_value()), k.roots[0].check);
    // Without the token file the default chain has nothing: refused, nothing written.
    let mut none = aws_env(&m);
    none.unset("AWS_ACCESS_KEY_ID")
        .unset("AWS_SECRET_ACCESS_KEY")
        .set("AWS_ROLE_ARN", &m.role)
        .set(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &env.dir.path().join("missing").display().to_string(),
        );
    let o = none.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(!none.keyring().exists());
}

#[test]
fn wrong_key_id_and_disabled_key_are_clear_errors() {
    let (_moto, m) = start_moto();
    let mut env = aws_env(&m);
    let wrong =
        m.key.rsplit_once('/').unwrap().0.to_string() + "/00000000-0000-0000-0000-000000000000";
    env.set("AWS_CUSTOMER_KEY_ID", &wrong);
    let o = env.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    let line = error_line(&o);
    assert!(line.contains("NotFoundException"), "{line}");
    assert!(line.contains("AWS_CUSTOMER_KEY_ID"), "{line}");
    assert!(!env.keyring().exists());

    // moto still encrypts under a disabled key; the provider checks the key state first.
    let mut env = aws_env(&m);
    env.set("AWS_CUSTOMER_KEY_ID", &m.disabled_key)
        .set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let o = env.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    let line = error_line(&o);
    assert!(line.contains("Disabled"), "{line}");
    assert!(!env.keyring().exists());
    let ch = env.run(&["check"]);
    assert_eq!(ch.status.code(), Some(1), "{}", ch.all());
    assert!(
        ch.stdout.contains("FAILED") && ch.stdout.contains("Disabled"),
        "{}",
        ch.stdout
    );

    // A keyring made under one key does not unwrap under another (both ids named).
    let good = aws_env(&m);
    good.init();
    let mut other = aws_env(&m);
    other.vars = good.vars.clone();
    other.set("AWS_CUSTOMER_KEY_ID", &m.disabled_key);
    let v = other.run(&["keyring", "verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", v.all());
    assert!(
        v.stderr.contains(&m.key) && v.stderr.contains(&m.disabled_key),
        "{}",
        v.stderr
    );
}

#[test]
fn rewrap_moves_local_roots_to_kms_without_changing_data_keys() {
    let (_moto, m) = start_moto();
    let env = Env::new();
    env.init();
    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let before = keyring(&env);
    let s = env.serve();
    let k1_before = s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json();
    let k2_before = s.get("/v1/data-keys/r2.2026-01", Some(TOKEN)).json();
    s.stop();

    let o = env.run(&[
        "keyring",
        "rewrap",
        "--to",
        "KMS_PROVIDER=aws-kms",
        "--to",
        &format!("AWS_CUSTOMER_KEY_ID={}", m.key),
        "--to",
        &format!("AWS_ENDPOINT_URL={}", m.endpoint),
        "--to",
        &format!("AWS_ACCESS_KEY_ID={}", m.access_key_id),
        "--to",
        &format!("AWS_SECRET_ACCESS_KEY={}", m.secret_access_key),
    ]);
    assert!(o.status.success(), "{}", o.all());
    assert!(o.stdout.contains("re-wrapped [r1, r2, k1]"), "{}", o.stdout);
    let after = keyring(&env);
    // the relay key moves too, and its pin does not change
    let (b, a) = (&before.relay_keys[0], &after.relay_keys[0]);
    assert_eq!((a.kek.provider.as_str(), &a.config), ("aws-kms", &b.config));
    let seed = kms_decrypt_as(&m, &a.wrapped, WrapContext::RelayKey(1)).unwrap();
    let key = veil_core::relay::v2::ServerKey::from_seed(1, *seed.as_bytes()).unwrap();
    assert_eq!(key.config().to_b64(), b.config);
    for (b, a) in before.roots.iter().zip(&after.roots) {
        assert_eq!(a.kek.provider, "aws-kms");
        assert_eq!(a.check, b.check, "the root itself must not change");
        assert_eq!(a.created_at, b.created_at);
        let root = kms_decrypt(&m, &a.wrapped, a.version).unwrap();
        assert_eq!(hex::encode(root.check_value()), a.check);
    }

    let mut aws = aws_env(&m);
    aws.vars
        .insert("VEIL_KEYRING".into(), env.keyring().display().to_string());
    assert!(aws.run(&["keyring", "verify"]).status.success());
    assert_eq!(aws.run(&["relay-key", "show"]).stdout.trim(), b.config);
    let s = aws.serve();
    assert_eq!(
        s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json(),
        k1_before
    );
    assert_eq!(
        s.get("/v1/data-keys/r2.2026-01", Some(TOKEN)).json(),
        k2_before
    );
    s.stop();
    // The old local KEK no longer opens this keyring.
    let v = env.run(&["keyring", "verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", v.all());
}

#[test]
fn unreachable_kms_at_start_is_not_ready_then_recovers_and_later_outage_keeps_serving() {
    let (_moto, m) = start_moto();
    let moto_port: u16 = m.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let env = aws_env(&m);
    env.init();

    let mut fwd = Forwarder::new(moto_port);
    let mut e = aws_env(&m);
    e.vars = env.vars.clone();
    e.set(
        "AWS_ENDPOINT_URL",
        &format!("http://127.0.0.1:{}", fwd.port),
    );
    // KMS unreachable: serve starts, but is not ready and says why.
    let s = e.serve();
    assert_eq!(s.get("/readyz", None).status, 503);
    assert_eq!(s.get("/v1/data-keys/current", Some(TOKEN)).status, 503);
    let deadline = Instant::now() + LIMIT;
    while !s.logs().contains("unreachable") {
        assert!(Instant::now() < deadline, "{}", s.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The network heals: the retry with backoff makes it ready.
    fwd.start();
    let deadline = Instant::now() + LIMIT;
    while s.get("/readyz", None).status != 200 {
        assert!(
            Instant::now() < deadline,
            "never became ready: {}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
    // The KMS goes away again: the roots held keep serving.
    fwd.stop();
    drop(_moto);
    assert_eq!(s.get("/readyz", None).status, 200);
    assert_eq!(s.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
    assert_eq!(s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).status, 200);
    let logs = s.stop().all();
    assert!(
        logs.contains("retry_in_secs") || logs.contains("ready"),
        "{logs}"
    );
}
