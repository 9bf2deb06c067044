//! The worker's view of pool overload (pool_proto.rs, `sloop_common::pool_state`).
//!
//! `sloopd` keeps `<run_dir>/overload` while every worker is busy at
//! `smtpd.max_processes`, and sends `SIGWINCH` to every worker when that file appears,
//! changes or goes. The handler only raises a flag; the file is read again at the next
//! read of the session: [`crate::conn::Conn::read`] returns
//! [`crate::conn::ReadOutcome::Interrupted`] when the signal broke a wait (a socket
//! with `SO_RCVTIMEO` is never restarted after a signal), so a session blocked waiting
//! for a command takes the short budget within moments of the overload starting.
//!
//! While overloaded, a session waiting for a command waits at most
//! `smtpd.overload_idle_timeout` (counted from the start of the wait), and one whose
//! client address holds more than its share of the pool at most
//! [`OVER_SHARE_IDLE`]; then it ends with `421 4.4.2 <host> Timeout, closing
//! connection`. Sessions in DATA keep `smtpd.data_timeout`. A file that cannot be read
//! means no overload: the worker keeps its normal timeouts.
//!
//! `SIGWINCH` is ignored by default, so a signal that reaches a worker before it has
//! set its handler does no harm; the worker reads the file once after setting it.

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use sloop_common::config::SmtpdConfig;
use sloop_common::pool_state::{Overload, OVER_SHARE_IDLE};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What the worker knows.
#[derive(Debug)]
struct Watch {
    run_dir: PathBuf,
    signalled: Arc<AtomicBool>,
    current: Mutex<Option<Overload>>,
}

static WATCH: OnceLock<Watch> = OnceLock::new();

/// Sets the `SIGWINCH` handler and reads the overload file once. Call once, from the
/// thread that serves sessions; without it the worker never considers itself
/// overloaded (the `--inetd` mode).
pub fn install(run_dir: &Path) -> std::io::Result<()> {
    let signalled = Arc::new(AtomicBool::new(true));
    signal_hook::flag::register(signal_hook::consts::SIGWINCH, Arc::clone(&signalled))?;
    let _ = WATCH.set(Watch {
        run_dir: run_dir.to_path_buf(),
        signalled,
        current: Mutex::new(None),
    });
    refresh();
    Ok(())
}

/// Runs `f` (which starts a helper thread) with `SIGWINCH` blocked, so the thread
/// inherits the block and the signal always interrupts the session's thread.
pub fn without_signal<T>(f: impl FnOnce() -> T) -> T {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_ok();
    let out = f();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    }
    out
}

/// True when `SIGWINCH` arrived since the file was last read.
pub fn signalled() -> bool {
    WATCH
        .get()
        .is_some_and(|w| w.signalled.load(Ordering::Relaxed))
}

/// Reads the file again if a signal asked for it.
pub fn refresh() {
    let Some(w) = WATCH.get() else {
        return;
    };
    if !w.signalled.swap(false, Ordering::Relaxed) {
        return;
    }
    let now = Overload::read(&w.run_dir);
    if let Ok(mut cur) = w.current.lock() {
        *cur = now;
    }
}

/// True while the pool is overloaded.
pub fn active() -> bool {
    refresh();
    WATCH
        .get()
        .and_then(|w| w.current.lock().ok().map(|c| c.is_some()))
        .unwrap_or(false)
}

/// How long a session with a client at `ip` may wait for a command now.
pub fn idle_budget(s: &SmtpdConfig, ip: IpAddr) -> Duration {
    refresh();
    let state = WATCH
        .get()
        .and_then(|w| w.current.lock().ok().map(|c| c.clone()))
        .flatten();
    budget(s, state.as_ref(), ip)
}

/// The budget for a state (pure).
fn budget(s: &SmtpdConfig, state: Option<&Overload>, ip: IpAddr) -> Duration {
    match state {
        None => s.idle_timeout,
        Some(o) if o.over_share.contains(&ip) => OVER_SHARE_IDLE
            .min(s.overload_idle_timeout)
            .min(s.idle_timeout),
        Some(_) => s.overload_idle_timeout.min(s.idle_timeout),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn smtpd() -> SmtpdConfig {
        let path = std::path::Path::new("/nonexistent/sloop.toml");
        sloop_common::Config::parse(path, "").unwrap().smtpd
    }

    #[test]
    fn the_budget_follows_the_overload_and_the_share() {
        let s = smtpd();
        let me: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(budget(&s, None, me), s.idle_timeout);
        let o = Overload {
            since: 1,
            over_share: vec![me],
        };
        assert_eq!(budget(&s, Some(&o), me), OVER_SHARE_IDLE);
        assert_eq!(budget(&s, Some(&o), other), Duration::from_secs(10));
    }
}
