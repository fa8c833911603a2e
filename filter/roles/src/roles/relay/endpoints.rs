//! The relay's plaintext endpoints under the prefix `P` (docs/relay-protocol.md §1, §2, §7):
//! `GET|HEAD P/relay` (client ids), `POST P/pair` (pairing through the keyservice) and
//! `GET P/echo[/msg]`. Each answer is a local reply with `cache-control: no-store`.

use serde::{Deserialize, Serialize};
use veil_core::relay::{RelayError, HEADER_CLIENT_ID};

use veil_core::keyservice_answer::{parse_relay, PairAnswer, PairingAnswer};
use veil_core::relay::slots::SlotKeys;

use crate::host::StreamHost;
use crate::relay_cache::Pair;
use crate::roles::relay::pairs;
use crate::worker::Worker;

/// Largest pairing body read (16 keys of 1216 bytes in base64url are ~26 KiB).
pub const MAX_PAIRING_BODY: usize = 64 * 1024;

fn reply(
    h: &dyn StreamHost,
    status: u16,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Result<(), RelayError> {
    let mut headers = vec![("cache-control", "no-store")];
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    headers.extend_from_slice(extra);
    h.send_local_response(status, &headers, body)
        .map_err(|_| RelayError::Unavailable("cannot answer"))
}

#[derive(Serialize)]
struct Discovery<'a> {
    version: u32,
    client_id: &'a str,
    max_pairs: usize,
}

/// `GET|HEAD P/relay`: the same client id if `presented` is valid, a fresh one otherwise.
pub fn discovery(
    h: &dyn StreamHost,
    w: &Worker,
    head: bool,
    presented: Option<&str>,
) -> Result<(), RelayError> {
    let relay = w
        .config
        .relay
        .as_ref()
        .ok_or(RelayError::Unavailable("relay off"))?;
    let id = match presented {
        Some(id) if relay.client_id_secret.verify(id) => id.to_string(),
        _ => relay.client_id_secret.issue_random()?,
    };
    let body = if head {
        Vec::new()
    } else {
        serde_json::to_vec(&Discovery {
            version: 1,
            client_id: &id,
            max_pairs: relay.max_pairs,
        })
        .map_err(|_| RelayError::Unavailable("cannot answer"))?
    };
    reply(h, 200, &[(HEADER_CLIENT_ID, &id)], &body)
}

#[derive(Serialize)]
struct Echo<'a> {
    echo: Option<&'a str>,
    time: i64,
}

/// `GET P/echo[/msg]`: `{"echo": msg|null, "time": unix ms}`. `rest` is the path after
/// `P/echo` (without query).
pub fn echo(h: &dyn StreamHost, rest: &str, now_ms: i64) -> Result<(), RelayError> {
    let msg = rest.strip_prefix('/').filter(|m| !m.is_empty());
    let decoded = msg.map(percent_decode);
    let body = serde_json::to_vec(&Echo {
        echo: decoded.as_deref(),
        time: now_ms,
    })
    .map_err(|_| RelayError::Unavailable("cannot answer"))?;
    reply(h, 200, &[], &body)
}

/// Strict `%XX` decoding of an echo message (one decoder with the search parameters'); the
/// raw text if the result is not UTF-8.
fn percent_decode(s: &str) -> String {
    String::from_utf8(veil_core::percent::decode(s).into_owned()).unwrap_or_else(|_| s.to_string())
}

#[derive(Deserialize)]
struct PairingRequest {
    keys: Vec<String>,
}

#[derive(Serialize)]
struct KeyserviceRequest<'a> {
    client_id: &'a str,
    keys: &'a [String],
}

/// The keyservice request for a client's pairing body (`{"keys": [...]}`, 1 to
/// `max_pairs` keys), and the number of keys; the keyservice checks each key.
pub fn pairing_request(
    w: &Worker,
    client_id: &str,
    body: &[u8],
) -> Result<(Vec<u8>, usize), RelayError> {
    let relay = w
        .config
        .relay
        .as_ref()
        .ok_or(RelayError::Unavailable("relay off"))?;
    let req: PairingRequest = serde_json::from_slice(body)
        .map_err(|_| RelayError::BadRequest("pairing body is not {\"keys\": [...]}"))?;
    if req.keys.is_empty() || req.keys.len() > relay.max_pairs {
        return Err(RelayError::BadRequest("pairing needs 1 to max_pairs keys"));
    }
    let out = serde_json::to_vec(&KeyserviceRequest {
        client_id,
        keys: &req.keys,
    })
    .map_err(|_| RelayError::Unavailable("cannot build the pairing"))?;
    Ok((out, req.keys.len()))
}

#[derive(Serialize)]
struct ClientPair<'a> {
    pair_id: &'a str,
    ciphertext: &'a str,
    expires_at: i64,
}

#[derive(Serialize)]
struct ClientPairing<'a> {
    pairs: Vec<ClientPair<'a>>,
}

/// Takes the keyservice's pairing answer: installs each pair (keys stay in the filter) and
/// answers the client with ids, ciphertexts and lifetimes only.
pub fn pairing_answer(
    h: &dyn StreamHost,
    w: &Worker,
    client_id: &str,
    wanted: usize,
    status: Option<u16>,
    body: &[u8],
    now: i64,
) -> Result<(), RelayError> {
    match status {
        Some(200) => {}
        Some(400) => return Err(RelayError::BadRequest("the keyservice refused a key")),
        _ => return Err(RelayError::Unavailable("keyservice pairing failed")),
    }
    let answer: PairingAnswer = parse_relay(body)?;
    if answer.pairs.len() != wanted {
        return Err(RelayError::Unavailable(
            "keyservice answered another number of pairs",
        ));
    }
    let mut out = Vec::with_capacity(answer.pairs.len());
    for p in &answer.pairs {
        install(h, w, p, client_id, false, now)?;
        out.push(ClientPair {
            pair_id: &p.pair_id,
            ciphertext: p.ciphertext.as_deref().unwrap_or_default(),
            expires_at: p.expires_at,
        });
    }
    let body = serde_json::to_vec(&ClientPairing { pairs: out })
        .map_err(|_| RelayError::Unavailable("cannot answer"))?;
    reply(h, 200, &[], &body)
}

/// Installs a pair the keyservice answered for `client_id` (`fetched`: by id, not just
/// paired).
pub fn install(
    h: &dyn StreamHost,
    w: &Worker,
    p: &PairAnswer,
    client_id: &str,
    fetched: bool,
    now: i64,
) -> Result<std::rc::Rc<Pair>, RelayError> {
    if !veil_core::relay::wire::is_pair_id(&p.pair_id) {
        return Err(RelayError::Unavailable("bad pair id from keyservice"));
    }
    let (c2s, s2c) = p.keys()?;
    pairs::install(
        h,
        w,
        &SlotKeys {
            pair_id: &p.pair_id,
            client_id,
            c2s: &c2s,
            s2c: &s2c,
            expires_at: p.expires_at,
            idle_ttl_secs: p.idle_ttl(),
        },
        fetched,
        now,
    )
}
