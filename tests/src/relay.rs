//! A wire-level relay client for tests, built from `veil_core::relay::v2` and the harness's
//! plain HTTP client: it discovers, pairs and encodes exactly as docs/relay-protocol.md
//! says, and lets a test choose every `seq`, replay a request byte for byte or tamper with a
//! part — what a well-behaved client (the `client/` crate) never does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use veil_core::relay::v2::{
    AnswerCipher, AnswerKind, ClientOffer, Exchange, KeyConfig, PairAnswer, Part, RequestBinding,
    RequestCipher, RequestControl, ResponseControl,
};
use veil_core::relay::wire::{decode_response_headers, encode_headers, encoded_path};
use veil_core::relay::PairKeys;

use crate::http::{self, Response};

pub const PREFIX: &str = "/veil";

/// One pair: its id, its keys, and the origin its requests are bound to.
pub struct RawPair {
    pub pair_id: String,
    pub keys: PairKeys,
    /// `http` (the harness speaks plain HTTP on loopback).
    pub scheme: String,
    /// The `host:port` the requests address (bound into every part); the address the pair
    /// was made through unless a test changes it.
    pub authority: String,
    /// The binding of the last request encoded on each `seq` (what [`RawPair::decode`]
    /// opens its answer with).
    sent: RefCell<HashMap<u64, RequestBinding>>,
}

/// An encoded request, ready to send (and to send again), and what opens its answer.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The tags of the sealed path and headers: every answer to it is bound to them.
    pub binding: RequestBinding,
    pub seq: u64,
}

impl Encoded {
    pub fn send(&self, addr: SocketAddr) -> Response {
        let h: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        http::request(addr, &self.method, &self.target, &h, &self.body)
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.target))
    }

    /// The same request with header `name` set to `value` on the wire (added or replaced):
    /// what a hop can do.
    pub fn with_wire_header(&self, name: &str, value: &str) -> Encoded {
        let mut e = self.clone();
        e.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        e.headers.push((name.to_string(), value.to_string()));
        e
    }
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub status: u16,
    /// Visible headers then sealed headers, lowercase names.
    pub visible: Vec<(String, String)>,
    pub sealed: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Decoded {
    pub fn sealed_header(&self, name: &str) -> Option<&str> {
        self.sealed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(self.body.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("decoded body is not JSON: {e}"))
    }
}

/// `GET P/relay` → a fresh client id.
pub fn discover(addr: SocketAddr) -> String {
    let r = http::get(addr, &format!("{PREFIX}/relay")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2, "{}", r.text());
    r.json()["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no client id: {}", r.text()))
        .to_string()
}

