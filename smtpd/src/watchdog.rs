//! The watchdog: a thread that ends the worker if a phase blocks past its deadline plus
//! `smtpd.watchdog_grace` (SEED.md: "the session, not the check, owns the deadline").
//!
//! The session arms it before each phase (connect checks, reading, command handling,
//! queueing, writing) with that phase's deadline, and disarms it only after the reply is
//! written. If the deadline plus grace passes while still armed, the watchdog writes
//! `421 4.4.2` to the client socket with a non-blocking send (so it cannot block
//! itself), logs the phase and the elapsed time, and exits the process; the supervisor
//! starts a fresh worker. Normal deadlines are enforced earlier by the socket layer and
//! the queue client, so the watchdog only fires when something is stuck.

use nix::sys::socket::{send, MsgFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Exit status of a worker ended by its watchdog.
pub const EXIT_WATCHDOG: i32 = 75;

#[derive(Debug, Default)]
struct Armed {
    deadline: Option<Instant>,
    started: Option<Instant>,
    phase: &'static str,
    socket: Option<OwnedFd>,
    message: Vec<u8>,
}

/// Handle to the watchdog thread.
#[derive(Debug, Clone)]
pub struct Watchdog {
    inner: Arc<(Mutex<Armed>, Condvar)>,
    grace: Duration,
}

impl Watchdog {
    /// Starts the thread; `message` is the complete 421 line to send when it fires.
    pub fn spawn(grace: Duration) -> std::io::Result<Watchdog> {
        let w = Watchdog {
            inner: Arc::new((Mutex::new(Armed::default()), Condvar::new())),
            grace,
        };
        let t = w.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || t.run())?;
        Ok(w)
    }

    /// Sets the socket (a duplicate of the client's) and the 421 line for this session.
    pub fn attach(&self, socket: Option<OwnedFd>, message: Vec<u8>) {
        let mut a = self.lock();
        a.socket = socket;
        a.message = message;
    }

    /// Arms for `phase` until `deadline` (the watchdog fires at deadline + grace).
    pub fn arm(&self, phase: &'static str, deadline: Instant) {
        let mut a = self.lock();
        a.deadline = Some(deadline);
        a.started = Some(Instant::now());
        a.phase = phase;
        self.inner.1.notify_all();
    }

    /// Disarms and forgets the socket (end of session).
    pub fn detach(&self) {
        let mut a = self.lock();
        a.deadline = None;
        a.socket = None;
        self.inner.1.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut a = self.lock();
        loop {
            let fire_at = a.deadline.map(|d| d + self.grace);
            match fire_at {
                None => {
                    a = self.inner.1.wait(a).unwrap_or_else(PoisonError::into_inner);
                }
                Some(t) if Instant::now() >= t => {
                    fire(&a);
                }
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    a = self
                        .inner
                        .1
                        .wait_timeout(a, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }
}

fn fire(a: &Armed) -> ! {
    let elapsed = a.started.map(|s| s.elapsed()).unwrap_or_default();
    if let Some(sock) = &a.socket {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        if send(sock.as_raw_fd(), &a.message, flags) == Err(nix::errno::Errno::ENOTSOCK) {
            // Standalone mode on a pipe: made non-blocking first (the process is about
            // to exit, so changing the shared file status flags is harmless).
            let nonblock = nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK);
            let _ = nix::fcntl::fcntl(sock.as_raw_fd(), nonblock);
            let _ = nix::unistd::write(sock, &a.message);
        }
    }
    log::error!(
        "watchdog fired: phase {} blocked for {} ms; worker exits",
        a.phase,
        elapsed.as_millis()
    );
    std::process::exit(EXIT_WATCHDOG)
}
