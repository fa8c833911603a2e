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
//!   scenarios without the relay, over a minimal HTTP/1.1 client ([`Plain`]): the request bytes
//!   are built once, each exchange is one write and as few reads as the answer needs. It
//!   shares a CPU with the upstream, so it must cost little (ureq cost ~40 µs per request).
//!
//! Prints the summary in the format of the harness's wrk script (`VEILBENCH key=value` lines)
//! so the harness parses both alike.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

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
    /// Empty: no body (e.g. GET). Several: cycled.
    bodies: Vec<Vec<u8>>,
    /// Plain mode: the whole HTTP/1.1 request per body (one if there is none), built once.
    wire: Vec<Vec<u8>>,
}

impl Request {
    fn body(&self, i: u64) -> Option<&[u8]> {
        let n = self.bodies.len() as u64;
        (n > 0).then(|| &self.bodies[(i % n) as usize][..])
    }

    fn wire(&self, i: u64) -> &[u8] {
        &self.wire[(i % self.wire.len() as u64) as usize]
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

fn wire_request(
    a: &Args,
    host: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut w = format!("{} {} HTTP/1.1\r\nhost: {host}\r\n", a.method, a.path).into_bytes();
    for (n, v) in headers {
        w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        w.extend_from_slice(format!("content-length: {}\r\n\r\n", b.len()).as_bytes());
        w.extend_from_slice(b);
    } else {
        w.extend_from_slice(b"\r\n");
    }
    w
}

/// One keep-alive HTTP/1.1 connection (reopened after an error or a `connection: close`).
struct Plain {
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Plain {
    fn new(host: String) -> Self {
        Plain {
            host,
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    fn exchange(&mut self, wire: &[u8]) -> Result<u16, String> {
        let reused = self.stream.is_some();
        match self.try_exchange(wire) {
            Ok(v) => Ok(v),
            // A kept-alive connection the server closed meanwhile: once more on a new one.
            Err((e, nothing_read)) => {
                self.stream = None;
                if reused && nothing_read {
                    self.try_exchange(wire).map_err(|(e, _)| {
                        self.stream = None;
                        e
                    })
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Err carries whether no byte of an answer had arrived.
    fn try_exchange(&mut self, wire: &[u8]) -> Result<u16, (String, bool)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.host).map_err(|e| (format!("connect: {e}"), false))?;
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(("no connection".into(), false));
        };
        stream
            .write_all(wire)
            .map_err(|e| (format!("write: {e}"), true))?;
        let buf = &mut self.buf;
        buf.clear();
        // Status line and headers.
        let head_end = loop {
            if let Some(i) = find(buf, b"\r\n\r\n") {
                break i + 4;
            }
            if fill(stream, buf).map_err(|e| (e, buf.is_empty()))? == 0 {
                return Err(("connection closed before the answer".into(), buf.is_empty()));
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| ("answer head is not UTF-8".to_string(), false))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| (format!("bad status line {:?}", head.lines().next()), false))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for line in head.split("\r\n").skip(1) {
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            let (n, v) = (n.trim(), v.trim());
            if n.eq_ignore_ascii_case("content-length") {
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| ("bad content-length".to_string(), false))?,
                );
            } else if n.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if n.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        // The whole body, read and dropped.
        if chunked {
            let mut pos = head_end;
            loop {
                let line_end = loop {
                    if let Some(i) = find(&buf[pos..], b"\r\n") {
                        break pos + i;
                    }
                    need_more(stream, buf)?;
                };
                let size_text = std::str::from_utf8(&buf[pos..line_end]).unwrap_or("");
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| (format!("bad chunk size {size_text:?}"), false))?;
                pos = line_end + 2;
                if size == 0 {
                    // Trailers (if any) end with an empty line.
                    loop {
                        if buf[pos..].starts_with(b"\r\n") {
                            break;
                        }
                        if find(&buf[pos..], b"\r\n\r\n").is_some() {
                            break;
                        }
                        need_more(stream, buf)?;
                    }
                    break;
                }
                while buf.len() < pos + size + 2 {
                    need_more(stream, buf)?;
                }
                pos += size + 2;
            }
        } else if let Some(n) = length {
            while buf.len() < head_end + n {
                need_more(stream, buf)?;
            }
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // No length: the body ends with the connection.
            while fill(stream, buf).map_err(|e| (e, false))? > 0 {}
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// Reads what is there (at most 64 KiB) onto the end of `buf`; 0 at the end of the stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let old = buf.len();
    buf.resize(old + 64 * 1024, 0);
    let r = stream.read(&mut buf[old..]);
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(old + n);
    r.map_err(|e| format!("read: {e}"))
}

fn need_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), (String, bool)> {
    match fill(stream, buf) {
        Ok(0) => Err(("connection closed inside the answer".into(), false)),
        Ok(_) => Ok(()),
        Err(e) => Err((e, false)),
    }
}

impl Sender {
    /// One exchange (request `i` of the body cycle); the answer's status (whole body read).
    fn send(&mut self, r: &Request, i: u64) -> Result<u16, String> {
        match self {
            Sender::Relay(c) => c
                .request(&r.method, &r.path, &r.headers, r.body(i))
                .map(|a| a.status)
                .map_err(|e| e.to_string()),
            Sender::Plain(p) => p.exchange(r.wire(i)),
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
        Mode::Plain => Sender::Plain(Plain::new(authority(&a.url)?)),
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
    let wire = if bodies.is_empty() {
        vec![wire_request(&a, &host, &headers, None)]
    } else {
        bodies
            .iter()
            .map(|b| wire_request(&a, &host, &headers, Some(b)))
            .collect()
    };
    let req = Arc::new(Request {
        method: a.method.clone(),
        path: a.path.clone(),
        headers,
        bodies,
        wire,
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
