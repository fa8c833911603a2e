//! Which fields of a search are sealed, and how: asked of the seal policy itself, by walking
//! the field's path exactly as the collector's sealer walks a document, so the search and
//! the collector can never disagree.

use crate::crypto::cipher::{Padding, Scope};
use crate::json::{Leaf, LeafAction, Policy};
use crate::policy::moesif::{Entity, MoesifPolicy, MoesifRules, Route};

/// What the seal policy does with a value at a field path (`["request","body","email"]`).
pub trait FieldPolicy {
    fn action(&self, field: &[&str], leaf: Leaf<'_>) -> LeafAction;
    /// The scope and padding a deterministic value at `field` is sealed with (format v2),
    /// exactly as the collector's sealer computes them.
    fn shape(&self, field: &[&str]) -> (Scope, Padding);
}

/// The `moesif` policy seen from a search over events: a field path is walked from the
/// event root exactly as the collector's sealer walks a document.
pub struct MoesifEvents(MoesifPolicy);

impl MoesifEvents {
    pub fn new(rules: std::sync::Arc<MoesifRules>) -> MoesifEvents {
        MoesifEvents::for_entity(Entity::Event, rules)
    }

    /// The policy seen from a search over `entity` (users and companies searches name
    /// fields from the user / company root, `metadata.email`).
    pub fn for_entity(entity: Entity, rules: std::sync::Arc<MoesifRules>) -> MoesifEvents {
        MoesifEvents(MoesifPolicy::new(
            Route {
                entity,
                batch: false,
            },
            rules,
        ))
    }
}

impl FieldPolicy for MoesifEvents {
    fn action(&self, field: &[&str], leaf: Leaf<'_>) -> LeafAction {
        let p = &self.0;
        let node = field.iter().fold(p.root(), |n, seg| p.field(n, seg));
        p.leaf(node, leaf)
    }

    fn shape(&self, field: &[&str]) -> (Scope, Padding) {
        let p = &self.0;
        let mut path = String::new();
        let mut node = p.root();
        for seg in field {
            if !path.is_empty() {
                path.push('.');
            }
            if p.fold_case(node) {
                path.push_str(&seg.to_ascii_lowercase());
            } else {
                path.push_str(seg);
            }
            node = p.field(node, seg);
        }
        (p.scope(&path), p.padding())
    }
}
