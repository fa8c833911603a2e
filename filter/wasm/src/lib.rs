//! Veil's proxy-wasm shell: the host seam ([`host::WasmHost`]) over the proxy-wasm ABI,
//! and the SDK's contexts handing every callback to the roles (`veil-roles`). Nothing else
//! lives here; everything that touches proxy-wasm does.
//!
//! - [`Root`] (one per worker VM) configures the [`Worker`] in `on_configure`, calls its
//!   tick from `on_tick`, and hands it the answers to the callouts the tick dispatched.
//! - [`HttpStream`] is one HTTP stream: each callback goes to its [`Stream`].
//! - Streams whose parked work is ready (keys fetched on demand) are run in their own
//!   context: `set_effective_context` points the hostcalls at them, then the roles run
//!   the work and resume the stream.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

mod host;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as WasmAction, BufferType, ContextType, LogLevel};
use veil_roles::host::{Action, CalloutId, StreamId};
use veil_roles::{refuse_unconfigured, Stream, Worker, TICK};

use crate::host::WasmHost;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            id: context_id,
            worker: None,
        })
    });
}}

fn action(a: Action) -> WasmAction {
    match a {
        Action::Continue => WasmAction::Continue,
        Action::Pause => WasmAction::Pause,
    }
}

/// Runs the parked work of each stream of `ready`, each in its own context, then points the
/// hostcalls back at `current`.
fn run_parked(worker: &Worker, ready: Vec<StreamId>, current: u32) {
    let mut switched = false;
    for id in ready {
        let Ok(ctx) = u32::try_from(id.0) else {
            continue;
        };
        if ctx != current {
            if let Err(e) = host::set_effective_context(ctx) {
                // The stream is gone; nothing to resume.
                host::log(
                    LogLevel::Debug,
                    &format!("veil: waiting stream {ctx} is gone (host status {})", e.0),
                );
                continue;
            }
            switched = true;
        }
        worker.run_parked(&WasmHost, id);
    }
    if switched {
        let _ = host::set_effective_context(current);
    }
}

/// One worker VM's root context.
struct Root {
    id: u32,
    worker: Option<Rc<Worker>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(worker) = &self.worker else { return };
        let answer = host::callout_answer(body_size);
        let ready = worker.on_root_callout(&WasmHost, CalloutId(u64::from(token_id)), &answer);
        run_parked(worker, ready, self.id);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match host::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(b) => b,
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "veil: cannot read the plugin configuration (host status {})",
                        e.0
                    ),
                );
                return false;
            }
        };
        match Worker::configure(&WasmHost, &bytes, &|name| std::env::var(name).ok()) {
            Ok(worker) => {
                let routes = worker.config.routes.len();
                self.worker = Some(Rc::new(worker));
                if let Err(e) = host::set_tick_period(TICK) {
                    host::log(
                        LogLevel::Error,
                        &format!("veil: cannot set the tick period (host status {})", e.0),
                    );
                    return false;
                }
                host::log(
                    LogLevel::Info,
                    &format!("veil: configuration accepted ({routes} route rules)"),
                );
                true
            }
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("veil: invalid configuration: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(worker) = &self.worker {
            let ready = worker.tick(&WasmHost);
            run_parked(worker, ready, self.id);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpStream {
            id: context_id,
            stream: self
                .worker
                .as_ref()
                .map(|w| Stream::new(Rc::clone(w), StreamId(u64::from(context_id)))),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream; `None` when the plugin has no valid configuration (every request is
/// then refused: fail closed).
struct HttpStream {
    id: u32,
    stream: Option<Stream>,
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        if let Some(s) = &mut self.stream {
            s.on_destroy(&WasmHost);
        }
    }
}

impl Context for HttpStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(s) = &mut self.stream else { return };
        let answer = host::callout_answer(body_size);
        let ready = s.on_callout(&WasmHost, CalloutId(u64::from(token_id)), &answer);
        if !ready.is_empty() {
            run_parked(s.worker(), ready, self.id);
        }
    }
}

impl HttpContext for HttpStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        action(match &mut self.stream {
            Some(s) => s.on_request_headers(&WasmHost, end_of_stream),
            None => refuse_unconfigured(&WasmHost),
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        action(match &mut self.stream {
            Some(s) => s.on_request_body(&WasmHost, body_size, end_of_stream),
            None => Action::Continue,
        })
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> WasmAction {
        action(match &mut self.stream {
            Some(s) => s.on_request_trailers(&WasmHost),
            None => Action::Continue,
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        action(match &mut self.stream {
            Some(s) => s.on_response_headers(&WasmHost, end_of_stream),
            None => Action::Continue,
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        action(match &mut self.stream {
            Some(s) => s.on_response_body(&WasmHost, body_size, end_of_stream),
            None => Action::Continue,
        })
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> WasmAction {
        action(match &mut self.stream {
            Some(s) => s.on_response_trailers(&WasmHost),
            None => Action::Continue,
        })
    }
}
