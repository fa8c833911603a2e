//! One request on a sealed route: a small state machine between Envoy's callbacks and
//! `veil_core::json::seal_document`.
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

use std::rc::Rc;
use std::sync::Arc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use veil_core::config::{RouteAction, SealProfile};
use veil_core::encoding::{self, ContentEncoding, DecodeError};
use veil_core::json::{seal_document, SealError};
use veil_core::policy::moesif::{MoesifPolicy, Route};
use veil_core::problem::{problem_json, ProblemKind, CONTENT_TYPE};

use crate::host;
use crate::metrics::Metrics;
use crate::vm::VmState;

/// What a sealed route's body needs once it is complete.
struct Pending {
    policy: MoesifPolicy,
    encoding: ContentEncoding,
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

pub struct SealStream {
    vm: Rc<VmState>,
    state: State,
}

/// A refusal: the problem to answer and, for the log, what caused it (never content).
struct Refusal {
    kind: ProblemKind,
    detail: String,
}

impl Refusal {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            detail: detail.into(),
        }
    }

    fn hostcall(what: &str, e: host::HostError) -> Refusal {
        Refusal::new(
            ProblemKind::SealFailed,
            format!("{what} failed with host status {}", e.0),
        )
    }
}

impl SealStream {
    pub fn new(vm: Rc<VmState>) -> SealStream {
        SealStream {
            vm,
            state: State::Passing,
        }
    }

