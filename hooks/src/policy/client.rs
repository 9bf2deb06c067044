//! The policy client: one per `[[policy]]` table per process, asked synchronously by
//! the session that needs a decision, never past the caller's deadline.
//!
//! - Transport: `unix:/path` or `inet:host:port`. Connecting, writing and reading are
//!   non-blocking with `poll`, each bounded by the try's deadline (a `unix:` connect to
//!   a full listen queue is retried until then, not waited on without bound). A host
//!   name in `inet:` is resolved with the system resolver, which the deadline does not
//!   bound: configure an address.
//! - Tries: `tries` times (at least once); each try gets min(`timeout`, the time left
//!   to the deadline); between tries a pause of up to 1 s, never past the deadline. A
//!   try fails on a connect error, a timeout, an EOF or another socket error; a
//!   protocol error or an unknown action ends the query at once (the service answered,
//!   wrongly: asking again would only spend the deadline). Each failed try that is
//!   followed by another is logged here (`warning: QID: policy NAME: unexpected EOF
//!   (try 1/2)`); the last failure is returned for the caller to log with the
//!   `on_error` it applies.
//! - Connection reuse, as Postfix does it: the connection is kept for later requests
//!   and closed after any error, when idle more than 300 s, when older than 1000 s, or
//!   when the service sent something unasked. Services close idle connections: a
//!   reused connection found closed (EOF or reset before any reply octet) is replaced
//!   once, at once, without counting a failed try.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use sloop_common::config::hooks::{HookSocket, PolicyHook};

use super::action::Action;
use super::proto::{ProtoError, ReplyReader, Request};

/// A kept connection is closed when idle longer than this (Postfix's
/// `smtpd_policy_service_max_idle`).
const MAX_IDLE: Duration = Duration::from_secs(300);
/// A kept connection is closed when older than this (`smtpd_policy_service_max_ttl`).
const MAX_AGE: Duration = Duration::from_secs(1000);
/// The pause between tries (`smtpd_policy_service_retry_delay`).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a query failed. The text (`Display`) is what follows `policy NAME: ` in the
/// log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Could not connect: `connect unix:/x: No such file or directory`.
    Connect { socket: String, reason: String },
    /// No complete reply within the try's time: `timeout after 5000ms (try 2/2)`.
    Timeout { ms: u64, try_no: u32, tries: u32 },
    /// The service closed the connection before the end of the reply:
    /// `unexpected EOF (try 1/2)`.
    Eof { try_no: u32, tries: u32 },
    /// Another socket error: `read: Connection reset by peer (try 1/2)`.
    Io {
        op: &'static str,
        reason: String,
        try_no: u32,
        tries: u32,
    },
    /// A reply that breaks the protocol: `protocol error: NUL in the reply`.
    Protocol(ProtoError),
    /// A well-formed reply with an action Sloop does not know or implement:
    /// `unknown action "FROBNICATE"`.
    UnknownAction(String),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::Connect { socket, reason } => write!(f, "connect {socket}: {reason}"),
            PolicyError::Timeout { ms, try_no, tries } => {
                write!(f, "timeout after {ms}ms (try {try_no}/{tries})")
            }
            PolicyError::Eof { try_no, tries } => {
                write!(f, "unexpected EOF (try {try_no}/{tries})")
            }
            PolicyError::Io {
                op,
                reason,
                try_no,
                tries,
            } => write!(f, "{op}: {reason} (try {try_no}/{tries})"),
            PolicyError::Protocol(e) => write!(f, "protocol error: {e}"),
            PolicyError::UnknownAction(a) => write!(f, "unknown action {a:?}"),
        }
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    /// True for the failures another try may cure (connect, timeout, EOF, socket
    /// errors); false for a wrong answer.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            PolicyError::Protocol(_) | PolicyError::UnknownAction(_)
        )
    }
}

/// The client of one policy service.
#[derive(Debug)]
pub struct PolicyClient {
    name: String,
    socket: HookSocket,
    timeout: Duration,
    tries: u32,
    max_idle: Duration,
    max_age: Duration,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    opened: Instant,
    last_used: Instant,
}

