//! The client against a relay DOUBLE: a loopback axum server that plays filter + keyservice
//! with veil-core's own relay functions (the same ones the real filter and keyservice call).
//! It checks the client's wire output strictly and lets a test cause the real error
//! conditions (pairs forgotten, secret rotated, a seq refused) to see the recovery the
//! protocol's error table asks for. The real stack (Envoy + keyservice) is exercised by
//! tests/tests/relay_*.rs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use veil_core::relay::wire::{self, Part, RequestControl, ResponseControl};
use veil_core::relay::{
    kem, keys, ClientIdSecret, PartCipher, RelayError, ReplayWindow, HEADER_CLIENT_ID, HEADER_EH,
    HEADER_ERROR, HEADER_RELAY,
};
use veil_relay::{Client, Options};

struct PairState {
    client_id: String,
    c2s: PartCipher,
    s2c: PartCipher,
    window: ReplayWindow,
}

#[derive(Default)]
struct Double {
    secret: Option<ClientIdSecret>,
    pairs: HashMap<String, PairState>,
    /// Pair ids that served a request, in order.
    used: Vec<String>,
    /// Refuse the next encoded request as a replay (once).
    fake_replay_once: bool,
    /// Answer the next this many encoded requests `relay-unavailable`.
    fake_unavailable: usize,
    pairings: usize,
}

type Shared = Arc<Mutex<Double>>;

