//! The prefork worker: accept loop and status pipe (docs/architecture.md §4,
//! `sloop_common::pool_proto`).
//!
//! The worker adopts the listening sockets and the status pipe `sloopd` passed down,
//! reports `Idle`, waits in `epoll_wait(2)` on all listeners and on the hand-off
//! socket, registered with `EPOLLEXCLUSIVE` so that a new connection wakes one idle
//! worker rather than every one of them (with `poll(2)` each connection woke the whole
//! idle pool to race for one `accept`), takes a connection the supervisor's busy acceptor passes down (preferred: it has
//! waited longest) or accepts one (the listeners are non-blocking, so a worker that
//! loses the race goes back to waiting), reports `Busy` and the client's address,
//! takes a per-client slot (`client_limit.rs`), serves the session
//! (`serve.rs`), reports `Idle`, and repeats. It exits after `smtpd.max_use` sessions,
//! after a session that panicked, on SIGTERM or SIGHUP (after the session in
//! progress), when a status write fails (`EPIPE`: the supervisor is gone) or when its
//! parent changes (the supervisor died while this worker was idle). Milter connections
//! kept between sessions (docs/milter.md) are closed when they have been idle too long
//! and when the worker exits.

use crate::conn::Conn;
use crate::reply::Reply;
use crate::serve::{serve_as, SessionEnd};
use crate::session::policy::canonical;
use crate::session::Policy;
use crate::watchdog::Watchdog;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use sloop_common::pool_proto::{encode, encode_client, Availability};
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What the worker was given at start.
#[derive(Debug)]
pub struct Worker {
    pub policy: Policy,
    pub listeners: Vec<TcpListener>,
    pub status: Option<File>,
    /// The receiving end of the supervisor's hand-off socket (pool_proto.rs).
    pub handoff: Option<OwnedFd>,
    pub watchdog: Watchdog,
}

/// Flags set by signal handlers.
#[derive(Debug, Clone, Default)]
pub struct StopFlags {
    pub term: Arc<AtomicBool>,
    pub hup: Arc<AtomicBool>,
}

impl StopFlags {
    /// Registers SIGTERM and SIGHUP.
    pub fn register() -> io::Result<StopFlags> {
        let f = StopFlags::default();
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&f.term))?;
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&f.hup))?;
        Ok(f)
    }

    fn stop_requested(&self) -> Option<&'static str> {
        if self.term.load(Ordering::Relaxed) {
            Some("SIGTERM")
        } else if self.hup.load(Ordering::Relaxed) {
            Some("SIGHUP")
        } else {
            None
        }
    }
}

impl Worker {
    /// The accept loop; returns when the worker should exit, after closing the milter
    /// connections it kept between sessions.
    pub fn run(mut self, flags: &StopFlags) {
        self.serve(flags);
        self.policy.hook_engine().close_kept();
    }

    fn serve(&mut self, flags: &StopFlags) {
        let parent = nix::unistd::getppid();
        let max_use = self.policy.cfg.smtpd.max_use;
        let mut served: u64 = 0;
        let waiter = match self.exclusive_waiter() {
            Ok(e) => Some(e),
            Err(e) => {
                log::warn!("epoll: {e}; waiting with poll(2) instead");
                None
            }
        };
        if !self.report(Availability::Idle) {
            return;
        }
        while served < max_use {
            if let Some(sig) = flags.stop_requested() {
                log::info!("{sig} received; worker exits");
                return;
            }
            if nix::unistd::getppid() != parent {
                log::info!("supervisor gone; worker exits");
                return;
            }
            let Some((stream, peer)) = self.accept(waiter.as_ref()) else {
                // Idle: milter connections kept too long are closed.
                self.policy.hook_engine().close_idle(Instant::now());
                continue;
            };
            let Some(peer) = peer.or_else(|| stream.peer_addr().ok()) else {
                continue;
            };
            if !self.report_busy(Some(canonical(peer.ip()))) {
                self.session(stream, peer);
                return;
            }
            served += 1;
            if self.session(stream, peer) == SessionEnd::Panicked
                || !self.report(Availability::Idle)
            {
                return;
            }
        }
        log::info!("served {served} sessions (smtpd.max_use); worker exits");
    }

    /// An epoll instance with every listener and the hand-off socket registered
    /// exclusively: the kernel wakes one waiting worker per event instead of all.
    fn exclusive_waiter(&self) -> nix::Result<Epoll> {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        for (i, l) in self.listeners.iter().enumerate() {
            ep.add(l.as_fd(), EpollEvent::new(flags, i as u64))?;
        }
        if let Some(h) = &self.handoff {
            ep.add(
                h.as_fd(),
                EpollEvent::new(flags, self.listeners.len() as u64),
            )?;
        }
        Ok(ep)
    }

