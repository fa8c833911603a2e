//! One HTTP stream: finds the route rule on the request headers and hands the stream to
//! that rule's role. Each role is its own state machine in its own module.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use veil_core::config::RouteAction;
use veil_core::problem::ProblemKind;

use crate::host;
use crate::relay::RelayStream;
use crate::reply::{refuse, Refusal};
use crate::seal_stream::SealRequest;
use crate::unseal_stream::UnsealStream;
use crate::vm::VmState;

enum Role {
    /// No rule matched (or not decided yet): Veil stays out of the way.
    Idle,
    Seal(SealRequest),
    Unseal(UnsealStream),
    Relay(RelayStream),
    /// Refused before any role started.
    Refused,
}

pub struct Stream {
    vm: Rc<VmState>,
    /// This stream's context id (other contexts resume it by this id).
    ctx: u32,
    role: Role,
}

impl Stream {
    pub fn new(vm: Rc<VmState>, ctx: u32) -> Stream {
        Stream {
            vm,
            ctx,
            role: Role::Idle,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if matches!(self.role, Role::Unseal(_)) {
            crate::ondemand::forget(&self.vm, self.ctx);
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Role::Relay(r) = &mut self.role {
            if r.on_callout(&self.vm, token_id, body_size) {
                return;
            }
        }
        let now = crate::now_ms().unwrap_or(0);
        crate::ondemand::on_answer(&self.vm, token_id, body_size, self.ctx, now);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let vm = Rc::clone(&self.vm);
        // One hostcall for every header the roles look at (path, relay marker, method,
        // encoding, length).
        let head = match host::read_headers(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(e) => {
                self.role = Role::Refused;
                return refuse(
                    &vm.metrics,
                    &Refusal::hostcall("reading the request headers", e),
                );
            }
        };
        let path = head.get(":path").unwrap_or_default();
        if vm.config.relay.is_some() {
            if let Some(action) = crate::relay_asset::serve(&vm.metrics, &head, &path) {
                self.role = Role::Refused;
                return action;
            }
        }
        // The relay runs before the route rules: its endpoints, encoded requests, and the
        // refusal of plaintext on relayed routes.
        if let Some((relay, action)) = RelayStream::start(&vm, &head, &path, end_of_stream) {
            self.role = Role::Relay(relay);
            return action;
        }
        let Some((rule, rest)) = vm.config.route(&path) else {
            return Action::Continue;
        };
        match &rule.action {
            RouteAction::Seal(profile) => {
                let (seal, action) =
                    SealRequest::start(&vm, &head, rule, profile, rest, end_of_stream);
                self.role = Role::Seal(seal);
                action
            }
            RouteAction::Unseal(unseal) => {
                let (role, action) =
                    UnsealStream::start(&vm, &head, self.ctx, unseal, rest, end_of_stream);
                self.role = Role::Unseal(role);
                action
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.role {
            Role::Seal(s) => s.on_request_body(&self.vm, body_size, end_of_stream),
            Role::Unseal(u) => u.on_request_body(&self.vm, body_size, end_of_stream),
            Role::Relay(r) => r.on_request_body(&self.vm, body_size, end_of_stream),
            Role::Refused => Action::Pause,
            Role::Idle => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match &mut self.role {
            Role::Seal(s) => s.on_request_trailers(&self.vm),
            Role::Unseal(u) => u.on_request_trailers(&self.vm),
            Role::Relay(r) => r.on_request_trailers(&self.vm),
            Role::Refused => Action::Pause,
            Role::Idle => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match &mut self.role {
            Role::Unseal(u) => u.on_response_headers(&self.vm, end_of_stream),
            Role::Relay(r) => r.on_response_headers(&self.vm, end_of_stream),
            Role::Seal(_) | Role::Refused | Role::Idle => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.role {
            Role::Unseal(u) => u.on_response_body(&self.vm, body_size, end_of_stream),
            Role::Relay(r) => r.on_response_body(&self.vm, body_size, end_of_stream),
            Role::Seal(_) | Role::Refused | Role::Idle => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match &mut self.role {
            Role::Unseal(u) => u.on_response_trailers(&self.vm),
            Role::Relay(r) => r.on_response_trailers(&self.vm),
            Role::Seal(_) | Role::Refused | Role::Idle => Action::Continue,
        }
    }
}

/// Stands in when the plugin has no valid configuration: every request is refused, so a
/// broken deployment fails closed rather than forwarding plaintext.
pub struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let r = Refusal::new(
            ProblemKind::KeyUnavailable,
            "the Veil filter is not configured",
        );
        refuse(&crate::metrics::Metrics::default(), &r)
    }
}
