//! Per-client concurrency across worker processes (`smtpd.max_per_client`).
//!
//! Each worker serving a client holds one of `max_per_client` slots, a one-octet
//! `fcntl` write lock in `<run_dir>/clients/<ip>`. A worker tries the slots without
//! blocking; when all are taken the client gets `421 4.7.0 Too many connections`. The
//! kernel drops the locks when the worker closes the file or dies, so a crashed worker
//! never leaks a slot. The last session of a client removes its file (it can take a
//! lock on the whole file only when no other process holds a slot); a worker that
//! locked a file just removed checks the inode and starts over, so the files do not
//! pile up and the limit still holds. The session releases its slot as soon as it is
//! over for the client (EOF, or the session closing, before the last reply goes out),
//! so a client that reconnects on reading `221` is not counted twice. Clients in
//! `relay.networks` take no slot (`worker.rs`). Errors (run directory missing, unwritable) are returned to the
//! caller, which answers with a temporary failure: a failing check narrows access,
//! never widens it (docs/invariants.md G5).

use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A held slot; dropping it releases the lock (and removes an unused file).
#[derive(Debug)]
pub struct Slot {
    file: File,
    path: PathBuf,
    pub index: usize,
}

/// Takes a free slot for `ip`, or `None` when `max` sessions already hold one.
pub fn acquire(run_dir: &Path, ip: IpAddr, max: usize) -> io::Result<Option<Slot>> {
    let dir = run_dir.join("clients");
    let path = dir.join(ip.to_string());
    for _ in 0..64 {
        let file = match open_slots(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The directory is made on first use (and again if someone removed it).
                std::fs::create_dir_all(&dir)?;
                open_slots(&path)?
            }
            opened => opened?,
        };
        let Some(index) = take_free_slot(&file, &path, max)? else {
            if being_removed(&file) {
                // The client's last session holds the whole file for a moment while it
                // removes it: that is not a full house. Start over on a fresh file.
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            return Ok(None);
        };
        if same_file(&file, &path) {
            return Ok(Some(Slot { file, path, index }));
        }
        // The file was removed by the last session of this client between our open
        // and our lock: our lock is on an orphan; start over.
    }
    Err(io::Error::other(format!(
        "{}: keeps being replaced",
        path.display()
    )))
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A lock on the whole file succeeds only if no other process holds a slot
        // (our own lock does not conflict with it); then nobody needs the file.
        if set_lock(&self.file, 0, 0).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn open_slots(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Tries every slot once, starting at one chosen by the pid so that concurrent workers
/// do not all queue up behind the low slots.
fn take_free_slot(file: &File, path: &Path, max: usize) -> io::Result<Option<usize>> {
    let first = std::process::id() as usize % max.max(1);
    for index in (first..max).chain(0..first) {
        match set_lock(file, index as libc::off_t, 1) {
            Ok(true) => return Ok(Some(index)),
            Ok(false) => continue,
            Err(e) => return Err(io::Error::other(format!("{}: lock: {e}", path.display()))),
        }
    }
    Ok(None)
}

/// A non-blocking write lock on `len` octets at `start` (0 = to the end of file);
/// false when another process holds a conflicting lock.
fn set_lock(file: &File, start: libc::off_t, len: libc::off_t) -> nix::Result<bool> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    match fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// True when the lock that blocks slot 0 covers the whole file: the lock a departing
/// session takes just before it removes the file (see `Drop for Slot`).
fn being_removed(file: &File) -> bool {
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    match fcntl(file.as_raw_fd(), FcntlArg::F_GETLK(&mut probe)) {
        Ok(_) => {
            probe.l_type != libc::F_UNLCK as libc::c_short && probe.l_start == 0 && probe.l_len == 0
        }
        Err(_) => false,
    }
}

/// True when `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn slots_are_per_process_locks() {
        // fcntl locks are per process: within one process the same slot is granted
        // again, so this only checks the file handling; the cross-process limit is
        // tested end to end (tests/tests/smtpd_limits.rs).
        let dir = std::env::temp_dir().join(format!("sloop-cl-{}", std::process::id()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slot = acquire(&dir, ip, 2).unwrap().unwrap();
        assert!(slot.index < 2);
        assert!(dir.join("clients/192.0.2.1").exists());
        drop(slot);
        // Nobody else held a slot: the file is gone.
        assert!(!dir.join("clients/192.0.2.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
    /// Regression: a session arriving while the client's last session held the whole
    /// file to remove it was told "Too many connections" (seen in the benchmark with a
    /// single client). It must wait for the removal and take a slot in a fresh file.
    #[test]
    fn a_file_being_removed_is_not_a_full_house() {
        use std::io::{BufRead, BufReader};
        let dir = std::env::temp_dir().join(format!("sloop-cl-rm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("clients")).unwrap();
        let path = dir.join("clients/192.0.2.7");
        std::fs::write(&path, b"").unwrap();
        // Another process plays the departing session: whole-file lock, pause, unlink.
        let script = "import fcntl,os,sys,time\nf=open(sys.argv[1],'r+')\nfcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB,0,0)\nprint('locked',flush=True)\ntime.sleep(0.05)\nos.unlink(sys.argv[1])\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        let slot = acquire(&dir, "192.0.2.7".parse().unwrap(), 2).unwrap();
        assert!(
            slot.is_some(),
            "a removal in progress was taken for a full house"
        );
        let _ = child.wait();
        drop(slot);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
