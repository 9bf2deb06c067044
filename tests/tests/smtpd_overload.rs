//! Overload end to end: idle connections that hold the whole smtpd pool must not leave
//! anyone without a banner (docs/invariants.md G1), and the other invariants hold while the pool is
//! overloaded.
//!
//! - 120 idle connections from six addresses hold a pool of 100: a client from a
//!   seventh address gets `220` within `smtpd.connect_timeout` and sends a message
//!   (the six are over their share, so their idle sessions are cut first).
//! - 1,000 idle connections from 50 addresses: every connection gets `220` or `421`
//!   within `smtpd.connect_timeout`, and nothing crashes.
//! - G2/G3/G4/G7 under overload on a pool of three: one reply per command, a 421 line
//!   before every close, a transfer in DATA is not cut, every reply well-formed, and a
//!   session blocked waiting for a command when overload begins takes the short budget.
//!
//! Clients bind their sockets to 127.0.0.x source addresses (all loopback on Linux).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sloop_tests::{free_port, wait_until, Daemon, Smtp, TestDir};
use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to 127.0.0.1:`port` from `source`.
fn socket_from(source: &str, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let src: std::net::SocketAddrV4 = format!("{source}:0").parse().unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::from(src)).unwrap();
    let dst: std::net::SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst)).unwrap();
    TcpStream::from(fd)
}

fn smtp_from(source: &str, port: u16) -> Smtp {
    let s = socket_from(source, port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Smtp {
        reader: BufReader::new(s.try_clone().unwrap()),
        stream: s,
    }
}

/// Raises this process's descriptor limit to its hard limit (a thousand sockets).
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// G7: a reply line is well-formed: code, separator, no control characters, at most
/// 512 octets with CRLF (EHLO's keyword lines and the greeting carry no enhanced code;
/// see [`well_formed`]).
fn valid_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 4
        && (b'2'..=b'5').contains(&b[0])
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && (b[3] == b' ' || b[3] == b'-')
        && !b.iter().any(|c| matches!(c, b'\r' | b'\n' | 0))
        && b.len() <= 510
}

/// G7: a reply line is valid and carries an enhanced status code (the greeting aside).
fn well_formed(line: &str) -> bool {
    let b = line.as_bytes();
    let code_ok = b.len() >= 4
        && (b'2'..=b'5').contains(&b[0])
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && (b[3] == b' ' || b[3] == b'-');
    let no_ctl = !b.iter().any(|c| matches!(c, b'\r' | b'\n' | 0));
    // Every reply but the greeting carries an enhanced status code.
    let enhanced = line.starts_with("220 ") || {
        let rest = &line[4..];
        let code = rest.split(' ').next().unwrap_or("");
        let parts: Vec<&str> = code.split('.').collect();
        parts.len() == 3
            && parts[0] == &line[..1]
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    code_ok && no_ctl && enhanced && b.len() <= 510
}

/// Waits for the first line on every connection, each within `limit` of `since`
/// (its connect). Returns each first line (or `None`: nothing by its deadline) and
/// how long it took.
fn first_lines(conns: &[(TcpStream, Instant)], limit: Duration) -> Vec<Option<(String, Duration)>> {
    for (s, _) in conns {
        s.set_nonblocking(true).unwrap();
    }
    let mut got: Vec<Option<(String, Duration)>> = vec![None; conns.len()];
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); conns.len()];
    let mut open: Vec<usize> = (0..conns.len()).collect();
    let end = conns.iter().map(|(_, t)| *t + limit).max().unwrap();
    while !open.is_empty() && Instant::now() < end + Duration::from_millis(200) {
        let mut fds: Vec<PollFd> = open
            .iter()
            .map(|i| PollFd::new(conns[*i].0.as_fd(), PollFlags::POLLIN))
            .collect();
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let ready: Vec<usize> = fds
            .iter()
            .zip(&open)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, i)| *i)
            .collect();
        drop(fds);
        for i in ready {
            let mut chunk = [0u8; 512];
            let n = (&conns[i].0).read(&mut chunk).unwrap_or(0);
            bufs[i].extend_from_slice(&chunk[..n]);
            if let Some(p) = bufs[i].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&bufs[i][..p])
                    .trim_end()
                    .to_string();
                got[i] = Some((line, conns[i].1.elapsed()));
            }
            if n == 0 || got[i].is_some() {
                open.retain(|j| *j != i);
            }
        }
    }
    for (s, _) in conns {
        s.set_nonblocking(false).unwrap();
    }
    got
}

