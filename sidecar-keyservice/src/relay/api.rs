//! The relay's routes (bearer token like every `/v1/*` route; the filter is the only caller):
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/relay/v2/pairs` `{"client_id","key_id","pairs":[{"enc","pk"}…]}` | 200 `{"pairs":[{"pair_id","enc","confirm","c2s","s2c","expires_at","idle_ttl_secs"}]}` (docs/relay-protocol.md §2) |
//! | `GET /v1/relay/keys` | 200 `application/ohttp-keys`: the relay server keys, current first |
//! | `GET /v1/relay/pairs/{pair_id}` | 200 `{"pair_id","client_id","c2s","s2c","expires_at","idle_ttl_secs"}` (restarts the idle TTL) or 404 |
//! | `POST /v1/relay/pairs/{pair_id}/seq` `{"seq":n}` | 200 `{"accepted":true}`, 409 replay, 404 |
//!
//! Errors are problem+json in the keyservice's one shape, `code` = `relay-<short code>`;
//! 503 `relay-store-unavailable` when the session store does not answer. Keys are base64url
//! without padding and are never logged; neither are client ids.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use veil_core::relay::v2;
use zeroize::Zeroizing;

use super::metrics::inc;
use super::store::{NewSession, SeqOutcome, StoreError};
use super::Relay;
use crate::server::{problem, AppState};

/// Largest request body: 64 public keys of 1216 bytes in base64url, with room to spare.
pub const MAX_BODY: usize = 128 * 1024;
/// Highest `seq` accepted: 2^53 − 1, the largest integer every client (JavaScript's
/// `Number` included) and the Redis store's Lua numbers hold exactly.
pub const MAX_SEQ: u64 = (1 << 53) - 1;
/// A pair id is base64url of 16 random bytes.
const PAIR_ID_BYTES: usize = 16;
const PAIR_ID_LEN: usize = 22;

/// The relay routes, merged into the keyservice's router (its token check applies).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/relay/pairs/{pair_id}", get(lookup))
        .route("/v1/relay/pairs/{pair_id}/seq", post(seq))
        .route("/v1/relay/v2/pairs", post(pair_v2))
        .route("/v1/relay/keys", get(server_keys))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// A problem+json answer (the keyservice's one shape) with code `relay-<error>`.
fn refuse(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    problem(
        status,
        &format!("relay-{error}"),
        status.canonical_reason().unwrap_or("Error"),
        detail,
    )
}

/// A JSON answer that holds keys: never cached.
fn secret_json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        status,
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

/// A refusal decided before the store is asked (small, unlike a built [`Response`]).
struct Refusal(StatusCode, &'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.0, self.1, self.2)
    }
}

/// The relay, if the service is ready; otherwise the 503 to answer.
fn relay(state: &AppState) -> Result<&Arc<Relay>, Refusal> {
    if !state.is_ready() {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "the keyservice is not ready (starting or shutting down)",
        ));
    }
    state.relay.as_ref().ok_or(Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the relay is not set up in this process",
    ))
}

fn store_failed(relay: &Relay, what: &str, e: &StoreError) -> Response {
    inc(&relay.metrics.store_errors);
    tracing::warn!(store = relay.store.kind(), error = %e, "relay {what}: session store failed");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the session store did not answer; retry later",
    )
}

/// `uuid "." hex64`, lowercase (docs/relay-protocol.md §1). Only the shape: the HMAC is the
/// filter's to check (it holds the secret).
fn client_id_shape_ok(id: &str) -> bool {
    let b = id.as_bytes();
    let hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
    b.len() == 101
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            36 => *c == b'.',
            _ => hex(c),
        })
}

fn pair_id_ok(id: &str) -> bool {
    id.len() == PAIR_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

fn new_pair_id() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; PAIR_ID_BYTES];
    getrandom::fill(&mut raw)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// Serializes a zeroizing string (the key's base64 form) as a plain JSON string.
fn zs<S: serde::Serializer>(v: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn b64(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// Where and what kind of JSON error, without the input's text (serde's messages can quote
/// a value, and a client id must not travel in an error).
fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong or missing field",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

fn body_refused(e: &BytesRejection) -> Response {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body is over {MAX_BODY} bytes"),
        )
    } else {
        refuse(StatusCode::BAD_REQUEST, "bad-request", e.body_text())
    }
}

/// The pair id of the path, or the 400 to answer.
fn path_pair_id(p: Result<Path<String>, PathRejection>) -> Result<String, Refusal> {
    match p {
        Ok(Path(id)) if pair_id_ok(&id) => Ok(id),
        _ => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "bad-pair-id",
            "a pair id is 22 base64url characters",
        )),
    }
}

fn unknown_pair() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "unknown",
        "no such pair: never made, expired or evicted; the client re-pairs",
    )
}

#[derive(Serialize)]
struct SessionOut<'a> {
    pair_id: &'a str,
    client_id: &'a str,
    #[serde(serialize_with = "zs")]
    c2s: Zeroizing<String>,
    #[serde(serialize_with = "zs")]
    s2c: Zeroizing<String>,
    expires_at: i64,
    idle_ttl_secs: u64,
}

async fn lookup(
    State(state): State<Arc<AppState>>,
    pair_id: Result<Path<String>, PathRejection>,
) -> Response {
    let relay = match relay(&state) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let pair_id = match path_pair_id(pair_id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match relay.store.get(&pair_id, (state.clock)()).await {
        Ok(Some(s)) => {
            inc(&relay.metrics.lookups_found);
            secret_json(
                StatusCode::OK,
                &SessionOut {
                    pair_id: &pair_id,
                    client_id: &s.client_id,
                    c2s: b64(&s.keys.c2s),
                    s2c: b64(&s.keys.s2c),
                    expires_at: s.expires_at,
                    idle_ttl_secs: relay.config.limits.idle_ttl_secs,
                },
            )
        }
        Ok(None) => {
            inc(&relay.metrics.lookups_unknown);
            unknown_pair()
        }
        Err(e) => store_failed(relay, "lookup", &e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeqIn {
    seq: u64,
}

async fn seq(
    State(state): State<Arc<AppState>>,
    pair_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let relay = match relay(&state) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let pair_id = match path_pair_id(pair_id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_refused(&e),
    };
    let seq = match serde_json::from_slice::<SeqIn>(&body) {
        Ok(SeqIn { seq }) if (1..=MAX_SEQ).contains(&seq) => seq,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad-seq",
                format!("expected {{\"seq\": n}} with n from 1 to {MAX_SEQ}"),
            )
        }
    };
    match relay.store.accept_seq(&pair_id, seq, (state.clock)()).await {
        Ok(SeqOutcome::Accepted) => {
            inc(&relay.metrics.seq_accepted);
            secret_json(StatusCode::OK, &serde_json::json!({"accepted": true}))
        }
        Ok(SeqOutcome::Replay) => {
            inc(&relay.metrics.seq_replay);
            refuse(
                StatusCode::CONFLICT,
                "replay",
                "this seq was already used or is older than the replay window",
            )
        }
        Ok(SeqOutcome::Unknown) => {
            inc(&relay.metrics.seq_unknown);
            unknown_pair()
        }
        Err(e) => store_failed(relay, "seq", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let good = format!(
            "{}.{}",
            "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
            "ab".repeat(32)
        );
        assert!(client_id_shape_ok(&good));
        assert!(!client_id_shape_ok(&good.to_uppercase()));
        assert!(!client_id_shape_ok(&good.replace('.', "-")));
        assert!(!client_id_shape_ok(&good[..100]));
        assert!(!client_id_shape_ok(""));
        let id = new_pair_id().unwrap();
        assert!(pair_id_ok(&id), "{id}");
        assert_ne!(id, new_pair_id().unwrap());
        assert!(!pair_id_ok(&id[..21]));
        assert!(!pair_id_ok(&format!("{}=", &id[..21])));
    }
}

// --- protocol v2 (docs/relay-protocol.md) ---------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferIn {
    enc: String,
    pk: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairV2In {
    client_id: String,
    key_id: u8,
    pairs: Vec<OfferIn>,
}

/// One v2 pair as answered: what the filter relays to the client (`pair_id`, `enc`,
/// `expires_at`, `confirm`) and the keys it keeps.
#[derive(Serialize)]
struct PairV2Out {
    pair_id: String,
    enc: String,
    confirm: String,
    #[serde(serialize_with = "zs")]
    c2s: Zeroizing<String>,
    #[serde(serialize_with = "zs")]
    s2c: Zeroizing<String>,
    expires_at: i64,
    idle_ttl_secs: u64,
}

#[derive(Serialize)]
struct PairsV2Out {
    pairs: Vec<PairV2Out>,
}

/// `POST /v1/relay/v2/pairs`: per entry, decapsulates the client's secret with the server key
/// named by `key_id`, encapsulates to its ephemeral key, and runs v2's key schedule.
async fn pair_v2(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let relay = match relay(&state) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let refused = |status, error: &str, detail: String| {
        inc(&relay.metrics.pairings_refused);
        refuse(status, error, detail)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            inc(&relay.metrics.pairings_refused);
            return body_refused(&e);
        }
    };
    let req: PairV2In = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "bad-json",
                format!(
                    "expected {{\"client_id\": \"…\", \"key_id\": n, \"pairs\": [{{\"enc\": \"…\", \"pk\": \"…\"}}]}} ({})",
                    json_error(&e)
                ),
            )
        }
    };
    if !client_id_shape_ok(&req.client_id) {
        return refused(
            StatusCode::BAD_REQUEST,
            "bad-client-id",
            "client_id is not a relay client id (uuid.hex)".into(),
        );
    }
    let entries: Vec<(&str, &str)> = req
        .pairs
        .iter()
        .map(|o| (o.enc.as_str(), o.pk.as_str()))
        .collect();
    let offers = match v2::decode_offers(&entries, relay.config.max_keys_per_pairing) {
        Ok(o) => o,
        Err(e @ v2::OfferError::Count { .. }) => {
            return refused(StatusCode::BAD_REQUEST, "too-many-keys", e.to_string())
        }
        Err(e) => return refused(StatusCode::BAD_REQUEST, "bad-key", e.to_string()),
    };
    let roots = state.roots();
    let Some(key) = roots.relay_key(req.key_id) else {
        if roots.current_relay_key().is_none() {
            tracing::error!(
                "relay pairing refused: the keyring has no relay server key \
                 (veil-keyservice keyring rotate-relay-key)"
            );
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-server-key",
                "the keyservice has no relay server key; its operator creates one with \
                 `veil-keyservice keyring rotate-relay-key`"
                    .into(),
            );
        }
        return refused(
            StatusCode::BAD_REQUEST,
            "key-unknown",
            format!(
                "key_id {}: no active relay server key has this id; the client's pin is stale (veil-keyservice relay-key show)",
                req.key_id
            ),
        );
    };
    drop(roots);

    let now = (state.clock)();
    let lifetime = i64::try_from(relay.config.limits.max_lifetime_secs).unwrap_or(i64::MAX);
    let expires_at = now.saturating_add(lifetime);
    let expires_u64 = u64::try_from(expires_at).unwrap_or(0);
    let mut sessions = Vec::with_capacity(offers.len());
    let mut answers = Vec::with_capacity(offers.len());
    for (i, offer) in offers.iter().enumerate() {
        let pair_id = match new_pair_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "relay pairing: no randomness");
                return refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "no randomness".into(),
                );
            }
        };
        let acc = match key.accept_os(&req.client_id, &pair_id, expires_u64, offer) {
            Ok(a) => a,
            Err(e) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "bad-key",
                    format!("pairs[{i}]: {e}"),
                )
            }
        };
        sessions.push(NewSession {
            pair_id,
            client_id: req.client_id.clone(),
            keys: acc.secrets.keys.clone(),
            expires_at,
        });
        answers.push((acc.enc.clone(), acc.secrets.confirm));
    }

    let evicted = match relay.store.insert(&sessions, now).await {
        Ok(n) => n,
        Err(e) => {
            inc(&relay.metrics.pairings_refused);
            return store_failed(relay, "pairing", &e);
        }
    };
    let m = &relay.metrics;
    inc(&m.pairings_ok);
    m.pairs_created
        .fetch_add(sessions.len() as u64, std::sync::atomic::Ordering::Relaxed);
    m.evictions
        .fetch_add(evicted, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        pairs = sessions.len(),
        evicted,
        store = relay.store.kind(),
        protocol = 2,
        "relay pairs made"
    );
    let idle_ttl_secs = relay.config.limits.idle_ttl_secs;
    let out = PairsV2Out {
        pairs: sessions
            .iter()
            .zip(&answers)
            .map(|(s, (enc, confirm))| PairV2Out {
                pair_id: s.pair_id.clone(),
                enc: URL_SAFE_NO_PAD.encode(enc),
                confirm: URL_SAFE_NO_PAD.encode(confirm),
                c2s: b64(&s.keys.c2s),
                s2c: b64(&s.keys.s2c),
                expires_at: s.expires_at,
                idle_ttl_secs,
            })
            .collect(),
    };
    secret_json(StatusCode::OK, &out)
}

/// `GET /v1/relay/keys`: the active relay server keys as RFC 9458 `application/ohttp-keys`,
/// the current one first (the filter publishes it at `P/keys`).
async fn server_keys(State(state): State<Arc<AppState>>) -> Response {
    if let Err(r) = relay(&state) {
        return r.into_response();
    }
    let configs = state.roots().relay_key_configs();
    if configs.is_empty() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-server-key",
            "the keyservice has no relay server key; its operator creates one with \
             `veil-keyservice keyring rotate-relay-key`",
        );
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/ohttp-keys"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        v2::KeyConfig::encode_list(&configs),
    )
        .into_response()
}
