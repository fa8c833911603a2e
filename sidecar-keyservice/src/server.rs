//! The HTTP API the filter calls over its loopback cluster.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /v1/data-keys/current` | token | current and next epoch's data keys under the current root |
//! | `GET /v1/data-keys/{kid}` | token | one data key |
//! | `GET /healthz` | none | `{"status":"ok"}` while the process runs |
//! | `GET /readyz` | none | 200 while roots are loaded and the server is not draining, else 503 |
//! | `GET /metrics` | none | Prometheus text |
//! | `/v1/relay/*` | token | the relay's pairing and sessions ([`crate::relay::api`]) |
//!
//! "token": `Authorization: Veil-HMAC-SHA256 …` (a per-request signature under the token,
//! what the filter sends, [`veil_core::keyservice_auth`]) or `Authorization: Bearer <token>`
//! (direct clients: the CLI, curl, tests).
//!
//! Errors are RFC 9457 `application/problem+json`. Request logs carry method, path, status
//! and latency only: never headers, query strings, bodies or keys.

use std::collections::{HashSet, VecDeque};
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use veil_core::keys::{Dek, Epoch, Kid, RotationMonths};
use veil_core::keyservice_auth::{self, AuthError};
use zeroize::Zeroizing;

use crate::config::Token;
use crate::keyring::{now_unix, Keyring, RootState, Roots};
use crate::provider::KeyProvider;

/// Log target of the per-request access log.
pub const ACCESS_TARGET: &str = "veil_keyservice::access";

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub data_key_current: AtomicU64,
    pub data_key_kid: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Signed requests refused because their nonce was seen already.
    pub auth_replays: AtomicU64,
    /// Signed requests refused because their timestamp is too far from the clock.
    pub auth_skew_failures: AtomicU64,
    /// Signed requests answered 503 because the replay cache was full.
    pub auth_replay_cache_full: AtomicU64,
    pub ready: AtomicBool,
}

/// Most seconds a signed request's `t` may be from the keyservice's clock. The filter and
/// the keyservice run on one host (one clock), so this only covers the callout's latency.
pub const MAX_SKEW_SECS: u64 = 5;
/// Most nonces remembered (those of the last `2 × MAX_SKEW_SECS` seconds): ~10 MiB at most,
/// and over 26,000 signed requests per second before it fills.
pub const REPLAY_CACHE_ENTRIES: usize = 262_144;

/// The nonces of signed requests still inside the skew window: a captured header is
/// refused the second time. Bounded; when full, requests are refused (503), never let in
/// unchecked.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashSet<[u8; 16]>,
    /// (the last second the nonce's request could verify, nonce), in arrival order.
    order: VecDeque<(i64, [u8; 16])>,
    capacity: usize,
    /// Whether the "full" warning was logged (once per process).
    warned_full: bool,
}

/// What the replay cache says of a nonce.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    First,
    Replay,
    Full,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
            warned_full: false,
        }
    }

    /// Records `nonce` of a request verified at `now`. A verified `t` is within
    /// `now ± MAX_SKEW_SECS`, so the same header verifies until `now + 2 × MAX_SKEW_SECS` at
    /// the latest: the nonce is kept that long.
    pub fn check(&mut self, nonce: [u8; 16], now: i64) -> Seen {
        while let Some(&(until, n)) = self.order.front() {
            if until >= now {
                break;
            }
            self.seen.remove(&n);
            self.order.pop_front();
        }
        if self.seen.contains(&nonce) {
            return Seen::Replay;
        }
        if self.seen.len() >= self.capacity {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    capacity = self.capacity,
                    "replay cache full: signed requests are refused (503) until nonces expire"
                );
            }
            return Seen::Full;
        }
        self.seen.insert(nonce);
        let until = now.saturating_add(i64::try_from(2 * MAX_SKEW_SECS).unwrap_or(i64::MAX));
        self.order.push_back((until, nonce));
        Seen::First
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Where the keyring and its KEK are, so the server can pick up roots added after it started
/// (`keyring rotate-root` on another replica) when a filter asks for one of their keys.
pub struct Reloader {
    pub keyring: std::path::PathBuf,
    pub provider: Arc<dyn KeyProvider>,
    /// When the keyring was last re-read: at most one reload per [`RELOAD_MIN_INTERVAL`].
    last: tokio::sync::Mutex<Option<Instant>>,
}

/// Unknown root versions trigger at most one keyring reload per this interval.
pub const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);

