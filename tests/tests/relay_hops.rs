//! Issue #17 through real Envoy, the filter, the keyservice and the recording demo upstream:
//! what a hop in front of Envoy (CDN, load balancer, WAF) can try against relay v2, each
//! written in the test — an active man in the middle that pairs on both sides, a request
//! captured and replayed after an Envoy restart, injected wire headers and a swapped
//! `:authority`, a forged error to make a client send a `POST` twice — and a look into Redis
//! for the pairs' traffic keys. Each fails on version 1's behaviour.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use veil_core::relay::v2::{ClientOffer, ResponseControl};
use veil_e2e::http::{self, Response};
use veil_e2e::relay::{self, RawPair};
use veil_e2e::{Redis, Stack, StackOptions};
use veil_relay::{Client, Options};

// --- a hop that rewrites what passes ---------------------------------------------------------

/// One request as the hop received it.
#[derive(Clone, Debug)]
struct HopRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

type Handler = dyn Fn(&HopRequest, SocketAddr) -> Response + Send + Sync;

/// An HTTP/1.1 proxy on loopback in front of Envoy whose handler decides what to forward and
/// what to answer (one request per connection, `content-length` bodies: what the clients
/// send). It stands where a TLS-terminating hop would.
struct ActiveHop {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn read_request(stream: &mut TcpStream) -> Option<HopRequest> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(HopRequest {
        method,
        target,
        headers,
        body,
    })
}

fn write_response(stream: &mut TcpStream, r: &Response) {
    let mut out = format!("HTTP/1.1 {} X\r\n", r.status);
    for (n, v) in &r.headers {
        if !matches!(
            n.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        r.body.len()
    ));
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(&r.body);
    let _ = stream.flush();
}