fn start(name: &str, overrides: &[(&str, &str)]) -> (TestDir, Daemon, u16) {
    let dir = TestDir::new(name);
    let port = free_port();
    let cfg = dir.write_config(port, overrides, "");
    let d = Daemon::start(&cfg, port);
    // The start-up probe's session must be over before clients are counted.
    assert!(wait_until(Duration::from_secs(10), || {
        d.log_text().contains("disconnect from")
    }));
    (dir, d, port)
}

fn assert_nothing_crashed(d: &Daemon) {
    let log = d.log_text();
    for bad in ["panic", "before it served", "restart in", "watchdog fired"] {
        assert!(!log.contains(bad), "{bad:?} in the log:\n{log}");
    }
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), None).is_ok(),
        "sloopd is gone"
    );
}

fn send_message(c: &mut Smtp, subject: &str) {
    assert_eq!(c.cmd("EHLO client.test"), 250);
    assert_eq!(c.cmd("MAIL FROM:<a@client.test>"), 250);
    assert_eq!(c.cmd("RCPT TO:<bob@localhost.test>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send_raw(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes());
    assert_eq!(c.code(), 250);
    assert_eq!(c.cmd("QUIT"), 221);
}

#[test]
fn idle_clients_holding_the_pool_do_not_keep_another_from_its_banner() {
    raise_fd_limit();
    let (dir, d, port) = start(
        "overload-120",
        &[
            ("smtpd.max_processes", "100"),
            ("smtpd.max_per_client", "20"),
        ],
    );
    // 120 connections from six addresses, 20 each, that never say a word.
    let mut idle = Vec::new();
    for i in 0..120 {
        idle.push(socket_from(&format!("127.0.0.{}", 2 + i % 6), port));
    }
    assert!(
        wait_until(Duration::from_secs(120), || d
            .log_text()
            .contains("overload: process limit reached")),
        "{}",
        d.log_text()
    );
    let t0 = Instant::now();
    let mut c = smtp_from("127.0.0.9", port);
    let greeting = c.reply();
    let waited = t0.elapsed();
    assert!(
        greeting.first().is_some_and(|l| l.starts_with("220 ")),
        "{greeting:?} after {waited:?}\n{}",
        d.log_text()
    );
    assert!(waited < CONNECT_TIMEOUT, "greeted after {waited:?}");
    send_message(&mut c, "through the overload");
    assert!(d.log_text().contains("hold more than their share"));
    assert!(wait_until(Duration::from_secs(30), || {
        !sloop_tests::maildir_new(&dir.mail(), "localhost.test", "bob").is_empty()
    }));
    assert_nothing_crashed(&d);
    drop(idle);
}

#[test]
fn a_thousand_idle_connections_each_get_a_reply_within_the_connect_budget() {
    let limit = raise_fd_limit();
    if limit < 1200 {
        println!("SKIP: a_thousand_idle_connections: descriptor limit {limit} < 1200");
        return;
    }
    let (_dir, d, port) = start("overload-1000", &[("smtpd.max_processes", "100")]);
    let mut conns = Vec::new();
    for i in 0..1000 {
        let src = format!("127.0.1.{}", 1 + i % 50);
        conns.push((socket_from(&src, port), Instant::now()));
    }
    // New connections while the thousand are held.
    for i in 0..50 {
        let src = format!("127.0.2.{}", 1 + i);
        conns.push((socket_from(&src, port), Instant::now()));
    }
    let got = first_lines(&conns, CONNECT_TIMEOUT);
    let mut counts = std::collections::BTreeMap::new();
    for (i, g) in got.iter().enumerate() {
        let (line, took) = g
            .as_ref()
            .unwrap_or_else(|| panic!("connection {i}: no reply\n{}", d.log_text()));
        assert!(
            line.starts_with("220 ") || line.starts_with("421 4."),
            "connection {i}: {line}"
        );
        assert!(well_formed(line), "{line}");
        assert!(
            *took < CONNECT_TIMEOUT,
            "connection {i}: {line} after {took:?}"
        );
        *counts.entry(line[..9].to_string()).or_insert(0) += 1;
    }
    println!("first replies: {counts:?}");
    assert!(
        counts.keys().any(|k| k.starts_with("421 4.3.2")),
        "{counts:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || d
        .log_text()
        .contains("busy acceptor")));
    drop(conns);
    // The pool recovers: a client is served normally afterwards.
    let mut c = smtp_from("127.0.3.1", port);
    assert!(wait_until(Duration::from_secs(30), || {
        let s = d.log_text();
        s.contains("overload ended")
    }));
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("QUIT"), 221);
    assert_nothing_crashed(&d);
}

