//! [`WasmHost`]: the host seam ([`veil_roles::host`]) over the proxy-wasm ABI. Every hostcall
//! returns its status as a value.
//!
//! The proxy-wasm SDK's `hostcalls` wrappers `panic!` on statuses they do not expect, and a
//! panic kills the VM. So these are the ABI imports themselves, with the raw `u32` status
//! mapped to a `Result` (no status value is assumed impossible). One exception, in
//! [`WasmHost::callout`]: an HTTP callout must go through the SDK's `dispatch_http_call`,
//! because the SDK's dispatcher routes the answer by the token that call registers.
//!
//! Every call acts on the *effective* context: the one whose callback runs, or the one
//! [`set_effective_context`] chose (the shell does that to run a parked stream's work).
//!
//! Safety, for every `unsafe` block in this file (each is one ABI import call, or [`take`]):
//! - Input pointers come from live `&str`/`&[u8]` borrows with their own lengths; the host
//!   only reads them during the call, which returns before the borrow ends.
//! - Output pointers are `&mut` to locals of the calling function, written by the host
//!   before the call returns and read only after it.
//! - A buffer the host hands back was allocated in this module's memory through the SDK's
//!   exported `proxy_on_memory_allocate` (Rust's global allocator, `Vec<u8>` layout with
//!   capacity = size), so [`take`] may own it exactly once; it is read only on status 0.
//! - The signatures below are the proxy-wasm ABI 0.2.1 ones the pinned SDK (0.2.5) imports;
//!   the `clashing_extern_declarations` allowance is for those identical re-declarations.

use std::ptr::{null, null_mut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::types::{BufferType, LogLevel, MapType, StreamType};
use veil_core::header_map::{self, HeaderMap};
use veil_roles::host::{
    BodyKind, CalloutAnswer, CalloutId, CalloutRequest, Direction, HeaderKind, Host, HostError,
    HostResult, Level, SharedData, StreamHost, MAX_CALLOUT_ANSWER,
};
use zeroize::Zeroizing;

const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: LogLevel, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: StreamType) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: proxy_wasm::types::MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

fn check(status: u32) -> HostResult<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Takes ownership of host-allocated memory (allocated through the SDK's exported
/// `proxy_on_memory_allocate`, i.e. this module's global allocator).
///
/// # Safety
/// `data` is null, or a block the host allocated through `proxy_on_memory_allocate(size)`
/// for this one answer and that nothing else owns (see the module's safety notes).
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: per this function's contract, a `size`-byte allocation of the global
        // allocator with `u8` layout, owned by no one else.
        Vec::from_raw_parts(data, size, size)
    }
}

fn map(kind: HeaderKind) -> MapType {
    match kind {
        HeaderKind::RequestHeaders => MapType::HttpRequestHeaders,
        HeaderKind::RequestTrailers => MapType::HttpRequestTrailers,
        HeaderKind::ResponseHeaders => MapType::HttpResponseHeaders,
        HeaderKind::ResponseTrailers => MapType::HttpResponseTrailers,
    }
}

fn buffer(kind: BodyKind) -> BufferType {
    match kind {
        BodyKind::Request => BufferType::HttpRequestBody,
        BodyKind::Response => BufferType::HttpResponseBody,
    }
}

fn log_level(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

pub fn log(level: LogLevel, message: &str) {
    // Logging must never fail a request; a failed log call is ignored.
    unsafe {
        let _ = proxy_log(level, message.as_ptr(), message.len());
    }
}

pub fn get_buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) } {
        0 => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        s => Err(HostError(s)),
    }
}

