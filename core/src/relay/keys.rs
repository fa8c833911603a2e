//! A pair's two AES-256-GCM keys, as the key schedule (docs/relay-protocol.md §2,
//! [`super::v2::key_schedule`]) gives them to the keyservice, the filter and the client.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// One pair's two AES-256-GCM keys: `c2s` seals requests, `s2c` derives each answer's key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PairKeys {
    pub c2s: [u8; 32],
    pub s2c: [u8; 32],
}

impl core::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PairKeys(<redacted>)")
    }
}
