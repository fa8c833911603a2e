//! The unseal role: one stream on an unseal route (the vendor's management API, e.g.
//! `/api/...` → vendor `/v1/...`). Two small state machines, one per direction:
//!
//! ```text
//! request   headers ──(not the events search / no body / search off)──► Passing
//!              │
//!              └─(.../search/~/search/events)──► Buffering ──(end of stream)──► plan
//!                   plan: no sealed term ─► Forwarded (untouched, or decoded)
//!                         sealed terms, keys held ─► rewrite ─► Forwarded
//!                         keys missing ─► Waiting (parked in ondemand) ─► rewrite ─► resumed
//!                   any failure ─► Refused (problem+json; the plaintext search never leaves)
//!
//! response  headers ──(no body / not JSON / unsupported encoding / over the limit)──► Passing
//!              │  (decided here for good: content-encoding removed; content-length removed
//!              │   unless the host holds the headers, see below)
//!              └──► Buffering ──(end of stream)──► a Veil value? ──no──► Done (as it came)
//!                                                      │ unseal with the keys held
//!                                                      ├ no kid to fetch ─► Done
//!                                                      └ kids fetched ─► Waiting ─► unseal ─► resumed
//! ```
//!
//! On proxy-wasm, headers always continue: Envoy's proxy-wasm host turns a paused header
//! callback into "stop all iteration", which starves the body callbacks, so whatever the
//! headers say is decided on the headers. A response's status can therefore only be replaced (`reject`, a
//! compressed body that does not decode) if a filter after Veil holds the headers until the
//! body is complete; Veil asks for that with [`HOLD_HEADER`] (the demo's Envoy config has a
//! small Lua filter that honours it). Without it, Envoy resets the stream instead.
//!
//! A host that can hold paused headers and still deliver the body
//! ([`StreamHost::holds_headers`]: the native shell) gets `Pause` from the response headers
//! of a buffered response instead: they go on with the rewritten body and its
//! `content-length` (length framing, not the chunked answer Envoy frames when the length is
//! removed), and a refusal is a plain local reply.
//!
//! Unsealing never fails a response (`on_unseal_error: keep`): a value that does not
//! authenticate or whose kid is unknown stays as it is and is counted. With `reject` such a
//! response becomes `502 unseal-failed`. Bodies that are not JSON, or too large, pass
//! untouched: they carry ciphertext, not plaintext.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use veil_core::config::{OnUnsealError, UnsealAction};
use veil_core::crypto::cipher::{CipherError, Opened, SealingKey, ValueType};
use veil_core::crypto::keys::Epoch;
use veil_core::crypto::keys::Kid;
use veil_core::crypto::value::SealedValue;
use veil_core::encoding::{self, ContentEncoding, DecodeError};
use veil_core::header_map::HeaderMap;
use veil_core::json::unseal::{kids_in, KeyLookup, UnsealStats};
use veil_core::json::unseal_document;
use veil_core::policy::moesif::Entity;
use veil_core::problem::ProblemKind;
use veil_core::search::{
    management_route, search_epochs, search_kids_for, MoesifEvents, SearchBody, SearchConfig,
    SearchError,
};

use crate::clock;
use crate::host::{Action, BodyKind, HeaderKind, HostResult, Level, StreamHost, StreamId};
use crate::keys::ondemand::{self, Waiter};
use crate::keys::KeyCache;
use crate::metrics::Metrics;
use crate::parked::{Job, SearchJob, UnsealJob};
use crate::reply::{refuse, Refusal};
use crate::worker::Worker;

/// Most distinct kids one response may make the filter look up (values under further kids
/// stay sealed and count as unknown).
pub const MAX_KIDS_PER_BODY: usize = 32;

/// What a completed job leaves for the stream.
pub enum Done {
    /// Resume the stream (its body may have been replaced).
    Continue,
    /// A problem was answered; the stream stays stopped.
    Stopped,
}

enum Req {
    Passing,
    Buffering {
        search: Arc<SearchConfig>,
        entity: Entity,
        /// A bad time range is answered once the body is in: a refusal while the client
        /// still sends its body can reach it as a connection reset instead.
        epochs: Result<Vec<Epoch>, SearchError>,
        encoding: ContentEncoding,
    },
    Waiting,
    Forwarded,
    Refused,
}

