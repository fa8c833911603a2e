//! The `aws-cloudhsm` provider through PKCS#11 against a real SoftHSM2 token (Debian
//! `softhsm2`), created fresh per test in a temp dir. The KEK is generated on the token,
//! sensitive and not extractable; the test decrypts a wrapped root on the token itself.

mod common;

use std::path::PathBuf;

use base64::Engine;
use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::{AuthPin, Ulong};
use veil_keyservice::keyring::Keyring;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "veil-user-pin-1234";

/// SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`, once per process: the test's own PKCS#11
/// sections run one at a time.
static HSM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A SoftHSM2 token "veil" with an AES-256 KEK labelled `label` (and, if `extractable`, one
/// that would leak). Returns the env for the keyservice.
fn hsm_env(keys: &[(&str, bool)]) -> Env {
    assert!(
        std::path::Path::new(MODULE).exists(),
        "{MODULE} is missing: run scripts/setup.sh (installs softhsm2)"
    );
    let mut env = Env::new();
    let dir = env.dir.path().to_path_buf();
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "veil",
            "--so-pin",
            "so-pin-5678",
            "--pin",
            PIN,
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The key is made on the token, as an operator would with the HSM's tools.
    let _g = HSM.lock().unwrap_or_else(|p| p.into_inner());
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let p = Pkcs11::new(MODULE).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
        .unwrap();
    for (label, extractable) in keys {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(!extractable),
                Attribute::Extractable(*extractable),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    }
    drop(s);
    p.finalize().unwrap();
    let pin = dir.join("pin");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    env.set("KMS_PROVIDER", "aws-cloudhsm")
        .set("SOFTHSM2_CONF", &conf.display().to_string())
        .set("VEIL_PKCS11_MODULE", MODULE)
        .set("VEIL_PKCS11_TOKEN_LABEL", "veil")
        .set("VEIL_PKCS11_PIN_FILE", &pin.display().to_string())
        .set("VEIL_PKCS11_KEY_LABEL", "veil-kek");
    env
}

/// Decrypts a wrapped root on the token with the test's own PKCS#11 calls.
fn token_decrypt(env: &Env, wrapped_b64: &str, version: u32) -> Option<Vec<u8>> {
    token_decrypt_aad(env, wrapped_b64, &format!("veil/v1/root/r{version}"))
}

/// Decrypts wrapped bytes on the token under the associated data `aad`.
fn token_decrypt_aad(env: &Env, wrapped_b64: &str, aad: &str) -> Option<Vec<u8>> {
    let _g = HSM.lock().unwrap_or_else(|p| p.into_inner());
    std::env::set_var("SOFTHSM2_CONF", &env.vars["SOFTHSM2_CONF"]);
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(wrapped_b64)
        .unwrap();
    let p = Pkcs11::new(MODULE).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_ro_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
        .unwrap();
    let key = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"veil-kek".to_vec()),
        ])
        .unwrap()[0];
    let (iv, ct) = wrapped.split_at(12);
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, aad.as_bytes(), Ulong::from(128u64)).unwrap();
    let r = s.decrypt(&Mechanism::AesGcm(params), key, ct).ok();
    drop(s);
    p.finalize().unwrap();
    r
}

#[test]
fn softhsm_init_verify_rotate_serve() {
    let env = hsm_env(&[("veil-kek", false)]);
    let o = env.init();
    assert!(o.stdout.contains("provider aws-cloudhsm"), "{}", o.all());
    let k = Keyring::load(&env.keyring()).unwrap();
    let r1 = &k.roots[0];
    assert_eq!(r1.kek.provider, "aws-cloudhsm");
    assert_eq!(r1.kek.key_id, "pkcs11:token=veil;object=veil-kek");
    // The wrapped root decrypts on the token, under its own version only.
    let root = token_decrypt(&env, &r1.wrapped, 1).expect("token decrypt");
    let root = veil_core::crypto::keys::RootKey::from_slice(&root).unwrap();
    assert_eq!(hex::encode(root.check_value()), r1.check);
    assert!(token_decrypt(&env, &r1.wrapped, 2).is_none());
    // The relay server key's seed is wrapped on the token too, under its own context only.
    let rk = &k.relay_keys[0];
    assert_eq!(rk.kek.key_id, "pkcs11:token=veil;object=veil-kek");
    let seed = token_decrypt_aad(&env, &rk.wrapped, "veil/v1/relay-key/k1").expect("decrypt");
    let seed: [u8; 32] = seed.try_into().unwrap();
    let server_key = veil_core::relay::v2::ServerKey::from_seed(1, seed).unwrap();
    assert_eq!(server_key.config().to_b64(), rk.config);
    assert!(token_decrypt(&env, &rk.wrapped, 1).is_none());
    let shown = env.run(&["relay-key", "show"]);
    assert_eq!(shown.stdout.trim(), rk.config, "{}", shown.all());
    assert!(env.run(&["keyring", "rotate-relay-key"]).status.success());

    assert!(env.run(&["keyring", "rotate-root"]).status.success());
    let v = env.run(&["keyring", "verify"]);
    assert!(v.status.success(), "{}", v.all());
    assert!(
        v.stdout
            .contains("all 2 root(s) verified and 2 relay key(s)"),
        "{}",
        v.stdout
    );

    let mut c = Env::new();
    c.vars = env.vars.clone();
    c.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    let ch = c.run(&["check"]);
    assert!(ch.status.success(), "{}", ch.all());
    assert!(ch.stdout.contains("not extractable"), "{}", ch.stdout);

    let s = env.serve();
    let body = s.get("/v1/data-keys/current", Some(TOKEN)).json();
    assert_eq!(body["current_root"], 2);
    assert_eq!(s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).status, 200);
    let logs = s.stop().all();
    assert!(logs.contains("C_Decrypt(CKM_AES_GCM)"), "{logs}");
    assert!(!logs.contains(PIN));
}

