//! Hostcalls that return every status as a value.
//!
//! The proxy-wasm SDK's `hostcalls` wrappers `panic!` on statuses they do not expect, and a
//! panic kills the VM. The data path uses these instead: the same ABI imports, with the raw
//! `u32` status mapped to a `Result` (no status value is assumed impossible).

use std::ptr::{null, null_mut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::types::{BufferType, LogLevel, MapType, StreamType};
use veil_core::header_map::{self, HeaderMap};

/// A non-Ok hostcall status (the raw ABI value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

pub const NOT_FOUND: u32 = 1;

type HostResult<T> = Result<T, HostError>;

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
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

pub fn log(level: LogLevel, message: &str) {
    // Logging must never fail a request; a failed log call is ignored.
    unsafe {
        let _ = proxy_log(level, message.as_ptr(), message.len());
    }
}

pub fn now() -> HostResult<SystemTime> {
    let mut nanos: u64 = 0;
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub fn set_tick_period(period: Duration) -> HostResult<()> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
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

pub fn set_buffer(kind: BufferType, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
    check(unsafe { proxy_set_buffer_bytes(kind, start, size, value.as_ptr(), value.len()) })
}

pub fn get_header(map: MapType, name: &str) -> HostResult<Option<String>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    } {
        0 => {
            let bytes = unsafe { take(data, size) };
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Every header of `map`, in order (names as Envoy holds them: lowercase). A map whose
/// serialization does not parse is an error (BadArgument), never a panic.
pub fn get_headers(map: MapType) -> HostResult<Vec<(String, String)>> {
    Ok(read_headers(map)?.to_pairs())
}

pub const BAD_ARGUMENT: u32 = 2;

/// Reads a whole header map with one hostcall (`proxy_get_header_map_pairs`). A request's
/// path, relay marker, method, encoding and length are then lookups, not hostcalls of their
/// own: every hostcall is a round trip through V8's C API (bench/RESULTS.md). A map whose
/// serialization does not parse is an error (BadArgument).
pub fn read_headers(map: MapType) -> HostResult<HeaderMap> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
        0 => HeaderMap::parse(unsafe { take(data, size) }).ok_or(HostError(BAD_ARGUMENT)),
        NOT_FOUND => Ok(HeaderMap::default()),
        s => Err(HostError(s)),
    }
}

/// Adds a header value (keeps existing values of the same name).
pub fn add_header(map: MapType, name: &str, value: &str) -> HostResult<()> {
    check(unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn remove_header(map: MapType, name: &str) -> HostResult<()> {
    check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Sets header `name` to `value` (adds it if absent).
pub fn replace_header(map: MapType, name: &str, value: &str) -> HostResult<()> {
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Resumes a stream paused by a callback's `Action::Pause` (`proxy_continue_stream`), for
/// the effective context. Envoy runs the continuation after the current VM call returns.
pub fn continue_stream(stream: StreamType) -> HostResult<()> {
    check(unsafe { proxy_continue_stream(stream) })
}

/// Makes `context_id` the context later hostcalls of this VM call act on (its buffers,
/// headers, local replies, `continue_stream`). Until the VM call returns or this is called
/// again; a context that no longer exists is an error (BadArgument).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let h = header_map::encode(headers);
    check(unsafe {
        proxy_send_local_response(
            status,
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

/// Value and CAS version of a shared-data key (None if absent).
pub fn get_shared(key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }
    {
        0 => Ok(Some((unsafe { take(data, size) }, cas))),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Writes a shared-data key; `cas` = Some(version) fails with CAS_MISMATCH if it changed.
pub fn set_shared(key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
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

pub fn define_counter(name: &str) -> HostResult<u32> {
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

pub fn increment(id: u32, by: i64) {
    // A failed metric update must not fail the request.
    unsafe {
        let _ = proxy_increment_metric(id, by);
    }
}
