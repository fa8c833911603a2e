//! The relay client: discovers the relay (`GET P/relay`), pairs a pool of N pairs
//! (`POST P/pair`), sends each request encoded on an idle pair, and recovers as the
//! protocol's error table says (re-validate the client id, re-pair, wait out an unavailable
//! relay, retry once).

use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use veil_core::relay::v2::{self, ClientOffer, KeyConfig};
use veil_core::relay::wire::{self, encode_headers};
use veil_core::relay::{RelayError, HEADER_CLIENT_ID, HEADER_EH, HEADER_ERROR, HEADER_RELAY};

use crate::error::ClientError;
use crate::pool::{now_secs, Pair, Pool};

/// Default pool size (the relay may announce fewer).
pub const DEFAULT_PAIRS: usize = 5;
/// Default relay URL (the demo stack).
pub const DEFAULT_URL: &str = "http://127.0.0.1:10000/veil";

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pairs to keep (capped by the relay's `max_pairs`). Default 5.
    pub pairs: usize,
    /// A client id held from before (re-validated on first use). Default none.
    pub client_id: Option<String>,
    /// Whole-exchange timeout of each HTTP request. Default 30 s.
    pub timeout: Duration,
    /// Largest (encoded) response body read. Default 64 MiB.
    pub max_response_bytes: u64,
    /// After `relay-unavailable` (the keyservice or its store did not answer: a restart, a
    /// Redis failover), wait this long and send once more on a fresh `seq`. Default 250 ms;
    /// `None` returns the error at once.
    pub unavailable_retry_after: Option<Duration>,
    /// The relay's pinned server key (`veil-keyservice relay-key show`, see
    /// [`parse_server_key`]), taken out of band, never from the relay's own `P/keys` (that
    /// answer passes the hops the relay protects against). Required: the client pairs only
    /// with the holder of this key (`relay-server-auth-failed` otherwise,
    /// docs/relay-protocol.md §2). Default `None`, which [`Client::new`] refuses.
    pub server_key: Option<KeyConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pairs: DEFAULT_PAIRS,
            client_id: None,
            timeout: Duration::from_secs(30),
            max_response_bytes: 64 * 1024 * 1024,
            unavailable_retry_after: Some(Duration::from_millis(250)),
            server_key: None,
        }
    }
}

/// A decoded answer, as the upstream gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The visible headers, then the sealed ones, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the client did, so tests can see recovery happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Encoded requests sent (retries included).
    pub requests: u64,
    /// `POST P/pair` calls that succeeded.
    pub pairings: u64,
    /// Pairs replaced after an error or expiry.
    pub repairs: u64,
    /// Requests sent again after a relay error.
    pub retries: u64,
    /// `GET P/relay` calls.
    pub validations: u64,
}

struct Identity {
    client_id: Option<String>,
    max_pairs: usize,
}

/// One HTTP answer, read whole.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A relay refusal (`x-veil-relay-error`), if this is one.
    fn refusal(&self) -> Option<ClientError> {
        let code = self.header(HEADER_ERROR)?;
        let detail = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(String::from))
            .unwrap_or_default();
        Some(ClientError::Relay {
            code: code.to_string(),
            status: self.status,
            detail,
            authenticated: false,
        })
    }
}

#[derive(Deserialize)]
struct Discovery {
    version: u32,
    client_id: String,
    max_pairs: usize,
}

#[derive(Deserialize)]
struct PairAnswerV2 {
    pairs: Vec<PairEntryV2>,
}

#[derive(Deserialize)]
struct PairEntryV2 {
    pair_id: String,
    enc: String,
    expires_at: u64,
    confirm: String,
}

/// A pinned server key from the command line or a setting: the base64url key configuration
/// `veil-keyservice relay-key show` prints, or a file holding it (or its raw bytes).
pub fn parse_server_key(arg: &str) -> Result<KeyConfig, ClientError> {
    if let Ok(k) = KeyConfig::from_b64(arg) {
        return Ok(k);
    }
    let bytes = std::fs::read(arg).map_err(|e| {
        ClientError::Usage(format!(
            "server key: not a base64url key config, and {arg:?} is not a readable file ({e})"
        ))
    })?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| KeyConfig::from_b64(t).ok())
        .map_or_else(|| KeyConfig::from_bytes(&bytes), Ok)
        .map_err(|e| ClientError::Usage(format!("server key in {arg:?}: {e}")))
}

/// What to do after a relay refusal (docs/relay-protocol.md §6).
enum Recovery {
    Revalidate,
    Repair,
    FreshSeq,
    /// Wait, then a fresh seq: the relay could not reach its state; it often can a moment
    /// later.
    WaitThenFreshSeq(Duration),
    GiveUp,
}

