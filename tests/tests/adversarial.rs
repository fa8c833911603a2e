//! Hostile request bodies through real Envoy with the Veil filter on a sealed route: each
//! has one defined outcome — sealed correctly (what the vendor got unseals to what was
//! sent) or refused with a problem+json code — never plaintext upstream, never a VM
//! restart, never a secret in a log. The outcome table is in docs/security.md.

use std::io::Write;
use std::time::Duration;

use veil_e2e::check::unseal;
use veil_e2e::{Response, Stack};

/// A marker that stands in a sealed place of every body; it must never reach the vendor or
/// a log (raw, JSON-escaped or base64).
const MARK: &str = "ADVMARK-7f3a9c";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// 200; the vendor got one request whose body unseals to exactly what was sent.
    Sealed,
    /// As `Sealed`, but unsealing gives the same JSON value, not the same bytes: a string
    /// sealed with escapes comes back in its shortest spelling (`\ud83d\ude00` → 😀).
    SealedSameValue,
    /// 200; the vendor got the body as it was sent (it carries nothing to seal).
    Forwarded,
    /// This status and problem code; the vendor got nothing.
    Problem(u16, &'static str),
}

struct Case {
    name: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    want: Want,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, want: Want) -> Case {
    Case {
        name,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        want,
    }
}

