//! Virtual Maildir delivery: `<mailbox_root>/<domain>/<user>/Maildir/{tmp,new,cur}`.
//!
//! The Maildir is created on first delivery. A message is written to `tmp/` under a
//! name no other delivery can take (`<secs>.M<micros>P<pid>Q<n>.<host>`, created with
//! `O_EXCL`), fsync'd, moved into `new/` (a rename that never replaces an existing
//! file, or a hard link and unlink where the file system lacks it), and `new/` is
//! fsync'd: only then is the delivery reported.
//!
//! The domain and user are data, never paths: each is checked as one safe path
//! component, and every directory level below the canonical mailbox root must be a
//! real directory, not a symlink (so a symlink planted inside the root cannot lead
//! elsewhere). Failures are
//! temporary (disk full, permissions) except for an unusable name, which is permanent.
//! A crashed delivery leaves only a `tmp/` file, never a partial message in `new/`;
//! such leftovers are swept once per Maildir and process after 36 hours.
//!
//! **Once per message and recipient.** When the queue manager names the attempt
//! ([`MaildirWriter::deliver_once`]: the queue ID and the recipient's index in the
//! envelope), the file in `new/` gets a name made of that key
//! (`<arrival>.Q<queue id>R<index>.<host>`), unique because queue IDs are. A later
//! attempt for the same recipient (the worker or the queue manager was killed after
//! the file reached `new/` but before the result was recorded) finds the file there,
//! fsyncs `new/` and reports the delivery without writing a second copy. A copy the
//! user already moved to `cur/` is not looked for: that costs a duplicate, as before.

use super::io_error_result;
use crate::result::RcptResult;
use sloop_common::local_recipient::{safe_local_part, safe_name, UnsafeName};
use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Age after which a file in a Maildir's `tmp/` is a crashed delivery's leftover.
pub const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// Writes messages into virtual Maildirs under one root.
#[derive(Debug)]
pub struct MaildirWriter {
    root: PathBuf,
    /// `root` with symlinks resolved, once known.
    canonical: Option<PathBuf>,
    host: String,
    counter: u64,
    /// Maildirs whose `tmp/` this process has already swept.
    swept: HashSet<PathBuf>,
    /// When set, `new/` is not fsync'd by [`MaildirWriter::deliver`] but remembered
    /// here until [`MaildirWriter::sync`]: the worker fsyncs each `new/` once for a
    /// batch of jobs and reports their results only then (worker.rs).
    deferred_syncs: Option<Vec<PathBuf>>,
}

impl MaildirWriter {
    pub fn new(root: &Path, hostname: &str) -> MaildirWriter {
        MaildirWriter {
            root: root.to_path_buf(),
            canonical: None,
            host: hostname_component(hostname),
            counter: 0,
            swept: HashSet::new(),
            deferred_syncs: None,
        }
    }

    /// From now on, leaves the fsync of `new/` to [`MaildirWriter::sync`].
    pub fn defer_syncs(&mut self) {
        self.deferred_syncs.get_or_insert_with(Vec::new);
    }