#[test]
fn softhsm_wrong_pin_missing_key_and_extractable_key_are_refused() {
    let mut env = hsm_env(&[("veil-kek", false), ("leaky", true)]);
    let pin = PathBuf::from(&env.vars["VEIL_PKCS11_PIN_FILE"]);
    std::fs::write(&pin, "wrong-pin\n").unwrap();
    let o = env.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(o.stderr.contains("PIN incorrect"), "{}", o.stderr);
    assert!(!o.stderr.contains("wrong-pin"), "{}", o.stderr);
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();

    env.set("VEIL_PKCS11_KEY_LABEL", "nope");
    let o = env.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(
        o.stderr.contains("no AES key labelled \"nope\""),
        "{}",
        o.stderr
    );

    env.set("VEIL_PKCS11_KEY_LABEL", "leaky");
    let o = env.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(o.stderr.contains("CKA_EXTRACTABLE is true"), "{}", o.stderr);
    assert!(!env.keyring().exists());

    env.set("VEIL_PKCS11_KEY_LABEL", "veil-kek")
        .set("VEIL_PKCS11_TOKEN_LABEL", "other");
    let o = env.run(&["keyring", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(o.stderr.contains("no token \"other\""), "{}", o.stderr);
}

#[test]
fn rewrap_local_to_softhsm_keeps_data_keys() {
    let env = hsm_env(&[("veil-kek", false)]);
    let mut local = Env::new();
    local
        .vars
        .insert("VEIL_KEYRING".into(), env.keyring().display().to_string());
    local.init();
    let s = local.serve();
    let before = s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json();
    s.stop();
    let to: Vec<String> = [
        "KMS_PROVIDER",
        "VEIL_PKCS11_MODULE",
        "VEIL_PKCS11_TOKEN_LABEL",
        "VEIL_PKCS11_PIN_FILE",
        "VEIL_PKCS11_KEY_LABEL",
    ]
    .iter()
    .map(|k| format!("{k}={}", env.vars[*k]))
    .collect();
    let mut args = vec!["keyring", "rewrap"];
    for t in &to {
        args.extend(["--to", t.as_str()]);
    }
    local.set("SOFTHSM2_CONF", &env.vars["SOFTHSM2_CONF"]);
    let pin = local.run(&["relay-key", "show"]).stdout;
    let o = local.run(&args);
    assert!(o.status.success(), "{}", o.all());
    assert!(o.stdout.contains("re-wrapped [r1, k1]"), "{}", o.stdout);
    assert_eq!(
        env.run(&["relay-key", "show"]).stdout,
        pin,
        "the pin is unchanged"
    );
    let s = env.serve();
    assert_eq!(
        s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json(),
        before
    );
    s.stop();
}

#[test]
fn rewrap_between_two_keys_of_one_token() {
    let env = hsm_env(&[("veil-kek", false), ("veil-kek-2", false)]);
    env.init();
    let s = env.serve();
    let before = s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json();
    s.stop();
    let o = env.run(&[
        "keyring",
        "rewrap",
        "--to",
        "VEIL_PKCS11_KEY_LABEL=veil-kek-2",
    ]);
    assert!(o.status.success(), "{}", o.all());
    let k = Keyring::load(&env.keyring()).unwrap();
    assert_eq!(k.roots[0].kek.key_id, "pkcs11:token=veil;object=veil-kek-2");
    // The old key no longer opens it; the new one serves the same data keys.
    assert_eq!(env.run(&["keyring", "verify"]).status.code(), Some(1));
    let mut moved = Env::new();
    moved.vars = env.vars.clone();
    moved.set("VEIL_PKCS11_KEY_LABEL", "veil-kek-2");
    let s = moved.serve();
    assert_eq!(
        s.get("/v1/data-keys/r1.2026-01", Some(TOKEN)).json(),
        before
    );
    s.stop();
}
