//! The native shell: one [`Module`] per filter config (shared by every worker), one
//! [`Exchange`] per stream, both driving the roles (`veil-roles`) through the host seam
//! implemented in [`crate::host`].
//!
//! Until the roles run behind the host seam (issue #15), this shell serves no role: a request
//! that a route rule or the relay claims is refused with 503 problem+json (detail
//! `native-role-unavailable`) so nothing the policy says to seal is ever forwarded; every
//! other request passes untouched.

use std::sync::Arc;

use veil_core::config::FilterConfig;
use veil_core::problem::{problem_json, ProblemKind, CONTENT_TYPE};
use veil_roles::host::{Host, Level as RoleLevel, StreamHost};

use crate::ffi::{
    log, BodyStatus, CalloutAnswer, ConfigHost, HeadersStatus, Http, Level, Map, TrailersStatus,
};
use crate::host::{ConfigCtx, StreamCtx};

/// The filter_name this module answers to (`DynamicModuleFilter.filter_name`).
pub const FILTER_NAME: &str = "veil";

/// The shell's own counters (the roles define theirs once they run here).
#[derive(Default, Clone, Copy)]
struct Metrics {
    /// Requests refused because no role serves them in this shell yet.
    refused: Option<u32>,
    /// Requests no rule claims, passed untouched.
    passthrough: Option<u32>,
    /// A hook panicked and the stream was refused (should stay 0).
    hook_failed: Option<u32>,
}

/// One filter config: validated at load time (a bad config is refused: Envoy rejects it).
pub struct Module {
    config: Arc<FilterConfig>,
    metrics: Metrics,
}

impl Module {
    /// Parses the filter JSON (`filter_config`, a StringValue) with core's parser; the
    /// environment supplies `*_env` settings such as `keyservice.token_env`.
    pub fn new(host: &ConfigHost, name: &[u8], config: &[u8]) -> Result<Module, String> {
        if name != FILTER_NAME.as_bytes() {
            return Err(format!(
                "filter_name {:?}: this module serves only {FILTER_NAME:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let config =
            FilterConfig::parse(config, &|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
        let ctx = ConfigCtx { host };
        let metrics = Metrics {
            refused: ctx.define_counter("veil.native.refused").ok(),
            passthrough: ctx.define_counter("veil.native.passthrough").ok(),
            hook_failed: ctx.define_counter("veil.native.hook_failed").ok(),
        };
        log(Level::Info, || {
            format!(
                "veil: native filter configured ({} route rules, relay {})",
                config.routes.len(),
                if config.relay.is_some() { "on" } else { "off" }
            )
        });
        Ok(Module {
            config: Arc::new(config),
            metrics,
        })
    }

    pub fn new_exchange(&self) -> Exchange {
        Exchange {
            config: Arc::clone(&self.config),
            state: State::Idle,
            metrics: self.metrics,
        }
    }

    pub fn on_scheduled(&self, _host: &ConfigHost, _event: u64) {}

    pub fn on_callout(&self, _host: &ConfigHost, _id: u64, _answer: CalloutAnswer) {}

    /// Called on the main thread before the config is freed.
    pub fn shutdown(&self) {}
}

/// What this stream's request is to Veil, decided on its headers.
enum State {
    Idle,
    /// Refused: nothing more is forwarded.
    Refused,
}

pub struct Exchange {
    config: Arc<FilterConfig>,
    state: State,
    metrics: Metrics,
}

impl Exchange {
    pub fn on_request_headers(&mut self, http: &Http, _eos: bool) -> HeadersStatus {
        let path = http
            .header(Map::RequestHeaders, ":path")
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let ctx = StreamCtx { http };
        if claimed(&self.config, path) {
            self.state = State::Refused;
            count(&ctx, self.metrics.refused);
            refuse(
                &ctx,
                ProblemKind::KeyUnavailable,
                "the native shell does not serve this route's role yet (native-role-unavailable)",
            );
            return HeadersStatus::Stop;
        }
        count(&ctx, self.metrics.passthrough);
        HeadersStatus::Continue
    }

    pub fn on_request_body(&mut self, _http: &Http, _eos: bool) -> BodyStatus {
        match self.state {
            State::Idle => BodyStatus::Continue,
            State::Refused => BodyStatus::StopAndBuffer,
        }
    }

    pub fn on_request_trailers(&mut self, _http: &Http) -> TrailersStatus {
        match self.state {
            State::Idle => TrailersStatus::Continue,
            State::Refused => TrailersStatus::Stop,
        }
    }

    pub fn on_response_headers(&mut self, _http: &Http, _eos: bool) -> HeadersStatus {
        HeadersStatus::Continue
    }

    pub fn on_response_body(&mut self, _http: &Http, _eos: bool) -> BodyStatus {
        BodyStatus::Continue
    }

    pub fn on_response_trailers(&mut self, _http: &Http) -> TrailersStatus {
        TrailersStatus::Continue
    }

    pub fn on_complete(&mut self, _http: &Http) {}

    pub fn on_callout(&mut self, _http: &Http, _id: u64, _answer: CalloutAnswer) {}

    pub fn on_scheduled(&mut self, _http: &Http, _event: u64) {}

    /// After a hook panicked: 500 problem+json (Envoy resets the stream instead if the
    /// response already started). Nothing of the stream is forwarded any more.
    pub fn fail_closed(&self, http: &Http) {
        let ctx = StreamCtx { http };
        count(&ctx, self.metrics.hook_failed);
        refuse(
            &ctx,
            ProblemKind::SealFailed,
            "the filter failed on this request",
        );
    }
}

/// Does a route rule or the relay claim this path (so a role would have to run)?
fn claimed(config: &FilterConfig, path: &str) -> bool {
    config.route(path).is_some()
        || config
            .relay
            .as_ref()
            .is_some_and(|r| path.starts_with(r.prefix.as_str()) || r.requires_relay(path))
}

fn count(h: &dyn Host, id: Option<u32>) {
    if let Some(id) = id {
        h.increment_counter(id, 1);
    }
}

/// Answers a problem+json; the hook then returns a Stop status. Logs the code, never content.
fn refuse(h: &dyn StreamHost, kind: ProblemKind, detail: &str) {
    h.log(
        RoleLevel::Info,
        &format!("veil: refused: {} ({detail})", kind.code()),
    );
    let body = problem_json(kind, detail);
    let headers = [
        ("content-type", CONTENT_TYPE),
        ("cache-control", "no-store"),
    ];
    if h.send_local_response(kind.status(), &headers, &body)
        .is_err()
    {
        h.log(RoleLevel::Error, "veil: could not send the refusal");
    }
}
