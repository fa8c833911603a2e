//! The seal role: one request on a sealed route, a small state machine between the host's
//! request callbacks and `veil_core::json::seal_document`.
//!
//! ```text
//! headers ──(no rule / no body / policy off)──► Passing
//!    │
//!    └─(sealed route)──► Buffering ──(end of stream)──► seal ──► Forwarded
//!                          │                              │
//!                          └───────(any failure)──────────┴──► Refused (problem+json)
//! ```
//!
//! Fail closed: every failure after `Buffering` answers a problem and stops the request, so
//! a body the policy seals never reaches the upstream in plaintext.
//!
//! Framing: where the host can hold the headers and still hand over the body (the native
//! shell, [`StreamHost::holds_headers`]), the headers wait while `Buffering` and the sealed
//! body's length goes into `content-length` (a length stays a length, chunked stays chunked).
//! Under proxy-wasm a paused headers callback starves the body callbacks unless Envoy runs the
//! filter with `allow_on_headers_stop_iteration` (which Istio's WasmPlugin cannot set), so
//! there the headers go on at once with `content-length` removed and Envoy frames the sealed
//! body anew (chunked on HTTP/1.1).

use std::sync::Arc;

use veil_core::config::{RouteRule, SealProfile};
use veil_core::encoding::{self, ContentEncoding, DecodeError};
use veil_core::header_map::HeaderMap;
use veil_core::json::{seal_document_with, Memoized, SealError};
use veil_core::policy::json::JsonRules;
use veil_core::policy::moesif::{MoesifPolicy, Route};
use veil_core::problem::ProblemKind;

use crate::clock;
use crate::host::{Action, BodyKind, HeaderKind, StreamHost};
use crate::metrics::Metrics;
use crate::reply::{refuse, Refusal};
use crate::worker::Worker;

/// The policy a request's body is sealed with.
enum SealPolicy {
    /// A Moesif collector route: the route's document shape plus the profile's rules.
    Moesif(MoesifPolicy),
    /// The `json` profile: the compiled selectors are the whole policy.
    Json(Arc<JsonRules>),
}

/// What a sealed route's body needs once it is complete.
struct Pending {
    policy: SealPolicy,
    encoding: ContentEncoding,
    /// The headers wait for the sealed body (the host holds them, [`StreamHost::holds_headers`]).
    held: bool,
    /// Held headers with `content-length`: it gets the sealed body's length.
    set_length: bool,
}

enum State {
    /// Nothing for Veil to do on this request.
    Passing,
    /// Collecting the body of a sealed route.
    Buffering(Pending),
    /// The sealed body was handed back to Envoy.
    Forwarded,
    /// A problem was answered; the request goes no further.
    Refused,
}

/// One request on a sealed route.
pub struct SealRequest {
    state: State,
}

impl SealRequest {
    /// Starts on the request headers of a route sealed with `profile`; `rest` is the path
    /// after the rule's prefix.
    pub fn start(
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        rule: &RouteRule,
        profile: &SealProfile,
        rest: &str,
        end_of_stream: bool,
    ) -> (SealRequest, Action) {
        match Self::on_headers(h, w, head, rule, profile, rest, end_of_stream) {
            // Held until the body is sealed: its new length goes into `content-length`.
            Ok(state @ State::Buffering(Pending { held: true, .. })) => {
                (SealRequest { state }, Action::Pause)
            }
            Ok(state) => (SealRequest { state }, Action::Continue),
            Err(r) => (
                SealRequest {
                    state: State::Refused,
                },
                refuse(h, &w.metrics, &r),
            ),
        }
    }

