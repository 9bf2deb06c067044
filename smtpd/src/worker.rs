//! The prefork worker: accept loop and status pipe (docs/architecture.md §4,
//! `sloop_common::pool_proto`).
//!
//! The worker adopts the listening sockets and the status pipe `sloopd` passed down,
//! reports `Idle`, waits in `poll(2)` on all listeners and on the hand-off socket,
//! takes a connection the supervisor's busy acceptor passes down (preferred: it has
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
use sloop_common::pool_proto::{encode, encode_client, Availability};
use std::fs::File;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
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
            let Some(stream) = self.accept() else {
                // Idle: milter connections kept too long are closed.
                self.policy.hook_engine().close_idle(Instant::now());
                continue;
            };
            if !self.report(Availability::Busy) {
                self.session(stream);
                return;
            }
            if let Ok(peer) = stream.peer_addr() {
                if !self.report_client(canonical(peer.ip())) {
                    self.session(stream);
                    return;
                }
            }
            served += 1;
            if self.session(stream) == SessionEnd::Panicked || !self.report(Availability::Idle) {
                return;
            }
        }
        log::info!("served {served} sessions (smtpd.max_use); worker exits");
    }

    /// Waits up to a second for a connection: one passed down by the busy acceptor
    /// first, else one accepted from any listener.
    fn accept(&self) -> Option<TcpStream> {
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
            _ => return None,
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        if let Some(h) = &self.handoff {
            if ready.contains(&self.listeners.len()) {
                if let Some(fd) = receive_handoff(h.as_raw_fd()) {
                    return Some(TcpStream::from(fd));
                }
            }
        }
        for i in ready.into_iter().filter(|i| *i < self.listeners.len()) {
            match self.listeners[i].accept() {
                Ok((s, _)) => return Some(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => log::warn!("accept: {e}"),
            }
        }
        None
    }

    /// One accepted connection: the per-client slot, then the session.
    fn session(&self, stream: TcpStream) -> SessionEnd {
        let s = &self.policy.cfg.smtpd;
        let Ok(peer) = stream.peer_addr() else {
            return SessionEnd::Normal;
        };
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
    fn report_client(&mut self, ip: std::net::IpAddr) -> bool {
        let Some(f) = self.status.as_mut() else {
            return true;
        };
        match f.write_all(&encode_client(std::process::id(), ip)) {
            Ok(()) => true,
            Err(e) => {
                log::info!("status pipe: {e}; supervisor gone, worker exits");
                false
            }
        }
    }

    /// Writes a status record; false when the supervisor is gone.
    fn report(&mut self, state: Availability) -> bool {
        let Some(f) = self.status.as_mut() else {
            return true;
        };
        match f.write_all(&encode(std::process::id(), state)) {
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
