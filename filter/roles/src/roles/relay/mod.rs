//! The relay role (docs/relay-protocol.md, protocol v2): the filter's side of Veil Relay. It
//! runs before the route rules, on every request when `relay` is configured.
//!
//! ```text
//! request  headers ─┬─ P/relay, P/echo ─────────────────────────► answered (local reply)
//!                   ├─ P/keys ─► Keys (callout) ──────────────────► answered
//!                   ├─ P/pair ─► PairBody ─(end)─► Pairing (callout) ─► answered
//!                   ├─ P/x/… + x-veil-relay ─► pair in slot? ──yes──► replay check
//!                   │                           └─no─► AwaitPair (GET callout) ─┘
//!                   │    replay: local ─ slot CAS ─┐   global ─ AwaitSeq (callout) ─┐
//!                   │                              ▼                                ▼
//!                   │              decode path + headers ─► Body ─(end)─► decode ─► Forwarded
//!                   │                                     └ (no body part) ─────────► Forwarded
//!                   ├─ plaintext on a relayed route (not pass-through) ─► relay-required
//!                   └─ anything else ─► not the relay's (route rules go on)
//!
//! response (Forwarded only) headers: fresh response nonce → answer key; seal content
//!                           headers (part 4), set x-veil-relay
//!                           ─► Body ─(end)─► seal body (part 5) ─► Done
//! ```
//!
//! Every failure answers a problem+json with `x-veil-relay-error` and stops the stream: a
//! request that does not decode never reaches the upstream, a response that cannot be
//! sealed never reaches the client in plaintext (after its headers left, Envoy resets it).
//! Once the request named a known pair of its client, the refusals the protocol lists as
//! authenticated (decode-failed, header-not-allowed, replay, route-not-allowed, too-large)
//! also carry the code sealed under a fresh answer key and the request's binding (flags
//! `e`), so the client can tell the relay's refusal from a hop's.
//!
//! Of the wire (unsealed) request headers only an allow-list reaches the upstream
//! ([`veil_core::relay::v2::is_forwarded_wire_header`] plus `relay.forward_wire_headers`):
//! everything a hop adds (`cookie`, `authorization`, `x-forwarded-*`, …) is dropped.

pub mod endpoints;
pub mod pairs;

use std::borrow::Cow;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use veil_core::config::{FilterConfig, RelayConfig, ReplayMode};
use veil_core::header_map::HeaderMap;
use veil_core::relay::routes::is_plain_path;
use veil_core::relay::v2::{
    self, AnswerCipher, AnswerKind, Exchange, RequestBinding, RequestControl, ResponseControl,
    RESPONSE_NONCE_LEN,
};
use veil_core::relay::wire::{
    encode_headers, is_visible_response_header, sealed_path_part, TAG_LEN,
};
use veil_core::relay::{RelayError, HEADER_CLIENT_ID, HEADER_EH, HEADER_RELAY};

use veil_core::keyservice_answer::{parse_relay, PairAnswer};

use crate::clock;
use crate::host::{
    Action, BodyKind, CalloutAnswer, CalloutId, Direction, HeaderKind, HostError, StreamHost,
};
use crate::keyservice;
use crate::metrics::Metrics;
use crate::relay_cache::Pair;
use crate::reply::{refuse, refuse_with, Refusal};
use crate::worker::Worker;

const REQ: HeaderKind = HeaderKind::RequestHeaders;
const RESP: HeaderKind = HeaderKind::ResponseHeaders;

/// An encoded request as received, owned (it outlives the header callback): the control
/// header, the request line the parts are bound to, and the sealed path and headers parts.
struct Control {
    client_id: String,
    pair_id: String,
    seq: u64,
    body: bool,
    method: String,
    /// `:scheme` and `:authority` (lowercase) as received, or `relay.public_origin`'s.
    scheme: String,
    authority: String,
    sealed_url: Vec<u8>,
    sealed_eh: Vec<u8>,
    /// The tags of the sealed path and headers parts: every answer's AD holds them.
    binding: RequestBinding,
    /// The wire `content-length` (the body part's), if given.
    content_length: Option<usize>,
}

impl Control {
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            pair_id: &self.pair_id,
            seq: self.seq,
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
        }
    }
}

/// What an answer to a request needs: the pair's `s2c`, and the request's pair id, `seq` and
/// binding. Known from the moment the request named a known pair of its client.
#[derive(Clone)]
struct AnswerTo {
    pair: Rc<Pair>,
    pair_id: String,
    seq: u64,
    binding: RequestBinding,
}

impl AnswerTo {
    fn new(pair: &Rc<Pair>, ctl: &Control) -> AnswerTo {
        AnswerTo {
            pair: Rc::clone(pair),
            pair_id: ctl.pair_id.clone(),
            seq: ctl.seq,
            binding: ctl.binding,
        }
    }