#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// How one try failed, before it is numbered.
#[derive(Debug)]
enum Fail {
    Connect(io::Error),
    Timeout,
    /// EOF (or a reset) after `got` reply octets.
    Eof {
        got: usize,
    },
    Io {
        op: &'static str,
        err: Errno,
    },
    Proto(ProtoError),
}

impl PolicyClient {
    /// A client for `hook`; it connects at the first query.
    pub fn new(hook: &PolicyHook) -> PolicyClient {
        PolicyClient {
            name: hook.name.clone(),
            socket: hook.socket.clone(),
            timeout: hook.timeout,
            tries: hook.tries.max(1),
            max_idle: MAX_IDLE,
            max_age: MAX_AGE,
            conn: None,
        }
    }

    /// The `[[policy]]` name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while a connection is kept for the next query.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Sends `req` and reads the service's action, within `deadline`.
    pub fn query(&mut self, req: &Request, deadline: Instant) -> Result<Action, PolicyError> {
        let tries = self.tries;
        if Instant::now() >= deadline {
            return Err(PolicyError::Timeout {
                ms: 0,
                try_no: 1,
                tries,
            });
        }
        self.expire(Instant::now());
        let bytes = req.encode();
        let who = match req.get("queue_id").filter(|q| !q.is_empty()) {
            Some(qid) => format!("{qid}: policy {}", self.name),
            None => format!("policy {}", self.name),
        };
        let mut replaced_stale = false;
        let mut try_no = 1;
        loop {
            let start = Instant::now();
            let try_deadline = (start + self.timeout).min(deadline);
            let reused = self.conn.is_some();
            let fail = match self.attempt(&bytes, try_deadline) {
                Ok(action) => return Ok(action),
                Err(fail) => fail,
            };
            self.conn = None;
            if reused && !replaced_stale && fail.is_stale() {
                log::debug!("{who}: kept connection closed by the service, reconnecting");
                replaced_stale = true;
                continue;
            }
            let budget = try_deadline.saturating_duration_since(start);
            let err = fail.numbered(&self.socket, budget, try_no, tries);
            if !err.is_retryable() || try_no >= tries {
                return Err(err);
            }
            // No time left for another try after the pause: this is the last error,
            // logged once by the caller with its on_error.
            if deadline.saturating_duration_since(Instant::now()) <= RETRY_PAUSE {
                return Err(err);
            }
            log::warn!("{who}: {err}");
            std::thread::sleep(RETRY_PAUSE);
            try_no += 1;
        }
    }

    /// Drops the kept connection when it is too idle or too old, or when the service
    /// closed it or sent something unasked since the last reply.
    fn expire(&mut self, now: Instant) {
        let Some(c) = &self.conn else { return };
        let old = now.saturating_duration_since(c.last_used) > self.max_idle
            || now.saturating_duration_since(c.opened) > self.max_age;
        if old || readable_now(c.stream.fd()) {
            self.conn = None;
        }
    }

    /// One try: connect if needed, write the request, read the reply.
    fn attempt(&mut self, bytes: &[u8], deadline: Instant) -> Result<Action, Fail> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = connect(&self.socket, deadline).map_err(Fail::Connect)?;
                let now = Instant::now();
                self.conn.insert(Conn {
                    stream,
                    opened: now,
                    last_used: now,
                })
            }
        };
        write_all(conn.stream.fd(), bytes, deadline)?;
        let action = read_reply(&conn.stream, deadline)?;
        conn.last_used = Instant::now();
        Ok(action)
    }
}

impl Fail {
    /// A kept connection the service had closed: nothing of the reply came back.
    fn is_stale(&self) -> bool {
        match self {
            Fail::Eof { got } => *got == 0,
            Fail::Io { err, .. } => matches!(err, Errno::EPIPE | Errno::ECONNRESET),
            _ => false,
        }
    }

