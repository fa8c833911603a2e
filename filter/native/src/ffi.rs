//! The only module with `unsafe`: Envoy's dynamic-module ABI v0.2.0 (Envoy 1.40), written from
//! `../shared/envoy-dynamic-modules.md` (no SDK), and a small safe API over it.
//!
//! - [`Buf`] / [`Hdr`]: the ABI's two by-value structs, `#[repr(C)]`.
//! - `extern "C"`: only the callbacks this crate calls (Envoy exports them; the `.so` leaves
//!   them undefined and the loader binds them to the `envoy` executable).
//! - `#[no_mangle]` hooks: `program_init` and the HTTP-filter hooks. Each body runs inside
//!   [`guard`] (`catch_unwind`): no panic crosses into Envoy; a failed request-path hook
//!   answers 500 problem+json and the stream stays stopped (fail closed).
//! - Safe handles: [`Http`] (one stream, valid during a hook), [`ConfigHost`] (the filter
//!   config, main thread), [`Scheduler`] (hop back onto a stream's worker or the main thread
//!   from any thread), [`log`].
//!
//! Every pointer and length that comes from Envoy is checked before a slice is made of it
//! ([`view`]); arrays handed to Envoy are sized by the matching `*_size` call.
#![allow(unsafe_code)]
// The safe API covers the ABI subset of the reference (gauges, worker index, ...); the shell
// uses most of it, not all.
#![allow(dead_code)]

use std::cell::{Cell, OnceCell};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};

use veil_core::header_map::HeaderMap;

use crate::shell::{Exchange, Module};

// ---------------------------------------------------------------------------------------------
// ABI types (§1 of the reference)
// ---------------------------------------------------------------------------------------------

/// `envoy_dynamic_module_type_{envoy,module}_buffer`: bytes passed by value. `{NULL, 0}` is
/// empty or absent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buf {
    ptr: *const c_char,
    len: usize,
}

impl Buf {
    const EMPTY: Buf = Buf {
        ptr: ptr::null(),
        len: 0,
    };

    /// A present value, even when empty (non-NULL pointer, length 0): for header values,
    /// where `{NULL, 0}` means "remove".
    fn present(bytes: &[u8]) -> Buf {
        Buf {
            ptr: bytes.as_ptr().cast(),
            len: bytes.len(),
        }
    }