impl ActiveHop {
    fn start(envoy: SocketAddr, handler: Arc<Handler>) -> ActiveHop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(20)))
                            .unwrap();
                        if let Some(req) = read_request(&mut stream) {
                            let r = handler(&req, envoy);
                            write_response(&mut stream, &r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ActiveHop {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ActiveHop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards `req` to Envoy as it is (the `host` the client wrote included).
fn forward(req: &HopRequest, envoy: SocketAddr) -> Response {
    let h: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(n, _)| n != "content-length" && n != "connection")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    http::request(envoy, &req.method, &req.target, &h, &req.body)
        .unwrap_or_else(|e| panic!("hop → Envoy: {e}"))
}

fn client(stack: &Stack, addr: SocketAddr) -> Client {
    Client::new(
        &format!("http://{addr}/veil"),
        Options {
            pairs: 1,
            timeout: Duration::from_secs(20),
            server_key: Some(stack.relay_key()),
            ..Options::default()
        },
    )
    .unwrap()
}

// --- the tests -------------------------------------------------------------------------------

/// A hop that pairs on both sides: it replaces the client's ephemeral key with its own, pairs
/// with the relay (which answers it genuinely), and answers the client with an encapsulation
/// to the client's key it made itself — so it would hold both pairs' keys. The client, pinned
/// to the relay's key, refuses at pairing with the stable code, and sends nothing on it.
/// (Version 1's client accepted any answer: the hop read and changed everything.)
#[test]
fn a_man_in_the_middle_that_pairs_on_both_sides_is_refused_at_pairing() {
    let stack = Stack::start();
    let paired_with_relay = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&paired_with_relay);
    let handler: Arc<Handler> = Arc::new(move |req, envoy| {
        if req.method != "POST" || !req.target.ends_with("/veil/pair") {
            return forward(req, envoy);
        }
        // The client's offer: `enc` to the pinned key (the hop cannot open it) and `pk`, its
        // ephemeral key. The hop substitutes an offer of its own, pinned to the same key.
        let offer: Value = serde_json::from_slice(&req.body).unwrap();
        let pin = relay::keys(envoy);
        let mine = ClientOffer::generate_os(&pin).unwrap();
        let mut substituted = req.clone();
        substituted.body = relay::pairing_body(&pin, std::slice::from_ref(&mine));
        let client_id = req
            .headers
            .iter()
            .find(|(n, _)| n == "x-veil-client-id")
            .map(|(_, v)| v.clone())
            .unwrap();
        let r = forward(&substituted, envoy);
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = r.json();
        // The relay's genuine answer opens for the hop: it now holds a pair with the relay.
        let keys = relay::finish_pairing(&client_id, vec![mine], &answer).unwrap();
        assert_eq!(keys.len(), 1);
        seen.fetch_add(1, Ordering::SeqCst);
        // Towards the client: an encapsulation to the client's ephemeral key, made by the
        // hop (so it knows that secret), with the relay's pair id, expiry and confirmation.
        let client_pk = URL_SAFE_NO_PAD
            .decode(offer["pairs"][0]["pk"].as_str().unwrap())
            .unwrap();
        let (ct, _ss) = veil_core::relay::kem::encapsulate_os(&client_pk).unwrap();
        let mut forged = answer.clone();
        forged["pairs"][0]["enc"] = json!(URL_SAFE_NO_PAD.encode(ct));
        Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: forged.to_string().into_bytes(),
        }
    });
    let hop = ActiveHop::start(stack.listen, handler);
    let c = client(&stack, hop.addr);
    let e = c.request("GET", "/app/echo/mitm", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-server-auth-failed"), "{e}");
    assert!(
        paired_with_relay.load(Ordering::SeqCst) >= 1,
        "the hop did pair with the relay"
    );
    assert!(stack.recorded().is_empty(), "{:?}", stack.recorded());
    assert_eq!(c.stats().requests, 0, "nothing was sent on the hop's pair");
    // The wire-level client sees the same: the confirmation does not verify.
    let id = relay::discover(hop.addr);
    let err = relay::pair_pinned(hop.addr, &stack.relay_key(), &id, 1)
        .err()
        .expect("refused");
    assert!(err.contains("relay-server-auth-failed"), "{err}");
    // Without the hop, the same client pairs and its request goes through.
    let direct = client(&stack, stack.listen);
    assert_eq!(
        direct
            .request("GET", "/app/echo/direct", &[], None)
            .unwrap()
            .status,
        200
    );
}

/// `local` replay mode keeps the window in Envoy's shared data: after an Envoy restart a
/// captured request is accepted once more (documented: the upstream runs it again). Its answer
/// — the same upstream answer byte for byte — comes back under a fresh response nonce, so a
/// different key: the two ciphertexts differ, and each opens for the client. Version 1 sealed
/// both under one key and nonce (their XOR is the XOR of the plaintexts, GHASH's key falls).
#[test]
fn a_request_replayed_after_an_envoy_restart_gets_a_fresh_answer() {
    let mut stack = Stack::start();
    let id = relay::discover(stack.listen);
    let p = relay::pair(stack.listen, &id, 1).remove(0);
    let e = p.encode(
        &id,
        1,
        "POST",
        "/app/reflect?replayed=1",
        &[("x-reflect-content-type", "application/json")],
        Some(br#"{"transfer":"100 EUR"}"#),
    );
    let first = e.send(stack.listen);
    let a = p.decode_for(&e, &first).unwrap();
    assert_eq!(a.status, 200);
    // Accepted once: a replay to the same Envoy is refused.
    let again = e.send(stack.listen);
    assert_eq!(again.header("x-veil-relay-error"), Some("relay-replay"));
    stack.restart_envoy("envoy-restarted");
    let second = e.send(stack.listen);
    let b = p.decode_for(&e, &second).unwrap();
    assert_eq!(b.status, 200, "the replay ran again after the restart");
    assert_eq!(a.body, b.body, "the same answer in plaintext");
    let content = |d: &relay::Decoded| {
        d.sealed
            .iter()
            .filter(|(n, _)| n != "x-envoy-upstream-service-time")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(content(&a), content(&b));
    let rn = |r: &Response| {
        ResponseControl::parse(r.header("x-veil-relay").unwrap())
            .unwrap()
            .response_nonce
    };
    assert_ne!(rn(&first), rn(&second), "a fresh response nonce");
    assert_ne!(
        first.header("x-veil-relay-eh"),
        second.header("x-veil-relay-eh"),
        "the sealed headers differ"
    );
    assert_ne!(first.body, second.body, "the sealed body differs");
    assert_eq!(first.body.len(), second.body.len());
    // No byte position where the two ciphertexts agree by construction (a reused key and
    // nonce would make them agree wherever the plaintexts agree: everywhere here).
    let same = first
        .body
        .iter()
        .zip(&second.body)
        .filter(|(x, y)| x == y)
        .count();
    assert!(same < first.body.len() / 4, "{same} equal bytes");
    assert_eq!(
        stack.recorded().len(),
        2,
        "the documented cost of local mode"
    );
}

/// Wire headers a hop adds reach the upstream no more (only the allow-list does, and
/// `x-forwarded-proto` is the bound scheme); a request sent to another authority does not
/// open; `relay.public_origin` binds the origin clients address when a hop rewrites it.
#[test]
fn injected_wire_headers_are_dropped_and_an_authority_swap_is_refused() {
    let stack = Stack::start();
    let id = relay::discover(stack.listen);
    let p = relay::pair(stack.listen, &id, 1).remove(0);
    let hop_headers = [
        ("cookie", "session=hop"),
        ("authorization", "Bearer hop"),
        ("x-forwarded-for", "203.0.113.66"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=203.0.113.66"),
        ("x-hop-added", "1"),
        ("user-agent", "browser/1.0"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let mut e = p.encode(
        &id,
        1,
        "GET",
        "/app/echo/headers",
        &[("authorization", "Bearer app"), ("x-app", "1")],
        None,
    );
    for (n, v) in hop_headers {
        e = e.with_wire_header(n, v);
    }
    stack.clear_recorded();
    let r = e.send(stack.listen);
    assert_eq!(p.decode_for(&e, &r).unwrap().status, 200);
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    let up = &rec[0];
    println!("the upstream saw: {:?}", up.headers);
    for gone in [
        "cookie",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "x-hop-added",
    ] {
        assert_eq!(up.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(
        up.header("authorization"),
        Some("Bearer app"),
        "the sealed one"
    );
    assert_eq!(up.header("x-app"), Some("1"));
    assert_eq!(
        up.header("x-forwarded-proto"),
        Some("http"),
        "the bound scheme"
    );
    assert_eq!(up.header("user-agent"), Some("browser/1.0"), "allow-listed");
    assert!(up.header("traceparent").is_some(), "allow-listed");
    // Without a sealed authorization the hop's is dropped too.
    let e = p
        .encode(&id, 2, "GET", "/app/echo/headers", &[], None)
        .with_wire_header("authorization", "Bearer hop");
    stack.clear_recorded();
    assert_eq!(p.decode_for(&e, &e.send(stack.listen)).unwrap().status, 200);
    assert_eq!(stack.recorded()[0].header("authorization"), None);

    // A scheme swap as Envoy sees it: Envoy takes `:scheme` from a wire
    // `x-forwarded-proto` (its default trust), so the parts, bound to `http`, do not open.
    let e = p
        .encode(&id, 5, "GET", "/app/echo/scheme", &[], None)
        .with_wire_header("x-forwarded-proto", "https");
    stack.clear_recorded();
    let r = e.send(stack.listen);
    assert_eq!(
        p.decode_for(&e, &r).unwrap_err(),
        "authenticated relay-decode-failed"
    );
    assert!(stack.recorded().is_empty());
    // :authority swap: sent to another host name than the client addressed.
    let e = p
        .encode(&id, 3, "GET", "/app/echo/swapped", &[], None)
        .with_wire_header("host", "other.example");
    stack.clear_recorded();
    let r = e.send(stack.listen);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("x-veil-relay-error"), Some("relay-decode-failed"));
    assert_eq!(
        p.decode_for(&e, &r).unwrap_err(),
        "authenticated relay-decode-failed",
        "the client learns the relay refused exactly this request"
    );
    assert!(stack.recorded().is_empty());
    // A sealed cookie: refused with its own code (allow_sealed_cookie is off).
    let e = p.encode(&id, 4, "GET", "/app/echo", &[("cookie", "s=1")], None);
    let r = e.send(stack.listen);
    assert_eq!(
        p.decode_for(&e, &r).unwrap_err(),
        "authenticated relay-header-not-allowed"
    );

    // Behind a hop that terminates TLS and renames the host: `public_origin`.
    let mut config = veil_e2e::demo_filter_config();
    config["relay"]["public_origin"] = json!("https://app.example");
    let behind = Stack::start_with(StackOptions {
        filter_config: config,
        ..Default::default()
    });
    let id = relay::discover(behind.listen);
    let mut p: RawPair = relay::pair(behind.listen, &id, 1).remove(0);
    let e = p.encode(&id, 1, "GET", "/app/echo/public", &[], None);
    let r = e.send(behind.listen);
    assert_eq!(
        p.decode_for(&e, &r).unwrap_err(),
        "authenticated relay-decode-failed",
        "bound to the address Envoy sees, not the public origin"
    );
    (p.scheme, p.authority) = ("https".into(), "app.example".into());
    let e = p.encode(&id, 2, "GET", "/app/echo/public", &[], None);
    let r = e.send(behind.listen);
    assert_eq!(p.decode_for(&e, &r).unwrap().status, 200);
}

/// A hop forwards a `POST` (it runs at the upstream), then answers the client with a forged
/// `relay-pair-unknown` in the relay's place. Version 1's client re-paired and sent it again:
/// the upstream ran it twice. The v2 client reports the error and sends nothing more; a `GET`
/// is retried (idempotent).
#[test]
fn a_forged_error_does_not_make_a_post_run_twice() {
    let stack = Stack::start();
    let forge = Arc::new(Mutex::new(true));
    let f = Arc::clone(&forge);
    let handler: Arc<Handler> = Arc::new(move |req, envoy| {
        let r = forward(req, envoy);
        let encoded = req.headers.iter().any(|(n, _)| n == "x-veil-relay");
        let mut once = f.lock().unwrap();
        if encoded && *once {
            *once = false;
            let body = br#"{"type":"urn:veil:problem:relay-pair-unknown","title":"Relay pair unknown or expired","status":401,"code":"relay-pair-unknown","detail":"forged by a hop"}"#;
            return Response {
                status: 401,
                headers: vec![
                    ("content-type".into(), "application/problem+json".into()),
                    ("x-veil-relay-error".into(), "relay-pair-unknown".into()),
                ],
                body: body.to_vec(),
            };
        }
        r
    });
    let hop = ActiveHop::start(stack.listen, handler);
    let c = client(&stack, hop.addr);
    stack.clear_recorded();
    let e = c
        .request("POST", "/app/echo/pay", &[], Some(b"pay 100"))
        .unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-pair-unknown"), "{e}");
    let ran: Vec<_> = stack
        .recorded()
        .into_iter()
        .filter(|r| r.path == "/app/echo/pay")
        .collect();
    assert_eq!(ran.len(), 1, "the POST ran once, and only once");
    assert_eq!(c.stats().retries, 0);
    // An idempotent request after the same forgery is retried on a fresh pair.
    *forge.lock().unwrap() = true;
    stack.clear_recorded();
    let r = c.request("GET", "/app/echo/look", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(c.stats().retries, 1);
    assert_eq!(stack.recorded().len(), 2, "a GET may run twice");
}

// --- Redis -----------------------------------------------------------------------------------

/// One RESP command on a fresh connection; its reply's bulk strings, flattened.
fn redis(port: u16, args: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        cmd.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        cmd.extend_from_slice(a);
        cmd.extend_from_slice(b"\r\n");
    }
    s.write_all(&cmd).unwrap();
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    read_reply(&mut r, &mut out);
    out
}

fn read_reply(r: &mut BufReader<TcpStream>, out: &mut Vec<Vec<u8>>) {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).unwrap();
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    let (kind, rest) = text.split_at(1);
    match kind {
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n >= 0 {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b).unwrap();
                b.truncate(n as usize);
                out.push(b);
            }
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            for _ in 0..n.max(0) {
                read_reply(r, out);
            }
        }
        "+" | ":" => out.push(rest.as_bytes().to_vec()),
        _ => panic!("redis: {text}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `global` mode on a real redis-server: every key and every value (DUMP: whatever its type)
/// is scanned for the traffic keys the test client derived — raw, hex, base64url, base64.
/// Version 1 stored them raw. Now only sealed records are there.
#[test]
fn redis_holds_no_plaintext_pair_key() {
    let dir = std::env::temp_dir().join(format!("veil-e2e-redis-hops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let redis_server = Redis::start(&dir);
    let mut config = veil_e2e::demo_filter_config();
    config["relay"]["replay"] = json!({"mode": "global"});
    let stack = Stack::start_with(StackOptions {
        filter_config: config,
        keyservice_env: vec![("REDIS_URL".into(), redis_server.url())],
        ..Default::default()
    });
    let id = relay::discover(stack.listen);
    let pairs = relay::pair(stack.listen, &id, 3);
    for (i, p) in pairs.iter().enumerate() {
        for seq in 1..=3 {
            let e = p.encode(&id, seq, "POST", "/app/echo/r", &[], Some(b"x"));
            assert_eq!(
                p.decode_for(&e, &e.send(stack.listen)).unwrap().status,
                200,
                "pair {i} seq {seq}"
            );
        }
    }
    let keys = redis(redis_server.port, &[b"KEYS", b"*"]);
    assert!(!keys.is_empty(), "the pairs are in Redis");
    let mut scanned = 0;
    let mut blob = Vec::new();
    for k in &keys {
        for v in redis(redis_server.port, &[b"DUMP", k]) {
            blob.extend_from_slice(k);
            blob.extend_from_slice(&v);
            scanned += 1;
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets = 0;
    for p in &pairs {
        for key in [&p.keys.c2s, &p.keys.s2c] {
            for form in [
                key.to_vec(),
                key.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes(),
                URL_SAFE_NO_PAD.encode(key).into_bytes(),
                b64.encode(key).into_bytes(),
                key[..16].to_vec(),
            ] {
                assert!(
                    !contains(&blob, &form),
                    "a traffic key of pair {} is in Redis in plaintext",
                    p.pair_id
                );
                secrets += 1;
            }
        }
    }
    println!(
        "redis: {} keys, {scanned} values scanned, {secrets} key forms absent",
        keys.len()
    );
}
