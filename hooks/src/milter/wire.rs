//! The connection to one filter as packets: commands are queued and go out together,
//! replies are read one at a time within an event's timer.
//!
//! The session queues what it may send before the next reply is due (an event's macro
//! packet with the event; the header fields, end of header and body chunks of a filter
//! that answers none of them) and the queue goes out in one `write(2)` when a reply is
//! to be read, when it holds [`FLUSH_AT`] octets, or when the session says so. Nothing
//! is ever sent past a command whose reply has not been read: the protocol is lockstep
//! for every event the filter answers.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::codec::{encode_command_into, holds_whole_packet, read_packet, Command, Reply};
use super::conn::Conn;
use super::{os_reason, MilterError};

/// The queue is written out once it holds this much (one body chunk and its header).
pub(crate) const FLUSH_AT: usize = 64 * 1024;

/// One filter connection: the socket, what was read and not yet decoded, and what is
/// queued and not yet written.
#[derive(Debug)]
pub(crate) struct Wire {
    conn: Conn,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// `write(2)` calls that carried queued packets (for the tests of coalescing).
    writes: u64,
    /// Immediate ACKs asked for (for the tests of [`Wire::expect_more`]).
    #[cfg(test)]
    acks: u64,
}

impl Wire {
    pub(crate) fn new(conn: Conn) -> Wire {
        Wire {
            conn,
            inbuf: Vec::new(),
            out: Vec::new(),
            writes: 0,
            #[cfg(test)]
            acks: 0,
        }
    }

    /// Queues one command.
    pub(crate) fn queue(&mut self, command: &Command<'_>) {
        encode_command_into(command, &mut self.out);
    }