    /// A view of module-owned bytes; Envoy copies them during the call it is passed to.
    fn of(bytes: &[u8]) -> Buf {
        if bytes.is_empty() {
            return Buf::EMPTY;
        }
        Buf {
            ptr: bytes.as_ptr().cast(),
            len: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_{module,envoy}_http_header` (32 bytes on 64-bit targets).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hdr {
    key_ptr: *const c_char,
    key_len: usize,
    value_ptr: *const c_char,
    value_len: usize,
}

impl Hdr {
    const EMPTY: Hdr = Hdr {
        key_ptr: ptr::null(),
        key_len: 0,
        value_ptr: ptr::null(),
        value_len: 0,
    };

    fn of(key: &[u8], value: &[u8]) -> Hdr {
        let (k, v) = (Buf::of(key), Buf::of(value));
        Hdr {
            key_ptr: k.ptr,
            key_len: k.len,
            value_ptr: v.ptr,
            value_len: v.len,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Buf>() == 2 * std::mem::size_of::<usize>());
const _: () = assert!(std::mem::size_of::<Hdr>() == 4 * std::mem::size_of::<usize>());

/// A view of Envoy-owned (or module-owned) bytes, checked: `NULL` with a length, or a length
/// no slice may have, is refused (`None`) rather than trusted.
///
/// # Safety
/// If `ptr` is not null it must point to `len` readable bytes that stay valid and unchanged
/// for `'a` (Envoy guarantees this until the current hook returns or the module mutates the
/// same header map or body; callers copy the bytes before either happens).
unsafe fn view<'a>(ptr: *const c_char, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: non-null, length within isize::MAX, readable for `len` bytes during 'a by the
    // caller's contract above.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// A pointer Envoy hands out that is used from other threads only in the ways the ABI allows
/// (see each use).
#[derive(Clone, Copy)]
struct RawPtr(*mut c_void);

// SAFETY: RawPtr is only an address. It is dereferenced (passed to Envoy) only where the ABI
// permits on the current thread: `c_e` on the main thread (config callouts, config scheduler
// creation) and scheduler handles through `*_scheduler_commit`, which is thread-safe (§7.6).
unsafe impl Send for RawPtr {}
// SAFETY: as above; shared references never dereference it outside those calls.
unsafe impl Sync for RawPtr {}

// ---------------------------------------------------------------------------------------------
// Callbacks Envoy exports (§7): only the ones used.
// ---------------------------------------------------------------------------------------------

type EnvoyPtr = *mut c_void;

#[allow(improper_ctypes)]
extern "C" {
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
    fn envoy_dynamic_module_callback_log(level: u32, message: Buf);

    fn envoy_dynamic_module_callback_http_get_headers_size(fe: EnvoyPtr, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        fe: EnvoyPtr,
        kind: u32,
        out: *mut Hdr,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_header(
        fe: EnvoyPtr,
        kind: u32,
        key: Buf,
        out: *mut Buf,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        fe: EnvoyPtr,
        kind: u32,
        key: Buf,
        value: Buf,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        fe: EnvoyPtr,
        kind: u32,
        key: Buf,
        value: Buf,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_clear_route_cache(fe: EnvoyPtr);

    fn envoy_dynamic_module_callback_http_get_body_size(fe: EnvoyPtr, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(fe: EnvoyPtr, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        fe: EnvoyPtr,
        kind: u32,
        out: *mut Buf,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(fe: EnvoyPtr, kind: u32, n: usize) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(fe: EnvoyPtr, kind: u32, data: Buf) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(fe: EnvoyPtr) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(fe: EnvoyPtr) -> bool;
    fn envoy_dynamic_module_callback_http_set_buffer_limit(fe: EnvoyPtr, limit: u64);
    fn envoy_dynamic_module_callback_http_get_buffer_limit(fe: EnvoyPtr) -> u64;

    fn envoy_dynamic_module_callback_http_send_response(
        fe: EnvoyPtr,
        status: u32,
        headers: *const Hdr,
        n: usize,
        body: Buf,
        details: Buf,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(fe: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_continue_encoding(fe: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_get_worker_index(fe: EnvoyPtr) -> u32;

    fn envoy_dynamic_module_callback_http_filter_http_callout(
        fe: EnvoyPtr,
        id_out: *mut u64,
        cluster: Buf,
        headers: *const Hdr,
        n: usize,
        body: Buf,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        ce: EnvoyPtr,
        id_out: *mut u64,
        cluster: Buf,
        headers: *const Hdr,
        n: usize,
        body: Buf,
        timeout_ms: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_scheduler_new(fe: EnvoyPtr) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(sched: *mut c_void, id: u64);
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(sched: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(ce: EnvoyPtr) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        sched: *mut c_void,
        id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(sched: *mut c_void);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        ce: EnvoyPtr,
        name: Buf,
        label_names: *const Buf,
        n_labels: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        ce: EnvoyPtr,
        name: Buf,
        label_names: *const Buf,
        n_labels: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        fe: EnvoyPtr,
        id: usize,
        labels: *const Buf,
        n: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        ce: EnvoyPtr,
        id: usize,
        labels: *const Buf,
        n: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        ce: EnvoyPtr,
        id: usize,
        labels: *const Buf,
        n: usize,
        value: u64,
    ) -> u32;
}

// ---------------------------------------------------------------------------------------------
// Safe enums (§6–§8)
// ---------------------------------------------------------------------------------------------

/// A header map (`header type`, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
}

/// A direction of the stream, for bodies (`body type`, §7.2) and resuming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Request,
    Response,
}

impl Dir {
    /// (received, buffered) body types.
    fn body_types(self) -> (u32, u32) {
        match self {
            Dir::Request => (0, 1),
            Dir::Response => (2, 3),
        }
    }
}

/// What a headers hook answers (§6: 0 Continue, 1 StopIteration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersStatus {
    Continue = 0,
    /// Hold the headers; a later body hook or `resume` releases them.
    Stop = 1,
}

/// What a body hook answers (§6: 0 Continue, 1 StopIterationAndBuffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyStatus {
    Continue = 0,
    StopAndBuffer = 1,
}

/// What a trailers hook answers (§6: 0 Continue, 1 StopIteration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailersStatus {
    Continue = 0,
    Stop = 1,
}

/// Log levels (§7.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// Why a callout could not start (the ABI's init result, §8). No hook follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutStartError {
    MissingRequiredHeaders,
    ClusterNotFound,
    DuplicateCalloutId,
    CannotCreateRequest,
    Unknown(u32),
}

impl std::fmt::Display for CalloutStartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalloutStartError::MissingRequiredHeaders => f.write_str("missing required headers"),
            CalloutStartError::ClusterNotFound => f.write_str("cluster not found"),
            CalloutStartError::DuplicateCalloutId => f.write_str("duplicate callout id"),
            CalloutStartError::CannotCreateRequest => f.write_str("cannot create request"),
            CalloutStartError::Unknown(n) => write!(f, "init result {n}"),
        }
    }
}

fn callout_start(result: u32, id: u64) -> Result<u64, CalloutStartError> {
    match result {
        0 => Ok(id),
        1 => Err(CalloutStartError::MissingRequiredHeaders),
        2 => Err(CalloutStartError::ClusterNotFound),
        3 => Err(CalloutStartError::DuplicateCalloutId),
        4 => Err(CalloutStartError::CannotCreateRequest),
        n => Err(CalloutStartError::Unknown(n)),
    }
}

/// A finished callout (copied out of Envoy's arrays, which live only during the hook).
#[derive(Debug)]
pub enum CalloutAnswer {
    /// An answer (connection refused and timeouts too: Envoy makes 503 / 504).
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// Reset, or the answer exceeded the buffer limit, or an unknown result code.
    Failed(u32),
}

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

/// Whether Envoy's `dynamic_modules` logger writes `level`.
pub fn log_enabled(level: Level) -> bool {
    // SAFETY: a plain value argument; callable from any thread.
    unsafe { envoy_dynamic_module_callback_log_enabled(level as u32) }
}

/// Logs to Envoy's `dynamic_modules` logger; the message is built only if the level is on.
/// Never pass secrets, keys or plaintext (the hygiene tests read every log line).
pub fn log(level: Level, message: impl FnOnce() -> String) {
    // SAFETY: plain value arguments; Envoy exports log_enabled for any thread.
    if !unsafe { envoy_dynamic_module_callback_log_enabled(level as u32) } {
        return;
    }
    let msg = message();
    // SAFETY: `msg` outlives the call; Envoy copies the bytes.
    unsafe { envoy_dynamic_module_callback_log(level as u32, Buf::of(msg.as_bytes())) }
}

// ---------------------------------------------------------------------------------------------
// Schedulers (§7.6)
// ---------------------------------------------------------------------------------------------

/// Which delete callback a scheduler handle needs.
#[derive(Clone, Copy)]
enum SchedKind {
    Stream,
    Config,
}

/// A scheduler handle that any thread may commit to until its owner closes it. Closing (on
/// the owning thread: the stream's worker in `http_filter_destroy`, main in
/// `config_destroy`) takes the handle under the lock, so no commit can race the delete.
pub struct Scheduler {
    handle: Mutex<Option<RawPtr>>,
    kind: SchedKind,
}

impl Scheduler {
    fn new(raw: *mut c_void, kind: SchedKind) -> Option<Arc<Scheduler>> {
        (!raw.is_null()).then(|| {
            Arc::new(Scheduler {
                handle: Mutex::new(Some(RawPtr(raw))),
                kind,
            })
        })
    }

    /// Asks Envoy to call the owner's `scheduled` hook with `event` on its thread. False once
    /// the owner is gone.
    pub fn commit(&self, event: u64) -> bool {
        let Ok(guard) = self.handle.lock() else {
            return false;
        };
        let Some(RawPtr(raw)) = *guard else {
            return false;
        };
        match self.kind {
            // SAFETY: `raw` came from *_scheduler_new and is not deleted while we hold the lock
            // (close takes it under the same lock); commit is thread-safe (§7.6).
            SchedKind::Stream => unsafe {
                envoy_dynamic_module_callback_http_filter_scheduler_commit(raw, event)
            },
            // SAFETY: as above, for the config scheduler.
            SchedKind::Config => unsafe {
                envoy_dynamic_module_callback_http_filter_config_scheduler_commit(raw, event)
            },
        }
        true
    }

    /// Deletes the handle (owner's thread only, called from the destroy hooks).
    fn close(&self) {
        let taken = match self.handle.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(RawPtr(raw)) = taken {
            match self.kind {
                // SAFETY: taken out under the lock, so no commit uses it any more; deleted once.
                SchedKind::Stream => unsafe {
                    envoy_dynamic_module_callback_http_filter_scheduler_delete(raw)
                },
                // SAFETY: as above.
                SchedKind::Config => unsafe {
                    envoy_dynamic_module_callback_http_filter_config_scheduler_delete(raw)
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The per-stream handle
// ---------------------------------------------------------------------------------------------

/// One stream's Envoy side, valid for the duration of the hook it was made for (not `Send`).
pub struct Http<'a> {
    fe: NonNull<c_void>,
    sched: &'a OnceCell<Arc<Scheduler>>,
    /// Directions to resume once the current hook returned (request, response): resuming
    /// from inside a hook is deferred, as proxy-wasm does it.
    resume_after: Cell<[bool; 2]>,
    /// A request header changed during this hook: the route cache is cleared once when the
    /// hook returns (not once per header: the relay sets and removes about ten).
    route_stale: Cell<bool>,
}

impl Http<'_> {
    fn fe(&self) -> EnvoyPtr {
        self.fe.as_ptr()
    }

    /// Every entry of a header map, copied once into a [`HeaderMap`] (names as Envoy has
    /// them, lowercase; values as bytes, as proxy-wasm hands them out). Empty if the map
    /// does not exist; an entry Envoy hands out an invalid view for is left out.
    pub fn headers(&self, map: Map) -> HeaderMap {
        // SAFETY: fe is live during the hook; plain value arguments.
        let n =
            unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.fe(), map as u32) };
        if n == 0 {
            return HeaderMap::default();
        }
        let mut out = vec![Hdr::EMPTY; n];
        // SAFETY: `out` holds exactly `n` entries, the size Envoy just reported for this map.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.fe(), map as u32, out.as_mut_ptr())
        };
        if !ok {
            return HeaderMap::default();
        }
        let views: Vec<(&[u8], &[u8])> = out
            .iter()
            .filter_map(|h| {
                // SAFETY: views into Envoy's map, valid until this hook returns or the map is
                // mutated; they do not leave this function, which copies them right below
                // (nothing calls into Envoy in between).
                let k = unsafe { view(h.key_ptr, h.key_len) }?;
                // SAFETY: as above.
                let v = unsafe { view(h.value_ptr, h.value_len) }?;
                Some((k, v))
            })
            .collect();
        HeaderMap::from_entries(&views)
    }

    /// The first value of `key` (lowercase), copied.
    pub fn header(&self, map: Map, key: &str) -> Option<Vec<u8>> {
        let mut out = Buf::EMPTY;
        let mut count = 0usize;
        // SAFETY: key outlives the call; out and count are valid for one write each.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.fe(),
                map as u32,
                Buf::of(key.as_bytes()),
                &mut out,
                0,
                &mut count,
            )
        };
        if !ok || count == 0 {
            return None;
        }
        // SAFETY: a view into Envoy's map, copied before anything mutates it.
        unsafe { view(out.ptr, out.len) }.map(<[u8]>::to_vec)
    }

