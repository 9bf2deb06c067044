//! mbox delivery (`local.mailbox_format = "mbox"`, and alias `/path/file` targets).
//!
//! The message is appended as one mboxrd entry: a `From <sender> <asctime>` line, the
//! trace headers, the message with CRLF turned into LF and every line matching
//! `^>*From ` given one more `>`, and an empty line. Two locks are held while
//! appending, as mail readers expect: a `<file>.lock` dot-lock (created with `O_EXCL`;
//! one older than [`STALE_LOCK`] is removed) and an fcntl write lock on the file. The
//! file is fsync'd before success; on any error it is truncated back to its original
//! length, so a failed delivery leaves no partial entry. A mailbox that stays locked
//! for [`LOCK_WAIT`] defers. The file is opened with `O_NOFOLLOW`.

use super::io_error_result;
use crate::result::RcptResult;
use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A dot-lock older than this is assumed left by a crashed writer.
pub const STALE_LOCK: Duration = Duration::from_secs(300);
/// How long to wait for a locked mailbox before deferring.
pub const LOCK_WAIT: Duration = Duration::from_secs(20);
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Appends one message to the mbox file at `path`.
pub fn append(
    path: &Path,
    sender: &str,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Result<(), RcptResult> {
    let _dotlock = DotLock::acquire(path)?;
    let fail =
        |e: &io::Error| io_error_result(e, &format!("cannot write mailbox {}", path.display()));
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| fail(&e))?;
    append_file(&file, path, sender, prefix, message)
}

/// Appends one message to the already open mbox `file` (named `path` in messages):
/// fcntl lock, entry, fsync; on error the file is cut back to its old length. The
/// caller holds the dot-lock.
pub fn append_file(
    file: &File,
    path: &Path,
    sender: &str,
    prefix: &[u8],
    message: &mut dyn Read,
) -> Result<(), RcptResult> {
    let fail =
        |e: &io::Error| io_error_result(e, &format!("cannot write mailbox {}", path.display()));
    lock_file(file).map_err(|e| fail(&e))?;
    let original = file.metadata().map_err(|e| fail(&e))?.len();
    match write_entry(file, sender, prefix, message) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = file.set_len(original);
            let _ = file.sync_all();
            Err(fail(&e))
        }
    }
}

fn write_entry(file: &File, sender: &str, prefix: &[u8], message: &mut dyn Read) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(64 * 1024, file);
    out.write_all(from_line(sender, now_secs()).as_bytes())?;
    let mut q = MboxQuoter::new(&mut out);
    q.write_all(prefix)?;
    io::copy(message, &mut q)?;
    q.finish()?;
    out.flush()?;
    drop(out);
    file.sync_all()
}

/// `From <sender> <asctime>\n`; the null sender is written `MAILER-DAEMON`.
pub fn from_line(sender: &str, secs: u64) -> String {
    let who: String = if sender.is_empty() {
        "MAILER-DAEMON".to_string()
    } else {
        sender
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    format!("From {who} {}\n", asctime(secs))
}

/// `Sat Nov 28 16:44:02 2026` in UTC.
pub fn asctime(secs: u64) -> String {
    let t = sloop_common::logging::UtcParts::from_secs(secs);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        t.weekday, t.month, t.day, t.hour, t.minute, t.second, t.year
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Takes the fcntl write lock on the whole file, waiting up to [`LOCK_WAIT`].
fn lock_file(file: &File) -> io::Result<()> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&lock)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(LOCK_RETRY)
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "mailbox is locked",
                ))
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// `<file>.lock`, removed on drop.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
}

impl DotLock {
    pub fn acquire(mbox: &Path) -> Result<DotLock, RcptResult> {
        let mut name = mbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DotLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_stale(&path) {
                        log::warn!("removing stale lock {}", path.display());
                        let _ = fs::remove_file(&path);
                    } else if Instant::now() >= deadline {
                        return Err(RcptResult::defer(
                            "4.2.0",
                            format!("mailbox {} is locked by {}", mbox.display(), path.display()),
                        ));
                    } else {
                        std::thread::sleep(LOCK_RETRY);
                    }
                }
                Err(e) => {
                    let what = format!("cannot create lock {}", path.display());
                    return Err(io_error_result(&e, &what));
                }
            }
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn is_stale(lock: &Path) -> bool {
    fs::symlink_metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_LOCK)
}

/// Streaming mboxrd writer: CRLF -> LF, `>*From ` lines get one more `>`.
#[derive(Debug)]
pub struct MboxQuoter<W: Write> {
    inner: W,
    /// Bytes of the current line held back while they may still become `>*From `.
    pending: Vec<u8>,
    at_line_start: bool,
    pending_cr: bool,
    last: Option<u8>,
}

impl<W: Write> MboxQuoter<W> {
    pub fn new(inner: W) -> MboxQuoter<W> {
        MboxQuoter {
            inner,
            pending: Vec::new(),
            at_line_start: true,
            pending_cr: false,
            last: None,
        }
    }

