//! The relay API of the real `veil-keyservice` binary: pairing checked against the client's
//! own KEM and key derivation, the memory store, and a real `redis-server` shared by two
//! keyservice processes, restarted under them, and down at start. Loopback only, bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use veil_core::relay::v2::{ClientOffer, PairAnswer};
use veil_core::relay::ClientIdSecret;

const CID_SECRET: &[u8] = b"relay-test-client-id-secret-0123456789";

fn client_id(n: u8) -> String {
    ClientIdSecret::new(CID_SECRET).unwrap().issue([n; 16])
}

/// One HTTP/1.1 request over loopback with the bearer token (or none), `Connection: close`.
fn call(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    http_request(port, method, path, auth.as_deref(), body.map(str::as_bytes))
}

fn post(port: u16, path: &str, body: &str) -> Response {
    call(port, "POST", path, Some(TOKEN), Some(body))
}

fn get(port: u16, path: &str) -> Response {
    call(port, "GET", path, Some(TOKEN), None)
}

fn b64d(s: &serde_json::Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap()
}

/// The relay's current key configuration, as the keyservice publishes it.
fn pin_of(port: u16) -> veil_core::relay::v2::KeyConfig {
    let (status, _, body) = get_bytes(port, "/v1/relay/keys");
    assert_eq!(status, 200);
    veil_core::relay::v2::KeyConfig::decode_list(&body)
        .unwrap()
        .remove(0)
}

/// A pairing request body of `n` fresh entries under the keyservice's current key, and the
/// offers that made it.
fn pairing_body(port: u16, cid: &str, n: usize) -> (String, Vec<ClientOffer>) {
    let pin = pin_of(port);
    let offers: Vec<ClientOffer> = (0..n)
        .map(|_| ClientOffer::generate_os(&pin).unwrap())
        .collect();
    let entries: Vec<serde_json::Value> = offers
        .iter()
        .map(|o| {
            let w = o.wire();
            serde_json::json!({"enc": URL_SAFE_NO_PAD.encode(&w.enc), "pk": URL_SAFE_NO_PAD.encode(&w.pk)})
        })
        .collect();
    let body =
        serde_json::json!({"client_id": cid, "key_id": pin.key_id(), "pairs": entries}).to_string();
    (body, offers)
}

/// Asks for `n` pairs (protocol v2) and checks each answer against the client side: the key
/// confirmation verifies under the pinned key, and the keys the client derives are the ones
/// returned to the filter.
fn pair(port: u16, cid: &str, n: usize) -> Vec<serde_json::Value> {
    let (body, offers) = pairing_body(port, cid, n);
    let r = post(port, "/v1/relay/v2/pairs", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").map(String::as_str),
        Some("no-store")
    );
    let pairs = r.json()["pairs"].as_array().unwrap().clone();
    assert_eq!(pairs.len(), n);
    for (p, offer) in pairs.iter().zip(offers) {
        let pair_id = p["pair_id"].as_str().unwrap();
        assert_eq!(pair_id.len(), 22);
        assert_eq!(URL_SAFE_NO_PAD.decode(pair_id).unwrap().len(), 16);
        let enc = b64d(&p["enc"]);
        assert_eq!(enc.len(), 1120);
        let confirm = b64d(&p["confirm"]);
        let k = offer
            .finish(
                cid,
                &PairAnswer {
                    pair_id,
                    enc: &enc,
                    expires_at: p["expires_at"].as_u64().unwrap(),
                    confirm: &confirm,
                },
            )
            .unwrap();
        assert_eq!(b64d(&p["c2s"]), k.c2s);
        assert_eq!(b64d(&p["s2c"]), k.s2c);
    }
    pairs
}

fn assert_refused(r: &Response, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    assert_eq!(r.json()["code"], format!("relay-{error}"), "{}", r.body);
    assert_eq!(
        r.json()["type"],
        format!("urn:veil:problem:relay-{error}"),
        "{}",
        r.body
    );
}

fn seq(port: u16, pair_id: &str, n: u64) -> Response {
    post(
        port,
        &format!("/v1/relay/pairs/{pair_id}/seq"),
        &format!("{{\"seq\":{n}}}"),
    )
}

/// A keyservice set up and serving with extra variables.
fn serve_with(vars: &[(&str, &str)]) -> (Env, Server) {
    let mut env = Env::new();
    env.init();
    for (k, v) in vars {
        env.set(k, v);
    }
    let s = env.serve();
    (env, s)
}

