//! Local system users (`local.system_users`), end to end as an operator runs it:
//! `sloopd` as root with an unprivileged `server.user`, mail by SMTP to real accounts
//! made with `useradd -m`. Checks: the mbox in `local.mail_spool_dir` is owned by the
//! account, group `mail`, mode 0660, and holds the message intact; `~/.forward` sends
//! on to another address and to a `|command` that runs as the account; a `|command` in
//! a root-owned aliases file runs as `nobody`; `postmaster: root` lands in root's
//! mailbox; a symlinked `.forward` is refused and deferred with a log line, never
//! followed; the spawner is the only child left as root.
//!
//! Needs root (CI runs the tests as root); prints SKIP otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_tests::{free_port, wait_until, Daemon, Smtp, TestDir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A local account made for one test, removed (with its home) on drop.
struct Account {
    name: String,
    home: PathBuf,
    uid: u32,
}

impl Account {
    fn create(tag: &str) -> Account {
        let name = format!("sl{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").args(["-r", &name]).output();
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let pw = nix::unistd::User::from_name(&name).unwrap().unwrap();
        Account {
            name,
            home: pw.dir,
            uid: pw.uid.as_raw(),
        }
    }

    /// Writes a file in the home directory owned by the account.
    fn write(&self, file: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.home.join(file);
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), None).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .output();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

