//! The roles' host seam (`veil_roles::host`) over the native handles of [`crate::ffi`]:
//! [`ConfigCtx`] for the filter config on the main thread (key refresh, config callouts) and
//! [`StreamCtx`] for one stream on its worker.
//!
//! Shared data is process memory ([`Shared`]): one versioned map for every worker, so the
//! roles' compare-and-swap protocols (key records, on-demand kid claims, relay pair slots)
//! run unchanged: one keyservice request per kid across all workers, as with proxy-wasm.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use veil_core::header_map::HeaderMap;
use veil_roles::host::{
    BodyKind, CalloutId, CalloutRequest, Direction, HeaderKind, Host, HostError, HostResult, Level,
    SharedData, SharedScope, StreamHost,
};

use crate::ffi::{self, CalloutStartError, ConfigHost, Dir, Http, Map};

/// One value of the shared map and its version (every write makes a new one).
struct Versioned {
    value: Vec<u8>,
    version: u32,
}

/// The process-wide shared data (Envoy's proxy-wasm shared data has the same semantics:
/// versioned values, writes checked against a version).
static SHARED: LazyLock<Mutex<HashMap<String, Versioned>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The shared map, as every context sees it.
pub struct Shared;

impl SharedData for Shared {
    /// libveil's own memory: no other filter of the proxy reaches it through Envoy, so the
    /// roles store their records unsealed (docs/security.md, "Shared data").
    fn shared_scope(&self) -> SharedScope {
        SharedScope::Filter
    }

    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        let map = SHARED.lock().map_err(|_| HostError::INTERNAL)?;
        Ok(map.get(key).map(|v| (v.value.clone(), v.version)))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        let mut map = SHARED.lock().map_err(|_| HostError::INTERNAL)?;
        let current = map.get(key).map(|v| v.version);
        // As Envoy's shared data: a CAS (non-zero) is checked against a stored value only; a
        // missing key is written whatever the CAS says.
        if let (Some(expected), Some(stored)) = (cas, current) {
            if expected != 0 && stored != expected {
                return Err(HostError::CAS_MISMATCH);
            }
        }
        let version = current.unwrap_or(0).wrapping_add(1).max(1);
        // A key written before (a relay set, on every request in local replay mode) is
        // updated in place: no new key string, and its buffer is reused.
        match map.get_mut(key) {
            Some(v) => {
                v.value.clear();
                v.value.extend_from_slice(value);
                v.version = version;
            }
            None => {
                map.insert(
                    key.to_string(),
                    Versioned {
                        value: value.to_vec(),
                        version,
                    },
                );
            }
        }
        Ok(())
    }
}

fn level(l: Level) -> ffi::Level {
    match l {
        Level::Trace | Level::Debug => ffi::Level::Debug,
        Level::Info => ffi::Level::Info,
        Level::Warn => ffi::Level::Warn,
        Level::Error => ffi::Level::Error,
    }
}

fn start_error(e: CalloutStartError) -> HostError {
    match e {
        CalloutStartError::ClusterNotFound => HostError::NOT_FOUND,
        CalloutStartError::MissingRequiredHeaders => HostError::BAD_ARGUMENT,
        _ => HostError::INTERNAL,
    }
}

/// The callout's headers as Envoy's native callout wants them: `:authority` is also given as
/// `host` (the dynamic-module callout requires `host`, §7.5).
fn callout_headers<'a>(req: &'a CalloutRequest<'a>) -> Vec<(&'a str, &'a str)> {
    let mut hs: Vec<(&str, &str)> = req.headers.to_vec();
    if !hs.iter().any(|(k, _)| *k == "host") {
        if let Some((_, v)) = hs.iter().find(|(k, _)| *k == ":authority").copied() {
            hs.push(("host", v));
        }
    }
    hs
}

fn timeout_ms(req: &CalloutRequest<'_>) -> u64 {
    u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX)
}

/// Counter names: the roles name them `veil.*`; Envoy prefixes the `metrics_namespace`
/// (`veil` in Veil's configs), so the prefix is not repeated.
fn counter_name(name: &str) -> &str {
    name.strip_prefix("veil.").unwrap_or(name)
}

fn counter_id(id: usize) -> HostResult<u32> {
    if id == 0 {
        return Err(HostError::INTERNAL);
    }
    u32::try_from(id).map_err(|_| HostError::INTERNAL)
}

/// The filter config's context (main thread: config_new, config_scheduled, config callouts).
pub struct ConfigCtx<'a> {
    pub host: &'a ConfigHost,
}

impl SharedData for ConfigCtx<'_> {
    fn shared_scope(&self) -> SharedScope {
        Shared.shared_scope()
    }
    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        Shared.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        Shared.shared_set(key, value, cas)
    }
}

