//! The invariants (docs/invariants.md) of the smtpd as end-to-end tests through `sloopd`:
//! G1/G6 default and broken greetings, G3 an injected panic and an injected hang at
//! connect, G4 a worker killed mid-DATA loses only its own session.
//!
//! The fault tests need the smtpd built with `--features fault-injection`
//! (`scripts/test` does that).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sloop_tests::{bin, wait_until, Smtp};
use smtpd_support::Server;
use std::time::{Duration, Instant};

#[test]
fn omitted_greeting_gives_the_default() {
    let server = Server::start("smtpd-g1-default", &[], &[]);
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.reply(), vec!["220 sloop.test ESMTP Sloop".to_string()]);
    assert_eq!(c.cmd("QUIT"), 221);
}

#[test]
fn reverse_dns_names_the_client_within_its_budget() {
    let server = Server::start(
        "smtpd-rdns",
        &[
            ("smtpd.reverse_dns", "true"),
            ("smtpd.dns_timeout", "\"1s\""),
        ],
        &[],
    );
    let start = Instant::now();
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    // Within the DNS budget (1 s), give or take a loaded machine.
    assert!(
        start.elapsed() < Duration::from_secs(1) + sloop_tests::LOAD_MARGIN,
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.cmd("QUIT"), 221);
    // 127.0.0.1 is named by /etc/hosts when it says so, else `unknown`.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let name = hosts
        .lines()
        .find_map(|l| l.strip_prefix("127.0.0.1"))
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|n| *n == "localhost")
        .unwrap_or("unknown");
    let line = format!("connect from {name}[127.0.0.1]");
    assert!(
        server.wait_log(&line, Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

#[test]
fn broken_greeting_refuses_start_and_broken_reload_keeps_the_banner() {
    let server = Server::start(
        "smtpd-g6-reload",
        &[("smtpd.greeting", "\"{hostname} Old banner\"")],
        &[],
    );
    let config = server.dir.path.join("sloop.toml");
    // The worker alone refuses a broken config with 78 and serves nothing.
    let bad = server.dir.path.join("bad.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text.replace("{hostname} Old banner", "bad\\u0007banner");
    std::fs::write(&bad, &broken).unwrap();
    let st = std::process::Command::new(bin("sloop-smtpd"))
        .arg("-c")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        st.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(String::from_utf8_lossy(&st.stderr).contains("smtpd.greeting"));
    // sloopd refuses to start on it.
    let mut d = smtpd_support::spawn_daemon(&bad, &[]);
    let status = d.wait_exit(Duration::from_secs(10)).expect("sloopd exits");
    assert_eq!(status.code(), Some(78));
    // A reload with it keeps the old banner. (Written only once every worker has
    // loaded the good file: sloopd's children read the file when they start.)
    assert!(
        server.wait_idle(2, Duration::from_secs(10)),
        "{}",
        server.log()
    );
    std::fs::write(&config, &broken).unwrap();
    server.daemon.signal(Signal::SIGHUP);
    assert!(
        server.wait_log("reload rejected", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.reply(), vec!["220 sloop.test Old banner".to_string()]);
}

#[test]
fn injected_panic_gives_421_and_the_next_connection_220() {
    let dir_flag = std::env::temp_dir().join(format!("sloop-panic-flag-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir_flag);
    let fault = format!("connect-panic@{}", dir_flag.display());
    let server = Server::start("smtpd-g3-panic", &[], &[("SLOOP_FAULT", &fault)]);
    // Armed only now: the start-up probe connection must not take the fault.
    assert!(server.wait_log("disconnect from", Duration::from_secs(5)));
    std::fs::write(&dir_flag, b"").unwrap();
    let mut c = Smtp::connect(server.port);
    let reply = c.reply();
    assert_eq!(reply.len(), 1, "{reply:?}\n{}", server.log());
    assert!(reply[0].starts_with("421 4.3.0 "), "{reply:?}");
    assert!(c.closed());
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("QUIT"), 221);
    assert!(server.wait_log("injected fault: connect-panic", Duration::from_secs(5)));
}

#[test]
fn injected_hang_gives_421_before_deadline_plus_grace() {
    let server = Server::start(
        "smtpd-g3-hang",
        &[
            ("smtpd.connect_timeout", "\"1s\""),
            ("smtpd.dns_timeout", "\"500ms\""),
            ("smtpd.watchdog_grace", "\"500ms\""),
        ],
        &[("SLOOP_FAULT", "connect-hang")],
    );
    let start = Instant::now();
    let mut c = Smtp::connect(server.port);
    let reply = c.reply();
    let elapsed = start.elapsed();
    assert!(reply[0].starts_with("421 4.4.2 "), "{reply:?}");
    // Deadline (1 s) plus grace (500 ms), give or take a loaded machine.
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1500) + sloop_tests::LOAD_MARGIN,
        "{elapsed:?}"
    );
    assert!(server.wait_log("watchdog fired: phase connect", Duration::from_secs(5)));
    // One stuck session is not a crash: the worker is replaced at once, no backoff.
    assert!(
        server.wait_log("not counted as a crash", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("in a row"), "{}", server.log());
}

/// Pid of the worker that logged `<ID>: client=` for the only session so far.
fn worker_pid_of_first_session(server: &Server) -> i32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(5), || {
        let log = server.log();
        let Some(line) = log
            .lines()
            .find(|l| l.contains(": client=unknown[127.0.0.1]"))
        else {
            return false;
        };
        let start = line.find("sloop-smtpd[").unwrap() + "sloop-smtpd[".len();
        let end = start + line[start..].find(']').unwrap();
        pid = line[start..end].parse().unwrap();
        true
    });
    pid
}

#[test]
fn killed_worker_loses_only_its_own_session() {
    let server = Server::start("smtpd-g4-kill", &[("smtpd.min_idle", "3")], &[]);
    let mut victim = Smtp::connect(server.port);
    assert_eq!(victim.code(), 220);
    assert_eq!(victim.cmd("EHLO victim.test"), 250);
    assert_eq!(victim.cmd("MAIL FROM:<victim@b.example>"), 250);
    assert_eq!(victim.cmd("RCPT TO:<v@localhost.test>"), 250);
    assert_eq!(victim.cmd("DATA"), 354);
    victim.send_raw(b"Subject: half\r\n\r\nthis message never ends");
    let pid = worker_pid_of_first_session(&server);
    assert!(pid > 0, "{}", server.log());

    let port = server.port;
    let others: Vec<_> = (0..10)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Smtp::connect(port);
                assert_eq!(c.code(), 220);
                assert_eq!(c.cmd("EHLO other.test"), 250);
                assert_eq!(c.cmd(&format!("MAIL FROM:<o{i}@b.example>")), 250);
                assert_eq!(c.cmd("RCPT TO:<o@localhost.test>"), 250);
                assert_eq!(c.cmd("DATA"), 354);
                c.send_raw(format!("Subject: {i}\r\n\r\nok\r\n").as_bytes());
                std::thread::sleep(Duration::from_millis(20));
                c.send_raw(b".\r\n");
                let r = c.reply();
                assert!(r[0].starts_with("250 2.0.0 Ok: queued as"), "{r:?}");
                assert_eq!(c.cmd("QUIT"), 221);
            })
        })
        .collect();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    assert!(victim.reply().is_empty(), "the killed session got a reply");
    for t in others {
        t.join().unwrap();
    }
    assert_eq!(server.committed_ids().len(), 10);
    for id in server.committed_ids() {
        assert!(!server.committed(&id).0.sender.starts_with("victim"));
    }
    let exit_line = format!("sloop-smtpd pid={pid} killed by signal SIGKILL");
    assert!(
        server.wait_log(&exit_line, Duration::from_secs(5)),
        "{}",
        server.log()
    );
    // Back to min_idle within a second (counted from the kill, including the time the
    // ten sessions took).
    let back = wait_until(
        Duration::from_secs(1)
            .saturating_sub(killed_at.elapsed())
            .max(Duration::from_millis(300)),
        || {
            server.daemon.signal(Signal::SIGUSR1);
            std::thread::sleep(Duration::from_millis(30));
            let log = server.log();
            let last = log
                .lines()
                .rev()
                .find(|l| l.contains("status: smtpd workers="))
                .unwrap_or("");
            smtpd_support::idle_count(last) >= 3
        },
    );
    assert!(back, "pool not back to min_idle:\n{}", server.log());
}