impl Reloader {
    pub fn new(keyring: std::path::PathBuf, provider: Arc<dyn KeyProvider>) -> Reloader {
        Reloader {
            keyring,
            provider,
            last: tokio::sync::Mutex::new(None),
        }
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// The unwrapped roots; replaced whole when the keyring is (re)loaded.
    roots: RwLock<Arc<Roots>>,
    /// Set once the provider is open (not in tests that build the state by hand).
    pub reloader: std::sync::OnceLock<Reloader>,
    pub rotation: RotationMonths,
    pub token: Token,
    /// Nonces of signed requests seen within the skew window.
    pub replay: Mutex<ReplayCache>,
    pub metrics: Metrics,
    /// Seconds since the Unix epoch; the system clock except in tests.
    pub clock: fn() -> i64,
    /// The relay's store and counters (`/v1/relay/*`); set by `serve`.
    pub relay: Option<Arc<crate::relay::Relay>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("roots", &self.roots)
            .field("rotation", &self.rotation)
            .field("token", &self.token)
            .field("metrics", &self.metrics)
            .field("relay", &self.relay)
            .finish()
    }
}

impl AppState {
    pub fn new(roots: Roots, rotation: RotationMonths, token: Token) -> AppState {
        AppState {
            roots: RwLock::new(Arc::new(roots)),
            reloader: std::sync::OnceLock::new(),
            rotation,
            token,
            replay: Mutex::new(ReplayCache::new(REPLAY_CACHE_ENTRIES)),
            metrics: Metrics::default(),
            clock: now_unix,
            relay: None,
        }
    }

    /// The roots held now.
    pub fn roots(&self) -> Arc<Roots> {
        match self.roots.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_roots(&self, roots: Roots) {
        let roots = Arc::new(roots);
        match self.roots.write() {
            Ok(mut r) => *r = roots,
            Err(p) => *p.into_inner() = roots,
        }
    }

    /// Re-reads the keyring and unwraps its active roots if `version` is not held yet and
    /// the last reload is old enough. Roots already held are kept if the reload fails.
    async fn reload_for(&self, version: u32) -> bool {
        let Some(r) = self.reloader.get() else {
            return false;
        };
        let mut last = r.last.lock().await;
        if self.roots().versions().contains(&version) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < RELOAD_MIN_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        let keyring = match Keyring::load(&r.keyring) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "keyring reload failed; keeping the roots held");
                return false;
            }
        };
        if !keyring
            .roots
            .iter()
            .any(|e| e.version == version && e.state == RootState::Active)
        {
            return false;
        }
        match Roots::unwrap_all(&keyring, r.provider.as_ref(), &r.keyring).await {
            Ok(roots) => {
                tracing::info!(
                    root_versions = ?roots.versions(),
                    current_root = roots.current(),
                    "keyring reloaded: a filter asked for root r{version}"
                );
                let found = roots.versions().contains(&version);
                self.set_roots(roots);
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, "keyring reload failed; keeping the roots held");
                false
            }
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.metrics.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.metrics.ready.load(Ordering::SeqCst)
    }
}

/// The application's routes and middleware.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/data-keys/current", get(current_keys))
        .route("/v1/data-keys/{kid}", get(key_by_kid))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::relay::api::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting, marks the service not ready and
/// drains for at most [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_wait = stop.clone();
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async move { stop_wait.notified().await })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = shutdown => {}
    }
    state.set_ready(false);
    tracing::info!("shutdown signal received; draining connections");
    stop.notify_one();
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                timeout_secs = DRAIN_TIMEOUT.as_secs(),
                "drain timeout; closing remaining connections"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT will stop the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

// ---- problems ----

/// An RFC 9457 problem response.
pub fn problem(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Problem<'a> {
        #[serde(rename = "type")]
        kind: String,
        title: &'a str,
        status: u16,
        detail: String,
    }
    let body = serde_json::to_vec(&Problem {
        kind: format!("urn:veil:problem:{code}"),
        title,
        status: status.as_u16(),
        detail: detail.into(),
    })
    .unwrap_or_default();
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such endpoint",
    )
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not answer this method",
    )
}

// ---- middleware ----

/// Every `/v1/*` request must carry the token: signed (`Veil-HMAC-SHA256`, the filter) or
/// as `Bearer <token>` (direct clients), compared in constant time.
async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(signed) = auth.filter(|v| keyservice_auth::is_signed(v)) {
        let signed = signed.to_string();
        return require_signature(state, signed, req, next).await;
    }
    let ok = auth
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim_start())
        })
        .map(|presented| bool::from(presented.as_bytes().ct_eq(state.token.as_bytes())))
        .unwrap_or(false);
    if ok {
        return next.run(req).await;
    }
    unauthorized(&state)
}

