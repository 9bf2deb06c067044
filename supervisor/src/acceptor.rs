//! The busy acceptor: while every smtpd worker is busy, `sloopd` itself accepts new
//! connections, so that none waits in the kernel's backlog without a banner (docs/invariants.md
//! G1).
//!
//! A connection accepted here is held, silent, until a worker becomes idle; it is then
//! passed down the hand-off socket (a datagram socket pair whose receiving end every
//! worker inherits, `SCM_RIGHTS`, pool_proto.rs), oldest first, but those from
//! addresses holding more than their share of the pool (overload.rs) after all others. One that has not
//! found a worker when its connect budget is nearly spent (`smtpd.connect_timeout`
//! minus [`margin`]) gets `421 4.3.2 <host> Service busy, try again later` and is
//! closed. The acceptor cannot itself be exhausted: it holds at most `cap` connections
//! (from the descriptor limit) and answers any beyond that at once.
//!
//! A connection passed down but not yet taken by a worker stays in the socket pair;
//! `sloopd` keeps the receiving end too, and takes such connections back
//! ([`Acceptor::reclaim`], balance.rs says when), so their deadline is still its
//! business. Workers take datagrams in order, so what comes back is the newest part of
//! what was sent, in order.
//!
//! What can go wrong: `accept` fails (descriptor limit: the connection stays in the
//! backlog and the next turn retries), sending a descriptor fails (it stays held), the
//! 421 cannot be written (the client is gone: closed anyway). None of it stops
//! `sloopd`.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Most connections accepted from one listener in one turn.
const MAX_ACCEPTS_PER_TURN: usize = 4096;

/// One held connection.
#[derive(Debug)]
struct Held {
    stream: TcpStream,
    ip: IpAddr,
    since: Instant,
}

/// The acceptor's state.
#[derive(Debug)]
pub struct Acceptor {
    send: OwnedFd,
    recv: OwnedFd,
    held: VecDeque<Held>,
    /// What was passed down since the last reclaim, in order: (accepted at, address).
    in_flight: VecDeque<(Instant, IpAddr)>,
    cap: usize,
    /// Connections answered `421 4.3.2` since `sloopd` started.
    pub refused: u64,
}

/// What one turn did, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Turn {
    pub accepted: usize,
    pub refused: usize,
    pub first_refused: Option<IpAddr>,
}

/// How long before the end of the connect budget a held connection is refused: the
/// worker it would be passed to needs time for its greeting.
pub fn margin(connect_timeout: Duration) -> Duration {
    (connect_timeout / 4).min(Duration::from_secs(2))
}

impl Acceptor {
    /// Creates the socket pair (both ends close-on-exec, the receiving end
    /// non-blocking); holds at most `cap` connections.
    pub fn new(cap: usize) -> nix::Result<Acceptor> {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (send, recv) = socketpair(AddressFamily::Unix, SockType::Datagram, None, flags)?;
        Ok(Acceptor {
            send,
            recv,
            held: VecDeque::new(),
            in_flight: VecDeque::new(),
            cap: cap.max(1),
            refused: 0,
        })
    }

    /// The receiving end workers inherit.
    pub fn recv_fd(&self) -> RawFd {
        self.recv.as_raw_fd()
    }

    /// Connections passed down since the last [`Acceptor::reclaim`] (some may have
    /// been taken already).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Connections held or passed down and not known to be taken.
    pub fn waiting(&self) -> usize {
        self.held.len() + self.in_flight.len()
    }

