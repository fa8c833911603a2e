//! A recording TCP hop: a tiny proxy that forwards every connection to a target (Envoy) and
//! keeps every byte it carried, in both directions. It stands where a CDN, load balancer or
//! WAF would: the relay tests check that nothing it saw contains the request's path, query,
//! application headers or body in plaintext.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes carried, per direction.
#[derive(Default)]
struct Recording {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

pub struct RecordingHop {
    pub addr: SocketAddr,
    rec: Arc<Mutex<Recording>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, rec: Arc<Mutex<Recording>>, up: bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                {
                    let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
                    if up {
                        r.to_server.extend_from_slice(chunk);
                    } else {
                        r.to_client.extend_from_slice(chunk);
                    }
                }
                if to.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl RecordingHop {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: SocketAddr) -> RecordingHop {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("recording hop: cannot listen: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("recording hop: {e}"));
        let rec = Arc::new(Mutex::new(Recording::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec2, stop2) = (Arc::clone(&rec), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let timeout = Some(crate::http::IO_TIMEOUT);
                for s in [&client, &server] {
                    let _ = s.set_read_timeout(timeout);
                    let _ = s.set_nodelay(true);
                }
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let r = Arc::clone(&rec2);
                std::thread::spawn(move || pump(client, server, r, true));
                let r = Arc::clone(&rec2);
                std::thread::spawn(move || pump(s2, c2, r, false));
            }
        });
        RecordingHop {
            addr,
            rec,
            stop,
            accept: Some(accept),
        }
    }

    /// Everything clients sent through the hop so far.
    pub fn to_server(&self) -> Vec<u8> {
        self.rec
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_server
            .clone()
    }

    /// Everything the server answered through the hop so far.
    pub fn to_client(&self) -> Vec<u8> {
        self.rec
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_client
            .clone()
    }

    /// Both directions.
    pub fn all(&self) -> Vec<u8> {
        let r = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = r.to_server.clone();
        all.extend_from_slice(&r.to_client);
        all
    }

    pub fn clear(&self) {
        let mut r = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        r.to_server.clear();
        r.to_client.clear();
    }
}

/// True if `needle` occurs in `haystack` (byte-wise).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Drop for RecordingHop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hop forwards both ways and records exactly what it carried.
    #[test]
    fn forwards_and_records() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong:").unwrap();
            s.write_all(&buf).unwrap();
        });
        let hop = RecordingHop::start(target);
        let mut c = TcpStream::connect(hop.addr).unwrap();
        c.write_all(b"hello").unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        echo.join().unwrap();
        assert_eq!(answer, b"pong:hello");
        assert_eq!(hop.to_server(), b"hello");
        // The server side may still be flushing into the record when the client saw EOF.
        crate::wait_for("the hop's record", Duration::from_secs(5), || {
            (hop.to_client() == b"pong:hello").then_some(())
        });
        assert!(contains(&hop.all(), b"lo"));
        assert!(!contains(&hop.all(), b"absent"));
    }
}
