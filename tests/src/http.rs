//! A minimal HTTP/1.1 client over `std::net::TcpStream`: one exchange per connection, exact
//! control of every header sent, bounded by timeouts. Enough for tests; nothing hidden.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub fn get(addr: SocketAddr, target: &str) -> io::Result<Response> {
    request(addr, "GET", target, &[], b"")
}

/// Sends the request line, `host` (the address, unless the caller gives one), the given headers, `content-length` (unless a GET/DELETE
/// has no body, or the caller set `transfer-encoding`) and `connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    let mut chunked = false;
    for (n, v) in headers {
        chunked |= n.eq_ignore_ascii_case("transfer-encoding");
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !chunked && !(body.is_empty() && (method == "GET" || method == "DELETE")) {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    let sent = send_all(&mut stream, head.as_bytes(), body, chunked);
    // A server may answer early (e.g. 413) and close while the body is still being sent:
    // the write then fails, but the answer is there to read.
    let mut raw = Vec::new();
    let read = read_until_close(&mut stream, &mut raw);
    match (sent, read) {
        (_, Ok(_)) if !raw.is_empty() => parse(&raw, method == "HEAD"),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(_)) => Err(bad("connection closed without a response")),
    }
}

/// Reads until the peer closes. A reset after an early answer (the peer closed with unread
/// request bytes) still leaves that answer in `raw`; the caller parses what arrived.
fn read_until_close(stream: &mut TcpStream, raw: &mut Vec<u8>) -> io::Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(raw.len()),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if raw.is_empty() => return Err(e),
            Err(_) => return Ok(raw.len()),
        }
    }
}

fn send_all(stream: &mut TcpStream, head: &[u8], body: &[u8], chunked: bool) -> io::Result<()> {
    stream.write_all(head)?;
    if chunked {
        if !body.is_empty() {
            stream.write_all(format!("{:x}\r\n", body.len()).as_bytes())?;
            stream.write_all(body)?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")?;
    } else {
        stream.write_all(body)?;
    }
    stream.flush()
}

pub fn parse_response(raw: &[u8]) -> io::Result<Response> {
    parse(raw, false)
}

/// `head_only`: the answer to a HEAD request (framing headers describe no body).
fn parse(raw: &[u8], head_only: bool) -> io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of response head"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("response head not UTF-8"))?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .ok_or_else(|| bad(format!("bad header line {l:?}")))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    resp.body = if head_only {
        Vec::new()
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if rest.len() != len {
            return Err(bad(format!(
                "body has {} bytes, content-length {len}",
                rest.len()
            )));
        }
        rest.to_vec()
    } else if resp.header("transfer-encoding") == Some("chunked") {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

pub fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no chunk size line"))?;
        let size_str = std::str::from_utf8(&data[..eol]).map_err(|_| bad("chunk size"))?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(|| bad("short chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or_else(|| bad("short chunk"))?;
    }
}
