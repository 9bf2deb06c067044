//! End-to-end tests of `sloopd`: the real supervisor binary, with tiny shell scripts
//! standing in for `sloop-smtpd` / `sloop-qmgr` (in a temp `server.bin_dir`) so that
//! crash loops, stubborn children and pool states can be staged exactly. The scripts
//! record their starts (pid, time) in files the tests read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod supervisor_support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sloop_tests::{bin, free_port, wait_until, Daemon, TestDir};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use supervisor_support::{
    alive, fake_config, listening, pids, pool_reaches, quoted, script, starts, status_shows,
    SLEEPER,
};

#[test]
fn an_invalid_config_is_refused_with_every_error_and_nothing_listens() {
    let td = TestDir::new("sv-invalid");
    let port = free_port();
    let listen = format!("[\"127.0.0.1:{port}\", \"127.0.0.1:99999\"]");
    let cfg = td.write_config(
        port,
        &[
            ("smtpd.listen", &listen),
            ("smtpd.greeting", "\"hello\\r\\nworld\""),
            ("smtpd.max_message_size", "\"25X\""),
            ("smtpd.no_such_key", "1"),
            ("relay.networks", "[\"10.0.0.0/33\"]"),
            ("local.aliases", "\"/nonexistent/sloop/aliases\""),
        ],
        "",
    );
    let mut d = Daemon::spawn(&cfg);
    let status = d.wait_exit(Duration::from_secs(10)).expect("sloopd exits");
    assert_eq!(status.code(), Some(78));
    let log = d.log_text();
    for key in [
        "smtpd.listen",
        "smtpd.greeting",
        "smtpd.max_message_size",
        "smtpd.no_such_key",
        "relay.networks",
        "local.aliases",
    ] {
        assert!(log.contains(key), "{key} not named in:\n{log}");
    }
    assert!(log.contains(&cfg.display().to_string()), "{log}");
    assert!(!listening(port), "nothing may listen on a refused config");
    assert!(!td.run().join("sloopd.pid").exists());

    let check = Command::new(bin("sloopd"))
        .args(["--check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&check.stderr).contains("smtpd.greeting"));
}

#[test]
fn check_accepts_the_development_config() {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/dev.toml");
    let out = Command::new(bin("sloopd"))
        .arg("--check")
        .arg("-c")
        .arg(&dev)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn a_config_without_greeting_starts_with_the_default_and_keeps_a_pid_file() {
    let td = TestDir::new("sv-default");
    // Only the smtpd exists: the missing queue manager is retried, never fatal.
    script(&td, "sloop-smtpd", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[("smtpd.min_idle", "1")]);
    assert!(!std::fs::read_to_string(&cfg).unwrap().contains("greeting"));
    let mut d = Daemon::start(&cfg, port);
    let pid_file = td.run().join("sloopd.pid");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == d.pid().to_string())
    }));
    assert!(wait_until(Duration::from_secs(10), || {
        let log = d.log_text();
        log.contains("sloop-qmgr") && log.contains("retrying in")
    }));
    let log = d.log_text();
    assert!(log.contains("greeting \"sloop.test ESMTP Sloop\""), "{log}");
    assert!(d.child.try_wait().unwrap().is_none(), "sloopd stays up");

    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).expect("stops");
    assert_eq!(status.code(), Some(0));
    assert!(!pid_file.exists(), "pid file removed on exit");
    assert!(pids(&td, "sloop-smtpd").into_iter().all(|p| !alive(p)));
}

