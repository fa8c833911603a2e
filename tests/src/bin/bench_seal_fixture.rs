//! `veil-bench-seal-fixture`: seals the events of a search answer (e.g.
//! `fixtures/moesif/search-response-plaintext.json`) under a stack's current data key, as the
//! filter sealed them when they were collected, so the load benchmark's `unseal` scenario can
//! serve a realistic sealed answer from the demo upstream.
//!
//! Each `hits.hits[]._source` is sealed with the Moesif event policy (default options), under
//! the first key of the keyservice's `GET /v1/data-keys/current` answer. The bearer token is
//! read from a file, never from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use clap::Parser;
use serde_json::Value;
use veil_core::crypto::cipher::SealingKey;
use veil_core::crypto::keys::{Dek, Kid};
use veil_core::json::{seal_document, Scratch};
use veil_core::policy::moesif::{MoesifOptions, MoesifPolicy, MoesifRules, Route};

#[derive(Debug, Parser)]
#[command(
    name = "veil-bench-seal-fixture",
    about = "Seal a search answer's events for the benchmark"
)]
struct Args {
    /// The keyservice (host:port).
    #[arg(long)]
    keyservice: SocketAddr,
    /// File holding the keyservice bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// The plaintext search answer.
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the sealed answer.
    #[arg(long)]
    out: PathBuf,
}

fn current_key(ks: SocketAddr, token: &str) -> Result<SealingKey, String> {
    let auth = format!("Bearer {token}");
    let r = veil_e2e::http::request(
        ks,
        "GET",
        "/v1/data-keys/current",
        &[("authorization", &auth)],
        b"",
    )
    .map_err(|e| format!("keyservice: {e}"))?;
    if r.status != 200 {
        return Err(format!("keyservice answered {}", r.status));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("key answer: {e}"))?;
    let entry = &v["keys"][0];
    let kid: Kid = entry["kid"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("kid: {e}"))?;
    let dek = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(entry["dek"].as_str().unwrap_or_default())
        .map_err(|e| format!("dek: {e}"))?;
    let dek = Dek::from_slice(&dek).map_err(|e| format!("dek: {e}"))?;
    Ok(SealingKey::new(kid, &dek))
}

fn run(a: &Args) -> Result<usize, String> {
    let token = std::fs::read_to_string(&a.token_file).map_err(|e| format!("token file: {e}"))?;
    let key = current_key(a.keyservice, token.trim())?;
    let text = std::fs::read(&a.input).map_err(|e| format!("{}: {e}", a.input.display()))?;
    let mut answer: Value = serde_json::from_slice(&text).map_err(|e| format!("input: {e}"))?;
    let route = Route::from_path("/v1/events").ok_or("no event route")?;
    let policy = MoesifPolicy::new(route, Arc::new(MoesifRules::new(&MoesifOptions::default())));
    let mut sealed = 0;
    let hits = answer["hits"]["hits"]
        .as_array_mut()
        .ok_or("input has no hits.hits[]")?;
    for hit in hits {
        let source = serde_json::to_vec(&hit["_source"]).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let stats = seal_document(
            &source,
            &policy,
            &key,
            64,
            &mut Scratch::default(),
            &mut out,
        )
        .map_err(|e| format!("sealing a hit: {e}"))?;
        sealed += stats.sealed as usize;
        hit["_source"] = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    }
    let out = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
    std::fs::write(&a.out, out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    Ok(sealed)
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(n) => println!("sealed {n} values into {}", args.out.display()),
        Err(e) => {
            eprintln!("veil-bench-seal-fixture: {e}");
            std::process::exit(1);
        }
    }
}
