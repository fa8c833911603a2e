//! The filter's plugin configuration on arbitrary bytes. Properties: parsing never panics;
//! an accepted configuration has sane limits, routes longest prefix first, and its `Debug`
//! form (what a log line could show) never contains the bearer token; an accepted `relay`
//! section has its limits in range, a prefix without trailing `/`, and `Debug` never shows
//! its client id secret (it prints only as redacted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::config::FilterConfig;

const ENV_TOKEN: &str = "fuzz-env-token-0123456789";
const ENV_RELAY_SECRET: &str = "fuzz-env-relay-secret-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| match name {
        "VEIL_KEYSERVICE_TOKEN" => Some(ENV_TOKEN.to_string()),
        "VEIL_RELAY_CLIENT_ID_SECRET" => Some(ENV_RELAY_SECRET.to_string()),
        _ => None,
    };
    let Ok(cfg) = FilterConfig::parse(data, &env) else {
        return;
    };
    assert!((1..=1024).contains(&cfg.max_depth));
    assert!(cfg.max_body_bytes > 0);
    assert!(
        cfg.routes
            .windows(2)
            .all(|w| w[0].prefix.len() >= w[1].prefix.len()),
        "routes not longest prefix first"
    );
    let token = &cfg.keyservice.token;
    assert!(!token.is_empty(), "accepted an empty token");
    let shown = format!("{cfg:?}");
    if token.len() >= 4 {
        assert!(!shown.contains(token.as_str()), "Debug shows the token");
    }
    if let Some(relay) = &cfg.relay {
        assert!((1..=16).contains(&relay.max_pairs));
        assert!((1..=128).contains(&relay.replay.window));
        assert!(relay.max_body_bytes > 0 && relay.pair_cache_slots > 0);
        assert!(relay.prefix.starts_with('/') && !relay.prefix.ends_with('/'));
        assert!(
            !shown.contains(ENV_RELAY_SECRET),
            "Debug shows the relay secret"
        );
        assert!(
            shown.contains("client_id_secret: ClientIdSecret(<redacted>)"),
            "Debug does not redact the relay secret"
        );
    }
});
