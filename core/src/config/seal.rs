//! A route's `seal` action: which profile seals its bodies, with which options.

use std::sync::Arc;

use serde::Deserialize;

use super::{profile_options, ConfigError};
use crate::policy::json::{JsonOptions, JsonRules};
use crate::policy::moesif::{MoesifOptions, MoesifRules};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeal {
    profile: ProfileName,
    #[serde(default)]
    options: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Moesif,
    Json,
}

#[derive(Debug, Clone)]
pub enum SealProfile {
    Moesif(Arc<MoesifRules>),
    /// The `json` profile: include/exclude selectors over any JSON body.
    Json(Arc<JsonRules>),
}

/// Parses `routes[i].seal`: the profile and its options (`options_path` names them in errors).
pub(super) fn seal_profile(seal: RawSeal, options_path: &str) -> Result<SealProfile, ConfigError> {
    let profile = match seal.profile {
        ProfileName::Moesif => {
            let o: MoesifOptions = profile_options(seal.options, options_path)?;
            check_domains(&o, options_path)?;
            SealProfile::Moesif(Arc::new(MoesifRules::new(&o)))
        }
        ProfileName::Json => {
            let o: JsonOptions = profile_options(seal.options, options_path)?;
            let rules = JsonRules::new(&o).map_err(|e| {
                let at = match e.index {
                    Some(j) => format!("{options_path}.{}[{j}]", e.field),
                    None => format!("{options_path}.{}", e.field),
                };
                ConfigError::at(at, e.message)
            })?;
            SealProfile::Json(Arc::new(rules))
        }
    };
    Ok(profile)
}

/// `deterministic_domains` of the `moesif` profile, checked with the error's exact path.
fn check_domains(o: &MoesifOptions, options_path: &str) -> Result<(), ConfigError> {
    crate::policy::ValueShape::new(o.pad, &o.deterministic_domains)
        .map(|_| ())
        .map_err(|e| {
            ConfigError::at(
                format!("{options_path}.deterministic_domains.{}", e.domain),
                e.message,
            )
        })
}
