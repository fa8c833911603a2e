//! `veil-bench-load`: the load generator of the benchmark (bench/run.py) wherever wrk falls
//! short: the relay scenarios (every encoded request carries a fresh sequence number, a
//! replayed one is refused, so each must be encoded anew) and the fixed-rate phase of every
//! scenario (wrk's Lua `delay()` has 1 ms resolution: it sends in bursts on millisecond ticks).
//!
//! `--connections` threads, each with its own keep-alive connection:
//!
//! * closed loop (no `--rate`): each thread sends one request after the other until
//!   `--duration` is over (or `--requests` were sent in total);
//! * open loop (`--rate R`): one shared schedule of send slots, slot i due at t0 + i/R, none
//!   due past `--duration`. A free thread takes the next slot, sleeps until it is due and
//!   sends; latency counts from the due time, so a slot that waited for a free connection
//!   shows it (no coordinated omission). Lateness (actual send − due) is reported apart.
//!
//! Modes:
//!
//! * `--mode relay`: each thread has its own [`veil_relay::Client`] (one pair; discovery and
//!   pairing happen before the clock starts) and sends the request encoded through the relay
//!   prefix of `--url`;
//! * `--mode plain`: the same request in plaintext, for the control and the treatment of the
//!   scenarios without the relay, over hyper's HTTP/1.1 client connection ([`Plain`], one per
//!   thread on its own current-thread runtime). It shares a CPU with the upstream, so it must
//!   cost little (ureq, the relay client's HTTP stack, cost ~40 µs per request).
//!
//! Prints the summary in the format of the harness's wrk script (`VEILBENCH key=value` lines)
//! so the harness parses both alike.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const NAME: &str = "veil-bench-load";
/// Longest allowed spin before a due time: more would cost the CPU the upstream shares.
const MAX_SPIN_US: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Relay,
    Plain,
}

#[derive(Debug, Parser)]
#[command(
    name = NAME,
    about = "Closed- or open-loop HTTP load, plaintext or through the Veil relay"
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
    /// The relay's pinned server key (relay mode): `veil-keyservice relay-key show`'s line,
    /// or a file holding it.
    #[arg(long, env = "VEIL_RELAY_SERVER_KEY", value_name = "FILE|B64")]
    server_key: Option<String>,
    #[arg(long, default_value = "POST")]
    method: String,
    /// The application's path (and query).
    #[arg(long)]
    path: String,
    /// Request body (file); none if absent.
    #[arg(long, conflicts_with = "bodies")]
    body: Option<PathBuf>,
    /// Many request bodies, one per line (no newline inside a body), cycled per request.
    #[arg(long)]
    bodies: Option<PathBuf>,
    /// Request headers, `name: value`.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load (open loop: no slot is due later).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Open loop: requests per second in total, evenly spaced. Closed loop if absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: wake this many µs before the due time and spin the rest (0..=20).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Stop after this many requests in total (e.g. 1 for a probe).
    #[arg(long)]
    requests: Option<u64>,
    /// Status every answer must have.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
}

enum Sender {
    Relay(Box<veil_relay::Client>),
    Plain(Plain),
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// Empty: no body (e.g. GET). Several: cycled (shared with the plain requests, no copy).
    bodies: Vec<Bytes>,
    /// Plain mode: `host:port` for the `host` header.
    host: String,
}

impl Request {
    fn body(&self, i: u64) -> Option<&[u8]> {
        let n = self.bodies.len() as u64;
        (n > 0).then(|| &self.bodies[(i % n) as usize][..])
    }

    /// Plain mode: request `i` of the body cycle.
    fn plain(&self, i: u64) -> Result<hyper::Request<Full<Bytes>>, String> {
        let n = self.bodies.len() as u64;
        let body = if n > 0 {
            self.bodies[(i % n) as usize].clone()
        } else {
            Bytes::new()
        };
        let mut b = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header(hyper::header::HOST, self.host.as_str());
        for (name, value) in &self.headers {
            b = b.header(name.as_str(), value.as_str());
        }
        b.body(Full::new(body)).map_err(|e| format!("request: {e}"))
    }
}

/// `host:port` of an `http://` URL (the only scheme the benchmark needs).
fn authority(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url:?}: only http:// is supported"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("--url {url:?}: no host"));
    }
    Ok(host.to_string())
}

/// One keep-alive HTTP/1.1 connection (hyper's client connection API), driven by this
/// thread's current-thread runtime; opened again after an error or a closed connection.
struct Plain {
    host: String,
    rt: tokio::runtime::Runtime,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Plain {
    fn new(host: String) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        Ok(Plain {
            host,
            rt,
            conn: None,
        })
    }

