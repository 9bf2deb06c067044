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
//! Only names are unlinked (never followed, whatever `sloopd` runs as); a missing
//! `tmp/` or a file already gone is not an error. Nothing here can lose a message: a
//! file in `tmp/` was never acknowledged to anyone.

use sloop_common::spool::{queue_id, Spool};
use std::path::Path;
use std::time::SystemTime;

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