    /// The answer AD covers the pair, `seq`, flags, status and binding only; the request
    /// line is committed to by the binding.
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            pair_id: &self.pair_id,
            seq: self.seq,
            method: "",
            scheme: "",
            authority: "",
        }
    }

    /// A fresh answer key: 32 random bytes from the host (the response nonce) and the
    /// cipher derived from them and `s2c`.
    fn cipher(
        &self,
        h: &dyn StreamHost,
    ) -> Result<([u8; RESPONSE_NONCE_LEN], AnswerCipher), RelayError> {
        let mut rn = [0u8; RESPONSE_NONCE_LEN];
        h.fill_random(&mut rn)
            .map_err(|_| RelayError::Unavailable("no randomness"))?;
        Ok((rn, AnswerCipher::new(&self.pair.s2c, &rn)?))
    }

    fn control(&self, rn: [u8; RESPONSE_NONCE_LEN], kind: AnswerKind) -> String {
        ResponseControl {
            pair_id: &self.pair_id,
            seq: self.seq,
            response_nonce: rn,
            kind,
        }
        .to_header_value()
    }
}

/// The refusals the protocol authenticates on a known pair (docs/relay-protocol.md §6).
fn is_authenticated_error(e: RelayError) -> bool {
    matches!(
        e,
        RelayError::DecodeFailed(_)
            | RelayError::HeaderNotAllowed(_)
            | RelayError::Replay
            | RelayError::RouteNotAllowed
            | RelayError::TooLarge
    )
}

/// An authenticated request's decoded path and headers.
struct Plain {
    path: String,
    headers: Vec<(String, String)>,
}

/// Opens the path and headers parts (which authenticates the control header and the request
/// line: pair, `seq`, method, scheme, authority and flags are in every part's AD) and checks
/// the decoded path and headers, and the announced body size.
fn decode_parts(
    config: &FilterConfig,
    relay: &RelayConfig,
    ctl: &Control,
    pair: &Pair,
) -> Result<Plain, RelayError> {
    let ex = ctl.exchange();
    let path = pair
        .c2s
        .open(&ex, v2::Part::RequestUrl, ctl.body, &ctl.sealed_url)?;
    let path =
        String::from_utf8(path).map_err(|_| RelayError::DecodeFailed("the path is not UTF-8"))?;
    let eh = zeroize::Zeroizing::new(pair.c2s.open(
        &ex,
        v2::Part::RequestHeaders,
        ctl.body,
        &ctl.sealed_eh,
    )?);
    let headers = v2::decode_request_headers(&eh, relay.allow_sealed_cookie)?;
    check_route(config, relay, &path)?;
    // A body part announced over the limit is refused here, once the pair is known (so the
    // refusal is authenticated) and before the window moves.
    if ctl.body
        && ctl
            .content_length
            .is_some_and(|n| n > relay.max_body_bytes.saturating_add(TAG_LEN))
    {
        return Err(RelayError::TooLarge);
    }
    Ok(Plain { path, headers })
}

enum Req {
    /// Answered by the relay itself (endpoint or refusal): nothing goes upstream.
    Answered,
    /// `GET P/keys`: waiting for the keyservice's key configurations.
    Keys { id: CalloutId },
    /// `POST P/pair`: collecting the pairing body.
    PairBody { client_id: String },
    /// Waiting for the keyservice's pairing answer.
    Pairing {
        id: CalloutId,
        client_id: String,
        wanted: usize,
    },
    /// An encoded request waiting for its pair (`GET /v1/relay/pairs/{id}`).
    AwaitPair { id: CalloutId, ctl: Box<Control> },
    /// An encoded request waiting for the global replay check.
    AwaitSeq {
        id: CalloutId,
        ctl: Box<Control>,
        pair: Rc<Pair>,
        plain: Plain,
    },
    /// Decoded path and headers are set; the body part is being collected.
    Body,
    /// No body part: any wire body is refused.
    NoBody,
    /// The upstream has the plaintext request.
    Forwarded,
}

enum Resp {
    /// Not an encoded request (or not forwarded yet): nothing to encode.
    Idle,
    /// Waiting for the upstream's headers.
    Pending,
    /// Headers encoded under this answer's key; the body part is being collected.
    Body {
        status: u16,
        cipher: Box<AnswerCipher>,
    },
    Done,
}

