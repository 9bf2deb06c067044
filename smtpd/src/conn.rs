//! The socket side of a session: reads with a deadline, writes with a send timeout.
//!
//! [`Conn`] wraps the accepted TCP stream, or standard input and output in the
//! standalone `--inetd` mode (a socket from inetd, or pipes in tests). [`Conn::read`]
//! waits until input arrives or the deadline passes (EINTR from a signal is retried
//! with the time left), so a silent client costs at most its phase's budget. On a TCP
//! socket the wait is the blocking `read(2)` itself under `SO_RCVTIMEO` (set again
//! only when the deadline moves, so one system call per read); on anything else it is
//! a `poll(2)` before the read. A write has one deadline for all of it
//! ([`Conn::write_all_before`]), with `SO_SNDTIMEO` budgeted against the time left, so
//! a client that stops reading, or reads a trickle, cannot hold the worker past it; the
//! watchdog (`watchdog.rs`) backs both up. [`Conn::has_early_input`] tells the connect phase
//! whether the client spoke before the greeting.

use crate::tls::TlsStream;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What a read produced.
#[derive(Debug)]
pub enum ReadOutcome {
    Data(usize),
    Eof,
    Timeout,
    /// `sloopd` signalled a change of overload (overload.rs): the caller recomputes
    /// its deadline and reads again.
    Interrupted,
}

/// A client connection: where replies are written and where commands are read.
#[derive(Debug)]
pub struct Conn {
    /// The client's `smtpd.max_per_client` slot, released as soon as the session is
    /// over for the client (see [`Conn::release_slot`]).
    slot: Option<crate::client_limit::Slot>,
    rd: File,
    /// Where replies go when not to `rd` itself (stdout in `--inetd` mode); a TCP
    /// connection reads and writes the one socket.
    wr: Option<File>,
    /// On a socket, the `SO_RCVTIMEO` now set (`Some(ZERO)` until the first read);
    /// `None` when `rd` is not a socket and reads wait with `poll(2)`.
    rcv_timeout: Option<Duration>,
    /// On a socket, the `SO_SNDTIMEO` now set; `None` on pipes (`--inetd` tests).
    snd_timeout: Option<Duration>,
    /// The budget of a write without a deadline of its own ([`Conn::write_all`]).
    send_timeout: Duration,
    /// After a TLS handshake (`tls.rs`): reads and writes go through it.
    tls: Option<Box<TlsStream>>,
    /// The deadline of the write in progress through TLS, for [`Conn::write_raw`].
    write_deadline: Option<Instant>,
    /// The client's port and the address it connected to, for the filters
    /// (`client_port`, `server_address`, `server_port`).
    endpoints: (u16, Option<std::net::SocketAddr>),
}

