//! Helpers of the supervisor end-to-end tests: fake `sloop-smtpd` / `sloop-qmgr`
//! shell scripts in a temp `server.bin_dir` that record their starts, readers for those
//! records, and polling on sloopd's SIGUSR1 status line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sloop_tests::{wait_until, Daemon, TestDir};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A child that records its pid and sleeps (dies on SIGTERM/SIGHUP by default).
pub const SLEEPER: &str = "echo $$ >> @LOG\nexec sleep 1000\n";

/// Writes an executable `/bin/sh` script named `name` into `dir`; `@DIR` in `body`
/// becomes the test directory, `@LOG` a per-program start log `<dir>/<name>.starts`.
pub fn script(td: &TestDir, name: &str, body: &str) {
    let bin = td.path.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = td.path.join(format!("{name}.starts"));
    let body = body
        .replace("@LOG", &log.display().to_string())
        .replace("@DIR", &td.path.display().to_string());
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&path, mode).unwrap();
}

/// The lines a fake program wrote to its start log.
pub fn starts(td: &TestDir, name: &str) -> Vec<String> {
    std::fs::read_to_string(td.path.join(format!("{name}.starts")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn pids(td: &TestDir, name: &str) -> Vec<i32> {
    starts(td, name)
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

pub fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A config on `port` whose programs are the fake ones in `<td>/bin`.
pub fn fake_config(td: &TestDir, port: u16, overrides: &[(&str, &str)]) -> PathBuf {
    let bin = quoted(&td.path.join("bin"));
    let mut all = vec![("server.bin_dir", bin.as_str())];
    all.extend_from_slice(overrides);
    td.write_config(port, &all, "")
}

/// Sends SIGUSR1 until sloopd's status line contains `want`.
pub fn status_shows(d: &Daemon, want: &str) -> bool {
    wait_until(Duration::from_secs(15), || {
        d.signal(Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(100));
        d.log_text()
            .lines()
            .any(|l| l.contains("status:") && l.contains(want))
    })
}

pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Sends SIGUSR1 until sloopd's latest status line satisfies `ok(idle, busy)`.
pub fn pool_reaches(d: &Daemon, ok: impl Fn(usize, usize) -> bool) -> bool {
    let field = |line: &str, name: &str| -> Option<usize> {
        let rest = line.split(&format!(" {name}=")).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    wait_until(Duration::from_secs(15), || {
        d.signal(Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(100));
        let log = d.log_text();
        let Some(line) = log.lines().rev().find(|l| l.contains("status:")) else {
            return false;
        };
        matches!((field(line, "idle"), field(line, "busy")), (Some(i), Some(b)) if ok(i, b))
    })
}
