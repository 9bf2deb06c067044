//! `sloopd` for the failure tests: started with the filters' config, logging to a
//! syslog receiver of the test's own, and the checks on its log lines and budgets.

use sloop_tests::{free_port, wait_until, Daemon, Smtp, TestDir};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects the RFC 3164 datagrams `log.target = "syslog"` sends, without the `<PRI>`:
/// `sloop/smtpd[123]: warning: policy p1: ...`.
pub struct Syslog {
    pub path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Syslog {
    pub fn start(path: PathBuf) -> Syslog {
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let text = match text.find('>') {
                        Some(i) if text.starts_with('<') => &text[i + 1..],
                        _ => &text[..],
                    };
                    l.lock()
                        .unwrap()
                        .push(text.trim_end_matches('\n').to_string());
                }
            }
        });
        Syslog { path, lines, stop }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The first line containing every one of `needles`, waiting up to `timeout`. A
    /// needle may leave out the queue ID (`warning: policy p: ...` finds
    /// `warning: 661B...: policy p: ...`): see [`without_id`].
    pub fn wait_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.lines().into_iter().find(|l| {
                let short = without_id(l);
                needles.iter().all(|n| l.contains(n)) || needles.iter().all(|n| short.contains(n))
            });
            found.is_some()
        });
        found
    }

    /// Lines containing `needle` (with or without their queue ID).
    pub fn count(&self, needle: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.contains(needle) || without_id(l).contains(needle))
            .count()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `sloopd -c config` in a mount namespace where `resolv` is /etc/resolv.conf.
fn spawn_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
    let log = config.with_file_name("sloopd.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(sloop_tests::bin("sloopd"))
        .arg("-c")
        .arg(config)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    Daemon { child, log }
}

