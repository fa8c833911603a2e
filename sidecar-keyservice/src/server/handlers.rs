//! The data-key routes and the unauthenticated health, readiness and metrics routes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use veil_core::crypto::keys::{Dek, Epoch, Kid, RotationMonths};
use zeroize::Zeroizing;

use super::problems::{not_ready, problem};
use super::state::AppState;

/// One data key as served. `dek` is base64url without padding.
struct KeyOut {
    kid: Kid,
    /// base64url (no padding) of the data key; zeroized on drop.
    dek_b64: Zeroizing<String>,
    /// [`Dek::fingerprint`] in hex: the filter checks it on install, binding kid and key.
    fingerprint: String,
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
            fingerprint: dek.fingerprint().to_string(),
            not_before: kid.epoch.start_unix(),
            not_after: kid.epoch.next(rotation).start_unix(),
        }
    }
}

impl Serialize for KeyOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("KeyOut", 5)?;
        st.serialize_field("kid", &self.kid.to_string())?;
        st.serialize_field("dek", self.dek_b64.as_str())?;
        st.serialize_field("fingerprint", &self.fingerprint)?;
        st.serialize_field("not_before", &self.not_before)?;
        st.serialize_field("not_after", &self.not_after)?;
        st.end()
    }
}

#[derive(Serialize)]
struct CurrentOut {
    current_root: u32,
    /// Every root version served: a search covers data sealed under each of them, and a
    /// filter drops cached keys of a version no longer listed (destroyed).
    root_versions: Vec<u32>,
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

pub(crate) async fn current_keys(State(state): State<Arc<AppState>>) -> Response {
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
        root_versions: roots.versions(),
        rotation_months: state.rotation.get(),
        keys,
    })
}

pub(crate) async fn key_by_kid(
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

pub(crate) async fn healthz() -> Response {
    secret_json(&serde_json::json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        secret_json(&serde_json::json!({"status": "ready"}))
    } else {
        not_ready()
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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
         # HELP veil_keyservice_keyring_reloads_total Keyring files loaded after start, by outcome (failed: the roots held were kept).\n\
         # TYPE veil_keyservice_keyring_reloads_total counter\n\
         veil_keyservice_keyring_reloads_total{{outcome=\"ok\"}} {}\n\
         veil_keyservice_keyring_reloads_total{{outcome=\"failed\"}} {}\n\
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
        m.keyring_reloads.load(Ordering::Relaxed),
        m.keyring_reload_failures.load(Ordering::Relaxed),
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
