//! Refusals: the filter's own problem+json answers (RFC 9457). Shared by every role.

use proxy_wasm::types::{Action, LogLevel};
use veil_core::problem::{problem_json, ProblemKind, CONTENT_TYPE};

use crate::host;
use crate::metrics::Metrics;

/// A refusal: the problem to answer and, for the log, what caused it (never content).
pub struct Refusal {
    pub kind: ProblemKind,
    pub detail: String,
}

impl Refusal {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            detail: detail.into(),
        }
    }

    /// A body (or its decompressed form) over `max_body_bytes`.
    pub fn too_large(limit: usize) -> Refusal {
        Refusal::new(
            ProblemKind::TooLarge,
            format!("the body exceeds max_body_bytes ({limit})"),
        )
    }

    pub fn hostcall(what: &str, e: host::HostError) -> Refusal {
        Refusal::new(
            ProblemKind::SealFailed,
            format!("{what} failed with host status {}", e.0),
        )
    }
}

/// Answers the problem and stops the stream. If even the answer fails, the stream stays
/// stopped: nothing is forwarded.
pub fn refuse(metrics: &Metrics, r: &Refusal) -> Action {
    if r.kind == ProblemKind::SealFailed {
        Metrics::add(metrics.seal_failed, 1);
    }
    host::log(
        LogLevel::Info,
        &format!("veil: refused: {} ({})", r.kind.code(), r.detail),
    );
    let body = problem_json(r.kind, &r.detail);
    let mut headers = vec![
        ("content-type", CONTENT_TYPE),
        ("cache-control", "no-store"),
    ];
    // Relay failures carry their code in a header, so a client tells them from an encoded
    // upstream answer (docs/relay-protocol.md §6).
    if let Some(code) = r.kind.relay_error_code() {
        headers.push((veil_core::relay::HEADER_ERROR, code));
    }
    if let Err(e) = host::send_local_response(u32::from(r.kind.status()), &headers, &body) {
        Metrics::add(metrics.hostcall_failed, 1);
        host::log(
            LogLevel::Error,
            &format!("veil: could not send the refusal (host status {})", e.0),
        );
    }
    Action::Pause
}
