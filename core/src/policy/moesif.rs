//! The `moesif` profile: Moesif's collector formats (events, users, companies, actions,
//! subscriptions, single and batch), with the Secure Proxy's options.
//!
//! Plaintext by default (so analytics still work): field names everywhere; `request.time`,
//! `response.time`, `request.verb`, `response.status`, `request.api_version`,
//! `transfer_encoding`, the scheme/host/path of `request.uri` and the query *keys*; event
//! `user_id`, `company_id`, `direction`, `weight`, `transaction_id`, `api_version`; ids and
//! timestamps of users, companies, actions and subscriptions. Everything else is sealed —
//! including fields this profile does not know, so a new vendor field is never forwarded in
//! plaintext by accident.

use std::sync::Arc;

use serde::Deserialize;

use super::{DomainsOption, ModeName, NameSet, TypeSwitches, ValueShape};
use crate::crypto::cipher::{Padding, Scope};
use crate::json::{Leaf, LeafAction, Policy};

/// How `transfer_encoding: "base64"` bodies (binary or non-JSON) are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OpaqueBodies {
    /// Sealed as one string value.
    #[default]
    Encrypt,
    /// Forwarded as they are.
    Pass,
}

/// The options of the `moesif` profile, with the Moesif Secure Proxy's names and meaning.
/// Every field has a default; see `docs/configuration.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoesifOptions {
    /// `false` forwards bodies untouched (the seed's `MOESIF_ENCRYPTION_ENABLED=false`).
    pub enabled: bool,
    pub mode: ModeName,
    pub boolean_mode: ModeName,
    pub encrypt_numerics: bool,
    pub encrypt_dates: bool,
    pub encrypt_booleans: bool,
    pub encrypt_request_headers: bool,
    pub encrypt_response_headers: bool,
    pub encrypt_metadata: bool,
    pub request_headers_skip: Vec<String>,
    pub response_headers_skip: Vec<String>,
    pub request_body_skip: Vec<String>,
    pub response_body_skip: Vec<String>,
    pub metadata_skip: Vec<String>,
    pub encrypt_graphql_query: bool,
    pub opaque_bodies: OpaqueBodies,
    /// Pad sealed values to length buckets (format v2). Default on.
    pub pad: bool,
    /// Named domains whose fields share deterministic ciphertexts (joinable); every other
    /// field's deterministic values are scoped to the field. Default none.
    pub deterministic_domains: DomainsOption,
}

impl Default for MoesifOptions {
    fn default() -> Self {
        MoesifOptions {
            enabled: true,
            mode: ModeName::Deterministic,
            boolean_mode: ModeName::Randomized,
            encrypt_numerics: true,
            encrypt_dates: true,
            encrypt_booleans: true,
            encrypt_request_headers: true,
            encrypt_response_headers: true,
            encrypt_metadata: true,
            request_headers_skip: Vec::new(),
            response_headers_skip: Vec::new(),
            request_body_skip: Vec::new(),
            response_body_skip: Vec::new(),
            metadata_skip: Vec::new(),
            encrypt_graphql_query: false,
            opaque_bodies: OpaqueBodies::Encrypt,
            pad: true,
            deterministic_domains: DomainsOption::new(),
        }
    }
}

/// What a collector route carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Event,
    User,
    Company,
    Action,
    Subscription,
    SubscriptionItem,
}

/// The document shape of a collector route: one entity or a batch (array) of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub entity: Entity,
    pub batch: bool,
}