    fn on_headers(
        h: &dyn StreamHost,
        w: &Worker,
        head: &HeaderMap,
        rule: &RouteRule,
        profile: &SealProfile,
        rest: &str,
        end_of_stream: bool,
    ) -> Result<State, Refusal> {
        let req = HeaderKind::RequestHeaders;
        let policy = match profile {
            SealProfile::Moesif(rules) => {
                if !rules.enabled {
                    Metrics::add(h, w.metrics.seal_passthrough, 1);
                    return Ok(State::Passing);
                }
                let Some(route) = Route::from_path(rest) else {
                    let method = head.get(":method").unwrap_or_default();
                    // A request without a body carries nothing to seal; a body on a sealed
                    // prefix that no policy route covers could carry plaintext, whatever the
                    // method (a GET with a body too), so it is refused.
                    if end_of_stream {
                        return Ok(State::Passing);
                    }
                    Metrics::add(h, w.metrics.rejected_route, 1);
                    return Err(Refusal::new(
                        ProblemKind::RouteNotSealed,
                        format!(
                            "{method} under {} is not a route the seal policy knows",
                            rule.prefix
                        ),
                    ));
                };
                SealPolicy::Moesif(MoesifPolicy::new(route, Arc::clone(rules)))
            }
            // No route shapes: every request body under the prefix is sealed, whatever the
            // method (fail closed: a body the rule covers never leaves in plaintext).
            SealProfile::Json(rules) => SealPolicy::Json(Arc::clone(rules)),
        };
        if end_of_stream {
            return Ok(State::Passing);
        }
        let encoding = ContentEncoding::from_headers(head).map_err(|e| {
            Metrics::add(h, w.metrics.rejected_encoding, 1);
            Refusal::new(ProblemKind::UnsupportedEncoding, e.to_string())
        })?;
        let length = head.get("content-length");
        if let Some(len) = &length {
            if len
                .trim()
                .parse::<usize>()
                .is_ok_and(|n| n > w.config.max_body_bytes)
            {
                Metrics::add(h, w.metrics.rejected_too_large, 1);
                return Err(Refusal::too_large(w.config.max_body_bytes));
            }
        }
        // Headers the host cannot hold leave now, before the sealed length is known: without one.
        let held = h.holds_headers();
        if !held {
            h.remove_header(req, "content-length").map_err(|e| {
                Refusal::hostcall(ProblemKind::SealFailed, "removing content-length", e)
            })?;
        }
        // A compressed body is forwarded decompressed (sealed values do not compress anyway).
        if encoding != ContentEncoding::Identity {
            h.remove_header(req, "content-encoding").map_err(|e| {
                Refusal::hostcall(ProblemKind::SealFailed, "removing content-encoding", e)
            })?;
        }
        Ok(State::Buffering(Pending {
            policy,
            encoding,
            held,
            set_length: held && length.is_some(),
        }))
    }

