//! The client speaking protocol v2 (docs/relay-protocol.md) against a relay DOUBLE: a
//! loopback axum server playing filter + keyservice with `veil_core::relay::v2`. Besides
//! the round trip, the double plays the hops issue #17 is about: a man in the middle that
//! pairs with both sides, a hop that forwards a request and then answers an error in the
//! relay's place, a hop that sends the request to another authority.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use veil_core::relay::v2::{
    self, AnswerCipher, AnswerKind, ClientOffer, Exchange, PairAnswer, Part, RequestBinding,
    RequestCipher, RequestControl, ResponseControl, ServerKey,
};
use veil_core::relay::{
    kem, wire, ClientIdSecret, PairKeys, RelayError, ReplayWindow, HEADER_CLIENT_ID, HEADER_EH,
    HEADER_ERROR, HEADER_RELAY,
};
use veil_relay::{parse_server_key, Client, ClientError, Options};

struct PairState {
    client_id: String,
    keys: PairKeys,
    window: ReplayWindow,
}

struct Double {
    secret: ClientIdSecret,
    server: ServerKey,
    pairs: HashMap<String, PairState>,
    /// What the upstream ran: (method, path and query).
    runs: Vec<(String, String)>,
    /// Encoded requests that reached the double.
    encoded: usize,
    /// A hop pairs with the relay itself and answers the client with its own exchange.
    mitm: bool,
    /// A hop lets the next request run, then answers this plaintext relay error (once).
    forge_after_run: Option<RelayError>,
    /// The relay refuses the next request as a replay, authenticated (once).
    auth_replay_once: bool,
    /// A hop sent the request to this authority instead of the client's.
    authority_seen: Option<String>,
    /// Response nonces of the answers, in order.
    response_nonces: Vec<[u8; 32]>,
    pairings: usize,
    /// The relay answers the next this many encoded requests `relay-unavailable` (its
    /// keyservice did not answer), before it knows the pair: plaintext, nothing run.
    unavailable: usize,
    /// A hop answers the next encoded request itself, in plaintext, without any relay header.
    plain_answer_once: bool,
}

type Shared = Arc<Mutex<Double>>;

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A plaintext refusal: what the relay answers before it knows a pair, and what a hop forges.
fn plain_problem(e: RelayError) -> Response {
    let body = veil_core::problem::problem_json(e.problem_kind(), "double");
    (
        StatusCode::from_u16(e.status()).unwrap(),
        [
            (HEADER_ERROR, e.code()),
            ("content-type", "application/problem+json"),
        ],
        body,
    )
        .into_response()
}

