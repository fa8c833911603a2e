//! Every seal option through real Envoy: one filter configuration per test with a route rule
//! per option under its own prefix (the demo Envoy config forwards any path to the vendor),
//! the fixtures posted to each, and for each forwarded body:
//! - every leaf sealed or readable exactly as a reference spec written here says (the spec
//!   is independent of `veil_core::policy`: it restates docs/policy-moesif.md and
//!   docs/configuration.md);
//! - no sealed plaintext anywhere in the forwarded body or headers, raw or JSON-escaped, nor
//!   in any log of the stack;
//! - unsealing with the keyservice's keys gives back the original bytes exactly.

use serde_json::{json, Value};
use veil_core::crypto::value::Mode::{self, Deterministic as D, Randomized as R};
use veil_core::crypto::value::SealedValue;
use veil_e2e::check::{assert_no_leak, check_document, post_and_check, unseal, Expect, Found};
use veil_e2e::{fixture, Stack, StackOptions};

use Expect::{Plain, Sealed, UriQuery};

// ---------------------------------------------------------------------------------------
// Stacks

fn moesif(prefix: &str, options: Value) -> Value {
    json!({"prefix": prefix, "seal": {"profile": "moesif", "options": options}})
}

fn json_rule(prefix: &str, options: Value) -> Value {
    json!({"prefix": prefix, "seal": {"profile": "json", "options": options}})
}

/// The demo configuration with these route rules. `/collector` (the demo's rule, with the
/// defaults) is routed by Envoy with the prefix stripped; every other prefix reaches the
/// upstream with the whole path.
fn stack(routes: Vec<Value>) -> Stack {
    let mut config = veil_e2e::demo_filter_config();
    config["routes"] = Value::Array(routes);
    Stack::start_with(StackOptions {
        filter_config: config,
        ..Default::default()
    })
}

fn is_sealed(v: &Value) -> bool {
    v.as_str().and_then(SealedValue::parse).is_some()
}

fn mode_of(v: &Value) -> Option<Mode> {
    v.as_str().and_then(SealedValue::parse).map(|s| s.mode)
}

fn body_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

fn parse(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

// ---------------------------------------------------------------------------------------
// The moesif profile as a reference spec (docs/policy-moesif.md)

/// RFC 3339 date or date-time, as the fixtures write them.
fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    let d = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    b.len() >= 10
        && d(0..4)
        && b[4] == b'-'
        && d(5..7)
        && b[7] == b'-'
        && d(8..10)
        && (b.len() == 10 || b[10] == b'T')
}

fn looks_like_graphql(s: &str) -> bool {
    let t = s.trim_start();
    [
        "query ",
        "query(",
        "mutation",
        "subscription",
        "fragment",
        "{",
    ]
    .iter()
    .any(|k| t.starts_with(k))
}

/// The `moesif` options, with the documented defaults.
#[derive(Clone)]
struct Spec {
    mode: Mode,
    boolean_mode: Mode,
    numerics: bool,
    dates: bool,
    booleans: bool,
    request_headers: bool,
    response_headers: bool,
    metadata: bool,
    request_headers_skip: &'static [&'static str],
    response_headers_skip: &'static [&'static str],
    request_body_skip: &'static [&'static str],
    response_body_skip: &'static [&'static str],
    metadata_skip: &'static [&'static str],
    graphql_query: bool,
    opaque_pass: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            mode: D,
            boolean_mode: R,
            numerics: true,
            dates: true,
            booleans: true,
            request_headers: true,
            response_headers: true,
            metadata: true,
            request_headers_skip: &[],
            response_headers_skip: &[],
            request_body_skip: &[],
            response_body_skip: &[],
            metadata_skip: &[],
            graphql_query: false,
            opaque_pass: false,
        }
    }
}

/// Is any member name in `segs` on the list (case-insensitive)?
fn skipped(list: &[&str], segs: &[&str]) -> bool {
    segs.iter()
        .any(|s| list.iter().any(|n| n.eq_ignore_ascii_case(s)))
}

impl Spec {
    /// A leaf in a sealed region: the type switches decide.
    fn typed(&self, leaf: &Value) -> Expect {
        match leaf {
            Value::String(s) if !self.dates && looks_like_date(s) => Plain,
            Value::String(_) => Sealed(self.mode),
            Value::Number(_) if self.numerics => Sealed(self.mode),
            Value::Bool(_) if self.booleans => Sealed(self.boolean_mode),
            _ => Plain,
        }
    }

