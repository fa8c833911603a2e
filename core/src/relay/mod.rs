//! Veil Relay, version 1 (docs/relay-protocol.md): the pure parts shared by the filter, the
//! keyservice and the clients — client ids, the X-Wing KEM, the pair key derivation, the
//! part sealing and control headers, the replay window and the route globs.

pub mod clientid;
pub mod error;
pub mod kem;
pub mod keys;
pub mod pairing;
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
pub use wire::{Part, PartCipher, PartContext, RequestControl, ResponseControl};

/// The protocol label in the transcript hash, the KDF infos and every part's AD.
pub const LABEL: &[u8] = b"veil-relay/v1";

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
