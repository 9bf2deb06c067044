//! The watchdog: a thread that ends the worker if a phase blocks past its deadline plus
//! `smtpd.watchdog_grace` (docs/invariants.md: "the session, not the check, owns the deadline").
//!
//! The session arms it before each phase (connect checks, reading, command handling,
//! queueing, writing) with that phase's deadline, and disarms it only after the reply is
//! written. If the deadline plus grace passes while still armed, the watchdog writes
//! `421 4.4.2` to the client socket with a non-blocking send (so it cannot block
//! itself), logs the phase and the elapsed time, and exits the process; the supervisor
//! starts a fresh worker. Normal deadlines are enforced earlier by the socket layer and
//! the queue client, so the watchdog only fires when something is stuck.
//!
//! Arming is cheap (several arms per message): the thread records the instant it is
//! waiting for, and `arm` wakes it only when the new firing time is earlier than that
//! (or the thread is idle). A later deadline is picked up when the thread wakes at the
//! old time: it always re-reads the current deadline before firing, so an extended
//! deadline never fires early and a cleared one (`detach`) never fires.

use nix::sys::socket::{send, MsgFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Exit status of a worker ended by its watchdog; `sloopd` does not count it as a
/// crash (`sloop_common::exitcode::SMTPD_WATCHDOG`).
pub const EXIT_WATCHDOG: i32 = sloop_common::exitcode::SMTPD_WATCHDOG;

#[derive(Debug, Default)]
struct Armed {
    deadline: Option<Instant>,
    started: Option<Instant>,
    phase: &'static str,
    socket: Option<OwnedFd>,
    message: Vec<u8>,
    /// The firing time the thread is waiting for (`None`: idle, or not waiting).
    waiting_until: Option<Instant>,
    /// Wake-ups sent by `arm` (observed by the tests).
    notifies: u64,
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
        Watchdog::spawn_with(grace, |a| fire(a))
    }

    /// Starts the thread with `on_fire` as the action; the thread ends after it.
    fn spawn_with(
        grace: Duration,
        on_fire: impl FnOnce(&Armed) + Send + 'static,
    ) -> std::io::Result<Watchdog> {
        let w = Watchdog {
            inner: Arc::new((Mutex::new(Armed::default()), Condvar::new())),
            grace,
        };
        let t = w.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || t.run(on_fire))?;
        Ok(w)
    }

    /// Sets the socket (a duplicate of the client's) and the 421 line for this session.
    pub fn attach(&self, socket: Option<OwnedFd>, message: Vec<u8>) {
        let mut a = self.lock();
        a.socket = socket;
        a.message = message;
    }

    /// Arms for `phase` until `deadline` (the watchdog fires at deadline + grace).
    /// Wakes the thread only if it must fire earlier than the time it waits for.
    pub fn arm(&self, phase: &'static str, deadline: Instant) {
        let mut a = self.lock();
        a.deadline = Some(deadline);
        a.started = Some(Instant::now());
        a.phase = phase;
        let earlier = match a.waiting_until {
            None => true,
            Some(w) => deadline + self.grace < w,
        };
        if earlier {
            a.notifies += 1;
            self.inner.1.notify_one();
        }
    }

    /// Disarms and forgets the socket (end of session). No wake-up: the thread re-reads
    /// the (now empty) deadline when its wait ends and goes idle.
    pub fn detach(&self) {
        let mut a = self.lock();
        a.deadline = None;
        a.socket = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the current firing time, re-reading the deadline after every wake-up;
    /// calls `on_fire` (and returns) once deadline + grace has passed while armed.
    fn run(&self, on_fire: impl FnOnce(&Armed)) {
        let mut a = self.lock();
        loop {
            let fire_at = a.deadline.map(|d| d + self.grace);
            a.waiting_until = fire_at;
            match fire_at {
                None => {
                    a = self.inner.1.wait(a).unwrap_or_else(PoisonError::into_inner);
                }
                Some(t) if Instant::now() >= t => {
                    a.waiting_until = None;
                    on_fire(&a);
                    return;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::sync::mpsc::{self, Receiver};

    const GRACE: Duration = Duration::from_millis(10);

    /// A watchdog whose firing sends (when, phase) instead of exiting.
    fn watchdog() -> (Watchdog, Receiver<(Instant, &'static str)>) {
        let (tx, rx) = mpsc::channel();
        let w = Watchdog::spawn_with(GRACE, move |a| {
            let _ = tx.send((Instant::now(), a.phase));
        })
        .unwrap();
        (w, rx)
    }

    /// Polls `cond` on the shared state until it holds (10 s at most).
    fn wait_state(w: &Watchdog, what: &str, cond: impl Fn(&Armed) -> bool) {
        let limit = Instant::now() + Duration::from_secs(10);
        while !cond(&w.lock()) {
            assert!(Instant::now() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn extension_without_notify_does_not_fire_early() {
        let (w, rx) = watchdog();
        let first = Instant::now() + Duration::from_secs(1);
        w.arm("first", first);
        wait_state(&w, "wait on first", |a| {
            a.waiting_until == Some(first + GRACE)
        });
        let before = w.lock().notifies;
        let later = first + Duration::from_millis(500);
        w.arm("later", later);
        assert_eq!(
            w.lock().notifies,
            before,
            "a later deadline must not wake the thread"
        );
        let (fired_at, phase) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(phase, "later");
        assert!(
            fired_at >= later + GRACE,
            "fired before the extended deadline"
        );
    }

    #[test]
    fn earlier_deadline_fires_on_time() {
        let (w, rx) = watchdog();
        let far = Instant::now() + Duration::from_secs(3600);
        w.arm("far", far);
        wait_state(&w, "wait on far", |a| a.waiting_until == Some(far + GRACE));
        let before = w.lock().notifies;
        let near = Instant::now() + Duration::from_millis(100);
        w.arm("near", near);
        assert_eq!(
            w.lock().notifies,
            before + 1,
            "an earlier deadline must wake the thread"
        );
        let (fired_at, phase) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(phase, "near");
        assert!(
            fired_at >= near + GRACE,
            "fired before the deadline plus grace"
        );
    }

    #[test]
    fn detach_prevents_firing() {
        let (w, rx) = watchdog();
        let deadline = Instant::now() + Duration::from_millis(200);
        w.arm("read", deadline);
        wait_state(&w, "wait on deadline", |a| {
            a.waiting_until == Some(deadline + GRACE)
        });
        w.detach();
        // The thread wakes at the old time, re-reads the (cleared) deadline, goes idle.
        wait_state(&w, "idle after the old deadline", |a| {
            a.waiting_until.is_none() && Instant::now() > deadline + GRACE
        });
        assert!(rx.try_recv().is_err(), "a cleared deadline fired");
        // Re-arming from idle wakes the thread and still fires.
        let again = Instant::now() + Duration::from_millis(50);
        w.arm("again", again);
        let (fired_at, phase) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(phase, "again");
        assert!(fired_at >= again + GRACE);
    }
}
