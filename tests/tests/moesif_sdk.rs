//! Moesif's own Python SDK (PyPI `moesifapi`, installed by scripts/setup.sh) as a real
//! client: its base URI points at Veil's collector route; it gzips every body. Everything
//! arrives sealed per policy and the SDK sees success.

use std::process::Command;

use serde_json::Value;
use veil_core::crypto::value::SealedValue;
use veil_e2e::{repo_root, Stack};

fn sealed(v: &Value) -> bool {
    v.as_str().and_then(SealedValue::parse).is_some()
}

#[test]
fn moesif_python_sdk_sends_through_veil_and_everything_arrives_sealed() {
    let stack = Stack::start();
    let root = repo_root();
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/clients/moesif_sdk.py"))
        .arg(format!("http://{}/collector", stack.listen))
        .arg(root.join("fixtures/moesif"))
        .output()
        .expect("run the Moesif SDK client (scripts/setup.sh installs moesifapi)");
    assert!(
        out.status.success(),
        "SDK client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rec = stack.recorded();
    let paths: Vec<&str> = rec.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/events",
            "/v1/events/batch",
            "/v1/users",
            "/v1/users/batch",
            "/v1/companies",
            "/v1/companies/batch",
            "/v1/subscriptions",
            "/v1/subscriptions/batch"
        ]
    );
    let body = |i: usize| -> Value {
        assert_eq!(
            rec[i].header("content-encoding"),
            None,
            "forwarded identity"
        );
        serde_json::from_slice(&rec[i].body).expect("forwarded JSON")
    };

    let event = body(0);
    assert!(sealed(&event["request"]["body"]["patient"]["ssn"]));
    assert!(sealed(&event["request"]["headers"]["Authorization"]));
    assert!(sealed(&event["request"]["ip_address"]));
    assert!(sealed(&event["metadata"]["plan"]));
    assert_eq!(event["user_id"], "user_12345");
    assert_eq!(event["request"]["verb"], "POST");
    assert_eq!(event["response"]["status"], 201);
    assert_eq!(body(1).as_array().map(Vec::len), Some(20));

    for user in [body(2), body(3)[1].clone()] {
        assert!(user["user_id"]
            .as_str()
            .is_some_and(|u| u.starts_with("user_")));
        assert!(sealed(&user["metadata"]["email"]));
    }
    let user = body(2);
    for f in ["ip_address", "session_token", "user_agent_string"] {
        assert!(sealed(&user[f]), "user.{f} sealed");
    }
    assert!(sealed(&user["campaign"]["utm_source"]));
    assert!(sealed(&user["metadata"]["seats"]), "numbers sealed");
    assert!(sealed(&user["metadata"]["vip"]), "booleans sealed");

    let company = body(4);
    assert_eq!(company["company_id"], "comp_67890");
    assert!(sealed(&company["company_domain"]));
    assert!(sealed(&company["metadata"]["billing"]["contact"]));
    assert!(sealed(&company["metadata"]["mrr"]));

    let sub = body(6);
    assert_eq!(sub["subscription_id"], "sub_1");
    assert_eq!(sub["status"], "active");
    assert!(sealed(&sub["metadata"]["po_number"]));

    let all: String = rec
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body))
        .collect();
    for secret in [
        "078-05-1120",
        "jane@example.com",
        "Acme Health, Inc.",
        "PO-99812",
        "sess_9f8e7d",
    ] {
        assert!(!all.contains(secret), "{secret} reached the vendor");
    }
    assert_eq!(stack.stat("wasmcustom.veil.seal.requests"), 8);
}
