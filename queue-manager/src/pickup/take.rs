//! One maildrop file: decide what it is (a pure function of what `lstat` shows), then
//! commit it, remove it or move it to `corrupt/` (docs/sloop-pickup.8.md).
//!
//! A file is taken only when it is a regular file with one link, named with a queue
//! ID, complete (mode 0640, `spool::maildrop`) and no larger than the size limit plus
//! the envelope's room; its envelope must parse and pass the commit's checks. The
//! commit is the ordinary one (`spool::inject::commit_streaming`), under the file's own
//! ID: so a crash between the commit and the removal is seen at the next scan (the ID
//! is already queued) and the file is only removed, never queued twice. Anything that
//! fails a check is moved to `corrupt/` with one warning naming its owner and the
//! reason; an incomplete file whose writer is gone is removed after an hour; a
//! temporary failure (the spool cannot be written) leaves the file for the next scan.

use super::filter::{self, LocalFilters};
use sloop_common::spool::inject::{commit_bytes, commit_streaming};
use sloop_common::spool::{maildrop, pid_alive, queue_id, Envelope, Spool};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::time::{Duration, SystemTime};

/// Room for the envelope beyond the message size limit.
pub const ENVELOPE_ROOM: u64 = 64 * 1024;
/// An incomplete file older than this whose writer is gone is removed.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// What `lstat` and the name tell about a maildrop entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub symlink: bool,
    pub regular: bool,
    pub fifo: bool,
    pub name_is_id: bool,
    pub links: u64,
    pub mode: u32,
    pub size: u64,
    pub age: Duration,
    pub writer_alive: bool,
}

/// What to do with a maildrop entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open it, check its envelope and commit it.
    Take,
    /// Still being written: leave it.
    Wait,
    /// Never finished and its writer is gone: remove it.
    RemoveStale,
    /// Move it to `corrupt/` for this reason.
    Corrupt(String),
}

/// Decides about an entry; `max_size` is `smtpd.max_message_size` (0: no limit).
pub fn classify(seen: &Seen, max_size: u64) -> Verdict {
    let corrupt = |why: &str| Verdict::Corrupt(why.to_string());
    if seen.symlink {
        return corrupt("a symbolic link");
    }
    if !seen.regular {
        return corrupt(if seen.fifo {
            "a FIFO"
        } else {
            "not a regular file"
        });
    }
    if !seen.name_is_id {
        return corrupt("not named with a queue ID");
    }
    if seen.links != 1 {
        return corrupt("a file with more than one link");
    }
    if !maildrop::is_ready(seen.mode) {
        if seen.mode & 0o7777 != maildrop::WRITING_MODE {
            return Verdict::Corrupt(format!("mode {:o}", seen.mode & 0o7777));
        }
        if seen.age > STALE_AFTER && !seen.writer_alive {
            return Verdict::RemoveStale;
        }
        return Verdict::Wait;
    }
    if max_size > 0 && seen.size > max_size.saturating_add(ENVELOPE_ROOM) {
        return Verdict::Corrupt(format!(
            "{} octets, larger than smtpd.max_message_size={max_size}",
            seen.size
        ));
    }
    Verdict::Take
}

/// What happened to one entry, for the scan's log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Queued,
    Waiting,
    Removed,
    Corrupt,
    /// A temporary failure: left for the next scan.
    Deferred,
}

/// Handles the maildrop entry `name`; logs what it did.
pub fn take(spool: &Spool, name: &str, max_size: u64) -> Outcome {
    take_filtered(spool, name, max_size, None)
}