    fn metadata(&self, rest: &[&str], leaf: &Value) -> Expect {
        if !self.metadata || skipped(self.metadata_skip, rest) {
            Plain
        } else {
            self.typed(leaf)
        }
    }

    /// `request` / `response` of an event (or an action's `request`); `rest` is the path
    /// below it.
    fn exchange(&self, request: bool, rest: &[&str], leaf: &Value, parent: &Value) -> Expect {
        match rest {
            ["time" | "transfer_encoding"] => Plain,
            ["verb" | "api_version"] if request => Plain,
            ["status"] if !request => Plain,
            ["uri"] if request && leaf.is_string() => UriQuery(self.mode),
            ["headers", name, ..] => {
                let (on, skip) = if request {
                    (self.request_headers, self.request_headers_skip)
                } else {
                    (self.response_headers, self.response_headers_skip)
                };
                if !on || skipped(skip, &[name]) {
                    Plain
                } else {
                    self.typed(leaf)
                }
            }
            ["body"] => {
                let base64 = parent["transfer_encoding"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case("base64"));
                if self.opaque_pass && base64 && leaf.is_string() {
                    Plain
                } else {
                    self.typed(leaf)
                }
            }
            ["body", tail @ ..] => {
                let skip = if request {
                    self.request_body_skip
                } else {
                    self.response_body_skip
                };
                let graphql = request
                    && !self.graphql_query
                    && tail == ["query"]
                    && leaf.as_str().is_some_and(looks_like_graphql);
                if skipped(skip, tail) || graphql {
                    Plain
                } else {
                    self.typed(leaf)
                }
            }
            _ => self.typed(leaf),
        }
    }

    fn event(&self, path: &str, leaf: &Value, parent: &Value) -> Expect {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["user_id" | "company_id" | "direction" | "weight" | "transaction_id"
            | "api_version"] => Plain,
            ["request", rest @ ..] => self.exchange(true, rest, leaf, parent),
            ["response", rest @ ..] => self.exchange(false, rest, leaf, parent),
            ["metadata", rest @ ..] => self.metadata(rest, leaf),
            _ => self.typed(leaf),
        }
    }

    fn action(&self, path: &str, leaf: &Value, parent: &Value) -> Expect {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["action_name" | "transaction_id" | "user_id" | "company_id"] => Plain,
            ["request", rest @ ..] => self.exchange(true, rest, leaf, parent),
            ["metadata", rest @ ..] => self.metadata(rest, leaf),
            _ => self.typed(leaf),
        }
    }

    fn user(&self, path: &str, leaf: &Value, _: &Value) -> Expect {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["user_id" | "company_id" | "modified_time" | "created"] => Plain,
            ["metadata", rest @ ..] => self.metadata(rest, leaf),
            _ => self.typed(leaf),
        }
    }

    fn company(&self, path: &str, leaf: &Value, _: &Value) -> Expect {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["company_id" | "modified_time" | "created"] => Plain,
            ["metadata", rest @ ..] => self.metadata(rest, leaf),
            _ => self.typed(leaf),
        }
    }

    fn subscription(&self, path: &str, leaf: &Value, _: &Value) -> Expect {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["subscription_id"
            | "company_id"
            | "status"
            | "current_period_start"
            | "current_period_end"
            | "start_date"
            | "created"] => Plain,
            ["items", "*", "item_price_id" | "plan_id" | "price_id" | "unit_of_measure" | "status"] => {
                Plain
            }
            ["items", "*", "metadata", rest @ ..] | ["metadata", rest @ ..] => {
                self.metadata(rest, leaf)
            }
            _ => self.typed(leaf),
        }
    }
}

/// The spec of one entity applied to each element of a batch (root array).
fn batch<'a>(
    f: impl Fn(&str, &Value, &Value) -> Expect + 'a,
) -> impl Fn(&str, &Value, &Value) -> Expect + 'a {
    move |p, l, par| f(p.strip_prefix("*.").unwrap_or(p), l, par)
}

