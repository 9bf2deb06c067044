//! The queue program's verdicts as the client sees them (the failure table of docs/invariants.md): permanent
//! exit (11-40) gives `554 5.3.0`, temporary exit `451 4.3.0`, a crash (signal)
//! `451 4.3.0`, a hang past `smtpd.queue_timeout` is killed and gives `451 4.3.0`;
//! the session goes on after each. Also `smtpd.max_use` retires workers.
//!
//! With `smtpd.queue_program` empty (the default) the worker commits in-process: the
//! queue file holds the client's octets byte for byte after our `Received` header, and
//! the smtpd itself logs the one `(queued)` line; a spool whose `incoming/` cannot be
//! written gives `451 4.3.0` and leaves nothing behind, and the session goes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;

use sloop_common::spool::{open_message, Spool};
use sloop_tests::{free_port, wait_until, Daemon, Smtp, TestDir};
use smtpd_support::{queued_id, strip_received};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Picks its behaviour from the envelope sender.
const QUEUE_SCRIPT: &str = r#"#!/bin/sh
cat > /dev/null
exec 3<&1
env=$(tr '\000' '\n' <&3)
case "$env" in
  Fperm@*) exit 31 ;;
  Ftemp@*) exit 53 ;;
  Fcrash@*) kill -9 $$ ;;
  Fhang@*) exec sleep 30 ;;
  Fok@*) echo "$SLOOP_QUEUE_ID" >> "$0.ids"; exit 0 ;;
esac
exit 81
"#;

fn send(c: &mut Smtp, sender: &str) -> Vec<String> {
    assert_eq!(c.cmd(&format!("MAIL FROM:<{sender}>")), 250);
    assert_eq!(c.cmd("RCPT TO:<a@localhost.test>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send_raw(b"Subject: q\r\n\r\nbody\r\n.\r\n");
    c.reply()
}

#[test]
fn queue_program_verdicts() {
    let dir = TestDir::new("smtpd-queue");
    let script = dir.path.join("queue.sh");
    std::fs::write(&script, QUEUE_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let qp = format!("{:?}", script.display().to_string());
    let config = dir.write_config(
        port,
        &[
            ("smtpd.queue_program", &qp),
            ("smtpd.queue_timeout", "\"1s\""),
        ],
        "",
    );
    let daemon = Daemon::start(&config, port);
    let mut c = Smtp::connect(port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    let r = send(&mut c, "perm@b.example");
    assert!(r[0].starts_with("554 5.3.0 "), "{r:?}");
    let r = send(&mut c, "temp@b.example");
    assert!(r[0].starts_with("451 4.3.0 "), "{r:?}");
    let r = send(&mut c, "crash@b.example");
    assert!(r[0].starts_with("451 4.3.0 "), "{r:?}");
    let start = Instant::now();
    let r = send(&mut c, "hang@b.example");
    assert!(r[0].starts_with("451 4.3.0 "), "{r:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900)
            && took < Duration::from_secs(1) + sloop_tests::LOAD_MARGIN,
        "{took:?}"
    );
    let r = send(&mut c, "ok@b.example");
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    let ids = std::fs::read_to_string(format!("{}.ids", script.display())).unwrap();
    assert_eq!(ids.trim(), r[0].rsplit(' ').next().unwrap());
    assert_eq!(c.cmd("QUIT"), 221);
    let log = daemon.log_text();
    assert!(
        log.contains("queueing refused the message: exit status 31"),
        "{log}"
    );
    assert!(log.contains("queueing failed: exit status 53"), "{log}");
    assert!(log.contains("queue program killed by signal 9"), "{log}");
    assert!(
        log.contains("queue program timed out after 1 s; killed"),
        "{log}"
    );
}

#[test]
fn max_use_retires_workers() {
    let dir = TestDir::new("smtpd-maxuse");
    let port = free_port();
    let config = dir.write_config(port, &[("smtpd.max_use", "1"), ("smtpd.min_idle", "1")], "");
    let daemon = Daemon::start(&config, port);
    for _ in 0..3 {
        let mut c = Smtp::connect(port);
        assert_eq!(c.code(), 220);
        assert_eq!(c.cmd("QUIT"), 221);
    }
    assert!(sloop_tests::wait_until(Duration::from_secs(5), || daemon
        .log_text()
        .matches("served 1 sessions (smtpd.max_use); worker exits")
        .count()
        >= 3));
}

/// A message with dot-stuffing, 8-bit octets and an empty line, as sent and as stored.
const SENT: &[u8] =
    b"Subject: in-process\r\nMessage-ID:\r\n <m.1@b.example>\r\n\r\n..dot\r\nline \xc3\xa9\r\n\r\n.\r\n";
const STORED: &[u8] =
    b"Subject: in-process\r\nMessage-ID:\r\n <m.1@b.example>\r\n\r\n.dot\r\nline \xc3\xa9\r\n\r\n";

fn send_8bit(c: &mut Smtp, rcpt: &str) -> Vec<String> {
    assert_eq!(c.cmd("MAIL FROM:<s@b.example> BODY=8BITMIME"), 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send_raw(SENT);
    c.reply()
}

/// Reads queue file `id` wherever the queue manager has moved it by now.
fn read_queued(spool: &Spool, id: &str) -> (sloop_common::spool::Envelope, Vec<u8>) {
    let mut found = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let Some((_, path)) = spool.find(id) else {
            return false;
        };
        let Ok((env, mut rd)) = open_message(&path) else {
            return false;
        };
        let mut msg = Vec::new();
        rd.read_to_end(&mut msg).unwrap();
        found = Some((env, msg));
        true
    });
    assert!(ok, "queue file {id} not found");
    found.unwrap()
}

#[test]
fn in_process_commit_is_byte_exact() {
    let dir = TestDir::new("smtpd-inproc");
    let port = free_port();
    // A remote route that refuses keeps the message in the queue (deferred).
    let route = ("remote.routes", "{ \"remote.test\" = \"127.0.0.1:2\" }");
    let config = dir.write_config(port, &[route], "");
    let daemon = Daemon::start(&config, port);
    let mut c = Smtp::connect(port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    let r = send_8bit(&mut c, "x@remote.test");
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    let id = queued_id(&r[0]);
    assert_eq!(c.cmd("QUIT"), 221);
    let (env, msg) = read_queued(&Spool::new(dir.spool()), &id);
    assert!(msg.starts_with(b"Received: from client.test"), "{msg:?}");
    assert!(String::from_utf8_lossy(&msg).contains(&format!(" id {id}")));
    assert_eq!(strip_received(&msg), STORED);
    assert_eq!(env.id, id);
    assert_eq!(env.sender, "s@b.example");
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].address, "x@remote.test");
    assert_eq!(env.body.as_deref(), Some("8BITMIME"));
    assert_eq!(env.size, msg.len() as u64);
    let log = daemon.log_text();
    let queued: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("{id}: ")) && l.contains("(queued)"))
        .collect();
    assert_eq!(queued.len(), 1, "{log}");
    assert!(queued[0].contains("sloop-smtpd["), "{log}");
    assert!(
        queued[0].contains("from=<s@b.example>, nrcpt=1 (queued)"),
        "{log}"
    );
    assert!(!log.contains("sloop-queue["), "{log}");
    // Postfix's cleanup line, by which operators trace a message.
    assert!(
        log.contains(&format!("{id}: message-id=<m.1@b.example>")),
        "{log}"
    );
}

