//! Shared by the `qmgr_*` end-to-end tests: a temp spool with a config whose
//! `server.bin_dir` holds a fake `sloop-deliver` (a Python script speaking the delivery
//! protocol of common/src/delivery_proto.rs, with a per-test `decide()` function), a
//! running `sloop-qmgr`, injection through `sloop_common::spool::commit`, and readers of
//! the fake worker's delivery log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use sloop_common::spool::{commit, Envelope, QueueState, Recipient, Spool};
use sloop_tests::{bin, wait_until, TestDir};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake worker. `decide(qid, rcpt, sender, first)` returns (outcome, dsn, text) or
/// the strings "crash" / "garbage" / "hang"; `first` is true on the first attempt of
/// that queue ID (a marker file per ID in `state/`). Every answered recipient is logged
/// to `deliveries.log` as `qid TAB rcpt TAB outcome`; messages from `<>` are saved to
/// `saved/<qid>` (the message part of the queue file).
const WORKER: &str = r#"#!/usr/bin/env python3
import os, sys, time
from urllib.parse import unquote
BASE = __BASE__
def esc(s):
    return s.replace('%', '%25').replace('\t', '%09').replace('\r', '%0D').replace('\n', '%0A')
def out(s):
    sys.stdout.write(s)
    sys.stdout.flush()
def first_time(qid):
    marker = os.path.join(BASE, 'state', qid)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        return True
    except FileExistsError:
        return False
def log(qid, rcpt, outcome):
    fd = os.open(os.path.join(BASE, 'deliveries.log'), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, ('%s\t%s\t%s\n' % (qid, rcpt, outcome)).encode())
    os.close(fd)
def save(qid, path):
    data = open(path, 'rb').read()
    size = int(data[-17:-1], 16)
    open(os.path.join(BASE, 'saved', qid), 'wb').write(data[:size])
__DECIDE__
while True:
    line = sys.stdin.readline()
    if not line:
        break
    f = line.rstrip('\n').split('\t')
    job, qid, path, sender = f[1], unquote(f[2]), unquote(f[3]), unquote(f[6])
    rcpts = [unquote(x) for x in f[8:]]  # f[7]: envelope indices
    first = first_time(qid)
    if sender == '':
        save(qid, path)
    for i, r in enumerate(rcpts):
        d = decide(qid, r, sender, first)
        if d == 'crash':
            os._exit(3)
        if d == 'garbage':
            out('this is not the protocol\n')
            continue
        if d == 'hang':
            time.sleep(600)
        outcome, dsn, text = d
        log(qid, r, outcome)
        out('rcpt\t%s\t%d\t%s\t%s\tfake\t%s\n' % (job, i, outcome, dsn, esc(text)))
    out('done\t%s\n' % job)
"#;

/// A decide() that delivers everything.
pub const ALL_OK: &str =
    "def decide(qid, rcpt, sender, first):\n    return ('ok', '2.0.0', 'delivered')\n";

/// A test setup: directory, spool, fake worker, config.
pub struct Setup {
    pub dir: TestDir,
    pub config: PathBuf,
    pub spool: Spool,
}

impl Setup {
    /// `decide` is the Python body of the fake worker's decision function.
    pub fn new(name: &str, decide: &str, overrides: &[(&str, &str)]) -> Setup {
        Setup::build(name, Some(decide), overrides)
    }

    /// A setup running the real `target/debug/sloop-deliver`.
    pub fn with_real_workers(name: &str, overrides: &[(&str, &str)]) -> Setup {
        bin("sloop-deliver");
        Setup::build(name, None, overrides)
    }

    fn build(name: &str, decide: Option<&str>, overrides: &[(&str, &str)]) -> Setup {
        let dir = TestDir::new(name);
        let fake_bin = dir.path.join("bin");
        for d in ["bin", "state", "saved"] {
            std::fs::create_dir_all(dir.path.join(d)).unwrap();
        }
        let bin_value = format!("{:?}", fake_bin.display().to_string());
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(decide) = decide {
            let script = WORKER
                .replace("__BASE__", &format!("{:?}", dir.path.display().to_string()))
                .replace("__DECIDE__", decide);
            let worker = fake_bin.join("sloop-deliver");
            std::fs::write(&worker, script).unwrap();
            std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
            all.push(("server.bin_dir", bin_value.as_str()));
        }
        all.extend_from_slice(overrides);
        let config = dir.write_config(sloop_tests::free_port(), &all, "");
        let spool = Spool::new(dir.spool());
        spool.ensure_layout().unwrap();
        Setup { dir, config, spool }
    }

    /// Links the real `target/debug/<name>` into the fake bin dir (so `sloopd` finds
    /// its children next to the fake `sloop-deliver`).
    pub fn link_real(&self, name: &str) {
        std::os::unix::fs::symlink(bin(name), self.dir.path.join("bin").join(name)).unwrap();
    }

