//! Structured logs with `tracing`: `VEIL_LOG` (an EnvFilter directive, default `info`) and
//! `VEIL_LOG_FORMAT` (`json`, the default, or `text`).
//!
//! Nothing in this crate logs key material, tokens, the Authorization header or bodies, at any
//! level; the HTTP stack underneath (hyper) does not log at all.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogConfig, LogFormat, ENV_LOG};

/// Target of the few start-up lines that are always shown (listening address, the local
/// provider's warning), whatever `VEIL_LOG` says.
pub const ANNOUNCE_TARGET: &str = "veil_keyservice::announce";

/// Validates the filter directive; the error names `VEIL_LOG`.
pub fn filter(cfg: &LogConfig) -> Result<EnvFilter, ConfigError> {
    let directive = format!("{},{ANNOUNCE_TARGET}=info", cfg.filter);
    EnvFilter::builder().parse(&directive).map_err(|e| {
        ConfigError::new(
            ENV_LOG,
            format!("{:?} is not a valid filter: {e}", cfg.filter),
        )
    })
}

/// Installs the global subscriber writing to `writer`.
pub fn init<W>(cfg: &LogConfig, writer: W) -> Result<(), ConfigError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter(cfg)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let result = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // Already installed (only possible in tests): keep the first one.
    let _ = result;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_names_the_variable() {
        let cfg = LogConfig {
            filter: "info,[[[".into(),
            format: LogFormat::Json,
        };
        let e = filter(&cfg).unwrap_err();
        assert_eq!(e.what, ENV_LOG);
        let ok = LogConfig {
            filter: "debug,hyper=warn".into(),
            format: LogFormat::Text,
        };
        assert!(filter(&ok).is_ok());
    }
}
