//! The HTTP API the filter calls over its loopback cluster.
//!
//! - [`state`]: what the handlers share ([`AppState`]: roots, token, counters, reloader).
//! - [`auth`]: the token check of `/v1/*` (signed requests, replay cache, `Bearer`).
//! - [`handlers`]: the data-key, health, readiness and metrics routes.
//! - [`problems`]: the problem+json answers.
//!
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

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

pub mod auth;
pub mod handlers;
pub mod problems;
pub mod state;

pub use auth::{ReplayCache, Seen, MAX_SKEW_SECS, REPLAY_CACHE_ENTRIES};
pub use problems::problem;
pub use state::{AppState, Metrics, Reloader, RELOAD_MIN_INTERVAL, RELOAD_MIN_INTERVAL_SECS};

use auth::require_token;
use handlers::{current_keys, healthz, key_by_kid, metrics, readyz};
use problems::{method_not_allowed, not_found};

/// Log target of the per-request access log.
pub const ACCESS_TARGET: &str = "veil_keyservice::access";

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
