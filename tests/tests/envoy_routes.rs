//! No shipped or demo Envoy configuration has a route that carries a request to the vendor
//! without a Veil rule for its prefix (issue #18: a Moesif SDK whose `baseUri` lacked
//! `/collector` sent `POST /v1/events/batch`, a bearer token in it, through the demo's
//! catch-all route to the vendor unsealed). Read from the files themselves; no Envoy runs.

use std::fs;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (prefix, cluster or None for a direct response) of every route in an Envoy YAML file.
fn routes(yaml: &str) -> Vec<(String, Option<String>)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix("- match: { prefix: \"") else {
            continue;
        };
        let prefix = rest.split('"').next().unwrap().to_string();
        // The action follows within a few lines: `route: { cluster: x … }`, a `route:` block
        // with `cluster: x`, or `direct_response`.
        let mut cluster = None;
        for next in lines.iter().skip(i + 1).take(4) {
            let n = next.trim();
            if n.starts_with("- match:") {
                break;
            }
            if n.starts_with("direct_response") {
                break;
            }
            if let Some(at) = n.find("cluster: ") {
                let c = &n[at + "cluster: ".len()..];
                let c: String = c
                    .chars()
                    .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                    .collect();
                cluster = Some(c);
                break;
            }
        }
        out.push((prefix, cluster));
    }
    out
}

/// Is `prefix` (an Envoy route prefix) covered by one of the filter's rule prefixes or relay
/// routes (`/app/*`)?
fn covered(prefix: &str, rules: &[String]) -> bool {
    let p = prefix.trim_end_matches('/');
    !p.is_empty()
        && rules.iter().any(|r| {
            let r = r.trim_end_matches('*').trim_end_matches('/');
            !r.is_empty() && (p == r || p.starts_with(&format!("{r}/")))
        })
}

fn rule_prefixes(filter_config: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = filter_config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap().to_string())
        .collect();
    for r in filter_config["relay"]["routes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(r.as_str().unwrap().to_string());
    }
    out
}

fn check(file: &str, vendor_clusters: &[&str], rules: &[String]) {
    let yaml = fs::read_to_string(root().join(file)).unwrap();
    let rs = routes(&yaml);
    assert!(!rs.is_empty(), "{file}: no routes found");
    for (prefix, cluster) in &rs {
        if let Some(c) = cluster {
            if vendor_clusters.contains(&c.as_str()) {
                assert!(
                    covered(prefix, rules),
                    "{file}: route {prefix:?} carries requests to the vendor ({c}) without a Veil rule (rules: {rules:?})"
                );
            }
        }
    }
}

#[test]
fn the_demo_routes_nothing_to_the_vendor_without_a_rule() {
    let cfg: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(root().join("envoy/veil-demo.filter.json")).unwrap(),
    )
    .unwrap();
    let rules = rule_prefixes(&cfg);
    check("envoy/veil-demo.yaml", &["vendor"], &rules);
    check("compose/envoy-wasm.yaml", &["vendor"], &rules);
    check("compose/envoy-native.yaml", &["vendor"], &rules);
    // The catch-all is still there, as a 404 that never reaches an upstream.
    let yaml = fs::read_to_string(root().join("envoy/veil-demo.yaml")).unwrap();
    assert!(routes(&yaml).contains(&("/".to_string(), None)));
}

#[test]
fn the_shipped_seal_config_routes_nothing_to_the_vendor_without_a_rule() {
    let yaml = fs::read_to_string(root().join("envoy/veil-seal.yaml")).unwrap();
    // Its filter configuration is inline (`value: |`): the rule prefixes as written there.
    let rules: Vec<String> = yaml
        .match_indices("\"prefix\": \"")
        .map(|(at, m)| yaml[at + m.len()..].split('"').next().unwrap().to_string())
        .collect();
    assert!(rules.contains(&"/collector".to_string()), "{rules:?}");
    check(
        "envoy/veil-seal.yaml",
        &["moesif_collector", "moesif_api"],
        &rules,
    );
}

#[test]
fn the_check_catches_a_catch_all() {
    let rules = vec!["/collector".to_string()];
    assert!(covered("/collector/", &rules));
    assert!(!covered("/", &rules));
    assert!(!covered("/collectorx", &rules));
    assert!(covered("/app/", &["/app/*".to_string()]));
    let rs = routes(
        "              - match: { prefix: \"/\" }\n                route: { cluster: vendor, timeout: 30s }\n",
    );
    assert_eq!(rs, vec![("/".to_string(), Some("vendor".to_string()))]);
}