impl Conn {
    /// An accepted TCP connection; writes time out after `send_timeout`.
    pub fn new(stream: TcpStream, send_timeout: Duration) -> io::Result<Conn> {
        let send_timeout = send_timeout.max(Duration::from_millis(100));
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(send_timeout))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            slot: None,
            rd: File::from(OwnedFd::from(stream)),
            wr: None,
            rcv_timeout: Some(Duration::ZERO),
            snd_timeout: Some(send_timeout),
            send_timeout,
            tls: None,
            write_deadline: None,
            endpoints: (0, None),
        })
    }

    /// Standard input and output (duplicated), for the `--inetd` mode.
    pub fn stdio() -> io::Result<Conn> {
        let rd = io::stdin().as_fd().try_clone_to_owned()?;
        let wr = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Conn {
            slot: None,
            rd: File::from(rd),
            wr: Some(File::from(wr)),
            rcv_timeout: None,
            snd_timeout: None,
            send_timeout: Duration::from_secs(300),
            tls: None,
            write_deadline: None,
            endpoints: (0, None),
        })
    }

    /// Holds the client's per-client slot for the life of the session.
    pub fn hold_slot(&mut self, slot: crate::client_limit::Slot) {
        self.slot = Some(slot);
    }

    /// Frees the per-client slot: called when the client closed its side or the
    /// session is closing, before the last reply is written. A client that opens its
    /// next session as soon as it reads `221` (or its own close) must not find this one
    /// still counted while the worker logs and tidies up.
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    /// A duplicate of the write side, for the watchdog's last words.
    pub fn watchdog_fd(&self) -> Option<OwnedFd> {
        self.wr
            .as_ref()
            .unwrap_or(&self.rd)
            .try_clone()
            .ok()
            .map(OwnedFd::from)
    }

    /// Reads into `buf`, waiting no later than `deadline` (plaintext under TLS).
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
        match self.tls.take() {
            Some(mut t) => {
                let r = t.read(self, buf, deadline);
                self.tls = Some(t);
                r
            }
            None => self.read_raw(buf, deadline),
        }
    }

    /// Reads octets from the socket itself, waiting no later than `deadline`.
    pub(crate) fn read_raw(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> io::Result<ReadOutcome> {
        if self.rcv_timeout.is_none() && !self.wait_readable(deadline)? {
            return Ok(ReadOutcome::Timeout);
        }
        loop {
            if let Some(set) = self.rcv_timeout {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(ReadOutcome::Timeout);
                }
                if set.is_zero() || set > left || set + RCVTIMEO_SLACK < left {
                    let want = rcv_timeout_for(left);
                    let tv = TimeVal::new(
                        want.as_secs().try_into().unwrap_or(i64::MAX),
                        want.subsec_micros().into(),
                    );
                    setsockopt(&self.rd, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
                    self.rcv_timeout = Some(want);
                }
            }
            match self.rd.read(buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if crate::overload::signalled() {
                        return Ok(ReadOutcome::Interrupted);
                    }
                    continue;
                }
                // SO_RCVTIMEO ran out: the loop checks the deadline.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.rcv_timeout.is_some() => {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(ReadOutcome::Eof)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `bytes` within the send timeout the connection was made with
    /// (through TLS when active).
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all_before(bytes, Instant::now() + self.send_timeout)
    }

    /// Writes all of `bytes`, or fails with `TimedOut` once `deadline` has passed. On
    /// a socket, `SO_SNDTIMEO` is budgeted against the time left, so a client that
    /// reads a few octets now and then cannot stretch one write past its deadline (a
    /// send timeout per `send(2)` restarts with every octet the client takes).
    pub fn write_all_before(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        match self.tls.take() {
            Some(mut t) => {
                let r = self.through_tls(&mut t, deadline, |t, conn| t.write_all(conn, bytes));
                self.tls = Some(t);
                r
            }
            None => self.write_raw_before(bytes, deadline),
        }
    }

    /// Like [`Conn::write_all_before`] for the session's last reply: through TLS the
    /// close_notify alert follows the reply in the same write (one segment instead of
    /// two) and TLS is over for this connection.
    pub fn write_last_before(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        match self.tls.take() {
            Some(mut t) => self.through_tls(&mut t, deadline, |t, conn| {
                t.write_all_and_close(conn, bytes)
            }),
            None => self.write_raw_before(bytes, deadline),
        }
    }

    /// Runs a TLS write, whose socket writes (`write_raw`) keep `deadline`.
    fn through_tls(
        &mut self,
        t: &mut TlsStream,
        deadline: Instant,
        write: impl FnOnce(&mut TlsStream, &mut Conn) -> io::Result<()>,
    ) -> io::Result<()> {
        self.write_deadline = Some(deadline);
        let r = write(t, self);
        self.write_deadline = None;
        r
    }

    /// Writes octets to the socket itself, within the deadline of the write in
    /// progress (or the connection's send timeout).
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let deadline = self
            .write_deadline
            .unwrap_or_else(|| Instant::now() + self.send_timeout);
        self.write_raw_before(bytes, deadline)
    }

    /// Writes octets to the socket itself, or fails with `TimedOut` at `deadline`.
    fn write_raw_before(&mut self, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
        if self.snd_timeout.is_none() {
            // A pipe (`--inetd`): plain blocking writes, backed by the watchdog.
            let mut out = self.wr.as_ref().unwrap_or(&self.rd);
            out.write_all(bytes)?;
            return out.flush();
        }
        while !bytes.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write deadline passed with replies unsent",
                ));
            }
            self.set_send_timeout(left)?;
            match (&self.rd).write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // SO_SNDTIMEO ran out: the loop checks the deadline.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets `SO_SNDTIMEO` to fit in `left`, unless the one set already fits closely.
    fn set_send_timeout(&mut self, left: Duration) -> io::Result<()> {
        let set = self.snd_timeout.unwrap_or_default();
        if set.is_zero() || set > left || set + RCVTIMEO_SLACK < left {
            let want = rcv_timeout_for(left);
            let tv = TimeVal::new(
                want.as_secs().try_into().unwrap_or(i64::MAX),
                want.subsec_micros().into(),
            );
            setsockopt(&self.rd, sockopt::SendTimeout, &tv).map_err(io::Error::from)?;
            self.snd_timeout = Some(want);
        }
        Ok(())
    }

    /// From now on, reads and writes go through `tls`.
    pub(crate) fn set_tls(&mut self, tls: TlsStream) {
        self.tls = Some(Box::new(tls));
    }

    /// Records the client's port and the address it connected to (see
    /// [`endpoints`](Self::endpoints)).
    pub fn set_endpoints(&mut self, client_port: u16, server: Option<std::net::SocketAddr>) {
        self.endpoints = (client_port, server);
    }

    /// The client's port (0 unknown) and the address it connected to.
    pub fn endpoints(&self) -> (u16, Option<std::net::SocketAddr>) {
        self.endpoints
    }

    /// True once a TLS handshake completed on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends TLS close_notify when TLS is active (before the socket is closed).
    pub fn close_tls(&mut self) {
        if let Some(mut t) = self.tls.take() {
            t.close(self);
        }
    }

    /// True when a read of the socket itself would not wait (input, end of file or an
    /// error is there).
    pub(crate) fn socket_readable(&self) -> bool {
        let mut fds = [PollFd::new(self.rd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// True when the client has already sent something (or closed).
    pub fn has_early_input(&self) -> bool {
        if self.tls.as_ref().is_some_and(|t| t.has_buffered_input()) {
            return true;
        }
        let mut fds = [PollFd::new(self.rd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return false;
        }
        if self.wr.is_some() {
            // A pipe (`--inetd`): readable means input or end of file alike.
            return true;
        }
        // On a socket, a client that connected and hung up at once said nothing: its
        // end of file is a lost connection, not an early talker.
        let mut one = [0u8; 1];
        let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        matches!(
            nix::sys::socket::recv(self.rd.as_raw_fd(), &mut one, flags),
            Ok(n) if n > 0
        )
    }

    /// True when the client has closed its side and sent nothing more that is still
    /// unread (checked after filter hooks ran, so a client that left is not answered
    /// and its message not committed).
    pub fn peer_gone(&self) -> bool {
        if self.wr.is_some() {
            // `--inetd`: input and end of file look alike on a pipe; the next read
            // tells.
            return false;
        }
        let mut fds = [PollFd::new(self.rd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return false;
        }
        // Readable: the end of file (or a reset) means gone; input still unread is the
        // client's last words (a pipelined QUIT), to be answered.
        let mut one = [0u8; 1];
        let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        match nix::sys::socket::recv(self.rd.as_raw_fd(), &mut one, flags) {
            Ok(0) => true,
            Ok(_) => false,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            Err(_) => true,
        }
    }

    /// Looks at what the client sent without consuming it (for the PROXY header);
    /// `None` when nothing arrived by `deadline`, `Some(0)` at end of file.
    pub(crate) fn peek_raw(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        if !self.wait_readable(deadline)? {
            return Ok(None);
        }
        loop {
            match nix::sys::socket::recv(
                self.rd.as_raw_fd(),
                buf,
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => return Ok(Some(n)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => {
                    if !self.wait_readable(deadline)? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// Consumes exactly `n` octets already seen with [`Conn::peek_raw`].
    pub(crate) fn discard_raw(&mut self, mut n: usize, deadline: Instant) -> io::Result<()> {
        let mut buf = [0u8; 512];
        while n > 0 {
            let want = n.min(buf.len());
            match self.read_raw(&mut buf[..want], deadline)? {
                ReadOutcome::Data(got) => n -= got,
                _ => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            }
        }
        Ok(())
    }

    fn wait_readable(&self, deadline: Instant) -> io::Result<bool> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.rd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) if crate::overload::signalled() => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }
}

/// How far the time left may exceed the `SO_RCVTIMEO` (or `SO_SNDTIMEO`) set before it
/// is set again: each phase sets a fresh deadline per read, so in steady state the
/// timeout is set once.
const RCVTIMEO_SLACK: Duration = Duration::from_secs(1);

/// The receive (or send) timeout for `left`: rounded down to 100 ms (so the next read's slightly
/// smaller budget still fits it), never zero (which would mean no timeout at all).
fn rcv_timeout_for(left: Duration) -> Duration {
    let tenths = left.as_millis() / 100;
    if tenths == 0 {
        left.max(Duration::from_millis(1))
    } else {
        Duration::from_millis((tenths * 100).min(u64::MAX as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_timeouts_never_overrun_the_deadline_nor_mean_forever() {
        for ms in [0u64, 1, 5, 99, 100, 150, 999, 300_000, 300_050] {
            let left = Duration::from_millis(ms);
            let t = rcv_timeout_for(left);
            assert!(!t.is_zero());
            assert!(t <= left.max(Duration::from_millis(1)), "{ms}: {t:?}");
        }
        assert_eq!(
            rcv_timeout_for(Duration::from_millis(300_050)),
            Duration::from_millis(300_000)
        );
    }
}
