//! A wire-level relay client for tests, built from `veil_core::relay` and the harness's plain
//! HTTP client: it discovers, pairs and encodes exactly as docs/relay-protocol.md says, and
//! lets a test choose every `seq`, replay a request byte for byte or tamper with a part —
//! what a well-behaved client (the `client/` crate) never does.

use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use veil_core::relay::kem::ClientKem;
use veil_core::relay::wire::{decode_response_headers, encode_headers, encoded_path};
use veil_core::relay::{keys, Part, PartCipher, RequestControl, ResponseControl};

use crate::http::{self, Response};

pub const PREFIX: &str = "/veil";

/// One pair: its id and both directions' ciphers.
pub struct RawPair {
    pub pair_id: String,
    pub c2s: PartCipher,
    pub s2c: PartCipher,
}

/// An encoded request, ready to send (and to send again).
#[derive(Clone, Debug)]
pub struct Encoded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
    r.json()["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no client id: {}", r.text()))
        .to_string()
}

/// `POST P/pair` with `n` fresh X-Wing keys.
pub fn pair(addr: SocketAddr, client_id: &str, n: usize) -> Vec<RawPair> {
    let kems: Vec<ClientKem> = (0..n)
        .map(|_| ClientKem::generate_os().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let pks: Vec<Vec<u8>> = kems.iter().map(ClientKem::public_key).collect();
    let body = json!({"keys": pks.iter().map(|k| URL_SAFE_NO_PAD.encode(k)).collect::<Vec<_>>()});
    let r = http::request(
        addr,
        "POST",
        &format!("{PREFIX}/pair"),
        &[
            ("x-veil-client-id", client_id),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("pairing: {e}"));
    assert_eq!(r.status, 200, "pairing: {}", r.text());
    let v = r.json();
    let pairs = v["pairs"].as_array().cloned().unwrap_or_default();
    assert_eq!(pairs.len(), n, "{v}");
    assert!(
        pairs
            .iter()
            .all(|p| p.get("c2s").is_none() && p.get("s2c").is_none()),
        "the filter must strip the keys: {v}"
    );
    kems.iter()
        .zip(&pks)
        .zip(&pairs)
        .map(|((kem, pk), p)| {
            let pair_id = p["pair_id"].as_str().unwrap_or_default().to_string();
            let ct = URL_SAFE_NO_PAD
                .decode(p["ciphertext"].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("ciphertext: {e}"));
            let ss = kem.decapsulate(&ct).unwrap_or_else(|e| panic!("{e}"));
            let k = keys::derive(&ss, client_id, &pair_id, pk, &ct);
            RawPair {
                pair_id,
                c2s: PartCipher::new(&k.c2s),
                s2c: PartCipher::new(&k.s2c),
            }
        })
        .collect()
}

impl RawPair {
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
        let ctx = ctl.context(method);
        let list: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let path = self
            .c2s
            .seal_b64(Part::RequestUrl, &ctx, path_and_query.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let eh = self
            .c2s
            .seal_b64(Part::RequestHeaders, &ctx, &encode_headers(&list))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut wire = vec![
            ("x-veil-relay".to_string(), ctl.to_header_value()),
            ("x-veil-relay-eh".to_string(), eh),
        ];
        let body = match body {
            Some(b) => {
                wire.push((
                    "content-type".to_string(),
                    "application/octet-stream".to_string(),
                ));
                self.c2s
                    .seal(Part::RequestBody, &ctx, b)
                    .unwrap_or_else(|e| panic!("{e}"))
            }
            None => Vec::new(),
        };
        Encoded {
            method: method.to_string(),
            target: encoded_path(PREFIX, &path),
            headers: wire,
            body,
        }
    }

    /// Opens an encoded answer to the request `method` on `seq`.
    pub fn decode(&self, seq: u64, method: &str, r: &Response) -> Result<Decoded, String> {
        let control = r
            .header("x-veil-relay")
            .ok_or_else(|| format!("not an encoded answer ({}): {}", r.status, r.text()))?;
        let rc = ResponseControl::parse(control).map_err(|e| e.to_string())?;
        if rc.pair_id != self.pair_id || rc.seq != seq {
            return Err(format!("answer for another request: {control}"));
        }
        let ctx = rc.context(method, r.status);
        let eh = r.header("x-veil-relay-eh").ok_or("no x-veil-relay-eh")?;
        let sealed = self
            .s2c
            .open_b64(Part::ResponseHeaders, &ctx, eh)
            .map_err(|e| e.to_string())?;
        let sealed = decode_response_headers(&sealed).map_err(|e| e.to_string())?;
        let body = if rc.body {
            Some(
                self.s2c
                    .open(Part::ResponseBody, &ctx, &r.body)
                    .map_err(|e| e.to_string())?,
            )
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