/// The protocol's retry rule ([`v2::retry_after`], docs/relay-protocol.md §6): a
/// non-idempotent request is never sent twice.
fn recovery(method: &str, code: &str, authenticated: bool, opts: &Options) -> Recovery {
    let Some(error) = RelayError::from_code(code) else {
        return Recovery::GiveUp;
    };
    let origin = if authenticated {
        v2::ErrorOrigin::Authenticated
    } else {
        v2::ErrorOrigin::Unauthenticated
    };
    match (
        v2::retry_after(method, error, origin),
        opts.unavailable_retry_after,
    ) {
        (v2::Retry::RevalidateAndRetry, _) => Recovery::Revalidate,
        (v2::Retry::RepairAndRetry, _) => Recovery::Repair,
        (v2::Retry::RetryFreshSeq, _) => Recovery::FreshSeq,
        (v2::Retry::RetryLater, Some(wait)) => Recovery::WaitThenFreshSeq(wait),
        (v2::Retry::RetryLater, None) | (v2::Retry::GiveUp, _) => Recovery::GiveUp,
    }
}

/// A relay client. Shareable between threads; each request uses one idle pair.
pub struct Client {
    /// `scheme://host[:port]` + prefix, no trailing `/`.
    base: String,
    /// The prefix `P` (the base URL's path).
    prefix: String,
    /// `http` or `https`, and the lowercase `host[:port]`: bound into every v2 part.
    scheme: &'static str,
    authority: String,
    agent: ureq::Agent,
    /// The pinned server key configuration.
    server_key: KeyConfig,
    opts: Options,
    identity: Mutex<Identity>,
    /// Serializes discovery and whole-pool pairing.
    setup: Mutex<()>,
    pool: Pool,
    stats: Mutex<Stats>,
}

