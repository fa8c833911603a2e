//! The entry points a shell calls: one [`Stream`] per HTTP stream (it finds the route rule
//! on the request headers and hands the stream to that rule's role), and the worker-wide
//! methods of [`Worker`] (configure, tick, root callouts, parked work).
//!
//! ```text
//! shell callback                 roles
//! ─────────────────────────────  ───────────────────────────────────────────────────────
//! configure (root / config new)  Worker::configure(host, bytes, env) → Worker | error
//! tick (every TICK, per worker)  worker.tick(host)              → streams to run_parked
//! root callout answer            worker.on_root_callout(host, id, answer) → streams …
//! stream created                 Stream::new(worker, id)
//! request/response callbacks     stream.on_request_headers(host, eos) … → Action
//! stream callout answer          stream.on_callout(host, id, answer)  → streams …
//! a stream to run (same worker)  worker.run_parked(host of that stream, id) (resumes it)
//! stream destroyed               stream.on_destroy(host)
//! ```

use std::rc::Rc;
use std::time::Duration;

use veil_core::config::{ConfigError, FilterConfig, RouteAction};
use veil_core::problem::ProblemKind;

use crate::clock;
use crate::host::{
    Action, CalloutAnswer, CalloutId, HeaderKind, Host, Level, StreamHost, StreamId,
};
use crate::keys::ondemand::{self, Owner};
use crate::keys::refresh;
use crate::metrics::Metrics;
use crate::reply::{refuse, Refusal};
use crate::roles::asset;
use crate::roles::relay::RelayStream;
use crate::roles::seal::SealRequest;
use crate::roles::unseal::{self, Done, UnsealStream};
use crate::worker::Worker;

/// How often a shell should call [`Worker::tick`].
pub const TICK: Duration = Duration::from_millis(200);

impl Worker {
    /// Validates the plugin configuration and sets the worker up: counters defined, the
    /// shared on-demand record created. `env` resolves `${VAR}` references.
    pub fn configure(
        h: &dyn Host,
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Worker, ConfigError> {
        let config = FilterConfig::parse(bytes, env)?;
        let worker = Worker::new(config, Metrics::define(h));
        ondemand::init_shared(&worker.records.over(h));
        Ok(worker)
    }

    /// The worker's periodic work ([`TICK`]): keep the current keys fresh, adopt keys other
    /// workers fetched, take over fetches nobody answers. Callouts go out through `h` as
    /// the root's. Returns the streams whose parked work can run now
    /// ([`Worker::run_parked`]).
    pub fn tick(&self, h: &dyn Host) -> Vec<StreamId> {
        let k = self.key_ctx();
        refresh::tick(&k, h);
        let rejected = self.records.take_rejected();
        if rejected > 0 {
            Metrics::add(
                h,
                self.metrics.shared_records_rejected,
                i64::try_from(rejected).unwrap_or(i64::MAX),
            );
        }
        match clock::wall_ms(h) {
            Ok(now) => ondemand::tick(&k, h, now),
            Err(_) => Vec::new(),
        }
    }

    /// The answer to a callout the root dispatched (through [`Worker::tick`]). Returns the
    /// streams whose parked work can run now.
    pub fn on_root_callout(
        &self,
        h: &dyn Host,
        id: CalloutId,
        answer: &CalloutAnswer,
    ) -> Vec<StreamId> {
        let k = self.key_ctx();
        if refresh::on_answer(&k, h, id, answer) {
            return Vec::new();
        }
        let now = clock::wall_ms(h).unwrap_or(0);
        ondemand::on_answer(&k, h, Owner::Root, id, answer, now).unwrap_or_default()
    }

    /// Runs the work `stream` parked (its keys are resolved) with `h` acting for that
    /// stream, and resumes it unless the work answered a problem. A stream with nothing
    /// parked is left alone.
    pub fn run_parked(&self, h: &dyn StreamHost, stream: StreamId) {
        let Some(job) = ondemand::take(&self.key_ctx(), stream) else {
            return;
        };
        let direction = job.direction();
        if let Done::Continue = unseal::complete(h, self, job) {
            if let Err(e) = h.resume(direction) {
                Metrics::add(h, self.metrics.hostcall_failed, 1);
                h.log(
                    Level::Warn,
                    &format!("veil: cannot resume stream {} ({e})", stream.0),
                );
            }
        }
    }
}

enum Role {
    /// No rule matched (or not decided yet): Veil stays out of the way.
    Idle,
    Seal(SealRequest),
    Unseal(UnsealStream),
    Relay(RelayStream),
    /// Refused (or answered) before any role started.
    Refused,
}

/// One HTTP stream.
pub struct Stream {
    worker: Rc<Worker>,
    id: StreamId,
    role: Role,
}

impl Stream {
    pub fn new(worker: Rc<Worker>, id: StreamId) -> Stream {
        Stream {
            worker,
            id,
            role: Role::Idle,
        }
    }