fn send(port: u16, rcpt: &str, subject: &str) {
    let mut s = Smtp::connect(port);
    assert_eq!(s.code(), 220);
    assert_eq!(s.cmd("EHLO client.test"), 250);
    assert_eq!(s.cmd("MAIL FROM:<alice@far.test>"), 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<{rcpt}>")), 250, "RCPT {rcpt}");
    assert_eq!(s.cmd("DATA"), 354);
    s.send_raw(
        format!(
            "From: alice@far.test\r\nSubject: {subject}\r\n\r\nFrom the start of a line.\r\nbody of {subject}\r\n.\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(s.code(), 250);
    assert_eq!(s.cmd("QUIT"), 221);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn system_users_get_mbox_forward_and_commands_as_themselves() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: system_users_get_mbox_forward_and_commands_as_themselves: needs root");
        return;
    }
    let dir = TestDir::new("local-users");
    let daemon_user = Account::create("d");
    let user = Account::create("u");
    let spool_dir = dir.path.join("varmail");
    let out = dir.path.join("out");
    for d in [&spool_dir, &out] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let aliases = dir.path.join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "postmaster: root\nrun: \"|id -u > {}/alias-uid\"\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&aliases, std::fs::Permissions::from_mode(0o644)).unwrap();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let port = free_port();
    let server_user = format!("{:?}", daemon_user.name);
    let config = dir.write_config(
        port,
        &[
            ("server.user", &server_user),
            ("domains.local", "[\"@hostname\"]"),
            ("local.mailboxes", "[]"),
            ("local.system_users", "true"),
            ("local.mail_spool_dir", &q(&spool_dir)),
            ("local.aliases", &q(&aliases)),
        ],
        "",
    );
    let d = Daemon::start(&config, port);
    let log_has = |s: &str| wait_until(Duration::from_secs(30), || d.log_text().contains(s));
    let mbox = spool_dir.join(&user.name);
    let rcpt = format!("{}@sloop.test", user.name);

    // 1. Plain delivery to the account's mbox.
    send(port, &rcpt, "first");
    assert!(
        wait_until(Duration::from_secs(30), || read(&mbox)
            .contains("body of first")),
        "{}",
        d.log_text()
    );
    let m = std::fs::metadata(&mbox).unwrap();
    assert_eq!(m.uid(), user.uid, "mbox owner");
    assert_eq!(m.gid(), 8, "mbox group mail");
    assert_eq!(m.mode() & 0o7777, 0o660, "mbox mode");
    let text = read(&mbox);
    assert!(text.starts_with("From alice@far.test "), "{text}");
    assert!(text.contains("\n>From the start of a line.\n"), "{text}");
    assert!(text.contains(&format!("Delivered-To: {rcpt}")), "{text}");
    assert!(log_has(&format!("to=<{rcpt}>, relay=local")));

    // 2. ~/.forward: the mailbox (\user) and a command, which runs as the account.
    let uid_file = user.home.join("forward-uid");
    user.write(
        ".forward",
        &format!("\\{}, \"|id -u > {}\"\n", user.name, uid_file.display()),
        0o644,
    );
    send(port, &rcpt, "second");
    assert!(
        wait_until(Duration::from_secs(30), || read(&mbox)
            .contains("body of second")),
        "{}",
        d.log_text()
    );
    assert!(wait_until(Duration::from_secs(10), || !read(&uid_file).is_empty()));
    assert_eq!(
        read(&uid_file).trim(),
        user.uid.to_string(),
        ".forward command uid"
    );

    // 3. A command in the root-owned aliases file runs as nobody.
    send(port, "run@sloop.test", "third");
    let alias_uid = out.join("alias-uid");
    assert!(
        wait_until(Duration::from_secs(30), || !read(&alias_uid).is_empty()),
        "{}",
        d.log_text()
    );
    assert_eq!(read(&alias_uid).trim(), uid_of("nobody").to_string());

    // 4. postmaster: root lands in root's mailbox, owned by root.
    send(port, "postmaster@sloop.test", "fourth");
    let root_mbox = spool_dir.join("root");
    assert!(
        wait_until(Duration::from_secs(30), || read(&root_mbox)
            .contains("body of fourth")),
        "{}",
        d.log_text()
    );
    assert_eq!(std::fs::metadata(&root_mbox).unwrap().uid(), 0);

    // 5. A symlinked .forward is refused: deferred with a line saying why, not followed.
    std::fs::remove_file(user.home.join(".forward")).unwrap();
    let target = user.write("elsewhere", "somebody@far.test\n", 0o644);
    std::os::unix::fs::symlink(&target, user.home.join(".forward")).unwrap();
    send(port, &rcpt, "fifth");
    assert!(
        log_has(".forward: is a symbolic link; refused"),
        "{}",
        d.log_text()
    );
    assert!(log_has("status=deferred"), "{}", d.log_text());
    assert!(!read(&mbox).contains("body of fifth"));

    // Every child but the spawner runs as server.user.
    let ps = Command::new("ps")
        .args(["-o", "user=,args=", "--ppid", &d.pid().to_string()])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    for line in ps.lines() {
        let (who, args) = line.trim().split_once(' ').unwrap();
        if args.contains("spawner") {
            assert_eq!(who, "root", "{ps}");
        } else {
            assert!(
                daemon_user.name.starts_with(who.trim_end_matches('+')),
                "{ps}"
            );
        }
    }
    assert!(ps.contains("spawner"), "{ps}");
}

#[test]
fn maildir_in_home_forward_elsewhere_and_symlinked_include() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: maildir_in_home_forward_elsewhere_and_symlinked_include: needs root");
        return;
    }
    let dir = TestDir::new("local-users-md");
    let daemon_user = Account::create("e");
    let user = Account::create("m");
    let traveller = Account::create("t");
    let real_list = dir.path.join("real.list");
    std::fs::write(&real_list, format!("{}\n", user.name)).unwrap();
    let link_list = dir.path.join("link.list");
    std::os::unix::fs::symlink(&real_list, &link_list).unwrap();
    let aliases = dir.path.join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "viainclude: :include:{}\nviareal: :include:{}\n",
            link_list.display(),
            real_list.display()
        ),
    )
    .unwrap();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let port = free_port();
    let dead = free_port();
    let server_user = format!("{:?}", daemon_user.name);
    let config = dir.write_config(
        port,
        &[
            ("server.user", &server_user),
            ("domains.local", "[\"@hostname\"]"),
            ("local.mailboxes", "[]"),
            ("local.system_users", "true"),
            ("local.system_mailbox", "\"maildir\""),
            ("local.aliases", &q(&aliases)),
            (
                "remote.routes",
                &format!("{{ \"far.test\" = \"127.0.0.1:{dead}\" }}"),
            ),
        ],
        "",
    );
    // The traveller forwards everything to an address elsewhere.
    traveller.write(".forward", "trav@far.test\n", 0o600);
    let d = Daemon::start(&config, port);
    let new_dir = user.home.join("Maildir/new");
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);

    // Maildir in the home, created and written as the account.
    send(port, &format!("{}@sloop.test", user.name), "md");
    assert!(
        wait_until(Duration::from_secs(30), || count(&new_dir) == 1),
        "{}",
        d.log_text()
    );
    for p in [user.home.join("Maildir"), new_dir.clone()] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (user.uid, 0o700), "{p:?}");
    }
    let file = std::fs::read_dir(&new_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), user.uid);
    assert!(read(&file).contains("body of md"));

    // An include read through a real file works; through a symlink it is refused.
    send(port, "viareal@sloop.test", "real");
    assert!(wait_until(Duration::from_secs(30), || count(&new_dir) == 2));
    send(port, "viainclude@sloop.test", "link");
    assert!(
        wait_until(Duration::from_secs(30), || d
            .log_text()
            .contains("link.list: is a symbolic link; refused")),
        "{}",
        d.log_text()
    );
    assert_eq!(count(&new_dir), 2);

    // .forward elsewhere: a new message in the queue, owned by server.user (the queue
    // manager can read it), for the remote address.
    send(port, &format!("{}@sloop.test", traveller.name), "travel");
    assert!(
        wait_until(Duration::from_secs(30), || d
            .log_text()
            .contains("to=<trav@far.test>")),
        "{}",
        d.log_text()
    );
    let spool = sloop_common::spool::Spool::new(dir.spool());
    let mut owners = Vec::new();
    for state in [
        sloop_common::spool::QueueState::Deferred,
        sloop_common::spool::QueueState::Active,
        sloop_common::spool::QueueState::Incoming,
    ] {
        for id in spool.list(state).unwrap() {
            owners.push(std::fs::metadata(spool.path(state, &id)).unwrap().uid());
        }
    }
    assert!(!owners.is_empty(), "{}", d.log_text());
    assert!(owners.iter().all(|&u| u == daemon_user.uid), "{owners:?}");
}