    fn on_headers(&mut self, end_of_stream: bool) -> Result<State, Refusal> {
        let req = MapType::HttpRequestHeaders;
        let path = host::get_header(req, ":path")
            .map_err(|e| Refusal::hostcall("reading :path", e))?
            .unwrap_or_default();
        let Some((rule, rest)) = self.vm.config.route(&path) else {
            return Ok(State::Passing);
        };
        let RouteAction::Seal(SealProfile::Moesif(rules)) = &rule.action;
        if !rules.enabled {
            Metrics::add(self.vm.metrics.seal_passthrough, 1);
            return Ok(State::Passing);
        }
        let Some(route) = Route::from_path(rest) else {
            let method = host::get_header(req, ":method")
                .map_err(|e| Refusal::hostcall("reading :method", e))?
                .unwrap_or_default();
            // Reads carry nothing to seal; anything else on a sealed prefix that no policy
            // route covers could carry plaintext, so it is refused.
            if end_of_stream || matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
                return Ok(State::Passing);
            }
            Metrics::add(self.vm.metrics.rejected_route, 1);
            return Err(Refusal::new(
                ProblemKind::RouteNotSealed,
                format!(
                    "{method} under {} is not a route the seal policy knows",
                    rule.prefix
                ),
            ));
        };
        if end_of_stream {
            return Ok(State::Passing);
        }
        let header = host::get_header(req, "content-encoding")
            .map_err(|e| Refusal::hostcall("reading content-encoding", e))?;
        let encoding = ContentEncoding::from_header(header.as_deref()).map_err(|e| {
            Metrics::add(self.vm.metrics.rejected_encoding, 1);
            Refusal::new(ProblemKind::UnsupportedEncoding, e.to_string())
        })?;
        if let Some(len) = host::get_header(req, "content-length")
            .map_err(|e| Refusal::hostcall("reading content-length", e))?
        {
            if len
                .trim()
                .parse::<usize>()
                .is_ok_and(|n| n > self.vm.config.max_body_bytes)
            {
                Metrics::add(self.vm.metrics.rejected_too_large, 1);
                return Err(self.too_large());
            }
        }
        // The sealed body has another length; Envoy frames it anew. A compressed body is
        // forwarded decompressed (sealed values do not compress anyway).
        host::remove_header(req, "content-length")
            .map_err(|e| Refusal::hostcall("removing content-length", e))?;
        if encoding != ContentEncoding::Identity {
            host::remove_header(req, "content-encoding")
                .map_err(|e| Refusal::hostcall("removing content-encoding", e))?;
        }
        Ok(State::Buffering(Pending {
            policy: MoesifPolicy::new(route, Arc::clone(rules)),
            encoding,
        }))
    }

    fn too_large(&self) -> Refusal {
        Refusal::new(
            ProblemKind::TooLarge,
            format!(
                "the body exceeds max_body_bytes ({})",
                self.vm.config.max_body_bytes
            ),
        )
    }

    /// Seals the whole buffered body in place.
    fn seal_body(&self, pending: &Pending) -> Result<(), Refusal> {
        let vm = &self.vm;
        let limit = vm.config.max_body_bytes;
        let body = host::get_buffer(BufferType::HttpRequestBody, 0, limit.saturating_add(1))
            .map_err(|e| Refusal::hostcall("reading the body", e))?;
        if body.len() > limit {
            Metrics::add(vm.metrics.rejected_too_large, 1);
            return Err(self.too_large());
        }
        let size = body.len();
        let body = encoding::decode(pending.encoding, &body, limit).map_err(|e| {
            let kind = match e {
                DecodeError::TooLarge { .. } => {
                    Metrics::add(vm.metrics.rejected_too_large, 1);
                    ProblemKind::TooLarge
                }
                DecodeError::Corrupt(_) => {
                    Metrics::add(vm.metrics.rejected_encoding, 1);
                    ProblemKind::BadEncoding
                }
                DecodeError::Unsupported(_) => ProblemKind::UnsupportedEncoding,
            };
            Refusal::new(kind, e.to_string())
        })?;
        let now = host::now().map_err(|e| Refusal::hostcall("reading the clock", e))?;
        let Some(key) = vm.sealing_key(host::unix_secs(now)) else {
            Metrics::add(vm.metrics.rejected_no_key, 1);
            return Err(Refusal::new(
                ProblemKind::KeyUnavailable,
                "no data key for the current epoch yet (keyservice unreachable or starting)",
            ));
        };
        let sealed = vm.with_buffers(|scratch, out| {
            seal_document(
                &body,
                &pending.policy,
                &key,
                vm.config.max_depth,
                scratch,
                out,
            )
            .map(|stats| {
                let r = host::set_buffer(BufferType::HttpRequestBody, 0, size, out);
                (stats, r)
            })
        });
        match sealed {
            Ok((stats, Ok(()))) => {
                Metrics::add(vm.metrics.seal_requests, 1);
                Metrics::add(vm.metrics.seal_values, i64::from(stats.sealed));
                Ok(())
            }
            Ok((_, Err(e))) => Err(Refusal::hostcall("replacing the body", e)),
            Err(SealError::Json(e)) => {
                Metrics::add(vm.metrics.rejected_bad_json, 1);
                Err(Refusal::new(ProblemKind::BadJson, e.to_string()))
            }
            Err(SealError::Cipher(e)) => Err(Refusal::new(ProblemKind::SealFailed, e.to_string())),
        }
    }

    /// Answers the problem and stops the request. If even the answer fails, the request
    /// stays stopped: nothing is forwarded.
    fn refuse(&mut self, r: Refusal) -> Action {
        if r.kind == ProblemKind::SealFailed {
            Metrics::add(self.vm.metrics.seal_failed, 1);
        }
        host::log(
            LogLevel::Info,
            &format!("veil: refused request: {} ({})", r.kind.code(), r.detail),
        );
        let body = problem_json(r.kind, &r.detail);
        let status = u32::from(r.kind.status());
        if let Err(e) = host::send_local_response(
            status,
            &[
                ("content-type", CONTENT_TYPE),
                ("cache-control", "no-store"),
            ],
            &body,
        ) {
            Metrics::add(self.vm.metrics.hostcall_failed, 1);
            host::log(
                LogLevel::Error,
                &format!("veil: could not send the refusal (host status {})", e.0),
            );
        }
        self.state = State::Refused;
        Action::Pause
    }

    fn finish(&mut self) -> Action {
        let State::Buffering(pending) = &self.state else {
            return Action::Continue;
        };
        match self.seal_body(pending) {
            Ok(()) => {
                self.state = State::Forwarded;
                Action::Continue
            }
            Err(r) => self.refuse(r),
        }
    }
}

impl Context for SealStream {}

impl HttpContext for SealStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.on_headers(end_of_stream) {
            Ok(state) => {
                self.state = state;
                Action::Continue
            }
            Err(r) => self.refuse(r),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.state {
            State::Buffering(_) if body_size > self.vm.config.max_body_bytes => {
                Metrics::add(self.vm.metrics.rejected_too_large, 1);
                let r = self.too_large();
                self.refuse(r)
            }
            State::Buffering(_) if !end_of_stream => Action::Pause,
            State::Buffering(_) => self.finish(),
            State::Refused => Action::Pause,
            State::Passing | State::Forwarded => Action::Continue,
        }
    }

    /// HTTP/2 requests with trailers never see `end_of_stream` in the body callback.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.state {
            State::Buffering(_) => self.finish(),
            State::Refused => Action::Pause,
            State::Passing | State::Forwarded => Action::Continue,
        }
    }
}

/// Stands in when the plugin has no valid configuration: every request is refused, so a
/// broken deployment fails closed rather than forwarding plaintext.
pub struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let body = problem_json(
            ProblemKind::KeyUnavailable,
            "the Veil filter is not configured",
        );
        let _ = host::send_local_response(503, &[("content-type", CONTENT_TYPE)], &body);
        Action::Pause
    }
}
