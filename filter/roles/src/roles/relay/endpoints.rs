//! The relay's plaintext endpoints under the prefix `P` (docs/relay-protocol.md §0, §1, §2,
//! §7): `GET|HEAD P/relay` (client ids), `POST P/pair` (pairing through the keyservice's
//! v2 pairs endpoint), `GET P/keys` (the server's key configurations, from the keyservice)
//! and `GET P/echo[/msg]`. Each answer is a local reply.

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
            version: 2,
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

/// One entry of the client's pairing body, passed on as it is (the keyservice decodes and
/// checks it).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Offer {
    enc: String,
    pk: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairingRequest {
    key_id: u8,
    pairs: Vec<Offer>,
}

#[derive(Serialize)]
struct KeyserviceRequest<'a> {
    client_id: &'a str,
    key_id: u8,
    pairs: &'a [Offer],
}

/// The keyservice request (`POST /v1/relay/v2/pairs`) for a client's pairing body
/// (`{"key_id": n, "pairs": [{"enc", "pk"}, ...]}`, 1 to `max_pairs` entries), and the
/// number of entries; the keyservice decodes and checks each entry.
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
    let req: PairingRequest = serde_json::from_slice(body).map_err(|_| {
        RelayError::BadRequest(
            "pairing body is not {\"key_id\": n, \"pairs\": [{\"enc\": ..., \"pk\": ...}]}",
        )
    })?;
    if req.pairs.is_empty() || req.pairs.len() > relay.max_pairs {
        return Err(RelayError::BadRequest(
            "pairing needs 1 to max_pairs entries",
        ));
    }
    let out = serde_json::to_vec(&KeyserviceRequest {
        client_id,
        key_id: req.key_id,
        pairs: &req.pairs,
    })
    .map_err(|_| RelayError::Unavailable("cannot build the pairing"))?;
    Ok((out, req.pairs.len()))
}

#[derive(Serialize)]
struct ClientPair<'a> {
    pair_id: &'a str,
    enc: &'a str,
    expires_at: i64,
    confirm: &'a str,
}

#[derive(Serialize)]
struct ClientPairing<'a> {
    pairs: Vec<ClientPair<'a>>,
}

#[derive(Deserialize)]
struct KeyserviceProblem {
    #[serde(default)]
    code: String,
}

/// Takes the keyservice's pairing answer: installs each pair (keys stay in the filter) and
/// answers the client with ids, encapsulations, lifetimes and key confirmations only.
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
        Some(400) => {
            let code = serde_json::from_slice::<KeyserviceProblem>(body)
                .map(|p| p.code)
                .unwrap_or_default();
            return Err(if code == "relay-key-unknown" {
                RelayError::KeyUnknown
            } else {
                RelayError::BadRequest("the keyservice refused a pairing entry")
            });
        }
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
        let (Some(enc), Some(confirm)) = (p.enc.as_deref(), p.confirm.as_deref()) else {
            return Err(RelayError::Unavailable(
                "keyservice pairing answer without enc or confirm",
            ));
        };
        install(h, w, p, client_id, false, now)?;
        out.push(ClientPair {
            pair_id: &p.pair_id,
            enc,
            expires_at: p.expires_at,
            confirm,
        });
    }
    let body = serde_json::to_vec(&ClientPairing { pairs: out })
        .map_err(|_| RelayError::Unavailable("cannot answer"))?;
    reply(h, 200, &[], &body)
}

/// `GET P/keys`: the keyservice's `application/ohttp-keys` list (RFC 9458 §3.2), checked to
/// parse and to hold at least one configuration this relay speaks, answered as it is. For
/// operators and tools: a client never takes its pin from here (it would trust the hops).
pub fn keys_answer(h: &dyn StreamHost, status: Option<u16>, body: &[u8]) -> Result<(), RelayError> {
    if status != Some(200) {
        return Err(RelayError::Unavailable("keyservice relay keys failed"));
    }
    match veil_core::relay::v2::KeyConfig::decode_list(body) {
        Ok(list) if !list.is_empty() => {}
        _ => return Err(RelayError::Unavailable("bad relay keys from keyservice")),
    }
    h.send_local_response(
        200,
        &[
            ("content-type", "application/ohttp-keys"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
    .map_err(|_| RelayError::Unavailable("cannot answer"))
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