/// A pool of three with short overload timeouts, for the invariant tests.
fn small_pool(name: &str) -> (TestDir, Daemon, u16) {
    start(
        name,
        &[
            ("smtpd.max_processes", "3"),
            ("smtpd.min_idle", "1"),
            ("smtpd.overload_idle_timeout", "\"2s\""),
            ("smtpd.max_per_client", "1000"),
        ],
    )
}

/// Opens `n` connections from `source` that wait for a worker and never speak.
fn waiting_connections(port: u16, source: &str, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| socket_from(source, port)).collect()
}

/// Opens `n` greeted idle sessions from `source`.
fn hold(port: u16, source: &str, n: usize) -> Vec<Smtp> {
    (0..n)
        .map(|_| {
            let mut c = smtp_from(source, port);
            assert_eq!(c.code(), 220);
            c
        })
        .collect()
}

#[test]
fn g2_g3_g7_under_overload_one_reply_per_command_and_a_421_before_the_close() {
    let (_dir, d, port) = small_pool("overload-g2");
    let mut active = smtp_from("127.0.0.20", port);
    assert_eq!(active.code(), 220);
    // Two silent sessions fill the pool: overload.
    let mut silent = hold(port, "127.0.0.21", 2);
    assert!(wait_until(Duration::from_secs(10), || d
        .log_text()
        .contains("overload: process limit reached")));
    // Connections waiting for a worker keep the pool full, so the overload lasts
    // while the silent sessions are cut.
    let _waiting = waiting_connections(port, "127.0.0.22", 4);
    // The active session keeps its one reply per command (pipelined too).
    active.send_raw(b"EHLO a.test\r\nNOOP\r\nRSET\r\n");
    let ehlo = active.reply();
    assert!(ehlo.iter().all(|l| valid_line(l)), "{ehlo:?}");
    assert_eq!(ehlo.last().unwrap()[..3].to_string(), "250");
    for _ in 0..2 {
        let r = active.reply();
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("250 2.0.0"), "{r:?}");
    }
    // Silent sessions end with one 421 4.4.2 line, then the close (G3).
    for c in silent.iter_mut().chain(std::iter::once(&mut active)) {
        let t0 = Instant::now();
        let r = c.reply();
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with("421 4.4.2 sloop.test Timeout, closing connection"),
            "{r:?}"
        );
        assert!(well_formed(&r[0]));
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
        assert!(c.closed());
    }
    assert_nothing_crashed(&d);
}