    /// Replaces every value of `key`; `None` removes it (§7.1: an empty value removes).
    pub fn set_header(&self, map: Map, key: &str, value: Option<&[u8]>) -> bool {
        let v = value.map_or(Buf::EMPTY, Buf::present);
        // SAFETY: both buffers outlive the call; Envoy copies them.
        let done = unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.fe(),
                map as u32,
                Buf::of(key.as_bytes()),
                v,
            )
        };
        self.headers_changed(map);
        done
    }

    /// Appends another value of `key`.
    pub fn add_header(&self, map: Map, key: &str, value: &[u8]) -> bool {
        // SAFETY: both buffers outlive the call; Envoy copies them.
        let done = unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.fe(),
                map as u32,
                Buf::of(key.as_bytes()),
                Buf::present(value),
            )
        };
        self.headers_changed(map);
        done
    }

    /// A changed request header (`:path` rewritten by the relay, ...) may change the route:
    /// Envoy picks it again, as it does after a proxy-wasm filter changes request headers.
    /// The cache is cleared when the hook returns ([`Http::finish_hook`]), before Envoy or a
    /// resume can read the route.
    fn headers_changed(&self, map: Map) {
        if map == Map::RequestHeaders {
            self.route_stale.set(true);
        }
    }

    /// Ends a hook: clears the route cache if request headers changed, then applies the
    /// resumes asked for.
    fn finish_hook(&self) {
        if self.route_stale.replace(false) {
            // SAFETY: fe live; a no-op outside the request path.
            unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.fe()) }
        }
        self.apply_resumes();
    }

    fn read_body(&self, kind: u32, out: &mut Vec<u8>) -> bool {
        // SAFETY: plain value arguments.
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.fe(), kind) };
        if n == 0 {
            return true;
        }
        let mut chunks = vec![Buf::EMPTY; n];
        // SAFETY: `chunks` holds exactly `n` slots, the count Envoy just reported.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_body_chunks(self.fe(), kind, chunks.as_mut_ptr())
        };
        if !ok {
            return true; // that body does not exist
        }
        for c in &chunks {
            // SAFETY: views into Envoy's buffer, valid during the hook; copied right here.
            match unsafe { view(c.ptr, c.len) } {
                Some(bytes) => out.extend_from_slice(bytes),
                None => return false,
            }
        }
        true
    }

    /// Does that body exist (§6: a buffered body exists once a buffering status was returned)?
    fn body_exists(&self, kind: u32) -> bool {
        // SAFETY: plain value arguments.
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.fe(), kind) };
        if n > 0 {
            return true;
        }
        let mut none: [Buf; 0] = [];
        // SAFETY: the body has no chunk (n == 0), so Envoy writes no slot through the pointer
        // (dangling but aligned, as for any empty array); the call only reports existence.
        unsafe {
            envoy_dynamic_module_callback_http_get_body_chunks(self.fe(), kind, none.as_mut_ptr())
        }
    }

    /// The whole body of `dir` seen so far (§6 "two bodies"): buffered (if it exists) plus the
    /// chunk received in this hook, or buffered only when the received chunk *is* the buffer.
    /// `None` if Envoy handed out an invalid view.
    pub fn body(&self, dir: Dir) -> Option<Vec<u8>> {
        let (received, buffered) = dir.body_types();
        let mut out = Vec::new();
        let ok = if self.received_is_buffered(dir) {
            self.read_body(buffered, &mut out)
        } else {
            self.read_body(buffered, &mut out) && self.read_body(received, &mut out)
        };
        ok.then_some(out)
    }

    fn received_is_buffered(&self, dir: Dir) -> bool {
        // SAFETY: plain value argument; fe is live.
        unsafe {
            match dir {
                Dir::Request => {
                    envoy_dynamic_module_callback_http_received_buffered_request_body(self.fe())
                }
                Dir::Response => {
                    envoy_dynamic_module_callback_http_received_buffered_response_body(self.fe())
                }
            }
        }
    }

    /// Replaces the body of `dir` (§6 "replacing"): drains received and buffered, then appends
    /// to buffered if it exists, else to received. Set `content-length` while the headers are
    /// still held; never change the length after they left.
    pub fn replace_body(&self, dir: Dir, bytes: &[u8]) -> bool {
        let (received, buffered) = dir.body_types();
        let buffered_exists = self.body_exists(buffered);
        // SAFETY: plain value arguments; drain past the end drains everything.
        unsafe {
            let r = envoy_dynamic_module_callback_http_get_body_size(self.fe(), received);
            if r > 0 {
                envoy_dynamic_module_callback_http_drain_body(self.fe(), received, r);
            }
            let b = envoy_dynamic_module_callback_http_get_body_size(self.fe(), buffered);
            if b > 0 {
                envoy_dynamic_module_callback_http_drain_body(self.fe(), buffered, b);
            }
        }
        if bytes.is_empty() {
            return true;
        }
        let target = if buffered_exists { buffered } else { received };
        // SAFETY: bytes outlive the call; Envoy copies them.
        unsafe { envoy_dynamic_module_callback_http_append_body(self.fe(), target, Buf::of(bytes)) }
    }

    /// The size of the whole body of `dir` seen so far (as [`Http::body`] would read it).
    pub fn body_size(&self, dir: Dir) -> usize {
        let (received, buffered) = dir.body_types();
        // SAFETY: plain value arguments.
        unsafe {
            let b = envoy_dynamic_module_callback_http_get_body_size(self.fe(), buffered);
            if self.received_is_buffered(dir) {
                b
            } else {
                b.saturating_add(envoy_dynamic_module_callback_http_get_body_size(
                    self.fe(),
                    received,
                ))
            }
        }
    }

    /// The per-stream buffer limit (0: none).
    pub fn buffer_limit(&self) -> u64 {
        // SAFETY: plain value argument.
        unsafe { envoy_dynamic_module_callback_http_get_buffer_limit(self.fe()) }
    }

    /// Raises the per-stream buffer limit (default 1 MiB), so the filter's own limits answer.
    pub fn set_buffer_limit(&self, limit: u64) {
        // SAFETY: plain value arguments.
        unsafe { envoy_dynamic_module_callback_http_set_buffer_limit(self.fe(), limit) }
    }

    /// A local reply; the hook then returns a Stop status.
    pub fn send_response(
        &self,
        status: u16,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) {
        let hs: Vec<Hdr> = headers
            .iter()
            .map(|(k, v)| Hdr::of(k.as_bytes(), v))
            .collect();
        // SAFETY: `hs` (and the bytes it points into) and `body` outlive the call; the count is
        // hs.len(); Envoy copies everything.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.fe(),
                u32::from(status),
                hs.as_ptr(),
                hs.len(),
                Buf::of(body),
                Buf::of(details.as_bytes()),
            )
        }
    }

    /// Resumes a direction stopped by an earlier hook, once the current hook has returned.
    pub fn resume(&self, dir: Dir) {
        let mut r = self.resume_after.get();
        match dir {
            Dir::Request => r[0] = true,
            Dir::Response => r[1] = true,
        }
        self.resume_after.set(r);
    }

    /// Applies the resumes asked for during the hook (called by the hook wrapper).
    fn apply_resumes(&self) {
        let [req, resp] = self.resume_after.replace([false, false]);
        if req {
            self.resume_now(Dir::Request);
        }
        if resp {
            self.resume_now(Dir::Response);
        }
    }

    fn resume_now(&self, dir: Dir) {
        // SAFETY: fe is live; we are on the stream's worker (every Http is made in a hook).
        unsafe {
            match dir {
                Dir::Request => {
                    envoy_dynamic_module_callback_http_filter_continue_decoding(self.fe())
                }
                Dir::Response => {
                    envoy_dynamic_module_callback_http_filter_continue_encoding(self.fe())
                }
            }
        }
    }

    /// 0..concurrency−1.
    pub fn worker_index(&self) -> u32 {
        // SAFETY: plain value argument.
        unsafe { envoy_dynamic_module_callback_http_filter_get_worker_index(self.fe()) }
    }

    /// A one-shot HTTP callout; its answer arrives in this stream's `on_callout` with the id.
    /// Ids count from 1 per stream (§7.5).
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutStartError> {
        let hs: Vec<Hdr> = headers
            .iter()
            .map(|(k, v)| Hdr::of(k.as_bytes(), v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: every buffer outlives the call; `id` is valid for one write; count = hs.len().
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.fe(),
                &mut id,
                Buf::of(cluster.as_bytes()),
                hs.as_ptr(),
                hs.len(),
                Buf::of(body),
                timeout_ms,
            )
        };
        callout_start(r, id)
    }

    /// This stream's scheduler (made on first use, deleted when the stream is destroyed).
    pub fn scheduler(&self) -> Option<Arc<Scheduler>> {
        if let Some(s) = self.sched.get() {
            return Some(Arc::clone(s));
        }
        // SAFETY: on the stream's worker, fe live.
        let raw = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.fe()) };
        let s = Scheduler::new(raw, SchedKind::Stream)?;
        let _ = self.sched.set(Arc::clone(&s));
        Some(s)
    }

    /// Adds `n` to a counter defined in config_new.
    pub fn count(&self, id: usize, n: u64) {
        if id == 0 {
            return;
        }
        // SAFETY: no labels (NULL, 0); plain value arguments.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.fe(),
                id,
                ptr::null(),
                0,
                n,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The filter config's Envoy side
// ---------------------------------------------------------------------------------------------

/// The config object's Envoy pointer. Config callouts and metric definitions only on the main
/// thread; counters from any thread.
pub struct ConfigHost {
    ce: RawPtr,
    sched: OnceLock<Arc<Scheduler>>,
}

impl ConfigHost {
    fn define(&self, name: &str, gauge: bool) -> usize {
        let mut id = 0usize;
        // SAFETY: main thread inside config_new (the only place definitions are allowed); the
        // name outlives the call; no labels; `id` valid for one write.
        let r = unsafe {
            if gauge {
                envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    self.ce.0,
                    Buf::of(name.as_bytes()),
                    ptr::null(),
                    0,
                    &mut id,
                )
            } else {
                envoy_dynamic_module_callback_http_filter_config_define_counter(
                    self.ce.0,
                    Buf::of(name.as_bytes()),
                    ptr::null(),
                    0,
                    &mut id,
                )
            }
        };
        // Ids start at 1 (§7.7): 0 means "not defined" and is skipped when counting.
        if r == 0 {
            id
        } else {
            0
        }
    }

    /// Defines a counter (only during config_new); 0 if Envoy refused.
    pub fn define_counter(&self, name: &str) -> usize {
        self.define(name, false)
    }

    /// Defines a gauge (only during config_new); 0 if Envoy refused.
    pub fn define_gauge(&self, name: &str) -> usize {
        self.define(name, true)
    }

    /// Adds to a counter from the main thread (no stream needed).
    pub fn count(&self, id: usize, n: u64) {
        if id == 0 {
            return;
        }
        // SAFETY: no labels; plain value arguments; ce lives as long as the config.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.ce.0,
                id,
                ptr::null(),
                0,
                n,
            );
        }
    }

    pub fn set_gauge(&self, id: usize, v: u64) {
        if id == 0 {
            return;
        }
        // SAFETY: as `count`.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.ce.0,
                id,
                ptr::null(),
                0,
                v,
            );
        }
    }

    /// A config-level callout: main thread only (call it from `Module::on_scheduled` or
    /// `Module::on_callout`); its answer arrives in `Module::on_callout`.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutStartError> {
        let hs: Vec<Hdr> = headers
            .iter()
            .map(|(k, v)| Hdr::of(k.as_bytes(), v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: main thread (documented contract of this method, upheld by its callers); all
        // buffers outlive the call; `id` valid for one write; count = hs.len().
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.ce.0,
                &mut id,
                Buf::of(cluster.as_bytes()),
                hs.as_ptr(),
                hs.len(),
                Buf::of(body),
                timeout_ms,
            )
        };
        callout_start(r, id)
    }

    /// The config's scheduler: events committed from any thread arrive in
    /// `Module::on_scheduled` on the main thread.
    pub fn scheduler(&self) -> Option<Arc<Scheduler>> {
        self.sched.get().map(Arc::clone)
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks (§5)
// ---------------------------------------------------------------------------------------------

/// Runs a hook body; a panic becomes `fallback` (plus whatever `on_panic` does).
fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(_) => fallback,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    // The ABI of Envoy 1.40.0 (pin the Envoy version: a signature mismatch is silent).
    static VERSION: &[u8] = b"v0.2.0\0";
    VERSION.as_ptr().cast()
}

