//! RFC 9457 problem details (`application/problem+json`) with a stable `code` per failure,
//! so clients and runbooks can act on the code rather than the wording.

use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Every failure the filter answers itself. The `code` strings are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: the body is not the JSON the policy needs.
    BadJson,
    /// 413: the body (or its decompressed form) exceeds `max_body_bytes`.
    TooLarge,
    /// 415: a content encoding the filter cannot decode.
    UnsupportedEncoding,
    /// 400: a gzip/deflate body that does not decompress.
    BadEncoding,
    /// 404: a body-carrying request on a sealed prefix that no policy route covers.
    RouteNotSealed,
    /// 503: no data key is available (keyservice unreachable, still starting).
    KeyUnavailable,
    /// 500: sealing failed for another reason (never forwards plaintext).
    SealFailed,
    /// 400: a plaintext search on an unseal route that cannot be rewritten to ciphertexts
    /// (bad `from`/`to`, range too wide, a term on a randomized field, ...).
    BadSearch,
    /// 502: an unseal route's response held a value that could not be opened, and the
    /// route says `on_unseal_error: reject`.
    UnsealFailed,
}

impl ProblemKind {
    pub fn status(self) -> u16 {
        match self {
            ProblemKind::BadJson => 400,
            ProblemKind::TooLarge => 413,
            ProblemKind::UnsupportedEncoding => 415,
            ProblemKind::BadEncoding => 400,
            ProblemKind::RouteNotSealed => 404,
            ProblemKind::KeyUnavailable => 503,
            ProblemKind::SealFailed => 500,
            ProblemKind::BadSearch => 400,
            ProblemKind::UnsealFailed => 502,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ProblemKind::BadJson => "bad-json",
            ProblemKind::TooLarge => "body-too-large",
            ProblemKind::UnsupportedEncoding => "unsupported-content-encoding",
            ProblemKind::BadEncoding => "bad-content-encoding",
            ProblemKind::RouteNotSealed => "route-not-sealed",
            ProblemKind::KeyUnavailable => "key-unavailable",
            ProblemKind::SealFailed => "seal-failed",
            ProblemKind::BadSearch => "bad-search",
            ProblemKind::UnsealFailed => "unseal-failed",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::BadJson => "Body is not valid JSON",
            ProblemKind::TooLarge => "Body too large",
            ProblemKind::UnsupportedEncoding => "Unsupported content encoding",
            ProblemKind::BadEncoding => "Body does not decompress",
            ProblemKind::RouteNotSealed => "No seal policy for this route",
            ProblemKind::KeyUnavailable => "Encryption key unavailable",
            ProblemKind::SealFailed => "Sealing failed",
            ProblemKind::BadSearch => "Search cannot be run on sealed data",
            ProblemKind::UnsealFailed => "Response could not be unsealed",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

/// The JSON body of a problem. `detail` must never contain request content.
pub fn problem_json(kind: ProblemKind, detail: &str) -> Vec<u8> {
    let body = Body {
        type_: format!("urn:veil:problem:{}", kind.code()),
        title: kind.title(),
        status: kind.status(),
        code: kind.code(),
        detail,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&problem_json(ProblemKind::TooLarge, "over 10 bytes")).unwrap();
        assert_eq!(v["status"], 413);
        assert_eq!(v["code"], "body-too-large");
        assert_eq!(v["type"], "urn:veil:problem:body-too-large");
        assert_eq!(v["detail"], "over 10 bytes");
    }
}
