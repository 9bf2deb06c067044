//! Hostile input through `sloopd` + `sloop-smtpd`: SMTP smuggling variants, overlong
//! lines, NUL, an early talker, 2,000 pipelined RCPTs and a slow-drip client each get
//! their documented reply, and nothing else is affected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;

use sloop_tests::Smtp;
use smtpd_support::Server;
use std::io::Write;
use std::time::{Duration, Instant};

const VARIANTS: [&[u8]; 6] = [
    b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n",
];

fn open_txn(server: &Server) -> Smtp {
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    c
}

fn start_data(c: &mut Smtp) {
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>"), 250);
    assert_eq!(c.cmd("RCPT TO:<alice@localhost.test>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
}

fn smuggle(variant: &[u8]) -> Vec<u8> {
    let mut m = b"Subject: x\r\n\r\nbody".to_vec();
    m.extend_from_slice(variant);
    m.extend_from_slice(
        b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<evil@localhost.test>\r\nDATA\r\nevil\r\n",
    );
    m.extend_from_slice(b"\r\n.\r\n");
    m
}

#[test]
fn smuggling_variants_are_refused_and_never_split() {
    let server = Server::start("smtpd-smuggle", &[], &[]);
    let mut c = open_txn(&server);
    for v in VARIANTS {
        start_data(&mut c);
        c.send_raw(&smuggle(v));
        let r = c.reply();
        assert!(r[0].starts_with("554 5.6.0 Bare <"), "{v:?}: {r:?}");
        assert_eq!(c.cmd("NOOP"), 250, "{v:?}: out of step");
    }
    assert_eq!(c.cmd("QUIT"), 221);
    assert!(server.committed_ids().is_empty());

    // normalize: stored as one message with the would-be commands as text.
    let server = Server::start(
        "smtpd-smuggle-norm",
        &[("smtpd.bare_newline", "\"normalize\"")],
        &[],
    );
    let mut c = open_txn(&server);
    for v in VARIANTS {
        start_data(&mut c);
        c.send_raw(&smuggle(v));
        assert_eq!(c.code(), 250, "{v:?}");
        assert_eq!(c.cmd("NOOP"), 250);
    }
    let ids = server.committed_ids();
    assert_eq!(ids.len(), VARIANTS.len());
    for id in ids {
        let (env, m) = server.committed(&id);
        assert_eq!(env.sender, "a@b.example");
        assert!(String::from_utf8_lossy(&m).contains("MAIL FROM:<evil@b.example>"));
    }
}

#[test]
fn overlong_lines_and_nul() {
    let server = Server::start("smtpd-overlong", &[], &[]);
    let mut c = open_txn(&server);
    let long = "A".repeat(600);
    c.send(&long);
    let r = c.reply();
    assert!(r[0].starts_with("500 5.5.2 "), "{r:?}");
    c.send_raw(b"NO\0OP\r\n");
    assert_eq!(c.code(), 500);
    assert_eq!(c.cmd("NOOP"), 250);
    start_data(&mut c);
    c.send_raw(format!("Subject: x\r\n\r\n{}\r\n.\r\n", "x".repeat(1001)).as_bytes());
    let r = c.reply();
    assert!(
        r[0].starts_with("554 5.6.0 Message line longer than 1000"),
        "{r:?}"
    );
    start_data(&mut c);
    c.send_raw(b"Subject: x\r\n\r\na\0b\r\n.\r\n");
    let r = c.reply();
    assert!(r[0].starts_with("554 5.6.0 Message contains NUL"), "{r:?}");
    assert_eq!(c.cmd("QUIT"), 221);
    assert!(server.committed_ids().is_empty());
}

#[test]
fn early_talker_is_refused() {
    let server = Server::start("smtpd-early", &[], &[("SLOOP_FAULT", "connect-delay")]);
    let mut c = Smtp::connect(server.port);
    c.send("EHLO early.test");
    let r = c.reply();
    assert!(r[0].starts_with("554 5.5.1 "), "{r:?}");
    assert_eq!(c.code(), 503);
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>"), 503);
    assert_eq!(c.cmd("QUIT"), 221);
    assert!(server.wait_log("early talker unknown[127.0.0.1]", Duration::from_secs(5)));
    // A patient client is served normally.
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("QUIT"), 221);
}

/// Regression: a client that connected and hung up before the greeting (a port probe,
/// a load balancer's health check) was logged as an early talker, which log summaries
/// such as pflogsumm count as a rejection.
#[test]
fn a_client_that_hangs_up_before_the_greeting_is_not_an_early_talker() {
    let server = Server::start("smtpd-hangup", &[], &[("SLOOP_FAULT", "connect-delay")]);
    // From an address of its own, so its log lines are told from the harness's probe.
    server.python(
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.3', 0))\n\
         s.connect(('127.0.0.1', PORT))\ns.close()\n",
        &[],
    );
    assert!(server.wait_log(
        "lost connection after CONNECT from unknown[127.0.0.3]",
        Duration::from_secs(10)
    ));
    assert!(
        !server.log().contains("early talker unknown[127.0.0.3]"),
        "{}",
        server.log()
    );
}

#[test]
fn two_thousand_pipelined_rcpts() {
    let server = Server::start("smtpd-2000", &[], &[]);
    let mut c = open_txn(&server);
    let mut batch = String::from("MAIL FROM:<a@b.example>\r\n");
    for i in 0..2000 {
        batch.push_str(&format!("RCPT TO:<r{i}@localhost.test>\r\n"));
    }
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(batch.as_bytes()).unwrap());
    assert_eq!(c.code(), 250);
    let codes: Vec<u16> = (0..2000).map(|_| c.code()).collect();
    writer.join().unwrap();
    assert!(codes[..1000].iter().all(|&x| x == 250));
    assert!(
        codes[1000..].iter().all(|&x| x == 452),
        "{:?}",
        &codes[995..1010]
    );
    assert_eq!(c.cmd("DATA"), 354);
    c.send_raw(b"Subject: many\r\n\r\n.\r\n");
    let r = c.reply();
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    let id = smtpd_support::queued_id(&r[0]);
    assert_eq!(server.committed(&id).0.recipients.len(), 1000);
}