/// As [`take`], running the local milters (`filter.rs`) before the commit.
pub fn take_filtered(
    spool: &Spool,
    name: &str,
    max_size: u64,
    filters: Option<&mut LocalFilters>,
) -> Outcome {
    let path = spool.maildrop_dir().join(name);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Outcome::Waiting; // gone meanwhile
    };
    let uid = meta.uid();
    match classify(&seen(name, &meta), max_size) {
        Verdict::Wait => Outcome::Waiting,
        Verdict::RemoveStale => {
            log::warn!(
                "{name}: uid={uid}: removed an incomplete maildrop file (its writer is gone)"
            );
            remove(spool, name);
            Outcome::Removed
        }
        Verdict::Corrupt(why) => to_corrupt(spool, name, uid, &why),
        Verdict::Take => match open_checked(&path, &meta) {
            Ok(file) => match filters {
                Some(f) => commit_filtered(spool, name, uid, file, max_size, f),
                None => commit(spool, name, uid, file, max_size),
            },
            Err(why) => to_corrupt(spool, name, uid, &why.to_string()),
        },
    }
}

fn seen(name: &str, meta: &Metadata) -> Seen {
    let ft = meta.file_type();
    let age = meta
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    Seen {
        symlink: ft.is_symlink(),
        regular: ft.is_file(),
        fifo: ft.is_fifo(),
        name_is_id: queue_id::is_valid(name),
        links: meta.nlink(),
        mode: meta.mode(),
        size: meta.len(),
        age,
        writer_alive: queue_id::creator_pid(name).is_some_and(pid_alive),
    }
}

/// Why a maildrop entry classified as ready could not be taken.
#[derive(Debug)]
enum OpenRefusal {
    Open(std::io::Error),
    Fstat(std::io::Error),
    Replaced,
}

impl std::fmt::Display for OpenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenRefusal::Open(e) => write!(f, "cannot be opened by sloop-pickup: {e}"),
            OpenRefusal::Fstat(e) => write!(f, "fstat: {e}"),
            OpenRefusal::Replaced => f.write_str("replaced while it was being checked"),
        }
    }
}

/// Opens the file without following a symlink or blocking, and checks it is still the
/// entry that was classified.
fn open_checked(path: &std::path::Path, before: &Metadata) -> Result<File, OpenRefusal> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(OpenRefusal::Open)?;
    let now = file.metadata().map_err(OpenRefusal::Fstat)?;
    let same = now.ino() == before.ino() && now.dev() == before.dev();
    if !same || !now.file_type().is_file() || now.nlink() != 1 {
        return Err(OpenRefusal::Replaced);
    }
    Ok(file)
}

fn commit(spool: &Spool, name: &str, uid: u32, mut file: File, max_size: u64) -> Outcome {
    let mut env = match Envelope::read_from(&mut file) {
        Ok(env) => env,
        Err(e) => return to_corrupt(spool, name, uid, &e.to_string()),
    };
    if spool.find(name).is_some() {
        log::info!("{name}: uid={uid}: already queued; maildrop file removed");
        remove(spool, name);
        return Outcome::Removed;
    }
    if let Err(e) = file.seek(SeekFrom::Start(0)) {
        log::warn!("{name}: uid={uid}: cannot read the maildrop file: {e}; will retry");
        return Outcome::Deferred;
    }
    // A local user is not a network client, whatever the file says.
    env.client = Some(format!("local uid={uid}"));
    let sender = env.sender_display();
    let mut body = (&file).take(env.size);
    match commit_streaming(spool, &mut body, || Ok(env), max_size, Some(name)) {
        Ok(id) => {
            log::info!("{id}: uid={uid} from={sender}");
            remove(spool, name);
            Outcome::Queued
        }
        Err(e) if e.is_permanent() => to_corrupt(spool, name, uid, &e.to_string()),
        Err(e) => {
            log::warn!("{name}: uid={uid}: not queued yet: {e}; will retry");
            Outcome::Deferred
        }
    }
}

