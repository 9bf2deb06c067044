//! The privilege model end to end (docs/security.md), as root with `server.user` set:
//!
//! - a symlink planted in the spool and the run directory, then a reload and a
//!   restart, changes nothing outside the spool (sloopd used to chown whatever it
//!   found, following symlinks);
//! - `sendmail` run by root, with an empty `free/` pool, is delivered and its queue
//!   file was never root's (it used to be `root:root 0600`, unreadable by the queue
//!   manager, stuck for ever);
//! - `sendmail` run by an ordinary user (`nobody`) exits 0 and is delivered through
//!   the set-group-ID `sloop-drop` and `sloop-pickup`; `mailq` and `sendmail -q` work
//!   for that user; a corrupt maildrop file lands in `corrupt/` with a log line (it
//!   used to fail with `Permission denied`, exit 75).
//!
//! They need root (to start sloopd as root and to run commands as other users); run
//! as anybody else they print SKIP and return.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::sys::signal::Signal;
use nix::unistd::{Group, Uid, User};
use sloop_tests::{bin, files_under, free_port, maildir_new, wait_until, Daemon, TestDir};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const DELIVERY: Duration = Duration::from_secs(30);
const DROP_GROUP: &str = "sloopdrop";

fn root_or_skip(test: &str) -> bool {
    if Uid::effective().is_root() {
        return true;
    }
    eprintln!("SKIP: {test}: needs root (CI runs the tests as root)");
    false
}

fn uid_of(user: &str) -> u32 {
    User::from_name(user)
        .unwrap()
        .expect("user exists")
        .uid
        .as_raw()
}

