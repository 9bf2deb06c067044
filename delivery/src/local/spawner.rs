//! How a local delivery worker gets root when, and only when, `local.system_users` is
//! on: the local spawner, and the hand-off of a worker's pipes to it.
//!
//! `sloopd` (root) starts `sloop-deliver spawner` as root beside the queue manager
//! when `local.system_users` is on and `server.user` is set. The spawner listens on
//! `<server.run_dir>/local.sock` (mode 0600, owner `server.user`) and accepts only
//! peers whose `SO_PEERCRED` uid is `server.user`'s (or root's).
//!
//! The queue manager starts its local workers as always (`sloop-deliver local`, as
//! `server.user`). Such a worker, seeing `local.system_users` on and itself not root,
//! connects to the socket and sends its stdin and stdout (the queue manager's pipes)
//! with `SCM_RIGHTS` ([`hand_off`]). The spawner starts a root `sloop-deliver local`
//! on those two descriptors, with the configuration the spawner itself was started
//! on (nothing from the peer but the two pipes), and stderr its own. The worker the
//! queue manager started then lets go of the pipes and stays as a stand-in: it exits
//! with the root worker's exit status, which the spawner sends as one byte; when the
//! queue manager kills the stand-in (a job past its deadline), the spawner sees the
//! connection close and kills the root worker. So the queue manager's view (a child
//! per worker, its pipes, kill and reap) is unchanged.
//!
//! What the root worker trusts: the job lines and queue files, as the `server.user`
//! queue manager writes them (the same trust Postfix's root `local` places in the
//! `postfix`-owned queue). It writes every mailbox, file and command as the user
//! privs.rs names, never as root but for root's own mailbox.
//!
//! `sloopd` names the socket in the queue manager's environment (`SLOOP_LOCAL_SPAWNER`,
//! inherited by its workers) only when it runs the spawner. Without it (`sloopd` not
//! root), or when the socket cannot be reached, the worker logs a warning and delivers
//! unprivileged: deliveries that need another user defer with a line saying why.

#![allow(unsafe_code)]

use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt::PeerCredentials, ControlMessage, ControlMessageOwned,
    MsgFlags,
};
use sloop_common::delivery_proto::ENV_LOCAL_SPAWNER;
use sloop_common::priority::Priority;
use sloop_common::Config;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The spawner's socket in `server.run_dir`.
pub fn socket_path(cfg: &Config) -> PathBuf {
    cfg.server.run_dir.join("local.sock")
}

/// How long a worker waits for the spawner's socket to appear at start.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// Exit status sent when the root worker was killed by a signal.
const KILLED: u8 = 75;

/// Why the spawner could not serve.
#[derive(Debug)]
pub struct SpawnerError {
    pub what: String,
    pub source: io::Error,
}

impl std::fmt::Display for SpawnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for SpawnerError {}

/// Runs the spawner until it is killed (SIGTERM from `sloopd`). On SIGHUP (a reload)
/// it keeps running, so the workers it started keep theirs, and starts the next ones on
/// the configuration file as it is then (which `sloopd` has just validated; if it no
/// longer loads, the previous one stays).
pub fn serve(cfg: &Config, program: &Path) -> Result<(), SpawnerError> {
    let err = |what: String| move |source| SpawnerError { what, source };
    // The root workers run at the queue manager's priority (`queue.nice`): set in this
    // thread before any other starts, so the threads and workers started after inherit it.
    let priority = Priority::start(cfg.queue.nice);
    let reload = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(err("cannot catch SIGHUP".to_string()))?;
    let mut cfg = cfg.clone();
    let path = socket_path(&cfg);
    let owner = server_uid(&cfg);
    let listener =
        bind(&path, owner).map_err(err(format!("cannot listen on {}", path.display())))?;
    log::info!("local spawner listening on {}", path.display());
    for conn in listener.incoming() {
        if reload.swap(false, std::sync::atomic::Ordering::Relaxed) {
            match Config::load(&cfg.file) {
                Ok(c) => {
                    priority.apply(c.queue.nice);
                    cfg = c;
                }
                Err(e) => log::warn!("local spawner: keeping the previous configuration: {e}"),
            }
        }
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                log::warn!("local spawner: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let cfg = cfg.clone();
        let program = program.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = run_worker(&cfg, &program, conn, owner) {
                log::warn!("local spawner: {e}");
            }
        });
    }
    Ok(())
}