impl Route {
    /// Maps a collector path (after any proxy prefix was stripped) to its shape. Accepts the
    /// `/_moesif/api` prefix of Moesif's Lua plugin and one trailing slash. None = not a
    /// route this profile seals.
    pub fn from_path(path: &str) -> Option<Route> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path = path.strip_prefix("/_moesif/api").unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let rest = path.strip_prefix("/v1/")?;
        let (name, batch) = match rest.strip_suffix("/batch") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let entity = match name {
            "events" => Entity::Event,
            "users" => Entity::User,
            "companies" => Entity::Company,
            "actions" => Entity::Action,
            "subscriptions" => Entity::Subscription,
            _ => return None,
        };
        Some(Route { entity, batch })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// A position in a Moesif document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Batch(Entity),
    Entity(Entity),
    /// An event's (or action's) `request` / `response` object.
    Exchange {
        side: Side,
        opaque: bool,
    },
    Headers(Side),
    Body {
        side: Side,
        top: bool,
        opaque: bool,
    },
    /// `request.body.query` of a GraphQL call.
    GraphqlQuery,
    Metadata,
    SubscriptionItems,
    Uri,
    /// A field listed as plaintext: a scalar stays readable; anything nested is sealed.
    PlainScalar,
    /// Everything below stays readable (a `*_skip` name, or a switched-off region).
    Plain,
    /// Everything below is sealed per the type switches.
    Sealed,
}

/// The `moesif` options compiled once at configuration time.
#[derive(Debug, Clone)]
pub struct MoesifRules {
    pub enabled: bool,
    switches: TypeSwitches,
    request_headers: bool,
    response_headers: bool,
    metadata: bool,
    request_headers_skip: NameSet,
    response_headers_skip: NameSet,
    request_body_skip: NameSet,
    response_body_skip: NameSet,
    metadata_skip: NameSet,
    graphql_query: bool,
    opaque_pass: bool,
    shape: ValueShape,
}

impl MoesifRules {
    pub fn new(o: &MoesifOptions) -> MoesifRules {
        MoesifRules {
            enabled: o.enabled,
            switches: TypeSwitches {
                mode: o.mode.into(),
                boolean_mode: o.boolean_mode.into(),
                numerics: o.encrypt_numerics,
                dates: o.encrypt_dates,
                booleans: o.encrypt_booleans,
            },
            request_headers: o.encrypt_request_headers,
            response_headers: o.encrypt_response_headers,
            metadata: o.encrypt_metadata,
            request_headers_skip: NameSet::new(&o.request_headers_skip),
            response_headers_skip: NameSet::new(&o.response_headers_skip),
            request_body_skip: NameSet::new(&o.request_body_skip),
            response_body_skip: NameSet::new(&o.response_body_skip),
            metadata_skip: NameSet::new(&o.metadata_skip),
            graphql_query: o.encrypt_graphql_query,
            opaque_pass: o.opaque_bodies == OpaqueBodies::Pass,
            shape: ValueShape::lenient(o.pad, &o.deterministic_domains),
        }
    }
}

/// The `moesif` policy for one request: its route shape plus the shared compiled rules.
#[derive(Debug, Clone)]
pub struct MoesifPolicy {
    route: Route,
    rules: Arc<MoesifRules>,
}

impl core::ops::Deref for MoesifPolicy {
    type Target = MoesifRules;
    fn deref(&self) -> &MoesifRules {
        &self.rules
    }
}

impl MoesifPolicy {
    pub fn new(route: Route, rules: Arc<MoesifRules>) -> MoesifPolicy {
        MoesifPolicy { route, rules }
    }

    pub fn route(&self) -> Route {
        self.route
    }

    fn metadata_node(&self) -> Node {
        if self.metadata {
            Node::Metadata
        } else {
            Node::Plain
        }
    }

    fn entity_field(&self, entity: Entity, key: &str) -> Node {
        match (entity, key) {
            (_, "metadata") => self.metadata_node(),
            (
                Entity::Event,
                "user_id" | "company_id" | "direction" | "weight" | "transaction_id"
                | "api_version",
            ) => Node::PlainScalar,
            (Entity::Event | Entity::Action, "request") => Node::Exchange {
                side: Side::Request,
                opaque: false,
            },
            (Entity::Event, "response") => Node::Exchange {
                side: Side::Response,
                opaque: false,
            },
            (Entity::User, "user_id" | "company_id" | "modified_time" | "created") => {
                Node::PlainScalar
            }
            (Entity::Company, "company_id" | "modified_time" | "created") => Node::PlainScalar,
            (Entity::Action, "action_name" | "transaction_id" | "user_id" | "company_id") => {
                Node::PlainScalar
            }
            (
                Entity::Subscription,
                "subscription_id"
                | "company_id"
                | "status"
                | "current_period_start"
                | "current_period_end"
                | "start_date"
                | "created",
            ) => Node::PlainScalar,
            (Entity::Subscription, "items") => Node::SubscriptionItems,
            (
                Entity::SubscriptionItem,
                "item_price_id" | "plan_id" | "price_id" | "unit_of_measure" | "status",
            ) => Node::PlainScalar,
            _ => Node::Sealed,
        }
    }