    /// Seals the whole buffered body in place.
    fn seal_body(h: &dyn StreamHost, w: &Worker, pending: &Pending) -> Result<(), Refusal> {
        let limit = w.config.max_body_bytes;
        let body = h
            .body(BodyKind::Request, limit.saturating_add(1))
            .map_err(|e| Refusal::hostcall(ProblemKind::SealFailed, "reading the body", e))?;
        if body.len() > limit {
            Metrics::add(h, w.metrics.rejected_too_large, 1);
            return Err(Refusal::too_large(w.config.max_body_bytes));
        }
        let size = body.len();
        let body = encoding::decode(pending.encoding, &body, limit).map_err(|e| {
            let kind = match e {
                DecodeError::TooLarge { .. } => {
                    Metrics::add(h, w.metrics.rejected_too_large, 1);
                    ProblemKind::TooLarge
                }
                DecodeError::Corrupt(_) => {
                    Metrics::add(h, w.metrics.rejected_encoding, 1);
                    ProblemKind::BadEncoding
                }
                DecodeError::Unsupported(_) => ProblemKind::UnsupportedEncoding,
            };
            Refusal::new(kind, e.to_string())
        })?;
        let now = clock::epoch_secs(h, &w.config)
            .map_err(|e| Refusal::hostcall(ProblemKind::SealFailed, "reading the clock", e))?;
        let Some(key) = w.sealing_key(h, now) else {
            Metrics::add(h, w.metrics.rejected_no_key, 1);
            return Err(Refusal::new(
                ProblemKind::KeyUnavailable,
                "no data key for the current epoch yet (keyservice unreachable or starting)",
            ));
        };
        let sealed = w.with_buffers(|b| {
            let mut sealer = Memoized {
                key: &key,
                memo: &mut b.memo,
            };
            let depth = w.config.max_depth;
            match &pending.policy {
                // The walker is generic over the policy: one instance per arm.
                SealPolicy::Moesif(p) => {
                    seal_document_with(&body, p, &mut sealer, depth, &mut b.scratch, &mut b.out)
                }
                SealPolicy::Json(p) => {
                    seal_document_with(&body, &**p, &mut sealer, depth, &mut b.scratch, &mut b.out)
                }
            }
            .map(|stats| {
                // Sealing grows the body; past the cap Envoy itself would answer 413.
                if b.out.len() > w.config.max_sealed_body_bytes {
                    return (stats, Err(None));
                }
                let r = h
                    .replace_body(BodyKind::Request, size, &b.out)
                    .and_then(|()| {
                        // The headers are still held (the headers callback paused).
                        if pending.set_length {
                            let len = b.out.len().to_string();
                            h.replace_header(HeaderKind::RequestHeaders, "content-length", &len)
                        } else {
                            Ok(())
                        }
                    });
                (stats, r.map_err(Some))
            })
        });
        match sealed {
            Ok((stats, Ok(()))) => {
                Metrics::add(h, w.metrics.seal_requests, 1);
                Metrics::add(h, w.metrics.seal_values, i64::from(stats.sealed));
                Ok(())
            }
            Ok((_, Err(Some(e)))) => Err(Refusal::hostcall(
                ProblemKind::SealFailed,
                "replacing the body",
                e,
            )),
            Ok((_, Err(None))) => {
                Metrics::add(h, w.metrics.rejected_too_large, 1);
                Err(Refusal::new(
                    ProblemKind::TooLarge,
                    format!(
                        "the sealed body would exceed max_sealed_body_bytes ({})",
                        w.config.max_sealed_body_bytes
                    ),
                ))
            }
            Err(SealError::Json(e)) => {
                Metrics::add(h, w.metrics.rejected_bad_json, 1);
                Err(Refusal::new(ProblemKind::BadJson, e.to_string()))
            }
            Err(SealError::Cipher(e)) => Err(Refusal::new(ProblemKind::SealFailed, e.to_string())),
        }
    }

    fn finish(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        let State::Buffering(pending) = &self.state else {
            return Action::Continue;
        };
        match Self::seal_body(h, w, pending) {
            Ok(()) => {
                self.state = State::Forwarded;
                Action::Continue
            }
            Err(r) => {
                self.state = State::Refused;
                refuse(h, &w.metrics, &r)
            }
        }
    }

    pub fn on_request_body(
        &mut self,
        h: &dyn StreamHost,
        w: &Worker,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match self.state {
            State::Buffering(_) if body_size > w.config.max_body_bytes => {
                Metrics::add(h, w.metrics.rejected_too_large, 1);
                self.state = State::Refused;
                refuse(h, &w.metrics, &Refusal::too_large(w.config.max_body_bytes))
            }
            State::Buffering(_) if !end_of_stream => Action::Pause,
            State::Buffering(_) => self.finish(h, w),
            State::Refused => Action::Pause,
            State::Passing | State::Forwarded => Action::Continue,
        }
    }

    /// HTTP/2 requests with trailers never see `end_of_stream` in the body callback.
    pub fn on_request_trailers(&mut self, h: &dyn StreamHost, w: &Worker) -> Action {
        match self.state {
            State::Buffering(_) => self.finish(h, w),
            State::Refused => Action::Pause,
            State::Passing | State::Forwarded => Action::Continue,
        }
    }
}