#[test]
fn a_crash_looping_child_is_restarted_with_growing_delays() {
    let td = TestDir::new("sv-crash");
    script(&td, "sloop-smtpd", "date +%s%N >> @LOG\nexit 3\n");
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(
        &td,
        port,
        &[
            ("smtpd.min_idle", "1"),
            ("supervisor.restart_min", "\"50ms\""),
            ("supervisor.restart_max", "\"2s\""),
            ("supervisor.startup_crash_pause", "\"10ms\""),
        ],
    );
    let mut d = Daemon::start(&cfg, port);
    assert!(
        wait_until(Duration::from_secs(30), || starts(&td, "sloop-smtpd").len()
            >= 6),
        "log:\n{}",
        d.log_text()
    );
    let times: Vec<u128> = starts(&td, "sloop-smtpd")
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // Each restart waits at least restart_min * 2^(n-1).
    for (i, want) in [50u128, 100, 200, 400, 800].iter().enumerate() {
        assert!(
            gaps[i] >= *want,
            "gap {i} = {}ms < {want}ms: {gaps:?}",
            gaps[i]
        );
    }
    assert!(gaps[4] > 4 * gaps[0], "delays grow: {gaps:?}");
    assert!(d.child.try_wait().unwrap().is_none(), "sloopd stays up");
    assert!(listening(port), "the port stays bound through the crashes");
    let log = d.log_text();
    assert!(log.contains("exited status=3 before it served"), "{log}");
    assert!(log.contains("restart in 800ms"), "{log}");
}

#[test]
fn sigterm_stops_everything_within_the_deadline() {
    let td = TestDir::new("sv-stop");
    let stubborn = "trap '' TERM\necho $$ >> @LOG\nexec sleep 1000\n";
    script(&td, "sloop-smtpd", stubborn);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[("supervisor.stop_timeout", "\"1s\"")]);
    let mut d = Daemon::start(&cfg, port);
    assert!(wait_until(Duration::from_secs(10), || {
        pids(&td, "sloop-smtpd").len() == 2 && pids(&td, "sloop-qmgr").len() == 1
    }));
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).expect("sloopd stops");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "waited for the deadline: {took:?}"
    );
    // The stop deadline (1 s), then SIGKILL: done by then, give or take the margin.
    assert!(
        took < Duration::from_secs(1) + sloop_tests::LOAD_MARGIN,
        "stopped soon after it: {took:?}"
    );
    let all: Vec<i32> = [pids(&td, "sloop-smtpd"), pids(&td, "sloop-qmgr")].concat();
    assert!(all.iter().all(|p| !alive(*p)), "children left: {all:?}");
    let log = d.log_text();
    assert!(
        log.contains("still running at the stop deadline: SIGKILL"),
        "{log}"
    );
    assert!(log.contains("killed by signal SIGKILL"), "{log}");
    assert!(!listening(port));
    assert!(!td.run().join("sloopd.pid").exists());
}

#[test]
fn sighup_rejects_a_broken_config_and_rolls_children_onto_a_valid_one() {
    let td = TestDir::new("sv-reload");
    script(&td, "sloop-smtpd", SLEEPER);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[]);
    let d = Daemon::start(&cfg, port);
    assert!(wait_until(Duration::from_secs(10), || {
        pids(&td, "sloop-smtpd").len() == 2 && pids(&td, "sloop-qmgr").len() == 1
    }));
    let first: Vec<i32> = [pids(&td, "sloop-smtpd"), pids(&td, "sloop-qmgr")].concat();

    // A broken file: the reload is refused, every error logged, nothing restarted.
    fake_config(
        &td,
        port,
        &[
            ("smtpd.greeting", "\"bad\\r\\ngreeting\""),
            ("smtpd.max_message_size", "\"25X\""),
        ],
    );
    d.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || d
        .log_text()
        .contains("reload rejected")));
    // SIGUSR1 is handled after the reload: once its line shows, the reload is done.
    assert!(status_shows(
        &d,
        "workers=2 idle=0 busy=0 starting=2 retiring=0"
    ));
    let log = d.log_text();
    for key in ["smtpd.greeting", "smtpd.max_message_size"] {
        assert!(
            log.lines().any(
                |l| l.contains("reload rejected, keeping the running configuration")
                    && l.contains(key)
            ),
            "{key}: {log}"
        );
    }
    assert_eq!(pids(&td, "sloop-smtpd").len(), 2, "no worker restarted");
    assert_eq!(pids(&td, "sloop-qmgr").len(), 1);
    assert!(first.iter().all(|p| alive(*p)));
    assert!(listening(port));

    // A valid, changed file: every child is replaced, the new listener is bound.
    let port2 = free_port();
    let listen = format!("[\"127.0.0.1:{port}\", \"127.0.0.1:{port2}\"]");
    fake_config(
        &td,
        port,
        &[("smtpd.min_idle", "3"), ("smtpd.listen", &listen)],
    );
    d.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(15), || {
            pids(&td, "sloop-smtpd").len() == 5 && pids(&td, "sloop-qmgr").len() == 2
        }),
        "{}",
        d.log_text()
    );
    assert!(wait_until(Duration::from_secs(10), || first
        .iter()
        .all(|p| !alive(*p))));
    assert!(listening(port) && listening(port2));
    assert!(d.log_text().contains("configuration reloaded"));
}

