//! Scripted fake filter services for the failure-policy tests, run as threads of the
//! test process: a Postfix policy server and a milter (protocol 6) that misbehave on
//! cue (never answer, answer garbage, close mid-reply, crash at a given stage, offer a
//! protocol version or actions the MTA did not), and a syslog receiver that collects
//! the daemon's log lines exactly as a syslog daemon would get them
//! (`sloop/smtpd[pid]: warning: policy NAME: ...`).
//!
//! A fake records what it was asked (requests, milter commands, connections) so a test
//! can check that a dropped milter is not asked again, that a policy service was tried
//! the configured number of times, and so on. Everything stops when the fake is
//! dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use sloop_tests::{free_port, wait_until, Daemon, Smtp, TestDir};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

// ---------------------------------------------------------------------------------
// Policy server
// ---------------------------------------------------------------------------------

/// What the fake policy server does with one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Writes these octets (normally `action=...\n\n`) and waits for the next request.
    Raw(Vec<u8>),
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// Writes these octets, then closes the connection.
    CloseAfter(Vec<u8>),
}

impl Answer {
    /// `action=<text>\n\n`.
    pub fn action(text: &str) -> Answer {
        Answer::Raw(format!("action={text}\n\n").into_bytes())
    }
}

/// A fake Postfix policy server: request N (counted over all connections) gets
/// `script[N]`, requests past the end get the script's last answer.
pub struct FakePolicy {
    pub socket: String,
    shared: Arc<Shared>,
}

