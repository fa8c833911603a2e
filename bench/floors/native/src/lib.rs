//! The empty dynamic module: what any native filter costs before it does anything (Envoy's
//! hook dispatch and one allocation-free object per stream). `bench/run.py` measures Veil's
//! native shell against it. Every hook passes (status 0); no Envoy callback is called.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};

/// One static object stands for the config and every stream (nothing is kept per stream).
static OBJECT: u8 = 0;

fn object() -> *const c_void {
    std::ptr::addr_of!(OBJECT).cast()
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
    _config: Buf,
) -> *const c_void {
    object()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_cm: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _cm: *const c_void,
    _fe: *mut c_void,
) -> *const c_void {
    object()
}

macro_rules! pass_eos {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_fe: *mut c_void, _fm: *const c_void, _eos: bool) -> u32 {
            0
        }
    )*};
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

pass_eos!(
    envoy_dynamic_module_on_http_filter_request_headers,
    envoy_dynamic_module_on_http_filter_request_body,
    envoy_dynamic_module_on_http_filter_response_headers,
    envoy_dynamic_module_on_http_filter_response_body
);
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
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_fm: *const c_void) {}

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