enum Resp {
    Idle,
    Passing,
    Buffering {
        encoding: ContentEncoding,
        /// The response headers are held until the body is rewritten (a native host): the
        /// new body gets its `content-length`, and a refusal can still be a local reply.
        held: bool,
    },
    Waiting,
    Done,
}

/// One stream on an unseal route.
pub struct UnsealStream {
    stream: StreamId,
    action: UnsealAction,
    req: Req,
    resp: Resp,
}

fn now_ms(h: &dyn StreamHost) -> i64 {
    clock::wall_ms(h).unwrap_or(0)
}

impl UnsealStream {
    /// Starts on the request headers; `rest` is the path (with query) after the prefix.
    pub fn start(
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        stream: StreamId,
        action: &UnsealAction,
        rest: &str,
        end_of_stream: bool,
    ) -> (UnsealStream, Action) {
        let mut s = UnsealStream {
            stream,
            action: action.clone(),
            req: Req::Passing,
            resp: Resp::Idle,
        };
        match s.on_request_headers(h, w, head, rest, end_of_stream) {
            // Headers continue (a paused header callback would also starve the body
            // callbacks, see `on_response_headers`); a search refused at the end of its body
            // is answered locally and the upstream request is reset before any body left.
            Ok(req) => {
                s.req = req;
                (s, Action::Continue)
            }
            Err(r) => {
                s.req = Req::Refused;
                Metrics::add(h, w.metrics.search_rejected, 1);
                (s, refuse(h, &w.metrics, &r))
            }
        }
    }

    fn unknown_ttl_ms(&self) -> i64 {
        i64::try_from(self.action.unknown_kid_cache_secs)
            .unwrap_or(30)
            .saturating_mul(1000)
    }

    fn on_request_headers(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        rest: &str,
        end_of_stream: bool,
    ) -> Result<Req, Refusal> {
        let req = HeaderKind::RequestHeaders;
        // The answer must come in an encoding the filter can decode (not br or zstd).
        if head.get("accept-encoding").is_some() {
            h.replace_header(req, "accept-encoding", "gzip, deflate")
                .map_err(|e| {
                    Refusal::hostcall(ProblemKind::UnsealFailed, "replacing accept-encoding", e)
                })?;
        }
        let Some(search) = &self.action.search else {
            return Ok(Req::Passing);
        };
        if end_of_stream {
            return Ok(Req::Passing);
        }
        // Fail closed: a body goes on only to a search or count Veil checks (events,
        // users, companies); a body to any other endpoint could carry a sealed field's
        // value in plaintext, so it is refused (once it is in, see `epochs`).
        let route = management_route(rest);
        let encoding = ContentEncoding::from_headers(head)
            .map_err(|e| Refusal::new(ProblemKind::UnsupportedEncoding, e.to_string()))?;
        if let Some(len) = head.get("content-length") {
            if len
                .trim()
                .parse::<usize>()
                .is_ok_and(|n| n > w.config.max_body_bytes)
            {
                return Err(Refusal::too_large(w.config.max_body_bytes));
            }
        }
        // Epochs are chosen on the epoch clock, like the seal role's.
        let now = clock::epoch_secs(h, &w.config)
            .map_err(|e| Refusal::hostcall(ProblemKind::UnsealFailed, "reading the clock", e))?;
        let epochs = match route.entity() {
            Some(_) => search_epochs(
                rest,
                now,
                w.config.rotation,
                &search.default_from,
                search.max_epochs,
            ),
            None => Err(SearchError::NotAllowed {
                construct: "a request body to this management endpoint".into(),
                at: "the path (only /search/~/search and /search/~/count over events, users \
                     and companies are checked)"
                    .into(),
            }),
        };
        // The rewritten body has another length, and is forwarded identity-encoded.
        h.remove_header(req, "content-length").map_err(|e| {
            Refusal::hostcall(ProblemKind::UnsealFailed, "removing content-length", e)
        })?;
        if encoding != ContentEncoding::Identity {
            h.remove_header(req, "content-encoding").map_err(|e| {
                Refusal::hostcall(ProblemKind::UnsealFailed, "removing content-encoding", e)
            })?;
        }
        Ok(Req::Buffering {
            search: Arc::clone(search),
            entity: route.entity().unwrap_or(Entity::Event),
            epochs,
            encoding,
        })
    }