    fn exchange_field(&self, side: Side, opaque: bool, key: &str) -> Node {
        match (side, key) {
            (_, "time" | "transfer_encoding") => Node::PlainScalar,
            (Side::Request, "verb" | "api_version") => Node::PlainScalar,
            (Side::Response, "status") => Node::PlainScalar,
            (Side::Request, "uri") => Node::Uri,
            (Side::Request, "headers") if self.request_headers => Node::Headers(side),
            (Side::Response, "headers") if self.response_headers => Node::Headers(side),
            (_, "headers") => Node::Plain,
            (_, "body") => Node::Body {
                side,
                top: true,
                opaque,
            },
            _ => Node::Sealed,
        }
    }

    fn body_field(&self, side: Side, top: bool, key: &str) -> Node {
        let skip = match side {
            Side::Request => &self.request_body_skip,
            Side::Response => &self.response_body_skip,
        };
        if skip.contains(key) {
            Node::Plain
        } else if top && side == Side::Request && key == "query" && !self.graphql_query {
            Node::GraphqlQuery
        } else {
            Node::Body {
                side,
                top: false,
                opaque: false,
            }
        }
    }
}

/// Only a string that parses as a GraphQL executable document stays readable under
/// `encrypt_graphql_query: false`; a REST body's `query` field holding anything else is
/// sealed (a prefix check kept `"query jane@example.com"` readable).
fn looks_like_graphql(s: &str) -> bool {
    super::graphql::is_executable_document(s)
}

impl Policy for MoesifPolicy {
    type Node = Node;

    fn root(&self) -> Node {
        if self.route.batch {
            Node::Batch(self.route.entity)
        } else {
            Node::Entity(self.route.entity)
        }
    }

    fn field(&self, parent: Node, key: &str) -> Node {
        match parent {
            Node::Batch(e) | Node::Entity(e) => self.entity_field(e, key),
            Node::Exchange { side, opaque } => self.exchange_field(side, opaque, key),
            Node::Headers(side) => {
                let skip = match side {
                    Side::Request => &self.request_headers_skip,
                    Side::Response => &self.response_headers_skip,
                };
                if skip.contains(key) {
                    Node::Plain
                } else {
                    Node::Sealed
                }
            }
            Node::Body { side, top, .. } => self.body_field(side, top, key),
            Node::GraphqlQuery => Node::Body {
                side: Side::Request,
                top: false,
                opaque: false,
            },
            Node::Metadata => {
                if self.metadata_skip.contains(key) {
                    Node::Plain
                } else {
                    Node::Metadata
                }
            }
            Node::Plain => Node::Plain,
            Node::SubscriptionItems => Node::Entity(Entity::SubscriptionItem),
            Node::Uri | Node::PlainScalar | Node::Sealed => Node::Sealed,
        }
    }

    fn element(&self, parent: Node) -> Node {
        match parent {
            Node::Batch(e) | Node::Entity(e) => Node::Entity(e),
            Node::SubscriptionItems => Node::Entity(Entity::SubscriptionItem),
            Node::Body { side, .. } => Node::Body {
                side,
                top: false,
                opaque: false,
            },
            Node::GraphqlQuery => Node::Body {
                side: Side::Request,
                top: false,
                opaque: false,
            },
            Node::Metadata => Node::Metadata,
            Node::Plain => Node::Plain,
            Node::Exchange { .. }
            | Node::Headers(_)
            | Node::Uri
            | Node::PlainScalar
            | Node::Sealed => Node::Sealed,
        }
    }

