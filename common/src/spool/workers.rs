//! The delivery workers' lock: `lock/workers` in the spool (a directory of the
//! spool owner's, since the spool root itself is root's: docs/security.md).
//!
//! Every delivery worker holds a shared `flock(2)` on it for as long as it runs
//! ([`WorkerLock::hold`]). A queue manager that starts takes it exclusively before it
//! puts anything from `active/` back in the queue ([`wait_for_workers`]): the workers
//! of a queue manager that was killed finish the jobs they already hold and record
//! their deliveries in the status logs (status.rs), and only when the last of them
//! has exited does the new queue manager read those logs. Without the wait it could
//! load a message a moment before an old worker records its delivery, and deliver it
//! a second time. The lock also exists when nothing holds it, so the wait is a single
//! non-blocking call at a normal start.

use super::{ctx, Spool, SpoolError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the exclusive lock is tried while waiting.
const POLL: Duration = Duration::from_millis(10);

/// A delivery worker's shared hold on `lock/workers`, released when dropped or when
/// the process exits (however it exits).
#[derive(Debug)]
pub struct WorkerLock {
    _lock: Flock<File>,
}

fn lock_path(spool: &Spool) -> PathBuf {
    spool.root().join("lock").join("workers")
}

/// Opens (creating, owned like the spool's root) the lock file; never through a symlink.
fn open(spool: &Spool) -> Result<File, SpoolError> {
    let p = lock_path(spool);
    let f = ctx(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p),
        "open",
        &p,
    )?;
    ctx(super::own_like_dir(&f, spool.root()), "chown", &p)?;
    Ok(f)
}

impl WorkerLock {
    /// Takes the shared lock, waiting while a starting queue manager holds it
    /// exclusively (that lasts only until its recovery is done).
    pub fn hold(spool: &Spool) -> Result<WorkerLock, SpoolError> {
        let p = lock_path(spool);
        let lock =
            Flock::lock(open(spool)?, FlockArg::LockShared).map_err(|(_, e)| SpoolError {
                path: p,
                action: "lock",
                source: e.into(),
            })?;
        Ok(WorkerLock { _lock: lock })
    }
}

/// Waits until no delivery worker holds the lock, at most `timeout`. Returns whether
/// it got the lock (false: some worker still runs after `timeout`).
pub fn wait_for_workers(spool: &Spool, timeout: Duration) -> Result<bool, SpoolError> {
    let deadline = Instant::now() + timeout;
    let mut file = open(spool)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // Dropping the guard unlocks: the new queue manager's own workers share it.
            Ok(_guard) => return Ok(true),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(POLL);
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(false),
            Err((_, e)) => {
                return Err(SpoolError {
                    path: lock_path(spool),
                    action: "lock",
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_wait_ends_when_the_last_worker_lets_go() {
        let dir = std::env::temp_dir().join(format!("sloop-wlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::new(&dir);
        spool.ensure_layout().unwrap();
        assert!(wait_for_workers(&spool, Duration::ZERO).unwrap(), "free");
        let a = WorkerLock::hold(&spool).unwrap();
        let b = WorkerLock::hold(&spool).unwrap();
        assert!(!wait_for_workers(&spool, Duration::from_millis(30)).unwrap());
        drop(a);
        assert!(
            !wait_for_workers(&spool, Duration::ZERO).unwrap(),
            "b holds it"
        );
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(b);
        });
        assert!(wait_for_workers(&spool, Duration::from_secs(30)).unwrap());
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
