//! Starting, signalling and reaping `sloopd`'s children.
//!
//! A child is one of the programs next to `sloopd` (`server.bin_dir`): an smtpd worker,
//! the queue manager, the pickup (local submissions from `maildrop/`), or (with
//! `local.system_users`) the root local spawner (`sloop-deliver spawner`, see
//! delivery/src/local/spawner.rs), the one child that keeps root. It gets
//! `-c <config>` and `SLOOP_CONFIG`; an smtpd worker also
//! gets `SLOOP_LISTEN_FDS` and `SLOOP_STATUS_FD` (pool_proto.rs), whose descriptors the
//! caller has made inheritable for the duration of the spawn. Children inherit
//! `sloopd`'s stderr, so their log lines go where the supervisor's go, and run as
//! `server.user` when one is configured and `sloopd` runs as root.
//!
//! Reaping is a `waitpid(WNOHANG)` loop ([`reap`]), since SIGCHLD deliveries collate.
//! What can go wrong: the program is missing or not executable (spawn fails; the
//! caller backs off and retries); a signal to a process that is already gone (ignored).

use crate::backoff::ExitClass;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use sloop_common::delivery_proto::ENV_LOCAL_SPAWNER;
use sloop_common::exitcode::SMTPD_WATCHDOG;
use sloop_common::pool_proto::{ENV_HANDOFF_FD, ENV_LISTEN_FDS, ENV_STATUS_FD, ENV_TLS_FD};
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kinds of child `sloopd` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Smtpd,
    Qmgr,
    Pickup,
    LocalSpawner,
}

impl ChildKind {
    /// The program's file name in the bin dir.
    pub fn program(self) -> &'static str {
        match self {
            ChildKind::Smtpd => "sloop-smtpd",
            ChildKind::Qmgr => "sloop-qmgr",
            ChildKind::Pickup => "sloop-pickup",
            ChildKind::LocalSpawner => "sloop-deliver",
        }
    }

    /// Arguments before `-c <config>`.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            ChildKind::LocalSpawner => &["spawner"],
            _ => &[],
        }
    }

    /// How long a child must live before it counts as having started properly, for
    /// kinds without status records. `None`: the kind reports on the status pipe.
    pub fn startup_window(self) -> Option<Duration> {
        match self {
            ChildKind::Smtpd => None,
            ChildKind::Qmgr | ChildKind::Pickup | ChildKind::LocalSpawner => {
                Some(Duration::from_secs(1))
            }
        }
    }
}

impl fmt::Display for ChildKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

/// What a spawn needs besides the kind.
#[derive(Debug, Clone)]
pub struct SpawnSpec<'a> {
    pub bin_dir: &'a Path,
    /// The validated config the child starts on (passed as file name and text).
    pub config: &'a sloop_common::Config,
    /// `Some((listen fds, status fd))` for smtpd workers.
    pub pool_fds: Option<(String, i32)>,
    /// The hand-off socket's receiving end (smtpd workers only, pool_proto.rs).
    pub handoff_fd: Option<i32>,
    /// The TLS memory file (`SLOOP_TLS_FD`) for smtpd workers, when configured.
    pub tls_fd: Option<i32>,
    /// Run as this user (only when `sloopd` is root and `server.user` is set).
    pub creds: Option<(Uid, Gid)>,
}

/// What the supervisor remembers about a running child.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub kind: ChildKind,
    pub started: Instant,
    /// The crash streak of its kind when it started (backoff.rs).
    pub spawn_streak: u32,
    /// The signal we sent to make it exit (or reload), if any.
    pub asked: Option<Signal>,
}

/// A failed spawn.
#[derive(Debug)]
pub enum SpawnError {
    /// The program could not be started (missing, not executable, ...).
    Exec {
        program: PathBuf,
        source: std::io::Error,
    },
    /// The descriptors a worker inherits could not be made inheritable.
    PassFds {
        kind: ChildKind,
        errno: nix::errno::Errno,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Exec { program, source } => {
                write!(f, "cannot start {}: {source}", program.display())
            }
            SpawnError::PassFds { kind, errno } => {
                write!(f, "cannot pass descriptors to {kind}: {}", errno.desc())
            }
        }
    }
}

impl std::error::Error for SpawnError {}

