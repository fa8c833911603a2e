//! The `routes` section: path prefixes (longest first, on segment boundaries) and the one
//! action of each, `seal` or `unseal`.

use serde::Deserialize;

use super::seal::{seal_profile, RawSeal, SealProfile};
use super::unseal::{resolve_search_routes, unseal_action, PendingSearch, RawUnseal, UnsealAction};
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    prefix: String,
    #[serde(default)]
    seal: Option<RawSeal>,
    #[serde(default)]
    unseal: Option<RawUnseal>,
}

/// What a route does to bodies under its prefix.
#[derive(Debug, Clone)]
pub enum RouteAction {
    Seal(SealProfile),
    /// The management-API path: responses are unsealed, searches rewritten.
    Unseal(UnsealAction),
}

#[derive(Debug, Clone)]
pub struct RouteRule {
    /// Path prefix, matched on segment boundaries (`/collector` matches `/collector/v1/x`,
    /// not `/collectors`).
    pub prefix: String,
    pub action: RouteAction,
}

impl RouteRule {
    /// The rest of `path` after this rule's prefix (always starting with `/`), if it matches.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = self.prefix.trim_end_matches('/');
        let rest = path.strip_prefix(prefix)?;
        if rest.is_empty() {
            Some("/")
        } else if rest.starts_with(['/', '?']) {
            Some(rest)
        } else {
            None
        }
    }
}

/// Parses and validates `routes`, longest prefix first.
pub(super) fn route_rules(raw: Vec<RawRoute>) -> Result<Vec<RouteRule>, ConfigError> {
    let mut routes = Vec::with_capacity(raw.len());
    let mut pending_search: Vec<(usize, PendingSearch)> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        if !r.prefix.starts_with('/') {
            return Err(ConfigError::at(at("prefix"), "must start with '/'"));
        }
        if r.prefix.contains(['?', '#', '*']) {
            return Err(ConfigError::at(
                at("prefix"),
                "must be a plain path prefix (no '?', '#' or '*')",
            ));
        }
        if routes
            .iter()
            .any(|x: &RouteRule| x.prefix.trim_end_matches('/') == r.prefix.trim_end_matches('/'))
        {
            return Err(ConfigError::at(
                at("prefix"),
                format!("duplicate prefix {:?}", r.prefix),
            ));
        }
        let action = match (r.seal, r.unseal) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    format!("routes[{i}]"),
                    "a route has one action: `seal` or `unseal`, not both",
                ))
            }
            (None, Some(unseal)) => {
                let (action, search_route) = unseal_action(unseal, &at)?;
                if let Some(pending) = search_route {
                    pending_search.push((routes.len(), pending));
                }
                RouteAction::Unseal(action)
            }
            (Some(seal), None) => RouteAction::Seal(seal_profile(seal, &at("seal.options"))?),
            (None, None) => {
                return Err(ConfigError::at(
                    format!("routes[{i}]"),
                    "a route needs an action: `seal` or `unseal`",
                ))
            }
        };
        routes.push(RouteRule {
            prefix: r.prefix,
            action,
        });
    }
    resolve_search_routes(&mut routes, pending_search)?;
    routes.sort_by_key(|r| core::cmp::Reverse(r.prefix.trim_end_matches('/').len()));
    Ok(routes)
}