/// Runs `cmd` with /bin/sh as `user`, feeding `stdin`.
fn su(user: &str, cmd: &str, stdin: &[u8]) -> Output {
    let mut child = Command::new("su")
        .args(["-s", "/bin/sh", user, "-c", cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("su");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status={:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The submission group, created when missing (as the package's postinst does).
fn drop_group() -> u32 {
    if Group::from_name(DROP_GROUP).unwrap().is_none() {
        let st = Command::new("groupadd")
            .args(["--system", DROP_GROUP])
            .status()
            .expect("groupadd");
        // Another test may have created it meanwhile.
        assert!(
            st.success() || Group::from_name(DROP_GROUP).unwrap().is_some(),
            "groupadd {DROP_GROUP}"
        );
    }
    Group::from_name(DROP_GROUP).unwrap().unwrap().gid.as_raw()
}

/// A bin dir for this test: links to the built programs, and a copy of `sloop-drop`
/// set-group-ID to the submission group, mode 2755 (as the package installs it).
fn bin_dir_with_setgid_drop(td: &TestDir) -> PathBuf {
    let dir = td.path.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "sloopd",
        "sloop-smtpd",
        "sloop-qmgr",
        "sloop-deliver",
        "sloop-pickup",
        "sloop-queue",
        "sloop-sendmail",
        "sloop",
    ] {
        std::os::unix::fs::symlink(bin(name), dir.join(name)).unwrap();
    }
    let drop = dir.join("sloop-drop");
    std::fs::copy(bin("sloop-drop"), &drop).unwrap();
    let gid = drop_group();
    std::os::unix::fs::chown(&drop, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o2755)).unwrap();
    dir
}

fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

const MSG: &[u8] = b"Subject: privilege test\n\nhello from a local user\n";

#[test]
fn a_symlink_planted_in_the_spool_or_run_dir_is_never_followed() {
    if !root_or_skip("a_symlink_planted_in_the_spool_or_run_dir_is_never_followed") {
        return;
    }
    let td = TestDir::new("priv-symlink");
    let port = free_port();
    let cfg = td.write_config(port, &[("server.user", "\"nobody\"")], "");
    let victim = td.path.join("victim");
    std::fs::write(&victim, "not the spool's\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&victim).unwrap();
    let d = Daemon::start(&cfg, port);
    // What a process running as server.user could plant (and, for the spool root and
    // the run dir, could plant while they were its own).
    for link in [
        td.spool().join("evil"),
        td.spool().join("incoming/evil"),
        td.spool().join("free/0/evil"),
        td.spool().join("maildrop/evil"),
        td.run().join("evil"),
        td.run().join("clients/evil"),
    ] {
        if link.parent().is_some_and(Path::is_dir) {
            std::os::unix::fs::symlink(&victim, &link).unwrap();
        }
    }
    d.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(15), || d
            .log_text()
            .contains("configuration reloaded")),
        "{}",
        d.log_text()
    );
    drop(d);
    let d = Daemon::start(&cfg, port);
    let after = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (before.uid(), before.gid(), before.mode()),
        "the victim's owner or mode changed; log:\n{}",
        d.log_text()
    );
    // The roots stay root's; what the children write is server.user's.
    let nobody = uid_of("nobody");
    for (path, owner) in [
        (td.spool(), 0),
        (td.run(), 0),
        (td.spool().join("incoming"), nobody),
        (td.run().join("clients"), nobody),
    ] {
        assert_eq!(
            std::fs::metadata(&path).unwrap().uid(),
            owner,
            "{}",
            path.display()
        );
    }
}

#[test]
fn sendmail_as_root_is_delivered_and_its_queue_file_is_never_roots() {
    if !root_or_skip("sendmail_as_root_is_delivered_and_its_queue_file_is_never_roots") {
        return;
    }
    let td = TestDir::new("priv-root-sendmail");
    let port = free_port();
    let bin = bin_dir_with_setgid_drop(&td);
    let cfg = td.write_config(
        port,
        &[
            ("server.user", "\"nobody\""),
            ("server.bin_dir", &quoted(&bin)),
        ],
        "",
    );
    let d = Daemon::start(&cfg, port);
    let free = files_under(&td.spool().join("free"));
    assert!(free.is_empty(), "the pool starts empty: {free:?}");
    let cmd = format!(
        "{} -C {} -i rootmail@localhost.test",
        bin.join("sloop-sendmail").display(),
        cfg.display()
    );
    let out = su("root", &cmd, MSG);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(DELIVERY, || maildir_new(
            &td.mail(),
            "localhost.test",
            "rootmail"
        )
        .len()
            == 1),
        "not delivered; log:\n{}",
        d.log_text()
    );
    // The pickup logs just after its commit, which the delivery may overtake.
    let picked = "uid=0 from=<root@sloop.test>";
    assert!(
        wait_until(DELIVERY, || d.log_text().contains(picked)),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(!log.contains("Permission denied"), "{log}");
    // The delivered queue file is kept for reuse in free/: it, and every other file in
    // the spool, belongs to server.user.
    let nobody = uid_of("nobody");
    for f in files_under(&td.spool()) {
        let m = std::fs::symlink_metadata(&f).unwrap();
        if m.file_type().is_file() {
            assert_eq!(m.uid(), nobody, "{} is not server.user's", f.display());
        }
    }
}

#[test]
fn sendmail_and_mailq_work_for_an_ordinary_user_and_corrupt_drops_are_kept() {
    if !root_or_skip("sendmail_and_mailq_work_for_an_ordinary_user_and_corrupt_drops_are_kept") {
        return;
    }
    let td = TestDir::new("priv-user-sendmail");
    let port = free_port();
    let bin = bin_dir_with_setgid_drop(&td);
    // Nothing listens on the smarthost's port: remote mail stays queued (deferred).
    let dead = free_port();
    let cfg = td.write_config(
        port,
        &[
            ("server.user", "\"daemon\""),
            ("server.bin_dir", &quoted(&bin)),
            ("remote.smarthost", &format!("\"127.0.0.1:{dead}\"")),
        ],
        "",
    );
    let d = Daemon::start(&cfg, port);
    let sendmail = bin.join("sloop-sendmail");
    let send = |rcpt: &str| {
        let cmd = format!("{} -C {} -i {rcpt}", sendmail.display(), cfg.display());
        su("nobody", &cmd, MSG)
    };
    let out = send("usermail@localhost.test");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(DELIVERY, || maildir_new(
            &td.mail(),
            "localhost.test",
            "usermail"
        )
        .len()
            == 1),
        "not delivered; log:\n{}",
        d.log_text()
    );
    let nobody = uid_of("nobody");
    let picked = format!("uid={nobody} from=<nobody@sloop.test>");
    assert!(
        wait_until(DELIVERY, || d.log_text().contains(&picked)),
        "{}",
        d.log_text()
    );

    // mailq as that user lists a queued message (through sloop-drop and sloop-pickup).
    let out = send("far@remote.test");
    assert!(out.status.success(), "{}", text(&out));
    let id = {
        let mut id = None;
        wait_until(DELIVERY, || {
            let q = Command::new(bin.join("sloop"))
                .args(["-c", cfg.to_str().unwrap(), "queue", "list", "--json"])
                .output()
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_slice(&q.stdout).unwrap_or(serde_json::Value::Null);
            id = v.as_array().into_iter().flatten().find_map(|e| {
                e.to_string()
                    .contains("far@remote.test")
                    .then(|| e["id"].as_str().unwrap_or_default().to_string())
            });
            id.is_some()
        });
        id.unwrap_or_else(|| panic!("never queued; log:\n{}", d.log_text()))
    };
    let mailq = format!("{} -C {} -bp", sendmail.display(), cfg.display());
    let out = su("nobody", &mailq, b"");
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&id) && listing.contains("far@remote.test"),
        "{}",
        text(&out)
    );

    // `sendmail -q` as that user: sloop-pickup flushes on its behalf (Postfix lets any
    // local user flush), logging who asked.
    let deferred = td.spool().join("deferred");
    assert!(
        wait_until(DELIVERY, || std::fs::read_dir(&deferred)
            .map(|d| d.count() > 0)
            .unwrap_or(false)),
        "never deferred; log:\n{}",
        d.log_text()
    );
    let flush = format!("{} -C {} -q", sendmail.display(), cfg.display());
    let out = su("nobody", &flush, b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deferred message(s) queued for delivery"),
        "{}",
        text(&out)
    );
    let asked = format!("flush requested by uid={nobody}");
    assert!(
        wait_until(DELIVERY, || d.log_text().contains(&asked)),
        "{}",
        d.log_text()
    );

    // A maildrop file that does not parse goes to corrupt/, with a log line.
    let bad = "0000000000000000000001";
    let path = td.spool().join("maildrop").join(bad);
    std::fs::write(&path, b"this is not a queue file\n").unwrap();
    std::os::unix::fs::chown(&path, Some(nobody), Some(drop_group())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    // The warning is written just after the move: wait for both.
    let warning = format!("{bad}: uid={nobody}: corrupt maildrop file");
    assert!(
        wait_until(DELIVERY, || td.spool().join("corrupt").join(bad).exists()
            && !path.exists()
            && d.log_text().contains(&warning)),
        "{}",
        d.log_text()
    );
    // The spool itself stays closed to that user.
    let peek = su(
        "nobody",
        &format!("ls {}", td.spool().join("incoming").display()),
        b"",
    );
    assert!(!peek.status.success(), "{}", text(&peek));
}

#[test]
fn sloop_queue_run_by_root_gives_the_queue_file_to_the_spool_owner() {
    if !root_or_skip("sloop_queue_run_by_root_gives_the_queue_file_to_the_spool_owner") {
        return;
    }
    let td = TestDir::new("priv-root-queue");
    let cfg = td.write_config(free_port(), &[], "");
    let spool = sloop_common::spool::Spool::new(td.spool());
    spool.ensure_layout().unwrap();
    let nobody = uid_of("nobody");
    for entry in ["tmp", "incoming"] {
        std::os::unix::fs::chown(td.spool().join(entry), Some(nobody), Some(nobody)).unwrap();
    }
    // Close-on-exec, so the child does not hold the write end open itself.
    let (env_read, env_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut child = Command::new(bin("sloop-queue"))
        .args(["-c", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(env_read))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(MSG).unwrap();
    std::fs::File::from(env_write)
        .write_all(b"Froot@sloop.test\0Tx@localhost.test\0\0")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let queued = files_under(&td.spool().join("incoming"));
    assert_eq!(queued.len(), 1, "{queued:?}");
    let m = std::fs::metadata(&queued[0]).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (nobody, 0o600));
}
