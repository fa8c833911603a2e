//! The relay's failures, each with the stable code of the protocol's error table
//! (docs/relay-protocol.md §6), so the filter can answer with the right problem and the
//! client can decide whether to re-pair or retry.

use thiserror::Error;

use crate::problem::ProblemKind;

/// A relay failure. The details are fixed strings: they never carry request content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RelayError {
    /// Control header missing parts, bad flags, bad `seq`, bad pairing JSON, a bad key.
    #[error("bad relay request: {0}")]
    BadRequest(&'static str),
    /// Client id missing or not valid.
    #[error("client id missing or not valid")]
    BadClientId,
    /// Pair unknown, expired, or of another client.
    #[error("pair unknown, expired or of another client")]
    PairUnknown,
    /// A part does not open, or the decoded headers are not allowed.
    #[error("relay part does not decode: {0}")]
    DecodeFailed(&'static str),
    /// `seq` already used or older than the window.
    #[error("sequence number already used or older than the replay window")]
    Replay,
    /// The decoded path is outside the relay's `routes`.
    #[error("path not allowed through the relay")]
    RouteNotAllowed,
    /// A plaintext request to a relayed route.
    #[error("this route is only served through the relay")]
    RelayRequired,
    /// A body over the relay's limit.
    #[error("body over the relay's limit")]
    TooLarge,
    /// The keyservice or its store did not answer; or no randomness was available.
    #[error("relay unavailable: {0}")]
    Unavailable(&'static str),
    /// v2 pairing: the key id of the client's pinned server key is not held here.
    #[error("the pinned relay server key is not held by this server")]
    KeyUnknown,
    /// v2 pairing (client side): the key confirmation does not verify, so the answer is not
    /// from the holder of the pinned server key (an active man in the middle, or a wrong pin).
    #[error("the relay server did not prove it holds the pinned key")]
    ServerAuthFailed,
    /// v2: a decoded request header the relay does not accept (a sealed `cookie` while
    /// `allow_sealed_cookie` is off, or a forbidden name); the detail says which rule.
    #[error("sealed request header not allowed: {0}")]
    HeaderNotAllowed(&'static str),
}

impl RelayError {
    /// The protocol's stable code (`x-veil-relay-error` header, problem `code`).
    pub fn code(self) -> &'static str {
        self.problem_kind().code()
    }

    /// The HTTP status the filter answers with.
    pub fn status(self) -> u16 {
        self.problem_kind().status()
    }

    /// The problem kind the filter answers with.
    pub fn problem_kind(self) -> ProblemKind {
        match self {
            RelayError::BadRequest(_) => ProblemKind::RelayBadRequest,
            RelayError::BadClientId => ProblemKind::RelayBadClientId,
            RelayError::PairUnknown => ProblemKind::RelayPairUnknown,
            RelayError::DecodeFailed(_) => ProblemKind::RelayDecodeFailed,
            RelayError::Replay => ProblemKind::RelayReplay,
            RelayError::RouteNotAllowed => ProblemKind::RelayRouteNotAllowed,
            RelayError::RelayRequired => ProblemKind::RelayRequired,
            RelayError::TooLarge => ProblemKind::RelayTooLarge,
            RelayError::Unavailable(_) => ProblemKind::RelayUnavailable,
            RelayError::KeyUnknown => ProblemKind::RelayKeyUnknown,
            RelayError::ServerAuthFailed => ProblemKind::RelayServerAuthFailed,
            RelayError::HeaderNotAllowed(_) => ProblemKind::RelayHeaderNotAllowed,
        }
    }

    /// The error for a code read from `x-veil-relay-error` (the client's side).
    pub fn from_code(code: &str) -> Option<RelayError> {
        Some(match code {
            "relay-bad-request" => RelayError::BadRequest("refused by the relay"),
            "relay-bad-client-id" => RelayError::BadClientId,
            "relay-pair-unknown" => RelayError::PairUnknown,
            "relay-decode-failed" => RelayError::DecodeFailed("refused by the relay"),
            "relay-replay" => RelayError::Replay,
            "relay-route-not-allowed" => RelayError::RouteNotAllowed,
            "relay-required" => RelayError::RelayRequired,
            "relay-too-large" => RelayError::TooLarge,
            "relay-unavailable" => RelayError::Unavailable("refused by the relay"),
            "relay-key-unknown" => RelayError::KeyUnknown,
            "relay-server-auth-failed" => RelayError::ServerAuthFailed,
            "relay-header-not-allowed" => RelayError::HeaderNotAllowed("refused by the relay"),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_match_the_protocol_table() {
        let table = [
            (RelayError::BadRequest("x"), "relay-bad-request", 400),
            (RelayError::BadClientId, "relay-bad-client-id", 401),
            (RelayError::PairUnknown, "relay-pair-unknown", 401),
            (RelayError::DecodeFailed("x"), "relay-decode-failed", 400),
            (RelayError::Replay, "relay-replay", 409),
            (RelayError::RouteNotAllowed, "relay-route-not-allowed", 404),
            (RelayError::RelayRequired, "relay-required", 403),
            (RelayError::TooLarge, "relay-too-large", 413),
            (RelayError::Unavailable("x"), "relay-unavailable", 503),
            (RelayError::KeyUnknown, "relay-key-unknown", 400),
            (
                RelayError::ServerAuthFailed,
                "relay-server-auth-failed",
                502,
            ),
            (
                RelayError::HeaderNotAllowed("x"),
                "relay-header-not-allowed",
                400,
            ),
        ];
        for (e, code, status) in table {
            assert_eq!((e.code(), e.status()), (code, status), "{e:?}");
            assert_eq!(e.problem_kind().relay_error_code(), Some(code));
            assert_eq!(RelayError::from_code(code).map(|e| e.code()), Some(code));
        }
        assert_eq!(RelayError::from_code("bad-json"), None);
        assert_eq!(ProblemKind::TooLarge.relay_error_code(), None);
    }
}
