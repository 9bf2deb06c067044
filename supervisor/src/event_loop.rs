//! `sloopd`'s one event loop (mio, after `examples/tcp_server.rs`): signals arrive
//! through signal-hook-mio, status records through the status pipe registered as a
//! `SourceFd`, and timers (restart backoff, the stop deadline) through the poll
//! timeout.
//!
//! Signal handlers only record which signals arrived; the loop then acts, in a fixed
//! order: status records first (so a worker's last record is counted before its exit),
//! then exits (SIGCHLD), stop (SIGTERM/SIGINT), reload (SIGHUP), status (SIGUSR1), and
//! finally starting whatever children are missing. The loop ends only when a stop has
//! finished; errors from the poller itself are returned to `main`.

use crate::supervisor::Supervisor;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const STATUS: Token = Token(1);
/// Listening sockets, watched only while the busy acceptor takes connections.
const LISTENER: Token = Token(2);

/// Which signals arrived since the last turn of the loop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub child: bool,
    pub stop: bool,
    pub reload: bool,
    pub status: bool,
}

impl Flags {
    /// Records one signal number.
    pub fn note(&mut self, sig: i32) {
        match sig {
            SIGCHLD => self.child = true,
            SIGTERM | SIGINT => self.stop = true,
            SIGHUP => self.reload = true,
            SIGUSR1 => self.status = true,
            _ => {}
        }
    }
}

/// Installs the handlers for the signals the loop acts on. Call it before binding
/// anything: from then on a signal is queued for the loop instead of taking its
/// default action (SIGHUP and SIGUSR1 would otherwise kill `sloopd` during start-up).
pub fn signals() -> io::Result<Signals> {
    Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1])
}

/// Runs the loop until a stop has finished; `signals` comes from [`signals`].
pub fn run(sup: &mut Supervisor, mut signals: Signals) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let status_fd = sup.status_fd();
    poll.registry()
        .register(&mut SourceFd(&status_fd), STATUS, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    sup.start_children(Instant::now());
    let mut watched: Vec<std::os::fd::RawFd> = Vec::new();
    loop {
        watch_listeners(&poll, &mut watched, sup.accept_fds());
        let timeout = sup.next_timeout(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut flags = Flags::default();
        for event in events.iter() {
            match event.token() {
                STATUS => sup.read_status(),
                SIGNALS => signals.pending().for_each(|s| flags.note(s)),
                // The turn's balance() accepts.
                _ => {}
            }
        }
        if act(sup, flags, Instant::now()) {
            return Ok(());
        }
    }
}

/// One turn's work after the events were read; true when sloopd should exit.
fn act(sup: &mut Supervisor, flags: Flags, now: Instant) -> bool {
    if flags.child {
        sup.handle_exits(now);
    }
    if flags.stop {
        sup.begin_stop(now);
    }
    if flags.reload {
        sup.reload();
    }
    if flags.status {
        sup.log_status();
    }
    if sup.stop_finished(Instant::now()) {
        return true;
    }
    sup.start_children(Instant::now());
    sup.balance(Instant::now());
    false
}

/// Registers the listening sockets while the busy acceptor wants them, and only then
/// (otherwise every connection would wake `sloopd` for nothing). A listener closed by
/// a reload has left the poller by itself; errors deregistering it are ignored.
fn watch_listeners(
    poll: &Poll,
    watched: &mut Vec<std::os::fd::RawFd>,
    wanted: Vec<std::os::fd::RawFd>,
) {
    if *watched == wanted {
        return;
    }
    for fd in watched.drain(..) {
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
    }
    for fd in wanted {
        match poll
            .registry()
            .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
        {
            Ok(()) => watched.push(fd),
            Err(e) => log::warn!("cannot watch listening socket {fd}: {e}"),
        }
    }
}

/// Polls `done` every 10 ms until it holds or `timeout` passes (used only at the very
/// end of a stop, after SIGKILL, when there is nothing else to wait on).
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_flags() {
        let mut f = Flags::default();
        f.note(SIGCHLD);
        f.note(SIGINT);
        assert!(f.child && f.stop && !f.reload && !f.status);
        f.note(SIGHUP);
        f.note(SIGUSR1);
        f.note(libc::SIGPIPE);
        assert!(f.reload && f.status);
    }
}