impl Client {
    /// A client for the relay at `base_url` (e.g. `http://127.0.0.1:10000/veil`). No I/O
    /// until the first request (or `connect`).
    pub fn new(base_url: &str, opts: Options) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        let after_scheme = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| {
                ClientError::Usage("the relay URL must be http:// or https://".into())
            })?;
        let scheme = if base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let (authority, prefix) = match after_scheme.find('/') {
            Some(i) => (
                after_scheme
                    .get(..i)
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                after_scheme.get(i..).unwrap_or_default().to_string(),
            ),
            None => (after_scheme.to_ascii_lowercase(), String::new()),
        };
        if prefix.is_empty() || prefix.contains(['?', '#']) {
            return Err(ClientError::Usage(
                "the relay URL must end with the relay prefix, e.g. http://host:10000/veil".into(),
            ));
        }
        if opts.pairs == 0 {
            return Err(ClientError::Usage("pairs must be at least 1".into()));
        }
        let server_key = opts.server_key.clone().ok_or_else(|| {
            ClientError::Usage(
                "the relay's server key must be pinned (--server-key; `veil-keyservice relay-key show` prints it)".into(),
            )
        })?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .allow_non_standard_methods(true)
            .timeout_global(Some(opts.timeout))
            .user_agent(concat!("veil-relay/", env!("CARGO_PKG_VERSION")))
            .accept(ureq::config::AutoHeaderValue::None)
            .build();
        Ok(Client {
            base,
            prefix,
            scheme,
            authority,
            agent: ureq::Agent::new_with_config(config),
            server_key,
            identity: Mutex::new(Identity {
                client_id: opts.client_id.clone(),
                max_pairs: opts.pairs,
            }),
            opts,
            setup: Mutex::new(()),
            pool: Pool::new(),
            stats: Mutex::new(Stats::default()),
        })
    }

    /// The client id (after discovery).
    pub fn client_id(&self) -> Option<String> {
        self.identity().client_id.clone()
    }

    /// Ids of the pool's pairs (`None` for one in use right now).
    pub fn pair_ids(&self) -> Vec<Option<String>> {
        self.pool.ids()
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn identity(&self) -> std::sync::MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Discovers (or re-validates) the client id and pairs the pool, if not done yet.
    pub fn connect(&self) -> Result<(), ClientError> {
        let _setup = self.setup.lock().unwrap_or_else(|p| p.into_inner());
        if self.identity().client_id.is_none() || self.pool.is_empty() {
            self.discover()?;
            self.pair_all()?;
        }
        Ok(())
    }

    /// `GET P/relay`: keeps the id if the relay says it is valid, takes the fresh one if not.
    fn discover(&self) -> Result<(), ClientError> {
        let mut req = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}/relay", self.base));
        if let Some(id) = self.client_id() {
            req = req.header(HEADER_CLIENT_ID, id);
        }
        let req = req
            .body(Vec::new())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let answer = self.send(req)?;
        self.count(|s| s.validations += 1);
        if let Some(refusal) = answer.refusal() {
            return Err(refusal);
        }
        if answer.status != 200 {
            return Err(ClientError::Protocol(format!(
                "GET {}/relay answered {}",
                self.prefix, answer.status
            )));
        }
        let d: Discovery = serde_json::from_slice(&answer.body)
            .map_err(|e| ClientError::Protocol(format!("relay discovery: {e}")))?;
        let want = 2;
        if d.version != want || d.max_pairs == 0 || d.client_id.is_empty() {
            return Err(ClientError::Protocol(format!(
                "relay discovery: not version {want} with a client id and max_pairs (version {})",
                d.version
            )));
        }
        let mut id = self.identity();
        id.client_id = Some(d.client_id);
        id.max_pairs = d.max_pairs;
        Ok(())
    }

    /// Pairs a whole new pool.
    fn pair_all(&self) -> Result<(), ClientError> {
        let n = {
            let id = self.identity();
            self.opts.pairs.min(id.max_pairs).max(1)
        };
        let pairs = self.pair(n)?;
        self.pool.fill(pairs);
        Ok(())
    }

    /// `POST P/pair` with `n` fresh entries for the pinned key; derives each pair's keys.
    fn pair(&self, n: usize) -> Result<Vec<Pair>, ClientError> {
        let client_id = self
            .client_id()
            .ok_or_else(|| ClientError::Protocol("no client id yet".into()))?;
        self.pair_v2(n, &client_id, &self.server_key)
    }

    /// v2 pairing: per pair, a secret encapsulated to the pinned key and an ephemeral key;
    /// each answer entry must carry the key confirmation only the key's holder can compute.
    fn pair_v2(
        &self,
        n: usize,
        client_id: &str,
        config: &KeyConfig,
    ) -> Result<Vec<Pair>, ClientError> {
        let offers = (0..n)
            .map(|_| ClientOffer::generate_os(config))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ClientError::protocol)?;
        let entries: Vec<serde_json::Value> = offers
            .iter()
            .map(|o| {
                let w = o.wire();
                serde_json::json!({"enc": URL_SAFE_NO_PAD.encode(&w.enc), "pk": URL_SAFE_NO_PAD.encode(&w.pk)})
            })
            .collect();
        let body = serde_json::json!({"key_id": config.key_id(), "pairs": entries});
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/pair", self.base))
            .header(HEADER_CLIENT_ID, client_id)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let answer = self.send(req)?;
        if let Some(refusal) = answer.refusal() {
            return Err(refusal);
        }
        if answer.status != 200 {
            return Err(ClientError::Protocol(format!(
                "POST {}/pair answered {}",
                self.prefix, answer.status
            )));
        }
        let parsed: PairAnswerV2 = serde_json::from_slice(&answer.body)
            .map_err(|e| ClientError::Protocol(format!("pairing answer: {e}")))?;
        if parsed.pairs.len() != n {
            return Err(ClientError::Protocol(format!(
                "pairing answer has {} pairs for {n} entries",
                parsed.pairs.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for (entry, offer) in parsed.pairs.into_iter().zip(offers) {
            let not_authentic = |what: &str| {
                ClientError::ServerNotAuthenticated(format!(
                    "pairing answer: {what}; something between this client and the relay answered in its place, or the pinned key is not the relay's"
                ))
            };
            let enc = URL_SAFE_NO_PAD
                .decode(&entry.enc)
                .map_err(|_| not_authentic("enc is not base64url"))?;
            let confirm = URL_SAFE_NO_PAD
                .decode(&entry.confirm)
                .map_err(|_| not_authentic("confirm is not base64url"))?;
            let answer = v2::PairAnswer {
                pair_id: &entry.pair_id,
                enc: &enc,
                expires_at: entry.expires_at,
                confirm: &confirm,
            };
            let k = offer
                .finish(client_id, &answer)
                .map_err(|_| not_authentic("the key confirmation does not verify"))?;
            out.push(Pair::new(entry.pair_id, &k, entry.expires_at));
        }
        self.count(|s| s.pairings += 1);
        Ok(out)
    }

    /// A fresh pair for one slot (after `relay-pair-unknown`/`-decode-failed`, or expiry).
    fn repair_one(&self) -> Result<Pair, ClientError> {
        let mut fresh = self.pair(1)?;
        self.count(|s| s.repairs += 1);
        fresh
            .pop()
            .ok_or_else(|| ClientError::Protocol("pairing answer is empty".into()))
    }

    /// Sends one request through the relay and returns the decoded answer. `path_and_query`
    /// starts with `/`; `headers` are the application's (lowercased here); `body` `None`
    /// sends no body part.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        if !path_and_query.starts_with('/') {
            return Err(ClientError::Usage("the path must start with '/'".into()));
        }
        if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase() || c == b'-') {
            return Err(ClientError::Usage(
                "the method must be uppercase, like GET".into(),
            ));
        }
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let headers_json = encode_headers(&headers);
        wire::decode_request_headers(&headers_json).map_err(|_| {
            ClientError::Usage(
                "a header is not allowed through the relay (host, content-length, hop-by-hop, origin, referer, sec-*, x-veil-*, or a bad name/value)"
                    .into(),
            )
        })?;
        self.connect()?;
        let mut retried = false;
        // the pair the retry must use (the re-paired one, or the same one on a fresh seq)
        let mut held = None;
        loop {
            let (ticket, mut pair) = match held.take() {
                Some(p) => p,
                None => self
                    .pool
                    .take()
                    .ok_or_else(|| ClientError::Protocol("no pairs".into()))?,
            };
            if pair.expiring(now_secs()) {
                match self.repair_one() {
                    Ok(p) => pair = p,
                    Err(e) => {
                        self.pool.give_back(ticket, pair);
                        return Err(e);
                    }
                }
            }
            let used_id = self.client_id();
            let outcome = self.exchange(&mut pair, method, path_and_query, &headers_json, body);
            let (code, authenticated) = match &outcome {
                Err(ClientError::Relay {
                    code,
                    authenticated,
                    ..
                }) if !retried => (code.clone(), *authenticated),
                _ => {
                    self.pool.give_back(ticket, pair);
                    return outcome;
                }
            };
            match recovery(method, &code, authenticated, &self.opts) {
                // A non-idempotent request is not sent again; but a pair the relay does not
                // know (or cannot open) is replaced, so the caller's next request works.
                Recovery::GiveUp
                    if matches!(code.as_str(), "relay-pair-unknown" | "relay-decode-failed") =>
                {
                    let fresh = self.repair_one().unwrap_or(pair);
                    self.pool.give_back(ticket, fresh);
                    return outcome;
                }
                // Likewise an id the relay no longer accepts is re-validated (and the pool
                // re-paired) for the next request, without sending this one again.
                Recovery::GiveUp if code == "relay-bad-client-id" => {
                    self.pool.give_back(ticket, pair);
                    let _setup = self.setup.lock().unwrap_or_else(|p| p.into_inner());
                    if self.client_id() == used_id
                        && self.discover().and_then(|()| self.pair_all()).is_ok()
                    {
                        self.count(|s| s.repairs += 1);
                    }
                    return outcome;
                }
                Recovery::GiveUp => {
                    self.pool.give_back(ticket, pair);
                    return outcome;
                }
                Recovery::FreshSeq => held = Some((ticket, pair)),
                Recovery::WaitThenFreshSeq(wait) => {
                    std::thread::sleep(wait);
                    held = Some((ticket, pair));
                }
                Recovery::Repair => match self.repair_one() {
                    Ok(fresh) => held = Some((ticket, fresh)),
                    Err(e) => {
                        // the dead pair goes back so its slot is never left empty; its next
                        // use re-pairs again
                        self.pool.give_back(ticket, pair);
                        return Err(e);
                    }
                },
                Recovery::Revalidate => {
                    self.pool.give_back(ticket, pair);
                    let _setup = self.setup.lock().unwrap_or_else(|p| p.into_inner());
                    // another request may have re-validated and re-paired meanwhile
                    if self.client_id() == used_id {
                        self.discover()?;
                        self.pair_all()?;
                        self.count(|s| s.repairs += 1);
                    }
                }
            }
            retried = true;
            self.count(|s| s.retries += 1);
        }
    }

    /// One encoded request on `pair` and its decoded answer.
    fn exchange(
        &self,
        pair: &mut Pair,
        method: &str,
        path_and_query: &str,
        headers_json: &[u8],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let client_id = self
            .client_id()
            .ok_or_else(|| ClientError::Protocol("no client id yet".into()))?;
        self.exchange_v2(pair, &client_id, method, path_and_query, headers_json, body)
    }

    /// One v2 request on `pair`: parts under `c2s` bound to the method, scheme and
    /// authority; the answer under its own key, bound to this request.
    fn exchange_v2(
        &self,
        pair: &mut Pair,
        client_id: &str,
        method: &str,
        path_and_query: &str,
        headers_json: &[u8],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let seq = pair.next_seq();
        let has_body = body.is_some();
        let ex = v2::Exchange {
            pair_id: &pair.id,
            seq,
            method,
            scheme: self.scheme,
            authority: &self.authority,
        };
        let c2s = v2::RequestCipher::new(&pair.keys.c2s);
        let seal = |part, m: &[u8]| {
            c2s.seal(&ex, part, has_body, m)
                .map_err(ClientError::protocol)
        };
        let sealed_url = seal(v2::Part::RequestUrl, path_and_query.as_bytes())?;
        let sealed_eh = seal(v2::Part::RequestHeaders, headers_json)?;
        let binding =
            v2::RequestBinding::of(&sealed_url, &sealed_eh).map_err(ClientError::protocol)?;
        let control = v2::RequestControl {
            client_id,
            pair_id: &pair.id,
            seq,
            body: has_body,
        };
        let origin = self.base.strip_suffix(&self.prefix).unwrap_or(&self.base);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!(
                "{origin}{}",
                wire::encoded_path(&self.prefix, &URL_SAFE_NO_PAD.encode(&sealed_url))
            ))
            .header(HEADER_RELAY, control.to_header_value())
            .header(HEADER_EH, URL_SAFE_NO_PAD.encode(&sealed_eh));
        let sealed_body = match body {
            Some(b) => {
                req = req.header("content-type", "application/octet-stream");
                seal(v2::Part::RequestBody, b)?
            }
            None => Vec::new(),
        };
        let req = req
            .body(sealed_body)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.count(|s| s.requests += 1);
        let answer = self.send(req)?;
        self.decode_v2(pair, &ex, &binding, answer)
    }

    /// Opens a v2 answer. An answer without `x-veil-relay` is at best an unauthenticated
    /// refusal; one with it must open under this request's binding, error answers included.
    fn decode_v2(
        &self,
        pair: &Pair,
        ex: &v2::Exchange<'_>,
        binding: &v2::RequestBinding,
        answer: Answer,
    ) -> Result<Response, ClientError> {
        let Some(control) = answer.header(HEADER_RELAY).map(str::to_string) else {
            return Err(answer.refusal().unwrap_or_else(|| {
                ClientError::Protocol(format!("answer {} is not encoded", answer.status))
            }));
        };
        let rc = v2::ResponseControl::parse(&control).map_err(ClientError::protocol)?;
        if rc.pair_id != pair.id || rc.seq != ex.seq {
            return Err(ClientError::Protocol(
                "answer is for another pair or seq".into(),
            ));
        }
        let cipher = v2::AnswerCipher::new(&pair.keys.s2c, &rc.response_nonce)
            .map_err(ClientError::protocol)?;
        let eh = answer
            .header(HEADER_EH)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or_else(|| ClientError::Protocol("answer has no x-veil-relay-eh".into()))?;
        let open = |part, sealed: &[u8]| {
            cipher
                .open(ex, part, rc.kind, answer.status, binding, sealed)
                .map_err(ClientError::protocol)
        };
        if rc.kind == v2::AnswerKind::Error {
            let code = open(v2::Part::Error, &eh)?;
            let code = String::from_utf8(code)
                .map_err(|_| ClientError::Protocol("sealed error code is not text".into()))?;
            let detail = answer
                .refusal()
                .and_then(|r| match r {
                    ClientError::Relay { detail, .. } => Some(detail),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(ClientError::Relay {
                code,
                status: answer.status,
                detail,
                authenticated: true,
            });
        }
        let sealed_headers = open(v2::Part::ResponseHeaders, &eh)?;
        let sealed_headers =
            wire::decode_response_headers(&sealed_headers).map_err(ClientError::protocol)?;
        let body = if rc.kind == v2::AnswerKind::HeadersBody {
            open(v2::Part::ResponseBody, &answer.body)?
        } else if answer.body.is_empty() {
            Vec::new()
        } else {
            return Err(ClientError::Protocol(
                "answer has a body but no body part".into(),
            ));
        };
        let mut headers: Vec<(String, String)> = answer
            .headers
            .into_iter()
            .filter(|(n, _)| {
                !n.starts_with("x-veil-relay")
                    && !matches!(
                        n.as_str(),
                        "content-type" | "content-length" | "transfer-encoding"
                    )
            })
            .collect();
        headers.extend(sealed_headers);
        Ok(Response {
            status: answer.status,
            headers,
            body,
        })
    }

    fn send(&self, req: ureq::http::Request<Vec<u8>>) -> Result<Answer, ClientError> {
        let mut resp = self
            .agent
            .run(req)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.opts.max_response_bytes)
            .read_to_vec()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}