    /// Which of the listeners (index `listeners.len()`: the hand-off socket) became
    /// readable within a second.
    fn wait_ready(&self, waiter: Option<&Epoll>) -> Vec<usize> {
        if let Some(ep) = waiter {
            let mut events = [EpollEvent::empty(); 8];
            return match ep.wait(&mut events, PollTimeout::from(1000u16)) {
                Ok(n) => events[..n].iter().map(|e| e.data() as usize).collect(),
                Err(_) => Vec::new(),
            };
        }
        let mut fds: Vec<PollFd<'_>> = self
            .listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        if let Some(h) = &self.handoff {
            fds.push(PollFd::new(h.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(n) if n > 0 => {}
            _ => return Vec::new(),
        }
        fds.iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits up to a second for a connection: one passed down by the busy acceptor
    /// first (its peer address still to be asked), else one accepted from any listener.
    fn accept(&self, waiter: Option<&Epoll>) -> Option<(TcpStream, Option<SocketAddr>)> {
        let ready = self.wait_ready(waiter);
        if let Some(h) = &self.handoff {
            if ready.contains(&self.listeners.len()) {
                if let Some(fd) = receive_handoff(h.as_raw_fd()) {
                    return Some((TcpStream::from(fd), None));
                }
            }
        }
        for i in ready.into_iter().filter(|i| *i < self.listeners.len()) {
            match self.listeners[i].accept() {
                Ok((s, peer)) => return Some((s, Some(peer))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => log::warn!("accept: {e}"),
            }
        }
        None
    }

    /// One accepted connection: the per-client slot, then the session.
    fn session(&self, stream: TcpStream, peer: SocketAddr) -> SessionEnd {
        let s = &self.policy.cfg.smtpd;
        let ip = canonical(peer.ip());
        let local = stream.local_addr().ok();
        let role = local.map_or(sloop_common::config::ListenRole::Smtp, |l| {
            self.policy.cfg.role_of(l)
        });
        let proxied = local.is_some_and(|l| self.policy.cfg.is_proxy_listener(l));
        let mut conn = match Conn::new(stream, s.command_timeout) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cannot set up connection from [{ip}]: {e}");
                return SessionEnd::Normal;
            }
        };
        let (ip, port) = match proxied {
            true => match crate::proxy::accept(&self.policy, &mut conn, peer, &self.watchdog) {
                Some(client) => (client.ip(), client.port()),
                None => return SessionEnd::Normal,
            },
            false => (ip, peer.port()),
        };
        conn.set_endpoints(port, local);
        let run_dir = &self.policy.cfg.server.run_dir;
        // A limit at or above the pool's size can never refuse anyone: no bookkeeping.
        // Clients in relay.networks are exempt (as Postfix exempts mynetworks from
        // smtpd_client_connection_count_limit).
        let limited = s.max_per_client < s.max_processes && !self.policy.may_relay(ip);
        let acquired = if limited {
            crate::client_limit::acquire(run_dir, ip, s.max_per_client)
        } else {
            Ok(None)
        };
        match acquired {
            Ok(Some(slot)) => conn.hold_slot(slot),
            Ok(None) if !limited => {}
            Ok(None) => {
                log::warn!(
                    "too many connections from [{ip}]: limit {} (smtpd.max_per_client)",
                    s.max_per_client
                );
                let host = &self.policy.cfg.server.hostname;
                return self.refuse(
                    &mut conn,
                    Reply::new(
                        421,
                        (4, 7, 0),
                        format!("{host} Error: too many connections"),
                    ),
                );
            }
            Err(e) => {
                log::warn!("per-client limit check failed for [{ip}]: {e}; temporary failure");
                let host = &self.policy.cfg.server.hostname;
                return self.refuse(
                    &mut conn,
                    Reply::new(421, (4, 3, 0), format!("{host} Error: temporary failure")),
                );
            }
        };
        serve_as(&self.policy, &mut conn, ip, &self.watchdog, role)
    }

    fn refuse(&self, conn: &mut Conn, reply: Reply) -> SessionEnd {
        self.watchdog.attach(None, Vec::new());
        self.watchdog.arm(
            "refuse",
            Instant::now() + self.policy.cfg.smtpd.command_timeout,
        );
        let _ = conn.write_all(&reply.to_wire());
        self.watchdog.detach();
        SessionEnd::Normal
    }

    /// Writes a client record; false when the supervisor is gone.
    /// `Busy` and the client's address in one write (one wake-up of the supervisor).
    fn report_busy(&mut self, client: Option<std::net::IpAddr>) -> bool {
        let Some(f) = self.status.as_mut() else {
            return true;
        };
        let pid = worker_pid();
        let mut rec = encode(pid, Availability::Busy).to_vec();
        if let Some(ip) = client {
            rec.extend_from_slice(&encode_client(pid, ip));
        }
        match f.write_all(&rec) {
            Ok(()) => true,
            Err(e) => {
                log::info!("status pipe: {e}; supervisor gone, worker exits");
                false
            }
        }
    }

    fn report(&mut self, state: Availability) -> bool {
        let Some(f) = self.status.as_mut() else {
            return true;
        };
        match f.write_all(&encode(worker_pid(), state)) {
            Ok(()) => true,
            Err(e) => {
                log::info!("status pipe: {e}; supervisor gone, worker exits");
                false
            }
        }
    }
}

/// Takes one connection from the hand-off socket, if one is still there (another
/// worker, or the supervisor taking it back, may have been first).
fn receive_handoff(fd: RawFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), flags).ok()?;
    let mut got = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel has just installed `raw` in our descriptor table
                // for this message; nothing else owns it.
                #[allow(unsafe_code)]
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                got.get_or_insert(owned);
            }
        }
    }
    got
}

/// This process's id, asked of the kernel once (`getpid(2)` is a system call).
fn worker_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}
