//! Scripted fake filter services for the failure-policy tests, run as threads of the
//! test process: a Postfix policy server (`policy`) and a milter (`milter`, protocol 6)
//! that misbehave on cue (never answer, answer garbage, close mid-reply, crash at a
//! given stage, offer a protocol version or actions the MTA did not); `mta` starts
//! `sloopd` with a syslog receiver that collects its log lines exactly as a syslog
//! daemon would get them (`sloop/smtpd[pid]: warning: policy NAME: ...`); `dialogue`
//! holds the SMTP steps and the replies the tests expect.
//!
//! A fake records what it was asked (requests, milter commands, connections) so a test
//! can check that a dropped milter is not asked again, that a policy service was tried
//! the configured number of times, and so on. Everything stops when the fake is
//! dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod dialogue;
pub mod milter;
pub mod mta;
pub mod policy;

use sloop_tests::free_port;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A connected client socket of a fake service, TCP or unix.
trait Peer: Read + Write + Send {
    fn set_timeout(&self, d: Duration);
}

impl Peer for TcpStream {
    fn set_timeout(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
}

impl Peer for UnixStream {
    fn set_timeout(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
}

/// Where a fake listens.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Box<dyn Peer>> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                Box::new(s) as Box<dyn Peer>
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                Box::new(s) as Box<dyn Peer>
            }),
        }
    }

    fn set_nonblocking(&self) {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true).unwrap(),
            Listener::Unix(l) => l.set_nonblocking(true).unwrap(),
        }
    }
}

/// State shared between a fake's threads and the test.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    connections: AtomicUsize,
    /// Policy: each complete request, as text. Milter: one line per command received,
    /// `<conn>:<command char>` (e.g. `0:O`, `0:C`, `1:O`).
    seen: Mutex<Vec<String>>,
}

/// Runs `serve` for each accepted connection until the fake is dropped.
fn run_listener(
    listener: Listener,
    shared: Arc<Shared>,
    serve: impl Fn(Box<dyn Peer>, usize, &Shared) + Send + Sync + 'static,
) {
    listener.set_nonblocking();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        while !shared.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok(peer) => {
                    let n = shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = shared.clone();
                    let serve = serve.clone();
                    std::thread::spawn(move || {
                        peer.set_timeout(Duration::from_millis(100));
                        serve(peer, n, &shared);
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

/// Reads exactly `buf.len()` octets, polling the stop flag; false on EOF or stop.
fn read_full(peer: &mut dyn Peer, buf: &mut [u8], shared: &Shared) -> bool {
    let mut got = 0;
    while got < buf.len() {
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        match peer.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Keeps a connection open, reading and discarding, until the peer closes or the fake
/// stops: a service that accepted and went silent.
fn hold(peer: &mut dyn Peer, shared: &Shared) {
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::Relaxed) {
        match peer.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// How a fake is reached: the `socket` value for the config.
pub enum Endpoint {
    /// `inet:127.0.0.1:<port>`.
    Tcp,
    /// `unix:<path>`.
    Unix(PathBuf),
}

fn bind(endpoint: Endpoint) -> (Listener, String) {
    match endpoint {
        Endpoint::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            (Listener::Tcp(l), format!("inet:127.0.0.1:{port}"))
        }
        Endpoint::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).unwrap();
            (Listener::Unix(l), format!("unix:{}", path.display()))
        }
    }
}

/// A socket value nothing listens on: a TCP port that refuses.
pub fn refused_socket() -> String {
    format!("inet:127.0.0.1:{}", free_port())
}

/// Path of a socket in `dir` (kept short: sun_path holds 108 octets).
pub fn sock_path(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    assert!(
        p.as_os_str().len() < 100,
        "socket path too long: {}",
        p.display()
    );
    p
}