fn problem(e: RelayError) -> Response {
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

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let path = uri.path().to_string();
    let secret = st.secret.clone().unwrap();
    match (method.as_str(), path.as_str()) {
        ("GET", "/veil/relay") => {
            let id = match header(&headers, HEADER_CLIENT_ID) {
                Some(id) if secret.verify(id) => id.to_string(),
                _ => secret.issue_random().unwrap(),
            };
            let body = serde_json::json!({"version": 1, "client_id": id, "max_pairs": 3});
            (
                [
                    (HEADER_CLIENT_ID, id.as_str()),
                    ("cache-control", "no-store"),
                ],
                body.to_string(),
            )
                .into_response()
        }
        ("POST", "/veil/pair") => {
            let Some(client_id) = header(&headers, HEADER_CLIENT_ID).filter(|id| secret.verify(id))
            else {
                return problem(RelayError::BadClientId);
            };
            let client_id = client_id.to_string();
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut out = Vec::new();
            for k in req["keys"].as_array().unwrap() {
                let pk = URL_SAFE_NO_PAD.decode(k.as_str().unwrap()).unwrap();
                let (ct, ss) = kem::encapsulate_os(&pk).unwrap();
                // a counter is enough for the double (the keyservice draws 16 random bytes)
                let pair_id = format!("{:022}", st.pairs.len() + 100 * st.pairings);
                let k = keys::derive(&ss, &client_id, &pair_id, &pk, &ct);
                st.pairs.insert(
                    pair_id.clone(),
                    PairState {
                        client_id: client_id.clone(),
                        c2s: PartCipher::new(&k.c2s),
                        s2c: PartCipher::new(&k.s2c),
                        window: ReplayWindow::new(),
                    },
                );
                out.push(serde_json::json!({"pair_id": pair_id,
                    "ciphertext": URL_SAFE_NO_PAD.encode(&ct), "expires_at": 4_000_000_000u64}));
            }
            st.pairings += 1;
            serde_json::json!({"pairs": out})
                .to_string()
                .into_response()
        }
        (_, p) if p.starts_with("/veil/x/") => {
            match decode_and_answer(&mut st, &secret, method.as_str(), &uri, &headers, &body) {
                Ok(r) => r,
                Err(e) => problem(e),
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn decode_and_answer(
    st: &mut Double,
    secret: &ClientIdSecret,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RelayError> {
    let control = header(headers, HEADER_RELAY).ok_or(RelayError::BadRequest("no control"))?;
    let c = RequestControl::parse(control)?;
    if !secret.verify(c.client_id) {
        return Err(RelayError::BadClientId);
    }
    if st.fake_unavailable > 0 {
        st.fake_unavailable -= 1;
        return Err(RelayError::Unavailable("the double's keyservice is down"));
    }
    if std::mem::take(&mut st.fake_replay_once) {
        return Err(RelayError::Replay);
    }
    let pair = st.pairs.get_mut(c.pair_id).ok_or(RelayError::PairUnknown)?;
    if pair.client_id != c.client_id {
        return Err(RelayError::PairUnknown);
    }
    pair.window.accept(c.seq, 128)?;
    let ctx = c.context(method);
    let sealed_path =
        wire::sealed_path_part("/veil", uri.path()).ok_or(RelayError::BadRequest("path"))?;
    let pq = pair.c2s.open_b64(Part::RequestUrl, &ctx, sealed_path)?;
    let pq = String::from_utf8(pq).map_err(|_| RelayError::DecodeFailed("utf8"))?;
    let eh = header(headers, HEADER_EH).ok_or(RelayError::BadRequest("no eh"))?;
    let app_headers =
        wire::decode_request_headers(&pair.c2s.open_b64(Part::RequestHeaders, &ctx, eh)?)?;
    let app_body = if c.body {
        assert_eq!(
            header(headers, "content-type"),
            Some("application/octet-stream")
        );
        Some(pair.c2s.open(Part::RequestBody, &ctx, body)?)
    } else {
        assert!(body.is_empty());
        None
    };
    let path_only = pq.split('?').next().unwrap_or_default().to_string();
    if path_only.starts_with("/forbidden") {
        return Err(RelayError::RouteNotAllowed);
    }
    st.used.push(c.pair_id.to_string());
    let pair = st.pairs.get(c.pair_id).unwrap();
    // the echo: what the upstream would have seen
    let echo = serde_json::json!({
        "method": method,
        "path_and_query": pq,
        "headers": app_headers,
        "body": app_body.as_ref().map(|b| URL_SAFE_NO_PAD.encode(b)),
    });
    let status = if path_only == "/teapot" { 418 } else { 200 };
    let rc = ResponseControl {
        pair_id: c.pair_id,
        seq: c.seq,
        body: method != "HEAD",
    };
    let rctx = rc.context(method, status);
    let sealed = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-app".to_string(), "yes".to_string()),
    ];
    let eh = pair
        .s2c
        .seal_b64(Part::ResponseHeaders, &rctx, &wire::encode_headers(&sealed))?;
    let body = if rc.body {
        pair.s2c
            .seal(Part::ResponseBody, &rctx, echo.to_string().as_bytes())?
    } else {
        Vec::new()
    };
    Ok((
        StatusCode::from_u16(status).unwrap(),
        [
            (HEADER_RELAY, rc.to_header_value()),
            (HEADER_EH, eh),
            ("content-type", "application/octet-stream".to_string()),
            ("set-cookie", "s=1".to_string()),
        ],
        body,
    )
        .into_response())
}

/// Starts the double on a free loopback port; the runtime lives as long as the process.
fn start() -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Double {
        secret: Some(ClientIdSecret::new(&[1; 32]).unwrap()),
        ..Double::default()
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

fn echo(r: &veil_relay::Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn h(n: &str, v: &str) -> (String, String) {
    (n.to_string(), v.to_string())
}

#[test]
fn requests_round_trip_exactly() {
    let (url, state) = start();
    let c = Client::new(&url, Options::default()).unwrap();
    let r = c
        .request(
            "GET",
            "/app/echo?x=1&y=%20",
            &[h("Accept", "a/b"), h("x-app", "1"), h("x-app", "2")],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let e = echo(&r);
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path_and_query"], "/app/echo?x=1&y=%20");
    assert_eq!(
        e["headers"],
        serde_json::json!([["accept", "a/b"], ["x-app", "1"], ["x-app", "2"]])
    );
    assert!(e["body"].is_null());
    // sealed headers are restored, the envelope's content-type is gone, visible ones kept
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-app"), Some("yes"));
    assert_eq!(r.header("set-cookie"), Some("s=1"));
    assert!(r.headers.iter().all(|(n, _)| !n.starts_with("x-veil-")));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .count(),
        1
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    for (m, b) in [
        ("POST", &binary[..]),
        ("PUT", b""),
        ("PATCH", b"{}"),
        ("DELETE", b"x"),
    ] {
        let r = c.request(m, "/app/echo", &[], Some(b)).unwrap();
        let e = echo(&r);
        assert_eq!(e["method"], m);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(e["body"].as_str().unwrap()).unwrap(),
            b
        );
    }
    // a body on GET and OPTIONS travels as well (ureq allows it with non-standard methods on)
    for m in ["GET", "OPTIONS"] {
        let r = c
            .request(m, "/app/echo", &[], Some(b"odd but legal"))
            .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(echo(&r)["body"].as_str().unwrap())
                .unwrap(),
            b"odd but legal"
        );
    }
    let r = c.request("GET", "/teapot", &[], None).unwrap();
    assert_eq!(r.status, 418);
    // max_pairs 3 caps the default pool of 5; requests went round-robin over all three
    let st = state.lock().unwrap();
    let distinct: HashSet<&String> = st.used.iter().collect();
    assert_eq!(distinct.len(), 3);
    assert_eq!(st.used[0..3].iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(c.pair_ids().len(), 3);
    assert_eq!(c.stats().pairings, 1);
    assert_eq!(c.stats().retries, 0);
}

#[test]
fn pairs_forgotten_are_re_paired_and_retried_once() {
    let (url, state) = start();
    let c = Client::new(
        &url,
        Options {
            pairs: 2,
            ..Options::default()
        },
    )
    .unwrap();
    c.request("GET", "/a", &[], None).unwrap();
    state.lock().unwrap().pairs.clear(); // e.g. the keyservice's Redis restarted
    let r = c.request("POST", "/a", &[], Some(b"again")).unwrap();
    assert_eq!(echo(&r)["method"], "POST");
    let s = c.stats();
    assert_eq!((s.retries, s.repairs), (1, 1));
    // the other (also forgotten) pair recovers the same way on its turn
    c.request("GET", "/a", &[], None).unwrap();
    assert_eq!(c.stats().repairs, 2);
}

#[test]
fn a_rotated_secret_makes_the_client_revalidate_and_re_pair() {
    let (url, state) = start();
    let c = Client::new(&url, Options::default()).unwrap();
    c.request("GET", "/a", &[], None).unwrap();
    let old_id = c.client_id().unwrap();
    state.lock().unwrap().secret = Some(ClientIdSecret::new(&[2; 32]).unwrap());
    c.request("GET", "/a", &[], None).unwrap();
    assert_ne!(c.client_id().unwrap(), old_id);
    let s = c.stats();
    assert_eq!((s.retries, s.validations, s.pairings), (1, 2, 2));
    // a held id that is still valid is kept
    let held = c.client_id().unwrap();
    let c2 = Client::new(
        &url,
        Options {
            client_id: Some(held.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    c2.request("GET", "/a", &[], None).unwrap();
    assert_eq!(c2.client_id().unwrap(), held);
}

#[test]
fn a_replay_refusal_is_retried_on_a_fresh_seq_and_others_give_up() {
    let (url, state) = start();
    let c = Client::new(
        &url,
        Options {
            pairs: 1,
            ..Options::default()
        },
    )
    .unwrap();
    c.request("GET", "/a", &[], None).unwrap();
    state.lock().unwrap().fake_replay_once = true;
    c.request("GET", "/a", &[], None).unwrap();
    assert_eq!((c.stats().retries, c.stats().repairs), (1, 0));

    let e = c.request("GET", "/forbidden/x", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-route-not-allowed"));
    assert_eq!(c.stats().retries, 1);
    // refused on the client side: never sent
    let before = c.stats().requests;
    assert!(c.request("GET", "/a", &[h("host", "evil")], None).is_err());
    assert!(c
        .request("GET", "/a", &[h("x-veil-relay", "x")], None)
        .is_err());
    assert!(c.request("GET", "a", &[], None).is_err());
    // browser-controlled names (the filter would refuse them: relay-decode-failed)
    for n in ["origin", "Referer", "sec-fetch-site", "sec-ch-ua"] {
        let e = c.request("GET", "/a", &[h(n, "x")], None).unwrap_err();
        assert!(matches!(e, veil_relay::ClientError::Usage(_)), "{n}: {e}");
    }
    assert_eq!(c.stats().requests, before);
}

#[test]
fn relay_unavailable_is_waited_out_once_then_given_up() {
    let (url, state) = start();
    let wait = std::time::Duration::from_millis(60);
    let c = Client::new(
        &url,
        Options {
            pairs: 1,
            unavailable_retry_after: Some(wait),
            ..Options::default()
        },
    )
    .unwrap();
    c.request("GET", "/a", &[], None).unwrap();
    // down for one request: answered after one pause, on the same pair
    state.lock().unwrap().fake_unavailable = 1;
    let t = std::time::Instant::now();
    let r = c.request("GET", "/a", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= wait, "the retry waited");
    assert_eq!((c.stats().retries, c.stats().repairs), (1, 0));
    // down for longer: one retry, then the error reaches the caller
    state.lock().unwrap().fake_unavailable = 2;
    let e = c.request("GET", "/a", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-unavailable"));
    assert_eq!(c.stats().retries, 2);
    // no retry configured: the error at once
    let c = Client::new(
        &url,
        Options {
            pairs: 1,
            unavailable_retry_after: None,
            ..Options::default()
        },
    )
    .unwrap();
    c.request("GET", "/a", &[], None).unwrap();
    state.lock().unwrap().fake_unavailable = 1;
    let e = c.request("GET", "/a", &[], None).unwrap_err();
    assert_eq!(e.relay_code(), Some("relay-unavailable"));
    assert_eq!(c.stats().retries, 0);
    assert_eq!(state.lock().unwrap().fake_unavailable, 0);
}

#[test]
fn concurrent_requests_share_the_pool_without_replays() {
    let (url, state) = start();
    let c = Arc::new(
        Client::new(
            &url,
            Options {
                pairs: 2,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let body = format!("{t}-{i}");
                    let r = c.request("POST", "/a", &[], Some(body.as_bytes())).unwrap();
                    assert_eq!(
                        URL_SAFE_NO_PAD
                            .decode(echo(&r)["body"].as_str().unwrap())
                            .unwrap(),
                        body.as_bytes()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(state.lock().unwrap().used.len(), 40);
    assert_eq!(c.stats().retries, 0);
}

#[test]
fn unencoded_answers_are_protocol_errors() {
    let (url, _state) = start();
    let c = Client::new(&url.replace("/veil", "/nothing"), Options::default()).unwrap();
    assert!(matches!(
        c.request("GET", "/a", &[], None),
        Err(veil_relay::ClientError::Protocol(_))
    ));
    assert!(Client::new("ftp://x/veil", Options::default()).is_err());
    assert!(Client::new("http://127.0.0.1:1", Options::default()).is_err());
}

#[test]
fn concurrent_requests_survive_a_secret_rotation() {
    let (url, state) = start();
    let c = Arc::new(
        Client::new(
            &url,
            Options {
                pairs: 3,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    c.connect().unwrap();
    let first_id = c.client_id().unwrap();
    let rotate = {
        let state = state.clone();
        std::thread::spawn(move || {
            state.lock().unwrap().secret = Some(ClientIdSecret::new(&[3; 32]).unwrap());
        })
    };
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    c.request("GET", "/a", &[], None).unwrap();
                }
            })
        })
        .collect();
    rotate.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    // after the rotation every request still succeeds, on a new id
    c.request("GET", "/a", &[], None).unwrap();
    assert_ne!(c.client_id().unwrap(), first_id);
}
