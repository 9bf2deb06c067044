//! Who a local delivery runs as, and running one piece of delivery as that user.
//!
//! The local agent runs as root only when `local.system_users` is on and `sloopd`
//! runs as root (spawner.rs); otherwise it runs as `server.user` (or whoever started
//! it) and can deliver only as itself. Running as root, it writes nothing itself:
//! [`run_as`] forks a child that sets its supplementary groups (`initgroups`), its gid
//! and its uid to the target user's, checks that root cannot be regained, does the
//! work, and sends the one result back on a pipe. Who that is (Postfix's rules):
//!
//! - a local account's mailbox and its `.forward` commands and files: the account;
//! - `|command` and `/file` members of the aliases file or an `:include:` file: the
//!   owner of that file; when the owner is root, `nobody` ([`privileged_uid`]);
//! - virtual Maildirs, mbox files under `local.mailbox_root` and forwards (which write
//!   into the spool): `server.user`.
//!
//! What can go wrong: a user that cannot be looked up, a failed fork or privilege
//! drop, or a child that dies without a result: each defers the recipient (4.3.0).

#![allow(unsafe_code)]

use crate::result::RcptResult;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Gid, Uid, User};
use sloop_common::spool::status::Outcome;
use std::ffi::CString;
use std::io::{Read, Write};
use std::path::PathBuf;

/// A user a delivery runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Identity {
    /// The account named `name`.
    pub fn of_name(name: &str) -> Result<Identity, RcptResult> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(Identity::from(u)),
            Ok(None) => Err(RcptResult::defer(
                "4.3.0",
                format!("no such local account: {name}"),
            )),
            Err(e) => Err(RcptResult::defer(
                "4.3.0",
                format!("cannot look up local account {name}: {e}"),
            )),
        }
    }

    /// The account with uid `uid`.
    pub fn of_uid(uid: u32) -> Result<Identity, RcptResult> {
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(u)) => Ok(Identity::from(u)),
            Ok(None) => Err(RcptResult::defer(
                "4.3.0",
                format!("no local account has uid {uid}"),
            )),
            Err(e) => Err(RcptResult::defer(
                "4.3.0",
                format!("cannot look up uid {uid}: {e}"),
            )),
        }
    }

    /// The identity a command or file member owned by `owner` runs as.
    pub fn for_owner(owner: u32) -> Result<Identity, RcptResult> {
        let nobody = match User::from_name("nobody") {
            Ok(Some(u)) => u.uid.as_raw(),
            _ => 65534,
        };
        Identity::of_uid(privileged_uid(owner, nobody))
    }

    /// The agent's own identity.
    pub fn current() -> Result<Identity, RcptResult> {
        Identity::of_uid(nix::unistd::geteuid().as_raw())
    }
}

impl From<User> for Identity {
    fn from(u: User) -> Identity {
        Identity {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            name: u.name,
            home: u.dir,
            shell: u.shell,
        }
    }
}

/// The uid a command or file member runs as: its source's owner, except that root's
/// become `nobody`'s (Postfix's `default_privs`: never a command as root).
pub fn privileged_uid(owner: u32, nobody: u32) -> u32 {
    if owner == 0 {
        nobody
    } else {
        owner
    }
}

/// True when this process can switch users (it runs as root).
pub fn can_switch() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `work` as `who`: directly when that is us, in a child that dropped to `who`
/// when we are root, else not at all (deferred: the agent lacks the privilege).
pub fn run_as(who: &Identity, work: impl FnOnce() -> RcptResult) -> RcptResult {
    if who.uid == nix::unistd::geteuid().as_raw() {
        return work();
    }
    if !can_switch() {
        return needs_root(who);
    }
    in_child(who, work)
}

/// The deferral for a delivery as another user by an agent that is not root.
pub fn needs_root(who: &Identity) -> RcptResult {
    RcptResult::defer(
        "4.3.0",
        format!(
            "cannot deliver as {}: the local delivery agent does not run as root \
             (local.system_users needs sloopd started as root)",
            who.name
        ),
    )
}

fn in_child(who: &Identity, work: impl FnOnce() -> RcptResult) -> RcptResult {
    // Close-on-exec: a command the child runs (and anything it leaves in the
    // background) must not hold the result pipe open.
    let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return RcptResult::defer("4.3.0", format!("cannot create a pipe: {e}")),
    };
    // SAFETY: the local delivery worker is single-threaded between deliveries (the
    // threads of a pipe delivery are joined before it returns), so the child starts
    // with consistent locks; it does its work, writes one result and leaves with
    // `_exit`, never returning into the caller's stack or flushing its stdout buffer
    // (the queue manager's pipe).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(read_end);
            let result = match drop_privileges(who) {
                Ok(()) => work(),
                Err(e) => {
                    RcptResult::defer("4.3.0", format!("cannot switch to user {}: {e}", who.name))
                }
            };
            let mut out = std::fs::File::from(write_end);
            let _ = out.write_all(encode(&result).as_bytes());
            drop(out);
            // SAFETY: `_exit` ends the child at once, without running the parent's
            // atexit handlers or flushing stdio buffers it inherited.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut text = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut text);
            let status = waitpid(child, None);
            decode(&text).unwrap_or_else(|| {
                RcptResult::defer(
                    "4.3.0",
                    format!(
                        "delivery process for user {} ended without a result ({status:?})",
                        who.name
                    ),
                )
            })
        }
        Err(e) => RcptResult::defer("4.3.0", format!("cannot fork: {e}")),
    }
}

