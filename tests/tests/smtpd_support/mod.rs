//! Shared set-up of the smtpd end-to-end tests: a `sloopd` on a free loopback port
//! whose queue program is a wrapper that keeps a copy of what the smtpd sent (message
//! on fd 0, envelope on fd 1) and then runs the real `sloop-queue` against a second
//! spool that no queue manager touches, so each committed queue file can be read back
//! byte for byte with `sloop_common::spool::open_message`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use sloop_tests::{bin, bin_dir, free_port, wait_until, Daemon, TestDir};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running sloopd with the capture wrapper.
pub struct Server {
    pub dir: TestDir,
    pub daemon: Daemon,
    pub port: u16,
}

impl Server {
    /// Starts sloopd with `overrides` (dotted keys) and `env` for its children.
    pub fn start(name: &str, overrides: &[(&str, &str)], env: &[(&str, &str)]) -> Server {
        let dir = TestDir::new(name);
        let port = free_port();
        let wrapper = write_wrapper(&dir);
        let wrapper_q = format!("{:?}", wrapper.display().to_string());
        let mut all: Vec<(&str, &str)> = vec![("smtpd.queue_program", wrapper_q.as_str())];
        all.extend_from_slice(overrides);
        let config = dir.write_config(port, &all, "");
        write_capture_config(&dir, &config);
        let daemon = spawn_daemon(&config, env);
        let ok = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(ok, "sloopd did not listen; log:\n{}", daemon.log_text());
        Server { dir, daemon, port }
    }

    /// The committed queue file of `id` in the capture spool: (envelope, message).
    pub fn committed(&self, id: &str) -> (sloop_common::spool::Envelope, Vec<u8>) {
        let path = self.dir.path.join("capspool").join("incoming").join(id);
        let (env, mut rd) = sloop_common::spool::open_message(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut msg = Vec::new();
        rd.read_to_end(&mut msg).unwrap();
        (env, msg)
    }

    /// IDs of every committed message.
    pub fn committed_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path.join("capspool").join("incoming"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Waits until sloopd reports at least `n` idle smtpd workers (SIGUSR1 status).
    pub fn wait_idle(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.daemon.signal(nix::sys::signal::Signal::SIGUSR1);
            let log = self.log();
            let last = log
                .lines()
                .rev()
                .find(|l| l.contains("status: smtpd workers="))
                .unwrap_or("");
            idle_count(last) >= n
        })
    }

    /// Runs a Python smtplib script; `PORT` is replaced by the port.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let script = script.replace("PORT", &self.port.to_string());
        let (code, out, err) = sloop_tests::python(&script, args);
        assert_eq!(
            code,
            0,
            "python failed: {err}\nstdout: {out}\nlog:\n{}",
            self.log()
        );
        out
    }
}

/// Starts sloopd with extra environment for its children.
pub fn spawn_daemon(config: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
    let log = config.with_file_name("sloopd.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin("sloopd"));
    cmd.arg("-c").arg(config).stdin(Stdio::null());
    cmd.stdout(f.try_clone().unwrap()).stderr(f);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon {
        child: cmd.spawn().unwrap(),
        log,
    }
}

/// `idle=N` of a sloopd status line.
pub fn idle_count(status: &str) -> usize {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("idle="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The message as the client sent it: what follows our Received header.
pub fn strip_received(msg: &[u8]) -> &[u8] {
    assert!(
        msg.starts_with(b"Received: from "),
        "no Received header first"
    );
    let mut i = 0;
    loop {
        let lf = msg[i..].iter().position(|&b| b == b'\n').unwrap() + i;
        i = lf + 1;
        if !matches!(msg.get(i), Some(b' ' | b'\t')) {
            return &msg[i..];
        }
    }
}

/// The queue ID in `250 2.0.0 Ok: queued as <ID>`.
pub fn queued_id(line: &str) -> String {
    line.rsplit(' ').next().unwrap().trim().to_string()
}

fn write_wrapper(dir: &TestDir) -> PathBuf {
    let cap = dir.path.join("capture");
    std::fs::create_dir_all(&cap).unwrap();
    let script = format!(
        "#!/bin/sh\nd={cap:?}\ncat > \"$d/$SLOOP_QUEUE_ID.msg\" || exit 54\n\
         cat <&1 > \"$d/$SLOOP_QUEUE_ID.env\" || exit 54\n\
         SLOOP_CONFIG={capcfg:?} exec {queue:?} < \"$d/$SLOOP_QUEUE_ID.msg\" 1< \"$d/$SLOOP_QUEUE_ID.env\"\n",
        cap = cap.display().to_string(),
        capcfg = dir.path.join("capture.toml").display().to_string(),
        queue = bin_dir().join("sloop-queue").display().to_string(),
    );
    let p = dir.path.join("queue-wrapper.sh");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn write_capture_config(dir: &TestDir, config: &std::path::Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let spool = format!("{:?}", dir.spool().display().to_string());
    let cap = format!("{:?}", dir.path.join("capspool").display().to_string());
    std::fs::write(dir.path.join("capture.toml"), text.replace(&spool, &cap)).unwrap();
}
