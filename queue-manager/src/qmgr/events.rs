//! The queue manager's one event loop (mio, `Token` constants,
//! signal-hook-mio as a source, handlers set flags and the loop acts).
//!
//! Sources: signals (SIGTERM/SIGINT stop, SIGHUP reloads, SIGCHLD reaps), the trigger
//! FIFO (opened read-only non-blocking, plus a write end we keep open ourselves so the
//! FIFO never reports EOF and the loop never spins; every wake-up drains it), and each
//! delivery worker's stdout (token `WORKER_TOKEN_BASE + slot`). Timers are the poll
//! timeout: the earliest of the next scan, the next deferred message due, a job
//! deadline, the end of the stop grace period.
//!
//! Errors here (cannot create the poll, cannot open the FIFO) end the process with a
//! temporary-failure status; `sloopd` restarts it and recovery does the rest.

use super::workers::WORKER_TOKEN_BASE;
use super::Qmgr;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sloop_common::config::Config;
use sloop_common::priority::Priority;
use sloop_common::spool::Spool;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const TRIGGER: Token = Token(1);
/// How long idle workers get to exit on EOF at shutdown before SIGKILL.
const WORKER_EXIT_GRACE: Duration = Duration::from_secs(1);

/// A failure of the loop's own plumbing.
#[derive(Debug)]
pub struct LoopError {
    what: &'static str,
    source: io::Error,
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}: {}", self.what, self.source)
    }
}

impl std::error::Error for LoopError {}

fn ctx<T>(r: io::Result<T>, what: &'static str) -> Result<T, LoopError> {
    r.map_err(|source| LoopError { what, source })
}

/// The trigger FIFO: our read end and a write end held open so reads never see EOF.
struct Trigger {
    read: File,
    _write: File,
}

impl Trigger {
    fn open(path: &Path) -> io::Result<Trigger> {
        let open = |read: bool| {
            OpenOptions::new()
                .read(read)
                .write(!read)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
        };
        let read = open(true)?;
        let write = open(false)?;
        Ok(Trigger {
            read,
            _write: write,
        })
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }
}

/// Runs the loop until SIGTERM and the end of the running jobs.
pub fn run(cfg: Config, spool: Spool, priority: Priority) -> Result<(), LoopError> {
    let mut poll = ctx(Poll::new(), "create poll")?;
    let mut signals = ctx(
        Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD]),
        "install signal handlers",
    )?;
    let registry = poll.registry();
    ctx(
        registry.register(&mut signals, SIGNALS, Interest::READABLE),
        "register signals",
    )?;
    let mut trigger = ctx(Trigger::open(&spool.trigger_path()), "open trigger FIFO")?;
    let fd = trigger.read.as_raw_fd();
    ctx(
        registry.register(&mut SourceFd(&fd), TRIGGER, Interest::READABLE),
        "register trigger FIFO",
    )?;
    let registry = ctx(registry.try_clone(), "clone poll registry")?;
    let mut q = Qmgr::new(cfg, spool, registry, priority);
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = q.timeout(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return ctx(Err(e), "poll");
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => on_signals(&mut q, &mut signals),
                TRIGGER => {
                    trigger.drain();
                    q.poked = true;
                }
                Token(n) if n >= WORKER_TOKEN_BASE => q.on_worker_output(n - WORKER_TOKEN_BASE),
                Token(_) => {}
            }
        }
        let now = Instant::now();
        q.check_deadlines(now);
        if let Some(deadline) = q.stopping {
            q.settle();
            if q.pools.busy_slots().is_empty() || now >= deadline {
                break;
            }
            continue;
        }
        q.tick(now);
        q.settle();
    }
    let abandoned = q.pools.busy_slots().len();
    if abandoned > 0 {
        log::warn!("{abandoned} deliveries still running at stop; their messages are retried at next start");
    }
    q.pools.shutdown(&q.registry, WORKER_EXIT_GRACE);
    Ok(())
}

fn on_signals(q: &mut Qmgr, signals: &mut Signals) {
    for sig in signals.pending() {
        match sig {
            SIGTERM | SIGINT => q.begin_stop(),
            SIGHUP => {
                q.reload();
                q.retire_idle();
            }
            _ => q.pools.reap(),
        }
    }
}