#[test]
fn in_process_commit_unwritable_spool_is_451() {
    let dir = TestDir::new("smtpd-inproc-fail");
    let port = free_port();
    let config = dir.write_config(port, &[], "");
    let daemon = Daemon::start(&config, port);
    let spool = Spool::new(dir.spool());
    let incoming = dir.spool().join("incoming");
    // The queue manager's start-up recovery recreates the layout: let it finish first.
    assert!(
        wait_until(Duration::from_secs(10), || daemon
            .log_text()
            .contains("started: spool")),
        "{}",
        daemon.log_text()
    );
    // Tests run as root, so a read-only directory would still be writable.
    std::fs::remove_dir(&incoming).unwrap();
    std::fs::write(&incoming, b"not a directory").unwrap();
    let mut c = Smtp::connect(port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    let r = send_8bit(&mut c, "a@localhost.test");
    assert!(r[0].starts_with("451 4.3.0 "), "{r:?}");
    let failed = wait_until(Duration::from_secs(5), || {
        daemon
            .log_text()
            .contains("queueing failed: in-process commit: ")
    });
    assert!(failed, "{}", daemon.log_text());
    assert!(!daemon.log_text().contains("(queued)"));
    assert_eq!(std::fs::read(&incoming).unwrap(), b"not a directory");
    assert!(sloop_tests::files_under(&spool.tmp_dir()).is_empty());
    for state in ["active", "deferred", "hold"] {
        let files = sloop_tests::files_under(&dir.spool().join(state));
        assert!(files.is_empty(), "{state}: {files:?}");
    }
    // Repaired, the same session queues the next message.
    std::fs::remove_file(&incoming).unwrap();
    std::fs::create_dir(&incoming).unwrap();
    let r = send_8bit(&mut c, "a@localhost.test");
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(c.cmd("QUIT"), 221);
}
