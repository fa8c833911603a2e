//! The empty proxy-wasm filter: what any proxy-wasm filter costs on V8 before it does
//! anything (VM entries per stream and callback). `bench/run.py` measures Veil's wasm shell
//! against it. Every callback is the SDK's default (continue).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pass))
    }
}

struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}