/// The commit of a message the local milters see first (read into memory: at most
/// the size limit).
fn commit_filtered(
    spool: &Spool,
    name: &str,
    uid: u32,
    mut file: File,
    max_size: u64,
    filters: &mut LocalFilters,
) -> Outcome {
    let mut env = match Envelope::read_from(&mut file) {
        Ok(env) => env,
        Err(e) => return to_corrupt(spool, name, uid, &e.to_string()),
    };
    if spool.find(name).is_some() {
        log::info!("{name}: uid={uid}: already queued; maildrop file removed");
        remove(spool, name);
        return Outcome::Removed;
    }
    let mut message = Vec::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| (&file).take(env.size).read_to_end(&mut message));
    if let Err(e) = read {
        log::warn!("{name}: uid={uid}: cannot read the maildrop file: {e}; will retry");
        return Outcome::Deferred;
    }
    env.client = Some(format!("local uid={uid}"));
    let before = message.len() as u64;
    match filters.run(name, uid, &mut env, &mut message) {
        filter::Verdict::Commit => {}
        filter::Verdict::Discard(_) => {
            remove(spool, name);
            return Outcome::Removed;
        }
        filter::Verdict::Reject(why) => {
            return match filters.returner().reject(spool, name, &env, &message, &why) {
                Ok(_) => {
                    remove(spool, name);
                    Outcome::Removed
                }
                Err(e) => {
                    log::warn!(
                        "{name}: uid={uid}: cannot return the rejected message: {e}; will retry"
                    );
                    Outcome::Deferred
                }
            };
        }
        filter::Verdict::Defer(why) => {
            log::warn!("{name}: uid={uid}: not queued yet: milter: {why}; will retry");
            return Outcome::Deferred;
        }
    }
    if env.recipients.is_empty() {
        log::info!("{name}: uid={uid}: the milters removed every recipient; message dropped");
        remove(spool, name);
        return Outcome::Removed;
    }
    // What a milter added is not the user's: the limit stays the user's.
    let grown = (message.len() as u64).saturating_sub(before);
    let limit = if max_size == 0 { 0 } else { max_size + grown };
    let sender = env.sender_display();
    let held = env.hold.clone();
    match commit_bytes(spool, &message, env, limit, Some(name)) {
        Ok(id) => {
            log::info!("{id}: uid={uid} from={sender}");
            if let Some(why) = held {
                log::info!("{id}: hold: {why}");
            }
            remove(spool, name);
            Outcome::Queued
        }
        Err(e) if e.is_permanent() => to_corrupt(spool, name, uid, &e.to_string()),
        Err(e) => {
            log::warn!("{name}: uid={uid}: not queued yet: {e}; will retry");
            Outcome::Deferred
        }
    }
}

fn to_corrupt(spool: &Spool, name: &str, uid: u32, why: &str) -> Outcome {
    let name_shown = name.escape_debug();
    match maildrop::move_to_corrupt(spool, name) {
        Ok(dest) => {
            log::warn!(
                "{name_shown}: uid={uid}: corrupt maildrop file ({why}); moved to corrupt/{dest}"
            );
            Outcome::Corrupt
        }
        Err(e) => {
            log::error!(
                "{name_shown}: uid={uid}: corrupt maildrop file ({why}) that cannot be moved to corrupt/: {e}"
            );
            Outcome::Deferred
        }
    }
}