    fn numbered(
        self,
        socket: &HookSocket,
        budget: Duration,
        try_no: u32,
        tries: u32,
    ) -> PolicyError {
        match self {
            Fail::Connect(e) => PolicyError::Connect {
                socket: socket.to_string(),
                reason: io_reason(&e),
            },
            Fail::Timeout => PolicyError::Timeout {
                ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
                try_no,
                tries,
            },
            Fail::Eof { .. } => PolicyError::Eof { try_no, tries },
            Fail::Io { op, err } => PolicyError::Io {
                op,
                reason: err.desc().to_string(),
                try_no,
                tries,
            },
            Fail::Proto(ProtoError::UnknownAction(a)) => PolicyError::UnknownAction(a),
            Fail::Proto(e) => PolicyError::Protocol(e),
        }
    }
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }

    /// Part of a reply has come and the rest has not: acknowledge it at once
    /// ([`sloop_common::quickack`]), for a service that writes its reply in pieces.
    fn ack_now(&self) {
        if let Stream::Tcp(s) = self {
            sloop_common::quickack::ack_now(s);
        }
    }
}

/// The strerror text of an I/O error, without Rust's "(os error N)".
fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_string(),
        None if e.kind() == io::ErrorKind::TimedOut => Errno::ETIMEDOUT.desc().to_string(),
        None => e.to_string(),
    }
}

fn connect(socket: &HookSocket, deadline: Instant) -> io::Result<Stream> {
    match socket {
        HookSocket::Unix(path) => connect_unix(path, deadline).map(Stream::Unix),
        HookSocket::Inet { host, port } => connect_inet(host, *port, deadline).map(Stream::Tcp),
    }
}

fn connect_unix(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path)?;
    let fd: OwnedFd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    loop {
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            // Linux refuses a non-blocking connect to a full listen queue with EAGAIN
            // instead of queueing it: try again until the deadline.
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Errno::ETIMEDOUT.into());
                }
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
            Err(Errno::EINPROGRESS) => {
                if !wait(fd.as_fd(), PollFlags::POLLOUT, deadline)? {
                    return Err(Errno::ETIMEDOUT.into());
                }
                match socket::getsockopt(&fd, sockopt::SocketError)? {
                    0 => break,
                    n => return Err(Errno::from_raw(n).into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(UnixStream::from(fd))
}

fn connect_inet(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = crate::resolve::resolve(host, port, deadline)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host name");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Errno::ETIMEDOUT.into());
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                // One write per request: do not let Nagle hold it.
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Writes all of `bytes` before `deadline` (send with MSG_NOSIGNAL: a closed peer is
/// an EPIPE error, never a SIGPIPE).
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8], deadline: Instant) -> Result<(), Fail> {
    while !bytes.is_empty() {
        match socket::send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let ready = wait(fd, PollFlags::POLLOUT, deadline).map_err(|e| Fail::Io {
                    op: "poll",
                    err: os_errno(&e),
                })?;
                if !ready {
                    return Err(Fail::Timeout);
                }
            }
            Err(err) => return Err(Fail::Io { op: "write", err }),
        }
    }
    Ok(())
}

/// Reads one reply before `deadline`.
fn read_reply(stream: &Stream, deadline: Instant) -> Result<Action, Fail> {
    let mut reader = ReplyReader::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Err(Fail::Eof { got: reader.len() }),
            Ok(n) => {
                if reader.feed(&buf[..n]).map_err(Fail::Proto)? {
                    return reader.action().map_err(Fail::Proto);
                }
                stream.ack_now();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready =
                    wait(stream.fd(), PollFlags::POLLIN, deadline).map_err(|e| Fail::Io {
                        op: "poll",
                        err: os_errno(&e),
                    })?;
                if !ready {
                    return Err(Fail::Timeout);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Fail::Eof { got: reader.len() })
            }
            Err(e) => {
                return Err(Fail::Io {
                    op: "read",
                    err: os_errno(&e),
                })
            }
        }
    }
}

fn os_errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up to report) or
/// `deadline` passes; false when the deadline passed.
fn wait(fd: BorrowedFd<'_>, events: PollFlags, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Round up so that a wait never ends just before the deadline and spins.
        let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, events)];
        match poll(&mut fds, timeout) {
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// True when `fd` has something to read (data or EOF) right now.
fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