    pub fn on_request_body(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match self.req {
            Req::Buffering { .. } if body_size > w.config.max_body_bytes => {
                self.req = Req::Refused;
                Metrics::add(h, w.metrics.search_rejected, 1);
                refuse(h, &w.metrics, &Refusal::too_large(w.config.max_body_bytes))
            }
            Req::Buffering { .. } if !end_of_stream => Action::Pause,
            Req::Buffering { .. } => self.finish_request(h, w),
            Req::Waiting | Req::Refused => Action::Pause,
            Req::Passing | Req::Forwarded => Action::Continue,
        }
    }

    pub fn on_request_trailers(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        match self.req {
            Req::Buffering { .. } => self.finish_request(h, w),
            Req::Waiting | Req::Refused => Action::Pause,
            Req::Passing | Req::Forwarded => Action::Continue,
        }
    }

    fn finish_request(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        let Req::Buffering {
            search,
            entity,
            epochs,
            encoding,
        } = std::mem::replace(&mut self.req, Req::Forwarded)
        else {
            return Action::Continue;
        };
        let planned = epochs
            .map_err(bad_search)
            .and_then(|epochs| plan_search(h, w, search, entity, &epochs, encoding));
        let job = match planned {
            Ok(Some(job)) => job,
            Ok(None) => return Action::Continue,
            Err(r) => {
                self.req = Req::Refused;
                Metrics::add(h, w.metrics.search_rejected, 1);
                return refuse(h, &w.metrics, &r);
            }
        };
        let now = now_ms(h);
        let pending = ondemand::request(
            &w.key_ctx(),
            h,
            self.stream,
            &job.kids,
            self.unknown_ttl_ms(),
            now,
        );
        if pending.is_empty() {
            return match complete(h, w, Job::Search(job)) {
                Done::Continue => Action::Continue,
                Done::Stopped => {
                    self.req = Req::Refused;
                    Action::Pause
                }
            };
        }
        self.req = Req::Waiting;
        ondemand::park(
            &w.key_ctx(),
            h,
            self.stream,
            Waiter {
                kids: pending,
                since_ms: now,
                job: Job::Search(job),
            },
        );
        Action::Pause
    }