fn remove(spool: &Spool, name: &str) {
    let path = spool.maildrop_dir().join(name);
    if let Err(e) = std::fs::remove_file(&path) {
        log::error!("{name}: cannot remove {}: {e}", path.display());
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use sloop_common::spool::{QueueState, Recipient};
    use std::os::unix::fs::PermissionsExt;

    /// A fresh spool in the temporary directory (shared with returned.rs's tests).
    pub(in crate::pickup) fn spool(name: &str) -> Spool {
        let d = std::env::temp_dir().join(format!("sloop-pickup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = Spool::new(d);
        s.ensure_layout().unwrap();
        s
    }

    #[test]
    fn a_dropped_message_is_committed_under_its_id_with_a_local_client() {
        let s = spool("take");
        let env = Envelope::new("u@h.test", vec![Recipient::new("r@h.test")]);
        let id = maildrop::drop_message(&s, &mut &b"Subject: x\n\nhi\n"[..], || Ok(env), 0, None)
            .unwrap();
        assert_eq!(take(&s, &id, 0), Outcome::Queued);
        let queued = s.path(QueueState::Incoming, &id);
        let back = Spool::read_envelope(&queued).unwrap();
        assert_eq!(back.sender, "u@h.test");
        assert!(back.client.unwrap().starts_with("local uid="));
        assert!(!s.maildrop_dir().join(&id).exists());
        // Seen again after a crash before the removal: removed, not queued twice.
        let env = Envelope::new("u@h.test", vec![Recipient::new("r@h.test")]);
        maildrop::drop_message(&s, &mut &b"x"[..], || Ok(env), 0, Some(&id)).unwrap();
        assert_eq!(take(&s, &id, 0), Outcome::Removed);
        assert_eq!(s.list(QueueState::Incoming).unwrap(), vec![id]);
        std::fs::remove_dir_all(s.root()).unwrap();
    }

    #[test]
    fn garbage_goes_to_corrupt_and_a_file_being_written_waits() {
        let s = spool("corrupt");
        let bad = "00000000000000000000AB";
        let path = s.maildrop_dir().join(bad);
        std::fs::write(&path, b"not a queue file").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(take(&s, bad, 0), Outcome::Corrupt);
        assert!(s.corrupt_dir().join(bad).exists());
        let writing = "00000000000000000000AC";
        let path = s.maildrop_dir().join(writing);
        std::fs::write(&path, b"half").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(take(&s, writing, 0), Outcome::Waiting);
        std::os::unix::fs::symlink("/etc/passwd", s.maildrop_dir().join("link")).unwrap();
        assert_eq!(take(&s, "link", 0), Outcome::Corrupt);
        assert!(std::fs::read("/etc/passwd").is_ok());
        std::fs::remove_dir_all(s.root()).unwrap();
    }

    fn ready() -> Seen {
        Seen {
            symlink: false,
            regular: true,
            fifo: false,
            name_is_id: true,
            links: 1,
            mode: 0o100640,
            size: 1000,
            age: Duration::from_secs(1),
            writer_alive: false,
        }
    }

    fn is_corrupt(v: Verdict) -> bool {
        matches!(v, Verdict::Corrupt(_))
    }

    #[test]
    fn a_complete_file_is_taken() {
        assert_eq!(classify(&ready(), 0), Verdict::Take);
        assert_eq!(classify(&ready(), 1024), Verdict::Take);
    }

    #[test]
    fn anything_but_a_plain_file_named_with_an_id_is_corrupt() {
        for s in [
            Seen {
                symlink: true,
                regular: false,
                ..ready()
            },
            Seen {
                regular: false,
                fifo: true,
                ..ready()
            },
            Seen {
                name_is_id: false,
                ..ready()
            },
            Seen {
                links: 2,
                ..ready()
            },
            Seen {
                mode: 0o104640,
                ..ready()
            },
            Seen {
                mode: 0o100644,
                ..ready()
            },
        ] {
            assert!(is_corrupt(classify(&s, 0)), "{s:?}");
        }
    }

    #[test]
    fn a_file_being_written_waits_until_its_writer_is_gone_for_an_hour() {
        let writing = Seen {
            mode: 0o100600,
            ..ready()
        };
        assert_eq!(classify(&writing, 0), Verdict::Wait);
        let old = Seen {
            age: STALE_AFTER + Duration::from_secs(1),
            ..writing
        };
        assert_eq!(classify(&old, 0), Verdict::RemoveStale);
        let old_alive = Seen {
            writer_alive: true,
            ..old
        };
        assert_eq!(classify(&old_alive, 0), Verdict::Wait);
    }

    #[test]
    fn an_oversized_file_is_corrupt() {
        let big = Seen {
            size: 1024 + ENVELOPE_ROOM + 1,
            ..ready()
        };
        assert!(is_corrupt(classify(&big, 1024)));
        assert_eq!(classify(&big, 0), Verdict::Take);
    }
}
