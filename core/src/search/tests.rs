//! The search module's tests, through its public API: time ranges, endpoints, and the
//! rewriter on whole bodies.

use super::*;
use crate::crypto::cipher::{Padding, Scope, Spec, ValueType};
use crate::crypto::keys::Dek;
use crate::crypto::value::Mode;
use crate::json::unseal_document;
use crate::policy::moesif::MoesifOptions;
use std::sync::Arc;

const NOW: i64 = 1_795_000_000; // 2026-11-18T09:46:40Z

#[test]
fn query_params_are_percent_decoded() {
    let p = "/search/~/search/events?x=1&from=2026-01-01T00%3A00%3A00%2B01%3A00&to=now";
    assert_eq!(
        query_param(p, "from").as_deref(),
        Some("2026-01-01T00:00:00+01:00")
    );
    assert_eq!(query_param(p, "to").as_deref(), Some("now"));
    assert_eq!(query_param(p, "nope"), None);
    assert_eq!(query_param("/x", "from"), None);
    assert_eq!(
        query_param("/x?from=-7d&from=-1d", "from").as_deref(),
        Some("-7d")
    );
}

fn epochs(path: &str, rotation: u16, max: usize) -> Result<Vec<String>, SearchError> {
    let r = RotationMonths::new(rotation).unwrap();
    search_epochs(path, NOW, r, DEFAULT_FROM, max).map(|v| v.iter().map(|e| e.label()).collect())
}

#[test]
fn the_time_range_selects_epochs() {
    // Default: the last year, through now.
    assert_eq!(epochs("/s", 12, 24).unwrap(), ["2025-01", "2026-01"]);
    assert_eq!(epochs("/s?from=-7d", 12, 24).unwrap(), ["2026-01"]);
    assert_eq!(
        epochs("/s?from=2024-06-01&to=2025-03-01", 12, 24).unwrap(),
        ["2024-01", "2025-01"]
    );
    // `to` gets a day of late arrivals: events of Dec 31 may be sealed on Jan 1.
    assert_eq!(
        epochs("/s?from=2025-12-01&to=2025-12-31T12:00:00Z", 12, 24).unwrap(),
        ["2025-01", "2026-01"]
    );
    // Never past now: the next epoch holds nothing yet.
    assert_eq!(
        epochs("/s?from=-1d&to=%2B400d", 12, 24).unwrap(),
        ["2026-01"]
    );
    assert_eq!(
        epochs("/s?from=%2B1d&to=%2B2d", 12, 24).unwrap(),
        ["2026-01"]
    );
    assert_eq!(
        epochs("/s?from=-3M", 1, 24).unwrap(),
        ["2026-08", "2026-09", "2026-10", "2026-11"]
    );
    assert_eq!(epochs("/s?from=-23M", 1, 24).unwrap().len(), 24);
    assert_eq!(
        epochs("/s?from=-24M", 1, 24),
        Err(SearchError::TooManyEpochs {
            epochs: 25,
            limit: 24
        })
    );
    assert_eq!(
        epochs("/s?from=-1d&to=-2d", 12, 24),
        Err(SearchError::Order)
    );
    assert_eq!(
        epochs("/s?from=soon", 12, 24),
        Err(SearchError::Time("from"))
    );
    assert_eq!(epochs("/s?to=later", 12, 24), Err(SearchError::Time("to")));
}

#[test]
fn events_search_paths() {
    assert!(is_events_search("/search/~/search/events"));
    assert!(is_events_search("/search/~/search/events?from=-7d"));
    assert!(is_events_search("/v1/search/~/search/events/"));
    assert!(!is_events_search("/search/~/search/users"));
    assert!(!is_events_search("/search/~/count/events"));
}

fn key(kid: &str) -> SealingKey {
    let kid: Kid = kid.parse().unwrap();
    let mut dek = [0u8; 32];
    dek[..7].copy_from_slice(&kid.to_string().as_bytes()[..7]);
    SealingKey::new(kid, &Dek::from_bytes(dek))
}