    /// One exchange; the answer's status (its whole body read).
    fn exchange(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<u16, String> {
        let Plain { host, rt, conn } = self;
        rt.block_on(async {
            // A kept-alive connection the server closed meanwhile is not ready: open anew.
            let mut sender = match conn.take() {
                Some(mut c) => match c.ready().await {
                    Ok(()) => c,
                    Err(_) => connect(host).await?,
                },
                None => connect(host).await?,
            };
            let result = async {
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("exchange: {e}"))?;
                let status = resp.status().as_u16();
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e}"))?;
                Ok(status)
            }
            .await;
            if result.is_ok() {
                *conn = Some(sender);
            }
            result
        })
    }
}

async fn connect(host: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Runs whenever this thread's runtime runs, i.e. during each exchange.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

impl Sender {
    /// One exchange (request `i` of the body cycle); the answer's status (whole body read).
    fn send(&mut self, r: &Request, i: u64) -> Result<u16, String> {
        match self {
            Sender::Relay(c) => c
                .request(&r.method, &r.path, &r.headers, r.body(i))
                .map(|a| a.status)
                .map_err(|e| e.to_string()),
            Sender::Plain(p) => p.exchange(r.plain(i)?),
        }
    }
}

fn sender(a: &Args) -> Result<Sender, String> {
    Ok(match a.mode {
        Mode::Relay => {
            let base = format!("{}{}", a.url.trim_end_matches('/'), a.prefix);
            let key = a
                .server_key
                .as_deref()
                .ok_or("relay mode needs --server-key (veil-keyservice relay-key show)")?;
            let opts = veil_relay::Options {
                pairs: 1,
                server_key: Some(veil_relay::parse_server_key(key).map_err(|e| e.to_string())?),
                ..Default::default()
            };
            let c = veil_relay::Client::new(&base, opts).map_err(|e| e.to_string())?;
            c.connect().map_err(|e| format!("relay setup: {e}"))?;
            Sender::Relay(Box::new(c))
        }
        Mode::Plain => Sender::Plain(Plain::new(authority(&a.url)?)?),
    })
}

/// Timer slack 1 µs (default 50 µs): `sleep` then wakes within a few µs of the due time
/// instead of being batched with other timers.
fn tight_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long and only changes this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// The open-loop schedule shared by every thread.
struct Schedule {
    /// Set by the main thread just before the start barrier opens.
    t0: OnceLock<Instant>,
    next: AtomicU64,
    slots: u64,
    gap_secs: f64,
    /// No slot is started after this (a server far behind would otherwise keep us forever);
    /// the slots left are reported as `slots_missed`.
    give_up: Duration,
    spin: Duration,
}

#[derive(Default)]
struct Outcome {
    lat: Vec<u32>,
    late: Vec<u32>,
    err_status: u64,
    err_other: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn record(&mut self, result: Result<u16, String>, expect: u16, latency: Duration) {
        match result {
            Ok(st) if st == expect => self.lat.push(micros(latency)),
            Ok(st) => {
                self.err_status += 1;
                self.first_error.get_or_insert(format!("status {st}"));
            }
            Err(e) => {
                self.err_other += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

fn closed_loop(
    s: &mut Sender,
    req: &Request,
    sent: &AtomicU64,
    limit: Option<u64>,
    duration: Duration,
    expect: u16,
    offset: u64,
) -> Outcome {
    let mut out = Outcome {
        lat: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut k = offset;
    while t0.elapsed() < duration {
        let n = sent.fetch_add(1, Ordering::Relaxed);
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        let t = Instant::now();
        let result = s.send(req, k);
        k += 1;
        out.record(result, expect, t.elapsed());
    }
    out
}

fn open_loop(s: &mut Sender, req: &Request, sch: &Schedule, expect: u16) -> Outcome {
    let mut out = Outcome {
        lat: Vec::with_capacity(1 << 14),
        late: Vec::with_capacity(1 << 14),
        ..Default::default()
    };
    let t0 = *sch.t0.get_or_init(Instant::now);
    loop {
        let i = sch.next.fetch_add(1, Ordering::Relaxed);
        if i >= sch.slots || t0.elapsed() > sch.give_up {
            break;
        }
        let due = t0 + Duration::from_secs_f64(i as f64 * sch.gap_secs);
        let now = Instant::now();
        if due > now + sch.spin {
            std::thread::sleep(due - now - sch.spin);
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        out.late.push(micros(start - due));
        let result = s.send(req, i);
        out.record(result, expect, due.elapsed());
    }
    out
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{NAME}: {msg}");
    ExitCode::from(2)
}

fn read_bodies(a: &Args) -> Result<Vec<Vec<u8>>, String> {
    if let Some(p) = &a.body {
        return std::fs::read(p)
            .map(|b| vec![b])
            .map_err(|e| format!("{}: {e}", p.display()));
    }
    let Some(p) = &a.bodies else {
        return Ok(Vec::new());
    };
    let text = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let bodies: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if bodies.is_empty() {
        return Err(format!("{}: no body (one per line)", p.display()));
    }
    Ok(bodies)
}

fn main() -> ExitCode {
    let a = Args::parse();
    if !(a.duration.is_finite() && a.duration > 0.0) {
        return fail("--duration must be a positive number of seconds");
    }
    if a.connections == 0 {
        return fail("--connections must be at least 1");
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return fail("--rate must be a positive number of requests per second");
        }
    }
    if a.spin_us > MAX_SPIN_US {
        return fail(format!("--spin-us must be at most {MAX_SPIN_US}"));
    }
    let bodies = match read_bodies(&a) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut headers = Vec::new();
    for h in &a.headers {
        match h.split_once(':') {
            Some((n, v)) if !n.trim().is_empty() => {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()))
            }
            _ => return fail(format!("header {h:?} is not `name: value`")),
        }
    }
    let host = match authority(&a.url) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let req = Arc::new(Request {
        method: a.method.clone(),
        path: a.path.clone(),
        headers,
        bodies: bodies.into_iter().map(Bytes::from).collect(),
        host,
    });
    let n = a.connections;
    tight_timer_slack(); // threads inherit it; each sets it again anyway
                         // Set up every sender (relay: discovery + pairing) before the clock starts.
    let senders: Vec<Sender> = match (0..n).map(|_| sender(&a)).collect::<Result<_, _>>() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(1);
        }
    };
    let duration = Duration::from_secs_f64(a.duration);
    let schedule = a.rate.map(|rate| {
        let mut slots = (a.duration * rate).ceil() as u64;
        if let Some(l) = a.requests {
            slots = slots.min(l);
        }
        Arc::new(Schedule {
            t0: OnceLock::new(),
            next: AtomicU64::new(0),
            slots,
            gap_secs: 1.0 / rate,
            give_up: duration + duration.max(Duration::from_secs(2)),
            spin: Duration::from_micros(a.spin_us),
        })
    });
    let sent = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let (limit, expect) = (a.requests, a.expect_status);
    let mut threads = Vec::with_capacity(n);
    for (k, mut s) in senders.into_iter().enumerate() {
        let (req, sent, start) = (Arc::clone(&req), Arc::clone(&sent), Arc::clone(&start));
        let schedule = schedule.clone();
        threads.push(std::thread::spawn(move || {
            tight_timer_slack();
            start.wait();
            match schedule {
                Some(sch) => open_loop(&mut s, &req, &sch, expect),
                // Each thread starts elsewhere in the body cycle (as the wrk script does).
                None => closed_loop(&mut s, &req, &sent, limit, duration, expect, k as u64 * 997),
            }
        }));
    }
    // Open loop: the first slot is due a little later, so every thread is waiting for it.
    let t0 = Instant::now() + Duration::from_millis(if schedule.is_some() { 2 } else { 0 });
    if let Some(sch) = &schedule {
        let _ = sch.t0.set(t0);
    }
    start.wait();
    let mut all = Outcome::default();
    for t in threads {
        match t.join() {
            Ok(o) => {
                all.lat.extend(o.lat);
                all.late.extend(o.late);
                all.err_status += o.err_status;
                all.err_other += o.err_other;
                if all.first_error.is_none() {
                    all.first_error = o.first_error;
                }
            }
            Err(_) => all.err_other += 1,
        }
    }
    let elapsed = t0.elapsed();
    let lat = &mut all.lat;
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
        "VEILBENCH requests={count} duration_us={} bytes=0 err_connect=0 err_read={} err_write=0 err_status={} err_timeout=0",
        elapsed.as_micros(),
        all.err_other,
        all.err_status
    );
    println!(
        "VEILBENCH lat_min_us={} lat_mean_us={mean:.1} lat_stdev_us={:.1} lat_max_us={}",
        lat.first().copied().unwrap_or(0),
        var.sqrt(),
        lat.last().copied().unwrap_or(0)
    );
    for p in [50.0, 75.0, 90.0, 99.0, 99.9, 99.99] {
        println!("VEILBENCH p{p}_us={}", percentile(lat, p));
    }
    if let (Some(sch), Some(rate)) = (&schedule, a.rate) {
        let late = &mut all.late;
        late.sort_unstable();
        let issued = late.len() as u64;
        let secs = elapsed.as_secs_f64();
        println!(
            "VEILBENCH rate_target={rate:.1} rate_achieved={:.1} slots={} slots_missed={} late_p50_us={} late_p99_us={} late_p99.9_us={} late_max_us={}",
            if secs > 0.0 { count as f64 / secs } else { 0.0 },
            sch.slots,
            sch.slots.saturating_sub(issued),
            percentile(late, 50.0),
            percentile(late, 99.0),
            percentile(late, 99.9),
            late.last().copied().unwrap_or(0)
        );
    }
    if let Some(e) = all.first_error {
        eprintln!("{NAME}: first error: {e}");
    }
    ExitCode::SUCCESS
}