    /// fsyncs every `new/` written to since the last call (each once).
    pub fn sync(&mut self) -> io::Result<()> {
        let Some(dirs) = self.deferred_syncs.as_mut() else {
            return Ok(());
        };
        let mut first_err = None;
        for d in dirs.drain(..) {
            if let Err(e) = fsync_dir(&d) {
                first_err.get_or_insert(io::Error::new(
                    e.kind(),
                    format!("cannot fsync {}: {e}", d.display()),
                ));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Delivers `prefix` followed by `message` to the Maildir of `user@domain`;
    /// returns the path of the new file.
    pub fn deliver(
        &mut self,
        domain: &str,
        user: &str,
        prefix: &[u8],
        message: &mut dyn Read,
    ) -> Result<PathBuf, RcptResult> {
        self.deliver_once(domain, user, prefix, message, None)
    }

    /// Like [`MaildirWriter::deliver`]; with a `key` (`(arrival secs, "<queue
    /// id>R<index>")`), a file already in `new/` under that key's name counts as this
    /// delivery (see the module comment).
    pub fn deliver_once(
        &mut self,
        domain: &str,
        user: &str,
        prefix: &[u8],
        message: &mut dyn Read,
        key: Option<(u64, &str)>,
    ) -> Result<PathBuf, RcptResult> {
        let dir = self.maildir(domain, user)?;
        self.clean_tmp_once(&dir);
        let unique = self.unique_name();
        let name = match key {
            Some((arrival, key)) => format!("{arrival}.Q{key}.{}", self.host),
            None => unique.clone(),
        };
        let tmp = dir.join("tmp").join(&unique);
        let new = dir.join("new").join(&name);
        let new_dir = dir.join("new");
        let published = if key.is_some() && fs::symlink_metadata(&new).is_ok() {
            Ok(())
        } else {
            write_file(&tmp, prefix, message).and_then(|()| match publish(&tmp, &new) {
                // Published by an earlier attempt in the meantime: that copy counts.
                Err(e) if key.is_some() && e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(&tmp);
                    Ok(())
                }
                other => other,
            })
        };
        let written = published.and_then(|()| match self.deferred_syncs.as_mut() {
            Some(dirs) => {
                if !dirs.contains(&new_dir) {
                    dirs.push(new_dir);
                }
                Ok(())
            }
            None => fsync_dir(&new_dir),
        });
        match written {
            Ok(()) => Ok(new),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(io_error_result(
                    &e,
                    &format!("cannot write to Maildir {}", dir.display()),
                ))
            }
        }
    }

    /// The Maildir directory, created if missing, checked to be under the root.
    fn maildir(&mut self, domain: &str, user: &str) -> Result<PathBuf, RcptResult> {
        let user = safe_local_part(user)
            .map_err(|e| RcptResult::fail("5.1.3", format!("bad local-part {user:?}: {e}")))?;
        let domain = safe_component(domain)
            .map_err(|e| RcptResult::fail("5.1.2", format!("bad domain {domain:?}: {e}")))?;
        let root = self.canonical_root()?;
        let dir = root.join(&domain).join(&user).join("Maildir");
        for d in [
            root.join(&domain),
            root.join(&domain).join(&user),
            dir.clone(),
            dir.join("tmp"),
            dir.join("new"),
            dir.join("cur"),
        ] {
            // Every level below the canonical root must be a real directory, never a
            // symlink, so the path cannot lead out of the root.
            match real_dir(&d) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(RcptResult::defer(
                        "4.3.5",
                        format!("{} is not a plain directory; refusing", d.display()),
                    ))
                }
                Err(e) => {
                    let what = format!("cannot create {}", d.display());
                    return Err(io_error_result(&e, &what));
                }
            }
        }
        Ok(dir)
    }

    /// Once per Maildir and process, removes `tmp/` files older than [`STALE_TMP`]
    /// (left by a delivery that crashed; the Maildir convention is 36 hours).
    fn clean_tmp_once(&mut self, dir: &Path) {
        if self.swept.len() >= 10_000 {
            self.swept.clear();
        }
        if !self.swept.insert(dir.to_path_buf()) {
            return;
        }
        let Ok(entries) = fs::read_dir(dir.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The mailbox root with symlinks resolved (created if missing), found once.
    fn canonical_root(&mut self) -> Result<PathBuf, RcptResult> {
        if let Some(r) = &self.canonical {
            return Ok(r.clone());
        }
        let root = self.root.canonicalize().or_else(|_| {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&self.root)?;
            self.root.canonicalize()
        });
        let root = root
            .map_err(|e| io_error_result(&e, &format!("cannot create {}", self.root.display())))?;
        self.canonical = Some(root.clone());
        Ok(root)
    }

    /// `<secs>.M<micros>P<pid>Q<n>.<host>` (Maildir's unique-name recipe).
    pub fn unique_name(&mut self) -> String {
        self.counter += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.counter,
            self.host
        )
    }
}

/// A domain (or other name) as one directory component, lower case.
pub fn safe_component(s: &str) -> Result<String, UnsafeName> {
    safe_name(s, 255)
}

/// The host name as Maildir wants it: `/` and `:` escaped as `\057` and `\072`.
fn hostname_component(h: &str) -> String {
    let h = if h.is_empty() { "localhost" } else { h };
    h.replace('/', "\\057").replace(':', "\\072")
}

