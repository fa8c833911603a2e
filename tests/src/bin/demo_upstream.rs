//! `veil-demo-upstream`: plays the vendor (e.g. an API-analytics collector) in the demo, the
//! end-to-end tests and the throughput benchmarks, and records exactly what it received so anyone
//! can see what left the company.
//!
//! * every request other than `/_recorded` and `/healthz` is recorded and answered
//!   `200 {"status":"ok"}`;
//! * `/app/echo` and `/app/echo/*` answer with a JSON description of the request (also recorded);
//! * `GET /_recorded` lists the records (oldest first), `DELETE /_recorded` clears them;
//! * `GET /healthz` answers `200 {"status":"ok"}`.
//!
//! See `docs/demo-upstream.md` for usage and the record format.

use std::collections::VecDeque;
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

type Shared = Arc<AppState>;

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

    let resp = if is_echo_path(uri.path()) {
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
    let state = Arc::new(AppState {
        recorded: (!args.no_record).then(|| Mutex::new(VecDeque::new())),
        max_recorded: args.max_recorded,
        log: args.log,
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
