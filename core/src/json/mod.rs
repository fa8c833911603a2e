//! JSON on the hot path: strict lexing, the one structural walker, and its visitors: the
//! streaming sealer and the unsealer (the search tree builder is one too).

pub mod scan;
pub mod seal;
pub mod unseal;
pub mod walk;

pub use scan::JsonError;
pub use seal::{
    seal_document, seal_document_with, Leaf, LeafAction, Memoized, Policy, Scratch, SealError,
    SealStats, ValueSealer,
};
pub use unseal::{unseal_document, KeyLookup, UnsealStats};
