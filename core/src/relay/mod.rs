//! Veil Relay (docs/relay-protocol.md, protocol version 2): the pure parts shared by the
//! filter, the keyservice and the clients — client ids, the X-Wing KEM, the key
//! configuration, pairing and part sealing ([`v2`]), the shared encodings ([`wire`]), the
//! replay window, the pair slots and the route globs.

pub mod clientid;
pub mod error;
pub mod kem;
pub mod keys;
pub mod routes;
pub mod slots;
pub mod v2;
pub mod window;
pub mod wire;

pub use clientid::ClientIdSecret;
pub use error::RelayError;
pub use keys::PairKeys;
pub use routes::RouteGlob;
pub use window::ReplayWindow;

/// Request/response control header.
pub const HEADER_RELAY: &str = "x-veil-relay";
/// Sealed headers (request part 2, response part 4), b64url.
pub const HEADER_EH: &str = "x-veil-relay-eh";
/// The client id header of `GET P/relay` and `POST P/pair`.
pub const HEADER_CLIENT_ID: &str = "x-veil-client-id";
/// The code of a relay failure answered by the filter.
pub const HEADER_ERROR: &str = "x-veil-relay-error";
/// Default pool size / `max_pairs`.
pub const DEFAULT_MAX_PAIRS: usize = 5;
