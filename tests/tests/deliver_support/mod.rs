//! Shared by the deliver_* tests: commit a message into a test spool, run one
//! `sloop-deliver` worker and talk the qmgr pipe protocol to it with deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod sink;

use sloop_common::delivery_proto::{Job, Reply, Transport};
use sloop_common::spool::status::Outcome;
use sloop_common::spool::{commit, Envelope, QueueState, Recipient, Spool};
use sloop_tests::{bin, TestDir};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for one job's answer.
pub const JOB_DEADLINE: Duration = Duration::from_secs(30);

/// Commits `message` for `rcpts` into the test spool; returns (queue ID, path).
pub fn queue(dir: &TestDir, sender: &str, rcpts: &[&str], message: &[u8]) -> (String, PathBuf) {
    let spool = Spool::new(dir.spool());
    spool.ensure_layout().unwrap();
    let env = Envelope::new(sender, rcpts.iter().map(|r| Recipient::new(*r)).collect());
    let id = commit(&spool, &mut &message[..], env, 0).unwrap();
    let path = spool.path(QueueState::Incoming, &id);
    (id, path)
}

/// One result line, decoded.
#[derive(Debug, Clone)]
pub struct Res {
    pub outcome: Outcome,
    pub dsn: String,
    pub relay: String,
    pub text: String,
}

/// A running `sloop-deliver` worker.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_job: u64,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(dir: &TestDir, transport: &str, config: &Path) -> Worker {
        let log = dir.path.join(format!("deliver-{transport}.log"));
        let mut child = Command::new(bin("sloop-deliver"))
            .arg(transport)
            .env("SLOOP_CONFIG", config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            stdin: child.stdin.take(),
            child,
            lines,
            next_job: 1,
            log,
        }
    }

    /// Sends one job and returns one result per recipient (checked against `done`).
    pub fn run(
        &mut self,
        transport: Transport,
        path: &Path,
        sender: &str,
        rcpts: &[&str],
    ) -> Vec<Res> {
        let job = Job {
            job_id: self.next_job,
            queue_id: sloop_common::spool::queue_id::QueueId::parse(
                &path.file_name().unwrap().to_string_lossy(),
            )
            .unwrap_or_default(),
            path: path.display().to_string(),
            transport,
            nexthop: String::new(),
            sender: sender.to_string(),
            indices: (0..rcpts.len()).collect(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        };
        self.next_job += 1;
        self.send_raw(&job.to_line());
        self.results(job.job_id, rcpts.len())
    }

    pub fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Reads the `rcpt` lines of job `id` and its `done`.
    pub fn results(&mut self, id: u64, n: usize) -> Vec<Res> {
        let mut out: Vec<Option<Res>> = vec![None; n];
        loop {
            let line = self
                .lines
                .recv_timeout(JOB_DEADLINE)
                .unwrap_or_else(|_| panic!("no answer from worker; log:\n{}", self.log_text()));
            match Reply::parse(&line).unwrap_or_else(|| panic!("garbage from worker: {line:?}")) {
                Reply::Rcpt {
                    job_id,
                    index,
                    outcome,
                    dsn,
                    relay,
                    text,
                } => {
                    assert_eq!(job_id, id);
                    out[index] = Some(Res {
                        outcome,
                        dsn,
                        relay,
                        text,
                    });
                }
                Reply::Done { job_id } => {
                    assert_eq!(job_id, id);
                    return out
                        .into_iter()
                        .map(|r| r.expect("a result per recipient"))
                        .collect();
                }
            }
        }
    }

    /// Closes stdin and waits for the exit code.
    pub fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let ok = sloop_tests::wait_until(JOB_DEADLINE, || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(ok, "worker did not exit at EOF");
        self.child.wait().unwrap().code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
