//! Veil Relay client (docs/relay-protocol.md): the Rust side of end-to-end encoded requests.
//!
//! ```no_run
//! let client = veil_relay::Client::new("http://127.0.0.1:10000/veil", Default::default())?;
//! let r = client.request("GET", "/app/echo?x=1", &[("accept".into(), "application/json".into())], None)?;
//! println!("{} {}", r.status, String::from_utf8_lossy(&r.body));
//! # Ok::<(), veil_relay::ClientError>(())
//! ```

mod client;
mod error;
mod pool;

pub use client::{parse_server_key, Client, Options, Response, Stats, DEFAULT_PAIRS, DEFAULT_URL};
pub use error::ClientError;
pub use veil_core::relay::v2::KeyConfig;
