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
    /// Relay (docs/relay-protocol.md §6) — 400: control header missing parts, bad flags,
    /// bad `seq`, bad JSON in pairing.
    RelayBadRequest,
    /// 401: client id missing or not valid.
    RelayBadClientId,
    /// 401: pair unknown, expired, or of another client.
    RelayPairUnknown,
    /// 400: a part does not open, or decoded headers are not allowed.
    RelayDecodeFailed,
    /// 409: `seq` already used or older than the window.
    RelayReplay,
    /// 404: decoded path outside the relay `routes`.
    RelayRouteNotAllowed,
    /// 403: a plaintext request to a relayed route.
    RelayRequired,
    /// 413: body over the relay's limit.
    RelayTooLarge,
    /// 503: the keyservice or its store did not answer.
    RelayUnavailable,
    /// Relay v2, 400: pairing names a server key id the keyservice does not hold (a client
    /// pinned a retired key).
    RelayKeyUnknown,
    /// Relay v2, 502 (client side only): the pairing answer's key confirmation does not
    /// verify — something between the client and Veil answered in the server's place.
    RelayServerAuthFailed,
    /// Relay v2, 400: a decoded (sealed) request header the relay does not accept — a
    /// sealed `cookie` while `relay.allow_sealed_cookie` is off, or a name the protocol
    /// forbids. Not retried: the same request would be refused again.
    RelayHeaderNotAllowed,
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
            ProblemKind::RelayBadRequest => 400,
            ProblemKind::RelayBadClientId => 401,
            ProblemKind::RelayPairUnknown => 401,
            ProblemKind::RelayDecodeFailed => 400,
            ProblemKind::RelayReplay => 409,
            ProblemKind::RelayRouteNotAllowed => 404,
            ProblemKind::RelayRequired => 403,
            ProblemKind::RelayTooLarge => 413,
            ProblemKind::RelayUnavailable => 503,
            ProblemKind::RelayKeyUnknown => 400,
            ProblemKind::RelayServerAuthFailed => 502,
            ProblemKind::RelayHeaderNotAllowed => 400,
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
            ProblemKind::RelayBadRequest => "relay-bad-request",
            ProblemKind::RelayBadClientId => "relay-bad-client-id",
            ProblemKind::RelayPairUnknown => "relay-pair-unknown",
            ProblemKind::RelayDecodeFailed => "relay-decode-failed",
            ProblemKind::RelayReplay => "relay-replay",
            ProblemKind::RelayRouteNotAllowed => "relay-route-not-allowed",
            ProblemKind::RelayRequired => "relay-required",
            ProblemKind::RelayTooLarge => "relay-too-large",
            ProblemKind::RelayUnavailable => "relay-unavailable",
            ProblemKind::RelayKeyUnknown => "relay-key-unknown",
            ProblemKind::RelayServerAuthFailed => "relay-server-auth-failed",
            ProblemKind::RelayHeaderNotAllowed => "relay-header-not-allowed",
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
            ProblemKind::RelayBadRequest => "Malformed relay request",
            ProblemKind::RelayBadClientId => "Relay client id missing or not valid",
            ProblemKind::RelayPairUnknown => "Relay pair unknown or expired",
            ProblemKind::RelayDecodeFailed => "Relay request does not decode",
            ProblemKind::RelayReplay => "Relay sequence number already used",
            ProblemKind::RelayRouteNotAllowed => "Path not allowed through the relay",
            ProblemKind::RelayRequired => "This route is only served through the relay",
            ProblemKind::RelayTooLarge => "Relay body too large",
            ProblemKind::RelayUnavailable => "Relay unavailable",
            ProblemKind::RelayKeyUnknown => "Relay server key unknown",
            ProblemKind::RelayServerAuthFailed => "Relay server not authenticated",
            ProblemKind::RelayHeaderNotAllowed => "Sealed request header not allowed",
        }
    }

    /// For relay failures, the value of the `x-veil-relay-error` header (the code), so a
    /// client can tell a relay refusal from an encoded upstream answer.
    pub fn relay_error_code(self) -> Option<&'static str> {
        match self {
            ProblemKind::RelayBadRequest
            | ProblemKind::RelayBadClientId
            | ProblemKind::RelayPairUnknown
            | ProblemKind::RelayDecodeFailed
            | ProblemKind::RelayReplay
            | ProblemKind::RelayRouteNotAllowed
            | ProblemKind::RelayRequired
            | ProblemKind::RelayTooLarge
            | ProblemKind::RelayUnavailable
            | ProblemKind::RelayKeyUnknown
            | ProblemKind::RelayServerAuthFailed
            | ProblemKind::RelayHeaderNotAllowed => Some(self.code()),
            _ => None,
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
    problem_body(kind.code(), kind.title(), kind.status(), detail)
}

/// The one problem+json shape every Veil answer uses (the filter's [`ProblemKind`]s and the
/// keyservice's own codes): `type` = `urn:veil:problem:<code>`, `title`, `status`, `code`,
/// `detail`. `detail` must never contain request content or key material.
pub fn problem_body(code: &str, title: &str, status: u16, detail: &str) -> Vec<u8> {
    let body = Body {
        type_: format!("urn:veil:problem:{code}"),
        title,
        status,
        code,
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