#[test]
fn the_pool_keeps_min_idle_workers_and_grows_to_the_limit_when_busy() {
    let td = TestDir::new("sv-pool");
    // Reports busy while <dir>/busy exists, idle otherwise (pool_proto.rs records),
    // after a line of garbage that sloopd must log and skip.
    let worker = "echo $$ $(readlink /proc/$$/fd/$SLOOP_LISTEN_FDS) >> @LOG\n\
        echo 'not a record' >&$SLOOP_STATUS_FD\n\
        if [ -e @DIR/busy ]; then s=B; else s=I; fi\n\
        printf \"${s}%010d    \\n\" $$ >&$SLOOP_STATUS_FD\n\
        exec sleep 1000\n";
    script(&td, "sloop-smtpd", worker);
    // The queue manager must not inherit the listeners or the status pipe.
    let qmgr = "for f in /proc/$$/fd/*; do readlink $f; done > @DIR/qmgr.fds\n\
        echo $$ >> @LOG\nexec sleep 1000\n";
    script(&td, "sloop-qmgr", qmgr);
    std::fs::write(td.path.join("busy"), "").unwrap();
    let port = free_port();
    let cfg = fake_config(
        &td,
        port,
        &[("smtpd.min_idle", "2"), ("smtpd.max_processes", "4")],
    );
    let d = Daemon::start(&cfg, port);
    assert!(
        status_shows(&d, "workers=4 idle=0 busy=4"),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("process limit reached"));
    assert!(d
        .log_text()
        .contains("garbage on the status pipe ignored: not a record"));
    assert_eq!(
        pids(&td, "sloop-smtpd").len(),
        4,
        "never past max_processes"
    );

    // Idle workers after a reload: exactly min_idle are kept.
    std::fs::remove_file(td.path.join("busy")).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(status_shows(
        &d,
        "workers=2 idle=2 busy=0 starting=0 retiring=0"
    ));
    assert_eq!(pids(&td, "sloop-smtpd").len(), 6, "{}", d.log_text());
}

#[test]
fn daemon_mode_detaches_and_writes_the_daemons_pid() {
    let td = TestDir::new("sv-daemon");
    script(&td, "sloop-smtpd", SLEEPER);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[("smtpd.min_idle", "1")]);
    let log = std::fs::File::create(td.path.join("daemon.log")).unwrap();
    let status = Command::new(bin("sloopd"))
        .args(["--daemon", "-c"])
        .arg(&cfg)
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success(), "the launching process exits 0");
    let pid_file = td.run().join("sloopd.pid");
    let mut pid = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0 && listening(port)
    }));
    let text = std::fs::read_to_string(td.path.join("daemon.log")).unwrap();
    assert!(text.contains(&format!("sloopd[{pid}]")), "{text}");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)
        && !pid_file.exists()));
}