#[test]
fn g1_g3_a_connection_that_finds_no_worker_gets_421_4_3_2_before_the_close() {
    let (_dir, d, port) = start(
        "overload-g1",
        &[
            ("smtpd.max_processes", "2"),
            ("smtpd.min_idle", "1"),
            ("smtpd.connect_timeout", "\"8s\""),
            ("smtpd.dns_timeout", "\"1s\""),
            ("smtpd.max_per_client", "1000"),
        ],
    );
    // One session each from two addresses: nobody is over their share.
    let _held = [hold(port, "127.0.0.30", 1), hold(port, "127.0.0.32", 1)];
    let t0 = Instant::now();
    let mut late = smtp_from("127.0.0.31", port);
    let r = late.reply();
    let took = t0.elapsed();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].starts_with("421 4.3.2 sloop.test Service busy, try again later"),
        "{r:?}"
    );
    assert!(well_formed(&r[0]));
    // 8s budget, 2s kept for a worker's greeting: refused at 6s.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        took >= Duration::from_millis(5900),
        "refused early: {took:?}"
    );
    assert!(late.closed());
    assert_nothing_crashed(&d);
}

#[test]
fn g4_a_transfer_in_data_is_not_cut_by_overload() {
    let (dir, d, port) = small_pool("overload-g4");
    let mut sender = smtp_from("127.0.0.40", port);
    assert_eq!(sender.code(), 220);
    assert_eq!(sender.cmd("EHLO s.test"), 250);
    assert_eq!(sender.cmd("MAIL FROM:<s@s.test>"), 250);
    assert_eq!(sender.cmd("RCPT TO:<bob@localhost.test>"), 250);
    assert_eq!(sender.cmd("DATA"), 354);
    let mut silent = hold(port, "127.0.0.41", 2);
    assert!(wait_until(Duration::from_secs(10), || d
        .log_text()
        .contains("overload: process limit reached")));
    let _waiting = waiting_connections(port, "127.0.0.42", 4);
    // Pauses inside DATA longer than smtpd.overload_idle_timeout (2s): not cut.
    sender.send_raw(b"Subject: slow\r\n\r\n");
    let t0 = Instant::now();
    for c in &mut silent {
        assert!(c.reply()[0].starts_with("421 4.4.2 "));
    }
    assert!(wait_until(Duration::from_secs(10), || t0.elapsed()
        > Duration::from_secs(3)));
    sender.send_raw(b"still here\r\n.\r\n");
    assert_eq!(sender.code(), 250);
    assert_eq!(sender.cmd("QUIT"), 221);
    assert!(wait_until(Duration::from_secs(30), || {
        !sloop_tests::maildir_new(&dir.mail(), "localhost.test", "bob").is_empty()
    }));
    assert_nothing_crashed(&d);
}

#[test]
fn a_session_waiting_for_a_command_takes_the_short_budget_when_overload_begins() {
    let (dir, d, port) = small_pool("overload-running");
    // Greeted and silent before any overload: its budget is idle_timeout (300s).
    let mut early = smtp_from("127.0.0.50", port);
    assert_eq!(early.code(), 220);
    let _others = hold(port, "127.0.0.51", 2);
    assert!(wait_until(Duration::from_secs(10), || d
        .log_text()
        .contains("overload: process limit reached")));
    let _waiting = waiting_connections(port, "127.0.0.52", 4);
    let t0 = Instant::now();
    // `sloop status` shows the pool, the overload and the spool's free space (the
    // status file follows the log line within a moment).
    let status = || {
        let out = std::process::Command::new(sloop_tests::bin("sloop"))
            .arg("-c")
            .arg(dir.path.join("sloop.toml"))
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            text = status();
            text.contains("overload: yes, since ")
        }),
        "{text}"
    );
    assert!(text.contains("limit 3 (smtpd.max_processes)"), "{text}");
    assert!(text.contains(" free on "), "{text}");
    let r = early.reply();
    assert!(r[0].starts_with("421 4.4.2 "), "{r:?}");
    // 2s counted from the start of its wait, which began before the overload.
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_nothing_crashed(&d);
}