/// Pids of the `sloop-smtpd` processes whose parent is `parent`.
fn smtpd_children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 2..].split_whitespace().nth(1);
        if &stat[open + 1..close] == "sloop-smtpd" && ppid == Some(&parent.to_string()) {
            out.push(pid);
        }
    }
    out
}

/// Regression: replacement workers used to re-read the config file, so after a rejected
/// reload (or an edit without one) every new worker exited 78 and clients waited with
/// no greeting. Now they start on the text sloopd validated (SLOOP_CONFIG_TEXT), and a
/// broken aliases file does not stop them either.
#[test]
fn workers_replaced_after_a_rejected_reload_start_on_the_running_config() {
    let server = Server::start(
        "smtpd-g6-respawn",
        &[("smtpd.greeting", "\"{hostname} Old banner\"")],
        &[],
    );
    assert!(
        server.wait_idle(2, Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let config = server.dir.path.join("sloop.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[bogus]\nkey = 1\n")).unwrap();
    server.daemon.signal(Signal::SIGHUP);
    assert!(
        server.wait_log("reload rejected", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let before = smtpd_children(server.daemon.pid());
    assert!(!before.is_empty());
    for pid in &before {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    for _ in 0..3 {
        let mut c = Smtp::connect(server.port);
        assert_eq!(
            c.reply(),
            vec!["220 sloop.test Old banner".to_string()],
            "{}",
            server.log()
        );
        assert_eq!(c.cmd("QUIT"), 221);
    }
    let after = smtpd_children(server.daemon.pid());
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "workers were replaced"
    );
    assert!(!server.log().contains("status=78"), "{}", server.log());
}
