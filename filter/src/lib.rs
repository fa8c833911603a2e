//! Veil's Envoy filter: thin glue between Envoy's proxy-wasm callbacks and `veil-core`.
//!
//! - [`Root`] validates the configuration in `on_configure` and keeps data keys fresh from
//!   `on_tick` (callouts to the keyservice cluster; shared data between workers).
//! - [`stream::Stream`] is one HTTP stream: it finds the route rule and hands the stream to
//!   that rule's role ([`seal_stream::SealRequest`], ...), each a state machine of its own.
//!
//! No panics: hostcalls go through [`host`], which returns every status as a value.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

mod callout_auth;
mod host;
mod keycache;
mod metrics;
mod ondemand;
mod relay;
mod relay_asset;
mod reply;
mod seal_stream;
mod stream;
mod unseal_stream;
mod vm;

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};
use veil_core::config::FilterConfig;

use crate::keycache::{parse_current, with_fetched_at, SHARED_KEY};
use crate::metrics::Metrics;
use crate::vm::VmState;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            id: context_id,
            ..Root::default()
        })
    });
}}

const TICK: Duration = Duration::from_millis(200);
const MAX_BACKOFF_MS: i64 = 5_000;

/// A key fetch in flight, or when the next one may start.
#[derive(Default)]
enum Fetch {
    #[default]
    Idle,
    InFlight {
        token: u32,
        started_ms: i64,
    },
    Backoff {
        until_ms: i64,
        failures: u32,
    },
}

#[derive(Default)]
struct Root {
    /// The root context's id (on-demand key fetches may be dispatched from it).
    id: u32,
    vm: Option<Rc<VmState>>,
    fetch: Fetch,
}

pub(crate) fn now_ms() -> Option<i64> {
    let t = host::now().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

impl Root {
    fn refresh_keys(&mut self) {
        let Some(vm) = self.vm.clone() else { return };
        let Some(now_ms) = now_ms() else { return };
        let now = now_ms / 1000;
        // Adopt what another worker fetched.
        let (have_current, fetched_at) = match vm.keys.try_borrow_mut() {
            Ok(mut keys) => {
                if let Err(e) = keys.refresh_from_shared() {
                    host::log(LogLevel::Warn, &format!("veil: shared keys unusable: {e}"));
                }
                (
                    keys.sealing_key(now, vm.config.rotation).is_some(),
                    keys.fetched_at(),
                )
            }
            Err(_) => return,
        };
        let refresh = i64::try_from(vm.config.keyservice.refresh_secs).unwrap_or(60);
        let stale = fetched_at.is_none_or(|t| now - t >= refresh);
        if have_current && !stale {
            return;
        }
        match self.fetch {
            Fetch::InFlight { started_ms, .. } => {
                let timeout = i64::try_from(vm.config.keyservice.timeout_ms).unwrap_or(2000);
                if now_ms - started_ms < timeout + 1000 {
                    return;
                }
            }
            Fetch::Backoff { until_ms, .. } if now_ms < until_ms => return,
            _ => {}
        }
        let ks = &vm.config.keyservice;
        let path = "/v1/data-keys/current";
        let auth = match callout_auth::authorization(ks, "GET", path, b"") {
            Ok(a) => a,
            Err(e) => {
                host::log(
                    LogLevel::Warn,
                    &format!("veil: cannot sign the keyservice request: {e}"),
                );
                self.fetch_failed(now_ms);
                return;
            }
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", ks.authority.as_str()),
            ("authorization", auth.as_str()),
        ];
        match proxy_wasm::hostcalls::dispatch_http_call(
            &ks.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(ks.timeout_ms),
        ) {
            Ok(token) => {
                self.fetch = Fetch::InFlight {
                    token,
                    started_ms: now_ms,
                }
            }
            Err(status) => {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "veil: cannot call keyservice cluster {:?}: {status:?}",
                        ks.cluster
                    ),
                );
                self.fetch_failed(now_ms);
            }
        }
    }

    fn fetch_failed(&mut self, now_ms: i64) {
        if let Some(vm) = &self.vm {
            Metrics::add(vm.metrics.key_fetch_failed, 1);
        }
        let failures = match self.fetch {
            Fetch::Backoff { failures, .. } => failures.saturating_add(1),
            _ => 1,
        };
        let delay = (200i64 << failures.min(5)).min(MAX_BACKOFF_MS);
        self.fetch = Fetch::Backoff {
            until_ms: now_ms + delay,
            failures,
        };
    }

    fn keys_answer(&mut self, body_size: usize) -> Result<(), String> {
        let vm = self.vm.clone().ok_or("not configured")?;
        let status = host::get_header(MapType::HttpCallResponseHeaders, ":status")
            .map_err(|e| format!("reading :status failed with host status {}", e.0))?;
        match status.as_deref() {
            Some("200") => {}
            Some(s) => return Err(format!("keyservice answered status {s}")),
            None => return Err("keyservice call failed (no :status: reset or timeout)".into()),
        }
        let body = host::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| format!("reading the answer failed with host status {}", e.0))?;
        let now = now_ms().unwrap_or(0) / 1000;
        let mut answer = parse_current(&body).map_err(|e| e.to_string())?;
        answer.fetched_at = Some(now);
        vm.keys
            .try_borrow_mut()
            .map_err(|_| "key cache busy".to_string())?
            .install(&answer)
            .map_err(|e| e.to_string())?;
        if let Some(shared) = with_fetched_at(&body, now) {
            if let Err(e) = host::set_shared(SHARED_KEY, &shared, None) {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "veil: could not publish keys to shared data (status {})",
                        e.0
                    ),
                );
            }
        }
        Metrics::add(vm.metrics.key_fetch_ok, 1);
        Ok(())
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if !matches!(self.fetch, Fetch::InFlight { token, .. } if token == token_id) {
            if let Some(vm) = &self.vm {
                let now = now_ms().unwrap_or(0);
                ondemand::on_answer(vm, token_id, body_size, self.id, now);
            }
            return;
        }
        self.fetch = Fetch::Idle;
        if let Err(e) = self.keys_answer(body_size) {
            host::log(LogLevel::Warn, &format!("veil: key fetch failed: {e}"));
            self.fetch_failed(now_ms().unwrap_or(0));
        } else {
            host::log(LogLevel::Debug, "veil: data keys refreshed");
        }
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
        match FilterConfig::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                let routes = config.routes.len();
                self.vm = Some(Rc::new(VmState::new(config, Metrics::define())));
                self.fetch = Fetch::Idle;
                ondemand::init_shared();
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
        self.refresh_keys();
        if let (Some(vm), Some(now)) = (&self.vm, now_ms()) {
            ondemand::tick(vm, self.id, now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.vm {
            Some(vm) => Box::new(stream::Stream::new(Rc::clone(vm), context_id)),
            None => Box::new(stream::Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
