//! Per-client concurrency across worker processes (`smtpd.max_per_client`).
//!
//! Each worker serving a client holds one of `max_per_client` slots, a one-octet
//! `fcntl` write lock in `<run_dir>/clients/<ip>`. A worker tries the slots without
//! blocking; when all are taken the client gets `421 4.7.0 Too many connections`. The
//! kernel drops the locks when the worker closes the file or dies, so a crashed worker
//! never leaks a slot. Errors (run directory missing, unwritable) are returned to the
//! caller, which answers with a temporary failure: a failing check narrows access,
//! never widens it (SEED.md G5).

use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A held slot; dropping it releases the lock.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    pub index: usize,
}

/// Takes a free slot for `ip`, or `None` when `max` sessions already hold one.
pub fn acquire(run_dir: &Path, ip: IpAddr, max: usize) -> io::Result<Option<Slot>> {
    let dir = run_dir.join("clients");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(ip.to_string());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    for index in 0..max {
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: index as libc::off_t,
            l_len: 1,
            l_pid: 0,
        };
        match fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&lock)) {
            Ok(_) => return Ok(Some(Slot { _file: file, index })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => continue,
            Err(e) => return Err(io::Error::other(format!("{}: lock: {e}", path.display()))),
        }
    }
    Ok(None)
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
        assert_eq!(slot.index, 0);
        assert!(dir.join("clients/192.0.2.1").exists());
        drop(slot);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