/// `initgroups`, `setgid`, `setuid`; then checks root cannot be regained.
fn drop_privileges(who: &Identity) -> Result<(), DropError> {
    let name = CString::new(who.name.as_str()).map_err(|_| DropError::NulInName)?;
    let gid = Gid::from_raw(who.gid);
    nix::unistd::initgroups(&name, gid).map_err(|e| DropError::Call("initgroups", e))?;
    nix::unistd::setgid(gid).map_err(|e| DropError::Call("setgid", e))?;
    nix::unistd::setuid(Uid::from_raw(who.uid)).map_err(|e| DropError::Call("setuid", e))?;
    if who.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(DropError::Regained);
    }
    Ok(())
}

/// Why the forked child could not become the account's user.
#[derive(Debug)]
enum DropError {
    /// The user name has a NUL octet.
    NulInName,
    /// A system call failed.
    Call(&'static str, nix::Error),
    /// setuid(0) worked after the switch: the child could become root again.
    Regained,
}

impl std::fmt::Display for DropError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropError::NulInName => f.write_str("the user name has a NUL octet"),
            DropError::Call(what, e) => write!(f, "{what}: {e}"),
            DropError::Regained => f.write_str("root privileges could be regained"),
        }
    }
}

/// One result as a line: `<outcome> <dsn> <text>` (the text has no control characters).
fn encode(r: &RcptResult) -> String {
    format!("{} {} {}\n", r.status_word(), r.dsn, r.text)
}

fn decode(line: &str) -> Option<RcptResult> {
    let line = line.strip_suffix('\n')?;
    let (word, rest) = line.split_once(' ')?;
    let (dsn, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let outcome = match word {
        "sent" => Outcome::Ok,
        "deferred" => Outcome::Defer,
        "bounced" => Outcome::Fail,
        _ => return None,
    };
    Some(match outcome {
        Outcome::Ok => RcptResult::ok(dsn, text),
        Outcome::Defer => RcptResult::defer(dsn, text),
        Outcome::Fail => RcptResult::fail(dsn, text),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn root_owned_sources_run_as_nobody() {
        assert_eq!(privileged_uid(0, 65534), 65534);
        assert_eq!(privileged_uid(1000, 65534), 1000);
    }

    #[test]
    fn results_cross_the_pipe_intact() {
        for r in [
            RcptResult::ok("2.0.0", "delivered to mailbox /var/mail/a b"),
            RcptResult::defer("4.2.0", "mailbox is locked"),
            RcptResult::fail("5.3.0", ""),
        ] {
            assert_eq!(decode(&encode(&r)), Some(r));
        }
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode(""), None);
    }

    #[test]
    fn work_as_ourselves_runs_in_process_and_others_need_root() {
        let me = Identity::current().unwrap();
        let r = run_as(&me, || RcptResult::ok("2.0.0", "here"));
        assert_eq!(r.text, "here");
        if !can_switch() {
            let other = Identity::for_owner(0).unwrap();
            let r = run_as(&other, || RcptResult::ok("2.0.0", "never"));
            assert_eq!(r.outcome, Outcome::Defer);
            assert!(r.text.contains("root"), "{}", r.text);
        }
    }

    #[test]
    fn a_command_left_in_the_background_does_not_hold_the_result() {
        if !can_switch() {
            return;
        }
        let nobody = Identity::for_owner(0).unwrap();
        let start = std::time::Instant::now();
        let r = run_as(&nobody, || {
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 5 >/dev/null 2>&1 </dev/null &"])
                .status();
            RcptResult::ok("2.0.0", "done")
        });
        assert_eq!(r.text, "done");
        assert!(start.elapsed() < std::time::Duration::from_secs(4));
    }

    #[test]
    fn a_child_runs_as_the_target_user() {
        if !can_switch() {
            return;
        }
        let nobody = Identity::for_owner(0).unwrap();
        let r = run_as(&nobody, || {
            RcptResult::ok("2.0.0", format!("{}", nix::unistd::geteuid()))
        });
        assert_eq!(r.text, nobody.uid.to_string());
        assert!(
            nix::unistd::geteuid().is_root(),
            "the parent keeps its identity"
        );
    }
}
