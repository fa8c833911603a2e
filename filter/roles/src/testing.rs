//! A fake host: an in-memory Envoy for tests of the roles (and of shells). Feature `fake`.
//!
//! [`FakeEnv`] is what a worker sees beyond one stream (clock, shared data, counters, logs,
//! callouts it sent); [`FakeHost`] is one stream on an env (its header maps, bodies, local
//! reply, resumptions). Two workers share data through [`FakeEnv::sibling`]. Any hostcall
//! can be made to fail ([`FakeEnv::fail`]) to drive the roles' refusals.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use veil_core::header_map::{self, HeaderMap};

use crate::host::{
    BodyKind, CalloutAnswer, CalloutId, CalloutRequest, Direction, HeaderKind, Host, HostError,
    HostResult, Level, SharedData, SharedScope, StreamHost,
};

/// Shared data as Envoy keeps it: a value and a version per key.
#[derive(Default)]
pub struct FakeShared {
    map: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    version: Cell<u32>,
}

impl FakeShared {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.map.borrow().get(key).map(|(v, _)| v.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        self.map.borrow().keys().cloned().collect()
    }
}

/// A callout a role sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: CalloutId,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Sent {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `:method :path`.
    pub fn line(&self) -> String {
        format!(
            "{} {}",
            self.header(":method").unwrap_or_default(),
            self.header(":path").unwrap_or_default()
        )
    }
}

/// What one worker sees beyond a stream.
pub struct FakeEnv {
    pub shared: Rc<FakeShared>,
    clock_ms: Rc<Cell<i64>>,
    pub logs: RefCell<Vec<(Level, String)>>,
    counters: RefCell<Vec<(String, i64)>>,
    pub sent: RefCell<Vec<Sent>>,
    next_callout: Cell<u64>,
    failing: RefCell<HashSet<String>>,
    scope: Cell<SharedScope>,
}

/// 2026-06-15T00:00:00Z, in unix ms: the fake clock's start.
pub const START_MS: i64 = 1_781_481_600_000;

impl FakeEnv {
    pub fn new() -> Rc<FakeEnv> {
        Rc::new(FakeEnv {
            shared: Rc::new(FakeShared::default()),
            clock_ms: Rc::new(Cell::new(START_MS)),
            logs: RefCell::new(Vec::new()),
            counters: RefCell::new(Vec::new()),
            sent: RefCell::new(Vec::new()),
            next_callout: Cell::new(1),
            failing: RefCell::new(HashSet::new()),
            scope: Cell::new(SharedScope::Proxy),
        })
    }

    /// Another worker of the same Envoy: same shared data and clock, its own counters,
    /// logs and callouts.
    pub fn sibling(self: &Rc<Self>) -> Rc<FakeEnv> {
        Rc::new(FakeEnv {
            shared: Rc::clone(&self.shared),
            clock_ms: Rc::clone(&self.clock_ms),
            logs: RefCell::new(Vec::new()),
            counters: RefCell::new(Vec::new()),
            sent: RefCell::new(Vec::new()),
            next_callout: Cell::new(1_000_001),
            failing: RefCell::new(HashSet::new()),
            scope: Cell::new(self.scope.get()),
        })
    }

    /// Makes the shared data this filter's alone (as the native shell's) or the proxy's
    /// (the default, as proxy-wasm's).
    pub fn set_shared_scope(&self, scope: SharedScope) {
        self.scope.set(scope);
    }

    pub fn now_ms(&self) -> i64 {
        self.clock_ms.get()
    }

    pub fn advance_ms(&self, ms: i64) {
        self.clock_ms.set(self.clock_ms.get() + ms);
    }

    /// Makes hostcall `op` fail (`"shared_set"`, `"callout"`, `"replace_header"`,
    /// `"remove_header"`, `"headers"`, `"body"`, `"replace_body"`, `"send_local_response"`,
    /// `"resume"`, `"now"`, `"fill_random"`, `"shared_get"`, `"add_header"`, `"header"`).
    pub fn fail(&self, op: &str) {
        self.failing.borrow_mut().insert(op.to_string());
    }

    pub fn heal(&self, op: &str) {
        self.failing.borrow_mut().remove(op);
    }

    fn check(&self, op: &str) -> HostResult<()> {
        if self.failing.borrow().contains(op) {
            Err(HostError::INTERNAL)
        } else {
            Ok(())
        }
    }