/// A signed request: its body is read (up to the API's body limit) for the MAC, the nonce
/// recorded, and the request handed on with the same body.
async fn require_signature(
    state: Arc<AppState>,
    signed: String,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::relay::api::MAX_BODY).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request too large",
            format!(
                "the body is over {} bytes (or could not be read)",
                crate::relay::api::MAX_BODY
            ),
        );
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let now = now_unix();
    let verified = keyservice_auth::verify(
        state.token.as_bytes(),
        &signed,
        parts.method.as_str(),
        path,
        &body,
        now,
        MAX_SKEW_SECS,
    );
    let nonce = match verified {
        Ok(n) => n,
        Err(e) => {
            if matches!(e, AuthError::Skew { .. }) {
                state
                    .metrics
                    .auth_skew_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(error = %e, "signed request refused");
            return unauthorized(&state);
        }
    };
    let seen = match state.replay.lock() {
        Ok(mut c) => c.check(nonce, now),
        Err(p) => p.into_inner().check(nonce, now),
    };
    match seen {
        Seen::First => next.run(Request::from_parts(parts, Body::from(body))).await,
        Seen::Replay => {
            state.metrics.auth_replays.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("signed request refused: nonce seen already");
            unauthorized(&state)
        }
        Seen::Full => {
            state
                .metrics
                .auth_replay_cache_full
                .fetch_add(1, Ordering::Relaxed);
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay-cache-full",
                "Replay cache full",
                "too many signed requests within the replay window; retry shortly",
            )
        }
    }
}

fn unauthorized(state: &AppState) -> Response {
    state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
    let mut resp = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        "a valid `Authorization: Bearer <token>` (or a signed `Veil-HMAC-SHA256`) header is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"veil-keyservice\""),
    );
    resp
}

/// One structured log line per request: method, path, status, latency. Nothing else.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let mut path = req.uri().path().to_string();
    if path.len() > 200 {
        let mut cut = 200;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        path.truncate(cut);
        path.push('…');
    }
    let resp = next.run(req).await;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: ACCESS_TARGET,
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_ms = (latency_ms * 1000.0).round() / 1000.0,
        "request"
    );
    resp
}

// ---- handlers ----

/// One data key as served. `dek` is base64url without padding.
struct KeyOut {
    kid: Kid,
    /// base64url (no padding) of the data key; zeroized on drop.
    dek_b64: Zeroizing<String>,
    not_before: i64,
    not_after: i64,
}

impl KeyOut {
    fn new(kid: Kid, dek: Dek, rotation: RotationMonths) -> KeyOut {
        KeyOut {
            kid,
            dek_b64: Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(dek.as_bytes()),
            ),
            not_before: kid.epoch.start_unix(),
            not_after: kid.epoch.next(rotation).start_unix(),
        }
    }
}

impl Serialize for KeyOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("KeyOut", 4)?;
        st.serialize_field("kid", &self.kid.to_string())?;
        st.serialize_field("dek", self.dek_b64.as_str())?;
        st.serialize_field("not_before", &self.not_before)?;
        st.serialize_field("not_after", &self.not_after)?;
        st.end()
    }
}

#[derive(Serialize)]
struct CurrentOut {
    current_root: u32,
    rotation_months: u16,
    keys: Vec<KeyOut>,
}

/// A JSON answer that must not be cached anywhere. (The response buffer itself is handed to
/// hyper and is not zeroized; every intermediate copy here is.)
fn secret_json<T: Serialize>(value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn not_ready() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "Not ready",
        "the keyservice is not ready (starting or shutting down)",
    )
}

async fn current_keys(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .data_key_current
        .fetch_add(1, Ordering::Relaxed);
    if !state.is_ready() {
        return not_ready();
    }
    let now = (state.clock)();
    let epoch = Epoch::containing(now, state.rotation);
    let roots = state.roots();
    let mut keys = Vec::with_capacity(2);
    for e in [epoch, epoch.next(state.rotation)] {
        match roots.current_dek(e) {
            Some((kid, dek)) => keys.push(KeyOut::new(kid, dek, state.rotation)),
            None => return not_ready(),
        }
    }
    secret_json(&CurrentOut {
        current_root: roots.current(),
        rotation_months: state.rotation.get(),
        keys,
    })
}

async fn key_by_kid(
    State(state): State<Arc<AppState>>,
    kid: Result<Path<String>, PathRejection>,
) -> Response {
    state.metrics.data_key_kid.fetch_add(1, Ordering::Relaxed);
    if !state.is_ready() {
        return not_ready();
    }
    let Ok(Path(kid)) = kid else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad-kid",
            "Bad key id",
            "the key id is not valid UTF-8",
        );
    };
    let kid: Kid = match kid.parse() {
        Ok(k) => k,
        Err(_) => {
            let shown: String = kid.chars().take(64).collect();
            return problem(
                StatusCode::BAD_REQUEST,
                "bad-kid",
                "Bad key id",
                format!("{shown:?} is not a key id (r<version>.<YYYY-MM>, e.g. r1.2026-01)"),
            );
        }
    };
    // Data keys exist for every past epoch, the current and the next one; later ones are
    // not issued (nothing legitimate can carry them yet).
    let now = (state.clock)();
    let next = Epoch::containing(now, state.rotation).next(state.rotation);
    if kid.epoch.start_unix() > next.start_unix() {
        return problem(
            StatusCode::NOT_FOUND,
            "kid-not-issued",
            "Key not issued yet",
            format!(
                "{kid}: epoch {} starts after the next epoch ({next})",
                kid.epoch
            ),
        );
    }
    let mut dek = state.roots().dek(&kid);
    if dek.is_none() && state.reload_for(kid.root_version).await {
        dek = state.roots().dek(&kid);
    }
    match dek {
        Some(dek) => secret_json(&KeyOut::new(kid, dek, state.rotation)),
        None => problem(
            StatusCode::NOT_FOUND,
            "unknown-root",
            "Unknown root version",
            format!(
                "{kid}: root version {} is not an active root of this keyring",
                kid.root_version
            ),
        ),
    }
}