fn get_header(kind: MapType, name: &str) -> HostResult<Option<String>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match unsafe {
        proxy_get_header_map_value(kind, name.as_ptr(), name.len(), &mut data, &mut size)
    } {
        0 => {
            let bytes = unsafe { take(data, size) };
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Makes `context_id` the context later hostcalls of this VM call act on (its buffers,
/// headers, local replies, `continue_stream`). Until the VM call returns or this is called
/// again; a context that no longer exists is an error (BadArgument).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub fn set_tick_period(period: Duration) -> HostResult<()> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// A callout's answer in the context it was delivered to: its `:status` and at most
/// [`MAX_CALLOUT_ANSWER`] bytes of body. A status that cannot be read counts as none.
pub fn callout_answer(body_size: usize) -> CalloutAnswer {
    let status = get_header(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok());
    let body = get_buffer(
        BufferType::HttpCallResponseBody,
        0,
        body_size.min(MAX_CALLOUT_ANSWER),
    );
    match body {
        Ok(b) => CalloutAnswer {
            status,
            body: Zeroizing::new(b),
        },
        // An answer whose body cannot be read is a failed call.
        Err(_) => CalloutAnswer {
            status: None,
            body: Zeroizing::new(Vec::new()),
        },
    }
}

/// The host seam for whichever context is effective.
pub struct WasmHost;

impl SharedData for WasmHost {
    fn shared_get(&self, key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        match unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        } {
            0 => Ok(Some((unsafe { take(data, size) }, cas))),
            NOT_FOUND => Ok(None),
            s => Err(HostError(s)),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        check(unsafe {
            proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        })
    }
}

impl Host for WasmHost {
    fn now(&self) -> HostResult<SystemTime> {
        let mut nanos: u64 = 0;
        check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
        Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    fn fill_random(&self, out: &mut [u8]) -> HostResult<()> {
        // WASI's random_get, through getrandom.
        veil_core::crypto::nonce::fill(out).map_err(|_| HostError::INTERNAL)
    }

    fn log(&self, level: Level, message: &str) {
        log(log_level(level), message);
    }

    fn define_counter(&self, name: &str) -> HostResult<u32> {
        let mut id: u32 = 0;
        check(unsafe {
            proxy_define_metric(
                proxy_wasm::types::MetricType::Counter,
                name.as_ptr(),
                name.len(),
                &mut id,
            )
        })?;
        Ok(id)
    }

    fn increment_counter(&self, id: u32, by: i64) {
        // A failed metric update must not fail the request.
        unsafe {
            let _ = proxy_increment_metric(id, by);
        }
    }

    /// The one SDK hostcall wrapper used: the SDK's dispatcher delivers an answer to the
    /// context whose token `dispatch_http_call` registered, and a raw `proxy_http_call`
    /// registers none (the dispatcher would then panic on the answer). The wrapper panics
    /// only on a status other than Ok, BadArgument and InternalFailure, which Envoy's
    /// `httpCall` does not return.
    fn callout(&self, request: &CalloutRequest<'_>) -> HostResult<CalloutId> {
        proxy_wasm::hostcalls::dispatch_http_call(
            request.cluster,
            request.headers.to_vec(),
            request.body,
            vec![],
            request.timeout,
        )
        .map(|token| CalloutId(u64::from(token)))
        .map_err(|s| HostError(s as u32))
    }
}

impl StreamHost for WasmHost {
    /// One hostcall for the whole map (`proxy_get_header_map_pairs`): every hostcall is a
    /// round trip through V8's C API (bench/RESULTS.md). A map whose serialization does not
    /// parse is an error (BadArgument).
    fn headers(&self, kind: HeaderKind) -> HostResult<HeaderMap> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        match unsafe { proxy_get_header_map_pairs(map(kind), &mut data, &mut size) } {
            0 => HeaderMap::parse(unsafe { take(data, size) }).ok_or(HostError(BAD_ARGUMENT)),
            NOT_FOUND => Ok(HeaderMap::default()),
            s => Err(HostError(s)),
        }
    }

    fn header(&self, kind: HeaderKind, name: &str) -> HostResult<Option<String>> {
        get_header(map(kind), name)
    }

    fn add_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()> {
        check(unsafe {
            proxy_add_header_map_value(
                map(kind),
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn replace_header(&self, kind: HeaderKind, name: &str, value: &str) -> HostResult<()> {
        check(unsafe {
            proxy_replace_header_map_value(
                map(kind),
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn remove_header(&self, kind: HeaderKind, name: &str) -> HostResult<()> {
        check(unsafe { proxy_remove_header_map_value(map(kind), name.as_ptr(), name.len()) })
    }

    fn body(&self, kind: BodyKind, max: usize) -> HostResult<Vec<u8>> {
        get_buffer(buffer(kind), 0, max)
    }

    fn replace_body(&self, kind: BodyKind, size: usize, value: &[u8]) -> HostResult<()> {
        check(unsafe { proxy_set_buffer_bytes(buffer(kind), 0, size, value.as_ptr(), value.len()) })
    }

    fn send_local_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        let h = header_map::encode(headers);
        check(unsafe {
            proxy_send_local_response(
                u32::from(status),
                null(),
                0,
                body.as_ptr(),
                body.len(),
                h.as_ptr(),
                h.len(),
                -1,
            )
        })
    }

    /// `proxy_continue_stream` for the effective context. Envoy runs the continuation after
    /// the current VM call returns.
    fn resume(&self, direction: Direction) -> HostResult<()> {
        let stream = match direction {
            Direction::Request => StreamType::HttpRequest,
            Direction::Response => StreamType::HttpResponse,
        };
        check(unsafe { proxy_continue_stream(stream) })
    }
}