#[test]
fn pairing_lookup_and_replay_in_memory() {
    // Logged at the most verbose level, checked for secrets at the end.
    let (_env, s) = serve_with(&[("VEIL_LOG", "trace")]);
    let cid = client_id(1);

    // The bearer token is required on every relay route.
    for (m, p) in [
        ("GET", "/v1/relay/pairs/AAAAAAAAAAAAAAAAAAAAAA"),
        ("POST", "/v1/relay/pairs/AAAAAAAAAAAAAAAAAAAAAA/seq"),
        ("POST", "/v1/relay/v2/pairs"),
        ("GET", "/v1/relay/keys"),
    ] {
        for token in [None, Some("wrong-token-wrong-token-wrong-token")] {
            let r = call(s.port, m, p, token, Some("{}"));
            assert_eq!(r.status, 401, "{m} {p}: {}", r.body);
        }
    }

    // Version 1's pairing endpoint is gone (no deployed clients; issue #17).
    let (v2_body, _) = pairing_body(s.port, &cid, 1);
    assert_eq!(post(s.port, "/v1/relay/pairs", &v2_body).status, 404);

    let before = veil_keyservice::keyring::now_unix();
    let pairs = pair(s.port, &cid, 3);
    let after = veil_keyservice::keyring::now_unix();
    let ids: Vec<&str> = pairs
        .iter()
        .map(|p| p["pair_id"].as_str().unwrap())
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    for p in &pairs {
        let exp = p["expires_at"].as_i64().unwrap();
        assert!((before + 86_400..=after + 86_400).contains(&exp), "{exp}");
        assert_eq!(p["idle_ttl_secs"], 1800);
    }

    // The filter's lookup: the same keys and the client id the pair is bound to.
    let r = get(s.port, &format!("/v1/relay/pairs/{}", ids[1]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").map(String::as_str),
        Some("no-store")
    );
    let j = r.json();
    assert_eq!(j["pair_id"], ids[1]);
    assert_eq!(j["client_id"], cid);
    assert_eq!(j["c2s"], pairs[1]["c2s"]);
    assert_eq!(j["s2c"], pairs[1]["s2c"]);
    assert_eq!(j["expires_at"], pairs[1]["expires_at"]);
    assert_ne!(j["c2s"], pairs[0]["c2s"]);

    // The global replay window.
    assert_eq!(seq(s.port, ids[0], 1).json()["accepted"], true);
    assert_eq!(seq(s.port, ids[0], 3).json()["accepted"], true);
    assert_eq!(seq(s.port, ids[0], 2).json()["accepted"], true);
    assert_refused(&seq(s.port, ids[0], 2), 409, "replay");
    assert_refused(&seq(s.port, ids[0], 1), 409, "replay");
    assert_eq!(seq(s.port, ids[0], 200).status, 200);
    assert_refused(&seq(s.port, ids[0], 72), 409, "replay");
    // Windows are per pair.
    assert_eq!(seq(s.port, ids[1], 1).status, 200);

    // Unknown pairs, bad input.
    assert_refused(
        &get(s.port, "/v1/relay/pairs/AAAAAAAAAAAAAAAAAAAAAA"),
        404,
        "unknown",
    );
    assert_refused(&seq(s.port, "AAAAAAAAAAAAAAAAAAAAAA", 1), 404, "unknown");
    assert_refused(&get(s.port, "/v1/relay/pairs/short"), 400, "bad-pair-id");
    for bad in ["0", "-1", "9007199254740992", "\"1\"", "1.5"] {
        let r = post(
            s.port,
            &format!("/v1/relay/pairs/{}/seq", ids[2]),
            &format!("{{\"seq\":{bad}}}"),
        );
        assert_refused(&r, 400, "bad-seq");
    }
    let (one, _) = pairing_body(s.port, &cid, 1);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    let entry = one["pairs"][0].clone();
    let key_id = one["key_id"].clone();
    let body = |cid: &str, entries: Vec<serde_json::Value>| {
        serde_json::json!({"client_id": cid, "key_id": key_id, "pairs": entries}).to_string()
    };
    let with = |field: &str, v: String| {
        let mut e = entry.clone();
        e[field] = serde_json::json!(v);
        e
    };
    let enc = entry["enc"].as_str().unwrap().to_string();
    let cases = [
        (body(&cid, vec![]), "too-many-keys"),
        (body(&cid, vec![entry.clone(); 17]), "too-many-keys"),
        (
            body(&cid, vec![with("enc", enc[..100].to_string())]),
            "bad-key",
        ),
        (body(&cid, vec![with("pk", format!("{enc}="))]), "bad-key"),
        (
            body(&cid, vec![entry.clone(), with("enc", "!!".into())]),
            "bad-key",
        ),
        (
            body("not-a-client-id", vec![entry.clone()]),
            "bad-client-id",
        ),
        (
            body(&cid.to_uppercase(), vec![entry.clone()]),
            "bad-client-id",
        ),
        ("{\"pairs\":[]}".into(), "bad-json"),
        ("not json".into(), "bad-json"),
    ];
    for (b, want) in &cases {
        assert_refused(&post(s.port, "/v1/relay/v2/pairs", b), 400, want);
    }
    // A JSON error does not quote the input (here: a client id where the entries belong).
    let echo = serde_json::json!({"client_id": cid, "key_id": key_id, "pairs": cid}).to_string();
    let r = post(s.port, "/v1/relay/v2/pairs", &echo);
    assert_refused(&r, 400, "bad-json");
    assert!(!r.body.contains(&cid[..36]), "{}", r.body);
    let huge = "x".repeat(200 * 1024);
    assert_refused(&post(s.port, "/v1/relay/v2/pairs", &huge), 413, "too-large");

    // Metrics.
    assert_eq!(
        metric(&s, "veil_keyservice_relay_pairings_total{result=\"ok\"}"),
        1
    );
    assert_eq!(
        metric(
            &s,
            "veil_keyservice_relay_pairings_total{result=\"refused\"}"
        ),
        cases.len() as u64 + 2
    );
    assert_eq!(metric(&s, "veil_keyservice_relay_pairs_created_total"), 3);
    assert_eq!(metric(&s, "veil_keyservice_relay_sessions"), 3);
    assert_eq!(metric(&s, "veil_keyservice_relay_evictions_total"), 0);
    assert_eq!(
        metric(&s, "veil_keyservice_relay_lookups_total{result=\"found\"}"),
        1
    );
    assert_eq!(
        metric(
            &s,
            "veil_keyservice_relay_lookups_total{result=\"unknown\"}"
        ),
        1
    );
    assert_eq!(
        metric(&s, "veil_keyservice_relay_seq_total{result=\"accepted\"}"),
        5
    );
    assert_eq!(
        metric(&s, "veil_keyservice_relay_seq_total{result=\"replay\"}"),
        3
    );
    assert_eq!(
        metric(&s, "veil_keyservice_relay_seq_total{result=\"unknown\"}"),
        1
    );
    assert_eq!(
        metric(&s, "veil_keyservice_relay_store_info{store=\"memory\"}"),
        1
    );
    assert_eq!(metric(&s, "veil_keyservice_relay_store_errors_total"), 0);

    // Nothing secret in the logs: no key, no client id (not even its HMAC part).
    let logs = s.stop().all();
    assert!(logs.contains("relay pairs made"), "{logs}");
    let hmac_part = cid.split_once('.').unwrap().1;
    assert!(!logs.contains(hmac_part), "{logs}");
    assert!(!logs.contains(&cid[..36]), "{logs}");
    for p in &pairs {
        for k in ["c2s", "s2c"] {
            assert!(!logs.contains(p[k].as_str().unwrap()), "{k} in logs");
        }
    }
}

#[test]
fn memory_store_bounded_with_evictions_counted() {
    let (_env, s) = serve_with(&[
        ("RELAY_MAX_SESSIONS", "4"),
        ("RELAY_MAX_KEYS_PER_PAIRING", "3"),
    ]);
    let cid = client_id(2);
    let first = pair(s.port, &cid, 3);
    let second = pair(s.port, &cid, 3);
    assert_eq!(metric(&s, "veil_keyservice_relay_evictions_total"), 2);
    assert_eq!(metric(&s, "veil_keyservice_relay_sessions"), 4);
    // The two oldest of the first call went; the newest of it and the second call stay.
    for (p, found) in first
        .iter()
        .zip([false, false, true])
        .chain(second.iter().zip([true; 3]))
    {
        let r = get(
            s.port,
            &format!("/v1/relay/pairs/{}", p["pair_id"].as_str().unwrap()),
        );
        assert_eq!(r.status == 200, found, "{}", r.body);
    }
    // The per-call limit.
    let (body, _) = pairing_body(s.port, &cid, 4);
    assert_refused(
        &post(s.port, "/v1/relay/v2/pairs", &body),
        400,
        "too-many-keys",
    );
}

#[test]
fn relay_settings_are_validated_at_start() {
    let mut env = Env::new();
    env.init();
    env.set("VEIL_KEYSERVICE_TOKEN", TOKEN);
    for (k, v, shown) in [
        ("RELAY_REPLAY_WINDOW", "0", "RELAY_REPLAY_WINDOW"),
        ("RELAY_IDLE_TTL_SECS", "soon", "RELAY_IDLE_TTL_SECS"),
        (
            "REDIS_URL",
            "http://user:hunter2-secret@127.0.0.1:1",
            "REDIS_URL",
        ),
    ] {
        env.set(k, v);
        let o = env.run(&["serve"]);
        assert_eq!(o.status.code(), Some(1), "{}", o.all());
        assert!(
            o.stderr.contains(&format!("error: {shown}")),
            "{}",
            o.stderr
        );
        assert!(!o.all().contains("hunter2"), "{}", o.all());
        env.unset(k);
    }
}

// ---- Redis ----

/// A real `redis-server` on a free loopback port, no persistence; killed on drop.
struct Redis {
    port: u16,
    password: Option<&'static str>,
    child: Option<Child>,
}

impl Redis {
    fn on(port: u16) -> Redis {
        let mut r = Redis {
            port,
            password: None,
            child: None,
        };
        r.start();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(
                self.password
                    .map(|p| ["--requirepass", p])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/setup.sh");
        self.child = Some(child);
        let deadline = Instant::now() + LIMIT;
        // PING answers NOAUTH with a password set: any answer means it is up.
        let want: &[u8] = if self.password.is_some() {
            b"-NOAUTH"
        } else {
            b"+PONG\r\n"
        };
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 7];
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf[..] == want
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every field of every Redis hash whose key starts with `prefix`, as the raw RESP bytes of
/// `HGETALL` (what anyone reading Redis sees).
fn redis_dump(port: u16, prefix: &str) -> Vec<u8> {
    let exchange = |cmds: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{cmds}QUIT\r\n").as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        raw
    };
    let keys = String::from_utf8_lossy(&exchange(&format!("KEYS {prefix}*\r\n"))).into_owned();
    let keys: Vec<&str> = keys
        .split("\r\n")
        .filter(|l| l.starts_with(prefix))
        .collect();
    assert!(!keys.is_empty(), "no pair in Redis");
    let cmds: String = keys.iter().map(|k| format!("HGETALL {k}\r\n")).collect();
    exchange(&cmds)
}

/// Retries `f` (bounded) while the keyservice answers 503, i.e. until its Redis connection
/// is back; returns the first other answer.
#[test]
fn redis_shared_by_two_keyservices_survives_a_redis_restart() {
    let mut redis = Redis::on(free_port());
    let url = redis.url();
    let vars = [("REDIS_URL", url.as_str()), ("RELAY_REDIS_PREFIX", "it:")];
    let (ea, a) = serve_with(&[vars[0], vars[1], ("VEIL_LOG", "trace")]);
    // B shares A's keyring (keyservices sharing pairs share a keyring: the pair keys in
    // Redis are sealed under a key derived from it)
    let mut eb = Env::new();
    eb.set("VEIL_KEYRING", &ea.keyring().display().to_string())
        .set("VEIL_LOCAL_KEK_FILE", &ea.kek().display().to_string());
    for (k, v) in vars {
        eb.set(k, v);
    }
    let b = eb.serve();
    let cid = client_id(3);

    // Made through A, seen through B with the same keys and client id.
    let pairs = pair(a.port, &cid, 2);
    let id = pairs[0]["pair_id"].as_str().unwrap().to_string();

    // Redis holds no traffic key: every field of every pair, read raw, holds neither key.
    let dump = redis_dump(redis.port, "it:pair:");
    assert!(
        dump.windows(cid.len()).any(|w| w == cid.as_bytes()),
        "the dump is the pairs'"
    );
    for p in &pairs {
        for k in ["c2s", "s2c"] {
            let key = b64d(&p[k]);
            assert!(
                !dump.windows(32).any(|w| w == key.as_slice()),
                "{k} in Redis"
            );
        }
    }
    let r = get(b.port, &format!("/v1/relay/pairs/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["c2s"], pairs[0]["c2s"]);
    assert_eq!(r.json()["s2c"], pairs[0]["s2c"]);
    assert_eq!(r.json()["client_id"], cid);

    // One replay window for both.
    assert_eq!(seq(a.port, &id, 1).status, 200);
    assert_refused(&seq(b.port, &id, 1), 409, "replay");
    assert_eq!(seq(b.port, &id, 2).status, 200);
    assert_refused(&seq(a.port, &id, 2), 409, "replay");
    assert_eq!(metric(&a, "veil_keyservice_relay_sessions"), 2);
    assert_eq!(
        metric(&b, "veil_keyservice_relay_store_info{store=\"redis\"}"),
        1
    );

    // Redis down: 503, bounded, and counted; data keys still served.
    redis.stop();
    let t = Instant::now();
    assert_refused(
        &get(a.port, &format!("/v1/relay/pairs/{id}")),
        503,
        "store-unavailable",
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(metric(&a, "veil_keyservice_relay_store_errors_total") >= 1);
    assert_eq!(a.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
    assert_eq!(a.get("/readyz", None).status, 200);

    // Redis back, empty: the very first call of each process is answered (no 503: a
    // store op retries once on a new connection), the old pair is gone (the client
    // re-pairs), and a new pairing works across both.
    let errors_before = metric(&a, "veil_keyservice_relay_store_errors_total");
    redis.start();
    assert_refused(
        &get(a.port, &format!("/v1/relay/pairs/{id}")),
        404,
        "unknown",
    );
    assert_refused(&seq(b.port, &id, 3), 404, "unknown");
    let again = pair(b.port, &cid, 1);
    let id2 = again[0]["pair_id"].as_str().unwrap().to_string();
    let r = get(a.port, &format!("/v1/relay/pairs/{id2}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["c2s"], again[0]["c2s"]);

    // Restarted under live connections (no call while it was down): each process's first
    // call after it finds a broken connection and must still answer, every kind of call.
    redis.stop();
    redis.start();
    assert_refused(
        &get(a.port, &format!("/v1/relay/pairs/{id2}")),
        404,
        "unknown",
    );
    assert_refused(&seq(b.port, &id2, 1), 404, "unknown");
    let third = pair(a.port, &cid, 1);
    let id3 = third[0]["pair_id"].as_str().unwrap().to_string();
    redis.stop();
    redis.start();
    let r = pair(b.port, &cid, 1);
    assert_eq!(r.len(), 1);
    assert_eq!(
        seq(a.port, r[0]["pair_id"].as_str().unwrap(), 1).status,
        200
    );
    assert_refused(
        &get(a.port, &format!("/v1/relay/pairs/{id3}")),
        404,
        "unknown",
    );
    assert_eq!(
        metric(&a, "veil_keyservice_relay_store_errors_total"),
        errors_before,
        "a store error after Redis came back"
    );

    let logs = format!("{}{}", a.stop().all(), b.stop().all());
    assert!(logs.contains("relay pairs made"), "{logs}");
    assert!(
        logs.contains(&format!("127.0.0.1:{}", redis.port)),
        "{logs}"
    );
    assert!(!logs.contains("redis://"), "{logs}");
    assert!(!logs.contains(cid.split_once('.').unwrap().1), "{logs}");
    for p in pairs.iter().chain(&again) {
        assert!(!logs.contains(p["c2s"].as_str().unwrap()));
        assert!(!logs.contains(p["s2c"].as_str().unwrap()));
    }
}

#[test]
fn redis_down_at_start_then_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let (_env, s) = serve_with(&[("REDIS_URL", url.as_str())]);
    assert!(
        s.logs().contains("redis does not answer yet"),
        "{}",
        s.logs()
    );
    assert_eq!(s.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
    let cid = client_id(4);
    let (body, _) = pairing_body(s.port, &cid, 1);
    assert_refused(
        &post(s.port, "/v1/relay/v2/pairs", &body),
        503,
        "store-unavailable",
    );
    assert_eq!(
        metric(
            &s,
            "veil_keyservice_relay_pairings_total{result=\"refused\"}"
        ),
        1
    );

    let _redis = Redis::on(port);
    let (body, _) = pairing_body(s.port, &cid, 1);
    // The first call after Redis is up is answered (the failed connection is replaced and
    // the op retried once), not 503.
    let r = post(s.port, "/v1/relay/v2/pairs", &body);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn redis_idle_ttl_drops_unused_pairs() {
    let redis = Redis::on(free_port());
    let url = redis.url();
    let (_env, s) = serve_with(&[("REDIS_URL", url.as_str()), ("RELAY_IDLE_TTL_SECS", "2")]);
    let pairs = pair(s.port, &client_id(5), 2);
    let (kept, idle) = (
        pairs[0]["pair_id"].as_str().unwrap(),
        pairs[1]["pair_id"].as_str().unwrap(),
    );
    assert_eq!(pairs[0]["idle_ttl_secs"], 2);
    // Keep one busy for 3.5 s (each use restarts its TTL); leave the other idle.
    let deadline = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < deadline {
        assert_eq!(get(s.port, &format!("/v1/relay/pairs/{kept}")).status, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_refused(
        &get(s.port, &format!("/v1/relay/pairs/{idle}")),
        404,
        "unknown",
    );
    assert_eq!(get(s.port, &format!("/v1/relay/pairs/{kept}")).status, 200);
}

#[test]
fn redis_with_a_password_never_shows_it() {
    let mut redis = Redis {
        port: free_port(),
        password: Some("pw-9f3a7c1e-never-logged"),
        child: None,
    };
    redis.start();
    let good = format!(
        "redis://:pw-9f3a7c1e-never-logged@127.0.0.1:{}/",
        redis.port
    );
    let (_env, s) = serve_with(&[("REDIS_URL", good.as_str()), ("VEIL_LOG", "trace")]);
    pair(s.port, &client_id(6), 1);
    // A wrong password: the service runs, the relay answers 503, the reason is logged.
    let bad = format!("redis://:pw-wrong-also-secret@127.0.0.1:{}/", redis.port);
    let (_env2, s2) = serve_with(&[("REDIS_URL", bad.as_str()), ("VEIL_LOG", "trace")]);
    let (body, _) = pairing_body(s2.port, &client_id(6), 1);
    assert_refused(
        &post(s2.port, "/v1/relay/v2/pairs", &body),
        503,
        "store-unavailable",
    );
    let logs = format!("{}{}", s.stop().all(), s2.stop().all());
    assert!(logs.contains("session store failed"), "{logs}");
    assert!(!logs.contains("pw-9f3a7c1e"), "{logs}");
    assert!(!logs.contains("pw-wrong"), "{logs}");
}

/// A GET whose answer body is binary (`application/ohttp-keys`): status, content type, body.
fn get_bytes(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ct, raw[end + 4..].to_vec())
}

/// Protocol v2 (docs/relay-protocol.md): `relay-key show` prints the pin, the keyservice
/// publishes it as `application/ohttp-keys`, pairs under it with a key confirmation the
/// client checks, stores the pairs like v1's, and refuses a key id it does not hold.
#[test]
fn v2_pairing_under_the_relay_server_key() {
    use veil_core::relay::v2::{ClientOffer, KeyConfig, PairAnswer};

    let (env, s) = serve_with(&[("VEIL_LOG", "trace")]);
    let shown = env.run(&["relay-key", "show"]);
    assert!(shown.status.success(), "{}", shown.all());
    assert_eq!(shown.stdout.lines().count(), 1, "{}", shown.stdout);
    let pin = KeyConfig::from_b64(shown.stdout.trim()).unwrap();
    assert_eq!(pin.key_id(), 1, "the key id of root r1");

    let (status, ct, body) = get_bytes(s.port, "/v1/relay/keys");
    assert_eq!((status, ct.as_str()), (200, "application/ohttp-keys"));
    assert_eq!(KeyConfig::decode_list(&body).unwrap(), vec![pin.clone()]);

    let cid = client_id(7);
    let offers: Vec<ClientOffer> = (0..2)
        .map(|_| ClientOffer::generate_os(&pin).unwrap())
        .collect();
    let entries: Vec<serde_json::Value> = offers
        .iter()
        .map(|o| {
            let w = o.wire();
            serde_json::json!({"enc": URL_SAFE_NO_PAD.encode(&w.enc), "pk": URL_SAFE_NO_PAD.encode(&w.pk)})
        })
        .collect();
    let body = serde_json::json!({"client_id": cid, "key_id": 1, "pairs": entries}).to_string();
    let r = post(s.port, "/v1/relay/v2/pairs", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").map(String::as_str),
        Some("no-store")
    );
    let pairs = r.json()["pairs"].as_array().unwrap().clone();
    assert_eq!(pairs.len(), 2);
    for (p, offer) in pairs.iter().zip(offers) {
        let pair_id = p["pair_id"].as_str().unwrap();
        let enc = b64d(&p["enc"]);
        let confirm = b64d(&p["confirm"]);
        let keys = offer
            .finish(
                &cid,
                &PairAnswer {
                    pair_id,
                    enc: &enc,
                    expires_at: p["expires_at"].as_u64().unwrap(),
                    confirm: &confirm,
                },
            )
            .expect("the keyservice's confirmation verifies under the pinned key");
        assert_eq!(b64d(&p["c2s"]), keys.c2s);
        assert_eq!(b64d(&p["s2c"]), keys.s2c);
        // stored like a v1 pair: the filter looks it up the same way
        let l = get(s.port, &format!("/v1/relay/pairs/{pair_id}"));
        assert_eq!(l.status, 200, "{}", l.body);
        assert_eq!(b64d(&l.json()["c2s"]), keys.c2s);
        assert_eq!(l.json()["client_id"], cid);
    }

    // a pin of another key id: relay-key-unknown; a malformed entry: bad-key
    let unknown = body.replace("\"key_id\":1", "\"key_id\":9");
    assert_refused(
        &post(s.port, "/v1/relay/v2/pairs", &unknown),
        400,
        "key-unknown",
    );
    let short = serde_json::json!({"client_id": cid, "key_id": 1, "pairs": [{"enc": "AAAA", "pk": "AAAA"}]});
    assert_refused(
        &post(s.port, "/v1/relay/v2/pairs", &short.to_string()),
        400,
        "bad-key",
    );
    // no secret in the logs, at the most verbose level
    let logs = s.logs();
    assert!(!logs.contains(&cid));
    for p in &pairs {
        for k in ["c2s", "s2c", "confirm"] {
            assert!(!logs.contains(p[k].as_str().unwrap()), "{k} logged");
        }
    }

    // rotate-root does not touch the relay server key: the pin stays
    drop(s);
    let rotated = env.run(&["keyring", "rotate-root"]);
    assert!(rotated.status.success(), "{}", rotated.all());
    let again = env.run(&["relay-key", "show"]);
    assert!(again.status.success(), "{}", again.all());
    assert_eq!(KeyConfig::from_b64(again.stdout.trim()).unwrap(), pin);
    let s = env.serve();
    let (_, _, body) = get_bytes(s.port, "/v1/relay/keys");
    assert_eq!(KeyConfig::decode_list(&body).unwrap(), vec![pin]);
}

/// Asks for one v2 pair under `pin` and returns the answer (the caller checks its status);
/// a 200 is checked against the client side (the key confirmation verifies).
fn pair_v2(port: u16, pin: &veil_core::relay::v2::KeyConfig) -> Response {
    use veil_core::relay::v2::{ClientOffer, PairAnswer};
    let cid = client_id(9);
    let offer = ClientOffer::generate_os(pin).unwrap();
    let w = offer.wire();
    let body = serde_json::json!({"client_id": cid, "key_id": pin.key_id(), "pairs": [
        {"enc": URL_SAFE_NO_PAD.encode(&w.enc), "pk": URL_SAFE_NO_PAD.encode(&w.pk)}]})
    .to_string();
    let r = post(port, "/v1/relay/v2/pairs", &body);
    if r.status == 200 {
        let p = &r.json()["pairs"][0];
        let enc = b64d(&p["enc"]);
        let confirm = b64d(&p["confirm"]);
        offer
            .finish(
                &cid,
                &PairAnswer {
                    pair_id: p["pair_id"].as_str().unwrap(),
                    enc: &enc,
                    expires_at: p["expires_at"].as_u64().unwrap(),
                    confirm: &confirm,
                },
            )
            .expect("the confirmation verifies under the pinned key");
    }
    r
}

fn show_pin(env: &Env) -> veil_core::relay::v2::KeyConfig {
    let o = env.run(&["relay-key", "show"]);
    assert!(o.status.success(), "{}", o.all());
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    veil_core::relay::v2::KeyConfig::from_b64(o.stdout.trim()).unwrap()
}

/// The relay server key is its own key in the keyring: `rotate-relay-key` makes a new pin
/// while a client pinned to the old one still pairs, until `destroy-relay-key`; then it is
/// refused with `relay-key-unknown`, and the destroyed id is never issued again. A running
/// keyservice picks each change up from the file without a restart.
#[test]
fn v2_relay_key_rotation_and_destroy() {
    use veil_core::relay::v2::KeyConfig;
    use veil_keyservice::keyring::{Keyring, RootState};

    let (env, s) = serve_with(&[("VEIL_KEYRING_RELOAD_SECS", "1")]);
    let k1 = show_pin(&env);
    assert_eq!(k1.key_id(), 1);
    assert_eq!(pair_v2(s.port, &k1).status, 200);

    let o = env.run(&["keyring", "rotate-relay-key"]);
    assert!(o.status.success(), "{}", o.all());
    let k2 = show_pin(&env);
    assert_eq!(k2.key_id(), 2);
    assert_ne!(k2.public_key(), k1.public_key());
    assert!(o.stdout.contains(&k2.to_b64()), "{}", o.stdout);
    // the running keyservice reloads the file: both keys pair, the new one listed first
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = get_bytes(s.port, "/v1/relay/keys");
        if KeyConfig::decode_list(&body).unwrap() == vec![k2.clone(), k1.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "the keyservice did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pair_v2(s.port, &k2).status, 200);
    assert_eq!(pair_v2(s.port, &k1).status, 200, "the old pin still pairs");

    // the last active key cannot be destroyed; a missing one is named
    let o = env.run(&["keyring", "destroy-relay-key", "9", "--yes"]);
    assert!(o.stderr.contains("there is no relay key k9"), "{}", o.all());
    // without --yes, a wrong confirmation keeps the key
    let o = env.run_stdin(&["keyring", "destroy-relay-key", "k1"], "destroy r1\n");
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(o.stderr.contains("not confirmed; k1 kept"), "{}", o.all());
    let o = env.run_stdin(&["keyring", "destroy-relay-key", "k1"], "destroy k1\n");
    assert!(o.status.success(), "{}", o.all());
    let kr = Keyring::load(&env.keyring()).unwrap();
    assert_eq!(kr.relay_keys[0].state, RootState::Destroyed);
    assert_eq!(kr.relay_keys[0].wrapped, "", "the wrapped seed is gone");
    let o = env.run(&["keyring", "destroy-relay-key", "2", "--yes"]);
    assert!(
        o.stderr.contains("k2 is the last active relay key"),
        "{}",
        o.all()
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = pair_v2(s.port, &k1);
        if r.status == 400 {
            assert_refused(&r, 400, "key-unknown");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(Instant::now() < deadline, "the destroyed key kept pairing");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pair_v2(s.port, &k2).status, 200);
    let (_, _, body) = get_bytes(s.port, "/v1/relay/keys");
    assert_eq!(KeyConfig::decode_list(&body).unwrap(), vec![k2.clone()]);

    // the destroyed id is never issued again: the next key is k3
    let o = env.run(&["keyring", "rotate-relay-key"]);
    assert!(o.status.success(), "{}", o.all());
    assert_eq!(show_pin(&env).key_id(), 3);
    let v = env.run(&["keyring", "verify"]);
    assert!(v.status.success(), "{}", v.all());
    assert!(
        v.stdout.contains("k1    destroyed (tombstone"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("k3    active    ok"), "{}", v.stdout);
    let st = env.run(&["keyring", "status"]);
    assert!(st.status.success(), "{}", st.all());
    assert!(st.stdout.contains("[current]"), "{}", st.stdout);
}

/// A keyring written before relay protocol v2 (no `relay_keys`) still serves its roots; the
/// relay refuses to pair with a clear error naming the command, `relay-key show` fails the
/// same way, and the first `rotate-relay-key` creates key 1 (the migration path).
#[test]
fn v2_keyring_without_a_relay_key_is_migrated_by_rotate_relay_key() {
    use veil_keyservice::keyring::Keyring;

    let env = Env::new();
    env.init();
    // what `keyring init` wrote before relay protocol v2: no relay_keys member at all
    let mut kr = Keyring::load(&env.keyring()).unwrap();
    kr.relay_keys.clear();
    kr.replace(&env.keyring()).unwrap();
    let text = std::fs::read_to_string(env.keyring()).unwrap();
    assert!(!text.contains("relay_keys"), "{text}");

    let o = env.run(&["relay-key", "show"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    assert!(
        o.stderr.contains("no active relay server key")
            && o.stderr
                .contains("veil-keyservice keyring rotate-relay-key"),
        "{}",
        o.stderr
    );

    let s = env.serve();
    assert_eq!(s.get("/v1/data-keys/current", Some(TOKEN)).status, 200);
    let r = get(s.port, "/v1/relay/keys");
    assert_refused(&r, 503, "no-server-key");
    assert!(r.body.contains("rotate-relay-key"), "{}", r.body);
    let any = veil_core::relay::v2::ServerKey::from_seed(1, [7; 32]).unwrap();
    let r = pair_v2(s.port, any.config());
    assert_refused(&r, 503, "no-server-key");
    assert!(s.logs().contains("rotate-relay-key"));
    drop(s);

    let o = env.run(&["keyring", "rotate-relay-key"]);
    assert!(o.status.success(), "{}", o.all());
    let pin = show_pin(&env);
    assert_eq!(pin.key_id(), 1);
    let s = env.serve();
    assert_eq!(pair_v2(s.port, &pin).status, 200);
}

/// A throw-away CA and a server certificate for 127.0.0.1, made with openssl in `dir`.
fn make_tls_ca(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl not found");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=veil test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// `rediss://`: a real redis-server serving TLS only, its certificate from a CA made here.
/// With `RELAY_REDIS_CA_FILE` the keyservice pairs through it; without (the system's roots do
/// not know that CA) the relay answers 503 and never falls back to plaintext; a CA file with
/// a `redis://` URL is refused at start.
#[test]
fn rediss_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    make_tls_ca(dir.path());
    let port = free_port();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found: run scripts/setup.sh");
    let mut redis = Daemon(child);
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        assert!(
            redis.0.try_wait().unwrap().is_none(),
            "redis-server exited: no TLS support?"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("rediss://127.0.0.1:{port}/");
    let ca = p("ca.pem");

    let (_env, s) = serve_with(&[
        ("REDIS_URL", url.as_str()),
        ("RELAY_REDIS_CA_FILE", ca.as_str()),
    ]);
    let cid = client_id(11);
    let pairs = pair(s.port, &cid, 1);
    let id = pairs[0]["pair_id"].as_str().unwrap();
    let r = get(s.port, &format!("/v1/relay/pairs/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["c2s"], pairs[0]["c2s"]);

    let (_env2, s2) = serve_with(&[("REDIS_URL", url.as_str())]);
    let (body, _) = pairing_body(s2.port, &cid, 1);
    assert_refused(
        &post(s2.port, "/v1/relay/v2/pairs", &body),
        503,
        "store-unavailable",
    );

    let mut env = Env::new();
    env.init();
    env.set("VEIL_KEYSERVICE_TOKEN", TOKEN)
        .set("REDIS_URL", &format!("redis://127.0.0.1:{port}/"))
        .set("RELAY_REDIS_CA_FILE", &ca);
    let o = env.run(&["serve"]);
    assert_eq!(o.status.code(), Some(1), "{}", o.all());
    assert!(
        o.stderr.contains("error: RELAY_REDIS_CA_FILE"),
        "{}",
        o.stderr
    );
    drop(redis);
}
