//! The roles' test fixture: a worker configured on a fake host, streams on it, and a
//! keyservice played by hand (its answers built here).
#![allow(dead_code)]

use std::cell::Cell;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use veil_core::crypto::keys::{Epoch, Kid, RotationMonths};
use veil_roles::host::{Action, BodyKind, HeaderKind, StreamId};
use veil_roles::testing::{answer, FakeEnv, FakeHost, Reply, Sent};
use veil_roles::{Stream, Worker};

pub const TOKEN: &str = "test-keyservice-token-0123456789abcdef";
pub const CLIENT_ID_SECRET: &str = "test-relay-client-id-secret-0123456789abcdef";

/// The filter configuration of the tests: a moesif collector, a `json` route, an unseal
/// route whose search follows the collector; `extra` is merged in at the top level.
pub fn config(extra: Value) -> Value {
    let mut c = json!({
        "keyservice": {"token": TOKEN, "timeout_ms": 1000, "refresh_secs": 60},
        "max_body_bytes": 4096,
        "routes": [
            {"prefix": "/collector", "seal": {"profile": "moesif"}},
            {"prefix": "/patients", "seal": {"profile": "json",
                "options": {"exclude": ["$.id"]}}},
            {"prefix": "/api", "unseal": {"on_unseal_error": "keep",
                "search": {"seal_route": "/collector"}}},
            {"prefix": "/strict", "unseal": {"on_unseal_error": "reject"}}
        ]
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// The relay section of a configuration.
pub fn relay(mode: &str) -> Value {
    json!({"relay": {
        "prefix": "/veil",
        "client_id_secret": CLIENT_ID_SECRET,
        "routes": ["/app/*"],
        "replay": {"mode": mode, "window": 8},
        "max_pairs": 2,
        "pair_cache_slots": 8
    }})
}

/// A data key for `kid`: fixed per kid, so a test can seal under any kid and answer it.
pub fn dek(kid: &str) -> [u8; 32] {
    let mut d = [0x5au8; 32];
    for (i, b) in kid.bytes().enumerate() {
        d[i % 32] ^= b.wrapping_add(i as u8);
    }
    d
}

/// A key as the keyservice answers it: kid, key and the key's fingerprint.
pub fn key_entry(kid: &str) -> Value {
    let fp = veil_core::crypto::keys::Dek::from_bytes(dek(kid)).fingerprint();
    json!({"kid": kid, "dek": URL_SAFE_NO_PAD.encode(dek(kid)), "fingerprint": fp.to_string()})
}

/// `/v1/data-keys/current` holding `kids` under root `root`.
pub fn current_answer(root: u32, kids: &[String]) -> Vec<u8> {
    let keys: Vec<Value> = kids.iter().map(|k| key_entry(k)).collect();
    serde_json::to_vec(&json!({"current_root": root, "keys": keys})).unwrap()
}

pub fn rotation() -> RotationMonths {
    RotationMonths::new(12).unwrap()
}

pub fn epoch_at(ms: i64) -> Epoch {
    Epoch::containing(ms / 1000, rotation())
}

pub fn kid(root: u32, epoch: Epoch) -> String {
    Kid::new(root, epoch).to_string()
}

pub struct Fix {
    pub env: Rc<FakeEnv>,
    pub worker: Rc<Worker>,
    next: Cell<u64>,
}

impl Fix {
    pub fn new(cfg: Value) -> Fix {
        Fix::on(FakeEnv::new(), cfg)
    }

    /// A worker on `env` (a sibling env is another worker of the same Envoy).
    pub fn on(env: Rc<FakeEnv>, cfg: Value) -> Fix {
        let bytes = serde_json::to_vec(&cfg).unwrap();
        let worker = Worker::configure(&*env, &bytes, &|_| None).unwrap();
        Fix {
            env,
            worker: Rc::new(worker),
            next: Cell::new(1),
        }
    }

    /// The configuration of the tests, with the current keys installed.
    pub fn ready() -> Fix {
        let f = Fix::new(config(json!({})));
        f.install_current(1);
        f
    }

    pub fn current_kid(&self, root: u32) -> String {
        kid(root, epoch_at(self.env.now_ms()))
    }

    /// One tick, and the keyservice answers its current-keys fetch with this epoch's and
    /// the next one's key under `root`.
    pub fn install_current(&self, root: u32) {
        self.worker.tick(&*self.env);
        let sent = self.env.take_sent();
        let fetch = sent
            .iter()
            .find(|s| s.line() == "GET /v1/data-keys/current")
            .expect("the tick fetches the current keys");
        let e = epoch_at(self.env.now_ms());
        let body = current_answer(root, &[kid(root, e), kid(root, e.next(rotation()))]);
        self.worker
            .on_root_callout(&*self.env, fetch.id, &answer(200, &body));
    }

    /// One tick, and the keyservice answers its current-keys fetch with `body`.
    pub fn install_answer(&self, body: &[u8]) {
        self.worker.tick(&*self.env);
        let sent = self.env.take_sent();
        let fetch = sent
            .iter()
            .find(|s| s.line() == "GET /v1/data-keys/current")
            .expect("the tick fetches the current keys");
        self.worker
            .on_root_callout(&*self.env, fetch.id, &answer(200, body));
    }

    pub fn stream(&self) -> (FakeHost, Stream) {
        let id = self.next.get();
        self.next.set(id + 1);
        (
            FakeHost::on(&self.env),
            Stream::new(Rc::clone(&self.worker), StreamId(id)),
        )
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.env.take_sent()
    }

    pub fn counter(&self, name: &str) -> i64 {
        self.env.counter(name)
    }
}

/// Request headers for `method path` (plus `extra`).
pub fn request(h: &FakeHost, method: &str, path: &str, extra: &[(&str, &str)]) {
    let mut pairs = vec![
        (":method", method),
        (":path", path),
        (":authority", "veil.test"),
    ];
    pairs.extend_from_slice(extra);
    h.set_headers(HeaderKind::RequestHeaders, &pairs);
}

/// Sends a request with `body` through the stream: headers, then the whole body at once.
/// Returns the header and body actions.
pub fn send(
    h: &FakeHost,
    s: &mut Stream,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (Action, Action) {
    request(h, method, path, extra);
    let a = s.on_request_headers(h, body.is_empty());
    if body.is_empty() {
        return (a, Action::Continue);
    }
    *h.request_body.borrow_mut() = body.to_vec();
    let b = s.on_request_body(h, body.len(), true);
    (a, b)
}

/// Sends a JSON response through the stream (headers then whole body).
pub fn respond(
    h: &FakeHost,
    s: &mut Stream,
    status: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (Action, Action) {
    let mut pairs = vec![(":status", status)];
    pairs.extend_from_slice(extra);
    h.set_headers(HeaderKind::ResponseHeaders, &pairs);
    let a = s.on_response_headers(h, body.is_empty());
    if body.is_empty() {
        return (a, Action::Continue);
    }
    *h.response_body.borrow_mut() = body.to_vec();
    let b = s.on_response_body(h, body.len(), true);
    (a, b)
}

pub fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

pub fn body(h: &FakeHost, kind: BodyKind) -> Vec<u8> {
    match kind {
        BodyKind::Request => h.request_body.borrow().clone(),
        BodyKind::Response => h.response_body.borrow().clone(),
    }
}

/// The problem code of the stream's local reply (panics if none).
pub fn refused(h: &FakeHost) -> (u16, String) {
    let r: Reply = h.reply().expect("a local reply");
    (r.status, r.code().unwrap_or_default())
}

/// Every `veil:` sealed string in a JSON document, with its kid.
pub fn sealed_values(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if veil_core::crypto::value::looks_sealed(s.as_bytes()) => {
            out.push(s.clone())
        }
        Value::Array(a) => a.iter().for_each(|x| sealed_values(x, out)),
        Value::Object(o) => o.values().for_each(|x| sealed_values(x, out)),
        _ => {}
    }
}

/// `doc` sealed by `f`'s `/patients` route (everything but `$.id`).
pub fn seal_with(f: &Fix, doc: &Value) -> Vec<u8> {
    let (h, mut s) = f.stream();
    let (_, b) = send(
        &h,
        &mut s,
        "POST",
        "/patients",
        &[],
        &serde_json::to_vec(doc).unwrap(),
    );
    assert_eq!(b, Action::Continue, "{:?}", h.reply());
    body(&h, BodyKind::Request)
}

/// A worker whose clock is `days` behind `START_MS`, with that time's keys (root `root`).
pub fn sealer_days_ago(days: i64, root: u32) -> Fix {
    let f = Fix::new(config(json!({})));
    f.env.advance_ms(-days * 86_400_000);
    f.install_current(root);
    f
}