    #[inline]
    fn leaf(&self, node: Node, leaf: Leaf<'_>) -> LeafAction {
        match node {
            Node::Plain | Node::PlainScalar => LeafAction::Keep,
            Node::Uri => match leaf {
                Leaf::Str(_) => LeafAction::SealUriQuery(self.switches.mode),
                other => self.switches.seal(other),
            },
            Node::Body { opaque: true, .. } if self.opaque_pass => LeafAction::Keep,
            Node::GraphqlQuery => match leaf {
                Leaf::Str(s) if looks_like_graphql(s) => LeafAction::Keep,
                other => self.switches.seal(other),
            },
            _ => self.switches.seal(leaf),
        }
    }

    fn lookahead(&self, node: Node) -> Option<&'static str> {
        match node {
            Node::Exchange { .. } if self.opaque_pass => Some("transfer_encoding"),
            _ => None,
        }
    }

    fn with_lookahead(&self, node: Node, value: Option<&str>) -> Node {
        match node {
            Node::Exchange { side, .. } => Node::Exchange {
                side,
                opaque: value.is_some_and(|v| v.eq_ignore_ascii_case("base64")),
            },
            other => other,
        }
    }

    /// HTTP header names are case-insensitive.
    fn fold_case(&self, parent: Node) -> bool {
        matches!(parent, Node::Headers(_))
    }

    fn domain(&self, path: &str) -> Option<Scope> {
        self.shape.domain(path)
    }

    fn padding(&self) -> Padding {
        self.shape.padding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lone surrogate has no UTF-8 form, so a string holding one cannot be sealed or
    /// matched faithfully: refused wherever the walker reads it — a sealed value, a readable
    /// field's value, a field name.
    #[test]
    fn lone_surrogates_are_refused() {
        use crate::crypto::cipher::SealingKey;
        use crate::crypto::keys::{Dek, Kid};
        use crate::json::{seal_document, JsonError, Scratch, SealError};
        let key = SealingKey::new(
            "r1.2026-01".parse::<Kid>().unwrap(),
            &Dek::from_bytes([3; 32]),
        );
        let policy = MoesifPolicy::new(
            Route::from_path("/v1/events").unwrap(),
            Arc::new(MoesifRules::new(&MoesifOptions::default())),
        );
        for body in [
            r#"{"request":{"body":{"a":"x\ud800"}}}"#,
            r#"{"direction":"\ud800","request":{"body":{"a":"x"}}}"#,
            r#"{"request":{"body":{"\udc00":1}}}"#,
        ] {
            let mut out = Vec::new();
            let r = seal_document(
                body.as_bytes(),
                &policy,
                &key,
                128,
                &mut Scratch::default(),
                &mut out,
            );
            assert!(
                matches!(r, Err(SealError::Json(JsonError::Surrogate { .. }))),
                "{body}: {r:?}"
            );
        }
    }

    /// Issue #18: one address in `request.body.email` and `response.body.owner` sealed to
    /// one ciphertext. Sealed by the walker, each field now has its own; header names are
    /// case-insensitive; a named domain joins fields again; everything opens.
    #[test]
    fn the_walker_scopes_values_by_field_path() {
        use crate::crypto::cipher::SealingKey;
        use crate::crypto::keys::{Dek, Kid};
        use crate::json::{seal_document, unseal_document, Scratch};
        let key = SealingKey::new(
            "r1.2026-01".parse::<Kid>().unwrap(),
            &Dek::from_bytes([3; 32]),
        );
        let seal = |options: serde_json::Value, body: &str| -> serde_json::Value {
            let o: MoesifOptions = serde_json::from_value(options).unwrap();
            let policy = MoesifPolicy::new(
                Route::from_path("/v1/events/batch").unwrap(),
                Arc::new(MoesifRules::new(&o)),
            );
            let mut out = Vec::new();
            seal_document(
                body.as_bytes(),
                &policy,
                &key,
                64,
                &mut Scratch::default(),
                &mut out,
            )
            .unwrap();
            let mut back = Vec::new();
            let stats = unseal_document(
                &out,
                &vec![SealingKey::new(key.kid(), &Dek::from_bytes([3; 32]))],
                64,
                &mut back,
            )
            .unwrap();
            assert_eq!(stats.failed + stats.unknown_kid, 0);
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&back).unwrap(),
                serde_json::from_str::<serde_json::Value>(body).unwrap()
            );
            serde_json::from_slice(&out).unwrap()
        };
        let body = r#"[
            {"request":{"headers":{"X-Owner":"jane@example.com"},"body":{"email":"jane@example.com","items":[{"e":"jane@example.com"},{"e":"jane@example.com"}]}},
             "response":{"headers":{"x-owner":"jane@example.com"},"body":{"owner":"jane@example.com"}}},
            {"request":{"body":{"email":"jane@example.com"}}}
        ]"#;
        let v = seal(serde_json::json!({}), body);
        let req_email = &v[0]["request"]["body"]["email"];
        assert_ne!(req_email, &v[0]["response"]["body"]["owner"]);
        assert_ne!(req_email, &v[0]["request"]["headers"]["X-Owner"]);
        // Same field in another event, and array elements: one scope.
        assert_eq!(req_email, &v[1]["request"]["body"]["email"]);
        assert_eq!(
            v[0]["request"]["body"]["items"][0]["e"],
            v[0]["request"]["body"]["items"][1]["e"]
        );
        // The tag is the field path's, header names lower-cased.
        let tag =
            |x: &serde_json::Value| x.as_str().unwrap().split(':').nth(4).unwrap().to_string();
        assert_eq!(tag(req_email), Scope::field("request.body.email").as_str());
        assert_eq!(
            tag(&v[0]["request"]["headers"]["X-Owner"]),
            Scope::field("request.headers.x-owner").as_str()
        );
        assert_eq!(
            tag(&v[0]["request"]["body"]["items"][0]["e"]),
            Scope::field("request.body.items.e").as_str()
        );
        // A named domain joins the fields it lists.
        let v = seal(
            serde_json::json!({"deterministic_domains": {"email": ["request.body.email", "response.body.owner"]}}),
            body,
        );
        assert_eq!(
            v[0]["request"]["body"]["email"],
            v[0]["response"]["body"]["owner"]
        );
        assert_ne!(
            v[0]["request"]["body"]["email"],
            v[0]["request"]["body"]["items"][0]["e"]
        );
    }

    #[test]
    fn routes() {
        let r = |p| Route::from_path(p);
        assert_eq!(
            r("/v1/events"),
            Some(Route {
                entity: Entity::Event,
                batch: false
            })
        );
        assert_eq!(
            r("/_moesif/api/v1/events/batch"),
            Some(Route {
                entity: Entity::Event,
                batch: true
            })
        );
        assert_eq!(
            r("/v1/users/batch/"),
            Some(Route {
                entity: Entity::User,
                batch: true
            })
        );
        assert_eq!(
            r("/v1/subscriptions?x=1").map(|r| r.entity),
            Some(Entity::Subscription)
        );
        assert_eq!(r("/v1/config"), None);
        assert_eq!(r("/v1/rules"), None);
        assert_eq!(r("/v2/events"), None);
        assert_eq!(r("/v1/eventsbatch"), None);
    }

    #[test]
    fn graphql_detection() {
        assert!(looks_like_graphql("query Patient($id: ID!) { x }"));
        assert!(looks_like_graphql("  { patient { name } }"));
        assert!(looks_like_graphql("mutation{a}"));
        assert!(!looks_like_graphql("queryset=1"));
        assert!(!looks_like_graphql("SELECT ssn FROM patients"));
        assert!(!looks_like_graphql("jane@example.com"));
        // Issue #18: the prefix heuristic took these for GraphQL and left them readable.
        assert!(!looks_like_graphql("query jane@example.com"));
        assert!(!looks_like_graphql("query(email: jane@example.com"));
        assert!(!looks_like_graphql("{ \"email\": \"jane@example.com\" }"));
        assert!(!looks_like_graphql("mutation: ssn 078-05-1120"));
    }
}
