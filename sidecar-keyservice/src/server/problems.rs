//! Every error answer of the keyservice: RFC 9457 `application/problem+json` in the one shape
//! Veil uses everywhere, the filter's included ([`veil_core::problem::problem_body`]):
//! `type` (`urn:veil:problem:<code>`), `title`, `status`, `code`, `detail`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use veil_core::problem::{problem_body, CONTENT_TYPE};

/// An RFC 9457 problem response (never cached). `detail` never holds a key or a token.
pub fn problem(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Response {
    let body = problem_body(code, title, status.as_u16(), &detail.into());
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// 503 while starting or draining.
pub fn not_ready() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "Not ready",
        "the keyservice is not ready (starting or shutting down)",
    )
}

pub(crate) async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such endpoint",
    )
}

pub(crate) async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not answer this method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyservice's problems and the filter's have the same members.
    #[test]
    fn one_shape_with_the_filter() {
        let ks = problem_body("not-ready", "Not ready", 503, "x");
        let filter =
            veil_core::problem::problem_json(veil_core::problem::ProblemKind::KeyUnavailable, "x");
        let keys = |b: &[u8]| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_slice(b).unwrap();
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&ks), keys(&filter));
        assert_eq!(keys(&ks), ["code", "detail", "status", "title", "type"]);
    }
}