#[test]
fn children_run_as_server_user_when_sloopd_is_root() {
    let td = TestDir::new("sv-user");
    // Children write to the inherited stderr (sloopd's log): they may not be able to
    // write into the test directory once privileges are dropped.
    script(
        &td,
        "sloop-smtpd",
        "echo \"worker uid=$(id -u)\" >&2\nexec sleep 1000\n",
    );
    script(
        &td,
        "sloop-qmgr",
        "echo \"qmgr uid=$(id -u)\" >&2\nexec sleep 1000\n",
    );
    let port = free_port();
    let cfg = fake_config(
        &td,
        port,
        &[("server.user", "\"nobody\""), ("smtpd.min_idle", "1")],
    );
    let d = Daemon::start(&cfg, port);
    let root = nix::unistd::Uid::effective().is_root();
    let want = if root {
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("a nobody user")
            .uid
    } else {
        nix::unistd::Uid::effective()
    };
    let worker = format!("worker uid={want}");
    let qmgr = format!("qmgr uid={want}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = d.log_text();
            log.contains(&worker) && log.contains(&qmgr)
        }),
        "{}",
        d.log_text()
    );
    if root {
        use std::os::unix::fs::MetadataExt;
        // What the children write is server.user's; the spool root and the run dir
        // (where the pid file lives) stay root's (docs/security.md).
        for dir in [
            td.spool().join("incoming"),
            td.run().join("clients"),
            td.mail(),
        ] {
            let owner = std::fs::metadata(&dir).unwrap().uid();
            assert_eq!(
                owner,
                want.as_raw(),
                "{} owned by server.user",
                dir.display()
            );
        }
        for dir in [td.spool(), td.run()] {
            assert_eq!(
                std::fs::metadata(&dir).unwrap().uid(),
                0,
                "{}",
                dir.display()
            );
        }
    } else {
        assert!(d.log_text().contains("server.user=nobody ignored"));
    }
}

#[test]
fn the_sysv_init_script_starts_reloads_and_stops_sloopd() {
    if Command::new("start-stop-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("start-stop-daemon is not installed: the init script cannot be run here");
        return;
    }
    let td = TestDir::new("sv-init");
    script(&td, "sloop-smtpd", SLEEPER);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[("smtpd.min_idle", "1")]);
    let pid_file = td.run().join("sloopd.pid");
    let log = td.path.join("init.log");
    let defaults = td.path.join("defaults");
    std::fs::write(
        &defaults,
        format!(
            "DAEMON={}\nCONFIG={}\nPIDFILE={}\nLOGFILE={}\n",
            bin("sloopd").display(),
            cfg.display(),
            pid_file.display(),
            log.display()
        ),
    )
    .unwrap();
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sloop.init");
    let run = |action: &str| {
        let out = Command::new("sh")
            .arg(&init)
            .arg(action)
            .env("SLOOP_DEFAULTS", &defaults)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(run("start").0, Some(0));
    assert!(wait_until(Duration::from_secs(10), || listening(port)
        && pid_file.exists()));
    let (code, text) = run("status");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("is running"), "{text}");
    assert_eq!(run("reload").0, Some(0));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || log_text()
        .contains("configuration reloaded")));
    assert_eq!(run("stop").0, Some(0));
    assert!(!listening(port));
    assert!(!pid_file.exists());
    assert_eq!(run("status").0, Some(3), "LSB: not running");
    assert!(log_text().contains("stopped"));
}

#[test]
fn a_child_that_dies_before_serving_waits_the_startup_crash_pause() {
    let td = TestDir::new("sv-early");
    script(&td, "sloop-smtpd", SLEEPER);
    // Exits cleanly at once: for a queue manager that is dying before it served.
    script(&td, "sloop-qmgr", "date +%s%N >> @LOG\nexit 0\n");
    let port = free_port();
    let cfg = fake_config(
        &td,
        port,
        &[
            ("smtpd.min_idle", "1"),
            ("supervisor.restart_min", "\"10ms\""),
            ("supervisor.startup_crash_pause", "\"400ms\""),
        ],
    );
    let d = Daemon::start(&cfg, port);
    assert!(wait_until(Duration::from_secs(15), || starts(
        &td,
        "sloop-qmgr"
    )
    .len()
        >= 3));
    let times: Vec<u128> = starts(&td, "sloop-qmgr")
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    for w in times.windows(2) {
        let gap = (w[1] - w[0]) / 1_000_000;
        assert!(gap >= 400, "restarted after {gap}ms, before the pause");
    }
    let log = d.log_text();
    assert!(log.contains("exited status=0 before it served"), "{log}");
    assert!(log.contains("restart in 400ms"), "{log}");
}

