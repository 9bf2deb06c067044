//! The local spawner and the unprivileged fallback: the spawner's socket belongs to
//! `server.user` (0600), a stand-in's end ends its root worker and vice versa, another
//! user gets no root worker; an agent that is not root never runs another account's
//! `.forward`; `newaliases` works for any user. The root workers run at `queue.nice`.
//!
//! Needs root (CI runs the tests as root); prints SKIP otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_support;

use local_support::{read, send, uid_of, Account, KillOnDrop};
use sloop_tests::{children_of, free_port, nice_of, wait_until, TestDir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_spawner_runs_root_workers_only_for_the_server_user_and_ties_their_lives() {
    use std::process::{Child, Stdio};
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: the_spawner_runs_root_workers...: needs root");
        return;
    }
    let dir = TestDir::new("local-spawner");
    let daemon_user = Account::create("p");
    std::fs::create_dir_all(dir.run()).unwrap();
    let server_user = format!("{:?}", daemon_user.name);
    let config = dir.write_config(
        free_port(),
        &[
            ("server.user", &server_user),
            ("local.system_users", "true"),
            ("queue.nice", "4"),
        ],
        "",
    );
    let sock = dir.run().join("local.sock");
    let log = dir.path.join("spawner.log");
    let spawner = KillOnDrop(
        Command::new(sloop_tests::bin("sloop-deliver"))
            .args(["spawner", "-c"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(10), || sock.exists()));
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (daemon_user.uid, 0o600));
    let stand_in = |uid: u32| -> Child {
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .unwrap()
            .unwrap()
            .gid
            .as_raw();
        Command::new(sloop_tests::bin("sloop-deliver"))
            .args(["local", "-c"])
            .arg(&config)
            .env("SLOOP_LOCAL_SPAWNER", &sock)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
            .spawn()
            .unwrap()
    };
    use std::os::unix::process::CommandExt;
    let spawner_pid = spawner.0.id();
    let root_workers = || {
        children_of(spawner_pid)
            .into_iter()
            .filter(|&(_, uid)| uid == 0)
            .count()
    };
    let wait_exit = |c: &mut Child| {
        let mut status = None;
        wait_until(Duration::from_secs(10), || {
            status = c.try_wait().unwrap();
            status.is_some()
        });
        status
    };

    // EOF on the worker's stdin: the root worker exits 0, and so does the stand-in.
    let mut a = stand_in(daemon_user.uid);
    assert!(wait_until(Duration::from_secs(10), || root_workers() == 1));
    // The root worker runs at the queue manager's priority, as the spawner does.
    let own = nice_of(std::process::id()).unwrap();
    let root_nice: Vec<Option<i32>> = children_of(spawner_pid)
        .into_iter()
        .filter(|&(_, uid)| uid == 0)
        .map(|(pid, _)| nice_of(pid))
        .collect();
    let want = (own + 4).min(19);
    assert_eq!(root_nice, vec![Some(want)], "{}", read(&log));
    assert_eq!(nice_of(spawner_pid), Some(want));
    drop(a.stdin.take());
    let status = wait_exit(&mut a).expect("stand-in exits");
    assert_eq!(status.code(), Some(0));
    assert!(wait_until(Duration::from_secs(10), || root_workers() == 0));

    // Killing the stand-in (the queue manager's timeout) kills the root worker.
    let mut b = stand_in(daemon_user.uid);
    assert!(wait_until(Duration::from_secs(10), || root_workers() == 1));
    b.kill().unwrap();
    b.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || root_workers() == 0),
        "{}",
        read(&log)
    );

    // Another user cannot even open the socket (0600, server.user's; the spawner also
    // checks SO_PEERCRED): no root worker; it delivers unprivileged, and says so.
    let mut c = stand_in(uid_of("nobody"));
    assert!(
        wait_until(Duration::from_secs(10), || read(&log)
            .contains("cannot be reached")),
        "{}",
        read(&log)
    );
    assert_eq!(root_workers(), 0);
    drop(c.stdin.take());
    assert_eq!(wait_exit(&mut c).expect("exits").code(), Some(0));
}

#[test]
fn newaliases_counts_entries_and_reports_errors_for_any_user() {
    use std::os::unix::process::CommandExt;
    let dir = TestDir::new("newaliases");
    let aliases = dir.path.join("aliases");
    std::fs::write(&aliases, "# c\npostmaster: root\nroot: alice,\n  bob\n").unwrap();
    std::fs::set_permissions(&aliases, std::fs::Permissions::from_mode(0o644)).unwrap();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let config = dir.write_config(free_port(), &[("local.aliases", &q(&aliases))], "");
    let link = dir.path.join("newaliases");
    std::os::unix::fs::symlink(sloop_tests::bin("sloop-sendmail"), &link).unwrap();
    let run = |prog: &Path, args: &[&str]| {
        let mut cmd = Command::new(prog);
        cmd.args(args).env("SLOOP_CONFIG", &config);
        if nix::unistd::geteuid().is_root() {
            cmd.uid(uid_of("nobody"));
        }
        cmd.output().unwrap()
    };
    let want = format!("newaliases: {}: 2 aliases\n", aliases.display());
    for out in [
        run(&link, &[]),
        run(&sloop_tests::bin("sloop-sendmail"), &["-bi"]),
    ] {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    std::fs::write(&aliases, "postmaster: root\nno colon\n").unwrap();
    let out = run(&link, &[]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2: expected"), "{err}");
}

#[test]
fn an_unprivileged_agent_never_runs_another_accounts_forward() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: an_unprivileged_agent_never_runs_another_accounts_forward: needs root");
        return;
    }
    let dir = TestDir::new("local-users-unpriv");
    let runner = Account::create("x");
    let other = Account::create("o");
    let spool_dir = dir.path.join("varmail");
    std::fs::create_dir_all(&spool_dir).unwrap();
    std::fs::set_permissions(&spool_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(&dir.path, Some(runner.uid), None).unwrap();
    // Somewhere the runner could write, so a command run as it would leave a trace.
    let ran = spool_dir.join("ran");
    other.write(
        ".forward",
        &format!("\"|touch {}\"\n", ran.display()),
        0o644,
    );
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let port = free_port();
    let config = dir.write_config(
        port,
        &[
            ("domains.local", "[\"@hostname\"]"),
            ("local.mailboxes", "[]"),
            ("local.system_users", "true"),
            ("local.mail_spool_dir", &q(&spool_dir)),
        ],
        "",
    );
    let log = dir.path.join("sloopd.log");
    let gid = nix::unistd::User::from_name(&runner.name)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let _sloopd = KillOnDrop(
        Command::new(sloop_tests::bin("sloopd"))
            .arg("-c")
            .arg(&config)
            .uid(runner.uid)
            .gid(gid)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    // Its own account: delivered, as itself.
    send(port, &format!("{}@sloop.test", runner.name), "own");
    let own = spool_dir.join(&runner.name);
    assert!(
        wait_until(Duration::from_secs(30), || read(&own)
            .contains("body of own")),
        "{}",
        read(&log)
    );
    // Another account's .forward command: deferred, saying why; never run.
    send(port, &format!("{}@sloop.test", other.name), "other");
    assert!(
        wait_until(Duration::from_secs(30), || read(&log).contains(&format!(
            "cannot deliver as {}: the local delivery agent does not run as root",
            other.name
        ))),
        "{}",
        read(&log)
    );
    assert!(
        read(&log).contains("no local spawner runs"),
        "{}",
        read(&log)
    );
    assert!(!ran.exists());
}