    /// Octets queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.out.len()
    }

    /// The number of immediate ACKs asked for so far.
    #[cfg(test)]
    pub(crate) fn acks(&self) -> u64 {
        self.acks
    }

    /// The number of writes so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// Writes the queue out before `end`; `event` names the event in errors.
    pub(crate) fn flush(&mut self, event: &'static str, end: Instant) -> Result<(), MilterError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MilterError::Timeout { ms: 0, event });
        }
        let io_err = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => MilterError::Timeout {
                ms: left.as_millis(),
                event,
            },
            _ => MilterError::Io {
                op: "write",
                event,
                reason: os_reason(&e),
            },
        };
        self.conn.set_write_timeout(left).map_err(io_err)?;
        self.writes += 1;
        let result = self.conn.write_all(&self.out).map_err(io_err);
        self.out.clear();
        result
    }

    /// Writes what is queued, then reads and decodes one packet before the timer runs
    /// out.
    pub(crate) fn read_reply(
        &mut self,
        event: &'static str,
        timer: &mut Timer,
    ) -> Result<Reply, MilterError> {
        self.flush(event, timer.end())?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((packet, used)) = read_packet(&self.inbuf)? {
                self.inbuf.drain(..used);
                return Reply::decode(&packet);
            }
            let left = timer.left();
            if left.is_zero() {
                return Err(MilterError::Timeout {
                    ms: timer.length().as_millis(),
                    event,
                });
            }
            let io_err = |e: io::Error| MilterError::Io {
                op: "read",
                event,
                reason: os_reason(&e),
            };
            self.conn.set_read_timeout(left).map_err(io_err)?;
            match self.conn.read(&mut chunk) {
                Ok(0) => return Err(MilterError::Eof { event }),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// The filter has more to send before the reply it owes (an edit or a progress
    /// report came first): unless that is already here, acknowledge what was read at
    /// once, so that a filter using Nagle's algorithm is not held up waiting for our
    /// delayed ACK (see [`Conn::ack_now`]).
    pub(crate) fn expect_more(&mut self) {
        if !holds_whole_packet(&self.inbuf) {
            #[cfg(test)]
            {
                self.acks += 1;
            }
            self.conn.ack_now();
        }
    }

    /// True when the filter has sent nothing since its last reply and has not closed
    /// the connection: a kept connection is fit to be used again. (A filter that
    /// timed out an idle connection has closed it; anything it sent unasked means the
    /// two ends no longer agree on where they are.)
    pub(crate) fn quiet(&self) -> bool {
        if !self.inbuf.is_empty() || !self.out.is_empty() {
            return false;
        }
        let mut fds = [PollFd::new(self.conn.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            // Readable (data or EOF), hung up, or an error: not fit.
            _ => false,
        }
    }
}

/// The timer of one event: `length` from its start or the last progress report,
/// never past the phase deadline.
#[derive(Debug)]
pub(crate) struct Timer {
    length: Duration,
    started: Instant,
    deadline: Instant,
}

impl Timer {
    pub(crate) fn new(length: Duration, deadline: Instant) -> Timer {
        Timer {
            length,
            started: Instant::now(),
            deadline,
        }
    }

    /// A timer that started at `started` (before the connect, for the negotiation).
    pub(crate) fn since(started: Instant, length: Duration, deadline: Instant) -> Timer {
        Timer {
            length,
            started,
            deadline,
        }
    }

    /// When the event's time is up.
    pub(crate) fn end(&self) -> Instant {
        (self.started + self.length).min(self.deadline)
    }

    pub(crate) fn left(&self) -> Duration {
        self.end().saturating_duration_since(Instant::now())
    }

    /// The time this event had: the timer's length, or less when the deadline cut it.
    pub(crate) fn length(&self) -> Duration {
        self.length
            .min(self.deadline.saturating_duration_since(self.started))
    }

    /// A progress report: the event's time starts again (never past the deadline).
    pub(crate) fn restart(&mut self) {
        self.started = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_restarts_but_never_passes_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut t = Timer::new(Duration::from_secs(60), deadline);
        assert!(t.left() <= Duration::from_secs(2));
        t.restart();
        assert!(t.end() <= deadline);
        let t = Timer::new(Duration::from_millis(100), deadline);
        assert!(t.left() <= Duration::from_millis(100));
    }

    #[test]
    fn queued_packets_go_out_in_one_write_and_quiet_sees_eof() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = Wire::new(Conn::Unix(a));
        let end = Instant::now() + Duration::from_secs(5);
        w.flush("NONE", end).unwrap();
        assert_eq!(w.writes(), 0, "an empty queue is not written");
        w.queue(&Command::Macro {
            cmd: b'C',
            pairs: vec![("j", "mx")],
        });
        w.queue(&Command::Helo("client"));
        assert!(w.queued() > 0);
        w.flush("HELO", end).unwrap();
        assert_eq!((w.writes(), w.queued()), (1, 0));
        let mut got = [0u8; 64];
        let n = b.read(&mut got).unwrap();
        let (first, used) = read_packet(&got[..n]).unwrap().unwrap();
        assert_eq!(first.cmd, b'D');
        let (second, _) = read_packet(&got[used..n]).unwrap().unwrap();
        assert_eq!(second.cmd, b'H');
        assert!(w.quiet());
        b.write_all(b"\0\0\0\x01c").unwrap();
        assert!(!w.quiet(), "an unread reply");
        let mut t = Timer::new(Duration::from_secs(5), end);
        assert_eq!(w.read_reply("HELO", &mut t).unwrap(), Reply::Continue);
        assert!(w.quiet());
        drop(b);
        assert!(!w.quiet(), "the filter closed the connection");
    }

    #[test]
    fn an_edit_read_alone_is_acknowledged_at_once_but_not_when_the_reply_is_here() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mta = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut filter, _) = listener.accept().unwrap();
        let mut w = Wire::new(Conn::Tcp(mta));
        let end = Instant::now() + Duration::from_secs(5);
        // An edit (SMFIR_ADDHEADER) alone, as libmilter writes it: the final reply is
        // not here yet, so what was read is acknowledged now.
        let add = b"\0\0\0\x07hX\0yes\0";
        filter.write_all(add).unwrap();
        let mut t = Timer::new(Duration::from_secs(5), end);
        assert!(matches!(
            w.read_reply("EOM", &mut t).unwrap(),
            Reply::AddHeader { .. }
        ));
        w.expect_more();
        assert_eq!(w.acks(), 1);
        filter.write_all(b"\0\0\0\x01a").unwrap();
        assert_eq!(w.read_reply("EOM", &mut t).unwrap(), Reply::Accept);
        // The edit and the reply in one write: the reply is already read, no ACK asked.
        let mut both = add.to_vec();
        both.extend_from_slice(b"\0\0\0\x01a");
        filter.write_all(&both).unwrap();
        assert!(matches!(
            w.read_reply("EOM", &mut t).unwrap(),
            Reply::AddHeader { .. }
        ));
        w.expect_more();
        assert_eq!(w.acks(), 1, "the reply was already buffered");
        assert_eq!(w.read_reply("EOM", &mut t).unwrap(), Reply::Accept);
        // A local socket has no ACKs; asking is harmless.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = Wire::new(Conn::Unix(a));
        w.expect_more();
        assert_eq!(w.acks(), 1);
    }
}