/// A deterministic v1 value (sealed before format v2).
fn det(key: &SealingKey, ty: ValueType, v: &str) -> String {
    let mut out = Vec::new();
    key.seal_v1_into(Mode::Deterministic, ty, v.as_bytes(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// A deterministic v2 value of `field` (default scope, padded).
fn det2(key: &SealingKey, field: &str, ty: ValueType, v: &str) -> String {
    let scope = Scope::field(field);
    let spec = Spec {
        mode: Mode::Deterministic,
        scope: &scope,
        pad: Padding::Buckets,
    };
    let mut out = Vec::new();
    key.seal(spec, ty, v.as_bytes(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The terms a value becomes under one key: v2 of its field, then v1.
fn both(key: &SealingKey, field: &str, ty: ValueType, v: &str) -> Vec<String> {
    vec![det2(key, field, ty, v), det(key, ty, v)]
}

fn policy(options: serde_json::Value) -> MoesifEvents {
    let o: MoesifOptions = serde_json::from_value(options).unwrap();
    MoesifEvents::new(Arc::new(MoesifRules::new(&o)))
}

fn rewrite(
    body: &str,
    p: &MoesifEvents,
    keys: &[&SealingKey],
) -> Result<serde_json::Value, SearchError> {
    let mut b = SearchBody::parse(body.as_bytes(), 128)?;
    b.rewrite(p, keys)?;
    Ok(serde_json::from_slice(&b.to_vec()).unwrap())
}

#[test]
fn the_fixture_search_is_rewritten_for_every_epoch() {
    let (k1, k2) = (key("r1.2025-01"), key("r1.2026-01"));
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/moesif/search-request-plaintext.json"
    ))
    .unwrap();
    let p = policy(serde_json::json!({}));
    let parsed = SearchBody::parse(body.as_bytes(), 128).unwrap();
    assert_eq!(parsed.sealed_terms(&p).unwrap(), 1);
    let v = rewrite(&body, &p, &[&k1, &k2]).unwrap();
    let must = &v["post_filter"]["bool"]["must"][0];
    assert!(must.get("term").is_none());
    let f = "request.body.patient.email";
    let want: Vec<String> = [&k1, &k2]
        .iter()
        .flat_map(|k| both(k, f, ValueType::String, "jane@example.com"))
        .collect();
    assert_eq!(
        must["terms"]["request.body.patient.email.raw"],
        serde_json::json!(want)
    );
    // The terms *aggregation* and everything else are untouched.
    let orig: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["aggs"], orig["aggs"]);
    assert_eq!(v["sort"], orig["sort"]);
    assert_eq!(v["size"], orig["size"]);
    // Ciphertexts open to the plaintext term.
    let text = serde_json::to_vec(&must).unwrap();
    let mut out = Vec::new();
    let keys = vec![key("r1.2025-01"), key("r1.2026-01")];
    let stats = unseal_document(&text, &keys, 16, &mut out).unwrap();
    assert_eq!(stats.opened, 4);
    assert!(String::from_utf8(out).unwrap().contains("jane@example.com"));
}

#[test]
fn term_terms_and_match_forms() {
    let k = key("r1.2026-01");
    let p = policy(serde_json::json!({}));
    let email = both(&k, "request.body.email", ValueType::String, "a@b.c");
    let amount = both(&k, "request.body.amount", ValueType::Number, "1.50");
    let email_in_amount = both(&k, "request.body.amount", ValueType::String, "a@b.c");
    let v = rewrite(
        r#"{"query":{"bool":{"filter":[
            {"term":{"request.body.email":{"value":"a@b.c","boost":2}}},
            {"terms":{"request.body.amount.raw":[1.50,"a@b.c"],"boost":1.0}},
            {"match":{"metadata.plan.raw":{"query":"gold","operator":"and"}}},
            {"term":{"user_id.raw":"u1"}},
            {"terms":{"company_id":["c1","c2"]}},
            {"match":{"request.verb":"POST"}},
            {"term":{"response.status":201}},
            {"term":{"request.uri.raw":"https://x.io/p?q=1"}},
            {"term":{"request.body.note":null}}
        ]}}}"#,
        &p,
        &[&k],
    )
    .unwrap();
    let f = &v["query"]["bool"]["filter"];
    assert_eq!(
        f[0],
        serde_json::json!({"terms": {"request.body.email": email, "boost": 2}})
    );
    assert_eq!(
        f[1],
        serde_json::json!({"terms": {"request.body.amount.raw": [&amount[0], &amount[1], &email_in_amount[0], &email_in_amount[1]], "boost": 1.0}})
    );
    assert_eq!(
        f[2],
        serde_json::json!({"terms": {"metadata.plan.raw": both(&k, "metadata.plan", ValueType::String, "gold")}})
    );
    // Plaintext fields stay as they are.
    assert_eq!(f[3], serde_json::json!({"term": {"user_id.raw": "u1"}}));
    assert_eq!(
        f[4],
        serde_json::json!({"terms": {"company_id": ["c1", "c2"]}})
    );
    assert_eq!(f[5], serde_json::json!({"match": {"request.verb": "POST"}}));
    assert_eq!(f[6], serde_json::json!({"term": {"response.status": 201}}));
    assert_eq!(
        f[8],
        serde_json::json!({"term": {"request.body.note": null}})
    );
    // A URL keeps scheme, host and path; the query value is sealed as the sealer does.
    let uri = f[7]["terms"]["request.uri.raw"][0].as_str().unwrap();
    let tag = Scope::field("request.uri");
    assert!(
        uri.starts_with(&format!(
            "https://x.io/p?q=veil:v2:r1.2026-01:d:{}:",
            tag.as_str()
        )),
        "{uri}"
    );
    let uri = f[7]["terms"]["request.uri.raw"][1].as_str().unwrap();
    assert!(
        uri.starts_with("https://x.io/p?q=veil:v1:r1.2026-01:d:"),
        "{uri}"
    );
    // The exact number text is what is sealed.
    let mut body = SearchBody::parse(br#"{"query":{"term":{"request.body.n":1.50}}}"#, 8).unwrap();
    body.rewrite(&p, &[&k]).unwrap();
    let n = both(&k, "request.body.n", ValueType::Number, "1.50");
    assert!(String::from_utf8(body.to_vec()).unwrap().contains(&n[0]));
    assert!(String::from_utf8(body.to_vec()).unwrap().contains(&n[1]));
}