    /// A counter's value by name (`veil.seal.requests`); 0 if never incremented.
    pub fn counter(&self, name: &str) -> i64 {
        self.counters
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Callouts sent so far, and forgets them.
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.borrow_mut())
    }

    /// Every log line so far, joined.
    pub fn log_text(&self) -> String {
        self.logs
            .borrow()
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl SharedData for FakeEnv {
    fn shared_scope(&self) -> SharedScope {
        self.scope.get()
    }

    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        self.check("shared_get")?;
        Ok(self.shared.map.borrow().get(key).cloned())
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.check("shared_set")?;
        let mut map = self.shared.map.borrow_mut();
        if let Some(want) = cas {
            // Envoy: a CAS of 0 is "whatever is there"; a mismatch with a present key fails.
            let have = map.get(key).map(|(_, v)| *v);
            if want != 0 && have.is_some_and(|v| v != want) {
                return Err(HostError::CAS_MISMATCH);
            }
        }
        let v = self.shared.version.get() + 1;
        self.shared.version.set(v);
        map.insert(key.to_string(), (value.to_vec(), v));
        Ok(())
    }
}

impl Host for FakeEnv {
    fn now(&self) -> HostResult<SystemTime> {
        self.check("now")?;
        let ms = u64::try_from(self.clock_ms.get()).map_err(|_| HostError::INTERNAL)?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }

    fn fill_random(&self, out: &mut [u8]) -> HostResult<()> {
        self.check("fill_random")?;
        veil_core::crypto::nonce::fill(out).map_err(|_| HostError::INTERNAL)
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn define_counter(&self, name: &str) -> HostResult<u32> {
        let mut c = self.counters.borrow_mut();
        c.push((name.to_string(), 0));
        u32::try_from(c.len()).map_err(|_| HostError::INTERNAL)
    }

    fn increment_counter(&self, id: u32, by: i64) {
        let i = usize::try_from(id).unwrap_or(0).wrapping_sub(1);
        if let Some((_, v)) = self.counters.borrow_mut().get_mut(i) {
            *v += by;
        }
    }

    fn callout(&self, request: &CalloutRequest<'_>) -> HostResult<CalloutId> {
        self.check("callout")?;
        let id = CalloutId(self.next_callout.get());
        self.next_callout.set(id.0 + 1);
        self.sent.borrow_mut().push(Sent {
            id,
            cluster: request.cluster.to_string(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: request.body.map(<[u8]>::to_vec),
            timeout: request.timeout,
        });
        Ok(id)
    }
}

/// A local reply a role sent.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The problem+json `code` (the last segment of `type`), if it is one.
    pub fn code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let t = v.get("type")?.as_str()?;
        Some(t.rsplit([':', '/']).next()?.to_string())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// One stream on a [`FakeEnv`].
pub struct FakeHost {
    pub env: Rc<FakeEnv>,
    maps: RefCell<HashMap<&'static str, Vec<(String, String)>>>,
    pub request_body: RefCell<Vec<u8>>,
    pub response_body: RefCell<Vec<u8>>,
    pub reply: RefCell<Option<Reply>>,
    pub resumed: RefCell<Vec<Direction>>,
    holds_headers: Cell<bool>,
}

fn map_name(kind: HeaderKind) -> &'static str {
    match kind {
        HeaderKind::RequestHeaders => "request",
        HeaderKind::RequestTrailers => "request_trailers",
        HeaderKind::ResponseHeaders => "response",
        HeaderKind::ResponseTrailers => "response_trailers",
    }
}

impl FakeHost {
    pub fn new() -> FakeHost {
        FakeHost::on(&FakeEnv::new())
    }

    /// A new stream on `env`.
    pub fn on(env: &Rc<FakeEnv>) -> FakeHost {
        FakeHost {
            env: Rc::clone(env),
            maps: RefCell::new(HashMap::new()),
            request_body: RefCell::new(Vec::new()),
            response_body: RefCell::new(Vec::new()),
            reply: RefCell::new(None),
            resumed: RefCell::new(Vec::new()),
            holds_headers: Cell::new(false),
        }
    }

    /// Acts as the native shell does: a paused headers callback still gets the body
    /// callbacks (default: as proxy-wasm, it does not).
    pub fn hold_headers(&self) {
        self.holds_headers.set(true);
    }

