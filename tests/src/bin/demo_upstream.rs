//! `veil-demo-upstream`: plays the vendor (e.g. an API-analytics collector) in the demo, the
//! end-to-end tests and the throughput benchmarks, and records exactly what it received so anyone
//! can see what left the company.
//!
//! * every request other than `/_recorded` and `/healthz` is recorded and answered
//!   `200 {"status":"ok"}`;
//! * `/app/echo` and `/app/echo/*` answer with a JSON description of the request (also recorded);
//! * `POST /v1/search/~/search/events` answers from the recorded events (a double of the vendor's
//!   search API: exact term/terms/match filters, sort, terms aggregations);
//! * `POST /v1/reflect/stash` keeps its body; a bodyless `/v1/reflect` answers with it.
//! * `/v1/reflect` and `/app/reflect` answer with the request's own body (content type,
//!   encoding, status and extra headers chosen by request headers), so tests can have Veil
//!   unseal (or relay) any response they craft;
//! * `GET /v1/static` answers with the file given by `--static-body` (JSON; for the load
//!   benchmark's `unseal` scenario), `404` without it;
//! * `GET /_recorded` lists the records (oldest first), `DELETE /_recorded` clears them;
//! * `GET /healthz` answers `200 {"status":"ok"}`.
//!
//! See `docs/demo-upstream.md` for usage and the record format.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::Router;
use base64::Engine as _;
use clap::Parser;
use serde::Serialize;

/// Largest request body accepted (larger ones get `413`).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How long in-flight requests may take to finish after SIGTERM/SIGINT before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const OK_BODY: &str = r#"{"status":"ok"}"#;

#[derive(Debug, Parser)]
#[command(
    name = "veil-demo-upstream",
    version,
    about = "Demo/benchmark upstream that records every request it receives"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "VEIL_UPSTREAM_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,

    /// Tokio worker threads.
    #[arg(long, env = "VEIL_UPSTREAM_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,

    /// Keep at most this many records; the oldest are dropped first.
    #[arg(long, env = "VEIL_UPSTREAM_MAX_RECORDED", default_value_t = 10_000)]
    max_recorded: usize,

    /// Do not record requests (for throughput benchmarks).
    #[arg(long)]
    no_record: bool,

    /// Print one line per request (method, path, status, body size; never the body).
    #[arg(long)]
    log: bool,

    /// Answer `GET /v1/static` with this file (read once at start, `application/json`).
    #[arg(long)]
    static_body: Option<std::path::PathBuf>,
}

/// One received request, kept raw; encoded to JSON only when `/_recorded` is read.
#[derive(Clone)]
struct Record {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// The JSON shape of a record (see docs/demo-upstream.md).
#[derive(Serialize)]
struct RecordJson<'a> {
    method: &'a str,
    path: &'a str,
    headers: serde_json::Map<String, serde_json::Value>,
    body_base64: String,
}

impl Record {
    fn to_json(&self) -> RecordJson<'_> {
        RecordJson {
            method: self.method.as_str(),
            path: &self.path,
            headers: headers_json(&self.headers),
            body_base64: b64(&self.body),
        }
    }
}

/// The JSON shape of an `/app/echo` answer.
#[derive(Serialize)]
struct EchoJson<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: serde_json::Map<String, serde_json::Value>,
    body_base64: String,
}

struct AppState {
    /// `None` when recording is off.
    recorded: Option<Mutex<VecDeque<Record>>>,
    max_recorded: usize,
    log: bool,
    /// `x-demo-barrier` groups waiting to be released together.
    barriers: Mutex<HashMap<String, Arc<tokio::sync::Barrier>>>,
    /// What `GET /v1/static` answers (`--static-body`).
    static_body: Option<Bytes>,
    /// The body a bodyless `/v1/reflect` answers with (`POST /v1/reflect/stash`): the
    /// unseal route refuses request bodies to endpoints it cannot check, so tests stash the
    /// answer directly and fetch it through Envoy without a body.
    stash: Mutex<Option<Bytes>>,
}

impl AppState {
    fn record(&self, rec: Record) {
        let Some(list) = &self.recorded else { return };
        if self.max_recorded == 0 {
            return;
        }
        let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
        while list.len() >= self.max_recorded {
            list.pop_front();
        }
        list.push_back(rec);
    }
}