/// Delivers into the Maildir `dir` (a local account's `~/Maildir`), creating it and
/// its `tmp/`, `new/` and `cur/` (0700) when missing; refuses symlinks on the way.
/// The file is fsync'd, published into `new/`, and `new/` fsync'd. Returns its path.
pub fn deliver_into(
    dir: &Path,
    hostname: &str,
    prefix: &[u8],
    message: &mut dyn Read,
) -> io::Result<PathBuf> {
    for d in [
        dir.to_path_buf(),
        dir.join("tmp"),
        dir.join("new"),
        dir.join("cur"),
    ] {
        if !real_dir(&d)? {
            return Err(io::Error::other(format!(
                "{} is not a directory (or is a symlink)",
                d.display()
            )));
        }
    }
    static DELIVERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut names = MaildirWriter::new(dir, hostname);
    names.counter = DELIVERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = names.unique_name();
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let written = write_file(&tmp, prefix, message)
        .and_then(|()| publish(&tmp, &new))
        .and_then(|()| fsync_dir(&dir.join("new")));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| new)
}

/// Makes sure `d` is a directory that is not a symlink, creating it (0700, then
/// fsyncing its parent) when missing. `Ok(false)`: something else is in the way.
fn real_dir(d: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(d) {
        Ok(m) => return Ok(m.file_type().is_dir()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    match DirBuilder::new().mode(0o700).create(d) {
        Ok(()) => {
            if let Some(p) = d.parent() {
                fsync_dir(p)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(fs::symlink_metadata(d)?.file_type().is_dir())
}

/// Moves `tmp` to `new` without ever replacing an existing file: one
/// `rename(RENAME_NOREPLACE)`, or where the file system lacks it, the classic Maildir
/// hard link then unlink; where it has no hard links either, a plain rename (the name
/// is unique).
fn publish(tmp: &Path, new: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, tmp, None, new, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    match fs::hard_link(tmp, new) {
        Ok(()) => {
            let _ = fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            fs::rename(tmp, new)
        }
        Err(e) => Err(e),
    }
}

/// Creates `path` exclusively, writes `prefix` then `message`, and fsyncs it.
fn write_file(path: &Path, prefix: &[u8], message: &mut dyn Read) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut out = io::BufWriter::with_capacity(64 * 1024, file);
    out.write_all(prefix)?;
    io::copy(message, &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// fsyncs a directory so entries created in it are durable.
pub fn fsync_dir(d: &Path) -> io::Result<()> {
    File::open(d)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sloop_common::spool::status::Outcome;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sloop-maildir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_are_unique_and_safe() {
        let mut w = MaildirWriter::new(Path::new("/nonexistent"), "mx/a:b");
        let a = w.unique_name();
        let b = w.unique_name();
        assert_ne!(a, b);
        assert!(a.ends_with(".mx\\057a\\072b"), "{a}");
        assert!(!a.contains('/') && !a.contains(':'));
        let pid = format!("P{}Q1.", std::process::id());
        assert!(a.contains(&pid), "{a}");
    }

    #[test]
    fn a_keyed_delivery_is_written_once() {
        let root = temp("once");
        let mut w = MaildirWriter::new(&root, "h");
        let key = Some((1_700_000_000, "0123456789ABCDEF012345R3"));
        let a = w
            .deliver_once("d.test", "u", b"", &mut &b"first\n"[..], key)
            .unwrap();
        let b = w
            .deliver_once("d.test", "u", b"", &mut &b"second\n"[..], key)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"first\n");
        let new = root.join("d.test/u/Maildir/new");
        assert_eq!(fs::read_dir(&new).unwrap().count(), 1);
        let tmp = root.join("d.test/u/Maildir/tmp");
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
        // Another recipient of the same message is another file.
        let other = Some((1_700_000_000, "0123456789ABCDEF012345R4"));
        w.deliver_once("d.test", "u", b"", &mut &b"x\n"[..], other)
            .unwrap();
        assert_eq!(fs::read_dir(&new).unwrap().count(), 2);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn delivers_byte_exact_into_new() {
        let root = temp("exact");
        let mut w = MaildirWriter::new(&root, "h");
        let msg = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        let path = w
            .deliver("Example.Test", "bob", b"X: y\r\n", &mut msg.as_slice())
            .unwrap();
        assert!(path.starts_with(root.join("example.test/bob/Maildir/new")));
        let mut want = b"X: y\r\n".to_vec();
        want.extend(&msg);
        assert_eq!(fs::read(&path).unwrap(), want);
        assert_eq!(
            fs::read_dir(root.join("example.test/bob/Maildir/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(root.join("example.test/bob/Maildir/cur").is_dir());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_home_maildir_is_created_and_symlinks_are_refused() {
        let home = temp("home");
        fs::create_dir_all(&home).unwrap();
        let md = home.join("Maildir");
        let a = deliver_into(&md, "h", b"X: 1\n", &mut &b"one\n"[..]).unwrap();
        let b = deliver_into(&md, "h", b"X: 2\n", &mut &b"two\n"[..]).unwrap();
        assert_ne!(a, b, "unique names within one process");
        assert_eq!(fs::read(&b).unwrap(), b"X: 2\ntwo\n");
        assert!(md.join("cur").is_dir() && md.join("tmp").is_dir());
        let other = home.join("elsewhere");
        fs::create_dir_all(&other).unwrap();
        let linked = home.join("Linked");
        std::os::unix::fs::symlink(&other, &linked).unwrap();
        assert!(deliver_into(&linked, "h", b"", &mut &b"x"[..]).is_err());
        assert_eq!(fs::read_dir(&other).unwrap().count(), 0);
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn deferred_syncs_name_each_new_dir_once_and_report_failures() {
        let root = temp("deferred");
        let mut w = MaildirWriter::new(&root, "h");
        w.defer_syncs();
        for user in ["a", "a", "b"] {
            w.deliver("d.test", user, b"", &mut &b"m\n"[..]).unwrap();
        }
        assert_eq!(
            w.deferred_syncs.as_deref().map(<[PathBuf]>::len),
            Some(2),
            "one fsync per new/ directory"
        );
        w.sync().unwrap();
        assert_eq!(w.deferred_syncs.as_deref().map(<[PathBuf]>::len), Some(0));
        // A new/ that vanished before the sync is an error naming it.
        w.deliver("d.test", "c", b"", &mut &b"m\n"[..]).unwrap();
        fs::remove_dir_all(root.join("d.test/c")).unwrap();
        let e = w.sync().unwrap_err();
        assert!(e.to_string().contains("d.test/c/Maildir/new"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stale_tmp_files_are_swept_fresh_ones_kept() {
        let root = temp("sweep");
        let mut w = MaildirWriter::new(&root, "h");
        let tmp = root.join("d.test/u/Maildir/tmp");
        fs::create_dir_all(&tmp).unwrap();
        fs::write(tmp.join("old"), "x").unwrap();
        fs::write(tmp.join("fresh"), "x").unwrap();
        let long_ago = SystemTime::now() - STALE_TMP - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(tmp.join("old"))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        w.deliver("d.test", "u", b"", &mut &b"m\n"[..]).unwrap();
        assert!(!tmp.join("old").exists());
        assert!(tmp.join("fresh").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn path_tricks_never_leave_the_root() {
        let root = temp("tricks");
        let mut w = MaildirWriter::new(&root.join("mail"), "h");
        for user in [
            "../../etc",
            "a/b",
            "..",
            ".hidden",
            "x\0y",
            "tab\tx",
            &"l".repeat(65),
        ] {
            let r = w
                .deliver("d.test", user, b"", &mut &b"m\n"[..])
                .unwrap_err();
            assert_eq!(r.outcome, Outcome::Fail, "{user:?}");
            assert_eq!(r.dsn, "5.1.3");
        }
        for domain in ["../x", "a/b", ".."] {
            let r = w.deliver(domain, "u", b"", &mut &b"m\n"[..]).unwrap_err();
            assert_eq!(r.outcome, Outcome::Fail, "{domain:?}");
        }
        // A symlink planted inside the root is not followed out of it.
        fs::create_dir_all(root.join("mail/d.test")).unwrap();
        fs::create_dir_all(root.join("outside")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("mail/d.test/evil")).unwrap();
        let r = w
            .deliver("d.test", "evil", b"", &mut &b"m\n"[..])
            .unwrap_err();
        assert_eq!(r.outcome, Outcome::Defer);
        assert_eq!(crate_files(&root.join("outside")), 0);
        fs::remove_dir_all(&root).unwrap();
    }

    fn crate_files(d: &Path) -> usize {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    crate_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
}