#[test]
fn options_change_what_is_rewritten() {
    let k = key("r1.2026-01");
    // Numbers not sealed: a number term stays; headers not sealed: stays.
    let p =
        policy(serde_json::json!({"encrypt_numerics": false, "encrypt_request_headers": false}));
    let body = r#"{"query":{"bool":{"must":[{"term":{"request.body.n":5}},{"term":{"request.headers.Host.raw":"h"}}]}}}"#;
    let v = rewrite(body, &p, &[&k]).unwrap();
    assert_eq!(v, serde_json::from_str::<serde_json::Value>(body).unwrap());
    // A skipped body field stays readable, so its term stays.
    let p = policy(serde_json::json!({"request_body_skip": ["email"]}));
    let body = r#"{"query":{"term":{"request.body.email.raw":"a@b.c"}}}"#;
    assert_eq!(
        rewrite(body, &p, &[&k]).unwrap(),
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
}

#[test]
fn terms_that_cannot_be_rewritten_are_refused() {
    let k = key("r1.2026-01");
    let p = policy(serde_json::json!({}));
    let err = |body: &str, p: &MoesifEvents| rewrite(body, p, &[&k]).unwrap_err().to_string();
    // Booleans are randomized by default.
    assert!(err(r#"{"query":{"term":{"request.body.consent":true}}}"#, &p).contains("randomized"));
    // `match` on an analyzed (non-.raw) sealed field.
    assert!(err(r#"{"query":{"match":{"request.body.email":"a@b.c"}}}"#, &p).contains(".raw"));
    // Unknown forms on sealed fields.
    assert!(err(
        r#"{"query":{"terms":{"request.body.email":{"index":"x","id":"1"}}}}"#,
        &p
    )
    .contains("unsupported"));
    assert!(err(
        r#"{"query":{"term":{"request.body.email":{"value":"a","case_insensitive":true}}}}"#,
        &p
    )
    .contains("case_insensitive"));
    let rp = policy(serde_json::json!({"mode": "randomized"}));
    assert!(err(r#"{"query":{"term":{"ip_address":"1.2.3.4"}}}"#, &rp).contains("randomized"));
    // Messages never contain the value.
    let e = err(
        r#"{"query":{"match":{"request.body.secret":"hunter2hunter2"}}}"#,
        &p,
    );
    assert!(!e.contains("hunter2"), "{e}");
    // Too many terms.
    let many: Vec<String> = (0..MAX_TERMS + 1).map(|i| format!("v{i}")).collect();
    let body = serde_json::json!({"query": {"terms": {"request.body.email": many}}}).to_string();
    assert_eq!(
        rewrite(&body, &p, &[&k]).unwrap_err(),
        SearchError::TooManyTerms { limit: MAX_TERMS }
    );
}

#[test]
fn queries_that_cannot_match_ciphertexts_are_refused_on_sealed_fields() {
    let k = key("r1.2026-01");
    let p = policy(serde_json::json!({"encrypt_numerics": false}));
    for body in [
        r#"{"query":{"prefix":{"request.body.email.raw":"jane@"}}}"#,
        r#"{"query":{"wildcard":{"request.body.email":{"value":"j*e"}}}}"#,
        r#"{"query":{"range":{"request.body.dob":{"gte":"1980-01-01"}}}}"#,
        r#"{"query":{"match_phrase":{"request.body.notes":"improved glucose"}}}"#,
    ] {
        let e = rewrite(body, &p, &[&k]).unwrap_err().to_string();
        assert!(e.contains("only equality"), "{body}: {e}");
        assert!(!e.contains("jane") && !e.contains("glucose"), "{e}");
    }
    // On plaintext fields (or plaintext numbers) they are fine.
    for body in [
        r#"{"query":{"range":{"request.time":{"gte":"2026-01-01","lt":"2026-02-01"}}}}"#,
        r#"{"query":{"range":{"request.body.amount":{"gte":10}}}}"#,
        r#"{"query":{"prefix":{"user_id.raw":"user_"}}}"#,
    ] {
        let v = rewrite(body, &p, &[&k]).unwrap();
        assert_eq!(v, serde_json::from_str::<serde_json::Value>(body).unwrap());
    }
}

#[test]
fn aggregation_filters_are_rewritten_but_definitions_are_not() {
    let k = key("r1.2026-01");
    let p = policy(serde_json::json!({}));
    let v = rewrite(
        r#"{"aggs":{"a":{"filter":{"term":{"request.body.email.raw":"x@y.z"}},
                       "aggs":{"b":{"terms":{"field":"request.body.email.raw","size":5}}}}}}"#,
        &p,
        &[&k],
    )
    .unwrap();
    assert_eq!(
        v["aggs"]["a"]["filter"]["terms"]["request.body.email.raw"],
        serde_json::json!(both(&k, "request.body.email", ValueType::String, "x@y.z"))
    );
    assert_eq!(
        v["aggs"]["a"]["aggs"]["b"],
        serde_json::json!({"terms": {"field": "request.body.email.raw", "size": 5}})
    );
}

#[test]
fn bodies_round_trip_exactly_and_bad_ones_are_errors() {
    let p = policy(serde_json::json!({}));
    let text = r#"{"size":50,"n":1.50,"big":123456789012345678901234567890,"e":1e400,"s":"caf\u00e9 \"q\"","a":[true,false,null,{}],"o":{}}"#;
    let b = SearchBody::parse(text.as_bytes(), 8).unwrap();
    // Not a search body: its members are not on the allow-list.
    assert!(matches!(
        b.sealed_terms(&p),
        Err(SearchError::NotAllowed { .. })
    ));
    let out = String::from_utf8(b.to_vec()).unwrap();
    assert_eq!(out, text.replace("\\u00e9", "é"));
    assert!(matches!(
        SearchBody::parse(b"{\"a\":1} x", 8),
        Err(SearchError::Json(JsonError::Trailing { .. }))
    ));
    assert!(matches!(
        SearchBody::parse(b"", 8),
        Err(SearchError::Json(JsonError::Empty))
    ));
    assert!(matches!(
        SearchBody::parse(b"{\"a\":01}", 8),
        Err(SearchError::Json(_))
    ));
    let deep = "[".repeat(2000) + &"]".repeat(2000);
    assert!(matches!(
        SearchBody::parse(deep.as_bytes(), 128),
        Err(SearchError::Json(JsonError::TooDeep { limit: 128, .. }))
    ));
}

#[test]
fn search_kids_use_the_given_root() {
    let e: Vec<Epoch> = vec!["2025-01".parse().unwrap(), "2026-01".parse().unwrap()];
    let kids: Vec<String> = search_kids(3, &e).iter().map(|k| k.to_string()).collect();
    assert_eq!(kids, ["r3.2025-01", "r3.2026-01"]);
}

/// Issue #18: each construct of the review carried `jane@example.com` to the vendor
/// unchanged (the rewrite was a deny-list). Each is now refused before anything leaves,
/// and the refusal never echoes the value.
#[test]
fn constructs_off_the_allow_list_are_refused() {
    let k = key("r1.2026-01");
    let p = policy(serde_json::json!({}));
    for body in [
        r#"{"query":{"span_term":{"request.body.email":"jane@example.com"}}}"#,
        r#"{"query":{"terms_set":{"request.body.email":{"terms":["jane@example.com"],"minimum_should_match_field":"n"}}}}"#,
        r#"{"query":{"combined_fields":{"query":"jane@example.com","fields":["request.body.email"]}}}"#,
        r#"{"query":{"more_like_this":{"fields":["request.body.email"],"like":"jane@example.com","min_term_freq":1}}}"#,
        r#"{"query":{"bool":{"filter":[{"script":{"script":{"source":"doc['request.body.email.raw'].value == params.e","params":{"e":"jane@example.com"}}}}]}}}"#,
        r#"{"query":{"script_score":{"query":{"match_all":{}},"script":{"source":"1","params":{"e":"jane@example.com"}}}}}"#,
        r#"{"query":{"query_string":{"query":"request.body.email:jane@example.com"}}}"#,
        r#"{"query":{"simple_query_string":{"query":"jane@example.com"}}}"#,
        r#"{"query":{"multi_match":{"query":"jane@example.com","fields":["request.body.*"]}}}"#,
        r#"{"query":{"function_score":{"query":{"term":{"user_id":"u"}},"functions":[{"filter":{"term":{"request.body.email.raw":"jane@example.com"}},"weight":2}]}}}"#,
        r#"{"query":{"wrapper":{"query":"eyJ0ZXJtIjp7InJlcXVlc3QuYm9keS5lbWFpbC5yYXciOiJqYW5lQGV4YW1wbGUuY29tIn19"}}}"#,
        r#"{"query":{"intervals":{"request.body.notes":{"match":{"query":"jane@example.com"}}}}}"#,
        r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","include":["jane@example.com"]}}}}"#,
        r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","include":"jane@example\\.com"}}}}"#,
        r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","exclude":["jane@example.com"]}}}}"#,
        r#"{"aggs":{"a":{"terms":{"field":"request.body.email.raw","missing":"jane@example.com"}}}}"#,
        r#"{"aggs":{"a":{"terms":{"field":"user_id","script":{"source":"'jane@example.com'"}}}}}"#,
        r#"{"aggs":{"a":{"significant_text":{"field":"request.body.notes"}}}}"#,
        r#"{"sort":[{"_script":{"type":"string","script":{"source":"'jane@example.com'"}}}]}"#,
        r#"{"sort":[{"request.body.email.raw":{"order":"asc","missing":"jane@example.com"}}]}"#,
        r#"{"search_after":["jane@example.com"]}"#,
        r#"{"highlight":{"fields":{"request.body.email":{"highlight_query":{"term":{"request.body.email":"jane@example.com"}}}}}}"#,
        r#"{"query":{"term":{"request.body.email.raw":"x"},"extra":{"term":{"request.body.email.raw":"jane@example.com"}}}}"#,
        r#"{"query":{"bool":{"must":[{"match_all":{}}],"unknown":{"term":{"request.body.email.raw":"jane@example.com"}}}}}"#,
        r#"["jane@example.com"]"#,
    ] {
        let e = rewrite(body, &p, &[&k]);
        let Err(e) = e else {
            panic!("forwarded: {body}");
        };
        let text = e.to_string();
        assert!(!text.contains("jane"), "{body}: {text}");
        let parsed = SearchBody::parse(body.as_bytes(), 128).unwrap();
        assert!(parsed.sealed_terms(&p).is_err(), "{body}");
    }
}

/// What the allow-list lets through, unchanged or rewritten.
#[test]
fn allowed_constructs_pass_or_are_rewritten() {
    let k = key("r1.2026-01");
    let p = policy(serde_json::json!({}));
    for body in [
        r#"{"query":{"match_all":{}},"size":10,"from":0,"track_total_hits":true,"_source":{"includes":["request.*"]},"sort":["_score",{"request.time":"desc"},{"request.body.email.raw":{"order":"asc","missing":"_last"}}]}"#,
        r#"{"query":{"bool":{"filter":[{"exists":{"field":"request.body.email"}},{"ids":{"values":["a","b"]}},{"range":{"request.time":{"gte":"now-7d"}}}],"minimum_should_match":1}}}"#,
        r#"{"aggs":{"t":{"terms":{"field":"user_id","include":["u1"],"size":5},"aggs":{"c":{"cardinality":{"field":"company_id"}}}},"h":{"date_histogram":{"field":"request.time","calendar_interval":"day"},"meta":{"x":1}},"top":{"top_hits":{"size":1,"sort":[{"request.time":"desc"}]}}}}"#,
        r#"{"query":{"constant_score":{"filter":{"dis_max":{"queries":[{"match_none":{}}],"tie_breaker":0.5}}}}}"#,
    ] {
        let v = rewrite(body, &p, &[&k]).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(
            v,
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            "{body}"
        );
    }
    // Equality inside any allowed compound is rewritten.
    let v = rewrite(
        r#"{"query":{"nested":{"path":"x","query":{"constant_score":{"filter":{"term":{"request.body.email.raw":"a@b.c"}}}}}},
            "aggs":{"f":{"filters":{"filters":{"one":{"term":{"request.body.email.raw":"a@b.c"}}}}}}}"#,
        &p,
        &[&k],
    )
    .unwrap();
    let want = serde_json::json!(both(&k, "request.body.email", ValueType::String, "a@b.c"));
    assert_eq!(
        v["query"]["nested"]["query"]["constant_score"]["filter"]["terms"]
            ["request.body.email.raw"],
        want
    );
    assert_eq!(
        v["aggs"]["f"]["filters"]["filters"]["one"]["terms"]["request.body.email.raw"],
        want
    );
}

/// Issue #18: `/search/~/search/users` and `/count/events` were not inspected at all.
/// They are classified, and their bodies go through the same check; every other
/// endpoint with a body is refused.
#[test]
fn every_management_endpoint_with_a_body_is_checked_or_refused() {
    assert_eq!(
        management_route("/search/~/search/events?from=-7d"),
        Management::Search(Entity::Event)
    );
    assert_eq!(
        management_route("/v1/search/~/search/users/"),
        Management::Search(Entity::User)
    );
    assert_eq!(
        management_route("/search/~/search/companies"),
        Management::Search(Entity::Company)
    );
    assert_eq!(
        management_route("/search/~/count/events"),
        Management::Count(Entity::Event)
    );
    assert_eq!(
        management_route("/v1/search/~/count/users"),
        Management::Count(Entity::User)
    );
    for other in [
        "/search/~/search/actions",
        "/search/~/delete/events",
        "/workspaces/123",
        "/v1/~/dashboards",
        "/search/~/searchx/events",
        "/search/events",
        "",
    ] {
        assert_eq!(management_route(other), Management::Refused, "{other}");
    }
    // A users search names user fields: metadata is sealed, user_id is not.
    let k = key("r1.2026-01");
    let o: MoesifOptions = serde_json::from_value(serde_json::json!({})).unwrap();
    let users = MoesifEvents::for_entity(Entity::User, Arc::new(MoesifRules::new(&o)));
    let mut b = SearchBody::parse(
        br#"{"query":{"bool":{"must":[{"term":{"metadata.email.raw":"jane@example.com"}},{"term":{"user_id":"u1"}}]}}}"#,
        64,
    )
    .unwrap();
    assert_eq!(b.rewrite(&users, &[&k]).unwrap(), 1);
    let v: serde_json::Value = serde_json::from_slice(&b.to_vec()).unwrap();
    assert_eq!(
        v["query"]["bool"]["must"][0]["terms"]["metadata.email.raw"],
        serde_json::json!(both(
            &k,
            "metadata.email",
            ValueType::String,
            "jane@example.com"
        ))
    );
    assert_eq!(
        v["query"]["bool"]["must"][1],
        serde_json::json!({"term": {"user_id": "u1"}})
    );
    // A count body is the same language: a construct off the list is refused.
    let count = SearchBody::parse(
        br#"{"query":{"span_term":{"request.body.email":"jane@example.com"}}}"#,
        64,
    )
    .unwrap();
    assert!(count.sealed_terms(&p_events()).is_err());
}

fn p_events() -> MoesifEvents {
    policy(serde_json::json!({}))
}

/// Issue #18: "a search only covers the current root version". The kids of a search are
/// every root version × every epoch; with both formats, a value sealed under any of
/// them, before or after format v2, is among the terms.
#[test]
fn searches_cover_every_root_version_and_both_formats() {
    let e: Vec<Epoch> = vec!["2025-01".parse().unwrap(), "2026-01".parse().unwrap()];
    let kids: Vec<String> = search_kids_for(&[1, 2], &e)
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        kids,
        ["r1.2025-01", "r1.2026-01", "r2.2025-01", "r2.2026-01"]
    );
    let keys: Vec<SealingKey> = kids.iter().map(|k| key(k)).collect();
    let refs: Vec<&SealingKey> = keys.iter().collect();
    let p = p_events();
    let v = rewrite(
        r#"{"query":{"term":{"request.body.email.raw":"jane@example.com"}}}"#,
        &p,
        &refs,
    )
    .unwrap();
    let terms = v["query"]["terms"]["request.body.email.raw"]
        .as_array()
        .unwrap();
    assert_eq!(terms.len(), 8);
    // Data sealed under the old root in 2025, in v1 (before this change) and in v2, is
    // found by the plaintext search.
    let old = key("r1.2025-01");
    for sealed in both(
        &old,
        "request.body.email",
        ValueType::String,
        "jane@example.com",
    ) {
        assert!(terms.contains(&serde_json::json!(sealed)));
    }
}