    /// Addresses of the held connections.
    pub fn waiting_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.held
            .iter()
            .map(|h| h.ip)
            .chain(self.in_flight.iter().map(|(_, ip)| *ip))
    }

    /// Accepts every pending connection on `listeners` (non-blocking sockets). Beyond
    /// `cap` held, a connection is answered `busy` at once.
    pub fn accept_from<'a>(
        &mut self,
        listeners: impl Iterator<Item = &'a TcpListener>,
        now: Instant,
        busy: &[u8],
        turn: &mut Turn,
    ) {
        for l in listeners {
            // Bounded per turn so a connection flood cannot keep the loop from its
            // other work; the next turn (at most a second away) goes on.
            for _ in 0..MAX_ACCEPTS_PER_TURN {
                let (stream, peer) = match l.accept() {
                    Ok(a) => a,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("busy acceptor: accept on {:?}: {e}", l.local_addr().ok());
                        break;
                    }
                };
                let ip = canonical(peer.ip());
                turn.accepted += 1;
                if self.held.len() + self.in_flight.len() >= self.cap {
                    refuse(stream, busy);
                    self.count_refusal(ip, turn);
                    continue;
                }
                self.held.push_back(Held {
                    stream,
                    ip,
                    since: now,
                });
            }
        }
    }

    /// Takes back every connection passed down that no worker has taken yet.
    pub fn reclaim(&mut self) {
        let mut back = Vec::new();
        while let Some(fd) = self.recv_one() {
            back.push(TcpStream::from(fd));
        }
        let sent = std::mem::take(&mut self.in_flight);
        let skip = sent.len().saturating_sub(back.len());
        let mut returned: Vec<Held> = sent
            .into_iter()
            .skip(skip)
            .zip(back)
            .map(|((since, ip), stream)| Held { stream, ip, since })
            .collect();
        // Back among the held ones, in order of arrival (a connection passed down
        // out of turn, for fairness, may be younger than some still held).
        while let Some(h) = returned.pop() {
            self.held.push_front(h);
        }
        self.held.make_contiguous().sort_by_key(|h| h.since);
    }

    /// Answers `busy` to every held connection accepted at or before `cutoff`.
    pub fn expire(&mut self, cutoff: Instant, busy: &[u8], turn: &mut Turn) {
        while self.held.front().is_some_and(|h| h.since <= cutoff) {
            if let Some(h) = self.held.pop_front() {
                refuse(h.stream, busy);
                self.count_refusal(h.ip, turn);
            }
        }
    }

    /// Passes up to `n` held connections to the workers, oldest first, except that
    /// connections from addresses in `over_share` (holding more than their share of
    /// the pool) go after everyone else's.
    pub fn hand_off(&mut self, n: usize, over_share: &[IpAddr]) {
        for _ in 0..n {
            let pick = self
                .held
                .iter()
                .position(|h| !over_share.contains(&h.ip))
                .unwrap_or(0);
            let Some(h) = self.held.remove(pick) else {
                return;
            };
            let fds = [h.stream.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(b"c")];
            match sendmsg::<()>(
                self.send.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(_) => self.in_flight.push_back((h.since, h.ip)),
                Err(e) => {
                    log::warn!("busy acceptor: cannot pass a connection to a worker: {e}");
                    self.held.insert(pick, h);
                    return;
                }
            }
        }
    }

    /// When the oldest held connection accepted at `since` is due for refusal, given
    /// how long a connection may wait (`hold`).
    pub fn next_due(&self, hold: Duration) -> Option<Instant> {
        let oldest_held = self.held.front().map(|h| h.since);
        let oldest_sent = self.in_flight.front().map(|(t, _)| *t);
        [oldest_held, oldest_sent]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t + hold)
    }

    fn count_refusal(&mut self, ip: IpAddr, turn: &mut Turn) {
        self.refused += 1;
        turn.refused += 1;
        turn.first_refused.get_or_insert(ip);
    }

    fn recv_one(&self) -> Option<OwnedFd> {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            self.recv.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let mut got = None;
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel has just installed `fd` in our table for this
                    // message; nothing else owns it.
                    #[allow(unsafe_code)]
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    got.get_or_insert(owned);
                }
            }
        }
        got
    }
}