impl AppState {
    /// Waits until `n` requests carrying the same barrier value are waiting (at most
    /// [`BARRIER_TIMEOUT`]), so their answers leave together.
    async fn barrier(&self, key: &str, n: usize) {
        let b = {
            let mut map = self.barriers.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                map.entry(key.to_owned())
                    .or_insert_with(|| Arc::new(tokio::sync::Barrier::new(n))),
            )
        };
        let released = tokio::time::timeout(BARRIER_TIMEOUT, b.wait()).await;
        if released.map_or(true, |r| r.is_leader()) {
            let mut map = self.barriers.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(key).is_some_and(|cur| Arc::ptr_eq(cur, &b)) {
                map.remove(key);
            }
        }
    }

    /// The events recorded from `POST /v1/events` and `/v1/events/batch`, oldest first.
    fn recorded_events(&self) -> Vec<serde_json::Value> {
        let Some(list) = &self.recorded else {
            return Vec::new();
        };
        let bodies: Vec<(Bytes, bool)> = list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.method == Method::POST)
            .filter(|r| {
                let path = r.path.split('?').next().unwrap_or_default();
                path == "/v1/events" || path == "/v1/events/batch"
            })
            .map(|r| {
                let gzip = r
                    .headers
                    .get("content-encoding")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
                (r.body.clone(), gzip)
            })
            .collect();
        let mut events = Vec::new();
        for (body, gzip) in bodies {
            let bytes = if gzip {
                let mut out = Vec::new();
                let mut d = flate2::read::GzDecoder::new(&body[..]);
                if std::io::Read::read_to_end(&mut d, &mut out).is_err() {
                    continue;
                }
                out
            } else {
                body.to_vec()
            };
            match serde_json::from_slice(&bytes) {
                Ok(serde_json::Value::Array(items)) => events.extend(items),
                Ok(v @ serde_json::Value::Object(_)) => events.push(v),
                _ => {}
            }
        }
        events
    }
}

type Shared = Arc<AppState>;

/// Longest time a request waits at an `x-demo-barrier`.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);

/// The vendor's events search (Moesif management API), as the upstream sees it.
const SEARCH_EVENTS_PATH: &str = "/v1/search/~/search/events";

/// Where the `--static-body` file is served.
const STATIC_PATH: &str = "/v1/static";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Header names are already lowercase in `HeaderMap`; repeated headers are joined with ", " in
/// the order received. Values that are not UTF-8 are converted lossily.
fn headers_json(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_owned(), serde_json::Value::String(joined));
    }
    out
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned())
}

fn is_echo_path(path: &str) -> bool {
    path == "/app/echo" || path.starts_with("/app/echo/")
}

fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn ok() -> Response {
    json_response(StatusCode::OK, OK_BODY)
}

async fn healthz() -> Response {
    ok()
}

