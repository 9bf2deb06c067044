//! Delivery into a local account's mailbox (`local.system_users`), as that account.
//!
//! - `local.system_mailbox = "mbox"`: `<local.mail_spool_dir>/<user>` (`/var/mail`).
//!   The spool directory belongs to root (Debian: `root:mail 2775`), so the agent, as
//!   root, takes the `<user>.lock` dot-lock and opens the mailbox with `O_NOFOLLOW`
//!   (creating it owner the user, group `mail`, mode 0660); `fstat` on that descriptor
//!   must show a regular file with one link owned by the user, else the delivery
//!   defers (a planted symlink or hard link is never written through). The message is
//!   then written by a child running as the user (privs.rs), which takes the fcntl
//!   lock, appends the mboxrd entry (`From ` line, `>From ` quoting) and fsyncs. The
//!   dot-lock is removed after the child is done.
//! - `"maildir"`: `~<user>/Maildir/`, created if missing; everything, including the
//!   directory walk, happens in a child running as the user.
//!
//! Mail for root goes to root's mailbox like any other account's (an `/etc/aliases`
//! entry `root: someone` sends it elsewhere first).

use super::io_error_result;
use super::maildir;
use super::mbox::{self, DotLock};
use super::privs::{self, run_as, Identity};
use crate::result::RcptResult;
use sloop_common::config::{LocalConfig, MailboxFormat};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Mode of a newly created system mailbox.
pub const MAILBOX_MODE: u32 = 0o660;

/// Delivers `prefix` + `message` to the mailbox of account `user`.
pub fn deliver(
    cfg: &LocalConfig,
    user: &str,
    sender: &str,
    prefix: &[u8],
    message: &mut dyn Read,
    hostname: &str,
) -> RcptResult {
    let who = match Identity::of_name(user) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match cfg.system_mailbox {
        MailboxFormat::Mbox => to_spool(&cfg.mail_spool_dir, &who, sender, prefix, message),
        MailboxFormat::Maildir => {
            let dir = who.home.join("Maildir");
            run_as(&who, || {
                match maildir::deliver_into(&dir, hostname, prefix, message) {
                    Ok(p) => {
                        RcptResult::ok("2.0.0", format!("delivered to maildir {}", p.display()))
                    }
                    Err(e) => {
                        io_error_result(&e, &format!("cannot write to Maildir {}", dir.display()))
                    }
                }
            })
        }
    }
}

fn to_spool(
    spool: &Path,
    who: &Identity,
    sender: &str,
    prefix: &[u8],
    message: &mut dyn Read,
) -> RcptResult {
    let path = spool.join(&who.name);
    if !privs::can_switch() && who.uid != nix::unistd::geteuid().as_raw() {
        return privs::needs_root(who);
    }
    let _lock = match DotLock::acquire(&path) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let file = match open_mailbox(&path, who) {
        Ok(f) => f,
        Err(r) => return r,
    };
    run_as(who, || {
        match mbox::append_file(&file, &path, sender, prefix, message) {
            Ok(()) => RcptResult::ok("2.0.0", format!("delivered to mailbox {}", path.display())),
            Err(r) => r,
        }
    })
}

/// Opens (creating if missing) the account's mbox without following a symlink, and
/// checks on the descriptor that it is the account's own regular file.
fn open_mailbox(path: &Path, who: &Identity) -> Result<File, RcptResult> {
    let fail =
        |e: &std::io::Error| io_error_result(e, &format!("cannot open mailbox {}", path.display()));
    let open = |create_new: bool| {
        std::fs::OpenOptions::new()
            .append(true)
            .create_new(create_new)
            .mode(MAILBOX_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let (file, created) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match open(false) {
            Ok(f) => (f, false),
            Err(e) => return Err(refusal(path, &e).unwrap_or_else(|| fail(&e))),
        },
        Err(e) => return Err(fail(&e)),
    };
    if created && privs::can_switch() {
        let gid = mail_gid().unwrap_or(who.gid);
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            Some(nix::unistd::Uid::from_raw(who.uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| fail(&std::io::Error::from(e)))?;
        let perms = std::os::unix::fs::PermissionsExt::from_mode(MAILBOX_MODE);
        file.set_permissions(perms).map_err(|e| fail(&e))?;
    }
    let meta = file.metadata().map_err(|e| fail(&e))?;
    mailbox_usable(
        meta.file_type().is_file(),
        meta.nlink(),
        meta.uid(),
        who.uid,
    )
    .map_err(|why| {
        log::warn!("refusing mailbox {} of {}: {why}", path.display(), who.name);
        RcptResult::defer(
            "4.7.0",
            format!("mailbox {} {why}; refused", path.display()),
        )
    })?;
    Ok(file)
}

/// Whether an existing mailbox may be written for account `uid`.
pub fn mailbox_usable(
    regular: bool,
    nlink: u64,
    owner: u32,
    uid: u32,
) -> Result<(), super::refusal::FileRefusal> {
    use super::refusal::FileRefusal;
    if !regular {
        return Err(FileRefusal::NotRegular);
    }
    if nlink != 1 {
        return Err(FileRefusal::HardLinks(nlink));
    }
    if owner != uid {
        return Err(FileRefusal::Owner {
            owner,
            account: uid,
        });
    }
    Ok(())
}

/// A symlink in place of the mailbox: a clear refusal rather than a bare ELOOP.
fn refusal(path: &Path, e: &std::io::Error) -> Option<RcptResult> {
    (e.raw_os_error() == Some(libc::ELOOP)).then(|| {
        log::warn!("refusing mailbox {}: it is a symbolic link", path.display());
        RcptResult::defer(
            "4.7.0",
            format!("mailbox {} is a symbolic link; refused", path.display()),
        )
    })
}

/// The `mail` group, owner group of the system mailboxes.
fn mail_gid() -> Option<u32> {
    nix::unistd::Group::from_name("mail")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_accounts_own_single_link_file_is_written() {
        assert!(mailbox_usable(true, 1, 1000, 1000).is_ok());
        assert!(mailbox_usable(false, 1, 1000, 1000).is_err());
        assert!(mailbox_usable(true, 2, 1000, 1000)
            .unwrap_err()
            .to_string()
            .contains("hard links"));
        assert!(mailbox_usable(true, 1, 0, 1000)
            .unwrap_err()
            .to_string()
            .contains("uid 0"));
    }
}