/// Writes the busy reply, reads what the client may have sent (so the close is a FIN,
/// not a reset that could destroy the reply before it is read), closes.
fn refuse(mut stream: TcpStream, busy: &[u8]) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(busy);
    // Bounded: a client that streams octets must not hold sloopd here.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::BufRead;

    const BUSY: &[u8] = b"421 4.3.2 test Service busy, try again later\r\n";

    fn listener() -> TcpListener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    fn first_line(s: TcpStream) -> String {
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    /// Accepts until `n` connections are held (the kernel may queue them a moment
    /// after `connect` returns).
    fn accept_n(a: &mut Acceptor, l: &TcpListener, n: usize, now: Instant) -> Turn {
        let mut turn = Turn::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while turn.accepted < n && Instant::now() < deadline {
            a.accept_from(std::iter::once(l), now, BUSY, &mut turn);
        }
        turn
    }

    #[test]
    fn held_connections_are_refused_when_due_and_beyond_the_cap_at_once() {
        let l = listener();
        let addr = l.local_addr().unwrap();
        let mut a = Acceptor::new(1).unwrap();
        let c1 = TcpStream::connect(addr).unwrap();
        let c2 = TcpStream::connect(addr).unwrap();
        let t0 = Instant::now();
        let turn = accept_n(&mut a, &l, 2, t0);
        assert_eq!((turn.accepted, turn.refused), (2, 1));
        assert_eq!(a.waiting(), 1);
        assert!(first_line(c2).starts_with("421 4.3.2 "));
        assert_eq!(
            a.next_due(Duration::from_secs(8)),
            Some(t0 + Duration::from_secs(8))
        );
        let mut turn = Turn::default();
        a.expire(t0 - Duration::from_millis(1), BUSY, &mut turn);
        assert_eq!(a.waiting(), 1, "not due yet");
        a.expire(t0, BUSY, &mut turn);
        assert_eq!((a.waiting(), turn.refused, a.refused), (0, 1, 2));
        assert!(first_line(c1).starts_with("421 4.3.2 "));
    }

    #[test]
    fn an_address_over_its_share_is_passed_down_last() {
        let l = listener();
        let addr = l.local_addr().unwrap();
        let mut a = Acceptor::new(10).unwrap();
        let greedy = TcpStream::connect(addr).unwrap();
        let t0 = Instant::now();
        accept_n(&mut a, &l, 1, t0);
        let other = {
            let s = std::net::TcpStream::connect(addr).unwrap();
            accept_n(&mut a, &l, 1, t0 + Duration::from_millis(1));
            s
        };
        // Make the first one look like it came from an over-share address.
        let over = [a.held[0].ip];
        a.held[1].ip = "127.0.0.99".parse().unwrap();
        a.hand_off(1, &over);
        let taken = TcpStream::from(a.recv_one().unwrap());
        assert_eq!(taken.peer_addr().unwrap(), other.local_addr().unwrap());
        a.reclaim();
        assert_eq!(a.waiting(), 1);
        drop(greedy);
    }

    #[test]
    fn connections_passed_down_reach_a_worker_or_come_back_in_order() {
        let l = listener();
        let addr = l.local_addr().unwrap();
        let mut a = Acceptor::new(10).unwrap();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t0 = Instant::now();
        accept_n(&mut a, &l, 3, t0);
        a.hand_off(3, &[]);
        assert_eq!(a.waiting(), 3);
        // A "worker" takes the first one from the shared receiving end.
        let taken = TcpStream::from(a.recv_one().unwrap());
        let mut w = taken.try_clone().unwrap();
        w.write_all(b"220 hello\r\n").unwrap();
        assert_eq!(first_line(clients[0].try_clone().unwrap()), "220 hello\r\n");
        a.reclaim();
        assert_eq!(a.waiting(), 2, "the other two came back");
        let mut turn = Turn::default();
        a.expire(t0, BUSY, &mut turn);
        assert_eq!(turn.refused, 2);
        for c in &clients[1..] {
            assert!(first_line(c.try_clone().unwrap()).starts_with("421 4.3.2 "));
        }
    }
}
