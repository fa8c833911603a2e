//! `veil-bench-relay-load`: the load generator of the benchmark's relay scenarios
//! (bench/run.py). wrk cannot drive the relay: every encoded request carries a fresh
//! sequence number (a replayed one is refused), so each must be encoded anew.
//!
//! Fixed concurrency (closed loop): `--connections` threads, each with its own keep-alive
//! connection, send one request after the other until `--duration` is over (or `--requests`
//! were sent in total).
//!
//! * `--mode relay`: each thread has its own [`veil_relay::Client`] (one pair; discovery and
//!   pairing happen before the clock starts) and sends the request encoded through the relay
//!   prefix of `--url`;
//! * `--mode plain`: the same request in plaintext (`ureq`, the client library's HTTP
//!   stack), for the control Envoy without the filter.
//!
//! Prints the summary in wrk's script format (`VEILBENCH key=value` lines) so the harness
//! parses both alike.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Relay,
    Plain,
}

#[derive(Debug, Parser)]
#[command(
    name = "veil-bench-relay-load",
    about = "Closed-loop load through the Veil relay (or plaintext)"
)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Envoy's listener, e.g. http://127.0.0.1:10000.
    #[arg(long)]
    url: String,
    /// The relay prefix (relay mode).
    #[arg(long, default_value = "/veil")]
    prefix: String,
    #[arg(long, default_value = "POST")]
    method: String,
    /// The application's path (and query).
    #[arg(long)]
    path: String,
    /// Request body (file); none if absent.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Request headers, `name: value`.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests in total (e.g. 1 for a probe).
    #[arg(long)]
    requests: Option<u64>,
    /// Status every answer must have.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
}

enum Sender {
    Relay(Box<veil_relay::Client>),
    Plain(ureq::Agent),
}

struct Request {
    method: String,
    url: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    has_body: bool,
}

impl Sender {
    /// One exchange; the answer's status (whole body read).
    fn send(&self, r: &Request) -> Result<u16, String> {
        match self {
            Sender::Relay(c) => c
                .request(
                    &r.method,
                    &r.path,
                    &r.headers,
                    r.has_body.then_some(&r.body[..]),
                )
                .map(|a| a.status)
                .map_err(|e| e.to_string()),
            Sender::Plain(agent) => {
                let uri = format!("{}{}", r.url, r.path);
                let mut b = ureq::http::Request::builder()
                    .method(r.method.as_str())
                    .uri(uri);
                for (n, v) in &r.headers {
                    b = b.header(n, v);
                }
                let req = b.body(r.body.clone()).map_err(|e| e.to_string())?;
                let mut resp = agent.run(req).map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                resp.body_mut().read_to_vec().map_err(|e| e.to_string())?;
                Ok(status)
            }
        }
    }
}

fn sender(a: &Args) -> Result<Sender, String> {
    Ok(match a.mode {
        Mode::Relay => {
            let base = format!("{}{}", a.url.trim_end_matches('/'), a.prefix);
            let opts = veil_relay::Options {
                pairs: 1,
                ..Default::default()
            };
            let c = veil_relay::Client::new(&base, opts).map_err(|e| e.to_string())?;
            c.connect().map_err(|e| format!("relay setup: {e}"))?;
            Sender::Relay(Box::new(c))
        }
        Mode::Plain => {
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(30)))
                .build();
            Sender::Plain(ureq::Agent::new_with_config(config))
        }
    })
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let a = Args::parse();
    let body = match &a.body {
        Some(p) => std::fs::read(p).unwrap_or_else(|e| {
            eprintln!("veil-bench-relay-load: {}: {e}", p.display());
            std::process::exit(2)
        }),
        None => Vec::new(),
    };
    let headers = a
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let req = Arc::new(Request {
        method: a.method.clone(),
        url: a.url.trim_end_matches('/').to_string(),
        path: a.path.clone(),
        headers,
        has_body: a.body.is_some(),
        body,
    });
    let n = a.connections.max(1);
    // Set up every sender (relay: discovery + pairing) before the clock starts.
    let senders: Vec<Sender> = match (0..n).map(|_| sender(&a)).collect::<Result<_, _>>() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veil-bench-relay-load: {e}");
            std::process::exit(1)
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let limit = a.requests;
    let duration = Duration::from_secs_f64(a.duration);
    let expect = a.expect_status;
    let mut threads = Vec::with_capacity(n);
    for s in senders {
        let (req, sent, start) = (Arc::clone(&req), Arc::clone(&sent), Arc::clone(&start));
        threads.push(std::thread::spawn(move || {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let (mut err_status, mut err_other) = (0u64, 0u64);
            let mut first_error = None;
            start.wait();
            let t0 = Instant::now();
            while t0.elapsed() < duration {
                if let Some(l) = limit {
                    if sent.fetch_add(1, Ordering::Relaxed) >= l {
                        break;
                    }
                }
                let t = Instant::now();
                match s.send(&req) {
                    Ok(st) if st == expect => {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32)
                    }
                    Ok(st) => {
                        err_status += 1;
                        first_error.get_or_insert(format!("status {st}"));
                    }
                    Err(e) => {
                        err_other += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, err_status, err_other, first_error)
        }));
    }
    start.wait();
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let (mut es, mut eo) = (0, 0);
    let mut first = None;
    for t in threads {
        match t.join() {
            Ok((l, s, o, f)) => {
                lat.extend(l);
                es += s;
                eo += o;
                if first.is_none() {
                    first = f;
                }
            }
            Err(_) => eo += 1,
        }
    }
    let elapsed = t0.elapsed();
    lat.sort_unstable();
    let count = lat.len() as u64;
    let mean = if count > 0 {
        lat.iter().map(|&x| f64::from(x)).sum::<f64>() / count as f64
    } else {
        0.0
    };
    let var = if count > 1 {
        lat.iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (count - 1) as f64
    } else {
        0.0
    };
    println!(
        "VEILBENCH requests={count} duration_us={} bytes=0 err_connect=0 err_read={eo} err_write=0 err_status={es} err_timeout=0",
        elapsed.as_micros()
    );
    println!(
        "VEILBENCH lat_min_us={} lat_mean_us={mean:.1} lat_stdev_us={:.1} lat_max_us={}",
        lat.first().copied().unwrap_or(0),
        var.sqrt(),
        lat.last().copied().unwrap_or(0)
    );
    for p in [50.0, 75.0, 90.0, 99.0, 99.9, 99.99] {
        println!("VEILBENCH p{p}_us={}", percentile(&lat, p));
    }
    if let Some(e) = first {
        eprintln!("veil-bench-relay-load: first error: {e}");
    }
}
