//! Refusals: the filter's own problem+json answers (RFC 9457). Shared by every role.

use veil_core::problem::{problem_json, ProblemKind, CONTENT_TYPE};

use crate::host::{Action, HostError, Level, StreamHost};
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

    /// A hostcall failed: answered as the failure of the role's own work (`seal-failed` on a
    /// sealed route, `unseal-failed` on an unseal route), never as another role's.
    pub fn hostcall(kind: ProblemKind, what: &str, e: HostError) -> Refusal {
        Refusal::new(kind, format!("{what} failed with {e}"))
    }
}

/// Answers the problem and stops the stream. If even the answer fails, the stream stays
/// stopped: nothing is forwarded.
pub fn refuse(h: &dyn StreamHost, metrics: &Metrics, r: &Refusal) -> Action {
    refuse_with(h, metrics, r, &[])
}

/// [`refuse`] with extra headers (the relay's authenticated refusal: its control header
/// and the sealed code).
pub fn refuse_with(
    h: &dyn StreamHost,
    metrics: &Metrics,
    r: &Refusal,
    extra: &[(&str, &str)],
) -> Action {
    if r.kind == ProblemKind::SealFailed {
        Metrics::add(h, metrics.seal_failed, 1);
    }
    h.log(
        Level::Info,
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
    headers.extend_from_slice(extra);
    if let Err(e) = h.send_local_response(r.kind.status(), &headers, &body) {
        Metrics::add(h, metrics.hostcall_failed, 1);
        h.log(
            Level::Error,
            &format!("veil: could not send the refusal ({e})"),
        );
    }
    Action::Pause
}