    /// Decides here, once and for all, what the response's headers say: Envoy's proxy-wasm
    /// host turns a paused header callback into "stop all iteration" (no body callbacks
    /// until resumed), so headers always continue and cannot change afterwards. A buffered
    /// body loses `content-length` (Envoy frames the new one) and, if compressed, its
    /// `content-encoding` (it is forwarded decoded).
    pub fn on_response_headers(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        end_of_stream: bool,
    ) -> Action {
        // Our own refusal (a local reply) passes as it is.
        if end_of_stream || matches!(self.req, Req::Refused) {
            self.resp = Resp::Passing;
            return Action::Continue;
        }
        let held = h.holds_headers();
        match response_plan(h, w, self.action.on_error, held) {
            Some(encoding) => {
                self.resp = Resp::Buffering { encoding, held };
                if held {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            None => {
                self.resp = Resp::Passing;
                Action::Continue
            }
        }
    }

    pub fn on_response_body(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match self.resp {
            Resp::Buffering { encoding, .. } if body_size > w.config.max_body_bytes => {
                Metrics::add(h, w.metrics.unseal_too_large, 1);
                if encoding == ContentEncoding::Identity {
                    // Ciphertext, not plaintext: it may pass, sealed.
                    self.resp = Resp::Passing;
                    return Action::Continue;
                }
                // Its `content-encoding` is already gone: it cannot pass as it is.
                self.resp = Resp::Done;
                refuse(h, &w.metrics, &undecodable(w))
            }
            Resp::Buffering { .. } if !end_of_stream => Action::Pause,
            Resp::Buffering { .. } => self.finish_response(h, w),
            Resp::Waiting => Action::Pause,
            Resp::Idle | Resp::Passing | Resp::Done => Action::Continue,
        }
    }

    pub fn on_response_trailers(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        match self.resp {
            Resp::Buffering { .. } => self.finish_response(h, w),
            Resp::Waiting => Action::Pause,
            Resp::Idle | Resp::Passing | Resp::Done => Action::Continue,
        }
    }

    fn finish_response(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        let Resp::Buffering { encoding, held } = std::mem::replace(&mut self.resp, Resp::Done)
        else {
            return Action::Continue;
        };
        let job = match read_response(h, w, encoding, self.action.on_error, held) {
            Read::Pass => return Action::Continue,
            Read::Refuse(r) => return refuse(h, &w.metrics, &r),
            Read::Job(job) => job,
        };
        // A body without a Veil value passes as it came, after one SIMD search.
        if kids_in(&job.body, 1).is_empty() {
            return match finish_untouched(h, w, &job) {
                Done::Continue => Action::Continue,
                Done::Stopped => Action::Pause,
            };
        }
        // Unsealed at once with the keys held; only if a value needs a kid that is neither
        // held nor known to be unknown does the stream wait, and unseal again once it is in.
        let fetch = Fetch {
            stream: self.stream,
            unknown_ttl_ms: self.unknown_ttl_ms(),
        };
        let (pending, now) = match unseal_body(h, w, &job, Some(&fetch)) {
            Unsealed::Done(Done::Continue) => return Action::Continue,
            Unsealed::Done(Done::Stopped) => return Action::Pause,
            Unsealed::Waits { kids, now_ms } => (kids, now_ms),
        };
        self.resp = Resp::Waiting;
        ondemand::park(
            &w.key_ctx(),
            h,
            self.stream,
            Waiter {
                kids: pending,
                since_ms: now,
                job: Job::Unseal(job),
            },
        );
        Action::Pause
    }
}

/// A compressed response whose `content-encoding` was dropped at header time but whose body
/// cannot be decoded within the limit: it can be forwarded neither decoded nor as it is.
fn undecodable(w: &Worker) -> Refusal {
    Refusal::new(
        ProblemKind::UnsealFailed,
        format!(
            "the vendor's compressed answer does not decode within max_body_bytes ({})",
            w.config.max_body_bytes
        ),
    )
}

fn bad_search(e: SearchError) -> Refusal {
    match e {
        SearchError::Json(j) => Refusal::new(ProblemKind::BadJson, j.to_string()),
        SearchError::Cipher(c) => Refusal::new(ProblemKind::SealFailed, c.to_string()),
        other => Refusal::new(ProblemKind::BadSearch, other.to_string()),
    }
}

/// Reads and decodes the search body; `None` if nothing in it needs rewriting (it is then
/// forwarded as it came, or decoded if it was compressed).
fn plan_search(
    h: &dyn StreamHost,
    w: &Worker,
    search: Arc<SearchConfig>,
    entity: Entity,
    epochs: &[Epoch],
    encoding: ContentEncoding,
) -> Result<Option<SearchJob>, Refusal> {
    let limit = w.config.max_body_bytes;
    let raw = h
        .body(BodyKind::Request, limit.saturating_add(1))
        .map_err(|e| Refusal::hostcall(ProblemKind::UnsealFailed, "reading the body", e))?;
    if raw.len() > limit {
        return Err(Refusal::too_large(w.config.max_body_bytes));
    }
    let size = raw.len();
    let decoded = encoding::decode(encoding, &raw, limit).map_err(|e| {
        let kind = match e {
            DecodeError::TooLarge { .. } => ProblemKind::TooLarge,
            DecodeError::Corrupt(_) => ProblemKind::BadEncoding,
            DecodeError::Unsupported(_) => ProblemKind::UnsupportedEncoding,
        };
        Refusal::new(kind, e.to_string())
    })?;
    let body = SearchBody::parse(&decoded, w.config.max_depth).map_err(bad_search)?;
    let policy = MoesifEvents::for_entity(entity, Arc::clone(&search.rules));
    if body.sealed_terms(&policy).map_err(bad_search)? == 0 {
        if encoding != ContentEncoding::Identity {
            h.replace_body(BodyKind::Request, size, &decoded)
                .map_err(|e| {
                    Refusal::hostcall(ProblemKind::UnsealFailed, "replacing the body", e)
                })?;
        }
        return Ok(None);
    }
    // Every root version served: data sealed under an older root is found too.
    let roots = w.root_versions(h);
    if roots.is_empty() {
        return Err(no_key());
    }
    Ok(Some(SearchJob {
        kids: search_kids_for(&roots, epochs),
        search,
        entity,
        body,
        size,
    }))
}

fn no_key() -> Refusal {
    Refusal::new(
        ProblemKind::KeyUnavailable,
        "no data keys yet (keyservice unreachable or starting)",
    )
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json"
        || mime == "text/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Response header asking a filter after Veil (in the encoding direction) to hold the
/// response headers until the body is complete, so that a refusal decided at the end of the
/// body can still be a 502 rather than a reset stream. See docs/configuration.md.
pub const HOLD_HEADER: &str = "x-veil-hold-response";

/// Whether (and how encoded) a response is buffered for unsealing. Removes its
/// `content-encoding` (the body is forwarded decoded). Unless the headers are `held` until
/// the body is rewritten (which then sets `content-length` itself), also removes its
/// `content-length` (the unsealed body has another length; Envoy frames it anew) and asks a
/// later filter to hold the headers where a refusal can follow.
fn response_plan(
    h: &dyn StreamHost,
    w: &Worker,
    on_error: OnUnsealError,
    held: bool,
) -> Option<ContentEncoding> {
    let resp = HeaderKind::ResponseHeaders;
    let read = |name: &str| match h.header(resp, name) {
        Ok(v) => Ok(v),
        Err(e) => {
            Metrics::add(h, w.metrics.hostcall_failed, 1);
            Err(e)
        }
    };
    if let Some(ct) = read("content-type").ok()? {
        if !is_json(&ct) {
            Metrics::add(h, w.metrics.unseal_passthrough, 1);
            return None;
        }
    }
    let Ok(encoding) = ContentEncoding::from_header(read("content-encoding").ok()?.as_deref())
    else {
        Metrics::add(h, w.metrics.unseal_passthrough, 1);
        return None;
    };
    if let Some(len) = read("content-length").ok()? {
        if len
            .trim()
            .parse::<usize>()
            .is_ok_and(|n| n > w.config.max_body_bytes)
        {
            Metrics::add(h, w.metrics.unseal_too_large, 1);
            return None;
        }
    }
    if !held && h.remove_header(resp, "content-length").is_err() {
        Metrics::add(h, w.metrics.hostcall_failed, 1);
        return None;
    }
    if encoding != ContentEncoding::Identity && h.remove_header(resp, "content-encoding").is_err() {
        Metrics::add(h, w.metrics.hostcall_failed, 1);
        return None;
    }
    // Only where a refusal can follow: `reject`, or a compressed body that might not decode.
    if !held
        && (on_error == OnUnsealError::Reject || encoding != ContentEncoding::Identity)
        && h.replace_header(resp, HOLD_HEADER, "1").is_err()
    {
        Metrics::add(h, w.metrics.hostcall_failed, 1);
    }
    Some(encoding)
}

enum Read {
    /// Let the body pass as it came.
    Pass,
    Refuse(Refusal),
    Job(UnsealJob),
}

/// Reads and decodes the whole response body.
fn read_response(
    h: &dyn StreamHost,
    w: &Worker,
    encoding: ContentEncoding,
    on_error: OnUnsealError,
    held: bool,
) -> Read {
    let limit = w.config.max_body_bytes;
    let identity = encoding == ContentEncoding::Identity;
    let body = match h.body(BodyKind::Response, limit.saturating_add(1)) {
        Ok(b) => b,
        Err(e) => {
            Metrics::add(h, w.metrics.hostcall_failed, 1);
            let r = Refusal::hostcall(ProblemKind::UnsealFailed, "reading a response body", e);
            return if identity {
                Read::Pass
            } else {
                Read::Refuse(r)
            };
        }
    };
    if body.len() > limit {
        Metrics::add(h, w.metrics.unseal_too_large, 1);
        return if identity {
            Read::Pass
        } else {
            Read::Refuse(undecodable(w))
        };
    }
    let size = body.len();
    let body = if identity {
        body
    } else {
        match encoding::decode(encoding, &body, limit) {
            Ok(d) => d.into_owned(),
            Err(e) => {
                if matches!(e, DecodeError::TooLarge { .. }) {
                    Metrics::add(h, w.metrics.unseal_too_large, 1);
                }
                Metrics::add(h, w.metrics.unseal_passthrough, 1);
                return Read::Refuse(undecodable(w));
            }
        }
    };
    Read::Job(UnsealJob {
        body,
        size,
        decoded: !identity,
        reject: on_error == OnUnsealError::Reject,
        held,
    })
}

/// Forwards a job's body without unsealing: as it came, or decoded if its
/// `content-encoding` was dropped.
fn finish_untouched(h: &dyn StreamHost, w: &Worker, job: &UnsealJob) -> Done {
    if job.decoded {
        if let Err(e) = replace_response(h, job, &job.body) {
            Metrics::add(h, w.metrics.hostcall_failed, 1);
            refuse(
                h,
                &w.metrics,
                &Refusal::hostcall(ProblemKind::UnsealFailed, "replacing a response body", e),
            );
            return Done::Stopped;
        }
    }
    Done::Continue
}

/// Replaces the whole response body with `value`; if the headers are still held, gives them
/// its length (a length-framed answer instead of the chunked one Envoy frames when the
/// length was removed).
fn replace_response(h: &dyn StreamHost, job: &UnsealJob, value: &[u8]) -> HostResult<()> {
    h.replace_body(BodyKind::Response, job.size, value)?;
    if job.held {
        let len = value.len().to_string();
        h.replace_header(HeaderKind::ResponseHeaders, "content-length", &len)?;
    }
    Ok(())
}

/// Finishes a parked job on its own stream (`h` acts for it).
pub fn complete(h: &dyn StreamHost, w: &Worker, job: Job) -> Done {
    match job {
        Job::Search(job) => match rewrite_search(h, w, job) {
            Ok(()) => {
                Metrics::add(h, w.metrics.search_rewritten, 1);
                Done::Continue
            }
            Err(r) => {
                Metrics::add(h, w.metrics.search_rejected, 1);
                refuse(h, &w.metrics, &r);
                Done::Stopped
            }
        },
        Job::Unseal(job) => match unseal_body(h, w, &job, None) {
            Unsealed::Done(done) => done,
            // Without `fetch` it never waits.
            Unsealed::Waits { .. } => finish_untouched(h, w, &job),
        },
    }
}

fn rewrite_search(h: &dyn StreamHost, w: &Worker, mut job: SearchJob) -> Result<(), Refusal> {
    let keys: Vec<Rc<SealingKey>> = {
        let cache = w.keys.try_borrow().map_err(|_| no_key())?;
        job.kids
            .iter()
            .map(|kid| {
                cache.key_for(*kid).ok_or_else(|| {
                    Refusal::new(
                        ProblemKind::KeyUnavailable,
                        format!(
                            "no data key for {kid} (keyservice unreachable or does not know it)"
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let refs: Vec<&SealingKey> = keys.iter().map(|k| &**k).collect();
    let policy = MoesifEvents::for_entity(job.entity, Arc::clone(&job.search.rules));
    job.body.rewrite(&policy, &refs).map_err(bad_search)?;
    h.replace_body(BodyKind::Request, job.size, &job.body.to_vec())
        .map_err(|e| Refusal::hostcall(ProblemKind::UnsealFailed, "replacing the body", e))
}

/// Where a stream fetches the kids its response needs.
struct Fetch {
    stream: StreamId,
    unknown_ttl_ms: i64,
}

enum Unsealed {
    Done(Done),
    /// Values need kids being fetched now (`fetch` was given): nothing was forwarded or
    /// counted; park the job and unseal it again once they are in.
    Waits {
        kids: Vec<Kid>,
        now_ms: i64,
    },
}

/// The worker's keys as the unsealer sees them, noting (up to [`MAX_KIDS_PER_BODY`]) the
/// distinct kids of values it could not open for want of a key.
struct NoteMissing<'k> {
    keys: &'k KeyCache,
    missing: RefCell<Vec<Kid>>,
}

impl NoteMissing<'_> {
    fn note(&self, kid: Kid) {
        if let Ok(mut m) = self.missing.try_borrow_mut() {
            if m.len() < MAX_KIDS_PER_BODY && !m.contains(&kid) {
                m.push(kid);
            }
        }
    }
}

impl KeyLookup for NoteMissing<'_> {
    fn key(&self, kid: Kid) -> Option<&SealingKey> {
        let key = self.keys.key(kid);
        if key.is_none() {
            self.note(kid);
        }
        key
    }

    fn open(&self, v: &SealedValue<'_>) -> Option<Result<Opened, CipherError>> {
        let opened = self.keys.open(v);
        if opened.is_none() {
            self.note(v.kid);
        }
        opened
    }

    fn read_memoized(&self, text: &str, read: &mut dyn FnMut(ValueType, &[u8])) -> bool {
        self.keys.read_memoized(text, read)
    }
}

/// Unseals a response body with the keys held and forwards it (or refuses it, with
/// `reject`). With `fetch`, values under kids not held make the stream fetch them first
/// (unless they are known to be unknown): then nothing is forwarded yet.
fn unseal_body(h: &dyn StreamHost, w: &Worker, job: &UnsealJob, fetch: Option<&Fetch>) -> Unsealed {
    w.with_buffers(|b| {
        let out = &mut b.out;
        let (stats, missing) = {
            let Ok(keys) = w.keys.try_borrow() else {
                return Unsealed::Done(finish_untouched(h, w, job));
            };
            let lookup = NoteMissing {
                keys: &keys,
                missing: RefCell::new(Vec::new()),
            };
            let stats = unseal_document(&job.body, &lookup, w.config.max_depth, out);
            (stats, lookup.missing.into_inner())
        };
        let Ok(stats) = stats else {
            // Not JSON after all: it passes as it came.
            Metrics::add(h, w.metrics.unseal_passthrough, 1);
            return Unsealed::Done(finish_untouched(h, w, job));
        };
        if let Some(fetch) = fetch.filter(|_| !missing.is_empty()) {
            let now = now_ms(h);
            let pending = ondemand::request(
                &w.key_ctx(),
                h,
                fetch.stream,
                &missing,
                fetch.unknown_ttl_ms,
                now,
            );
            if !pending.is_empty() {
                return Unsealed::Waits {
                    kids: pending,
                    now_ms: now,
                };
            }
        }
        Unsealed::Done(forward_unsealed(h, w, job, stats, out))
    })
}

/// Counts an unseal pass and forwards its output (or refuses the response, with `reject`).
fn forward_unsealed(
    h: &dyn StreamHost,
    w: &Worker,
    job: &UnsealJob,
    stats: UnsealStats,
    out: &[u8],
) -> Done {
    Metrics::add(h, w.metrics.unseal_values, i64::from(stats.opened));
    Metrics::add(h, w.metrics.unseal_failed, i64::from(stats.failed));
    Metrics::add(
        h,
        w.metrics.unseal_unknown_kid,
        i64::from(stats.unknown_kid),
    );
    let kept = stats.failed.saturating_add(stats.unknown_kid);
    if kept > 0 {
        h.log(
            Level::Debug,
            &format!(
                "veil: {kept} sealed values kept in a response ({} failed authentication, {} under an unknown kid)",
                stats.failed, stats.unknown_kid
            ),
        );
        if job.reject {
            Metrics::add(h, w.metrics.unseal_rejected, 1);
            refuse(
                h,
                &w.metrics,
                &Refusal::new(
                    ProblemKind::UnsealFailed,
                    format!(
                        "{kept} sealed values could not be opened ({} failed authentication, {} under an unknown kid)",
                        stats.failed, stats.unknown_kid
                    ),
                ),
            );
            return Done::Stopped;
        }
    }
    if stats.opened == 0 {
        return finish_untouched(h, w, job);
    }
    if let Err(e) = replace_response(h, job, out) {
        Metrics::add(h, w.metrics.hostcall_failed, 1);
        refuse(
            h,
            &w.metrics,
            &Refusal::hostcall(ProblemKind::UnsealFailed, "replacing a response body", e),
        );
        return Done::Stopped;
    }
    Metrics::add(h, w.metrics.unseal_responses, 1);
    Done::Continue
}
