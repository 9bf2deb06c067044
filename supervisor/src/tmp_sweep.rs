//! Removing the `tmp/` queue files of smtpd workers that died (killed, crashed).
//!
//! A queue file is written under `tmp/<id>` and renamed into `incoming/` at the commit
//! point (`sloop_common::spool::inject`); a writer that dies before the rename leaves
//! its `tmp/` file behind. The queue manager removes such files when it starts, but a
//! pool of smtpd workers killed one by one (OOM, an operator's `kill -9`) would pile
//! them up until then. So when `sloopd` reaps a worker that did not exit cleanly, it
//! removes the `tmp/` files whose queue ID carries that worker's pid (the smtpd names
//! the message at MAIL, in its own process, and an external queue program writes under
//! that ID too) and that were last written before the reap: a file named by a new
//! process that reused the pid is younger and stays.
//!
//! Writers that are not `sloopd`'s children (`sloop-queue` run by `sloop-sendmail` or a
//! script) can die too: once a minute ([`Sweeper`]) `sloopd` also removes the `tmp/`
//! files older than [`ORPHAN_AGE`] whose writer (the pid in the queue ID) no longer
//! runs.
//!
//! Only names are unlinked (never followed, whatever `sloopd` runs as); a missing
//! `tmp/` or a file already gone is not an error. Nothing here can lose a message: a
//! file in `tmp/` was never acknowledged to anyone.

use sloop_common::spool::{queue_id, Spool};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How old a `tmp/` file of a dead writer must be before the periodic sweep takes it.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60);
/// How often the periodic sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The periodic sweep's clock.
#[derive(Debug, Default)]
pub struct Sweeper {
    last: Option<Instant>,
}

impl Sweeper {
    /// Sweeps `spool`'s `tmp/` when [`SWEEP_EVERY`] has passed since the last sweep.
    pub fn tick(&mut self, spool: &Spool, now: Instant) {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.last = Some(now);
        let Some(before) = SystemTime::now().checked_sub(ORPHAN_AGE) else {
            return;
        };
        let n = remove_orphans(spool, before);
        if n > 0 {
            log::info!("removed {n} tmp/ file(s) of writers no longer running");
        }
    }
}

/// Removes the files in `spool`'s `tmp/` last written before `before` whose writer
/// (the pid in the queue ID) no longer runs; returns how many went.
pub fn remove_orphans(spool: &Spool, before: SystemTime) -> usize {
    let dir = spool.tmp_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(queue_id::creator_pid) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let written = entry.metadata().and_then(|m| m.modified());
        if written.is_ok_and(|t| t < before) && remove(&entry.path()) {
            removed += 1;
        }
    }
    removed
}

/// True when a process with this pid exists (pid 0 never names a writer).
fn pid_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
            Err(nix::errno::Errno::ESRCH)
        ),
        _ => false,
    }
}

/// Removes the files in `spool`'s `tmp/` written by `pid` no later than `before`;
/// returns how many went.
pub fn remove_files_of(spool: &Spool, pid: u32, before: SystemTime) -> usize {
    let dir = spool.tmp_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if queue_id::creator_pid(name) != Some(pid) {
            continue;
        }
        let written = entry.metadata().and_then(|m| m.modified());
        if written.is_ok_and(|t| t <= before) && remove(&entry.path()) {
            removed += 1;
        }
    }
    removed
}

fn remove(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            log::warn!("cannot remove {}: {e}", path.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::Duration;

    fn id(pid: u32, n: u32) -> String {
        format!("{:013X}{pid:06X}{n:03X}", 0x18d_0000_0000u64)
    }

    #[test]
    fn the_periodic_sweep_takes_old_files_of_dead_writers_only() {
        let root = std::env::temp_dir().join(format!("sloop-orphans-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = Spool::new(&root);
        std::fs::create_dir_all(spool.tmp_dir()).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let alive = std::process::id();
        let old = SystemTime::now() - Duration::from_secs(600);
        let write = |name: String, mtime: SystemTime| {
            let f = std::fs::File::create(spool.tmp_dir().join(name)).unwrap();
            f.set_modified(mtime).unwrap();
        };
        write(id(dead, 1), old);
        write(id(dead, 2), SystemTime::now());
        write(id(alive, 1), old);
        let before = SystemTime::now() - ORPHAN_AGE;
        assert_eq!(remove_orphans(&spool, before), 1);
        assert!(!spool.tmp_dir().join(id(dead, 1)).exists());
        assert!(spool.tmp_dir().join(id(dead, 2)).exists(), "too young");
        assert!(spool.tmp_dir().join(id(alive, 1)).exists(), "writer alive");
        // The sweeper runs at once, then not again within SWEEP_EVERY.
        let mut s = Sweeper::default();
        let t0 = Instant::now();
        s.tick(&spool, t0);
        assert_eq!(s.last, Some(t0));
        s.tick(&spool, t0 + Duration::from_secs(1));
        assert_eq!(s.last, Some(t0));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn removes_only_the_dead_writers_older_files() {
        let root = std::env::temp_dir().join(format!("sloop-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = Spool::new(&root);
        std::fs::create_dir_all(spool.tmp_dir()).unwrap();
        for name in [id(4242, 1), id(4242, 2), id(4343, 1), "junk".to_string()] {
            std::fs::write(spool.tmp_dir().join(name), b"x").unwrap();
        }
        // Nothing was written before an instant long past.
        let past = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(remove_files_of(&spool, 4242, past), 0);
        let now = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(remove_files_of(&spool, 4242, now), 2);
        let mut left: Vec<String> = std::fs::read_dir(spool.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![id(4343, 1), "junk".to_string()]);
        // No tmp/ at all is nothing to do.
        assert_eq!(remove_files_of(&Spool::new(root.join("none")), 1, now), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