/// `GET P/keys` through `addr`: the relay's current key configuration. Tests on loopback
/// use it for convenience; a real client pins the key out of band (`relay-key show`), as
/// the man-in-the-middle test does.
pub fn keys(addr: SocketAddr) -> KeyConfig {
    let r = http::get(addr, &format!("{PREFIX}/keys")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{PREFIX}/keys: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/ohttp-keys"));
    KeyConfig::decode_list(&r.body)
        .unwrap_or_else(|e| panic!("{PREFIX}/keys: {e}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{PREFIX}/keys: no key configuration"))
}

/// `POST P/pair` with `n` fresh entries for the key `GET P/keys` names.
pub fn pair(addr: SocketAddr, client_id: &str, n: usize) -> Vec<RawPair> {
    pair_pinned(addr, &keys(addr), client_id, n)
        .unwrap_or_else(|e| panic!("pairing through {addr}: {e}"))
}

/// The pairing request body of `offers` for `pin` (what a client sends).
pub fn pairing_body(pin: &KeyConfig, offers: &[ClientOffer]) -> Vec<u8> {
    let entries: Vec<Value> = offers
        .iter()
        .map(|o| {
            let w = o.wire();
            json!({"enc": URL_SAFE_NO_PAD.encode(&w.enc), "pk": URL_SAFE_NO_PAD.encode(&w.pk)})
        })
        .collect();
    json!({"key_id": pin.key_id(), "pairs": entries})
        .to_string()
        .into_bytes()
}

/// Finishes `offers` with a pairing answer's JSON: each entry's key confirmation checked
/// against the pinned key. `Err` names the first entry that does not verify.
pub fn finish_pairing(
    client_id: &str,
    offers: Vec<ClientOffer>,
    answer: &Value,
) -> Result<Vec<(String, PairKeys)>, String> {
    let pairs = answer["pairs"].as_array().cloned().unwrap_or_default();
    if pairs.len() != offers.len() {
        return Err(format!(
            "{} entries for {} offers",
            pairs.len(),
            offers.len()
        ));
    }
    offers
        .into_iter()
        .zip(&pairs)
        .enumerate()
        .map(|(i, (offer, p))| {
            if p.get("c2s").is_some() || p.get("s2c").is_some() {
                return Err(format!(
                    "pairs[{i}] carries keys: the filter must strip them"
                ));
            }
            let b = |k: &str| URL_SAFE_NO_PAD.decode(p[k].as_str().unwrap_or_default());
            let (enc, confirm) = (b("enc"), b("confirm"));
            let (Ok(enc), Ok(confirm)) = (enc, confirm) else {
                return Err(format!("pairs[{i}]: enc or confirm not base64url"));
            };
            let pair_id = p["pair_id"].as_str().unwrap_or_default().to_string();
            let keys = offer
                .finish(
                    client_id,
                    &PairAnswer {
                        pair_id: &pair_id,
                        enc: &enc,
                        expires_at: p["expires_at"].as_u64().unwrap_or_default(),
                        confirm: &confirm,
                    },
                )
                .map_err(|e| format!("pairs[{i}]: {} ({e})", e.code()))?;
            Ok((pair_id, keys))
        })
        .collect()
}

/// `POST P/pair` with `n` fresh entries pinned to `pin`. `Err`: the answer was refused, or a
/// key confirmation does not verify (its message holds `relay-server-auth-failed`).
pub fn pair_pinned(
    addr: SocketAddr,
    pin: &KeyConfig,
    client_id: &str,
    n: usize,
) -> Result<Vec<RawPair>, String> {
    let offers: Vec<ClientOffer> = (0..n)
        .map(|_| ClientOffer::generate_os(pin).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let r = http::request(
        addr,
        "POST",
        &format!("{PREFIX}/pair"),
        &[
            ("x-veil-client-id", client_id),
            ("content-type", "application/json"),
        ],
        &pairing_body(pin, &offers),
    )
    .unwrap_or_else(|e| panic!("pairing: {e}"));
    if r.status != 200 {
        return Err(format!("pairing answered {}: {}", r.status, r.text()));
    }
    Ok(finish_pairing(client_id, offers, &r.json())?
        .into_iter()
        .map(|(pair_id, keys)| RawPair {
            pair_id,
            keys,
            scheme: "http".into(),
            authority: addr.to_string(),
            sent: RefCell::default(),
        })
        .collect())
}

impl RawPair {
    /// A pair no pairing made (random keys): what a client that guesses a pair id holds.
    pub fn made_up(pair_id: &str, addr: SocketAddr) -> RawPair {
        RawPair {
            pair_id: pair_id.to_string(),
            keys: PairKeys {
                c2s: [1; 32],
                s2c: [2; 32],
            },
            scheme: "http".into(),
            authority: addr.to_string(),
            sent: RefCell::default(),
        }
    }

    fn exchange<'a>(&'a self, seq: u64, method: &'a str) -> Exchange<'a> {
        Exchange {
            pair_id: &self.pair_id,
            seq,
            method,
            scheme: &self.scheme,
            authority: &self.authority,
        }
    }

    /// Encodes a request on `seq`; `body` None sends no body part (flags `uh`).
    pub fn encode(
        &self,
        client_id: &str,
        seq: u64,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Encoded {
        let ctl = RequestControl {
            client_id,
            pair_id: &self.pair_id,
            seq,
            body: body.is_some(),
        };
        let ex = self.exchange(seq, method);
        let c2s = RequestCipher::new(&self.keys.c2s);
        let list: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let seal = |part, m: &[u8]| {
            c2s.seal(&ex, part, ctl.body, m)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let path = seal(Part::RequestUrl, path_and_query.as_bytes());
        let eh = seal(Part::RequestHeaders, &encode_headers(&list));
        let binding = RequestBinding::of(&path, &eh).unwrap_or_else(|e| panic!("{e}"));
        self.sent.borrow_mut().insert(seq, binding);
        let mut wire = vec![
            ("x-veil-relay".to_string(), ctl.to_header_value()),
            ("x-veil-relay-eh".to_string(), URL_SAFE_NO_PAD.encode(&eh)),
        ];
        let body = match body {
            Some(b) => {
                wire.push((
                    "content-type".to_string(),
                    "application/octet-stream".to_string(),
                ));
                seal(Part::RequestBody, b)
            }
            None => Vec::new(),
        };
        Encoded {
            method: method.to_string(),
            target: encoded_path(PREFIX, &URL_SAFE_NO_PAD.encode(&path)),
            headers: wire,
            body,
            binding,
            seq,
        }
    }

    /// Opens an encoded answer to the request last encoded on `seq` with `method`. An
    /// authenticated refusal (flags `e`) is `Err("authenticated <code>")`; anything that
    /// does not open is another `Err`.
    pub fn decode(&self, seq: u64, method: &str, r: &Response) -> Result<Decoded, String> {
        let binding = *self
            .sent
            .borrow()
            .get(&seq)
            .ok_or_else(|| format!("no request was encoded on seq {seq}"))?;
        self.decode_with(seq, method, &binding, r)
    }

    /// Opens an encoded answer to `req`.
    pub fn decode_for(&self, req: &Encoded, r: &Response) -> Result<Decoded, String> {
        self.decode_with(req.seq, &req.method, &req.binding, r)
    }

    fn decode_with(
        &self,
        seq: u64,
        method: &str,
        binding: &RequestBinding,
        r: &Response,
    ) -> Result<Decoded, String> {
        let control = r
            .header("x-veil-relay")
            .ok_or_else(|| format!("not an encoded answer ({}): {}", r.status, r.text()))?;
        let rc = ResponseControl::parse(control).map_err(|e| e.to_string())?;
        if rc.pair_id != self.pair_id || rc.seq != seq {
            return Err(format!("answer for another request: {control}"));
        }
        let ex = self.exchange(seq, method);
        let cipher =
            AnswerCipher::new(&self.keys.s2c, &rc.response_nonce).map_err(|e| e.to_string())?;
        let eh = r
            .header("x-veil-relay-eh")
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or("no x-veil-relay-eh")?;
        let open = |part, sealed: &[u8]| {
            cipher
                .open(&ex, part, rc.kind, r.status, binding, sealed)
                .map_err(|e| e.to_string())
        };
        if rc.kind == AnswerKind::Error {
            let code = open(Part::Error, &eh)?;
            return Err(format!("authenticated {}", String::from_utf8_lossy(&code)));
        }
        let sealed = decode_response_headers(&open(Part::ResponseHeaders, &eh)?)
            .map_err(|e| e.to_string())?;
        let body = if rc.kind == AnswerKind::HeadersBody {
            Some(open(Part::ResponseBody, &r.body)?)
        } else {
            None
        };
        let visible = r
            .headers
            .iter()
            .filter(|(n, _)| !n.starts_with("x-veil-relay") && n != "content-type")
            .cloned()
            .collect();
        Ok(Decoded {
            status: r.status,
            visible,
            sealed,
            body,
        })
    }
}