impl FakePolicy {
    pub fn start(endpoint: Endpoint, script: Vec<Answer>) -> FakePolicy {
        assert!(!script.is_empty());
        let (listener, socket) = bind(endpoint);
        let shared = Arc::new(Shared::default());
        let next = Arc::new(AtomicUsize::new(0));
        run_listener(listener, shared.clone(), move |mut peer, _, shared| {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // A request ends with an empty line.
                while !has_request(&buf) {
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match peer.read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        Err(_) => return,
                    }
                }
                let end = buf.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
                let request: Vec<u8> = buf.drain(..end).collect();
                shared
                    .seen
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                let n = next.fetch_add(1, Ordering::SeqCst);
                let answer = script[n.min(script.len() - 1)].clone();
                match answer {
                    Answer::Raw(bytes) => {
                        if peer.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                    Answer::Silent => return hold(&mut *peer, shared),
                    Answer::CloseAfter(bytes) => {
                        let _ = peer.write_all(&bytes);
                        return;
                    }
                }
            }
        });
        FakePolicy { socket, shared }
    }

    /// Every request received so far (complete ones only).
    pub fn requests(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakePolicy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn has_request(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n")
}

// ---------------------------------------------------------------------------------
// Milter
// ---------------------------------------------------------------------------------

/// Milter commands (MTA to filter), by their protocol letter.
pub mod cmd {
    pub const OPTNEG: u8 = b'O';
    pub const MACRO: u8 = b'D';
    pub const CONNECT: u8 = b'C';
    pub const HELO: u8 = b'H';
    pub const MAIL: u8 = b'M';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const HEADER: u8 = b'L';
    pub const EOH: u8 = b'N';
    pub const BODY: u8 = b'B';
    pub const EOM: u8 = b'E';
    pub const ABORT: u8 = b'A';
    pub const QUIT: u8 = b'Q';
    pub const QUIT_NC: u8 = b'K';
    pub const UNKNOWN: u8 = b'U';
}

/// What a fake milter does, for every connection it gets.
#[derive(Debug, Clone)]
pub struct MilterScript {
    /// The version it answers the negotiation with.
    pub version: u32,
    /// The actions it asks for; `None` = exactly what the MTA offered.
    pub actions: Option<u32>,
    /// Closes the connection (as a crashed filter's kernel would) when this command
    /// arrives.
    pub crash_at: Option<u8>,
    /// Reads this command and never answers.
    pub silent_at: Option<u8>,
    /// Answers this command with a progress packet every 200 ms, forever.
    pub progress_at: Option<u8>,
    /// Stops reading when this command arrives (the connection stays open): the MTA's
    /// writes block once the socket buffers are full.
    pub stall_at: Option<u8>,
    /// Answers this command with these raw octets (whole packets, or garbage).
    pub raw_at: Option<(u8, Vec<u8>)>,
    /// Closes the connection right after writing `raw_at`'s octets.
    pub close_after_raw: bool,
}

impl Default for MilterScript {
    fn default() -> Self {
        MilterScript {
            version: 6,
            actions: None,
            crash_at: None,
            silent_at: None,
            progress_at: None,
            stall_at: None,
            raw_at: None,
            close_after_raw: false,
        }
    }
}

/// One milter packet: 4-octet big-endian length (command included), command, data.
pub fn packet(command: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(command);
    p.extend_from_slice(data);
    p
}

/// A `y` (reply code) packet with `text` (e.g. `250 2.0.0 fine`), NUL-terminated.
pub fn reply_code(text: &str) -> Vec<u8> {
    let mut d = text.as_bytes().to_vec();
    d.push(0);
    packet(b'y', &d)
}

/// A fake milter speaking enough of protocol 6 to reach any stage.
pub struct FakeMilter {
    pub socket: String,
    shared: Arc<Shared>,
}

impl FakeMilter {
    pub fn start(endpoint: Endpoint, script: MilterScript) -> FakeMilter {
        FakeMilter::start_each(endpoint, vec![script])
    }

    /// Connection N follows `scripts[N]` (the last one for any further connection).
    pub fn start_each(endpoint: Endpoint, scripts: Vec<MilterScript>) -> FakeMilter {
        assert!(!scripts.is_empty());
        let (listener, socket) = bind(endpoint);
        let shared = Arc::new(Shared::default());
        run_listener(listener, shared.clone(), move |mut peer, conn, shared| {
            let script = &scripts[conn.min(scripts.len() - 1)];
            serve_milter(&mut *peer, conn, shared, script);
        });
        FakeMilter { socket, shared }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The commands received on connection `conn` so far, as letters (`O`, `D`, `C`,
    /// ...), macros (`D`) left out.
    pub fn commands(&self, conn: usize) -> String {
        let prefix = format!("{conn}:");
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|c| *c != "D")
            .collect()
    }
}

impl Drop for FakeMilter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_milter(peer: &mut dyn Peer, conn: usize, shared: &Shared, s: &MilterScript) {
    loop {
        let mut len = [0u8; 4];
        if !read_full(peer, &mut len, shared) {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 1 << 20 {
            return;
        }
        let mut body = vec![0u8; len];
        if !read_full(peer, &mut body, shared) {
            return;
        }
        let command = body[0];
        let data = &body[1..];
        shared
            .seen
            .lock()
            .unwrap()
            .push(format!("{conn}:{}", command as char));
        if s.crash_at == Some(command) {
            return;
        }
        if s.silent_at == Some(command) {
            return hold(peer, shared);
        }
        if s.stall_at == Some(command) {
            while !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if s.progress_at == Some(command) {
            while !shared.stop.load(Ordering::Relaxed) {
                if peer.write_all(&packet(b'p', b"")).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            return;
        }
        if let Some((at, bytes)) = &s.raw_at {
            if *at == command {
                if peer.write_all(bytes).is_err() || s.close_after_raw {
                    return;
                }
                continue;
            }
        }
        let answer = match command {
            cmd::OPTNEG => {
                let offered = data
                    .get(4..8)
                    .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()));
                let mut d = s.version.to_be_bytes().to_vec();
                d.extend_from_slice(&s.actions.unwrap_or(offered).to_be_bytes());
                // Every event, each answered: the protocol flags a plain filter asks.
                d.extend_from_slice(&0u32.to_be_bytes());
                packet(b'O', &d)
            }
            cmd::MACRO | cmd::ABORT => continue,
            cmd::QUIT | cmd::QUIT_NC => return,
            _ => packet(b'c', b""),
        };
        if peer.write_all(&answer).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------
// Syslog receiver and the daemon
// ---------------------------------------------------------------------------------

/// Collects the RFC 3164 datagrams `log.target = "syslog"` sends, without the `<PRI>`:
/// `sloop/smtpd[123]: warning: policy p1: ...`.
pub struct Syslog {
    pub path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Syslog {
    pub fn start(path: PathBuf) -> Syslog {
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let text = match text.find('>') {
                        Some(i) if text.starts_with('<') => &text[i + 1..],
                        _ => &text[..],
                    };
                    l.lock()
                        .unwrap()
                        .push(text.trim_end_matches('\n').to_string());
                }
            }
        });
        Syslog { path, lines, stop }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The first line containing every one of `needles`, waiting up to `timeout`. A
    /// needle may leave out the queue ID (`warning: policy p: ...` finds
    /// `warning: 661B...: policy p: ...`): see [`without_id`].
    pub fn wait_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.lines().into_iter().find(|l| {
                let short = without_id(l);
                needles.iter().all(|n| l.contains(n)) || needles.iter().all(|n| short.contains(n))
            });
            found.is_some()
        });
        found
    }

    /// Lines containing `needle` (with or without their queue ID).
    pub fn count(&self, needle: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.contains(needle) || without_id(l).contains(needle))
            .count()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `sloopd -c config` in a mount namespace where `resolv` is /etc/resolv.conf.
fn spawn_with_resolv_conf(config: &Path, resolv: &Path) -> Daemon {
    let log = config.with_file_name("sloopd.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3""#)
        .arg("sh")
        .arg(resolv)
        .arg(sloop_tests::bin("sloopd"))
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    Daemon { child, log }
}

/// A syslog line's message without the program and pid, and without the queue ID (or
/// `NOQUEUE`) that follows the level word: `sloop/smtpd[7]: warning: 661B..: policy p: x`
/// gives `warning: policy p: x`.
pub fn without_id(line: &str) -> String {
    let msg = line.split_once("]: ").map_or(line, |(_, m)| m);
    let (level, rest) = ["warning: ", "error: ", "debug: "]
        .iter()
        .find_map(|w| msg.strip_prefix(w).map(|r| (*w, r)))
        .unwrap_or(("", msg));
    let rest = match rest.split_once(": ") {
        Some((id, r)) if is_queue_id(id) || id == "NOQUEUE" => r,
        _ => rest,
    };
    format!("{level}{rest}")
}

/// The queue ID right after the level word of a syslog line, if any.
pub fn queue_id(line: &str) -> Option<String> {
    let msg = line.split_once("]: ").map_or(line, |(_, m)| m);
    let rest = ["warning: ", "error: ", "debug: "]
        .iter()
        .find_map(|w| msg.strip_prefix(w))
        .unwrap_or(msg);
    let (id, _) = rest.split_once(": ")?;
    is_queue_id(id).then(|| id.to_string())
}

fn is_queue_id(s: &str) -> bool {
    s.len() >= 10
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A `sloopd` with filter hooks, logging to a [`Syslog`] of its own.
pub struct Mta {
    pub dir: TestDir,
    pub port: u16,
    pub log: Syslog,
    pub daemon: Daemon,
}

impl Mta {
    /// Starts sloopd with `overrides` (dotted keys) and `hooks` (TOML: `[[policy]]`,
    /// `[[milter]]`, `[access]`), and waits until it listens. `dir` may already hold
    /// the fakes' sockets.
    pub fn start(dir: TestDir, overrides: &[(&str, &str)], hooks: &str) -> Mta {
        Mta::start_with(dir, overrides, hooks, None)
    }

    /// As [`start`](Self::start), with `resolv_conf` bind-mounted on /etc/resolv.conf
    /// in a mount namespace of sloopd's own (`unshare -m`), so its DNS goes where the
    /// test says. Needs root (or CAP_SYS_ADMIN).
    pub fn start_with(
        dir: TestDir,
        overrides: &[(&str, &str)],
        hooks: &str,
        resolv_conf: Option<&Path>,
    ) -> Mta {
        let port = free_port();
        let log = Syslog::start(dir.path.join("syslog.sock"));
        let sock = format!("{:?}", log.path.display().to_string());
        let mut all: Vec<(&str, &str)> = vec![
            ("log.target", "\"syslog\""),
            ("log.syslog_socket", sock.as_str()),
        ];
        all.extend_from_slice(overrides);
        let config = dir.write_config(port, &all, hooks);
        let mut daemon = match resolv_conf {
            None => Daemon::spawn(&config),
            Some(resolv) => spawn_with_resolv_conf(&config, resolv),
        };
        // A probe connection would itself run the connect hooks and count as a
        // session: wait until the port is in LISTEN state instead.
        let mut exited = None;
        let ok = wait_until(Duration::from_secs(20), || {
            exited = daemon.child.try_wait().ok().flatten();
            exited.is_some() || listening(port)
        });
        assert!(
            ok && exited.is_none(),
            "sloopd did not listen on {port} ({exited:?}):\n{}\n{}",
            daemon.log_text(),
            log.text()
        );
        Mta {
            dir,
            port,
            log,
            daemon,
        }
    }

    /// A new SMTP client, with the instant it connected.
    pub fn connect(&self) -> (Smtp, Instant) {
        let start = Instant::now();
        (Smtp::connect(self.port), start)
    }

    /// Everything logged so far (syslog lines, then sloopd's stderr).
    pub fn all_logs(&self) -> String {
        format!(
            "--- syslog:\n{}\n--- stderr:\n{}",
            self.log.text(),
            self.daemon.log_text()
        )
    }

    /// Waits for a log line containing every one of `needles`; panics with the logs
    /// otherwise.
    pub fn expect_log(&self, needles: &[&str]) -> String {
        match self.log.wait_line(needles, Duration::from_secs(10)) {
            Some(l) => l,
            None => panic!("no log line with {needles:?}\n{}", self.all_logs()),
        }
    }
}

/// True when 127.0.0.1:`port` is a listening TCP socket (per /proc/net/tcp).
pub fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
}

impl Drop for Mta {
    /// `FAKE_HOOK_SHOW_LOGS=1` prints every test's logs, passing or not.
    fn drop(&mut self) {
        if std::env::var_os("FAKE_HOOK_SHOW_LOGS").is_some() {
            println!("{}", self.all_logs());
        }
    }
}

/// Asserts `elapsed` is at most `budget` plus the load margin.
pub fn within(elapsed: Duration, budget: Duration, what: &str) {
    assert!(
        elapsed <= budget + sloop_tests::LOAD_MARGIN,
        "{what}: took {elapsed:?}, budget {budget:?}"
    );
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
