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

mod local_support;

use local_support::{read, send, uid_of, Account};
use sloop_tests::{free_port, wait_until, Daemon, TestDir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