async fn healthz() -> Response {
    secret_json(&serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        secret_json(&serde_json::json!({"status": "ready"}))
    } else {
        not_ready()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let mut body = format!(
        "# HELP veil_keyservice_data_key_requests_total Authenticated data key requests, by endpoint.\n\
         # TYPE veil_keyservice_data_key_requests_total counter\n\
         veil_keyservice_data_key_requests_total{{endpoint=\"current\"}} {}\n\
         veil_keyservice_data_key_requests_total{{endpoint=\"kid\"}} {}\n\
         # HELP veil_keyservice_auth_failures_total Requests to /v1/* refused (401) for a missing or wrong token or signature.\n\
         # TYPE veil_keyservice_auth_failures_total counter\n\
         veil_keyservice_auth_failures_total {}\n\
         # HELP veil_keyservice_auth_replays_total Signed requests refused (401) because their nonce was seen already.\n\
         # TYPE veil_keyservice_auth_replays_total counter\n\
         veil_keyservice_auth_replays_total {}\n\
         # HELP veil_keyservice_auth_skew_failures_total Signed requests refused (401) because their timestamp is too far from the clock.\n\
         # TYPE veil_keyservice_auth_skew_failures_total counter\n\
         veil_keyservice_auth_skew_failures_total {}\n\
         # HELP veil_keyservice_auth_replay_cache_full_total Signed requests refused (503) because the replay cache was full.\n\
         # TYPE veil_keyservice_auth_replay_cache_full_total counter\n\
         veil_keyservice_auth_replay_cache_full_total {}\n\
         # HELP veil_keyservice_ready 1 while the keyring is loaded, roots are unwrapped and the server is not draining.\n\
         # TYPE veil_keyservice_ready gauge\n\
         veil_keyservice_ready {}\n\
         # HELP veil_keyservice_current_root_version The current (highest active) root version.\n\
         # TYPE veil_keyservice_current_root_version gauge\n\
         veil_keyservice_current_root_version {}\n\
         # HELP veil_keyservice_active_roots Active root versions held in memory.\n\
         # TYPE veil_keyservice_active_roots gauge\n\
         veil_keyservice_active_roots {}\n",
        m.data_key_current.load(Ordering::Relaxed),
        m.data_key_kid.load(Ordering::Relaxed),
        m.auth_failures.load(Ordering::Relaxed),
        m.auth_replays.load(Ordering::Relaxed),
        m.auth_skew_failures.load(Ordering::Relaxed),
        m.auth_replay_cache_full.load(Ordering::Relaxed),
        u8::from(state.is_ready()),
        state.roots().current(),
        state.roots().versions().len(),
    );
    if let Some(relay) = &state.relay {
        body.push_str(&relay.render_metrics().await);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_refuses_a_second_use_and_forgets_after_the_window() {
        let mut c = ReplayCache::new(4);
        assert_eq!(c.check([1; 16], 100), Seen::First);
        assert_eq!(c.check([1; 16], 100), Seen::Replay);
        assert_eq!(c.check([1; 16], 110), Seen::Replay, "still inside 2 × skew");
        assert_eq!(c.check([2; 16], 105), Seen::First);
        // At 111 the first nonce's request can no longer verify: forgotten.
        assert_eq!(c.check([3; 16], 111), Seen::First);
        assert_eq!(c.len(), 2);
        assert_eq!(c.check([1; 16], 111), Seen::First);
    }

    #[test]
    fn a_full_replay_cache_fails_closed_until_nonces_expire() {
        let mut c = ReplayCache::new(2);
        assert_eq!(c.check([1; 16], 100), Seen::First);
        assert_eq!(c.check([2; 16], 100), Seen::First);
        assert_eq!(c.check([3; 16], 100), Seen::Full);
        assert_eq!(c.check([3; 16], 101), Seen::Full);
        assert_eq!(
            c.check([1; 16], 101),
            Seen::Replay,
            "a replay stays a replay"
        );
        assert_eq!(c.check([3; 16], 111), Seen::First);
    }
}
