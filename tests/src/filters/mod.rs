//! Real filter daemons from Debian's packages, started by the tests themselves: each
//! fixture writes its configuration into a directory of the test, starts its daemon in
//! the foreground (as the daemon's own unprivileged user when the tests run as root),
//! on 127.0.0.1 or on a unix socket in that directory, waits with a deadline until the
//! daemon answers, and kills the daemon's whole process group when dropped.
//!
//! Nothing here may reach the internet: the daemons that look names up (policyd-spf,
//! rspamd) get a resolver that only knows the test's names (see `spf` and `rspamd`).
//!
//! `postfix` runs a private Postfix instance from a temporary configuration directory:
//! each fixture is first proved with Postfix as the MTA, then used against Sloop.

pub mod clamav;
pub mod opendkim;
pub mod postfix;
pub mod postgrey;
pub mod rspamd;
pub mod spf;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer after its start. rspamd compiles its rules at
/// start and takes tens of seconds on a loaded machine; the others take a second.
pub const START_DEADLINE: Duration = Duration::from_secs(180);

/// True when the tests run as root (needed for the daemons' own users, for mount and
/// network namespaces, and for a private Postfix instance).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `Some(path)` when every program in `programs` exists; otherwise prints
/// `SKIP: <test>: <package> not installed` and returns `None`, or fails the test when
/// `SLOOP_REQUIRE_PEERS=1`.
pub fn have_peer(test: &str, package: &str, programs: &[&str]) -> bool {
    programs
        .iter()
        .all(|p| crate::peer_program(test, package, p).is_some())
}

/// True when running as root; otherwise prints `SKIP: <test>: needs root (why)` and
/// returns false (also with `SLOOP_REQUIRE_PEERS=1`: a missing privilege is not a
/// missing package, and the CI runs as root).
pub fn have_root(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    println!("SKIP: {test}: needs root ({why})");
    false
}

/// A daemon started in its own process group; the whole group gets SIGTERM, then
/// SIGKILL, when this is dropped.
pub struct Peer {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Peer {
    /// Spawns `cmd` in a new process group with stdout and stderr in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Peer {
        let f = std::fs::File::create(log).expect("peer log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Peer {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` holds; panics with the daemon's log when it exits first or
    /// the start deadline passes.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited before it answered ({status}); log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {START_DEADLINE:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let exited = crate::wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        // Workers of the group may outlive their parent by a moment: kill them all.
        let _ = killpg(group, Signal::SIGKILL);
        if !exited {
            let _ = self.child.wait();
        }
    }
}

/// True once something accepts TCP connections on 127.0.0.1:`port`.
pub fn tcp_answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// True once something accepts connections on the unix socket `path`.
pub fn unix_answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Creates `dir` (mode 0755) and, when running as root, gives it (recursively) to the
/// system user `user`, so a daemon that drops to that user can write there.
pub fn dir_for(dir: &Path, user: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    if is_root() {
        if let Ok(Some(u)) = User::from_name(user) {
            chown_r(dir, u.uid, u.gid);
        }
    }
    dir.to_path_buf()
}

fn chown_r(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    let _ = nix::unistd::chown(path, Some(uid), Some(gid));
    if path.is_dir() && !path.is_symlink() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                chown_r(&e.path(), uid, gid);
            }
        }
    }
}

/// `user` when running as root and the user exists (the daemon drops to it), else
/// `None` (the daemon runs as the current user).
pub fn daemon_user(user: &str) -> Option<String> {
    if !is_root() {
        return None;
    }
    User::from_name(user)
        .ok()
        .flatten()
        .map(|_| user.to_string())
}

/// The EICAR anti-virus test string (68 octets), assembled at run time so that this
/// source file itself is not what a scanner flags.
pub fn eicar() -> String {
    [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
}

/// The GTUBE anti-spam test string.
pub fn gtube() -> String {
    [
        "XJS*C4JDBQADN1.NSBN3*2IDNEN*",
        "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X",
    ]
    .concat()
}
