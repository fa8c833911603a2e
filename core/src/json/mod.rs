//! JSON on the hot path: strict lexing, the streaming sealer and the unsealer.

pub mod scan;
pub mod seal;
pub mod unseal;

pub use scan::JsonError;
pub use seal::{
    seal_document, seal_document_with, Leaf, LeafAction, Memoized, Policy, Scratch, SealError,
    SealStats, ValueSealer,
};
pub use unseal::{unseal_document, KeyLookup, UnsealStats};