pub struct RelayStream {
    req: Req,
    resp: Resp,
    /// The request's pair and binding once it named a known pair of its client: answers
    /// (and authenticated refusals) are sealed for it.
    answer_to: Option<AnswerTo>,
    /// The accepted request's exchange (the body part opens under it).
    session: Option<Box<Control>>,
    /// Buffered body sizes last reported (for the trailer callbacks).
    req_size: usize,
    /// The request body is complete (it may arrive while a callout is pending).
    req_done: bool,
    resp_size: usize,
}

/// The relay's clock is the wall clock: pair lifetimes come from the keyservice.
fn now_ms(h: &dyn StreamHost) -> i64 {
    clock::wall_ms(h).unwrap_or(0)
}

fn now_secs(h: &dyn StreamHost) -> i64 {
    now_ms(h) / 1000
}

fn hostcall(what: &'static str) -> impl Fn(HostError) -> RelayError {
    move |_| RelayError::Unavailable(what)
}

/// Sends a relay callout from this stream.
fn send(
    h: &dyn StreamHost,
    w: &Worker,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<CalloutId, RelayError> {
    keyservice::send(h, &w.config.keyservice, method, path, body)
        .map_err(|_| RelayError::Unavailable("cannot call the keyservice"))
}

fn refusal(e: RelayError) -> Refusal {
    Refusal::new(e.problem_kind(), e.to_string())
}

fn relay_of(w: &Worker) -> Result<&RelayConfig, RelayError> {
    w.config
        .relay
        .as_ref()
        .ok_or(RelayError::Unavailable("relay is not configured"))
}

/// base64url without padding of a sealed part, or the refusal for a part that is not.
fn unb64(s: &str, what: &'static str) -> Result<Vec<u8>, RelayError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| RelayError::DecodeFailed(what))
}

impl RelayStream {
    fn new() -> RelayStream {
        RelayStream {
            req: Req::Answered,
            resp: Resp::Idle,
            answer_to: None,
            session: None,
            req_size: 0,
            req_done: false,
            resp_size: 0,
        }
    }

    /// Takes the request if it is the relay's: under the prefix, carrying `x-veil-relay`, or
    /// plaintext on a relayed route. `None`: not the relay's (the route rules go on).
    pub fn start(
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        path: &str,
        end_of_stream: bool,
    ) -> Option<(RelayStream, Action)> {
        let relay = w.config.relay.as_ref()?;
        let plain = path.split_once('?').map_or(path, |(p, _)| p);
        let prefix = relay.prefix.trim_end_matches('/');
        let under = plain
            .strip_prefix(prefix)
            .filter(|r| r.is_empty() || r.starts_with('/'));
        let mut s = RelayStream::new();
        // Outside the prefix no hostcall: other routes (the seal path) pay one path check.
        let result = match under {
            None if relay.requires_relay(plain) => Err(RelayError::RelayRequired),
            None => return None,
            Some(rest) => match head.get(HEADER_RELAY) {
                Some(value) => s.encoded(h, w, head, path, &value, end_of_stream),
                None => s.endpoint(h, w, head, rest, end_of_stream),
            },
        };
        let action = match result {
            Ok(a) => a,
            Err(e) => s.fail(h, w, e),
        };
        Some((s, action))
    }

    /// Refuses the stream (request or response side) with `e`; on a known pair, with the
    /// code also sealed for the client when the protocol authenticates it.
    fn fail(&mut self, h: &dyn StreamHost, w: &Worker, e: RelayError) -> Action {
        self.req = Req::Answered;
        self.resp = Resp::Done;
        Metrics::add(h, w.metrics.relay_refused, 1);
        let sealed = self
            .answer_to
            .take()
            .filter(|_| is_authenticated_error(e))
            .and_then(|to| {
                let (rn, cipher) = to.cipher(h).ok()?;
                let code = cipher
                    .seal(
                        &to.exchange(),
                        v2::Part::Error,
                        AnswerKind::Error,
                        e.status(),
                        &to.binding,
                        e.code().as_bytes(),
                    )
                    .ok()?;
                Some((
                    to.control(rn, AnswerKind::Error),
                    URL_SAFE_NO_PAD.encode(code),
                ))
            });
        match sealed {
            Some((ctl, eh)) => refuse_with(
                h,
                &w.metrics,
                &refusal(e),
                &[(HEADER_RELAY, &ctl), (HEADER_EH, &eh)],
            ),
            None => refuse(h, &w.metrics, &refusal(e)),
        }
    }

    /// `P/relay`, `P/keys`, `P/pair`, `P/echo[/msg]`; anything else under the prefix is
    /// refused.
    fn endpoint(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        rest: &str,
        eos: bool,
    ) -> Result<Action, RelayError> {
        let method = head.get(":method").unwrap_or_default();
        match (&*method, rest) {
            ("GET" | "HEAD", "/relay") => {
                let presented = head.get(HEADER_CLIENT_ID);
                endpoints::discovery(h, w, method == "HEAD", presented.as_deref())?;
                Ok(Action::Pause)
            }
            ("GET" | "HEAD", "/keys") => {
                let id = send(h, w, "GET", "/v1/relay/keys", None)?;
                self.req = Req::Keys { id };
                Ok(Action::Pause)
            }
            ("POST", "/pair") => {
                let relay = relay_of(w)?;
                let client_id = head
                    .get(HEADER_CLIENT_ID)
                    .filter(|id| relay.client_id_secret.verify(id))
                    .ok_or(RelayError::BadClientId)?
                    .into_owned();
                if eos {
                    return Err(RelayError::BadRequest("pairing without a body"));
                }
                // Headers stop here (StopIteration: the body still comes) until the pairing
                // is answered locally.
                self.req = Req::PairBody { client_id };
                Ok(Action::Pause)
            }
            ("GET" | "HEAD", r) if r == "/echo" || r.starts_with("/echo/") => {
                endpoints::echo(h, r.strip_prefix("/echo").unwrap_or_default(), now_ms(h))?;
                Ok(Action::Pause)
            }
            (_, r) if sealed_path_part("", r).is_some() => Err(RelayError::BadRequest(
                "an encoded path without x-veil-relay",
            )),
            _ => Err(RelayError::RouteNotAllowed),
        }
    }

    /// The pairing body is complete: ask the keyservice.
    fn send_pairing(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        size: usize,
    ) -> Result<(), RelayError> {
        let Req::PairBody { client_id } = std::mem::replace(&mut self.req, Req::Answered) else {
            return Ok(());
        };
        let body = h
            .body(BodyKind::Request, size)
            .map_err(hostcall("reading the pairing body failed"))?;
        let (request, wanted) = endpoints::pairing_request(w, &client_id, &body)?;
        let id = send(h, w, "POST", "/v1/relay/v2/pairs", Some(&request))?;
        Metrics::add(h, w.metrics.relay_pairings, 1);
        self.req = Req::Pairing {
            id,
            client_id,
            wanted,
        };
        Ok(())
    }

    /// An encoded request's headers.
    fn encoded(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        path: &str,
        value: &str,
        eos: bool,
    ) -> Result<Action, RelayError> {
        let relay = relay_of(w)?;
        // The parser refuses a `seq` above 2^53 − 1 (`v2::MAX_SEQ`: the keyservice's
        // window, Redis Lua numbers, is exact up to there), in both replay modes alike.
        let c = RequestControl::parse(value)?;
        if !relay.client_id_secret.verify(c.client_id) {
            return Err(RelayError::BadClientId);
        }
        let sealed_url = sealed_path_part(&relay.prefix, path)
            .ok_or(RelayError::BadRequest("the path is not P/x/<sealed path>"))?;
        let sealed_url = unb64(sealed_url, "the sealed path is not base64url")?;
        let sealed_eh = head
            .get(HEADER_EH)
            .ok_or(RelayError::BadRequest("x-veil-relay-eh is missing"))?;
        let sealed_eh = unb64(&sealed_eh, "x-veil-relay-eh is not base64url")?;
        let binding = RequestBinding::of(&sealed_url, &sealed_eh)?;
        if c.body && eos {
            return Err(RelayError::BadRequest(
                "flags say a body part follows, none does",
            ));
        }
        // The request line the client addressed: as Envoy received it, or the configured
        // public origin when a hop in front rewrites it (docs/relay-protocol.md §3).
        let (scheme, authority) = match &relay.public_origin {
            Some(o) => (o.scheme.clone(), o.authority.clone()),
            None => (
                head.get(":scheme")
                    .ok_or(RelayError::BadRequest("the request has no :scheme"))?
                    .to_ascii_lowercase(),
                head.get(":authority")
                    .ok_or(RelayError::BadRequest("the request has no :authority"))?
                    .to_ascii_lowercase(),
            ),
        };
        let ctl = Box::new(Control {
            client_id: c.client_id.to_string(),
            pair_id: c.pair_id.to_string(),
            seq: c.seq,
            body: c.body,
            method: head.get(":method").unwrap_or_default().into_owned(),
            scheme,
            authority,
            sealed_url,
            sealed_eh,
            binding,
            content_length: head
                .get("content-length")
                .and_then(|l| l.trim().parse::<usize>().ok()),
        });
        Metrics::add(h, w.metrics.relay_requests, 1);
        let now = now_secs(h);
        // A request with a body part waits at its headers until the body is open: nothing
        // goes upstream before the whole request authenticated.
        let held = if ctl.body {
            Action::Pause
        } else {
            Action::Continue
        };
        match relay.replay.mode {
            ReplayMode::Local => match self.accept_local(h, w, ctl, head)? {
                None => Ok(held),
                Some(ctl) => self.fetch_pair(h, w, ctl),
            },
            ReplayMode::Global => match pairs::lookup(h, w, &ctl.pair_id, &ctl.client_id, now)? {
                Some(pair) => self.check_seq(h, w, ctl, pair),
                None => self.fetch_pair(h, w, ctl),
            },
        }
    }

    fn fetch_pair(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        ctl: Box<Control>,
    ) -> Result<Action, RelayError> {
        if pairs::is_unknown(w, &ctl.pair_id, now_ms(h)) {
            return Err(RelayError::PairUnknown);
        }
        let path = format!("/v1/relay/pairs/{}", ctl.pair_id);
        let id = send(h, w, "GET", &path, None)?;
        Metrics::add(h, w.metrics.relay_pair_fetches, 1);
        self.req = Req::AwaitPair { id, ctl };
        Ok(Action::Pause)
    }

    fn check_seq(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        ctl: Box<Control>,
        pair: Rc<Pair>,
    ) -> Result<Action, RelayError> {
        self.answer_to = Some(AnswerTo::new(&pair, &ctl));
        // Authenticate before the keyservice moves the window.
        let plain = decode_parts(&w.config, relay_of(w)?, &ctl, &pair)?;
        let path = format!("/v1/relay/pairs/{}/seq", ctl.pair_id);
        let body = format!("{{\"seq\":{}}}", ctl.seq);
        let id = send(h, w, "POST", &path, Some(body.as_bytes()))?;
        self.req = Req::AwaitSeq {
            id,
            ctl,
            pair,
            plain,
        };
        Ok(Action::Pause)
    }

    /// Hands Envoy the plaintext request headers of an accepted request: of the wire headers
    /// only the allow-list stays (pseudo-headers, `transfer-encoding` framing, and
    /// [`v2::is_forwarded_wire_header`] with `relay.forward_wire_headers`),
    /// `x-forwarded-proto` is set to the bound scheme, then the decoded ones are set (a
    /// decoded header replaces a wire header of the same name).
    fn apply(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        ctl: Box<Control>,
        plain: Plain,
        wire: &HeaderMap,
    ) -> Result<(), RelayError> {
        let relay = relay_of(w)?;
        let wire_len = wire
            .get("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        // Names are read in place (no owned copy of the map); a decoded header replaces the
        // wire header of its name anyway, so that one is not removed first.
        let mut removed: Vec<Cow<'_, str>> = Vec::new();
        for (name, _) in wire.iter() {
            let name = String::from_utf8_lossy(name);
            let keep = name.starts_with(':')
                || name == "transfer-encoding"
                || (name != "content-length"
                    && name != "content-type"
                    && v2::is_forwarded_wire_header(&name, &relay.forward_wire_headers));
            let replaced = name == "x-forwarded-proto"
                || (name == "content-length" && ctl.body && wire_len.is_some())
                || plain.headers.iter().any(|(n, _)| *n == *name);
            if !keep && !replaced && !removed.contains(&name) {
                h.remove_header(REQ, &name)
                    .map_err(hostcall("removing a header failed"))?;
                removed.push(name);
            }
        }
        // Envoy's routing needs `x-forwarded-proto` (the connection manager sets it): it
        // carries the scheme the request was authenticated under, not a hop's value.
        h.replace_header(REQ, "x-forwarded-proto", &ctl.scheme)
            .map_err(hostcall("setting x-forwarded-proto failed"))?;
        let mut set: Vec<&str> = Vec::new();
        for (name, value) in &plain.headers {
            if set.contains(&name.as_str()) {
                h.add_header(REQ, name, value)
            } else {
                set.push(name);
                h.replace_header(REQ, name, value)
            }
            .map_err(hostcall("setting a header failed"))?;
        }
        if ctl.body {
            // The plaintext body is the body part minus its tag: the upstream gets the
            // length the application's request had (chunked stays chunked).
            if let Some(len) = wire_len {
                let n = len.checked_sub(TAG_LEN).ok_or(RelayError::DecodeFailed(
                    "the body part is shorter than a tag",
                ))?;
                h.replace_header(REQ, "content-length", &n.to_string())
                    .map_err(hostcall("setting content-length failed"))?;
            }
        }
        h.replace_header(REQ, ":path", &plain.path)
            .map_err(hostcall("setting :path failed"))?;
        self.req = if ctl.body { Req::Body } else { Req::NoBody };
        self.resp = Resp::Pending;
        self.session = Some(ctl);
        Ok(())
    }

    /// Local replay mode: authenticate, move the window, apply. `Ok(Some(ctl))`: the pair is
    /// not in its slot (fetch it; the control comes back for that).
    fn accept_local(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        ctl: Box<Control>,
        wire: &HeaderMap,
    ) -> Result<Option<Box<Control>>, RelayError> {
        let relay = relay_of(w)?;
        let mut known = None;
        let accepted = pairs::accept_local(
            h,
            w,
            &ctl.pair_id,
            &ctl.client_id,
            ctl.seq,
            now_secs(h),
            |pair| {
                known = Some(AnswerTo::new(pair, &ctl));
                decode_parts(&w.config, relay, &ctl, pair)
            },
        );
        if known.is_some() {
            self.answer_to = known;
        }
        match accepted? {
            Some(a) => {
                if a.touch {
                    // Fire and forget: its answer reaches `on_callout` as an id not ours.
                    let path = format!("/v1/relay/pairs/{}", ctl.pair_id);
                    let _ = send(h, w, "GET", &path, None);
                }
                self.apply(h, w, ctl, a.value, wire)?;
                Ok(None)
            }
            None => Ok(Some(ctl)),
        }
    }

    /// A keyservice answer to one of this stream's callouts. False if `id` is not ours.
    pub fn on_callout(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        id: CalloutId,
        answer: &CalloutAnswer,
    ) -> bool {
        let ours = match &self.req {
            Req::Keys { id: t }
            | Req::Pairing { id: t, .. }
            | Req::AwaitPair { id: t, .. }
            | Req::AwaitSeq { id: t, .. } => *t == id,
            _ => false,
        };
        if !ours {
            return false;
        }
        let (status, body) = (answer.status, &answer.body[..]);
        let result = match std::mem::replace(&mut self.req, Req::Answered) {
            Req::Keys { .. } => endpoints::keys_answer(h, status, body).map(|()| false),
            Req::Pairing {
                client_id, wanted, ..
            } => endpoints::pairing_answer(h, w, &client_id, wanted, status, body, now_secs(h))
                .map(|()| false),
            Req::AwaitPair { ctl, .. } => self.pair_answer(h, w, ctl, status, body),
            Req::AwaitSeq {
                ctl, pair, plain, ..
            } => match status {
                Some(200) => h
                    .headers(REQ)
                    .map_err(hostcall("reading the headers failed"))
                    .and_then(|wire| self.apply(h, w, ctl, plain, &wire))
                    .map(|()| true),
                Some(409) => {
                    Metrics::add(h, w.metrics.relay_replays, 1);
                    Err(RelayError::Replay)
                }
                Some(404) => {
                    self.answer_to = None;
                    pairs::forget(h, w, &ctl.pair_id);
                    pairs::mark_unknown(w, &ctl.pair_id, now_ms(h));
                    drop(pair);
                    Err(RelayError::PairUnknown)
                }
                _ => Err(RelayError::Unavailable("keyservice sequence check failed")),
            },
            other => {
                self.req = other;
                return true;
            }
        };
        match result {
            // A body still coming is finished by its callback (which then continues).
            Ok(true) if matches!(self.req, Req::Body) && !self.req_done => {}
            Ok(true) => {
                let opened = match self.req {
                    Req::Body => self.open_body(h, self.req_size),
                    _ => Ok(()),
                };
                let resumed = opened.and_then(|()| {
                    h.resume(Direction::Request)
                        .map_err(|_| RelayError::Unavailable("cannot resume the request"))
                });
                if let Err(e) = resumed {
                    self.fail(h, w, e);
                }
            }
            // Answered locally, or waiting for another callout.
            Ok(false) => {}
            Err(e) => {
                self.fail(h, w, e);
            }
        }
        true
    }

    /// The pair fetched by id: install it, then the replay check. Ok(true): forwarded.
    fn pair_answer(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        ctl: Box<Control>,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<bool, RelayError> {
        match status {
            Some(200) => {}
            Some(404) => {
                pairs::mark_unknown(w, &ctl.pair_id, now_ms(h));
                return Err(RelayError::PairUnknown);
            }
            _ => return Err(RelayError::Unavailable("keyservice pair fetch failed")),
        }
        let answer: PairAnswer = parse_relay(body)?;
        if answer.pair_id != ctl.pair_id {
            return Err(RelayError::Unavailable("keyservice answered another pair"));
        }
        // The pair is bound to the client id it was made for.
        let owner = answer.client_id.clone().unwrap_or_default();
        if owner != ctl.client_id {
            return Err(RelayError::PairUnknown);
        }
        let now = now_secs(h);
        if now >= answer.expires_at {
            return Err(RelayError::PairUnknown);
        }
        let pair = endpoints::install(h, w, &answer, &owner, true, now)?;
        let relay = relay_of(w)?;
        // The request's headers as they were on arrival (nothing changed them meanwhile).
        let wire = h
            .headers(REQ)
            .map_err(hostcall("reading the headers failed"))?;
        match relay.replay.mode {
            ReplayMode::Local => match self.accept_local(h, w, ctl, &wire)? {
                None => Ok(true),
                // Installed, yet not in its slot: a flood of pairings took it at once.
                Some(_) => Err(RelayError::Unavailable("relay slot contended")),
            },
            ReplayMode::Global => self.check_seq(h, w, ctl, pair).map(|_| false),
        }
    }

    /// Opens the body part in place of the buffered body.
    fn open_body(&mut self, h: &dyn StreamHost, size: usize) -> Result<(), RelayError> {
        let ctl = self
            .session
            .as_ref()
            .ok_or(RelayError::Unavailable("no session"))?;
        let pair = self
            .answer_to
            .as_ref()
            .map(|a| Rc::clone(&a.pair))
            .ok_or(RelayError::Unavailable("no session"))?;
        let sealed = h
            .body(BodyKind::Request, size)
            .map_err(hostcall("reading the body failed"))?;
        let body = zeroize::Zeroizing::new(pair.c2s.open(
            &ctl.exchange(),
            v2::Part::RequestBody,
            true,
            &sealed,
        )?);
        h.replace_body(BodyKind::Request, size, &body)
            .map_err(hostcall("replacing the body failed"))?;
        self.req = Req::Forwarded;
        Ok(())
    }

    pub fn on_request_body(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        size: usize,
        eos: bool,
    ) -> Action {
        self.req_size = size;
        self.req_done |= eos;
        let limit = w
            .config
            .relay
            .as_ref()
            .map_or(0, |r| r.max_body_bytes)
            .saturating_add(TAG_LEN);
        let step = match &self.req {
            Req::PairBody { .. } if size > endpoints::MAX_PAIRING_BODY => {
                Err(RelayError::BadRequest("pairing body too large"))
            }
            Req::PairBody { .. } if !eos => return Action::Pause,
            Req::PairBody { .. } => self.send_pairing(h, w, size).map(|()| Action::Pause),
            Req::Body if size > limit => Err(RelayError::TooLarge),
            Req::Body if !eos => return Action::Pause,
            Req::Body => self.open_body(h, size).map(|()| Action::Continue),
            Req::NoBody if size > 0 => Err(RelayError::BadRequest(
                "a body without a body part (flags uh)",
            )),
            Req::NoBody | Req::Forwarded => return Action::Continue,
            Req::AwaitPair { .. } | Req::AwaitSeq { .. } if size > limit => {
                Err(RelayError::TooLarge)
            }
            Req::Answered
            | Req::Keys { .. }
            | Req::Pairing { .. }
            | Req::AwaitPair { .. }
            | Req::AwaitSeq { .. } => return Action::Pause,
        };
        step.unwrap_or_else(|e| self.fail(h, w, e))
    }

    /// HTTP/2 requests with trailers never see `end_of_stream` in the body callback.
    pub fn on_request_trailers(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        let size = self.req_size;
        match self.req {
            Req::PairBody { .. } | Req::Body | Req::NoBody => {
                self.on_request_body(h, w, size, true)
            }
            Req::Forwarded => Action::Continue,
            _ => Action::Pause,
        }
    }

    pub fn on_response_headers(&mut self, h: &dyn StreamHost, w: &Worker, eos: bool) -> Action {
        if !matches!(self.resp, Resp::Pending) {
            return Action::Continue;
        }
        match self.encode_headers(h, w, eos) {
            Ok(resp) => {
                self.resp = resp;
                Action::Continue
            }
            Err(e) => self.fail(h, w, e),
        }
    }

    /// Seals the response's content headers (part 4) under a fresh answer key and sets the
    /// response control header (with the response nonce).
    fn encode_headers(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        eos: bool,
    ) -> Result<Resp, RelayError> {
        let relay = relay_of(w)?;
        let to = self
            .answer_to
            .clone()
            .ok_or(RelayError::Unavailable("no session"))?;
        let headers = h
            .headers(RESP)
            .map_err(hostcall("reading the response failed"))?;
        let status = headers
            .get(":status")
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or(RelayError::Unavailable("the response has no status"))?;
        let body = !eos;
        let mut len = None;
        // Names and values are read in place (borrowed when UTF-8, as they are from Envoy).
        let mut sealed: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
        for (name, value) in headers.iter() {
            let name = String::from_utf8_lossy(name);
            if is_visible_response_header(&name, &relay.visible_response_headers) {
                continue;
            }
            let value = String::from_utf8_lossy(value);
            if name == "content-length" {
                len = value.trim().parse::<usize>().ok();
            }
            sealed.push((name, value));
        }
        if body && len.is_some_and(|n| n > relay.max_body_bytes) {
            return Err(RelayError::TooLarge);
        }
        let kind = if body {
            AnswerKind::HeadersBody
        } else {
            AnswerKind::Headers
        };
        let (rn, cipher) = to.cipher(h)?;
        let eh = cipher.seal(
            &to.exchange(),
            v2::Part::ResponseHeaders,
            kind,
            status,
            &to.binding,
            &encode_headers(&sealed),
        )?;
        // `content-type` (and `content-length` of a body) are set below: replaced, not
        // removed first.
        let mut removed: Vec<&str> = Vec::new();
        for (name, _) in &sealed {
            let replaced =
                name == "content-type" || (name == "content-length" && body && len.is_some());
            if !replaced && !removed.contains(&name.as_ref()) {
                h.remove_header(RESP, name)
                    .map_err(hostcall("removing a header failed"))?;
                removed.push(name);
            }
        }
        let set = |n: &str, v: &str| {
            h.replace_header(RESP, n, v)
                .map_err(hostcall("setting a header failed"))
        };
        set(HEADER_RELAY, &to.control(rn, kind))?;
        set(HEADER_EH, &URL_SAFE_NO_PAD.encode(eh))?;
        set("content-type", "application/octet-stream")?;
        if let (true, Some(n)) = (body, len) {
            set("content-length", &(n + TAG_LEN).to_string())?;
        }
        Ok(if body {
            Resp::Body {
                status,
                cipher: Box::new(cipher),
            }
        } else {
            Resp::Done
        })
    }

    fn seal_body(&mut self, h: &dyn StreamHost, size: usize) -> Result<(), RelayError> {
        let Resp::Body { status, cipher } = std::mem::replace(&mut self.resp, Resp::Done) else {
            return Ok(());
        };
        let to = self
            .answer_to
            .as_ref()
            .ok_or(RelayError::Unavailable("no session"))?;
        let body = zeroize::Zeroizing::new(
            h.body(BodyKind::Response, size)
                .map_err(hostcall("reading the response body failed"))?,
        );
        let sealed = cipher.seal(
            &to.exchange(),
            v2::Part::ResponseBody,
            AnswerKind::HeadersBody,
            status,
            &to.binding,
            &body,
        )?;
        h.replace_body(BodyKind::Response, size, &sealed)
            .map_err(hostcall("replacing the response body failed"))?;
        Ok(())
    }

    pub fn on_response_body(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        size: usize,
        eos: bool,
    ) -> Action {
        if !matches!(self.resp, Resp::Body { .. }) {
            return Action::Continue;
        }
        self.resp_size = size;
        let limit = w.config.relay.as_ref().map_or(0, |r| r.max_body_bytes);
        if size > limit {
            // Headers already left: Envoy resets the stream (nothing leaves in plaintext).
            return self.fail(h, w, RelayError::TooLarge);
        }
        if !eos {
            return Action::Pause;
        }
        match self.seal_body(h, size) {
            Ok(()) => Action::Continue,
            Err(e) => self.fail(h, w, e),
        }
    }

    /// Trailers are no part of the protocol: an encoded answer loses them rather than carry
    /// application data in plaintext.
    pub fn on_response_trailers(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        if !matches!(self.resp, Resp::Body { .. } | Resp::Done) || self.session.is_none() {
            return Action::Continue;
        }
        let trailers = HeaderKind::ResponseTrailers;
        let dropped = h.headers(trailers).map(|m| m.to_pairs()).and_then(|list| {
            list.iter()
                .try_for_each(|(name, _)| h.remove_header(trailers, name))
        });
        if dropped.is_err() {
            return self.fail(h, w, RelayError::Unavailable("cannot drop the trailers"));
        }
        if matches!(self.resp, Resp::Body { .. }) {
            return self.on_response_body(h, w, self.resp_size, true);
        }
        Action::Continue
    }
}

/// The decoded path must be a plain path inside the relay `routes`, outside the prefix, and
/// not one a route rule (seal, unseal) claims.
fn check_route(config: &FilterConfig, relay: &RelayConfig, path: &str) -> Result<(), RelayError> {
    let plain = path.split_once('?').map_or(path, |(p, _)| p);
    let prefix = relay.prefix.trim_end_matches('/');
    let under_prefix = plain
        .strip_prefix(prefix)
        .is_some_and(|r| r.is_empty() || r.starts_with('/'));
    if !is_plain_path(plain) || under_prefix {
        return Err(RelayError::RouteNotAllowed);
    }
    if !config.relay_may_forward(plain) {
        return Err(RelayError::RouteNotAllowed);
    }
    Ok(())
}
