//! The token check of every `/v1/*` route: a per-request signature (`Veil-HMAC-SHA256`,
//! what the filter sends) checked against the clock and a replay cache, or `Bearer <token>`
//! (direct clients), compared in constant time.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;
use veil_core::keyservice_auth::{self, AuthError};

use super::problems::problem;
use super::state::AppState;
use crate::keyring::now_unix;

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

/// Every `/v1/*` request must carry the token: signed (`Veil-HMAC-SHA256`, the filter) or
/// as `Bearer <token>` (direct clients), compared in constant time.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
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