async fn list_recorded(State(state): State<Shared>) -> Response {
    // Clone under the lock (cheap: `Bytes` is reference-counted), encode outside it.
    let records: Vec<Record> = match &state.recorded {
        Some(list) => list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let json: Vec<RecordJson<'_>> = records.iter().map(Record::to_json).collect();
    match serde_json::to_vec(&json) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn clear_recorded(State(state): State<Shared>) -> StatusCode {
    if let Some(list) = &state.recorded {
        list.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    StatusCode::NO_CONTENT
}

/// Everything else: record, then answer `{"status":"ok"}` (or the echo under `/app/echo`).
async fn catch_all(State(state): State<Shared>, mut req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    // Take the headers out instead of cloning them; the body extractor does not need them and
    // keeps the request's extensions, so `DefaultBodyLimit` still applies.
    let headers = std::mem::take(req.headers_mut());
    let body = match Bytes::from_request(req, &()).await {
        Ok(b) => b,
        Err(rejection) => {
            let resp = rejection.into_response();
            if state.log {
                log_line(&method, &uri, resp.status(), None);
            }
            return resp;
        }
    };

    // `x-demo-barrier: <n>`: answer only once n requests with this value are waiting.
    let barrier = headers
        .get("x-demo-barrier")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Some((v.to_owned(), v.trim().parse::<usize>().ok()?)))
        .filter(|(_, n)| (1..=64).contains(n));
    if let Some((key, n)) = barrier {
        state.barrier(&key, n).await;
    }

    let resp = if method == Method::POST && uri.path() == SEARCH_EVENTS_PATH {
        search_double::answer(&state.recorded_events(), &body, &headers)
    } else if method == Method::GET && uri.path() == STATIC_PATH {
        match &state.static_body {
            Some(b) => json_response(StatusCode::OK, b.clone()),
            None => json_response(StatusCode::NOT_FOUND, r#"{"error":"no --static-body"}"#),
        }
    } else if method == Method::POST && uri.path() == "/v1/reflect/stash" {
        *state.stash.lock().unwrap_or_else(|e| e.into_inner()) = Some(body.clone());
        json_response(StatusCode::OK, r#"{"stashed":true}"#)
    } else if uri.path() == "/v1/reflect" && body.is_empty() {
        let stashed = state
            .stash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        reflect(&headers, &stashed)
    } else if uri.path() == "/v1/reflect" || uri.path() == "/app/reflect" {
        reflect(&headers, &body)
    } else if is_echo_path(uri.path()) {
        let echo = EchoJson {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            headers: headers_json(&headers),
            body_base64: b64(&body),
        };
        match serde_json::to_vec(&echo) {
            Ok(b) => json_response(StatusCode::OK, b),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    } else {
        ok()
    };

    if state.log {
        log_line(&method, &uri, resp.status(), Some(body.len()));
    }
    state.record(Record {
        method,
        path: path_and_query(&uri),
        headers,
        body,
    });
    resp
}

/// `/v1/reflect` and `/app/reflect`: the request body back, with `content-type` from
/// `x-reflect-content-type` (default `application/json`), `content-encoding` from
/// `x-reflect-content-encoding`, the status from `x-reflect-status` (default 200) and each
/// `x-reflect-header: name: value` added to the answer (in order), so tests can craft any
/// response (the relay tests check that the client gets exactly this answer).
fn reflect(headers: &HeaderMap, body: &Bytes) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body.clone()));
    let ct = headers
        .get("x-reflect-content-type")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CONTENT_TYPE, ct);
    if let Some(enc) = headers.get("x-reflect-content-encoding") {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_ENCODING, enc.clone());
    }
    if let Some(status) = headers
        .get("x-reflect-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
    {
        *resp.status_mut() = status;
    }
    for h in headers.get_all("x-reflect-header") {
        let Some((name, value)) = h.to_str().ok().and_then(|h| h.split_once(':')) else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// A double of the vendor's events search: only what the tests use. See
/// docs/demo-upstream.md.
mod search_double {
    use std::cmp::Ordering;

    use axum::body::Bytes;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::Response;
    use serde_json::{json, Map, Value};

    /// The event value at `path` equals one of `values`.
    struct Constraint {
        path: Vec<String>,
        values: Vec<Value>,
    }

    /// `a.b.c.raw` → `["a","b","c"]` (`.raw` names the keyword field of the same value).
    fn field_path(field: &str) -> Vec<String> {
        field
            .strip_suffix(".raw")
            .unwrap_or(field)
            .split('.')
            .map(str::to_owned)
            .collect()
    }

    /// Every term/terms/match outside aggregations, wherever it sits (all must hold).
    fn constraints(q: &Value, out: &mut Vec<Constraint>) {
        match q {
            Value::Array(items) => items.iter().for_each(|v| constraints(v, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("aggs" | "aggregations", _) => {}
                        ("term" | "match", Value::Object(o)) => {
                            for (field, val) in o {
                                let inner = match val {
                                    Value::Object(x) => x
                                        .get("value")
                                        .or_else(|| x.get("query"))
                                        .cloned()
                                        .unwrap_or(Value::Null),
                                    other => other.clone(),
                                };
                                out.push(Constraint {
                                    path: field_path(field),
                                    values: vec![inner],
                                });
                            }
                        }
                        ("terms", Value::Object(o))
                            if !o.get("field").is_some_and(Value::is_string) =>
                        {
                            for (field, val) in o {
                                if let Value::Array(vals) = val {
                                    out.push(Constraint {
                                        path: field_path(field),
                                        values: vals.clone(),
                                    });
                                }
                            }
                        }
                        _ => constraints(v, out),
                    }
                }
            }
            _ => {}
        }
    }

    /// The values at a dotted path; arrays are flattened at every level (as Elasticsearch
    /// indexes them).
    fn values_at<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
        match (v, path.split_first()) {
            (Value::Array(items), _) => items.iter().for_each(|i| values_at(i, path, out)),
            (leaf, None) => out.push(leaf),
            (Value::Object(map), Some((first, rest))) => {
                if let Some(child) = map.get(first) {
                    values_at(child, rest, out);
                }
            }
            _ => {}
        }
    }

    fn first_at<'a>(v: &'a Value, path: &[String]) -> &'a Value {
        let mut found = Vec::new();
        values_at(v, path, &mut found);
        found.first().copied().unwrap_or(&Value::Null)
    }

    fn cmp(a: &Value, b: &Value) -> Ordering {
        match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => a.to_string().cmp(&b.to_string()),
        }
    }

    /// `sort`: `["field", {"field": {"order": "desc"}}, {"field": "asc"}]`.
    fn sort_keys(body: &Value) -> Vec<(Vec<String>, bool)> {
        let entries = match &body["sort"] {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        entries
            .iter()
            .filter_map(|e| match e {
                Value::String(f) => Some((field_path(f), false)),
                Value::Object(o) => o.iter().next().map(|(f, spec)| {
                    let order = spec.get("order").unwrap_or(spec);
                    (field_path(f), order.as_str() == Some("desc"))
                }),
                _ => None,
            })
            .collect()
    }

    /// `aggs.<name>.terms.field`: buckets of equal values, most frequent first.
    fn aggregations(body: &Value, hits: &[&Value]) -> Option<Value> {
        let aggs = body
            .get("aggs")
            .or_else(|| body.get("aggregations"))?
            .as_object()?;
        let mut out = Map::new();
        for (name, def) in aggs {
            let Some(field) = def["terms"]["field"].as_str() else {
                continue;
            };
            let size = def["terms"]["size"].as_u64().unwrap_or(10);
            let path = field_path(field);
            let mut buckets: Vec<(Value, u64)> = Vec::new();
            for h in hits {
                let mut vals = Vec::new();
                values_at(h, &path, &mut vals);
                for v in vals {
                    match buckets.iter_mut().find(|(k, _)| k == v) {
                        Some((_, n)) => *n += 1,
                        None => buckets.push((v.clone(), 1)),
                    }
                }
            }
            buckets.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| cmp(&a.0, &b.0)));
            let buckets: Vec<Value> = buckets
                .into_iter()
                .take(usize::try_from(size).unwrap_or(10))
                .map(|(key, n)| json!({"key": key, "doc_count": n}))
                .collect();
            out.insert(name.clone(), json!({ "buckets": buckets }));
        }
        Some(Value::Object(out))
    }

    pub fn answer(events: &[Value], body: &Bytes, headers: &HeaderMap) -> Response {
        let query: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return super::json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("search body is not JSON: {e}")}).to_string(),
                    )
                }
            }
        };
        let mut cons = Vec::new();
        constraints(&query, &mut cons);
        let mut hits: Vec<(usize, &Value)> = events
            .iter()
            .enumerate()
            .filter(|(_, ev)| {
                cons.iter().all(|c| {
                    let mut vals = Vec::new();
                    values_at(ev, &c.path, &mut vals);
                    vals.iter().any(|v| c.values.contains(v))
                })
            })
            .collect();
        let keys = sort_keys(&query);
        if let Some((path, desc)) = keys.first() {
            hits.sort_by(|a, b| {
                let o = cmp(first_at(a.1, path), first_at(b.1, path));
                if *desc {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let total = hits.len();
        let from = query["from"].as_u64().unwrap_or(0);
        let size = query["size"].as_u64().unwrap_or(10);
        let matched: Vec<&Value> = hits.iter().map(|(_, e)| *e).collect();
        let page: Vec<Value> = hits
            .iter()
            .skip(usize::try_from(from).unwrap_or(0))
            .take(usize::try_from(size).unwrap_or(10))
            .map(|(i, ev)| {
                let id = ev
                    .get("transaction_id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("evt_{i}"), str::to_owned);
                let mut hit = json!({"_id": id, "_source": ev});
                if !keys.is_empty() {
                    hit["sort"] = keys.iter().map(|(p, _)| first_at(ev, p).clone()).collect();
                }
                hit
            })
            .collect();
        let mut out =
            json!({"took": 1, "timed_out": false, "hits": {"total": total, "hits": page}});
        if let Some(aggs) = aggregations(&query, &matched) {
            out["aggregations"] = aggs;
        }
        let text = out.to_string();
        let gzip = headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("gzip")));
        if gzip {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            if enc.write_all(text.as_bytes()).is_ok() {
                if let Ok(z) = enc.finish() {
                    let mut resp = super::json_response(StatusCode::OK, z);
                    resp.headers_mut().insert(
                        axum::http::header::CONTENT_ENCODING,
                        HeaderValue::from_static("gzip"),
                    );
                    return resp;
                }
            }
        }
        super::json_response(StatusCode::OK, text)
    }
}

fn log_line(method: &Method, uri: &Uri, status: StatusCode, body_len: Option<usize>) {
    let size = body_len.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{method} {} -> {} ({size} body bytes)",
        path_and_query(uri),
        status.as_u16()
    );
    let _ = out.flush();
}

fn app(state: Shared) -> Router {
    Router::new()
        .route("/_recorded", get(list_recorded).delete(clear_recorded))
        .route("/healthz", get(healthz))
        .fallback(catch_all)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let static_body = match &args.static_body {
        Some(p) => Some(Bytes::from(std::fs::read(p).map_err(|e| {
            std::io::Error::new(e.kind(), format!("--static-body {}: {e}", p.display()))
        })?)),
        None => None,
    };
    let state = Arc::new(AppState {
        static_body,
        recorded: (!args.no_record).then(|| Mutex::new(VecDeque::new())),
        max_recorded: args.max_recorded,
        log: args.log,
        barriers: Mutex::new(HashMap::new()),
        stash: Mutex::new(None),
    });

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "veil-demo-upstream listening on {addr}")?;
        out.flush()?;
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    shutdown_signal().await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join_err)) => Err(std::io::Error::other(join_err)),
        // Connections still busy after the grace period: exit anyway.
        Err(_) => Ok(()),
    }
}

fn main() {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("veil-demo-upstream: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("veil-demo-upstream: {e}");
        std::process::exit(1);
    }
}