#[test]
fn sendmail_to_bare_root_reaches_roots_alias_target() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: sendmail_to_bare_root_reaches_roots_alias_target: needs root");
        return;
    }
    let dir = TestDir::new("local-users-root");
    let user = Account::create("r");
    let spool_dir = dir.path.join("varmail");
    std::fs::create_dir_all(&spool_dir).unwrap();
    std::fs::set_permissions(&spool_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let aliases = dir.path.join("aliases");
    std::fs::write(&aliases, format!("postmaster: root\nroot: {}\n", user.name)).unwrap();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let port = free_port();
    let config = dir.write_config(
        port,
        &[
            ("domains.local", "[\"@hostname\"]"),
            ("local.mailboxes", "[]"),
            ("local.system_users", "true"),
            ("local.mail_spool_dir", &q(&spool_dir)),
            ("local.aliases", &q(&aliases)),
        ],
        "",
    );
    let d = Daemon::start(&config, port);
    let mut sm = Command::new(sloop_tests::bin("sloop-sendmail"))
        .arg("-C")
        .arg(&config)
        .arg("root")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut sm.stdin.take().unwrap(),
        b"Subject: cron output\n\nbody of cron\n",
    )
    .unwrap();
    assert!(sm.wait().unwrap().success());
    let mbox = spool_dir.join(&user.name);
    assert!(
        wait_until(Duration::from_secs(30), || read(&mbox)
            .contains("body of cron")),
        "{}",
        d.log_text()
    );
    assert!(read(&mbox).contains("Subject: cron output"));
    assert!(
        wait_until(Duration::from_secs(10), || d
            .log_text()
            .contains("to=<root@sloop.test>, relay=local")),
        "{}",
        d.log_text()
    );
    assert_eq!(std::fs::metadata(&mbox).unwrap().uid(), user.uid);
}

/// Pids of the processes whose parent is `ppid`, with their real uid.
fn children_of(ppid: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
        };
        if field("PPid:") == Some(ppid) {
            out.push((pid, field("Uid:").unwrap_or(u32::MAX)));
        }
    }
    out
}

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

/// A child killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