/// The config object behind `c_m`.
struct ConfigBox {
    host: ConfigHost,
    module: Module,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    ce: *mut c_void,
    name: Buf,
    config: Buf,
) -> *const c_void {
    guard(ptr::null(), || {
        if ce.is_null() {
            return ptr::null();
        }
        // SAFETY: Envoy's bytes, valid during this hook; copied by Module::new.
        let (Some(name), Some(config)) = (unsafe { view(name.ptr, name.len) }, unsafe {
            view(config.ptr, config.len)
        }) else {
            return ptr::null();
        };
        let host = ConfigHost {
            ce: RawPtr(ce),
            sched: OnceLock::new(),
        };
        // SAFETY: main thread, ce live (we are in config_new).
        let raw = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(ce) };
        if let Some(s) = Scheduler::new(raw, SchedKind::Config) {
            let _ = host.sched.set(s);
        }
        match Module::new(&host, name, config) {
            Ok(module) => Box::into_raw(Box::new(ConfigBox { host, module })) as *const c_void,
            Err(e) => {
                log(Level::Error, || format!("veil: configuration refused: {e}"));
                if let Some(s) = host.sched.get() {
                    s.close();
                }
                ptr::null()
            }
        }
    })
}

/// # Safety (of the callers' contract)
/// `cm` is what config_new returned, not yet destroyed.
fn config_ref<'a>(cm: *const c_void) -> Option<&'a ConfigBox> {
    // SAFETY: Envoy passes back the pointer config_new returned (a live Box<ConfigBox>) until
    // config_destroy; it is shared read-only (ConfigBox is Sync).
    unsafe { cm.cast::<ConfigBox>().as_ref() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(cm: *const c_void) {
    guard((), || {
        if cm.is_null() {
            return;
        }
        // SAFETY: the pointer config_new made with Box::into_raw; Envoy destroys it once, on
        // the main thread, after every stream using it is gone.
        let cfg = unsafe { Box::from_raw(cm.cast_mut().cast::<ConfigBox>()) };
        cfg.module.shutdown();
        if let Some(s) = cfg.host.sched.get() {
            s.close();
        }
        drop(cfg);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _ce: *mut c_void,
    cm: *const c_void,
    event: u64,
) {
    guard((), || {
        if let Some(cfg) = config_ref(cm) {
            cfg.module.on_scheduled(&cfg.host, event);
        }
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _ce: *mut c_void,
    cm: *const c_void,
    id: u64,
    result: u32,
    headers: *const Hdr,
    n_headers: usize,
    chunks: *const Buf,
    n_chunks: usize,
) {
    guard((), || {
        if let Some(cfg) = config_ref(cm) {
            let answer = callout_answer(result, headers, n_headers, chunks, n_chunks);
            cfg.module.on_callout(&cfg.host, id, answer);
        }
    })
}

/// Copies a callout's answer out of Envoy's arrays (valid only during the hook).
fn callout_answer(
    result: u32,
    headers: *const Hdr,
    n_headers: usize,
    chunks: *const Buf,
    n_chunks: usize,
) -> CalloutAnswer {
    if result != 0 {
        return CalloutAnswer::Failed(result);
    }
    let mut hs = Vec::new();
    let mut status = 0u16;
    if !headers.is_null() && n_headers > 0 && n_headers <= isize::MAX as usize / 32 {
        // SAFETY: Envoy passes an array of n_headers entries valid during this hook.
        let arr = unsafe { std::slice::from_raw_parts(headers, n_headers) };
        for h in arr {
            // SAFETY: views valid during the hook; copied here.
            let (Some(k), Some(v)) = (unsafe { view(h.key_ptr, h.key_len) }, unsafe {
                view(h.value_ptr, h.value_len)
            }) else {
                return CalloutAnswer::Failed(u32::MAX);
            };
            if k == b":status" {
                status = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            hs.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
        }
    }
    let mut body = Vec::new();
    if !chunks.is_null() && n_chunks > 0 && n_chunks <= isize::MAX as usize / 16 {
        // SAFETY: Envoy passes an array of n_chunks buffers valid during this hook.
        let arr = unsafe { std::slice::from_raw_parts(chunks, n_chunks) };
        for c in arr {
            // SAFETY: views valid during the hook; copied here.
            match unsafe { view(c.ptr, c.len) } {
                Some(b) => body.extend_from_slice(b),
                None => return CalloutAnswer::Failed(u32::MAX),
            }
        }
    }
    CalloutAnswer::Response {
        status,
        headers: hs,
        body,
    }
}

/// The stream object behind `f_m`.
struct StreamBox {
    exchange: Exchange,
    sched: OnceCell<Arc<Scheduler>>,
    /// A hook panicked: the stream was answered 500 (or left stopped); nothing more runs.
    failed: bool,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    cm: *const c_void,
    _fe: *mut c_void,
) -> *const c_void {
    guard(ptr::null(), || {
        let Some(cfg) = config_ref(cm) else {
            return ptr::null();
        };
        let b = Box::new(StreamBox {
            exchange: cfg.module.new_exchange(),
            sched: OnceCell::new(),
            failed: false,
        });
        Box::into_raw(b) as *const c_void
    })
}

/// Runs a stream hook: checks both pointers, builds the [`Http`] handle, catches panics. A
/// panic marks the stream failed and answers 500 problem+json (Envoy resets the stream if the
/// response had already started): fail closed.
fn on_stream<T: Copy>(
    fe: *mut c_void,
    fm: *const c_void,
    stopped: T,
    body: impl FnOnce(&mut Exchange, &Http) -> T,
) -> T {
    let Some(fe) = NonNull::new(fe) else {
        return stopped;
    };
    // SAFETY: `fm` is what http_filter_new returned (a live Box<StreamBox>), used only on this
    // stream's worker and never concurrently (Envoy calls one hook at a time per stream).
    let Some(sb) = (unsafe { fm.cast_mut().cast::<StreamBox>().as_mut() }) else {
        return stopped;
    };
    if sb.failed {
        return stopped;
    }
    let http = Http {
        fe,
        sched: &sb.sched,
        resume_after: Cell::new([false, false]),
        route_stale: Cell::new(false),
    };
    let exchange = &mut sb.exchange;
    match catch_unwind(AssertUnwindSafe(|| body(exchange, &http))) {
        Ok(v) => {
            http.finish_hook();
            v
        }
        Err(_) => {
            sb.failed = true;
            let exchange = &mut sb.exchange;
            let _ = catch_unwind(AssertUnwindSafe(|| exchange.fail_closed(&http)));
            stopped
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    on_stream(fe, fm, HeadersStatus::Stop, |x, h| {
        x.on_request_headers(h, eos)
    }) as u32
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    on_stream(fe, fm, BodyStatus::StopAndBuffer, |x, h| {
        x.on_request_body(h, eos)
    }) as u32
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    fe: *mut c_void,
    fm: *const c_void,
) -> u32 {
    on_stream(fe, fm, TrailersStatus::Stop, |x, h| {
        x.on_request_trailers(h)
    }) as u32
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    on_stream(fe, fm, HeadersStatus::Stop, |x, h| {
        x.on_response_headers(h, eos)
    }) as u32
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    on_stream(fe, fm, BodyStatus::StopAndBuffer, |x, h| {
        x.on_response_body(h, eos)
    }) as u32
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    fe: *mut c_void,
    fm: *const c_void,
) -> u32 {
    on_stream(fe, fm, TrailersStatus::Stop, |x, h| {
        x.on_response_trailers(h)
    }) as u32
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    fe: *mut c_void,
    fm: *const c_void,
) {
    on_stream(fe, fm, (), |x, h| x.on_complete(h))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: *const c_void) {
    guard((), || {
        if fm.is_null() {
            return;
        }
        // SAFETY: the pointer http_filter_new made with Box::into_raw; destroyed once, on the
        // stream's worker.
        let sb = unsafe { Box::from_raw(fm.cast_mut().cast::<StreamBox>()) };
        // Close the scheduler first: a module thread holding it can no longer commit.
        if let Some(s) = sb.sched.get() {
            s.close();
        }
        drop(sb);
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    fe: *mut c_void,
    fm: *const c_void,
    id: u64,
    result: u32,
    headers: *const Hdr,
    n_headers: usize,
    chunks: *const Buf,
    n_chunks: usize,
) {
    let answer = guard(CalloutAnswer::Failed(u32::MAX), || {
        callout_answer(result, headers, n_headers, chunks, n_chunks)
    });
    on_stream(fe, fm, (), move |x, h| x.on_callout(h, id, answer))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    fe: *mut c_void,
    fm: *const c_void,
    event: u64,
) {
    on_stream(fe, fm, (), |x, h| x.on_scheduled(h, event))
}

/// `http_filter_local_reply`: 0 lets Envoy send the reply (ours or its own, e.g. 413).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _fe: *mut c_void,
    _fm: *const c_void,
    _status: u32,
    _details: Buf,
    _reset_imminent: bool,
) -> u32 {
    0
}

// Streaming callouts and watermarks: required by Envoy, unused by Veil (no-ops).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _headers: *const Hdr,
    _n: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _data: *const Buf,
    _n: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _trailers: *const Hdr,
    _n: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: *mut c_void,
    _fm: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: *mut c_void,
    _fm: *const c_void,
) {
}
