//! Disk space end to end, on small tmpfs file systems in a private mount namespace:
//!
//! - the spool fills: MAIL FROM gets `452 4.3.1 Insufficient system storage` before any
//!   upload (also for a declared SIZE that would cross `queue.min_free`), the recycling
//!   pool gives its files back, `sloop-sendmail` (75) and `sloop-queue` (53) fail
//!   temporarily with a clear message, the log says so once; when space is freed acceptance and delivery resume
//!   without a restart, and every acknowledged message is delivered once, intact;
//! - the mailbox file system fills: the message is deferred with 4.3.1 (never bounced)
//!   and delivered once when space returns.
//!
//! Each test re-runs itself under `unshare --mount --propagation private` (so the
//! tmpfs mounts vanish with it) and needs root; otherwise it prints a SKIP line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_tests::{free_port, maildir_new, wait_until, Daemon, Smtp, TestDir};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const INSIDE: &str = "SLOOP_TEST_IN_MOUNT_NS";

/// Runs `name` again inside a private mount namespace; true when the caller is that
/// re-run and should do the work.
fn in_private_mount_ns(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: {name}: needs root for a private tmpfs mount");
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name} in its mount namespace:\n{text}"
    );
    assert!(text.contains("1 passed"), "{text}");
    false
}

fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", dir.display());
}

fn free(dir: &Path) -> u64 {
    sloop_common::spool::space::free_bytes(dir).unwrap()
}

/// Fills `dir`'s file system with `<dir>/filler` until `leave` octets are free.
fn fill(dir: &Path, leave: u64) {
    let path = dir.join("filler");
    let have = std::fs::metadata(&path).map_or(0, |m| m.len());
    let target = (have + free(dir)).saturating_sub(leave);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    f.set_len(0).unwrap();
    // tmpfs allocates on write, not on set_len: write the octets.
    let chunk = vec![b'f'; 64 * 1024];
    let mut left = target;
    let mut w = std::io::BufWriter::new(f);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut w, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    std::io::Write::flush(&mut w).unwrap();
}

fn body(tag: &str, size: usize) -> String {
    let line = format!("{tag} 0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n");
    let mut b = format!("Subject: {tag}\r\nMessage-Id: <{tag}@client.test>\r\n\r\n");
    while b.len() < size {
        b.push_str(&line);
    }
    b
}