/// Starts a child; returns its pid. The `Child` handle is dropped: [`reap`] collects
/// the exit status.
pub fn spawn(kind: ChildKind, spec: &SpawnSpec<'_>) -> Result<Pid, SpawnError> {
    let program = spec.bin_dir.join(kind.program());
    let mut cmd = Command::new(&program);
    spec.config.pass_to(&mut cmd);
    cmd.args(kind.args())
        .arg("-c")
        .arg(&spec.config.file)
        .env_remove(ENV_LISTEN_FDS)
        .env_remove(ENV_STATUS_FD)
        .env_remove(ENV_HANDOFF_FD)
        .env_remove(ENV_TLS_FD)
        .stdin(Stdio::null());
    if let Some(fd) = spec.handoff_fd {
        cmd.env(ENV_HANDOFF_FD, fd.to_string());
    }
    // Tells the queue manager's local workers where the root local spawner listens
    // (only when sloopd runs one: local.system_users, and children drop to server.user).
    if kind == ChildKind::Qmgr && spec.config.local.system_users && spec.creds.is_some() {
        cmd.env(
            ENV_LOCAL_SPAWNER,
            spec.config.server.run_dir.join("local.sock"),
        );
    } else {
        cmd.env_remove(ENV_LOCAL_SPAWNER);
    }
    if let Some((listen, status)) = &spec.pool_fds {
        cmd.env(ENV_LISTEN_FDS, listen)
            .env(ENV_STATUS_FD, status.to_string());
        if let Some(fd) = spec.tls_fd {
            cmd.env(ENV_TLS_FD, fd.to_string());
        }
    }
    if let Some((uid, gid)) = spec.creds.filter(|_| kind != ChildKind::LocalSpawner) {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    match cmd.spawn() {
        Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
        Err(source) => Err(SpawnError::Exec { program, source }),
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Status(i32),
    Signal(Signal),
}

impl Exit {
    /// A clean `exit(0)`.
    pub fn is_clean(self) -> bool {
        self == Exit::Status(0)
    }

    /// True when this is how a child ends that was sent `asked`: a clean exit, or
    /// death by that very signal (or by the SIGKILL of a stop deadline). Anything else
    /// (a non-zero status, SIGSEGV) is a crash even while it was retiring.
    pub fn answers(self, asked: Option<Signal>) -> bool {
        match asked {
            None => false,
            Some(sig) => {
                self.is_clean()
                    || self == Exit::Signal(sig)
                    || self == Exit::Signal(Signal::SIGKILL)
            }
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Status(code) => write!(f, "exited status={code}"),
            Exit::Signal(sig) => write!(f, "killed by signal {}", sig.as_str()),
        }
    }
}

/// How an exit counts for the restart policy: an exit that answers our signal, or a
/// clean exit after the child served, is expected; an smtpd worker that served and was
/// ended by its watchdog (`exitcode::SMTPD_WATCHDOG`) lost one stuck session and is
/// not a crash; anything else is.
pub fn classify(kind: ChildKind, exit: Exit, asked: Option<Signal>, reported: bool) -> ExitClass {
    if exit.answers(asked) || (exit.is_clean() && reported) {
        ExitClass::Expected
    } else if kind == ChildKind::Smtpd && reported && exit == Exit::Status(SMTPD_WATCHDOG) {
        ExitClass::Watchdog
    } else {
        ExitClass::Crash {
            never_served: !reported,
        }
    }
}

/// Collects every child that has ended, without blocking.
pub fn reap() -> Vec<(Pid, Exit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, Exit::Status(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, Exit::Signal(sig))),
            Ok(WaitStatus::StillAlive) => break,
            // Stopped/continued: not an exit; keep looking.
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD: no children at all.
            Err(_) => break,
        }
    }
    out
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: Pid, sig: Signal) {
    match kill(pid, sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => log::warn!("cannot send {} to pid={pid}: {}", sig.as_str(), e.desc()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn exits_are_described_in_the_log_vocabulary() {
        assert_eq!(Exit::Status(1).to_string(), "exited status=1");
        assert_eq!(
            Exit::Signal(Signal::SIGKILL).to_string(),
            "killed by signal SIGKILL"
        );
        assert!(Exit::Status(0).is_clean());
        assert!(!Exit::Signal(Signal::SIGTERM).is_clean());
    }

    #[test]
    fn an_exit_answers_the_signal_we_sent_but_a_crash_does_not() {
        let hup = Some(Signal::SIGHUP);
        assert!(Exit::Status(0).answers(hup));
        assert!(Exit::Signal(Signal::SIGHUP).answers(hup));
        assert!(!Exit::Signal(Signal::SIGSEGV).answers(hup));
        assert!(!Exit::Status(1).answers(hup));
        assert!(
            !Exit::Status(0).answers(None),
            "not asked: judged on its own"
        );
    }

    /// Regression: a worker ended by its watchdog (a slow client) counted as a crash,
    /// and enough of them pushed the whole pool into restart backoff.
    #[test]
    fn a_watchdog_exit_after_serving_is_not_a_crash() {
        let wd = Exit::Status(SMTPD_WATCHDOG);
        assert_eq!(
            classify(ChildKind::Smtpd, wd, None, true),
            ExitClass::Watchdog
        );
        // Before it ever served, or from another program, it is a crash as any other.
        let early = ExitClass::Crash { never_served: true };
        assert_eq!(classify(ChildKind::Smtpd, wd, None, false), early);
        let crash = ExitClass::Crash {
            never_served: false,
        };
        assert_eq!(classify(ChildKind::Qmgr, wd, None, true), crash);
        assert_eq!(
            classify(ChildKind::Smtpd, Exit::Status(1), None, true),
            crash
        );
        assert_eq!(
            classify(ChildKind::Smtpd, Exit::Status(0), None, true),
            ExitClass::Expected
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it() {
        let cfg = sloop_common::Config::parse(Path::new("/nonexistent/sloop.toml"), "").unwrap();
        let spec = SpawnSpec {
            bin_dir: Path::new("/nonexistent/sloop-bin"),
            config: &cfg,
            pool_fds: None,
            handoff_fd: None,
            tls_fd: None,
            creds: None,
        };
        let e = spawn(ChildKind::Qmgr, &spec).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/sloop-bin/sloop-qmgr"),
            "{e}"
        );
    }
}