    pub fn set_headers(&self, kind: HeaderKind, pairs: &[(&str, &str)]) {
        self.maps.borrow_mut().insert(
            map_name(kind),
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Every value of `name` in a map.
    pub fn values(&self, kind: HeaderKind, name: &str) -> Vec<String> {
        self.maps
            .borrow()
            .get(map_name(kind))
            .map(|m| {
                m.iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn get(&self, kind: HeaderKind, name: &str) -> Option<String> {
        self.values(kind, name).into_iter().next()
    }

    pub fn pairs(&self, kind: HeaderKind) -> Vec<(String, String)> {
        self.maps
            .borrow()
            .get(map_name(kind))
            .cloned()
            .unwrap_or_default()
    }

    pub fn reply(&self) -> Option<Reply> {
        self.reply.borrow().clone()
    }

    fn body_of(&self, kind: BodyKind) -> &RefCell<Vec<u8>> {
        match kind {
            BodyKind::Request => &self.request_body,
            BodyKind::Response => &self.response_body,
        }
    }
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost::new()
    }
}

impl SharedData for FakeHost {
    fn shared_scope(&self) -> SharedScope {
        self.env.shared_scope()
    }

    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        self.env.shared_get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.env.shared_set(key, value, cas)
    }
}

impl Host for FakeHost {
    fn now(&self) -> HostResult<SystemTime> {
        self.env.now()
    }

    fn fill_random(&self, out: &mut [u8]) -> HostResult<()> {
        self.env.fill_random(out)
    }

    fn log(&self, level: Level, message: &str) {
        self.env.log(level, message);
    }

    fn define_counter(&self, name: &str) -> HostResult<u32> {
        self.env.define_counter(name)
    }

    fn increment_counter(&self, id: u32, by: i64) {
        self.env.increment_counter(id, by);
    }

    fn callout(&self, request: &CalloutRequest<'_>) -> HostResult<CalloutId> {
        self.env.callout(request)
    }
}

impl StreamHost for FakeHost {
    fn headers(&self, kind: HeaderKind) -> HostResult<HeaderMap> {
        self.env.check("headers")?;
        let pairs = self.pairs(kind);
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        HeaderMap::parse(header_map::encode(&refs)).ok_or(HostError::BAD_ARGUMENT)
    }

    fn header(&self, kind: HeaderKind, name: &str) -> HostResult<Option<String>> {
        self.env.check("header")?;
        Ok(self.get(kind, name))
    }

    fn add_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()> {
        self.env.check("add_header")?;
        self.maps
            .borrow_mut()
            .entry(map_name(kind))
            .or_default()
            .push((name.to_string(), value.to_string()));
        Ok(())
    }

    fn replace_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()> {
        self.env.check("replace_header")?;
        let mut maps = self.maps.borrow_mut();
        let m = maps.entry(map_name(kind)).or_default();
        match m.iter().position(|(n, _)| n == name) {
            Some(i) => {
                m.retain(|(n, _)| n != name);
                m.insert(i.min(m.len()), (name.to_string(), value.to_string()));
            }
            None => m.push((name.to_string(), value.to_string())),
        }
        Ok(())
    }

    fn remove_header(&self, kind: HeaderKind, name: &str) -> HostResult<()> {
        self.env.check("remove_header")?;
        if let Some(m) = self.maps.borrow_mut().get_mut(map_name(kind)) {
            m.retain(|(n, _)| n != name);
        }
        Ok(())
    }

    fn body(&self, kind: BodyKind, max: usize) -> HostResult<Vec<u8>> {
        self.env.check("body")?;
        let b = self.body_of(kind).borrow();
        Ok(b.get(..max.min(b.len())).unwrap_or_default().to_vec())
    }

    fn replace_body(&self, kind: BodyKind, size: usize, value: &[u8]) -> HostResult<()> {
        self.env.check("replace_body")?;
        let mut b = self.body_of(kind).borrow_mut();
        if size < b.len() {
            // Envoy replaces the first `size` bytes; the roles always pass the whole body.
            return Err(HostError::BAD_ARGUMENT);
        }
        *b = value.to_vec();
        Ok(())
    }

    fn send_local_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        self.env.check("send_local_response")?;
        *self.reply.borrow_mut() = Some(Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn resume(&self, direction: Direction) -> HostResult<()> {
        self.env.check("resume")?;
        self.resumed.borrow_mut().push(direction);
        Ok(())
    }

    fn holds_headers(&self) -> bool {
        self.holds_headers.get()
    }
}

/// A keyservice answer for a callout.
pub fn answer(status: u16, body: &[u8]) -> CalloutAnswer {
    CalloutAnswer {
        status: Some(status),
        body: zeroize::Zeroizing::new(body.to_vec()),
    }
}

/// A failed callout (reset or timeout: no status).
pub fn no_answer() -> CalloutAnswer {
    CalloutAnswer {
        status: None,
        body: zeroize::Zeroizing::new(Vec::new()),
    }
}