/// Sends one message; returns the final reply code.
fn send(port: u16, tag: &str, size: usize) -> u16 {
    let mut c = Smtp::connect(port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    assert_eq!(c.cmd("MAIL FROM:<a@client.test>"), 250);
    assert_eq!(c.cmd("RCPT TO:<bob@localhost.test>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send_raw(body(tag, size).as_bytes());
    c.send_raw(b".\r\n");
    let code = c.code();
    c.cmd("QUIT");
    code
}

/// The delivered messages carrying `tag`.
fn delivered(dir: &TestDir, tag: &str) -> usize {
    maildir_new(&dir.mail(), "localhost.test", "bob")
        .iter()
        .filter(|p| {
            // Intact: every line of the body, none lost or torn.
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let line = format!("{tag} 0123456789abcdefghijklmnopqrstuvwxyz0123456789");
            let want = body(tag, 200 * 1024).matches(&line).count();
            text.contains(&format!("Message-Id: <{tag}@client.test>"))
                && text.lines().filter(|l| *l == line).count() == want
        })
        .count()
}

fn pooled(dir: &TestDir) -> usize {
    sloop_tests::files_under(&dir.spool().join("free")).len()
}

#[test]
fn a_full_spool_refuses_at_mail_from_and_recovers_without_a_restart() {
    let name = "a_full_spool_refuses_at_mail_from_and_recovers_without_a_restart";
    if !in_private_mount_ns(name) {
        return;
    }
    let dir = TestDir::new("disk-spool");
    mount_tmpfs(&dir.spool(), "4m");
    let port = free_port();
    // min_free: 1.5 x 1M.
    let cfg = dir.write_config(port, &[("smtpd.max_message_size", "\"1M\"")], "");
    let d = Daemon::start(&cfg, port);
    let spool = dir.spool();

    // Mail flows; finished queue files are pooled (a small share of the free space:
    // the queue manager's count of the pool is an upper bound renewed every second, so
    // a few messages may be unlinked before one is kept).
    let mut sent = 0;
    while pooled(&dir) == 0 && sent < 30 {
        assert_eq!(send(port, &format!("before{sent}"), 200 * 1024), 250);
        sent += 1;
        let tag = format!("before{}", sent - 1);
        assert!(wait_until(Duration::from_secs(30), || delivered(
            &dir, &tag
        ) == 1));
        wait_until(Duration::from_millis(300), || pooled(&dir) > 0);
    }
    assert!(
        pooled(&dir) > 0,
        "nothing pooled after {sent} messages\n{}",
        d.log_text()
    );

    // A declared SIZE that would cross queue.min_free is refused; no SIZE is fine.
    // 2.06 MiB free (plus the pooled files), 1.5 MiB to keep: 900,000 octets do not fit.
    fill(&spool, 2 * 1024 * 1024 + 64 * 1024);
    let mut c = Smtp::connect(port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    c.send("MAIL FROM:<a@client.test> SIZE=900000");
    assert_eq!(c.reply(), vec!["452 4.3.1 Insufficient system storage"]);
    assert_eq!(c.cmd("MAIL FROM:<a@client.test> SIZE=1000"), 250);
    assert_eq!(c.cmd("RSET"), 250);

    // Below queue.min_free: 452 4.3.1 at MAIL FROM, before any upload; the pool has
    // given its files back.
    fill(&spool, 1024 * 1024);
    c.send("MAIL FROM:<a@client.test>");
    assert_eq!(c.reply(), vec!["452 4.3.1 Insufficient system storage"]);
    assert_eq!(pooled(&dir), 0, "the pool gives its files back first");
    for _ in 0..3 {
        let mut other = Smtp::connect(port);
        assert_eq!(other.code(), 220);
        assert_eq!(other.cmd("EHLO client.test"), 250);
        assert_eq!(other.cmd("MAIL FROM:<a@client.test>"), 452);
        assert_eq!(other.cmd("QUIT"), 221);
    }
    let out = Command::new(sloop_tests::bin("sloop-sendmail"))
        .args(["-C"])
        .arg(&cfg)
        .arg("bob@localhost.test")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("insufficient system storage"), "{err}");
    // sloop-queue run directly (scripts, a foreign smtpd) refuses as well: qmail-queue's
    // temporary write error, nothing written.
    let mut q = Command::new(sloop_tests::bin("sloop-queue"))
        .args(["-c"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(q.stdin.take());
    drop(q.stdout.take());
    let out = q.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(53), "{err}");
    assert!(err.contains("insufficient system storage"), "{err}");
    let log = d.log_text();
    assert_eq!(
        log.matches("spool file system below queue.min_free")
            .count(),
        1,
        "{log}"
    );

    // Space comes back: acceptance and delivery resume, no restart.
    std::fs::remove_file(spool.join("filler")).unwrap();
    assert_eq!(c.cmd("MAIL FROM:<a@client.test>"), 250);
    assert_eq!(c.cmd("QUIT"), 221);
    for i in 0..3 {
        assert_eq!(send(port, &format!("after{i}"), 200 * 1024), 250);
    }
    assert!(
        wait_until(Duration::from_secs(30), || (0..3)
            .all(|i| delivered(&dir, &format!("after{i}")) == 1)),
        "{}",
        d.log_text()
    );
    for i in 0..sent {
        assert_eq!(delivered(&dir, &format!("before{i}")), 1);
    }
    let log = d.log_text();
    assert_eq!(
        log.matches("spool file system has room again").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("started sloop-qmgr").count(),
        1,
        "no restart: {log}"
    );
}

#[test]
fn a_full_mailbox_file_system_defers_and_delivers_once_when_space_returns() {
    let name = "a_full_mailbox_file_system_defers_and_delivers_once_when_space_returns";
    if !in_private_mount_ns(name) {
        return;
    }
    let dir = TestDir::new("disk-mailbox");
    mount_tmpfs(&dir.mail(), "1m");
    let port = free_port();
    let cfg = dir.write_config(port, &[], "");
    let d = Daemon::start(&cfg, port);
    fill(&dir.mail(), 64 * 1024);
    assert_eq!(send(port, "full", 200 * 1024), 250);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let log = d.log_text();
            log.contains("dsn=4.3.1") && log.contains("status=deferred")
        }),
        "{}",
        d.log_text()
    );
    assert_eq!(delivered(&dir, "full"), 0);
    std::fs::remove_file(dir.mail().join("filler")).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || delivered(&dir, "full") == 1),
        "{}",
        d.log_text()
    );
    // Once, and never bounced.
    assert!(wait_until(Duration::from_secs(5), || d
        .log_text()
        .contains("removed")));
    assert_eq!(delivered(&dir, "full"), 1);
    let log = d.log_text();
    assert!(!log.contains("status=bounced"), "{log}");
}
