//! The queue manager facing a spool that misbehaves: a queue file it cannot use goes to
//! `hold/` with one log line (not a retry loop), and status logs that cannot be written
//! (a full disk) neither stop it nor lose a result; it carries on when space returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod qmgr_support;

use qmgr_support::{Setup, ALL_OK};
use sloop_common::spool::{queue_id, QueueState};
use sloop_tests::wait_until;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[test]
fn unusable_queue_files_are_held_with_one_log_line_and_the_rest_flows() {
    let s = Setup::new("qmgr-corrupt", ALL_OK, &[("queue.scan_interval", "\"1s\"")]);
    // Garbage under a queue ID, and a real queue file cut short.
    let garbage = queue_id::new_id();
    std::fs::write(
        s.spool.path(QueueState::Incoming, &garbage),
        b"not a queue file",
    )
    .unwrap();
    let cut = s.inject("a@localhost.test", &["b@localhost.test"], "cut");
    let path = s.spool.path(QueueState::Incoming, &cut);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let q = s.start();
    let fine = s.inject("a@localhost.test", &["c@localhost.test"], "fine");
    s.spool.poke();
    q.wait_log(&format!("{fine}: removed"), 30);
    for id in [&garbage, &cut] {
        q.wait_log(&format!("{id}: queue file"), 30);
        assert!(s.spool.path(QueueState::Hold, id).exists(), "{id} held");
    }
    // Several scan intervals later, still one line each: no retry loop.
    std::thread::sleep(Duration::from_millis(2500));
    let log = q.log_text();
    for id in [&garbage, &cut] {
        let lines = log.lines().filter(|l| l.contains(id.as_str())).count();
        assert_eq!(lines, 1, "{id}:\n{log}");
        let line = log.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(
            line.contains("moved to hold/") && line.contains("error"),
            "{line}"
        );
    }
}

/// A small tmpfs mounted on a directory, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `<dir>/filler` until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_disk_for_status_logs_defers_and_the_queue_manager_resumes_by_itself() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIP: a_full_disk_for_status_logs: needs root to mount a small tmpfs");
        return;
    }
    // Deferred while <dir>/blocked exists, so the queue manager has results to record.
    let decide = "def decide(qid, rcpt, sender, first):\n    if os.path.exists(os.path.join(BASE, 'blocked')):\n        return ('defer', '4.4.1', 'try later')\n    return ('ok', '2.0.0', 'delivered')\n";
    let s = Setup::new(
        "qmgr-enospc",
        decide,
        &[
            ("queue.retry_min", "\"1s\""),
            ("queue.retry_max", "\"2s\""),
            ("queue.scan_interval", "\"1s\""),
        ],
    );
    let Some(_mount) = Mount::tmpfs(&s.spool.status_dir(), "64k") else {
        println!("SKIP: a_full_disk_for_status_logs: cannot mount a tmpfs here");
        return;
    };
    let filler = fill(&s.spool.status_dir());
    let blocked = s.dir.path.join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let mut q = s.start();
    let ids: Vec<String> = (0..3)
        .map(|i| s.inject("a@localhost.test", &["b@example.net"], &format!("m{i}")))
        .collect();
    s.spool.poke();
    q.wait_log("cannot write status log", 30);
    // It keeps trying (each attempt defers again) without exiting or flooding the log.
    let retried = wait_until(Duration::from_secs(30), || {
        q.log_text().matches("status=deferred (try later)").count() >= 6
    });
    assert!(retried, "{}", q.log_text());
    assert_eq!(q.child.try_wait().unwrap(), None, "still running");
    assert_eq!(
        q.log_text().matches("cannot write status log").count(),
        1,
        "logged once per change:\n{}",
        q.log_text()
    );
    for id in &ids {
        assert!(
            s.spool.find(id).is_some(),
            "{id} kept while nothing can be recorded"
        );
    }
    // Space returns: the next deferral is recorded, and said once; then every message
    // is delivered and removed, by itself.
    std::fs::remove_file(filler).unwrap();
    q.wait_log("status logs are writable again", 30);
    std::fs::remove_file(&blocked).unwrap();
    for id in &ids {
        q.wait_log(&format!("{id}: removed"), 60);
    }
    assert_eq!(q.child.try_wait().unwrap(), None, "never exited");
    let _ = q.wait_exit(0);
}
