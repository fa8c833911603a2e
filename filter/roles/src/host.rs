//! The host seam: everything the roles need from Envoy, as two traits.
//!
//! - [`Host`] (with [`SharedData`]) is available in every callback, per-stream or not: the
//!   clock, randomness, logs, counters, data shared by all workers, and keyservice callouts
//!   dispatched from wherever the callback runs (a stream, or the shell's root/config
//!   context).
//! - [`StreamHost`] is one HTTP stream: its headers, buffered bodies, a local reply, and
//!   resuming it after a pause.
//!
//! The proxy-wasm shell implements both over the ABI's hostcalls (acting on the effective
//! context); a native dynamic module implements them over its `f_e`/`c_e` callbacks. Every
//! hostcall's failure is a value ([`HostError`]); nothing here may panic.
//!
//! What stays with the shell (the roles never do it): choosing which stream a call acts on
//! (proxy-wasm's `set_effective_context`, a native scheduler event), timers, and reading a
//! callout's answer into a [`CalloutAnswer`]. Worker-wide work (the tick, resuming parked
//! streams) is a plain method of the roles' VM state that returns the stream ids to resume.

use std::time::{Duration, SystemTime};

use veil_core::header_map::HeaderMap;
use zeroize::Zeroizing;

/// A failed hostcall: the host's status, as a value. Shells map their failures onto the
/// proxy-wasm status numbers below (a native `false` is [`HostError::INTERNAL`] unless a
/// more precise one applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    pub const NOT_FOUND: HostError = HostError(1);
    pub const BAD_ARGUMENT: HostError = HostError(2);
    /// A shared-data write whose CAS version no longer matches.
    pub const CAS_MISMATCH: HostError = HostError(8);
    pub const INTERNAL: HostError = HostError(10);
    pub const UNIMPLEMENTED: HostError = HostError(12);
}

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "host status {}", self.0)
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// Names one stream for the VM-wide state (waiters, callout owners). proxy-wasm: the context
/// id; native: any id unique among the worker's live streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// A callout's id as the host assigned it. Unique only per owner (a native stream counts
/// from 1), so the roles always key callouts by owner and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalloutId(pub u64);

/// Log levels (Envoy's, without critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Which header map of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

/// Which direction's buffered body. Always the whole body buffered so far (proxy-wasm:
/// `HttpRequestBody`/`HttpResponseBody`; native: buffered + received, see
/// docs envoy-dynamic-modules §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Request,
    Response,
}

/// A stream direction, for resuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// What a role answers for a callback. The shell maps it onto its host's statuses:
/// `Pause` is proxy-wasm `Action::Pause`; natively StopIteration for headers and trailers,
/// StopIterationAndBuffer for bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// An HTTP callout to a cluster Envoy knows (the keyservice's).
pub struct CalloutRequest<'a> {
    pub cluster: &'a str,
    /// Including `:method`, `:path` and `:authority`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
}

/// A callout's answer as the shell read it: `status` is None when the call failed (reset,
/// timeout without a status, a status that is not a number); `body` holds at most
/// [`MAX_CALLOUT_ANSWER`] bytes (the shell reads no more). Wiped on drop: it holds keys.
pub struct CalloutAnswer {
    pub status: Option<u16>,
    pub body: Zeroizing<Vec<u8>>,
}

/// Most bytes of a callout's answer a shell hands to the roles (a relay pairing of 16 keys
/// is ~30 KiB, a key answer well under 1 KiB per key).
pub const MAX_CALLOUT_ANSWER: usize = 256 * 1024;

/// Who besides this filter can read and write a host's shared data: it decides whether the
/// roles seal their records there ([`crate::records`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedScope {
    /// Every plugin of the proxy: proxy-wasm keeps one store per VM id, and Istio sets no
    /// VM id. Records are sealed.
    Proxy,
    /// This filter alone: the native shell's own process memory, which Envoy exposes to no
    /// other filter (code that could read it anyway, another dynamic module in the process,
    /// could read the token too). Records are stored as they are.
    Filter,
}

/// Data every worker sees, versioned for compare-and-swap (Envoy's shared data; natively a
/// process-wide map behind a lock).
pub trait SharedData {
    /// Who else can read and write this data. [`SharedScope::Proxy`] unless the shell knows
    /// better (fail closed: records are sealed).
    fn shared_scope(&self) -> SharedScope {
        SharedScope::Proxy
    }
    /// The value of `key` and its version, `None` if absent.
    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>>;
    /// Writes `key`. With `cas = Some(v)` the write fails with [`HostError::CAS_MISMATCH`]
    /// unless the stored version is still `v`; `None` writes unconditionally. Every write
    /// gives the key a new version.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()>;
}

/// What every callback may use.
pub trait Host: SharedData {
    /// The host's wall clock (the keyservice shares it). The roles add the configured
    /// `test_clock_offset_secs` themselves where they pick epochs.
    fn now(&self) -> HostResult<SystemTime>;
    /// Fills `out` from a CSPRNG (callout nonces).
    fn fill_random(&self, out: &mut [u8]) -> HostResult<()>;
    /// Whether a message at `level` would be written (skip formatting otherwise).
    fn log_enabled(&self, level: Level) -> bool {
        let _ = level;
        true
    }
    /// Logging never fails a request: a failed log call is dropped by the shell.
    fn log(&self, level: Level, message: &str);
    /// Defines a counter (at configuration time); its id for [`Host::increment_counter`].
    fn define_counter(&self, name: &str) -> HostResult<u32>;
    /// Adds `by` to a counter; a failure is dropped (a counter must not fail a request).
    fn increment_counter(&self, id: u32, by: i64);
    /// Dispatches a callout from the context this host acts for (a stream, or the shell's
    /// root/config context). Its answer comes back to that same context as
    /// (owner, [`CalloutId`]), which the shell hands to the roles with a [`CalloutAnswer`].
    fn callout(&self, request: &CalloutRequest<'_>) -> HostResult<CalloutId>;
}

/// One HTTP stream.
pub trait StreamHost: Host {
    /// A whole header map (empty if it does not exist yet).
    fn headers(&self, kind: HeaderKind) -> HostResult<HeaderMap>;
    /// One header's value (the first, if repeated); `None` if absent.
    fn header(&self, kind: HeaderKind, name: &str) -> HostResult<Option<String>>;
    /// Adds a value (keeps existing values of the same name).
    fn add_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()>;
    /// Sets `name` to `value`, replacing every value (adds it if absent).
    fn replace_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()>;
    /// Removes every value of `name` (absent is fine).
    fn remove_header(&self, kind: HeaderKind, name: &str) -> HostResult<()>;
    /// The first `max` bytes of the body buffered so far (empty if none).
    fn body(&self, kind: BodyKind, max: usize) -> HostResult<Vec<u8>>;
    /// Replaces the whole buffered body, which is `size` bytes long (as `body` read it),
    /// with `value`.
    fn replace_body(&self, kind: BodyKind, size: usize, value: &[u8]) -> HostResult<()>;
    /// Answers the stream locally; the role then returns [`Action::Pause`].
    fn send_local_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()>;
    /// Resumes a direction the role paused. Runs after the current callback returns.
    fn resume(&self, direction: Direction) -> HostResult<()>;
    /// Whether a headers callback that answers [`Action::Pause`] still gets the body
    /// callbacks (native StopIteration), so a role can hold the headers until the body is
    /// rewritten and then give it its real `content-length`. False for proxy-wasm: Envoy turns
    /// a paused headers callback into "stop all iteration", which starves the body callbacks.
    fn holds_headers(&self) -> bool {
        false
    }
}