/// `server.user`'s uid (`None` when unset or unknown: only root may connect).
fn server_uid(cfg: &Config) -> Option<u32> {
    if cfg.server.user.is_empty() {
        return None;
    }
    nix::unistd::User::from_name(&cfg.server.user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// Binds the socket with mode 0600 (umask while binding) and gives it to `owner`
/// without following a symlink; a stale socket of ours is replaced.
fn bind(path: &Path, owner: Option<u32>) -> io::Result<UnixListener> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(io::Error::other("exists and is not a socket; not replaced"));
        }
        std::fs::remove_file(path)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener?;
    if let Some(uid) = owner {
        std::os::unix::fs::lchown(path, Some(uid), None)?;
    }
    Ok(listener)
}

/// Serves one connection: checks the peer, takes its two pipes, runs a root worker on
/// them, and reports its exit or kills it when the peer goes away.
fn run_worker(
    cfg: &Config,
    program: &Path,
    conn: UnixStream,
    owner: Option<u32>,
) -> Result<(), SpawnerError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| SpawnerError { what, source }
    };
    let cred = getsockopt(&conn, PeerCredentials).map_err(|e| SpawnerError {
        what: "cannot read the peer's credentials".into(),
        source: io::Error::from(e),
    })?;
    if !peer_allowed(cred.uid(), owner) {
        return Err(SpawnerError {
            what: format!(
                "refused a connection from uid {} pid {}",
                cred.uid(),
                cred.pid()
            ),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
    }
    let (stdin, stdout) = receive_pipes(&conn).map_err(err("cannot receive the worker's pipes"))?;
    let mut cmd = Command::new(program);
    cfg.pass_to(&mut cmd);
    let child = cmd
        .arg("local")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(err("cannot start the root local worker"))?;
    watch(child, conn).map_err(err("lost the local worker"))
}

/// Who may ask for a root worker: `server.user`, or root.
pub fn peer_allowed(uid: u32, owner: Option<u32>) -> bool {
    uid == 0 || Some(uid) == owner
}

fn receive_pipes(conn: &UnixStream) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(list) = c {
            // SAFETY: SCM_RIGHTS descriptors are new in this process and owned by no
            // one else; each is wrapped exactly once.
            fds.extend(
                list.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(a), Some(b), None) => Ok((a, b)),
        _ => Err(io::Error::other("expected exactly two descriptors")),
    }
}

/// Waits for the worker to exit (sends its status) or the peer to go (kills it).
fn watch(mut child: Child, mut conn: UnixStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 16];
    loop {
        if let Some(status) = child.try_wait()? {
            let code = status
                .code()
                .map_or(KILLED, |c| u8::try_from(c).unwrap_or(1));
            let _ = conn.write_all(&[code]);
            return Ok(());
        }
        match conn.read(&mut buf) {
            Ok(0) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
}

/// In a local worker that is not root: hands stdin and stdout to the spawner and
/// returns the root worker's exit status once it is done. `None`: no spawner to be
/// reached (the caller delivers unprivileged).
pub fn hand_off() -> Option<u8> {
    let Some(path) = std::env::var_os(ENV_LOCAL_SPAWNER).map(PathBuf::from) else {
        log::warn!(
            "local.system_users is on but no local spawner runs (sloopd is not root, or \
             server.user is empty); local accounts other than {} are deferred",
            whoami()
        );
        return None;
    };
    let deadline = Instant::now() + CONNECT_WAIT;
    let mut conn = loop {
        match UnixStream::connect(&path) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                log::warn!(
                    "local.system_users is on but the local spawner at {} cannot be reached \
                     ({e}); delivering as {}, so local accounts other than it are deferred",
                    path.display(),
                    whoami()
                );
                return None;
            }
        }
    };
    let fds = [0 as RawFd, 1 as RawFd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"L")];
    if let Err(e) = sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
        log::warn!(
            "cannot hand the worker's pipes to the local spawner: {e}; delivering unprivileged"
        );
        return None;
    }
    // From here the pipes belong to the root worker: let go of our copies, so the
    // queue manager sees EOF when that worker (not this stand-in) closes them.
    if let Err(e) = release_stdio() {
        log::error!("cannot let go of the worker pipes: {e}");
        return Some(70);
    }
    let mut status = [0u8; 1];
    match conn.read(&mut status) {
        Ok(1) => Some(status[0]),
        _ => Some(KILLED),
    }
}

/// Our user name, for messages.
fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| "this user".to_string(), |u| u.name)
}

/// Points fds 0 and 1 at /dev/null.
fn release_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_server_user_or_root_may_ask() {
        assert!(peer_allowed(0, Some(100)));
        assert!(peer_allowed(100, Some(100)));
        assert!(!peer_allowed(1000, Some(100)));
        assert!(!peer_allowed(1000, None));
    }
}