/// A Moesif event whose request body is `body` (raw JSON text).
fn event(body: &str) -> String {
    format!(
        r#"{{"request":{{"time":"2026-11-22T10:00:00Z","uri":"https://api.example.com/a","verb":"POST","body":{body}}},"response":{{"time":"2026-11-22T10:00:01Z","status":200}}}}"#
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An event padded with a long sealed string so the whole body is exactly `len` bytes.
fn event_of_len(len: usize) -> String {
    let empty = event(&format!(r#"{{"pad":"{MARK}"}}"#));
    let pad = "p".repeat(len - empty.len());
    let doc = event(&format!(r#"{{"pad":"{MARK}{pad}"}}"#));
    assert_eq!(doc.len(), len);
    doc
}

const LIMIT: usize = 1024 * 1024;

fn cases() -> Vec<Case> {
    let deep = format!("{}\"{MARK}\"{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge_string = format!(r#"{{"s":"{MARK}{}"}}"#, "x".repeat(900_000));
    let many_strings: Vec<String> = (0..20_000).map(|i| format!("\"{MARK}{i}\"")).collect();
    let many_numbers = vec!["7"; 400_000].join(",");
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(event(&format!(r#""{MARK}""#)).bytes());
    let mut bad_utf8 = event(&format!(r#""{MARK}__""#)).into_bytes();
    let at = bad_utf8.len() - 70;
    bad_utf8[at] = 0xFF;
    let bomb = gzip(event(&format!(r#""{MARK}{}""#, " ".repeat(64 * 1024 * 1024))).as_bytes());
    let deflate_bomb =
        deflate_raw(event(&format!(r#"["{MARK}"{}]"#, ",0".repeat(8 * 1024 * 1024))).as_bytes());
    let mut cases = vec![
        case(
            "nesting 10,000 deep",
            event(&deep),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "nesting at max_depth (128)",
            event(&format!("{}\"{MARK}\"{}", "[".repeat(120), "]".repeat(120))),
            Want::Sealed,
        ),
        case("string of 900 KB", event(&huge_string), Want::Sealed),
        case(
            "array of 20,000 strings",
            event(&format!("[{}]", many_strings.join(","))),
            Want::Sealed,
        ),
        // ~800 KB in, ~20 MB once every number is sealed: over max_sealed_body_bytes.
        case(
            "array of 400,000 numbers",
            event(&format!("[{many_numbers}]")),
            Want::Problem(413, "body-too-large"),
        ),
        case(
            "numbers 1e400, -0, 30 digits, 1E-400",
            event(&format!(
                r#"{{"m":"{MARK}","a":1e400,"b":-0,"c":123456789012345678901234567890,"d":-1E-400,"e":0.1e+999}}"#
            )),
            Want::Sealed,
        ),
        case(
            "invalid UTF-8 in a string",
            bad_utf8,
            Want::Problem(400, "bad-json"),
        ),
        case(
            "lone surrogate \\ud800 in a sealed string",
            event(&format!(r#""{MARK}\ud800""#)),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "lone low surrogate \\udc00 in a sealed string",
            event(&format!(r#""{MARK}\udc00x""#)),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "escaped surrogate pair",
            event(&format!(r#""{MARK}\ud83d\ude00""#)),
            Want::SealedSameValue,
        ),
        case(
            "duplicate keys",
            event(&format!(r#"{{"a":"{MARK}1","a":"{MARK}2"}}"#)),
            Want::Sealed,
        ),
        case(
            "duplicate request objects",
            format!(r#"{{"request":{{"body":"{MARK}"}},"request":{{"body":"{MARK}x"}}}}"#),
            Want::Sealed,
        ),
        case("byte-order mark", bom, Want::Problem(400, "bad-json")),
        case(
            "trailing garbage",
            format!("{} xyz", event(&format!(r#""{MARK}""#))),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "two documents",
            format!("{0}{0}", event(&format!(r#""{MARK}""#))),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "unterminated string",
            format!(r#"{{"request":{{"body":"{MARK}"#),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "NUL inside a string",
            event(&format!("\"{MARK}\u{0}\"")),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "NaN literal",
            event(&format!(r#"{{"m":"{MARK}","n":NaN}}"#)),
            Want::Problem(400, "bad-json"),
        ),
        case(
            "single quotes",
            event(&format!("'{MARK}'")),
            Want::Problem(400, "bad-json"),
        ),
        case("empty body", "", Want::Forwarded),
        case(
            "whitespace-only body",
            "   \n",
            Want::Problem(400, "bad-json"),
        ),
        case(
            "body at the limit (1 MiB)",
            event_of_len(LIMIT),
            Want::Sealed,
        ),
        case(
            "body one byte over the limit",
            event_of_len(LIMIT + 1),
            Want::Problem(413, "body-too-large"),
        ),
    ];
    let mut text_plain = case(
        "JSON sent as text/plain",
        event(&format!(r#""{MARK}""#)),
        Want::Sealed,
    );
    text_plain.headers = vec![("content-type", "text/plain".into())];
    cases.push(text_plain);
    let mut xml = case(
        "XML sent as application/xml",
        format!("<a>{MARK}</a>"),
        Want::Problem(400, "bad-json"),
    );
    xml.headers = vec![("content-type", "application/xml".into())];
    cases.push(xml);
    let mut form = case(
        "form body, no content-type",
        format!("secret={MARK}"),
        Want::Problem(400, "bad-json"),
    );
    form.headers = vec![];
    cases.push(form);
    let mut chunked = case("chunked body", event(&format!(r#""{MARK}""#)), Want::Sealed);
    chunked
        .headers
        .push(("transfer-encoding", "chunked".into()));
    cases.push(chunked);
    let mut chunked_over = case(
        "chunked body over the limit",
        event_of_len(LIMIT + 10),
        Want::Problem(413, "body-too-large"),
    );
    chunked_over
        .headers
        .push(("transfer-encoding", "chunked".into()));
    cases.push(chunked_over);
    let mut gz = case(
        "gzip bomb (64 MiB of spaces)",
        bomb,
        Want::Problem(413, "body-too-large"),
    );
    gz.headers.push(("content-encoding", "gzip".into()));
    cases.push(gz);
    let mut df = case(
        "raw deflate bomb (16 MiB)",
        deflate_bomb,
        Want::Problem(413, "body-too-large"),
    );
    df.headers.push(("content-encoding", "deflate".into()));
    cases.push(df);
    let mut corrupt = case(
        "corrupt gzip",
        b"\x1f\x8b\x08\x00garbage-garbage".to_vec(),
        Want::Problem(400, "bad-content-encoding"),
    );
    corrupt.headers.push(("content-encoding", "gzip".into()));
    cases.push(corrupt);
    let mut stacked = case(
        "stacked encodings gzip, gzip",
        gzip(&gzip(event(&format!(r#""{MARK}""#)).as_bytes())),
        Want::Problem(415, "unsupported-content-encoding"),
    );
    stacked
        .headers
        .push(("content-encoding", "gzip, gzip".into()));
    cases.push(stacked);
    // The same list on two header lines (RFC 9110 §5.3: one field): refused like the above,
    // never decoded once and sealed as if it were the whole story. (Envoy 1.40 folds the
    // lines into one value before the filter sees them; the filter also refuses a map that
    // still holds two.)
    let mut two_lines = case(
        "content-encoding gzip on two header lines",
        gzip(&gzip(event(&format!(r#""{MARK}""#)).as_bytes())),
        Want::Problem(415, "unsupported-content-encoding"),
    );
    two_lines.headers.push(("content-encoding", "gzip".into()));
    two_lines.headers.push(("content-encoding", "gzip".into()));
    cases.push(two_lines);
    cases
}

fn problem_code(resp: &Response) -> Option<String> {
    if resp.header("content-type") != Some("application/problem+json") {
        return None;
    }
    resp.json()["code"].as_str().map(str::to_string)
}

/// The marker in the forms a leak could take.
fn leak_forms(mark: &str) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(mark);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mark);
    // base64 of the marker at each of the 3 alignments, minus the partial edge characters.
    let mut forms = vec![mark.to_string(), b64, b64url];
    for shift in 1..3 {
        let padded = format!("{}{mark}", "\0".repeat(shift));
        let enc = base64::engine::general_purpose::STANDARD.encode(padded);
        forms.push(enc.get(4..enc.len() - 4).unwrap_or_default().to_string());
    }
    forms
}

fn assert_no_marker(hay: &[u8], what: &str) {
    let hay = String::from_utf8_lossy(hay);
    for form in leak_forms(MARK) {
        assert!(
            !hay.contains(&form),
            "{what} contains the marker as {form:?}"
        );
    }
}

/// What moves when the filter itself fails. Wasm: the VM counters (a crashed VM is
/// recreated). Native (no VM): 1 (the module is loaded), then the hooks that panicked and
/// answered fail-closed (`veil.native.hook_failed`).
fn vm_stats(stack: &Stack) -> (u64, u64) {
    match stack.shell {
        veil_e2e::Shell::Wasm => (
            stack.stat("wasm.envoy.wasm.runtime.v8.created"),
            stack.stat("wasm.envoy.wasm.runtime.v8.active"),
        ),
        veil_e2e::Shell::Native => (1, stack.stat("veil.native.hook_failed")),
    }
}

#[test]
fn hostile_bodies_have_defined_outcomes_and_never_leak() {
    let mut stack = Stack::start();
    let vms_before = vm_stats(&stack);
    assert!(vms_before.0 >= 1, "the v8 stats exist: {vms_before:?}");
    let mut failures = Vec::new();
    println!("{:<44} {:>6} {:<30} forwarded", "case", "status", "code");
    for c in cases() {
        stack.clear_recorded();
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = stack.send("POST", "/collector/v1/events", &headers, &c.body);
        let rec = stack.recorded();
        let code = problem_code(&resp);
        println!(
            "{:<44} {:>6} {:<30} {}",
            c.name,
            resp.status,
            code.as_deref().unwrap_or("-"),
            rec.first().map(|r| r.body.len()).unwrap_or(0)
        );
        for r in &rec {
            assert_no_marker(&r.body, &format!("{}: forwarded body", c.name));
            assert_no_marker(
                serde_json::to_string(&r.headers).unwrap().as_bytes(),
                &format!("{}: forwarded headers", c.name),
            );
        }
        assert_no_marker(&resp.body, &format!("{}: the answer", c.name));
        let ok = match c.want {
            Want::Problem(status, want_code) => {
                resp.status == status && code.as_deref() == Some(want_code) && rec.is_empty()
            }
            Want::Sealed => {
                resp.status == 200 && rec.len() == 1 && unseal(&stack, &rec[0].body) == c.body
            }
            Want::SealedSameValue => {
                resp.status == 200
                    && rec.len() == 1
                    && serde_json::from_slice::<serde_json::Value>(&unseal(&stack, &rec[0].body))
                        .ok()
                        == serde_json::from_slice::<serde_json::Value>(&c.body).ok()
            }
            Want::Forwarded => resp.status == 200 && rec.len() == 1 && rec[0].body == c.body,
        };
        if !ok {
            failures.push(format!(
                "{}: want {:?}, got {} {:?}",
                c.name, c.want, resp.status, code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected outcomes:\n{}",
        failures.join("\n")
    );
    assert_eq!(vm_stats(&stack), vms_before, "no wasm VM was recreated");
    assert!(stack.envoy_alive(), "Envoy still runs");
    assert_no_marker(stack.all_logs().as_bytes(), "the stack's logs");
}

/// HTTP/2 cleartext (prior knowledge) straight to Envoy, the body in several DATA frames
/// and request trailers: sealed like HTTP/1.1; trailers never carry the body.
#[test]
fn http2_with_trailers_is_sealed() {
    let stack = Stack::start();
    let vms_before = vm_stats(&stack);
    let body = event(&format!(r#"{{"a":"{MARK}","b":[1,2,3]}}"#));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, answer) = rt.block_on(h2_post(
        stack.listen,
        "/collector/v1/events",
        body.as_bytes(),
    ));
    println!("h2c with trailers: {status}, answer {} bytes", answer.len());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let rec = stack.recorded();
    assert_eq!(rec.len(), 1);
    assert_no_marker(&rec[0].body, "forwarded body (h2)");
    assert_eq!(unseal(&stack, &rec[0].body), body.as_bytes());

    // Refusals over HTTP/2 are the same problem+json.
    stack.clear_recorded();
    let (status, answer) = rt.block_on(h2_post(
        stack.listen,
        "/collector/v1/events",
        b"{\"request\":",
    ));
    assert_eq!(status, 400);
    let p: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(p["code"], "bad-json");
    assert!(stack.recorded().is_empty());
    assert_eq!(vm_stats(&stack), vms_before);
}

async fn h2_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (resp, mut stream) = client.send_request(req, false).unwrap();
    for chunk in body.chunks(7) {
        stream
            .send_data(bytes::Bytes::copy_from_slice(chunk), false)
            .unwrap();
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-trailer", "done".parse().unwrap());
    stream.send_trailers(trailers).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let mut recv = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, out)
}