#[test]
fn slow_drip_client_is_cut_at_the_session_deadline() {
    let server = Server::start(
        "smtpd-drip",
        &[
            ("smtpd.session_timeout", "\"2s\""),
            ("smtpd.idle_timeout", "\"1s\""),
        ],
        &[],
    );
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    let start = Instant::now();
    let mut w = c.stream.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        for b in b"NOOP\r\n".iter().cycle().take(60) {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Another client is served meanwhile.
    let mut other = Smtp::connect(server.port);
    assert_eq!(other.code(), 220);
    assert_eq!(other.cmd("EHLO other.test"), 250);
    assert_eq!(other.cmd("QUIT"), 221);
    let last = loop {
        let r = c.reply();
        match r.first() {
            Some(l) if l.starts_with("250") => continue,
            Some(l) => break l.clone(),
            None => panic!("closed without 421"),
        }
    };
    let elapsed = start.elapsed();
    assert!(last.starts_with("421 4.4.2 "), "{last}");
    assert!(
        elapsed >= Duration::from_millis(1800)
            && elapsed < Duration::from_secs(2) + sloop_tests::LOAD_MARGIN,
        "{elapsed:?}"
    );
    assert!(c.closed());
    dripper.join().unwrap();
}

/// Regression: a client that reads its replies slowly kept the worker in `write_all`
/// past the command deadline (the send timeout applied to each `send`, not to the
/// write), until the watchdog ended the worker, which the supervisor counted as a
/// crash. One deadline now bounds the whole write: the session ends at it, the worker
/// goes on serving, and the watchdog never fires.
#[test]
fn slow_reader_is_cut_at_the_write_deadline_not_by_the_watchdog() {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::Read;
    let server = Server::start(
        "smtpd-slow-reader",
        &[
            ("smtpd.command_timeout", "\"1s\""),
            ("smtpd.watchdog_grace", "\"1s\""),
        ],
        &[],
    );
    // A small receive window, so the replies pile up in the server's send buffer.
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&sock, sockopt::RcvBuf, &4096).unwrap();
    let dst: std::net::SocketAddrV4 = format!("127.0.0.1:{}", server.port).parse().unwrap();
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &nix::sys::socket::SockaddrIn::from(dst),
    )
    .unwrap();
    let mut s = std::net::TcpStream::from(sock);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while !greeting.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        greeting.push(byte[0]);
    }
    assert!(greeting.starts_with(b"220 "));
    // 48,000 pipelined EHLOs: about 6 MB of replies, more than the server's send
    // buffer can take (tcp_wmem allows it up to 4 MB), written while we read slowly.
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&b"EHLO x\r\n".repeat(48_000));
    });
    // Read a little at a time for 4 s (past deadline + grace), then drain to EOF.
    let slow_until = Instant::now() + Duration::from_secs(4);
    let mut buf = [0u8; 8192];
    let mut total = 0usize;
    loop {
        let slow = Instant::now() < slow_until;
        let n = match s.read(&mut buf[..if slow { 256 } else { 8192 }]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n;
        if slow {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    writer.join().unwrap();
    assert!(total < 6_000_000, "all replies were written: {total}");
    assert!(
        server.wait_log("lost connection after EHLO", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(!log.contains("watchdog fired"), "{log}");
    assert!(!log.contains("status=75"), "{log}");
    // The pool still serves.
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("QUIT"), 221);
}
