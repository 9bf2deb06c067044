//! File-system operations for code that runs with more privilege than the owner of the
//! directories it works in (docs/security.md): `sloopd` setting up the spool as root.
//!
//! Every owner or mode change goes through a descriptor opened relative to a directory
//! descriptor with `O_NOFOLLOW` (and `O_DIRECTORY` for directories), then `fchown` and
//! `fchmod` on that descriptor: a symlink planted in place of an entry is refused
//! (`ELOOP`/`ENOTDIR` become an error naming the path), never followed, and a rename
//! between our check and our change cannot redirect it. What can go wrong: the entry is
//! of the wrong type or is a symlink (an error saying so), or the call fails (the
//! `io::Error`, with the path added by the caller).
#![allow(unsafe_code)]

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Sets the process's umask to 077: every program calls this first, so a file created
/// without an explicit mode is readable by its owner only.
pub fn restrict_umask() {
    nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
}

/// What kind of entry a layout name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    Fifo,
}

/// Opens the directory `path` itself without following a symlink in its last
/// component (the components before it come from the configuration, which is root's).
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| refine(e, path.as_os_str()))
}

/// Creates `name` under `parent` as `kind` with `mode` when missing, and opens it
/// without following a symlink. An existing entry of another kind is an error.
pub fn ensure_at(parent: &File, name: &str, kind: EntryKind, mode: u32) -> io::Result<File> {
    let dirfd = Some(parent.as_raw_fd());
    let bits = Mode::from_bits_truncate(mode);
    let made = match kind {
        EntryKind::Dir => nix::sys::stat::mkdirat(dirfd, name, bits),
        EntryKind::Fifo => nix::unistd::mkfifoat(dirfd, name, bits),
    };
    match made {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    let flags = match kind {
        EntryKind::Dir => OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        // Read-only and non-blocking: opening a FIFO so never waits for a writer.
        EntryKind::Fifo => OFlag::O_RDONLY | OFlag::O_NONBLOCK,
    } | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    let fd = nix::fcntl::openat(dirfd, name, flags, Mode::empty())
        .map_err(|e| refine(io::Error::from(e), OsStr::new(name)))?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(io::Error::from)?;
    let want = match kind {
        EntryKind::Dir => SFlag::S_IFDIR,
        EntryKind::Fifo => SFlag::S_IFIFO,
    };
    let kind_ok = st.st_mode & SFlag::S_IFMT.bits() == want.bits();
    // A FIFO with a second name could be a hard link planted to make us change it.
    let single = kind == EntryKind::Dir || st.st_nlink == 1;
    if !kind_ok || !single {
        return Err(io::Error::other(format!(
            "{name} is not a {} (refusing to touch it)",
            if kind == EntryKind::Dir {
                "directory"
            } else {
                "FIFO"
            }
        )));
    }
    Ok(file)
}

/// Sets the owner (when given) and the mode of the open entry `file`.
pub fn set_owner_mode(file: &File, owner: Option<(Uid, Gid)>, mode: u32) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(file.as_fd(), Some(uid.as_raw()), Some(gid.as_raw()))?;
    }
    file.set_permissions(Permissions::from_mode(mode))
}

/// Turns the errors a symlink causes under `O_NOFOLLOW` into a message that says so.
fn refine(e: io::Error, name: &OsStr) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::other(format!(
            "{} is a symbolic link or not a directory (refusing to follow it)",
            Path::new(name).display()
        )),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sloop-secure-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn entries_are_created_with_their_mode_and_reopened() {
        let d = temp("make");
        let root = open_dir(&d).unwrap();
        let sub = ensure_at(&root, "sub", EntryKind::Dir, 0o700).unwrap();
        set_owner_mode(&sub, None, 0o1730).unwrap();
        assert_eq!(
            std::fs::metadata(d.join("sub")).unwrap().mode() & 0o7777,
            0o1730
        );
        let fifo = ensure_at(&root, "fifo", EntryKind::Fifo, 0o600).unwrap();
        set_owner_mode(&fifo, None, 0o620).unwrap();
        assert_eq!(
            std::fs::metadata(d.join("fifo")).unwrap().mode() & 0o7777,
            0o620
        );
        // Idempotent.
        ensure_at(&root, "sub", EntryKind::Dir, 0o700).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_an_entry_is_refused_not_followed() {
        let d = temp("link");
        let victim = d.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("evil")).unwrap();
        let root = open_dir(&d).unwrap();
        let e = ensure_at(&root, "evil", EntryKind::Dir, 0o700).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let fifo_link = d.join("fifo-evil");
        std::os::unix::fs::symlink(&victim, &fifo_link).unwrap();
        assert!(ensure_at(&root, "fifo-evil", EntryKind::Fifo, 0o600).is_err());
        assert!(open_dir(&d.join("evil")).is_err());
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o755);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_in_place_of_a_directory_is_refused() {
        let d = temp("kind");
        std::fs::write(d.join("f"), b"x").unwrap();
        let root = open_dir(&d).unwrap();
        assert!(ensure_at(&root, "f", EntryKind::Dir, 0o700).is_err());
        assert!(ensure_at(&root, "f", EntryKind::Fifo, 0o600).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
