//! The native shell: one [`Module`] per filter config (shared by every worker), one
//! [`Exchange`] per stream.
//!
//! Until the roles run behind the host seam (issue #15), this shell serves no role: a request
//! that a route rule or the relay claims is refused with 503 problem+json
//! (`native-role-unavailable` detail) so nothing the policy says to seal is ever forwarded;
//! every other request passes untouched.

use std::sync::Arc;

use veil_core::config::FilterConfig;
use veil_core::problem::{problem_json, ProblemKind, CONTENT_TYPE};

use crate::ffi::{
    log, BodyStatus, CalloutAnswer, ConfigHost, HeadersStatus, Http, Level, Map, TrailersStatus,
};

/// The filter_name this module answers to (`DynamicModuleFilter.filter_name`).
pub const FILTER_NAME: &str = "veil";

/// Counter ids (0 = not defined, not counted). Names appear as `<metrics_namespace>.<name>`;
/// Veil's configs set `metrics_namespace: veil`, so `seal.requests` is `veil.seal.requests`.
#[derive(Default, Clone, Copy)]
pub struct Metrics {
    pub requests_refused: usize,
    pub passthrough: usize,
    pub hook_failed: usize,
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
        let metrics = Metrics {
            requests_refused: host.define_counter("native.refused"),
            passthrough: host.define_counter("native.passthrough"),
            hook_failed: host.define_counter("native.hook_failed"),
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
        if claimed(&self.config, path) {
            self.state = State::Refused;
            http.count(self.metrics.requests_refused, 1);
            refuse(
                http,
                ProblemKind::KeyUnavailable,
                "the native shell does not serve this route's role yet (native-role-unavailable)",
            );
            return HeadersStatus::Stop;
        }
        http.count(self.metrics.passthrough, 1);
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
        http.count(self.metrics.hook_failed, 1);
        log(Level::Error, || {
            "veil: a filter hook failed; the stream is refused".to_string()
        });
        refuse(
            http,
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

/// Answers a problem+json and leaves the stream stopped.
fn refuse(http: &Http, kind: ProblemKind, detail: &str) {
    let body = problem_json(kind, detail);
    http.send_response(
        kind.status(),
        &[
            ("content-type", CONTENT_TYPE.as_bytes()),
            ("cache-control", b"no-store"),
        ],
        &body,
        kind.code(),
    );
}
