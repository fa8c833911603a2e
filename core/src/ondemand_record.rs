//! The on-demand key record the filter keeps in Envoy shared data: keys fetched by kid,
//! kids known to be unknown, and which kids some worker is fetching right now (claims), so
//! that concurrent requests on all workers share one keyservice callout per kid.
//! Fuzzed (`fuzz/fuzz_targets/ondemand_record.rs`). Never logged: it holds data keys.

use serde::{Deserialize, Serialize};

use crate::keyservice_answer::{KeyEntry, KeysError};

/// Shared-data key of the record.
pub const SHARED_ONDEMAND: &str = "veil.keys.ondemand.v1";
/// Bounds of the record's lists (the oldest entries go first).
pub const SHARED_MAX_KEYS: usize = 64;
pub const SHARED_MAX_MARKS: usize = 128;

/// A kid with a deadline (unix ms): an unknown kid, or a claim on a fetch.
#[derive(Deserialize, Serialize, Clone, PartialEq, Eq, Debug)]
pub struct Mark {
    pub kid: String,
    pub until: i64,
}

/// The record. Every list is optional on the wire (an empty value is an empty record).
#[derive(Deserialize, Serialize, Default)]
pub struct OnDemandRecord {
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub unknown: Vec<Mark>,
    #[serde(default)]
    pub claims: Vec<Mark>,
}

impl OnDemandRecord {
    pub fn parse(bytes: &[u8]) -> Result<OnDemandRecord, KeysError> {
        if bytes.is_empty() {
            return Ok(OnDemandRecord::default());
        }
        serde_json::from_slice(bytes).map_err(|e| KeysError::Json(e.to_string()))
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Drops expired marks and keeps every list within its bound.
    pub fn prune(&mut self, now_ms: i64) {
        self.unknown.retain(|m| m.until > now_ms);
        self.claims.retain(|m| m.until > now_ms);
        let cut = |n: usize, max: usize| n.saturating_sub(max);
        self.keys.drain(..cut(self.keys.len(), SHARED_MAX_KEYS));
        self.unknown
            .drain(..cut(self.unknown.len(), SHARED_MAX_MARKS));
        self.claims
            .drain(..cut(self.claims.len(), SHARED_MAX_MARKS));
    }

    /// The live claim on `kid`, if any.
    pub fn claim_of(&self, kid: &str, now_ms: i64) -> Option<&Mark> {
        self.claims
            .iter()
            .find(|m| m.kid == kid && m.until > now_ms)
    }

    /// Whether the record resolves `kid` at `now_ms`: it holds its key or a live unknown mark.
    pub fn resolves(&self, kid: &str, now_ms: i64) -> bool {
        self.keys.iter().any(|e| e.kid == kid)
            || self
                .unknown
                .iter()
                .any(|m| m.kid == kid && m.until > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(kid: &str, until: i64) -> Mark {
        Mark {
            kid: kid.into(),
            until,
        }
    }

    #[test]
    fn empty_bytes_are_an_empty_record_and_lists_are_optional() {
        assert!(OnDemandRecord::parse(b"").unwrap().keys.is_empty());
        let r = OnDemandRecord::parse(br#"{"claims":[{"kid":"k","until":9}]}"#).unwrap();
        assert_eq!(r.claim_of("k", 8), Some(&mark("k", 9)));
        assert_eq!(r.claim_of("k", 9), None);
        assert!(OnDemandRecord::parse(b"{").is_err());
    }

    #[test]
    fn prune_drops_expired_and_keeps_bounds_newest_last() {
        let mut r = OnDemandRecord::default();
        for i in 0..(SHARED_MAX_MARKS as i64 + 10) {
            r.unknown.push(mark(&format!("k{i}"), 100 + i));
        }
        r.claims.push(mark("old", 5));
        r.prune(50);
        assert!(r.claims.is_empty());
        assert_eq!(r.unknown.len(), SHARED_MAX_MARKS);
        assert_eq!(r.unknown.first().unwrap().kid, "k10");
        let round = OnDemandRecord::parse(&r.to_vec()).unwrap();
        assert_eq!(round.unknown, r.unknown);
        assert!(round.resolves("k10", 50) && !round.resolves("k10", 1000));
    }
}
