//! The socket to a filter: `unix:/path` or `inet:host:port`, connected within a budget,
//! read and written with per-call timeouts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sloop_common::config::hooks::HookSocket;

use super::{os_reason, MilterError};

/// The socket to the filter.
#[derive(Debug)]
pub(crate) enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub(crate) fn connect(socket: &HookSocket, budget: Duration) -> Result<Conn, MilterError> {
        let fail = |reason: String| MilterError::Connect {
            socket: socket.to_string(),
            reason,
        };
        if budget.is_zero() {
            return Err(fail("Connection timed out".into()));
        }
        match socket {
            // A local connect does not wait for the filter to accept: it succeeds or
            // fails at once (a full backlog is refused on Linux).
            HookSocket::Unix(path) => UnixStream::connect(path)
                .map(Conn::Unix)
                .map_err(|e| fail(os_reason(&e))),
            HookSocket::Inet { host, port } => {
                let started = Instant::now();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let addrs =
                    crate::resolve::resolve(host, *port, started + budget).map_err(|e| {
                        if e.kind() == io::ErrorKind::TimedOut {
                            fail(e.to_string())
                        } else {
                            fail(format!("cannot resolve {host}: {e}"))
                        }
                    })?;
                let mut last = fail(format!("no address for {host}"));
                for addr in addrs {
                    let left = budget.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(fail("Connection timed out".into()));
                    }
                    match TcpStream::connect_timeout(&addr, left) {
                        Ok(s) => {
                            // Small packets go out at once (OPTNEG, macros, commands).
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            last = fail("Connection timed out".into())
                        }
                        Err(e) => last = fail(os_reason(&e)),
                    }
                }
                Err(last)
            }
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        }
    }

    /// Acknowledges at once what has been read ([`sloop_common::quickack`]): a filter
    /// built on libmilter writes each reply packet on its own with Nagle's algorithm
    /// on. Local sockets have no ACKs.
    pub(crate) fn ack_now(&self) {
        if let Conn::Tcp(s) = self {
            sloop_common::quickack::ack_now(s);
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
