//! `veil-relay`: one request through Veil Relay, like a tiny curl. The decoded response body
//! goes to stdout, `HTTP <status>` to stderr. Exit 0 for any decoded answer (22 with
//! `--fail` when the status is 400 or more), 1 when the relay refused or the transport or
//! protocol failed, 2 for bad usage.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use veil_relay::{parse_server_key, Client, ClientError, Options, DEFAULT_URL};

#[derive(Parser)]
#[command(
    name = "veil-relay",
    version,
    about = "Send one request through Veil Relay"
)]
struct Args {
    /// The relay: origin and prefix.
    #[arg(long, env = "VEIL_RELAY_URL", default_value = DEFAULT_URL)]
    url: String,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The body: `@FILE`, `@-` for stdin, or the text itself. Without it no body is sent.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Exit 22 when the decoded status is 400 or more.
    #[arg(long)]
    fail: bool,
    /// Also print the decoded response headers to stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// The relay's pinned server key (required): the base64url key configuration
    /// `veil-keyservice relay-key show` prints, or a file holding it. Take it out of band,
    /// never from the relay's `P/keys` through the hops it protects against.
    #[arg(long, env = "VEIL_RELAY_SERVER_KEY", value_name = "FILE|B64")]
    server_key: String,
    /// Pairs to set up.
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    /// The request method, e.g. GET.
    method: String,
    /// Path and query, e.g. /app/echo?x=1.
    path: String,
}

fn body(data: &str) -> Result<Vec<u8>, String> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| format!("stdin: {e}"))?;
            Ok(b)
        }
        Some(file) => std::fs::read(file).map_err(|e| format!("{file}: {e}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((n, v)) = h.split_once(':') else {
            eprintln!("veil-relay: header {h:?} is not `name: value`");
            return ExitCode::from(2);
        };
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let data = match args.data.as_deref().map(body).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("veil-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let server_key = match parse_server_key(&args.server_key) {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("veil-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        pairs: args.pairs.max(1),
        server_key,
        ..Options::default()
    };
    let result = Client::new(&args.url, opts).and_then(|c| {
        c.request(
            &args.method.to_ascii_uppercase(),
            &args.path,
            &headers,
            data.as_deref(),
        )
    });
    match result {
        Ok(r) => {
            eprintln!("HTTP {}", r.status);
            if args.verbose {
                for (n, v) in &r.headers {
                    eprintln!("{n}: {v}");
                }
            }
            let mut out = std::io::stdout().lock();
            if out.write_all(&r.body).and_then(|()| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            if args.fail && r.status >= 400 {
                ExitCode::from(22)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ ClientError::Usage(_)) => {
            eprintln!("veil-relay: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("veil-relay: {e}");
            ExitCode::from(1)
        }
    }
}
