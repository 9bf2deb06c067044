//! The queue program's verdicts as the client sees them (SEED.md table): permanent
//! exit (11-40) gives `554 5.3.0`, temporary exit `451 4.3.0`, a crash (signal)
//! `451 4.3.0`, a hang past `smtpd.queue_timeout` is killed and gives `451 4.3.0`;
//! the session goes on after each. Also `smtpd.max_use` retires workers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_tests::{free_port, Daemon, Smtp, TestDir};
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
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let r = send(&mut c, "ok@b.example");
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    let ids = std::fs::read_to_string(format!("{}.ids", script.display())).unwrap();
    assert_eq!(ids.trim(), r[0].rsplit(' ').next().unwrap());
    assert_eq!(c.cmd("QUIT"), 221);
    let log = daemon.log_text();
    assert!(
        log.contains("queue program refused the message: exit status 31"),
        "{log}"
    );
    assert!(
        log.contains("queue program failed: exit status 53"),
        "{log}"
    );
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
