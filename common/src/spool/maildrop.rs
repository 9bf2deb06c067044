//! The maildrop: how a local user who may not write the queue submits a message
//! (Postfix's postdrop; docs/security.md). `sloop-drop`, set-group-ID to the
//! submission group, writes here; `sloop-pickup`, running as the spool owner, takes
//! each file, checks it and commits it with the ordinary commit (inject.rs).
//!
//! A maildrop file has the queue file format (the message, then the envelope trailer)
//! and is named with a queue ID. The writer's steps:
//!
//! 1. create `maildrop/<id>` with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600 (a name
//!    clash takes a new ID);
//! 2. stream the message into it, refusing more than the size limit; read the
//!    envelope, check it, append the trailer;
//! 3. `fsync`, then set mode 0640 (**the mark that the file is complete**: the group
//!    read bit is what lets the pickup open it), then `fsync` again;
//! 4. poke `public/pickup`.
//!
//! A failure before step 3 removes the file. A crash before the mode change leaves a
//! 0600 file the pickup cannot read; it removes such a file once its writer is gone and
//! it is an hour old. The directory is not fsync'd: the writer's group may add to it but
//! not read it, so it cannot open it; on Linux's journaling file systems (ext4, xfs,
//! btrfs) the file's own fsync also makes its new name durable.

use super::inject::{write_queue_file, InjectError};
use super::{ctx, queue_id, Envelope, EnvelopeError, Spool};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a maildrop file while it is written.
pub const WRITING_MODE: u32 = 0o600;
/// Mode of a complete maildrop file.
pub const READY_MODE: u32 = 0o640;

/// True when a maildrop file's mode says its writer finished it.
pub fn is_ready(mode: u32) -> bool {
    mode & 0o7777 == READY_MODE
}

/// Writes `message` and the envelope `envelope_fn` returns (called once the message is
/// read, as qmail-queue reads fd 1 after fd 0) as a new maildrop file; returns its ID.
/// `preset_id`, when valid, is tried as the name first. `max_size` 0: no limit.
pub fn drop_message<R: Read>(
    spool: &Spool,
    message: &mut R,
    envelope_fn: impl FnOnce() -> Result<Envelope, EnvelopeError>,
    max_size: u64,
    preset_id: Option<&str>,
) -> Result<String, InjectError> {
    let (id, path, file) = create(spool, preset_id)?;
    match write(file, message, envelope_fn, &id, max_size, &path) {
        Ok(()) => {
            poke_pickup(spool);
            Ok(id)
        }
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Writes one byte to `public/pickup` without blocking; a missing FIFO or no reader
/// is not an error (the pickup also scans periodically). Anything but a FIFO there is
/// left alone: the spool's path may come from the caller's choice of configuration.
pub fn poke_pickup(spool: &Spool) {
    use std::os::unix::fs::FileTypeExt;
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(spool.pickup_fifo());
    if let Ok(mut f) = opened {
        if f.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
            let _ = f.write(b"!");
        }
    }
}

/// Moves `maildrop/<name>` (whatever it is: the rename moves a symlink itself) into
/// `corrupt/`, under its own name when that is a queue ID not taken there, else under a
/// new one; fsyncs `corrupt/`. Returns the name it got.
pub fn move_to_corrupt(spool: &Spool, name: &str) -> Result<String, super::SpoolError> {
    let src = spool.maildrop_dir().join(name);
    let mut dest = if queue_id::is_valid(name) {
        name.to_string()
    } else {
        queue_id::new_id()
    };
    for _ in 0..16 {
        let dst = spool.corrupt_dir().join(&dest);
        match super::inject::rename_noreplace(&src, &dst) {
            Ok(()) => {
                super::fsync_dir(&spool.corrupt_dir())?;
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => dest = queue_id::new_id(),
            Err(e) => return ctx(Err(e), "rename", &src),
        }
    }
    ctx(Err(io::Error::other("name clash")), "rename", &src)
}

fn create(spool: &Spool, preset_id: Option<&str>) -> Result<(String, PathBuf, File), InjectError> {
    let dir = spool.maildrop_dir();
    let mut id = match preset_id {
        Some(p) if queue_id::is_valid(p) => p.to_string(),
        _ => queue_id::new_id(),
    };
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(&id);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(WRITING_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(f) => {
                if let Err(e) = give_to_maildrop_group(&f, &dir) {
                    let _ = fs::remove_file(&path);
                    return Err(ctx(Err(e), "chown", &path)?);
                }
                return Ok((id, path, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = Some(e);
                id = queue_id::new_id();
            }
            Err(e) => return Err(ctx(Err(e), "create", &path)?),
        }
    }
    let err = last.unwrap_or_else(|| io::Error::other("queue ID clash"));
    Err(ctx(Err(err), "create", &dir)?)
}

/// Run by root (whose `sendmail` comes here too), the set-group-ID bit is not needed to
/// write the maildrop, so the file's group may be root's: give it the directory's
/// group, which `sloop-pickup` reads with. A no-op for everybody else.
fn give_to_maildrop_group(file: &File, dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let gid = fs::symlink_metadata(dir)?.gid();
    std::os::unix::fs::fchown(file, None, Some(gid))
}

fn write<R: Read>(
    file: File,
    message: &mut R,
    envelope_fn: impl FnOnce() -> Result<Envelope, EnvelopeError>,
    id: &str,
    max_size: u64,
    path: &Path,
) -> Result<(), InjectError> {
    let (file, _) = write_queue_file(file, message, envelope_fn, id, max_size, path)?;
    ctx(file.sync_all(), "fsync", path)?;
    let ready = Permissions::from_mode(READY_MODE);
    ctx(file.set_permissions(ready), "set the mode of", path)?;
    ctx(file.sync_all(), "fsync", path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::spool::{Recipient, Spool};
    use std::os::unix::fs::MetadataExt;

    fn spool(name: &str) -> Spool {
        let d = std::env::temp_dir().join(format!("sloop-maildrop-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let s = Spool::new(d);
        s.ensure_layout().unwrap();
        s
    }

    #[test]
    fn a_dropped_file_is_complete_readable_by_the_group_and_parses() {
        let s = spool("ok");
        let env = Envelope::new("u@h.test", vec![Recipient::new("r@h.test")]);
        let id = drop_message(&s, &mut &b"Subject: x\n\nhi\n"[..], || Ok(env), 0, None).unwrap();
        let path = s.maildrop_dir().join(&id);
        let m = fs::metadata(&path).unwrap();
        assert!(is_ready(m.mode()), "{:o}", m.mode());
        let back = Envelope::read_from(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(back.sender, "u@h.test");
        assert_eq!(back.size, 15);
        fs::remove_dir_all(s.root()).unwrap();
    }

    #[test]
    fn a_refused_message_leaves_nothing() {
        let s = spool("refused");
        let env = Envelope::new("u@h.test", vec![Recipient::new("r@h.test")]);
        let big = vec![b'x'; 5000];
        let e = drop_message(&s, &mut &big[..], || Ok(env), 1024, None).unwrap_err();
        assert!(matches!(e, InjectError::TooLarge { .. }));
        let bad = drop_message(
            &s,
            &mut &b"x"[..],
            || Ok(Envelope::new("u", vec![])),
            0,
            None,
        );
        assert!(bad.is_err());
        assert_eq!(fs::read_dir(s.maildrop_dir()).unwrap().count(), 0);
        fs::remove_dir_all(s.root()).unwrap();
    }

    #[test]
    fn only_the_finished_mode_counts_as_ready() {
        assert!(is_ready(0o100640));
        assert!(!is_ready(0o100600));
        assert!(!is_ready(0o100644));
    }
}
