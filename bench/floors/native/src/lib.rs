//! The benchmark's native floors, two filters in one module (`bench/run.py` measures Veil's
//! native shell against them):
//! - the **empty** module (filter config anything but `rewrite`): what any native filter
//!   costs before it does anything (Envoy's hook dispatch and one allocation-free object per
//!   stream). Every hook passes (status 0); no Envoy callback is called.
//! - the **body-rewriting** floor (filter config `rewrite`): what any native filter that
//!   rewrites a body costs before its transform, i.e. Veil's body handling with an identity
//!   transform. It holds the headers, buffers the body to its end, copies it out, drains it,
//!   appends the copy and sets `content-length` (if the message had one) — the request's body
//!   if the request has one, else the response's (a GET's answer), the body Veil rewrites in
//!   the `seal*`, `relay-*` and `unseal` scenarios (the relay also rewrites the answer).
// The hooks are called by Envoy with the pointers it owns, as the ABI says (they cannot be
// `unsafe fn`s: they are the exported C entry points).
#![allow(clippy::missing_safety_doc, clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_char, c_void};

/// One static object stands for the config and every stream of the empty filter (nothing is
/// kept per stream).
static OBJECT: u8 = 0;
/// The body-rewriting floor's config (its streams are boxed [`Rewrite`]s).
static REWRITE_CONFIG: u8 = 0;

fn object() -> *const c_void {
    std::ptr::addr_of!(OBJECT).cast()
}

fn rewrite_config() -> *const c_void {
    std::ptr::addr_of!(REWRITE_CONFIG).cast()
}

#[repr(C)]
pub struct Buf {
    ptr: *const c_char,
    len: usize,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    static VERSION: &[u8] = b"v0.2.0\0";
    VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _ce: *mut c_void,
    _name: Buf,
    config: Buf,
) -> *const c_void {
    // SAFETY: Envoy's view of the config bytes, valid during this call.
    let bytes = unsafe { view(config.ptr, config.len) };
    if bytes == b"rewrite" {
        rewrite_config()
    } else {
        object()
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_cm: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    cm: *const c_void,
    _fe: *mut c_void,
) -> *const c_void {
    if cm == rewrite_config() {
        Box::into_raw(Box::new(Rewrite::default()))
            .cast_const()
            .cast()
    } else {
        object()
    }
}

/// A body-rewriting floor stream.
#[derive(Default)]
struct Rewrite {
    /// The request has a body: it is the one rewritten (else the response's).
    request_body: bool,
}

extern "C" {
    fn envoy_dynamic_module_callback_http_get_header(
        fe: *mut c_void,
        kind: u32,
        key: Buf,
        out: *mut Buf,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        fe: *mut c_void,
        kind: u32,
        key: Buf,
        value: Buf,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(fe: *mut c_void);
    fn envoy_dynamic_module_callback_http_get_body_size(fe: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(fe: *mut c_void, kind: u32)
        -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        fe: *mut c_void,
        kind: u32,
        out: *mut Buf,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(fe: *mut c_void, kind: u32, n: usize) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        fe: *mut c_void,
        kind: u32,
        data: Buf,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(fe: *mut c_void) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(fe: *mut c_void) -> bool;
}

/// Safety: `ptr` is NULL or points to `len` readable bytes that outlive `'a` (Envoy's views
/// are valid during the hook that hands them out).
unsafe fn view<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr.cast(), len)
    }
}

/// Appends the chunks of body `kind` to `out`. Safety: `fe` is the live stream of the
/// current hook; the chunk views Envoy fills in are copied before the hook returns.
unsafe fn read_body(fe: *mut c_void, kind: u32, out: &mut Vec<u8>) {
    let n = envoy_dynamic_module_callback_http_get_body_chunks_size(fe, kind);
    if n == 0 {
        return;
    }
    let mut chunks: Vec<Buf> = (0..n)
        .map(|_| Buf {
            ptr: std::ptr::null(),
            len: 0,
        })
        .collect();
    if envoy_dynamic_module_callback_http_get_body_chunks(fe, kind, chunks.as_mut_ptr()) {
        for c in &chunks {
            out.extend_from_slice(view(c.ptr, c.len));
        }
    }
}

