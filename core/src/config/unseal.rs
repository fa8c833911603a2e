//! A route's `unseal` action (the management API): what happens to a value that does not
//! open, and the plaintext search rewrite with the seal rules it follows.

use std::sync::Arc;

use serde::Deserialize;

use super::routes::{RouteAction, RouteRule};
use super::seal::{ProfileName, SealProfile};
use super::{profile_options, ConfigError};
use crate::policy::moesif::{MoesifOptions, MoesifRules};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnseal {
    #[serde(default)]
    on_unseal_error: Option<OnUnsealError>,
    #[serde(default)]
    unknown_kid_cache_secs: Option<u64>,
    #[serde(default)]
    search: Option<RawSearch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSearch {
    #[serde(default)]
    seal_route: Option<String>,
    #[serde(default)]
    profile: Option<ProfileName>,
    #[serde(default)]
    options: serde_json::Value,
    #[serde(default)]
    default_from: Option<String>,
    #[serde(default)]
    max_epochs: Option<usize>,
}

/// What an unseal route does with a value it cannot open (fails to authenticate, or its kid
/// is unknown to the keyservice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnsealError {
    /// The value stays as it is (sealed); the response still arrives. Counted.
    #[default]
    Keep,
    /// The response becomes a `502 unseal-failed` problem.
    Reject,
}

pub const DEFAULT_UNKNOWN_KID_CACHE_SECS: u64 = 30;

/// The `unseal` action of a route.
#[derive(Debug, Clone)]
pub struct UnsealAction {
    pub on_error: OnUnsealError,
    /// How long a kid the keyservice does not know (404) is remembered as unknown.
    pub unknown_kid_cache_secs: u64,
    /// Plaintext search rewriting; `None` = search bodies pass untouched.
    pub search: Option<Arc<crate::search::SearchConfig>>,
}

/// An unseal route's `search.seal_route`, resolved once every route is parsed.
pub(super) struct PendingSearch {
    /// `routes[i].unseal.search.seal_route`, for errors.
    path: String,
    seal_route: String,
    default_from: String,
    max_epochs: usize,
}

/// Parses `routes[i].unseal` (`at` builds `routes[i].<field>` paths).
pub(super) fn unseal_action(
    raw: RawUnseal,
    at: &dyn Fn(&str) -> String,
) -> Result<(UnsealAction, Option<PendingSearch>), ConfigError> {
    let unknown_kid_cache_secs = raw
        .unknown_kid_cache_secs
        .unwrap_or(DEFAULT_UNKNOWN_KID_CACHE_SECS);
    if !(1..=3600).contains(&unknown_kid_cache_secs) {
        return Err(ConfigError::at(
            at("unseal.unknown_kid_cache_secs"),
            "must be from 1 to 3600",
        ));
    }
    let mut action = UnsealAction {
        on_error: raw.on_unseal_error.unwrap_or_default(),
        unknown_kid_cache_secs,
        search: None,
    };
    let Some(search) = raw.search else {
        return Ok((action, None));
    };
    let default_from = search
        .default_from
        .unwrap_or_else(|| crate::search::DEFAULT_FROM.to_string());
    if crate::calendar::parse_time(&default_from, 0).is_none() {
        return Err(ConfigError::at(
            at("unseal.search.default_from"),
            "not a time (RFC 3339, `now`, or relative like `-1y`, `-30d`)",
        ));
    }
    let max_epochs = search
        .max_epochs
        .unwrap_or(crate::search::DEFAULT_MAX_EPOCHS);
    if !(1..=crate::search::MAX_MAX_EPOCHS).contains(&max_epochs) {
        return Err(ConfigError::at(
            at("unseal.search.max_epochs"),
            format!("must be from 1 to {}", crate::search::MAX_MAX_EPOCHS),
        ));
    }
    if let Some(seal_route) = search.seal_route {
        if search.profile.is_some() || !search.options.is_null() {
            return Err(ConfigError::at(
                at("unseal.search"),
                "set either `seal_route` or `profile`/`options`, not both",
            ));
        }
        let pending = PendingSearch {
            path: at("unseal.search.seal_route"),
            seal_route,
            default_from,
            max_epochs,
        };
        return Ok((action, Some(pending)));
    }
    let rules = match search.profile.unwrap_or(ProfileName::Moesif) {
        ProfileName::Moesif => {
            let o: MoesifOptions = profile_options(search.options, &at("unseal.search.options"))?;
            Arc::new(MoesifRules::new(&o))
        }
        #[allow(unreachable_patterns)]
        _ => {
            return Err(ConfigError::at(
                at("unseal.search.profile"),
                "search rewriting supports the `moesif` profile only",
            ))
        }
    };
    action.search = Some(Arc::new(crate::search::SearchConfig {
        rules,
        default_from,
        max_epochs,
    }));
    Ok((action, None))
}

/// Gives each unseal route whose search names a `seal_route` that route's moesif rules.
pub(super) fn resolve_search_routes(
    routes: &mut [RouteRule],
    pending: Vec<(usize, PendingSearch)>,
) -> Result<(), ConfigError> {
    for (index, p) in pending {
        let wanted = p.seal_route.trim_end_matches('/');
        let rules = routes
            .iter()
            .find(|r| r.prefix.trim_end_matches('/') == wanted)
            .and_then(|r| match &r.action {
                RouteAction::Seal(SealProfile::Moesif(rules)) => Some(Arc::clone(rules)),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .ok_or_else(|| {
                ConfigError::at(
                    p.path.clone(),
                    format!(
                        "no route with prefix {:?} seals with the `moesif` profile",
                        p.seal_route
                    ),
                )
            })?;
        if let Some(RouteRule {
            action: RouteAction::Unseal(u),
            ..
        }) = routes.get_mut(index)
        {
            u.search = Some(Arc::new(crate::search::SearchConfig {
                rules,
                default_from: p.default_from,
                max_epochs: p.max_epochs,
            }));
        }
    }
    Ok(())
}