    /// The worker this stream runs on.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The stream goes away: work it parked is dropped, fetches it owned are handed to the
    /// tick.
    pub fn on_destroy(&mut self, h: &dyn Host) {
        if matches!(self.role, Role::Unseal(_)) {
            let now = clock::wall_ms(h).unwrap_or(0);
            ondemand::forget(&self.worker.key_ctx(), h, self.id, now);
        }
        self.role = Role::Idle;
    }

    /// The answer to a callout this stream dispatched. Returns the streams whose parked
    /// work can run now (this one among them, possibly).
    pub fn on_callout(
        &mut self,
        h: &dyn StreamHost,
        id: CalloutId,
        answer: &CalloutAnswer,
    ) -> Vec<StreamId> {
        let w = Rc::clone(&self.worker);
        if let Role::Relay(r) = &mut self.role {
            if r.on_callout(h, &w, id, answer) {
                return Vec::new();
            }
        }
        let now = clock::wall_ms(h).unwrap_or(0);
        ondemand::on_answer(&w.key_ctx(), h, Owner::Stream(self.id), id, answer, now)
            .unwrap_or_default()
    }

    pub fn on_request_headers(&mut self, h: &dyn StreamHost, end_of_stream: bool) -> Action {
        let w = Rc::clone(&self.worker);
        // One hostcall for every header the roles look at (path, relay marker, method,
        // encoding, length).
        let head = match h.headers(HeaderKind::RequestHeaders) {
            Ok(m) => m,
            Err(e) => {
                self.role = Role::Refused;
                let r =
                    Refusal::hostcall(ProblemKind::SealFailed, "reading the request headers", e);
                return refuse(h, &w.metrics, &r);
            }
        };
        let path = head.get(":path").unwrap_or_default();
        if w.config.relay.is_some() {
            if let Some(action) = asset::serve(h, &w.metrics, &head, &path) {
                self.role = Role::Refused;
                return action;
            }
        }
        // The relay runs before the route rules: its endpoints, encoded requests, and the
        // refusal of plaintext on relayed routes.
        if let Some((relay, action)) = RelayStream::start(h, &w, &head, &path, end_of_stream) {
            self.role = Role::Relay(relay);
            return action;
        }
        let Some((rule, rest)) = w.config.route(&path) else {
            return Action::Continue;
        };
        match &rule.action {
            RouteAction::Seal(profile) => {
                let (seal, action) =
                    SealRequest::start(h, &w, &head, rule, profile, rest, end_of_stream);
                self.role = Role::Seal(seal);
                action
            }
            RouteAction::Unseal(unseal) => {
                let (role, action) =
                    UnsealStream::start(h, &w, &head, self.id, unseal, rest, end_of_stream);
                self.role = Role::Unseal(role);
                action
            }
        }
    }

    pub fn on_request_body(
        &mut self,
        h: &dyn StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let w = &*self.worker;
        match &mut self.role {
            Role::Seal(s) => s.on_request_body(h, w, body_size, end_of_stream),
            Role::Unseal(u) => u.on_request_body(h, w, body_size, end_of_stream),
            Role::Relay(r) => r.on_request_body(h, w, body_size, end_of_stream),
            Role::Refused => Action::Pause,
            Role::Idle => Action::Continue,
        }
    }

    pub fn on_request_trailers(&mut self, h: &dyn StreamHost) -> Action {
        let w = &*self.worker;
        match &mut self.role {
            Role::Seal(s) => s.on_request_trailers(h, w),
            Role::Unseal(u) => u.on_request_trailers(h, w),
            Role::Relay(r) => r.on_request_trailers(h, w),
            Role::Refused => Action::Pause,
            Role::Idle => Action::Continue,
        }
    }

    pub fn on_response_headers(&mut self, h: &dyn StreamHost, end_of_stream: bool) -> Action {
        let w = &*self.worker;
        match &mut self.role {
            Role::Unseal(u) => u.on_response_headers(h, w, end_of_stream),
            Role::Relay(r) => r.on_response_headers(h, w, end_of_stream),
            Role::Seal(_) | Role::Refused | Role::Idle => Action::Continue,
        }
    }

    pub fn on_response_body(
        &mut self,
        h: &dyn StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let w = &*self.worker;
        match &mut self.role {
            Role::Unseal(u) => u.on_response_body(h, w, body_size, end_of_stream),
            Role::Relay(r) => r.on_response_body(h, w, body_size, end_of_stream),
            Role::Seal(_) | Role::Refused | Role::Idle => Action::Continue,
        }
    }

    pub fn on_response_trailers(&mut self, h: &dyn StreamHost) -> Action {
        let w = &*self.worker;
        match &mut self.role {
            Role::Unseal(u) => u.on_response_trailers(h, w),
            Role::Relay(r) => r.on_response_trailers(h, w),
            Role::Seal(_) | Role::Refused | Role::Idle => Action::Continue,
        }
    }
}

/// The answer to every request when the plugin has no valid configuration: refused, so a
/// broken deployment fails closed rather than forwarding plaintext.
pub fn refuse_unconfigured(h: &dyn StreamHost) -> Action {
    let r = Refusal::new(
        ProblemKind::KeyUnavailable,
        "the Veil filter is not configured",
    );
    refuse(h, &Metrics::default(), &r)
}