/// An authenticated refusal on a known pair: part 6 seals the code under a fresh answer key
/// and the request's binding.
fn sealed_problem(
    e: RelayError,
    keys: &PairKeys,
    ex: &Exchange<'_>,
    binding: &RequestBinding,
    nonces: &mut Vec<[u8; 32]>,
) -> Response {
    let rn = v2::response_nonce_os().unwrap();
    nonces.push(rn);
    let cipher = AnswerCipher::new(&keys.s2c, &rn).unwrap();
    let sealed = cipher
        .seal(
            ex,
            Part::Error,
            AnswerKind::Error,
            e.status(),
            binding,
            e.code().as_bytes(),
        )
        .unwrap();
    let rc = ResponseControl {
        pair_id: ex.pair_id,
        seq: ex.seq,
        response_nonce: rn,
        kind: AnswerKind::Error,
    };
    (
        StatusCode::from_u16(e.status()).unwrap(),
        [
            (HEADER_RELAY, rc.to_header_value()),
            (HEADER_EH, URL_SAFE_NO_PAD.encode(sealed)),
            (HEADER_ERROR, e.code().to_string()),
            ("content-type", "application/problem+json".to_string()),
        ],
        veil_core::problem::problem_json(e.problem_kind(), "double"),
    )
        .into_response()
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    match (method.as_str(), uri.path()) {
        ("GET", "/veil/relay") => {
            let id = match header(&headers, HEADER_CLIENT_ID) {
                Some(id) if st.secret.verify(id) => id.to_string(),
                _ => st.secret.issue_random().unwrap(),
            };
            serde_json::json!({"version": 2, "client_id": id, "max_pairs": 3})
                .to_string()
                .into_response()
        }
        ("POST", "/veil/pair") => {
            let Some(client_id) =
                header(&headers, HEADER_CLIENT_ID).filter(|id| st.secret.verify(id))
            else {
                return plain_problem(RelayError::BadClientId);
            };
            let client_id = client_id.to_string();
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if req["key_id"].as_u64() != Some(u64::from(st.server.config().key_id())) {
                return plain_problem(RelayError::KeyUnknown);
            }
            let entries: Vec<(String, String)> = req["pairs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["enc"].as_str().unwrap().to_string(),
                        e["pk"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let offers = v2::decode_offers(&entries, 3).unwrap();
            let mut out = Vec::new();
            for offer in offers {
                let pair_id = format!("{:022}", st.pairs.len() + 100 * st.pairings);
                let expires_at = 4_000_000_000u64;
                let (enc, confirm, keys) = if st.mitm {
                    // The hop: it pairs with the relay under its own offer (anyone can
                    // encapsulate to the public key) and answers the client with an
                    // encapsulation to the client's ephemeral key. The best confirmation it
                    // has is the relay's, which is for the hop's transcript.
                    let hop = ClientOffer::generate_os(st.server.config()).unwrap();
                    let acc = st
                        .server
                        .accept_os(&client_id, &pair_id, expires_at, &hop.wire())
                        .unwrap();
                    let confirm = acc.secrets.confirm;
                    let hop_keys = hop
                        .finish(
                            &client_id,
                            &PairAnswer {
                                pair_id: &pair_id,
                                enc: &acc.enc,
                                expires_at,
                                confirm: &confirm,
                            },
                        )
                        .unwrap();
                    let (enc, _) = kem::encapsulate_os(&offer.pk).unwrap();
                    (enc, confirm, hop_keys)
                } else {
                    let acc = st
                        .server
                        .accept_os(&client_id, &pair_id, expires_at, &offer)
                        .unwrap();
                    (acc.enc, acc.secrets.confirm, acc.secrets.keys.clone())
                };
                st.pairs.insert(
                    pair_id.clone(),
                    PairState {
                        client_id: client_id.clone(),
                        keys,
                        window: ReplayWindow::new(),
                    },
                );
                out.push(
                    serde_json::json!({"pair_id": pair_id, "enc": URL_SAFE_NO_PAD.encode(&enc),
                    "expires_at": expires_at, "confirm": URL_SAFE_NO_PAD.encode(confirm)}),
                );
            }
            st.pairings += 1;
            serde_json::json!({"pairs": out})
                .to_string()
                .into_response()
        }
        (_, p) if p.starts_with("/veil/x/") => {
            st.encoded += 1;
            if st.unavailable > 0 {
                st.unavailable -= 1;
                return plain_problem(RelayError::Unavailable("the double's keyservice is down"));
            }
            if std::mem::take(&mut st.plain_answer_once) {
                return (StatusCode::OK, "plaintext from a hop").into_response();
            }
            decode_and_answer(st, method.as_str(), &uri, &headers, &body)
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn decode_and_answer(
    st: &mut Double,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some(c) = header(headers, HEADER_RELAY).and_then(|v| RequestControl::parse(v).ok()) else {
        return plain_problem(RelayError::BadRequest("control"));
    };
    if !st.secret.verify(c.client_id) {
        return plain_problem(RelayError::BadClientId);
    }
    let Some(pair) = st
        .pairs
        .get_mut(c.pair_id)
        .filter(|p| p.client_id == c.client_id)
    else {
        return plain_problem(RelayError::PairUnknown);
    };
    let sealed_url =
        wire::sealed_path_part("/veil", uri.path()).and_then(|b| URL_SAFE_NO_PAD.decode(b).ok());
    let sealed_eh = header(headers, HEADER_EH).and_then(|b| URL_SAFE_NO_PAD.decode(b).ok());
    let (Some(sealed_url), Some(sealed_eh)) = (sealed_url, sealed_eh) else {
        return plain_problem(RelayError::BadRequest("parts"));
    };
    let binding = RequestBinding::of(&sealed_url, &sealed_eh).unwrap();
    // the filter's view of the request: the authority it was sent to
    let authority = st
        .authority_seen
        .clone()
        .unwrap_or_else(|| header(headers, "host").unwrap().to_string());
    let ex = Exchange {
        pair_id: c.pair_id,
        seq: c.seq,
        method,
        scheme: "http",
        authority: &authority,
    };
    let keys = pair.keys.clone();
    if std::mem::take(&mut st.auth_replay_once) || pair.window.accept(c.seq, 128).is_err() {
        return sealed_problem(
            RelayError::Replay,
            &keys,
            &ex,
            &binding,
            &mut st.response_nonces,
        );
    }
    let c2s = RequestCipher::new(&keys.c2s);
    let opened = (|| {
        let pq = c2s.open(&ex, Part::RequestUrl, c.body, &sealed_url)?;
        let hs = v2::decode_request_headers(
            &c2s.open(&ex, Part::RequestHeaders, c.body, &sealed_eh)?,
            false,
        )?;
        let b = if c.body {
            Some(c2s.open(&ex, Part::RequestBody, c.body, body)?)
        } else {
            None
        };
        Ok::<_, RelayError>((String::from_utf8(pq).unwrap(), hs, b))
    })();
    let (pq, app_headers, app_body) = match opened {
        Ok(x) => x,
        Err(e) => return sealed_problem(e, &keys, &ex, &binding, &mut st.response_nonces),
    };
    // the upstream runs the request
    st.runs.push((method.to_string(), pq.clone()));
    if let Some(e) = st.forge_after_run.take() {
        return plain_problem(e);
    }
    let echo = serde_json::json!({
        "method": method,
        "path_and_query": pq,
        "headers": app_headers,
        "body": app_body.as_ref().map(|b| URL_SAFE_NO_PAD.encode(b)),
    });
    let rn = v2::response_nonce_os().unwrap();
    st.response_nonces.push(rn);
    let kind = AnswerKind::HeadersBody;
    let cipher = AnswerCipher::new(&keys.s2c, &rn).unwrap();
    let sealed = vec![("content-type".to_string(), "application/json".to_string())];
    let eh = cipher
        .seal(
            &ex,
            Part::ResponseHeaders,
            kind,
            200,
            &binding,
            &wire::encode_headers(&sealed),
        )
        .unwrap();
    let body = cipher
        .seal(
            &ex,
            Part::ResponseBody,
            kind,
            200,
            &binding,
            echo.to_string().as_bytes(),
        )
        .unwrap();
    let rc = ResponseControl {
        pair_id: c.pair_id,
        seq: c.seq,
        response_nonce: rn,
        kind,
    };
    (
        StatusCode::OK,
        [
            (HEADER_RELAY, rc.to_header_value()),
            (HEADER_EH, URL_SAFE_NO_PAD.encode(eh)),
            ("content-type", "application/octet-stream".to_string()),
        ],
        body,
    )
        .into_response()
}

fn start() -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Double {
        secret: ClientIdSecret::new(&[1; 32]).unwrap(),
        server: ServerKey::from_seed(3, [7; 32]).unwrap(),
        pairs: HashMap::new(),
        runs: Vec::new(),
        encoded: 0,
        mitm: false,
        forge_after_run: None,
        auth_replay_once: false,
        authority_seen: None,
        response_nonces: Vec::new(),
        pairings: 0,
        unavailable: 0,
        plain_answer_once: false,
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().fallback(handle).with_state(s);
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/veil"), state)
}

fn client(url: &str, state: &Shared) -> Client {
    client_waiting(url, state, None)
}

/// A client pinned to the double's key that waits out `relay-unavailable` for `wait`.
fn client_waiting(url: &str, state: &Shared, wait: Option<std::time::Duration>) -> Client {
    Client::new(url, pinned(state, wait)).unwrap()
}

fn pinned(state: &Shared, wait: Option<std::time::Duration>) -> Options {
    let pin = state.lock().unwrap().server.config().to_b64();
    Options {
        pairs: 2,
        server_key: Some(parse_server_key(&pin).unwrap()),
        unavailable_retry_after: wait,
        ..Options::default()
    }
}

fn echo(r: &veil_relay::Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn v2_requests_round_trip_with_a_fresh_key_per_answer() {
    let (url, state) = start();
    let c = client(&url, &state);
    let r = c
        .request(
            "GET",
            "/app/echo?x=1",
            &[("x-app".into(), "1".into())],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(echo(&r)["path_and_query"], "/app/echo?x=1");
    assert_eq!(echo(&r)["headers"], serde_json::json!([["x-app", "1"]]));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = c
        .request("POST", "/app/items", &[], Some(b"{\"a\":1}"))
        .unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(echo(&r)["body"].as_str().unwrap())
            .unwrap(),
        b"{\"a\":1}"
    );
    let st = state.lock().unwrap();
    assert_eq!(st.runs.len(), 2);
    assert_ne!(st.response_nonces[0], st.response_nonces[1]);
    assert_eq!(c.stats().retries, 0);
}

#[test]
fn a_man_in_the_middle_is_refused_at_pairing() {
    let (url, state) = start();
    state.lock().unwrap().mitm = true;
    let c = client(&url, &state);
    let e = c.request("GET", "/app/echo", &[], None).unwrap_err();
    assert!(matches!(e, ClientError::ServerNotAuthenticated(_)), "{e}");
    assert_eq!(e.relay_code(), Some("relay-server-auth-failed"));
    let st = state.lock().unwrap();
    assert_eq!(st.pairings, 1, "the hop did pair with the relay");
    assert_eq!(st.encoded, 0, "no request was sent on a pair the hop holds");
    assert!(st.runs.is_empty());
}

#[test]
fn a_wrong_pin_is_refused_at_pairing() {
    let (url, state) = start();
    let other = ServerKey::from_seed(3, [8; 32]).unwrap();
    let c = Client::new(
        &url,
        Options {
            server_key: Some(other.config().clone()),
            ..Options::default()
        },
    )
    .unwrap();
    let e = c.request("GET", "/app/echo", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-server-auth-failed"), "{e}");
    // and a pin with an unknown key id is refused by the relay
    let unknown = ServerKey::from_seed(4, [7; 32]).unwrap();
    let c = Client::new(
        &url,
        Options {
            server_key: Some(unknown.config().clone()),
            ..Options::default()
        },
    )
    .unwrap();
    let e = c.request("GET", "/app/echo", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-key-unknown"), "{e}");
    assert_eq!(state.lock().unwrap().encoded, 0);
}

#[test]
fn a_forged_error_does_not_make_a_post_run_twice() {
    let (url, state) = start();
    let c = client(&url, &state);
    c.connect().unwrap();
    for forged in [
        RelayError::PairUnknown,
        RelayError::DecodeFailed("forged"),
        RelayError::BadClientId,
        RelayError::Replay,
        RelayError::Unavailable("forged"),
    ] {
        state.lock().unwrap().forge_after_run = Some(forged);
        let before = state.lock().unwrap().runs.len();
        let e = c.request("POST", "/app/pay", &[], Some(b"1")).unwrap_err();
        match &e {
            ClientError::Relay {
                code,
                authenticated,
                ..
            } => assert_eq!((code.as_str(), *authenticated), (forged.code(), false)),
            other => panic!("{other}"),
        }
        assert_eq!(state.lock().unwrap().runs.len(), before + 1, "{forged:?}");
    }
    assert_eq!(c.stats().retries, 0);
    // an idempotent GET is retried after the same forgery (running twice is harmless)
    state.lock().unwrap().forge_after_run = Some(RelayError::PairUnknown);
    let before = state.lock().unwrap().runs.len();
    assert_eq!(c.request("GET", "/app/x", &[], None).unwrap().status, 200);
    assert_eq!(state.lock().unwrap().runs.len(), before + 2);
    assert_eq!(c.stats().retries, 1);
}

#[test]
fn an_authenticated_replay_refusal_is_retried_for_get_only() {
    let (url, state) = start();
    let c = client(&url, &state);
    state.lock().unwrap().auth_replay_once = true;
    let e = c.request("PATCH", "/app/x", &[], Some(b"1")).unwrap_err();
    assert!(
        matches!(&e, ClientError::Relay { code, authenticated: true, .. } if code == "relay-replay"),
        "{e}"
    );
    assert!(state.lock().unwrap().runs.is_empty());
    state.lock().unwrap().auth_replay_once = true;
    assert_eq!(c.request("GET", "/app/x", &[], None).unwrap().status, 200);
    assert_eq!(c.stats().retries, 1);
}

#[test]
fn an_authority_swap_does_not_open_and_nothing_runs() {
    let (url, state) = start();
    state.lock().unwrap().authority_seen = Some("other.example".into());
    let c = client(&url, &state);
    for m in ["GET", "POST"] {
        let e = c.request(m, "/app/x", &[], None).unwrap_err();
        assert!(
            matches!(&e, ClientError::Relay { code, authenticated: true, .. } if code == "relay-decode-failed"),
            "{m}: {e}"
        );
    }
    assert!(state.lock().unwrap().runs.is_empty());
    // the GET was re-paired and sent once more (idempotent); the POST was not
    assert_eq!(c.stats().retries, 1);
}

#[test]
fn server_keys_parse_from_b64_or_a_file() {
    let k = ServerKey::from_seed(9, [1; 32]).unwrap();
    let b64 = k.config().to_b64();
    assert_eq!(&parse_server_key(&b64).unwrap(), k.config());
    let dir = std::env::temp_dir().join(format!("veil-relay-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("key.b64");
    std::fs::write(&text, format!("{b64}\n")).unwrap();
    assert_eq!(
        &parse_server_key(text.to_str().unwrap()).unwrap(),
        k.config()
    );
    let raw = dir.join("key.bin");
    std::fs::write(&raw, k.config().to_bytes()).unwrap();
    assert_eq!(
        &parse_server_key(raw.to_str().unwrap()).unwrap(),
        k.config()
    );
    assert!(matches!(
        parse_server_key("/nonexistent/key"),
        Err(ClientError::Usage(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_pin_is_required() {
    let e = Client::new("http://127.0.0.1:1/veil", Options::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("server key"), "{e}");
}

/// A rotated `CLIENT_ID_SECRET`: an idempotent request re-validates its id, re-pairs and is
/// sent again; a `POST` gets the error (unauthenticated: it is never sent twice).
#[test]
fn a_rotated_client_id_secret_makes_a_get_revalidate_and_a_post_report() {
    let (url, state) = start();
    let c = client(&url, &state);
    assert_eq!(c.request("GET", "/app/a", &[], None).unwrap().status, 200);
    let old_id = c.client_id().unwrap();
    state.lock().unwrap().secret = ClientIdSecret::new(&[2; 32]).unwrap();
    assert_eq!(c.request("GET", "/app/b", &[], None).unwrap().status, 200);
    assert_ne!(c.client_id().unwrap(), old_id, "a fresh id");
    assert_eq!(c.stats().retries, 1);
    state.lock().unwrap().secret = ClientIdSecret::new(&[3; 32]).unwrap();
    let runs = state.lock().unwrap().runs.len();
    let e = c.request("POST", "/app/c", &[], Some(b"once")).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-bad-client-id"), "{e}");
    assert_eq!(state.lock().unwrap().runs.len(), runs, "nothing ran");
    assert_eq!(c.stats().retries, 1, "the POST was not sent again");
    // ...but the client re-validated its id for the next request.
    assert_eq!(
        c.request("POST", "/app/d", &[], Some(b"next"))
            .unwrap()
            .status,
        200
    );
}

/// The relay lost the pairs: a `POST` is reported (never sent twice) and its pair replaced,
/// so the next `POST` works.
#[test]
fn a_post_on_a_lost_pair_is_reported_and_the_pair_replaced() {
    let (url, state) = start();
    let c = Client::new(
        &url,
        Options {
            pairs: 1,
            server_key: Some(state.lock().unwrap().server.config().clone()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.request("POST", "/app/a", &[], Some(b"1")).unwrap().status,
        200
    );
    state.lock().unwrap().pairs.clear();
    let e = c.request("POST", "/app/b", &[], Some(b"2")).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-pair-unknown"), "{e}");
    assert_eq!(c.stats().retries, 0);
    assert_eq!(
        c.request("POST", "/app/c", &[], Some(b"3")).unwrap().status,
        200
    );
    let runs: Vec<String> = state
        .lock()
        .unwrap()
        .runs
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(runs, ["/app/a", "/app/c"]);
}

/// Requests from many threads share the pool: each pair's `seq`s leave in order, none is
/// refused as a replay, every request runs once.
#[test]
fn concurrent_requests_share_the_pool_without_replays() {
    let (url, state) = start();
    let c = client(&url, &state);
    std::thread::scope(|s| {
        for t in 0..6 {
            let c = &c;
            s.spawn(move || {
                for i in 0..5 {
                    let r = c
                        .request("POST", &format!("/app/t{t}/{i}"), &[], Some(b"x"))
                        .unwrap();
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    assert_eq!(state.lock().unwrap().runs.len(), 30);
    assert_eq!(c.stats().retries, 0);
    assert_eq!(c.stats().requests, 30);
}

#[test]
fn relay_unavailable_is_waited_out_once_for_a_get_then_given_up() {
    let (url, state) = start();
    let wait = std::time::Duration::from_millis(60);
    let c = client_waiting(&url, &state, Some(wait));
    c.request("GET", "/warm-up", &[], None).unwrap();
    // down for one request: answered after one pause, on the same pair
    state.lock().unwrap().unavailable = 1;
    let t = std::time::Instant::now();
    let r = c.request("GET", "/app/a", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= wait, "the retry waited");
    assert_eq!((c.stats().retries, c.stats().repairs), (1, 0));
    // down for longer: one retry, then the error reaches the caller
    state.lock().unwrap().unavailable = 2;
    let e = c.request("GET", "/app/a", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-unavailable"));
    assert_eq!(c.stats().retries, 2);
    assert_eq!(state.lock().unwrap().unavailable, 0);
    // a POST is not sent again (the refusal is unauthenticated: a hop may have forged it)
    let before = state.lock().unwrap().encoded;
    state.lock().unwrap().unavailable = 1;
    let e = c.request("POST", "/app/pay", &[], Some(b"1")).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-unavailable"));
    assert_eq!(state.lock().unwrap().encoded, before + 1);
    assert_eq!(c.stats().retries, 2);
    // no wait configured: the error at once, for a GET too
    let c = client_waiting(&url, &state, None);
    c.request("GET", "/warm-up", &[], None).unwrap();
    state.lock().unwrap().unavailable = 1;
    let e = c.request("GET", "/app/a", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-unavailable"));
    assert_eq!(c.stats().retries, 0);
}

#[test]
fn an_answer_that_is_not_encoded_is_a_protocol_error() {
    let (url, state) = start();
    let c = client(&url, &state);
    c.request("GET", "/warm-up", &[], None).unwrap();
    state.lock().unwrap().plain_answer_once = true;
    let e = c.request("GET", "/app/a", &[], None).unwrap_err();
    assert!(
        matches!(&e, ClientError::Protocol(m) if m.contains("not encoded")),
        "{e}"
    );
    assert_eq!(c.stats().retries, 0);
    // a relay URL that is not a relay, or not http(s), or not answering, is refused (pinned,
    // so the missing pin is not what fails)
    let nothing = Client::new(&url.replace("/veil", "/nothing"), pinned(&state, None)).unwrap();
    assert!(matches!(
        nothing.request("GET", "/a", &[], None),
        Err(ClientError::Protocol(_))
    ));
    assert!(Client::new("ftp://x/veil", pinned(&state, None)).is_err());
    assert!(Client::new("http://127.0.0.1:1", pinned(&state, None)).is_err());
}