#[test]
fn real_smtpd_workers_keep_min_idle_ready_while_one_is_busy() {
    let td = TestDir::new("sv-real-pool");
    let port = free_port();
    let cfg = td.write_config(port, &[("smtpd.min_idle", "3")], "");
    // (Daemon::start's own probe connection is a session too: more may be idle.)
    let d = Daemon::start(&cfg, port);
    assert!(
        pool_reaches(&d, |idle, busy| idle >= 3 && busy == 0),
        "{}",
        d.log_text()
    );
    let mut client = sloop_tests::Smtp::connect(port);
    assert_eq!(client.code(), 220);
    assert!(
        pool_reaches(&d, |idle, busy| idle >= 3 && busy == 1),
        "min_idle kept while a session runs: {}",
        d.log_text()
    );
    assert_eq!(client.cmd("QUIT"), 221);
    assert!(pool_reaches(&d, |idle, busy| idle >= 4 && busy == 0));
}

/// Regression: SIGUSR1/SIGHUP sent as soon as the port was bound used to arrive before
/// the handlers were installed and kill sloopd with the default action.
#[test]
fn signals_right_after_the_bind_are_queued_not_fatal() {
    let td = TestDir::new("sv-early-signal");
    script(&td, "sloop-smtpd", SLEEPER);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[("smtpd.min_idle", "1")]);
    let mut d = Daemon::spawn(&cfg);
    assert!(wait_until(Duration::from_secs(10), || listening(port)));
    d.signal(Signal::SIGUSR1);
    d.signal(Signal::SIGHUP);
    assert!(status_shows(&d, "workers=1"), "{}", d.log_text());
    assert!(d.child.try_wait().unwrap().is_none(), "sloopd survived");
}

#[test]
fn a_reload_that_fixes_a_missing_program_starts_it_without_waiting_out_the_backoff() {
    let td = TestDir::new("sv-fix");
    script(&td, "sloop-smtpd", SLEEPER);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let slow = [
        ("smtpd.min_idle", "1"),
        ("supervisor.startup_crash_pause", "\"1h\""),
        ("supervisor.restart_max", "\"1h\""),
    ];
    let empty = quoted(&td.path.join("empty"));
    let mut broken = slow.to_vec();
    broken.push(("server.bin_dir", &empty));
    let cfg = td.write_config(port, &broken, "");
    let d = Daemon::start(&cfg, port);
    assert!(wait_until(Duration::from_secs(10), || d
        .log_text()
        .contains("retrying in 1h")));
    fake_config(&td, port, &slow);
    d.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            pids(&td, "sloop-smtpd").len() == 1 && pids(&td, "sloop-qmgr").len() == 1
        }),
        "{}",
        d.log_text()
    );
}

/// Regression: `tmp/` was cleaned only when the queue manager started, so the files
/// of smtpd workers killed mid-message piled up until then. When sloopd reaps a
/// worker that did not exit cleanly, it removes the `tmp/` files named with its pid;
/// the files of a live writer stay.
#[test]
fn a_killed_workers_tmp_files_are_removed_when_it_is_reaped() {
    let td = TestDir::new("sv-tmp-sweep");
    script(&td, "sloop-smtpd", SLEEPER);
    script(&td, "sloop-qmgr", SLEEPER);
    let port = free_port();
    let cfg = fake_config(&td, port, &[("smtpd.min_idle", "1")]);
    let d = Daemon::start(&cfg, port);
    assert!(wait_until(Duration::from_secs(15), || {
        !pids(&td, "sloop-smtpd").is_empty() && !pids(&td, "sloop-qmgr").is_empty()
    }));
    let worker = pids(&td, "sloop-smtpd")[0];
    let qmgr = pids(&td, "sloop-qmgr")[0];
    let tmp = td.spool().join("tmp");
    assert!(wait_until(Duration::from_secs(15), || tmp.is_dir()));
    let id = |pid: i32| format!("{:013X}{:06X}001", 0x18d_0000_0000u64, pid);
    let dead = tmp.join(id(worker));
    let live = tmp.join(id(qmgr));
    std::fs::write(&dead, b"half a message").unwrap();
    std::fs::write(&live, b"being written").unwrap();
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || !dead.exists()),
        "{}",
        d.log_text()
    );
    assert!(live.exists());
    assert!(
        d.log_text().contains("removed 1 tmp/ file"),
        "{}",
        d.log_text()
    );
}
