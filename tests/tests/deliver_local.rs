//! `sloop-deliver local` on its own: jobs written to its stdin as `sloop-qmgr` would,
//! results read from its stdout, mailboxes checked on disk and with Python's `mailbox`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deliver_support;

use deliver_support::{queue, Worker};
use sloop_common::delivery_proto::Transport::Local;
use sloop_common::spool::status::Outcome;
use sloop_tests::{files_under, free_port, maildir_new, python, TestDir};
use std::os::unix::fs::PermissionsExt;

const MSG: &[u8] =
    b"From: a@x.test\r\nSubject: hello\r\n\r\nFrom the start\r\n.dot line\r\nbye\r\n";

fn trace(sender: &str, rcpt: &str) -> Vec<u8> {
    format!("Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n").into_bytes()
}

#[test]
fn maildir_delivery_is_byte_exact_and_readable_by_python() {
    let dir = TestDir::new("deliver-maildir");
    let cfg = dir.write_config(free_port(), &[], "");
    let (_, path) = queue(&dir, "a@x.test", &["bob@localhost.test"], MSG);
    let mut w = Worker::start(&dir, "local", &cfg);
    let rcpts = ["bob@localhost.test", "Bob+news@LOCALHOST.test"];
    let res = w.run(Local, &path, "a@x.test", &rcpts);
    for r in &res {
        assert_eq!(
            (r.outcome, r.dsn.as_str(), r.relay.as_str()),
            (Outcome::Ok, "2.0.0", "local"),
            "{r:?}"
        );
    }
    let files = maildir_new(&dir.mail(), "localhost.test", "bob");
    assert_eq!(files.len(), 2);
    let mut want = trace("a@x.test", "bob@localhost.test");
    want.extend_from_slice(MSG);
    for f in &files {
        assert_eq!(std::fs::read(f).unwrap(), want);
    }
    let script = "import mailbox,sys\nmd=mailbox.Maildir(sys.argv[1],factory=None,create=False)\nfor m in md: print(m['Subject'], m['Delivered-To'], m['Return-Path'])\n";
    let maildir = dir.mail().join("localhost.test/bob/Maildir");
    let (code, out, err) = python(script, &[maildir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2);
    assert!(
        out.lines()
            .all(|l| l == "hello bob@localhost.test <a@x.test>"),
        "{out}"
    );
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn path_tricks_in_local_parts_stay_inside_the_mailbox_root() {
    let dir = TestDir::new("deliver-tricks");
    let cfg = dir.write_config(free_port(), &[], "");
    let (_, path) = queue(&dir, "a@x.test", &["x@localhost.test"], MSG);
    let mut w = Worker::start(&dir, "local", &cfg);
    let long = format!("{}@localhost.test", "l".repeat(65));
    let rcpts = [
        "../../etc@localhost.test",
        "a/b@localhost.test",
        "nul\0x@localhost.test",
        "ctl\u{1}x@localhost.test",
        ".hidden@localhost.test",
        "..@localhost.test",
        long.as_str(),
    ];
    let res = w.run(Local, &path, "a@x.test", &rcpts);
    for (r, rcpt) in res.iter().zip(rcpts) {
        assert_eq!(
            (r.outcome, r.dsn.as_str()),
            (Outcome::Fail, "5.1.3"),
            "{rcpt:?}: {r:?}"
        );
    }
    assert!(
        files_under(&dir.mail()).is_empty(),
        "{:?}",
        files_under(&dir.mail())
    );
    assert!(!dir.path.join("etc").exists() && !dir.path.parent().unwrap().join("etc").exists());
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn delivered_to_loop_bounces_and_missing_queue_file_defers() {
    let dir = TestDir::new("deliver-loop");
    let cfg = dir.write_config(free_port(), &[], "");
    let looped = b"Delivered-To: bob@localhost.test\r\nSubject: again\r\n\r\nx\r\n";
    let (_, path) = queue(&dir, "a@x.test", &["bob@localhost.test"], looped);
    let mut w = Worker::start(&dir, "local", &cfg);
    let res = w.run(
        Local,
        &path,
        "a@x.test",
        &["bob@localhost.test", "carol@localhost.test"],
    );
    assert_eq!(
        (res[0].outcome, res[0].dsn.as_str()),
        (Outcome::Fail, "5.4.6")
    );
    assert_eq!(res[1].outcome, Outcome::Ok);
    std::fs::remove_file(&path).unwrap();
    let res = w.run(Local, &path, "a@x.test", &["bob@localhost.test"]);
    assert_eq!(res[0].outcome, Outcome::Defer);
    assert!(res[0].text.contains("gone"), "{}", res[0].text);
    // Garbage on the pipe is skipped; the next job is still answered.
    w.send_raw("this is not a job\n");
    let (_, path) = queue(&dir, "a@x.test", &["bob@localhost.test"], MSG);
    let res = w.run(
        Local,
        &path,
        "a@x.test",
        &["x@elsewhere.test", "y@localhost.test"],
    );
    assert_eq!(
        (res[0].outcome, res[0].dsn.as_str()),
        (Outcome::Defer, "4.3.5")
    );
    assert_eq!(res[1].outcome, Outcome::Ok);
    assert!(w.log_text().contains("malformed job line"));
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn aliases_pipes_files_includes_and_forwards() {
    let dir = TestDir::new("deliver-aliases");
    std::fs::create_dir_all(dir.mail()).unwrap();
    let untrusted = dir.path.join("untrusted.list");
    let pwned = dir.path.join("pwned");
    std::fs::write(
        &untrusted,
        format!("carol\n\"|touch {}\"\n/etc/passwd\n", pwned.display()),
    )
    .unwrap();
    std::fs::set_permissions(&untrusted, std::fs::Permissions::from_mode(0o666)).unwrap();
    // As root, the members of this root-owned aliases file run as nobody (Postfix's
    // default_privs): give them a place they may write.
    std::fs::set_permissions(dir.mail(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let piped = dir.mail().join("piped");
    let archive = dir.mail().join("archive.mbox");
    let aliases = dir.path.join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "team: bob, alice, team\npipe: \"|cat > {}\"\narchive: {}\nevil: /etc/passwd\nescape: {}/../escaped.mbox\ninc: :include:{}\nfwd: someone@remote.test, bob\n",
            piped.display(),
            archive.display(),
            dir.mail().display(),
            untrusted.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&aliases, std::fs::Permissions::from_mode(0o644)).unwrap();
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let cfg = dir.write_config(free_port(), &[("local.aliases", &q(&aliases))], "");
    let passwd_before = std::fs::read("/etc/passwd").ok();
    let (id, path) = queue(&dir, "a@x.test", &["team@localhost.test"], MSG);
    let mut w = Worker::start(&dir, "local", &cfg);
    let rcpts = [
        "team@localhost.test",
        "pipe@localhost.test",
        "archive@localhost.test",
        "evil@localhost.test",
        "escape@localhost.test",
        "inc@localhost.test",
        "fwd@localhost.test",
    ];
    let res = w.run(Local, &path, "a@x.test", &rcpts);
    let log = w.log_text();
    let got: Vec<(Outcome, &str)> = res.iter().map(|r| (r.outcome, r.dsn.as_str())).collect();
    use Outcome::{Defer, Fail, Ok as Sent};
    // /etc/passwd: outside the mailbox root for an unprivileged agent (5.7.1); as root,
    // written as nobody, who may not (deferred).
    let evil = if root {
        (Defer, "4.3.0")
    } else {
        (Fail, "5.7.1")
    };
    assert_eq!(
        got,
        vec![
            (Sent, "2.0.0"),
            (Sent, "2.0.0"),
            (Sent, "2.0.0"),
            evil,
            (Fail, "5.7.1"),
            (Fail, "5.7.1"),
            (Sent, "2.0.0")
        ],
        "{res:#?}\n{log}"
    );
    // team: bob, alice and team's own mailbox; fwd: bob again.
    assert_eq!(maildir_new(&dir.mail(), "localhost.test", "bob").len(), 2);
    assert_eq!(maildir_new(&dir.mail(), "localhost.test", "alice").len(), 1);
    assert_eq!(maildir_new(&dir.mail(), "localhost.test", "team").len(), 1);
    // The pipe got the message with the trace headers.
    let mut want = trace("a@x.test", "pipe@localhost.test");
    want.extend_from_slice(MSG);
    assert_eq!(std::fs::read(&piped).unwrap(), want);
    let mbox = std::fs::read_to_string(&archive).unwrap();
    assert!(mbox.starts_with("From a@x.test "), "{mbox}");
    assert!(mbox.contains("\n>From the start\n"), "{mbox}");
    // Nothing escaped: no command from the untrusted include, no write to /etc/passwd,
    // nothing next to the mailbox root. The include's plain address is still served.
    assert!(!pwned.exists());
    assert_eq!(maildir_new(&dir.mail(), "localhost.test", "carol").len(), 1);
    assert!(
        res[5].text.contains("other members delivered"),
        "{}",
        res[5].text
    );
    assert_eq!(std::fs::read("/etc/passwd").ok(), passwd_before);
    assert!(!dir.path.join("escaped.mbox").exists());
    // The forward is a new queued message with a Delivered-To for the alias.
    let spool = sloop_common::spool::Spool::new(dir.spool());
    let incoming = spool
        .list(sloop_common::spool::QueueState::Incoming)
        .unwrap();
    let fwd_id = incoming
        .iter()
        .find(|i| **i != id)
        .expect("forwarded message");
    let fwd_path = spool.path(sloop_common::spool::QueueState::Incoming, fwd_id);
    let (env, mut reader) = sloop_common::spool::open_message(&fwd_path).unwrap();
    assert_eq!(env.sender, "a@x.test");
    let addrs: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(addrs, vec!["someone@remote.test"]);
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut content).unwrap();
    let mut want = b"Delivered-To: fwd@localhost.test\r\n".to_vec();
    want.extend_from_slice(MSG);
    assert_eq!(content, want);
    assert!(
        log.contains(&format!("forwarded for <fwd@localhost.test> as {fwd_id}")),
        "{log}"
    );
    // If that copy comes back to fwd@, it is a loop.
    let res = w.run(Local, &fwd_path, "a@x.test", &["fwd@localhost.test"]);
    assert_eq!(
        (res[0].outcome, res[0].dsn.as_str()),
        (Outcome::Fail, "5.4.6")
    );
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn mbox_format_with_quoting_read_by_python() {
    let dir = TestDir::new("deliver-mbox");
    let cfg = dir.write_config(free_port(), &[("local.mailbox_format", "\"mbox\"")], "");
    let (_, p1) = queue(&dir, "a@x.test", &["bob@localhost.test"], MSG);
    let (_, p2) = queue(
        &dir,
        "",
        &["bob@localhost.test"],
        b"Subject: second\n\nFrom me\n",
    );
    let mut w = Worker::start(&dir, "local", &cfg);
    assert_eq!(
        w.run(Local, &p1, "a@x.test", &["bob@localhost.test"])[0].outcome,
        Outcome::Ok
    );
    assert_eq!(
        w.run(Local, &p2, "", &["bob@localhost.test"])[0].outcome,
        Outcome::Ok
    );
    // Path tricks fail the same way in mbox format.
    let tricks = [
        "../../etc@localhost.test",
        "a/b@localhost.test",
        ".x@localhost.test",
    ];
    for r in w.run(Local, &p2, "", &tricks) {
        assert_eq!(
            (r.outcome, r.dsn.as_str()),
            (Outcome::Fail, "5.1.3"),
            "{r:?}"
        );
    }
    let mbox = dir.mail().join("localhost.test/bob.mbox");
    assert_eq!(files_under(&dir.mail()), vec![mbox.clone()]);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.contains("\nFrom MAILER-DAEMON "), "{text}");
    assert_eq!(text.matches("\n>From ").count(), 2, "{text}");
    assert!(!dir.mail().join("localhost.test/bob.mbox.lock").exists());
    let script = "import mailbox,sys\nfor m in mailbox.mbox(sys.argv[1]): print(m['Subject'], m['Return-Path'])\n";
    let (code, out, err) = python(script, &[mbox.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello <a@x.test>\nsecond <>\n");
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn invalid_config_exits_78() {
    let dir = TestDir::new("deliver-badcfg");
    let cfg = dir.path.join("bad.toml");
    std::fs::write(&cfg, "[nonsense]\nx = 1\n").unwrap();
    let w = Worker::start(&dir, "local", &cfg);
    assert_eq!(w.finish(), Some(78));
}

#[test]
fn aliases_are_reloaded_and_a_broken_file_defers() {
    let dir = TestDir::new("deliver-reload");
    let aliases = dir.path.join("aliases");
    std::fs::write(&aliases, "sales: alice\n").unwrap();
    let q = format!("{:?}", aliases.display().to_string());
    let cfg = dir.write_config(free_port(), &[("local.aliases", &q)], "");
    let (_, path) = queue(&dir, "a@x.test", &["sales@localhost.test"], MSG);
    let mut w = Worker::start(&dir, "local", &cfg);
    assert_eq!(
        w.run(Local, &path, "a@x.test", &["sales@localhost.test"])[0].outcome,
        Outcome::Ok
    );
    assert_eq!(maildir_new(&dir.mail(), "localhost.test", "alice").len(), 1);
    // A new file (new mtime) is picked up by the running worker.
    std::fs::write(&aliases, "sales: bob\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&aliases)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        w.run(Local, &path, "a@x.test", &["sales@localhost.test"])[0].outcome,
        Outcome::Ok
    );
    assert_eq!(maildir_new(&dir.mail(), "localhost.test", "bob").len(), 1);
    // A broken file defers everything instead of bouncing.
    std::fs::write(&aliases, "this line has no colon\n").unwrap();
    let later = later + std::time::Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&aliases)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let res = w.run(
        Local,
        &path,
        "a@x.test",
        &["sales@localhost.test", "carol@localhost.test"],
    );
    assert!(
        res.iter()
            .all(|r| r.outcome == Outcome::Defer && r.dsn == "4.3.5"),
        "{res:?}"
    );
    // A job for the other transport is deferred, not attempted.
    let res = w.run(
        sloop_common::delivery_proto::Transport::Remote,
        &path,
        "a@x.test",
        &["x@y.test"],
    );
    assert_eq!(
        (res[0].outcome, res[0].dsn.as_str()),
        (Outcome::Defer, "4.3.5")
    );
    assert_eq!(w.finish(), Some(0));
}
