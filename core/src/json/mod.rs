//! JSON on the hot path: strict lexing and the streaming sealer.

pub mod scan;
pub mod seal;

pub use scan::JsonError;
pub use seal::{seal_document, Leaf, LeafAction, Policy, Scratch, SealError, SealStats};