/// Veil's body handling with an identity transform: copy out, drain, append the copy, set
/// `content-length` in the held headers (header map `headers`) if the message has one.
/// Safety: `fe` is the live stream of the current body hook; every buffer passed to Envoy
/// outlives the call that reads it.
unsafe fn rewrite(fe: *mut c_void, request: bool) {
    let (received, buffered, headers) = if request { (0, 1, 0) } else { (2, 3, 2) };
    let is_buffered = if request {
        envoy_dynamic_module_callback_http_received_buffered_request_body(fe)
    } else {
        envoy_dynamic_module_callback_http_received_buffered_response_body(fe)
    };
    let mut body = Vec::new();
    read_body(fe, buffered, &mut body);
    if !is_buffered {
        read_body(fe, received, &mut body);
    }
    let r = envoy_dynamic_module_callback_http_get_body_size(fe, received);
    if r > 0 {
        envoy_dynamic_module_callback_http_drain_body(fe, received, r);
    }
    let b = envoy_dynamic_module_callback_http_get_body_size(fe, buffered);
    let target = if b > 0 || is_buffered {
        envoy_dynamic_module_callback_http_drain_body(fe, buffered, b);
        buffered
    } else {
        received
    };
    envoy_dynamic_module_callback_http_append_body(
        fe,
        target,
        Buf {
            ptr: body.as_ptr().cast(),
            len: body.len(),
        },
    );
    let key = b"content-length";
    let mut out = Buf {
        ptr: std::ptr::null(),
        len: 0,
    };
    let mut count = 0usize;
    let key_buf = || Buf {
        ptr: key.as_ptr().cast(),
        len: key.len(),
    };
    if envoy_dynamic_module_callback_http_get_header(
        fe,
        headers,
        key_buf(),
        &mut out,
        0,
        &mut count,
    ) && count > 0
    {
        let len = body.len().to_string();
        envoy_dynamic_module_callback_http_set_header(
            fe,
            headers,
            key_buf(),
            Buf {
                ptr: len.as_ptr().cast(),
                len: len.len(),
            },
        );
        if request {
            // As Veil's native shell does after changing a request header.
            envoy_dynamic_module_callback_http_clear_route_cache(fe);
        }
    }
}

fn stream<'a>(fm: *const c_void) -> Option<&'a mut Rewrite> {
    if fm.is_null() || fm == object() {
        return None;
    }
    // SAFETY: every other stream pointer is a Box<Rewrite> from filter_new, freed only in
    // filter_destroy; Envoy calls a stream's hooks on one thread, one at a time.
    Some(unsafe { &mut *fm.cast_mut().cast::<Rewrite>() })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    match stream(fm) {
        Some(s) if !eos => {
            s.request_body = true;
            1 // StopIteration: held until the body is rewritten
        }
        _ => 0,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    match stream(fm) {
        Some(s) if s.request_body && !eos => 1, // StopIterationAndBuffer
        Some(s) if s.request_body => {
            // SAFETY: fe is live during the hook.
            unsafe { rewrite(fe, true) };
            0
        }
        _ => 0,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    match stream(fm) {
        Some(s) if !s.request_body && !eos => 1,
        _ => 0,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    fe: *mut c_void,
    fm: *const c_void,
    eos: bool,
) -> u32 {
    match stream(fm) {
        Some(s) if !s.request_body && !eos => 1,
        Some(s) if !s.request_body => {
            // SAFETY: fe is live during the hook.
            unsafe { rewrite(fe, false) };
            0
        }
        _ => 0,
    }
}

macro_rules! pass {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_fe: *mut c_void, _fm: *const c_void) -> u32 {
            0
        }
    )*};
}

macro_rules! noop {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_fe: *mut c_void, _fm: *const c_void) {}
    )*};
}

pass!(
    envoy_dynamic_module_on_http_filter_request_trailers,
    envoy_dynamic_module_on_http_filter_response_trailers
);
noop!(
    envoy_dynamic_module_on_http_filter_stream_complete,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark
);

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: *const c_void) {
    if stream(fm).is_some() {
        // SAFETY: made by Box::into_raw in filter_new; Envoy destroys a stream once.
        drop(unsafe { Box::from_raw(fm.cast_mut().cast::<Rewrite>()) });
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _result: u32,
    _headers: *const c_void,
    _n_headers: usize,
    _chunks: *const c_void,
    _n_chunks: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _headers: *const c_void,
    _n: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _data: *const c_void,
    _n: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: *mut c_void,
    _fm: *const c_void,
    _id: u64,
    _trailers: *const c_void,
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
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _fe: *mut c_void,
    _fm: *const c_void,
    _event: u64,
) {
}
