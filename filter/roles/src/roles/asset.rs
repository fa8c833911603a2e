//! The relay's browser client, served by the filter itself at `/public/veil-relay.js`, so a
//! page loads the module from the same Veil that answers its relay requests.
//!
//! The bundle is `client/browser/dist/veil-relay.js` (built by esbuild from
//! `client/browser/src/`, committed, checked against a fresh build by the browser tests),
//! embedded at compile time together with its subresource-integrity hash, which is the etag
//! and the `x-veil-integrity` header (docs/relay-browser.md).

use veil_core::header_map::HeaderMap;

use crate::host::{Action, Level, StreamHost};
use crate::metrics::Metrics;

/// Where the module is served (not under the relay prefix: a fixed public path).
pub const PATH: &str = "/public/veil-relay.js";

/// The bundle's bytes.
const BODY: &[u8] = include_bytes!("../../../../client/browser/dist/veil-relay.js");

/// `sha384-<base64>` of [`BODY`], written by the bundle's build next to it.
pub const INTEGRITY: &str = include_str!("../../../../client/browser/dist/veil-relay.integrity");

/// A strong etag from the hash: changes exactly when the bytes do.
const ETAG: &str = concat!(
    "\"",
    include_str!("../../../../client/browser/dist/veil-relay.integrity"),
    "\""
);

/// An hour in caches; after that a revalidation costs a 304.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// Answers `GET`/`HEAD` for [`PATH`] (any query); None for every other path, which the
/// caller dispatches as usual. Other methods on the path are refused with 405.
pub fn serve(
    h: &dyn StreamHost,
    metrics: &Metrics,
    head: &HeaderMap,
    path: &str,
) -> Option<Action> {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    if bare != PATH {
        return None;
    }
    let method = head.get(":method").unwrap_or_default();
    let inm = head.get("if-none-match");
    let if_none_match = inm.as_deref();
    let common: [(&str, &str); 7] = [
        ("etag", ETAG),
        ("cache-control", CACHE_CONTROL),
        ("x-veil-integrity", INTEGRITY),
        ("x-content-type-options", "nosniff"),
        // A public, credential-free script: any origin may load it as a module (CORS mode)
        // and check it with `<script integrity>`.
        ("access-control-allow-origin", "*"),
        ("cross-origin-resource-policy", "cross-origin"),
        // Envoy's CORS filter, when configured, replaces the `*` with the requesting origin:
        // a cached copy must then not serve another origin.
        ("vary", "origin"),
    ];
    let (status, body): (u16, &[u8]) = match &*method {
        "GET" | "HEAD" if if_none_match.is_some_and(matches_etag) => (304, b""),
        "GET" | "HEAD" => (200, BODY),
        _ => (405, b""),
    };
    let mut headers: Vec<(&str, &str)> = common.to_vec();
    match status {
        200 => headers.push(("content-type", "text/javascript; charset=utf-8")),
        405 => headers.push(("allow", "GET, HEAD")),
        _ => {}
    }
    if let Err(e) = h.send_local_response(status, &headers, body) {
        Metrics::add(h, metrics.hostcall_failed, 1);
        h.log(Level::Error, &format!("veil: could not serve {PATH} ({e})"));
    }
    Some(Action::Pause)
}

/// `If-None-Match` (RFC 9110 §13.1.2, weak comparison): `*`, or a list holding our etag.
fn matches_etag(value: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ETAG)
}
