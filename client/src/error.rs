//! What can go wrong in a relayed request, split so a caller (and the CLI's exit code) can
//! tell the relay refusing from the network failing from a broken answer.

use thiserror::Error;
use veil_core::relay::RelayError;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The HTTP exchange itself failed (connect, timeout, TLS, reading the body).
    #[error("transport: {0}")]
    Transport(String),
    /// The relay answered with a problem (`x-veil-relay-error`), after any retry.
    #[error("relay refused ({status} {code}): {detail}")]
    Relay {
        code: String,
        status: u16,
        detail: String,
        /// Protocol v2: the refusal opened under this request's keys and binding, so the
        /// relay itself wrote it about exactly this request. `false` for v1 and for any
        /// plaintext refusal, which a hop could have written.
        authenticated: bool,
    },
    /// Protocol v2: the pairing answer's key confirmation does not verify — whoever
    /// answered does not hold the pinned server key (`relay-server-auth-failed`). Never
    /// retried, and no request was sent.
    #[error("relay-server-auth-failed: {0}")]
    ServerNotAuthenticated(String),
    /// An answer that does not follow the protocol (not encoded, a part that does not open,
    /// a pairing answer of the wrong shape). Never retried: the request may have run.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Bad input from the caller (URL, method, header).
    #[error("usage: {0}")]
    Usage(String),
}

impl ClientError {
    /// The protocol's code of a relay refusal.
    pub fn relay_code(&self) -> Option<&str> {
        match self {
            ClientError::Relay { code, .. } => Some(code),
            ClientError::ServerNotAuthenticated(_) => Some("relay-server-auth-failed"),
            _ => None,
        }
    }

    pub(crate) fn protocol(e: RelayError) -> ClientError {
        ClientError::Protocol(e.to_string())
    }
}