impl Host for ConfigCtx<'_> {
    fn now(&self) -> HostResult<SystemTime> {
        Ok(SystemTime::now())
    }
    fn fill_random(&self, out: &mut [u8]) -> HostResult<()> {
        veil_core::crypto::nonce::fill(out).map_err(|_| HostError::INTERNAL)
    }
    fn log_enabled(&self, l: Level) -> bool {
        ffi::log_enabled(level(l))
    }
    fn log(&self, l: Level, message: &str) {
        ffi::log(level(l), || message.to_string());
    }
    fn define_counter(&self, name: &str) -> HostResult<u32> {
        counter_id(self.host.define_counter(counter_name(name)))
    }
    fn increment_counter(&self, id: u32, by: i64) {
        if let (Ok(id), Ok(by)) = (usize::try_from(id), u64::try_from(by)) {
            self.host.count(id, by);
        }
    }
    fn callout(&self, req: &CalloutRequest<'_>) -> HostResult<CalloutId> {
        let hs = callout_headers(req);
        self.host
            .callout(
                req.cluster,
                &hs,
                req.body.unwrap_or_default(),
                timeout_ms(req),
            )
            .map(CalloutId)
            .map_err(start_error)
    }
}

/// One stream's context (its worker, during one of its hooks).
pub struct StreamCtx<'a, 'b> {
    pub http: &'a Http<'b>,
    /// The ids of the callouts dispatched through this context (the worker's tick runs on a
    /// stream: its callouts' answers go back to the worker, not to the stream's role).
    pub issued: RefCell<Vec<u64>>,
}

impl<'a, 'b> StreamCtx<'a, 'b> {
    pub fn new(http: &'a Http<'b>) -> StreamCtx<'a, 'b> {
        StreamCtx {
            http,
            issued: RefCell::new(Vec::new()),
        }
    }
}

fn map(kind: HeaderKind) -> Map {
    match kind {
        HeaderKind::RequestHeaders => Map::RequestHeaders,
        HeaderKind::RequestTrailers => Map::RequestTrailers,
        HeaderKind::ResponseHeaders => Map::ResponseHeaders,
        HeaderKind::ResponseTrailers => Map::ResponseTrailers,
    }
}

fn dir(kind: BodyKind) -> Dir {
    match kind {
        BodyKind::Request => Dir::Request,
        BodyKind::Response => Dir::Response,
    }
}

impl SharedData for StreamCtx<'_, '_> {
    fn shared_scope(&self) -> SharedScope {
        Shared.shared_scope()
    }
    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        Shared.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        Shared.shared_set(key, value, cas)
    }
}

impl Host for StreamCtx<'_, '_> {
    fn now(&self) -> HostResult<SystemTime> {
        Ok(SystemTime::now())
    }
    fn fill_random(&self, out: &mut [u8]) -> HostResult<()> {
        veil_core::crypto::nonce::fill(out).map_err(|_| HostError::INTERNAL)
    }
    fn log_enabled(&self, l: Level) -> bool {
        ffi::log_enabled(level(l))
    }
    fn log(&self, l: Level, message: &str) {
        ffi::log(level(l), || message.to_string());
    }
    fn define_counter(&self, _name: &str) -> HostResult<u32> {
        // Envoy freezes metric definitions when config_new returns (§7.7).
        Err(HostError::UNIMPLEMENTED)
    }
    fn increment_counter(&self, id: u32, by: i64) {
        if let (Ok(id), Ok(by)) = (usize::try_from(id), u64::try_from(by)) {
            self.http.count(id, by);
        }
    }
    fn callout(&self, req: &CalloutRequest<'_>) -> HostResult<CalloutId> {
        let hs = callout_headers(req);
        self.http
            .callout(
                req.cluster,
                &hs,
                req.body.unwrap_or_default(),
                timeout_ms(req),
            )
            .map(CalloutId)
            .map_err(start_error)
    }
}

impl StreamHost for StreamCtx<'_, '_> {
    fn headers(&self, kind: HeaderKind) -> HostResult<HeaderMap> {
        Ok(self.http.headers(map(kind)))
    }

    fn header(&self, kind: HeaderKind, name: &str) -> HostResult<Option<String>> {
        Ok(self
            .http
            .header(map(kind), name)
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn add_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()> {
        ok(self.http.add_header(map(kind), name, value.as_bytes()))
    }

    fn replace_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()> {
        ok(self
            .http
            .set_header(map(kind), name, Some(value.as_bytes())))
    }

    fn remove_header(&self, kind: HeaderKind, name: &str) -> HostResult<()> {
        // Removing an absent header is fine; Envoy answers false only when the map is gone.
        let _ = self.http.set_header(map(kind), name, None);
        Ok(())
    }

    fn body(&self, kind: BodyKind, max: usize) -> HostResult<Vec<u8>> {
        let mut b = self.http.body(dir(kind)).ok_or(HostError::INTERNAL)?;
        b.truncate(max);
        Ok(b)
    }

    fn replace_body(&self, kind: BodyKind, _size: usize, value: &[u8]) -> HostResult<()> {
        ok(self.http.replace_body(dir(kind), value))
    }

    fn send_local_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.http.send_response(status, &hs, body, "veil");
        Ok(())
    }

    fn resume(&self, direction: Direction) -> HostResult<()> {
        self.http.resume(match direction {
            Direction::Request => Dir::Request,
            Direction::Response => Dir::Response,
        });
        Ok(())
    }

    /// A paused headers hook is StopIteration: the body hooks still run (§6 of the ABI notes).
    fn holds_headers(&self) -> bool {
        true
    }
}

fn ok(done: bool) -> HostResult<()> {
    if done {
        Ok(())
    } else {
        Err(HostError::INTERNAL)
    }
}
