//! The pickup (`sloop-pickup`): takes local submissions from the spool's `maildrop/`
//! into the queue, and answers queue listings for local users (Postfix's pickup and
//! showq; docs/sloop-pickup.8.md, docs/security.md).
//!
//! One process under `sloopd`, running as the spool owner with the submission group,
//! one mio loop: it scans `maildrop/` at start, whenever `public/pickup` is poked (by
//! `sloop-drop`) and every `queue.scan_interval`, handling each entry as take.rs says.
//! Connections on `public/showq` (from `sloop-drop mailq`) each get the queue listing
//! of `sloop queue list`, written by a short-lived thread so a slow reader cannot stop
//! the pickup. SIGTERM, SIGINT and SIGHUP end it (on a reload `sloopd` starts a new
//! one on the new configuration).
//!
//! What can go wrong: the FIFO or the socket cannot be set up (exit 75, `sloopd`
//! restarts it with backoff); `maildrop/` cannot be read (logged, retried at the next
//! scan); a bad file (moved to `corrupt/` with a warning, take.rs). Milters whose
//! `listeners` include `local` see each message before its commit (filter.rs).

pub mod filter;
pub mod returned;
mod showq;
pub mod take;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sloop_common::config::{resolve_path, Config};
use sloop_common::exitcode;
use sloop_common::spool::Spool;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

const SIGNALS: Token = Token(0);
const FIFO: Token = Token(1);
const SHOWQ: Token = Token(2);

/// Runs the pickup with the config at `-c` (or `SLOOP_CONFIG`, or the default);
/// returns the process exit code.
pub fn run(config: Option<&Path>) -> i32 {
    let path = resolve_path(config);
    let cfg = match Config::load_inherited(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sloop-pickup: {e}");
            return exitcode::EX_CONFIG;
        }
    };
    sloop_common::logging::init("sloop-pickup", cfg.log_level);
    match serve(&cfg) {
        Ok(()) => exitcode::EX_OK,
        Err(e) => {
            log::error!("fatal: {e}");
            exitcode::EX_TEMPFAIL
        }
    }
}

/// The loop's own plumbing failed: what it was doing and why.
fn ctx<T>(r: io::Result<T>, what: &str) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("cannot {what}: {e}")))
}

fn serve(cfg: &Config) -> io::Result<()> {
    let spool = Spool::new(&cfg.server.spool_dir);
    ctx(
        spool.ensure_layout().map_err(io::Error::other),
        "check the spool",
    )?;
    let mut poll = ctx(Poll::new(), "create poll")?;
    let mut signals = ctx(Signals::new([SIGTERM, SIGINT, SIGHUP]), "install signals")?;
    let registry = poll.registry();
    ctx(
        registry.register(&mut signals, SIGNALS, Interest::READABLE),
        "register signals",
    )?;
    let (fifo, _fifo_writer) = ctx(open_fifo(&spool.pickup_fifo()), "open public/pickup")?;
    let fifo_fd = fifo.as_raw_fd();
    ctx(
        registry.register(&mut SourceFd(&fifo_fd), FIFO, Interest::READABLE),
        "register public/pickup",
    )?;
    let listener = ctx(showq::Listener::bind(&spool), "listen on public/showq")?;
    let showq_fd = listener.raw_fd();
    ctx(
        registry.register(&mut SourceFd(&showq_fd), SHOWQ, Interest::READABLE),
        "register public/showq",
    )?;
    log::info!("started: maildrop {}", spool.maildrop_dir().display());
    let interval = cfg.queue.scan_interval;
    let max_size = cfg.smtpd.max_message_size;
    let returner = returned::Returner {
        hostname: cfg.server.hostname.clone(),
        postmaster: crate::qmgr::bounce::postmaster_address(&cfg.local_domains),
    };
    let mut filters = filter::LocalFilters::new(&cfg.hooks, returner);
    let mut events = Events::with_capacity(16);
    let mut next_scan = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_scan {
            scan(&spool, max_size, filters.as_mut());
            // Milter connections serve one scan's messages, then close.
            if let Some(f) = filters.as_mut() {
                f.close_kept();
            }
            next_scan = Instant::now() + interval;
        }
        let wait = next_scan.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return ctx(Err(e), "poll");
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    if signals.pending().next().is_some() {
                        log::info!("stopped");
                        return Ok(());
                    }
                }
                FIFO => {
                    drain(&fifo);
                    next_scan = Instant::now();
                }
                SHOWQ => listener.accept_all(&spool),
                Token(_) => {}
            }
        }
    }
}

/// Takes every entry of `maildrop/`, oldest name first.
fn scan(spool: &Spool, max_size: u64, mut filters: Option<&mut filter::LocalFilters>) {
    let dir = spool.maildrop_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            log::error!("cannot read {}: {e}; will retry", dir.display());
            return;
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_unstable();
    for name in names {
        take::take_filtered(spool, &name, max_size, filters.as_deref_mut());
    }
}

/// The FIFO's read end, and a write end held open so reads never see EOF.
fn open_fifo(path: &Path) -> io::Result<(File, File)> {
    let open = |read: bool| {
        OpenOptions::new()
            .read(read)
            .write(!read)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    let read = open(true)?;
    let write = open(false)?;
    Ok((read, write))
}

fn drain(mut fifo: &File) {
    let mut buf = [0u8; 512];
    loop {
        match fifo.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}