    /// Commits a message; returns its queue ID.
    pub fn inject(&self, sender: &str, rcpts: &[&str], subject: &str) -> String {
        let env = Envelope::new(sender, rcpts.iter().map(|r| Recipient::new(*r)).collect());
        let msg = format!(
            "From: <{sender}>\r\nTo: <{}>\r\nSubject: {subject}\r\n\r\nHello.\r\n",
            rcpts.join(">, <")
        );
        commit(&self.spool, &mut msg.as_bytes(), env, 0).unwrap()
    }

    /// Commits `message` as given; returns its queue ID.
    pub fn inject_raw(&self, sender: &str, rcpts: &[&str], message: &[u8]) -> String {
        let env = Envelope::new(sender, rcpts.iter().map(|r| Recipient::new(*r)).collect());
        commit(&self.spool, &mut &message[..], env, 0).unwrap()
    }

    /// Starts `sloop-qmgr -c config` with its log in `<dir>/qmgr.log` (appended).
    pub fn start(&self) -> Qmgr {
        let log = self.dir.path.join("qmgr.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(bin("sloop-qmgr"))
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Qmgr { child, log }
    }

    /// Lines of the fake worker's log: (queue ID, recipient, outcome).
    pub fn deliveries(&self) -> Vec<(String, String, String)> {
        let text =
            std::fs::read_to_string(self.dir.path.join("deliveries.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
            })
            .collect()
    }

    /// How many `ok` results each (queue ID, recipient) got.
    pub fn ok_counts(&self) -> HashMap<(String, String), usize> {
        let mut m = HashMap::new();
        for (q, r, o) in self.deliveries() {
            if o == "ok" {
                *m.entry((q, r)).or_insert(0) += 1;
            }
        }
        m
    }

    /// Number of queue files in `state`.
    pub fn count(&self, state: QueueState) -> usize {
        self.spool.list(state).map(|v| v.len()).unwrap_or(0)
    }

    /// True when incoming, active and deferred are all empty.
    pub fn queue_empty(&self) -> bool {
        // Reads at most one entry per directory: cheap even with 100,000 queued.
        let states = [
            QueueState::Incoming,
            QueueState::Active,
            QueueState::Deferred,
        ];
        states.iter().all(|s| {
            std::fs::read_dir(self.spool.state_dir(*s))
                .map(|mut rd| rd.next().is_none())
                .unwrap_or(true)
        })
    }

    /// Waits up to `secs` for the queue to empty; panics with the log otherwise. Polls
    /// every 100 ms: listing a directory of 100,000 files every 10 ms would cost more
    /// CPU than the queue manager under test.
    pub fn wait_drained(&self, q: &Qmgr, secs: u64) {
        let ok = self.wait_empty(secs);
        assert!(
            ok,
            "queue not drained: incoming {} active {} deferred {}\n{}",
            self.count(QueueState::Incoming),
            self.count(QueueState::Active),
            self.count(QueueState::Deferred),
            tail(&q.log_text(), 40)
        );
    }

    /// Polls (every 100 ms, until `secs` pass) for an empty queue; true if it emptied.
    pub fn wait_empty(&self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.queue_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The message saved by the fake worker for bounce `qid`.
    pub fn saved(&self, qid: &str) -> PathBuf {
        self.dir.path.join("saved").join(qid)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running sloop-qmgr, killed on drop.
pub struct Qmgr {
    pub child: Child,
    pub log: PathBuf,
}

impl Qmgr {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for the exit; returns the exit code (None on timeout or signal).
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let mut code = None;
        wait_until(Duration::from_secs(secs), || match self.child.try_wait() {
            Ok(Some(st)) => {
                code = st.code();
                true
            }
            _ => false,
        });
        code
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, secs: u64) {
        let ok = wait_until(Duration::from_secs(secs), || {
            self.log_text().contains(needle)
        });
        assert!(ok, "log lacks {needle:?}:\n{}", tail(&self.log_text(), 40));
    }
}

impl Drop for Qmgr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pid of the child of `parent` whose command name is `comm`, from /proc.
pub fn child_pid(parent: i32, comm: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if name == comm && ppid == Some(parent.to_string().as_str()) {
            return Some(pid);
        }
    }
    None
}

/// Checks a message file with Python's email package: prints its content type and the
/// delivery-status part's text.
pub fn python_report(path: &Path) -> (String, String) {
    let script = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
print(m.get_content_type(), m.get_param('report-type'))
for part in m.walk():
    print('PART', part.get_content_type())
    if part.get_content_type() == 'message/delivery-status':
        for block in part.get_payload():
            for k, v in block.items():
                print('DS', k + ':', v)
"#;
    let (code, out, err) = sloop_tests::python(script, &[&path.display().to_string()]);
    assert_eq!(code, 0, "python: {err}");
    let first = out.lines().next().unwrap_or("").to_string();
    (first, out)
}
