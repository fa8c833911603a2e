//! The filter's plugin configuration on arbitrary bytes. Properties: parsing never panics;
//! an accepted configuration has sane limits, routes longest prefix first, and its `Debug`
//! form (what a log line could show) never contains the bearer token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_core::config::FilterConfig;

const ENV_TOKEN: &str = "fuzz-env-token-0123456789";

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| (name == "VEIL_KEYSERVICE_TOKEN").then(|| ENV_TOKEN.to_string());
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
});