    /// Flushes held bytes, ends the last line, and writes the separating empty line.
    pub fn finish(mut self) -> io::Result<W> {
        if self.pending_cr {
            self.pending_cr = false;
            self.byte(b'\r')?;
        }
        self.flush_pending()?;
        if self.last.is_some_and(|b| b != b'\n') {
            self.emit(b"\n")?;
        }
        self.emit(b"\n")?;
        Ok(self.inner)
    }

    fn emit(&mut self, b: &[u8]) -> io::Result<()> {
        if let Some(&l) = b.last() {
            self.last = Some(l);
            self.inner.write_all(b)?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        let p = std::mem::take(&mut self.pending);
        self.emit(&p)
    }

    /// One byte after CRLF folding.
    fn byte(&mut self, b: u8) -> io::Result<()> {
        if !self.at_line_start {
            self.emit(&[b])?;
            self.at_line_start = b == b'\n';
            return Ok(());
        }
        self.pending.push(b);
        let n = self.pending.iter().take_while(|&&c| c == b'>').count();
        let complete = &self.pending[n..] == b"From ";
        let possible = b"From ".starts_with(&self.pending[n..]);
        if complete {
            self.emit(b">")?;
            self.flush_pending()?;
            self.at_line_start = false;
        } else if !possible {
            self.flush_pending()?;
            self.at_line_start = b == b'\n';
        }
        Ok(())
    }
}

impl<W: Write> Write for MboxQuoter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    self.byte(b'\r')?;
                }
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                self.byte(b)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn quote(chunks: &[&[u8]]) -> Vec<u8> {
        let mut q = MboxQuoter::new(Vec::new());
        for c in chunks {
            q.write_all(c).unwrap();
        }
        q.finish().unwrap()
    }

    #[test]
    fn from_lines_are_quoted_mboxrd_style() {
        assert_eq!(
            quote(&[b"A: b\r\n\r\nFrom me\r\n>From you\r\nFromage\r\n From x\r\n"]),
            b"A: b\n\n>From me\n>>From you\nFromage\n From x\n\n".to_vec()
        );
        assert_eq!(quote(&[b"From "]), b">From \n\n".to_vec());
        assert_eq!(quote(&[b">>Fro"]), b">>Fro\n\n".to_vec());
    }

    #[test]
    fn quoting_survives_chunk_boundaries() {
        let whole = quote(&[b"x\r\nFrom a\r\n>From b\r\n"]);
        let split = quote(&[b"x\r", b"\nFr", b"om a\r\n>", b"Fro", b"m b\r", b"\n"]);
        assert_eq!(whole, split);
        assert_eq!(quote(&[b"a\rb\n"]), b"a\rb\n\n".to_vec());
        assert_eq!(quote(&[b"no newline"]), b"no newline\n\n".to_vec());
    }

    /// Random inputs split at random points give the same mbox text as one write, and
    /// no line of the result starts with an unquoted `From `.
    #[test]
    fn random_inputs_and_splits() {
        let alphabet = b"From >\r\nx";
        let mut seed: u64 = 0xb0c5;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..2000 {
            let len = next() % 40;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            let whole = quote(&[&input]);
            let cut = if input.is_empty() {
                0
            } else {
                next() % input.len()
            };
            let (a, b) = input.split_at(cut);
            assert_eq!(quote(&[a, b]), whole, "{input:?}");
            assert!(!whole.starts_with(b"From "), "{input:?}");
            assert!(!whole.windows(6).any(|w| w == b"\nFrom "), "{input:?}");
            assert!(input.is_empty() || whole.ends_with(b"\n\n"), "{input:?}");
        }
    }

    #[test]
    fn from_line_and_asctime() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_795_883_642), "Sat Nov 28 16:34:02 2026");
        assert_eq!(
            from_line("", 0),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
        );
        assert!(from_line("a b@c", 0).starts_with("From a_b@c "));
    }

    #[test]
    fn appends_and_leaves_no_lock() {
        let dir = std::env::temp_dir().join(format!("sloop-mbox-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mbox = dir.join("u.mbox");
        append(
            &mbox,
            "s@x",
            b"H: 1\n",
            &mut &b"Subject: a\r\n\r\nFrom here\r\n"[..],
        )
        .unwrap();
        append(&mbox, "", b"", &mut &b"Subject: b\n\nbye\n"[..]).unwrap();
        let text = fs::read_to_string(&mbox).unwrap();
        assert!(text.starts_with("From s@x "));
        assert!(text.contains("H: 1\nSubject: a\n\n>From here\n\nFrom MAILER-DAEMON "));
        assert!(text.ends_with("Subject: b\n\nbye\n\n"));
        assert!(!dir.join("u.mbox.lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_dot_lock_is_removed() {
        let dir = std::env::temp_dir().join(format!("sloop-mbox-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("u.mbox.lock");
        fs::write(&lock, "1").unwrap();
        assert!(!is_stale(&lock));
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(is_stale(&lock));
        append(&dir.join("u.mbox"), "a@b", b"", &mut &b"x\n"[..]).unwrap();
        assert!(!lock.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