/// Posts a fixture (or any body) to `<prefix><route>` and checks it against the spec;
/// `/collector` is stripped by Envoy, other prefixes are not.
fn check(
    stack: &Stack,
    prefix: &str,
    route: &str,
    body: &[u8],
    expect: &dyn Fn(&str, &Value, &Value) -> Expect,
    found: &mut Found,
) -> Value {
    let upstream = if prefix == "/collector" {
        route.to_string()
    } else {
        format!("{prefix}{route}")
    };
    let (rec, f) = post_and_check(stack, &format!("{prefix}{route}"), &upstream, body, expect);
    found.extend(f);
    parse(&rec.body)
}

fn event_spec(spec: &Spec) -> impl Fn(&str, &Value, &Value) -> Expect + '_ {
    |p, l, par| spec.event(p, l, par)
}

// ---------------------------------------------------------------------------------------
// moesif options

#[test]
fn type_switches_numerics_dates_booleans() {
    let stack = stack(vec![
        moesif("/collector", json!({})),
        moesif("/m/numerics-off", json!({"encrypt_numerics": false})),
        moesif("/m/dates-off", json!({"encrypt_dates": false})),
        moesif("/m/booleans-off", json!({"encrypt_booleans": false})),
    ]);
    let events = fixture("events-batch.json");
    let users = fixture("users-batch.json");
    let mut found = Found::default();
    let cases = [
        ("/collector", Spec::default()),
        (
            "/m/numerics-off",
            Spec {
                numerics: false,
                ..Spec::default()
            },
        ),
        (
            "/m/dates-off",
            Spec {
                dates: false,
                ..Spec::default()
            },
        ),
        (
            "/m/booleans-off",
            Spec {
                booleans: false,
                ..Spec::default()
            },
        ),
    ];
    for (prefix, spec) in &cases {
        let ev = check(
            &stack,
            prefix,
            "/v1/events/batch",
            &events,
            &batch(event_spec(spec)),
            &mut found,
        );
        let us = check(
            &stack,
            prefix,
            "/v1/users/batch",
            &users,
            &batch(|p, l, par| spec.user(p, l, par)),
            &mut found,
        );
        // Each switch moves exactly its own type (the spec above checks every leaf; these
        // say the fixtures really hold each type in a sealed region).
        let amount = &ev[0]["request"]["body"]["amount"];
        let consent = &ev[0]["request"]["body"]["consent"];
        let dob = &ev[0]["request"]["body"]["patient"]["dob"];
        let date_header = &ev[0]["response"]["headers"]["Date"];
        let seats = &us[0]["metadata"]["seats"];
        let vip = &us[0]["metadata"]["vip"];
        let trial_ends = &us[0]["metadata"]["trial_ends"];
        assert_eq!(is_sealed(amount), spec.numerics, "{prefix}: {amount}");
        assert_eq!(is_sealed(seats), spec.numerics, "{prefix}: {seats}");
        if !spec.numerics {
            assert_eq!(amount, &json!(327.21));
        }
        assert_eq!(is_sealed(consent), spec.booleans, "{prefix}: {consent}");
        assert_eq!(is_sealed(vip), spec.booleans, "{prefix}: {vip}");
        assert_eq!(is_sealed(dob), spec.dates, "{prefix}: {dob}");
        assert_eq!(is_sealed(trial_ends), spec.dates, "{prefix}: {trial_ends}");
        assert!(is_sealed(date_header), "an HTTP date is not RFC 3339");
        assert!(is_sealed(&ev[0]["request"]["body"]["patient"]["ssn"]));
    }
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

#[test]
fn header_and_metadata_switches() {
    let stack = stack(vec![
        moesif(
            "/m/req-headers-off",
            json!({"encrypt_request_headers": false}),
        ),
        moesif(
            "/m/resp-headers-off",
            json!({"encrypt_response_headers": false}),
        ),
        moesif("/m/metadata-off", json!({"encrypt_metadata": false})),
    ]);
    let event = fixture("event.json");
    let mut found = Found::default();

    let spec = Spec {
        request_headers: false,
        ..Spec::default()
    };
    let v = check(
        &stack,
        "/m/req-headers-off",
        "/v1/events",
        &event,
        &event_spec(&spec),
        &mut found,
    );
    assert_eq!(
        v["request"]["headers"]["Authorization"],
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abc"
    );
    assert!(is_sealed(&v["response"]["headers"]["Date"]));

    let spec = Spec {
        response_headers: false,
        ..Spec::default()
    };
    let v = check(
        &stack,
        "/m/resp-headers-off",
        "/v1/events",
        &event,
        &event_spec(&spec),
        &mut found,
    );
    assert!(is_sealed(&v["request"]["headers"]["Authorization"]));
    assert_eq!(
        v["response"]["headers"]["Date"],
        "Sun, 22 Nov 2026 10:00:00 GMT"
    );

    let spec = Spec {
        metadata: false,
        ..Spec::default()
    };
    let v = check(
        &stack,
        "/m/metadata-off",
        "/v1/events",
        &event,
        &event_spec(&spec),
        &mut found,
    );
    assert_eq!(v["metadata"]["plan"], "enterprise");
    assert!(is_sealed(&v["request"]["body"]["patient"]["ssn"]));
    let v = check(
        &stack,
        "/m/metadata-off",
        "/v1/users/batch",
        &fixture("users-batch.json"),
        &batch(|p, l, par| spec.user(p, l, par)),
        &mut found,
    );
    assert_eq!(v[0]["metadata"]["email"], "jane@example.com");
    assert!(is_sealed(&v[0]["ip_address"]));
    let v = check(
        &stack,
        "/m/metadata-off",
        "/v1/actions/batch",
        &fixture("actions-batch.json"),
        &batch(|p, l, par| spec.action(p, l, par)),
        &mut found,
    );
    assert_eq!(v[0]["metadata"]["mfa"], true);
    assert!(is_sealed(&v[0]["request"]["ip_address"]));
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

#[test]
fn skip_lists_are_case_insensitive_at_any_depth() {
    let stack = stack(vec![moesif(
        "/m/skips",
        json!({
            "request_headers_skip": ["USER-AGENT", "x-request-id"],
            "response_headers_skip": ["date"],
            "request_body_skip": ["Address", "DIAGNOSIS"],
            "response_body_skip": ["DATE"],
            "metadata_skip": ["PLAN", "tier"],
        }),
    )]);
    let spec = Spec {
        request_headers_skip: &["USER-AGENT", "x-request-id"],
        response_headers_skip: &["date"],
        request_body_skip: &["Address", "DIAGNOSIS"],
        response_body_skip: &["DATE"],
        metadata_skip: &["PLAN", "tier"],
        ..Spec::default()
    };
    // event.json, plus skip names deeper down, in arrays, and in the wrong region.
    let mut ev = parse(&fixture("event.json"));
    ev["request"]["body"]["plan"] = json!("request-body-plan-secret");
    ev["request"]["body"]["history"] =
        json!([{"address": {"line1": "1 Old Road, Springfield"}, "city": "Old Springfield"}]);
    ev["response"]["body"]["address"] = json!("response-body-address-secret");
    ev["response"]["headers"]["User-Agent"] = json!("response-user-agent-secret");
    ev["metadata"]["deploy"] =
        json!({"Tier": {"name": "gold-tier-name", "level": 3}, "zone": "us-west-2a-zone"});
    ev["metadata"]["history"] = json!([{"plan": "trial-plan-2025", "seats": 5}]);
    let mut found = Found::default();
    let v = check(
        &stack,
        "/m/skips",
        "/v1/events",
        &body_of(&ev),
        &event_spec(&spec),
        &mut found,
    );
    let (req, resp, meta) = (&v["request"], &v["response"], &v["metadata"]);
    // readable: the listed names, whatever their case, with everything under them
    assert_eq!(req["headers"]["User-Agent"], "acme-mobile/5.1 (iOS 17.2)");
    assert_eq!(
        req["headers"]["X-Request-Id"],
        "9f1c2b7e-1e2f-4c1a-9d0e-7a6b5c4d3e2f"
    );
    assert_eq!(resp["headers"]["Date"], "Sun, 22 Nov 2026 10:00:00 GMT");
    assert_eq!(
        req["body"]["patient"]["address"]["line1"],
        "1600 Pennsylvania Ave NW"
    );
    assert_eq!(
        req["body"]["history"][0]["address"]["line1"],
        "1 Old Road, Springfield"
    );
    assert_eq!(req["body"]["diagnosis"], json!(["E11.9", "I10"]));
    assert_eq!(resp["body"]["visits"][1]["date"], "2026-11-15");
    assert_eq!(meta["plan"], "enterprise");
    assert_eq!(meta["history"][0]["plan"], "trial-plan-2025");
    assert_eq!(meta["deploy"]["Tier"]["level"], 3);
    // sealed: everything else, including listed names outside their own region
    for sealed in [
        &req["headers"]["Authorization"],
        &resp["headers"]["X-Request-Id"],
        &resp["headers"]["User-Agent"],
        &req["body"]["plan"],
        &req["body"]["history"][0]["city"],
        &req["body"]["patient"]["ssn"],
        &resp["body"]["address"],
        &resp["body"]["visits"][1]["id"],
        &meta["deploy"]["zone"],
        &meta["history"][0]["seats"],
        &meta["region"],
    ] {
        assert!(is_sealed(sealed), "{sealed}");
    }
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

#[test]
fn graphql_query_and_modes() {
    let stack = stack(vec![
        moesif("/collector", json!({})),
        moesif("/m/graphql-on", json!({"encrypt_graphql_query": true})),
        moesif("/m/randomized", json!({"mode": "randomized"})),
        moesif("/m/bool-det", json!({"boolean_mode": "deterministic"})),
    ]);
    let mut found = Found::default();

    // encrypt_graphql_query
    let gql = fixture("event-graphql.json");
    let query = "query Patient($id: ID!) { patient(id: $id) { name ssn } }";
    let v = check(
        &stack,
        "/collector",
        "/v1/events",
        &gql,
        &event_spec(&Spec::default()),
        &mut found,
    );
    assert_eq!(v["request"]["body"]["query"], query);
    assert!(is_sealed(&v["request"]["body"]["variables"]["id"]));
    let on = Spec {
        graphql_query: true,
        ..Spec::default()
    };
    let v = check(
        &stack,
        "/m/graphql-on",
        "/v1/events",
        &gql,
        &event_spec(&on),
        &mut found,
    );
    assert!(is_sealed(&v["request"]["body"]["query"]));
    // A REST body's `query` that is no GraphQL document is sealed even by default.
    let rest = json!({"request": {"time": "2026-11-22T10:00:00Z",
        "body": {"query": "SELECT ssn FROM patients WHERE id = 7"}}});
    let v = check(
        &stack,
        "/collector",
        "/v1/events",
        &body_of(&rest),
        &event_spec(&Spec::default()),
        &mut found,
    );
    assert!(is_sealed(&v["request"]["body"]["query"]));

    // mode and boolean_mode: three events, the first two with equal values
    let ev = |ip: &str, flag: bool| {
        json!({"request": {"time": "2026-11-22T10:00:00Z", "ip_address": ip,
                "uri": "https://api.acme.com/x?email=jane%40example.com",
                "headers": {"User-Agent": "acme-mobile/5.1"},
                "body": {"consent": flag, "amount": 327.21}},
               "user_id": "u1"})
    };
    let doc = body_of(&json!([
        ev("203.0.113.7", false),
        ev("203.0.113.7", false),
        ev("203.0.113.8", true)
    ]));
    let cases = [
        ("/collector", Spec::default()),
        (
            "/m/randomized",
            Spec {
                mode: R,
                ..Spec::default()
            },
        ),
        (
            "/m/bool-det",
            Spec {
                boolean_mode: D,
                ..Spec::default()
            },
        ),
    ];
    let events = fixture("events-batch.json");
    for (prefix, spec) in &cases {
        let v = check(
            &stack,
            prefix,
            "/v1/events/batch",
            &doc,
            &batch(event_spec(spec)),
            &mut found,
        );
        let at = |i: usize, p: &[&str]| p.iter().fold(&v[i], |x, k| &x[*k]).clone();
        for p in [
            &["request", "ip_address"][..],
            &["request", "headers", "User-Agent"],
            &["request", "body", "amount"],
            &["request", "uri"],
        ] {
            let (a, b, c) = (at(0, p), at(1, p), at(2, p));
            if spec.mode == D {
                assert_eq!(a, b, "{prefix} {p:?}: equal plaintexts, equal ciphertexts");
            } else {
                assert_ne!(a, b, "{prefix} {p:?}: randomized");
            }
            if p[1] == "ip_address" {
                assert_ne!(a, c, "{prefix}: different plaintexts differ");
                assert_eq!(mode_of(&a), Some(spec.mode));
            }
        }
        let consent = |i: usize| at(i, &["request", "body", "consent"]);
        assert_eq!(mode_of(&consent(0)), Some(spec.boolean_mode), "{prefix}");
        if spec.boolean_mode == D {
            assert_eq!(consent(0), consent(1), "{prefix}: deterministic booleans");
            assert_ne!(consent(0), consent(2));
        } else {
            assert_ne!(consent(0), consent(1), "{prefix}: randomized booleans");
        }
        check(
            &stack,
            prefix,
            "/v1/events/batch",
            &events,
            &batch(event_spec(spec)),
            &mut found,
        );
    }
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

#[test]
fn opaque_bodies_encrypt_or_pass() {
    let stack = stack(vec![
        moesif("/collector", json!({})),
        moesif("/m/opaque-encrypt", json!({"opaque_bodies": "encrypt"})),
        moesif("/m/opaque-pass", json!({"opaque_bodies": "pass"})),
    ]);
    let fx = fixture("event-base64-body.json");
    let text = String::from_utf8_lossy(&fx);
    assert!(
        text.find("\"body\"") < text.find("\"transfer_encoding\""),
        "the fixture names transfer_encoding after body (the policy must look ahead)"
    );
    let original = parse(&fx);
    let mut found = Found::default();
    let pass = Spec {
        opaque_pass: true,
        ..Spec::default()
    };
    for (prefix, spec) in [
        ("/collector", Spec::default()),
        ("/m/opaque-encrypt", Spec::default()),
        ("/m/opaque-pass", pass.clone()),
    ] {
        let v = check(
            &stack,
            prefix,
            "/v1/events",
            &fx,
            &event_spec(&spec),
            &mut found,
        );
        for side in ["request", "response"] {
            if spec.opaque_pass {
                assert_eq!(v[side]["body"], original[side]["body"], "{prefix} {side}");
            } else {
                assert!(is_sealed(&v[side]["body"]), "{prefix} {side}");
            }
            assert_eq!(v[side]["transfer_encoding"], "base64");
        }
        assert!(is_sealed(&v["request"]["headers"]["Content-Type"]));
    }
    // `pass` is about base64 bodies only: JSON bodies, and string bodies without
    // `transfer_encoding: base64`, are still sealed.
    let v = check(
        &stack,
        "/m/opaque-pass",
        "/v1/events",
        &fixture("event.json"),
        &event_spec(&pass),
        &mut found,
    );
    assert!(is_sealed(&v["request"]["body"]["patient"]["ssn"]));
    let plain_string = json!({"request": {"time": "2026-11-22T10:00:00Z",
        "body": "name=Jane+Q.+Public&ssn=078-05-1120", "transfer_encoding": "json"}});
    let v = check(
        &stack,
        "/m/opaque-pass",
        "/v1/events",
        &body_of(&plain_string),
        &event_spec(&pass),
        &mut found,
    );
    assert!(is_sealed(&v["request"]["body"]));
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

#[test]
fn collector_routes_disabled_rule_and_lua_prefix() {
    let stack = stack(vec![
        moesif("/collector", json!({})),
        moesif("/m/disabled", json!({"enabled": false})),
    ]);
    let spec = Spec::default();
    let mut found = Found::default();

    // Moesif's Lua plugin prefix
    let v = check(
        &stack,
        "/collector",
        "/_moesif/api/v1/events/batch",
        &fixture("events-batch.json"),
        &batch(event_spec(&spec)),
        &mut found,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(20));
    // actions, users, companies, subscriptions
    let v = check(
        &stack,
        "/collector",
        "/v1/actions/batch",
        &fixture("actions-batch.json"),
        &batch(|p, l, par| spec.action(p, l, par)),
        &mut found,
    );
    assert_eq!(v[0]["action_name"], "Signed In");
    assert!(v[0]["request"]["uri"]
        .as_str()
        .unwrap()
        .starts_with("https://app.acme.com/login?email=%veil:v2:"));
    assert!(is_sealed(&v[0]["request"]["user_agent_string"]));
    assert!(is_sealed(&v[0]["metadata"]["mfa"]));
    check(
        &stack,
        "/collector",
        "/v1/users/batch",
        &fixture("users-batch.json"),
        &batch(|p, l, par| spec.user(p, l, par)),
        &mut found,
    );
    check(
        &stack,
        "/collector",
        "/v1/companies/batch",
        &fixture("companies-batch.json"),
        &batch(|p, l, par| spec.company(p, l, par)),
        &mut found,
    );
    let v = check(
        &stack,
        "/collector",
        "/v1/subscriptions/batch",
        &fixture("subscriptions-batch.json"),
        &batch(|p, l, par| spec.subscription(p, l, par)),
        &mut found,
    );
    assert_eq!(v[0]["items"][0]["plan_id"], "plan_gold");
    assert!(is_sealed(&v[0]["items"][0]["metadata"]["contract_ref"]));

    // enabled: false forwards every body byte for byte, known route or not
    for (route, name) in [
        ("/v1/events/batch", "events-batch.json"),
        ("/v1/events", "event-base64-body.json"),
        ("/v1/not-a-collector-route", "event.json"),
    ] {
        stack.clear_recorded();
        let body = fixture(name);
        let path = format!("/m/disabled{route}");
        let resp = stack.post_json(&path, &body);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let rec = stack.recorded();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].path, path);
        assert!(rec[0].body == body, "{path}: forwarded byte-identical");
    }
    assert!(stack.stat("wasmcustom.veil.seal.passthrough") >= 3);
    assert_no_leak(stack.all_logs().as_bytes(), &found, "logs");
}

// ---------------------------------------------------------------------------------------
// json profile

fn order() -> Value {
    json!({
        "id": "ord_1001",
        "created_at": "2026-11-22T10:00:00Z",
        "customer": {
            "name": "Jane Q. Public",
            "email": "jane@example.com",
            "contacts": [
                {"email": "jane.alt@example.com", "phone": "+1-202-555-0143"},
                {"email": "jq.public@example.org", "phone": null}
            ]
        },
        "items": [
            {"sku": "SKU-123", "qty": 2, "price": 19.99, "gift": true,
             "card": {"number": "4111111111111111", "last4": "1111", "exp": "2029-01"}},
            {"sku": "SKU-456", "qty": 1, "price": 5.5, "gift": false, "note": null,
             "card": {"number": "5500005555555559", "last4": "5559", "exp": "2030-12"}}
        ],
        "matrix": [
            [{"secret": "s3cr3t-a-1", "pub": "cell-a-1"}, {"secret": "s3cr3t-a-2", "pub": "cell-a-2"}],
            [{"secret": "s3cr3t-b-1", "pub": "cell-b-1", "deeper": [["s3cr3t-b-1-x"]]}]
        ],
        "odd key": "odd-value-xyz",
        "notes": "free text with details",
        "audit": {"created_at": "2026-11-22T10:00:01Z", "by": "system-user", "email": "audit@example.com"}
    })
}

/// A spec that seals exactly the listed paths (strings and numbers deterministic, booleans
/// randomized) and keeps everything else.
fn only(paths: &'static [&'static str]) -> impl Fn(&str, &Value, &Value) -> Expect {
    move |p, l, _| match (paths.contains(&p), l) {
        (false, _) => Plain,
        (true, Value::Bool(_)) => Sealed(R),
        (true, _) => Sealed(D),
    }
}

/// A spec that seals everything but the listed paths.
fn all_but(paths: &'static [&'static str]) -> impl Fn(&str, &Value, &Value) -> Expect {
    move |p, l, _| match (paths.contains(&p), l) {
        (true, _) => Plain,
        (false, Value::Bool(_)) => Sealed(R),
        (false, _) => Sealed(D),
    }
}

#[test]
fn json_profile_include_exclude_and_switches() {
    let stack = stack(vec![
        json_rule("/j/all", json!({})),
        json_rule(
            "/j/pii",
            json!({
                "include": ["$..email", "$.items[*].card", "$['odd key']", "$.matrix[*][*].secret",
                            "$.matrix.*.*.deeper"],
                "exclude": ["$.items[*].card.last4", "$.audit"],
            }),
        ),
        json_rule(
            "/j/allow",
            json!({"exclude": ["$.id", "$..created_at", "$.items[*].sku", "$.matrix[*][*]['pub']"]}),
        ),
        json_rule(
            "/j/switches",
            json!({"exclude": ["$.id"], "mode": "randomized", "boolean_mode": "deterministic",
                   "encrypt_numerics": false, "encrypt_dates": false}),
        ),
        json_rule("/j/bools-off", json!({"encrypt_booleans": false})),
    ]);
    let doc = body_of(&order());
    let mut found = Found::default();
    let mut post = |prefix: &str, body: &[u8], expect: &dyn Fn(&str, &Value, &Value) -> Expect| {
        let path = format!("{prefix}/v1/orders");
        let (rec, f) = post_and_check(&stack, &path, &path, body, expect);
        found.extend(f);
        parse(&rec.body)
    };

    // default include `$`: every non-null leaf
    post("/j/all", &doc, &all_but(&[]));
    // include/exclude: `..` at any depth (also inside arrays), [*] over arrays, nested
    // arrays, a bracketed name; exclude wins at and under its match
    let v = post(
        "/j/pii",
        &doc,
        &only(&[
            "customer.email",
            "customer.contacts.*.email",
            "items.*.card.number",
            "items.*.card.exp",
            "odd key",
            "matrix.*.*.secret",
            "matrix.*.*.deeper.*.*",
        ]),
    );
    assert_eq!(v["items"][1]["card"]["last4"], "5559");
    assert_eq!(v["audit"]["email"], "audit@example.com", "excluded subtree");
    assert_eq!(v["matrix"][1][0]["pub"], "cell-b-1");
    // exclude alone: an allowlist of readable fields
    post(
        "/j/allow",
        &doc,
        &all_but(&[
            "id",
            "created_at",
            "audit.created_at",
            "items.*.sku",
            "matrix.*.*.pub",
        ]),
    );
    // type switches
    let v = post("/j/switches", &doc, &|p, l, _| match l {
        _ if p == "id" => Plain,
        Value::Number(_) => Plain,
        Value::String(s) if looks_like_date(s) => Plain,
        Value::Bool(_) => Sealed(D),
        _ => Sealed(R),
    });
    assert_eq!(v["items"][0]["qty"], 2);
    assert_eq!(v["created_at"], "2026-11-22T10:00:00Z");
    assert!(
        is_sealed(&v["items"][0]["card"]["exp"]),
        "2029-01 is no date"
    );
    let v = post("/j/bools-off", &doc, &|_, l, _| match l {
        Value::Bool(_) => Plain,
        _ => Sealed(D),
    });
    assert_eq!(v["items"][0]["gift"], true);

    // Any document shape: a top-level array, a scalar
    let arr = body_of(
        &json!([{"email": "a.person@example.com", "n": 1}, [{"email": "b.person@example.com"}]]),
    );
    post("/j/pii", &arr, &only(&["*.email", "*.*.email"]));
    post("/j/all", b"\"just one secret string\"", &all_but(&[]));

    // Every method with a body is sealed; body-less requests pass; non-JSON is refused.
    for method in ["PUT", "PATCH", "DELETE"] {
        stack.clear_recorded();
        let resp = stack.send(
            method,
            "/j/all/v1/orders/1",
            &[("content-type", "application/json")],
            &doc,
        );
        assert_eq!(resp.status, 200, "{method}: {}", resp.text());
        let rec = stack.recorded();
        assert_eq!(rec[0].method, method);
        found.extend(check_document(
            &order(),
            &parse(&rec[0].body),
            &all_but(&[]),
        ));
        assert_eq!(unseal(&stack, &rec[0].body), doc, "{method}: round trip");
    }
    stack.clear_recorded();
    assert_eq!(
        stack.send("GET", "/j/all/v1/orders?id=1", &[], b"").status,
        200
    );
    let resp = stack.post_json("/j/all/v1/orders", b"name=Jane&ssn=078-05-1120");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.json()["code"], "bad-json");
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1, "only the GET reached the upstream");
    assert_eq!(rec[0].method, "GET");

    let all_logs = stack.all_logs();
    assert!(!all_logs.contains("078-05-1120"));
    assert_no_leak(all_logs.as_bytes(), &found, "logs");
}

#[test]
fn a_bad_selector_is_refused_by_envoy_naming_it() {
    let mut config = veil_e2e::demo_filter_config();
    config["routes"] = json!([
        {"prefix": "/collector", "seal": {"profile": "moesif"}},
        {"prefix": "/api", "seal": {"profile": "json",
            "options": {"include": ["$.a", "$..b", "$.item[]"]}}}
    ]);
    let err = Stack::try_start_with(StackOptions {
        filter_config: config,
        wait_for_keys: false,
        ..Default::default()
    })
    .err()
    .expect("Envoy must refuse the configuration");
    assert!(
        err.contains("routes[1].seal.options.include[2]: unexpected ']' at 7"),
        "Envoy's log names the selector:\n{err}"
    );
}