fn spawn_with_resolv_conf(config: &Path, resolv: &Path) -> Daemon {
    let log = config.with_file_name("sloopd.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3""#)
        .arg("sh")
        .arg(resolv)
        .arg(sloop_tests::bin("sloopd"))
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    Daemon { child, log }
}

/// A syslog line's message without the program and pid, and without the queue ID (or
/// `NOQUEUE`) that follows the level word: `sloop/smtpd[7]: warning: 661B..: policy p: x`
/// gives `warning: policy p: x`.
pub fn without_id(line: &str) -> String {
    let msg = line.split_once("]: ").map_or(line, |(_, m)| m);
    let (level, rest) = ["warning: ", "error: ", "debug: "]
        .iter()
        .find_map(|w| msg.strip_prefix(w).map(|r| (*w, r)))
        .unwrap_or(("", msg));
    let rest = match rest.split_once(": ") {
        Some((id, r)) if is_queue_id(id) || id == "NOQUEUE" => r,
        _ => rest,
    };
    format!("{level}{rest}")
}

/// The queue ID right after the level word of a syslog line, if any.
pub fn queue_id(line: &str) -> Option<String> {
    let msg = line.split_once("]: ").map_or(line, |(_, m)| m);
    let rest = ["warning: ", "error: ", "debug: "]
        .iter()
        .find_map(|w| msg.strip_prefix(w))
        .unwrap_or(msg);
    let (id, _) = rest.split_once(": ")?;
    is_queue_id(id).then(|| id.to_string())
}

fn is_queue_id(s: &str) -> bool {
    s.len() >= 10
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A `sloopd` with filter hooks, logging to a [`Syslog`] of its own.
pub struct Mta {
    pub dir: TestDir,
    pub port: u16,
    pub log: Syslog,
    pub daemon: Daemon,
}

impl Mta {
    /// Starts sloopd with `overrides` (dotted keys) and `hooks` (TOML: `[[policy]]`,
    /// `[[milter]]`, `[access]`), and waits until it listens. `dir` may already hold
    /// the fakes' sockets.
    pub fn start(dir: TestDir, overrides: &[(&str, &str)], hooks: &str) -> Mta {
        Mta::start_with(dir, overrides, hooks, None)
    }

    /// As [`start`](Self::start), with `resolv_conf` bind-mounted on /etc/resolv.conf
    /// in a mount namespace of sloopd's own (`unshare -m`), so its DNS goes where the
    /// test says. Needs root (or CAP_SYS_ADMIN).
    pub fn start_with(
        dir: TestDir,
        overrides: &[(&str, &str)],
        hooks: &str,
        resolv_conf: Option<&Path>,
    ) -> Mta {
        Mta::start_env(dir, overrides, hooks, resolv_conf, &[])
    }

    /// As [`start_with`](Self::start_with), with `env` set for sloopd and its children
    /// (`SLOOP_FAULT`).
    pub fn start_env(
        dir: TestDir,
        overrides: &[(&str, &str)],
        hooks: &str,
        resolv_conf: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Mta {
        let port = free_port();
        let log = Syslog::start(dir.path.join("syslog.sock"));
        let sock = format!("{:?}", log.path.display().to_string());
        let mut all: Vec<(&str, &str)> = vec![
            ("log.target", "\"syslog\""),
            ("log.syslog_socket", sock.as_str()),
        ];
        all.extend_from_slice(overrides);
        let config = dir.write_config(port, &all, hooks);
        let mut daemon = match resolv_conf {
            None if env.is_empty() => Daemon::spawn(&config),
            None => spawn_with_env(&config, env),
            Some(resolv) => spawn_with_resolv_conf(&config, resolv),
        };
        // A probe connection would itself run the connect hooks and count as a
        // session: wait until the port is in LISTEN state instead.
        let mut exited = None;
        let ok = wait_until(Duration::from_secs(20), || {
            exited = daemon.child.try_wait().ok().flatten();
            exited.is_some() || listening(port)
        });
        assert!(
            ok && exited.is_none(),
            "sloopd did not listen on {port} ({exited:?}):\n{}\n{}",
            daemon.log_text(),
            log.text()
        );
        // The greeting budgets are measured from the client's connect: let the first
        // worker exist by then, so a loaded machine's fork and exec are not counted.
        let forked = wait_until(Duration::from_secs(20), || {
            log.count("started sloop-smtpd pid=") >= 1
        });
        assert!(forked, "no smtpd worker:\n{}", log.text());
        Mta {
            dir,
            port,
            log,
            daemon,
        }
    }

    /// A new SMTP client, with the instant it connected.
    pub fn connect(&self) -> (Smtp, Instant) {
        let start = Instant::now();
        (Smtp::connect(self.port), start)
    }

    /// Everything logged so far (syslog lines, then sloopd's stderr).
    pub fn all_logs(&self) -> String {
        format!(
            "--- syslog:\n{}\n--- stderr:\n{}",
            self.log.text(),
            self.daemon.log_text()
        )
    }

    /// Waits for a log line containing every one of `needles`; panics with the logs
    /// otherwise.
    pub fn expect_log(&self, needles: &[&str]) -> String {
        match self.log.wait_line(needles, Duration::from_secs(10)) {
            Some(l) => l,
            None => panic!("no log line with {needles:?}\n{}", self.all_logs()),
        }
    }
}

/// True when 127.0.0.1:`port` is a listening TCP socket (per /proc/net/tcp).
pub fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
}

impl Drop for Mta {
    /// `FAKE_HOOK_SHOW_LOGS=1` prints every test's logs, passing or not.
    fn drop(&mut self) {
        if std::env::var_os("FAKE_HOOK_SHOW_LOGS").is_some() {
            println!("{}", self.all_logs());
        }
    }
}

/// Asserts `elapsed` is at most `budget` plus the load margin.
pub fn within(elapsed: Duration, budget: Duration, what: &str) {
    assert!(
        elapsed <= budget + sloop_tests::LOAD_MARGIN,
        "{what}: took {elapsed:?}, budget {budget:?}"
    );
}
