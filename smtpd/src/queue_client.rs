//! Running the queue program at the end of data (issue 3, point 6).
//!
//! The program (`smtpd.queue_program`, default `sloop-queue` from the bin dir) follows
//! qmail-queue(8): the message on its fd 0, then the envelope
//! (`Envelope::to_qmail`) on its fd 1, exit 0 when committed. A helper thread writes
//! both (message first, closing fd 0, then the envelope) and reaps the child; the
//! session thread waits at most `smtpd.queue_timeout`, then SIGKILLs it. The queue ID
//! the session put in the Received header goes in `SLOOP_QUEUE_ID`, the config path
//! in `SLOOP_CONFIG`. Exit codes map through `exitcode::queue_verdict`: 11-40
//! permanent, anything else (and a signal, a hang, a spawn failure, a write failure)
//! temporary. `250` is sent only after exit 0 (ARCHITECTURE.md §3, invariant 1).

use crate::session::{QueueJob, QueueOutcome};
use sloop_common::exitcode::{queue_verdict, QueueVerdict};
use sloop_common::Config;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs the queue program for `job`.
pub fn run(cfg: &Config, job: QueueJob) -> QueueOutcome {
    let program = cfg
        .smtpd
        .queue_program
        .clone()
        .unwrap_or_else(|| cfg.program("sloop-queue"));
    let (child, env_w) = match spawn(cfg, &program, &job.id) {
        Ok(c) => c,
        Err(e) => return QueueOutcome::Temporary(format!("cannot run {}: {e}", program.display())),
    };
    feed_and_wait(child, env_w, job, cfg.smtpd.queue_timeout)
}

/// Starts the program with a pipe on fd 0 (message) and one on fd 1 (envelope): the
/// program reads the envelope from its fd 1, so that pipe's read end is its stdout
/// and the write end (close-on-exec here) is returned.
fn spawn(cfg: &Config, program: &Path, id: &str) -> std::io::Result<(Child, OwnedFd)> {
    let (env_r, env_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = Command::new(program);
    cfg.pass_to(&mut cmd);
    let child = cmd
        .env("SLOOP_QUEUE_ID", id)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(env_r))
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok((child, env_w))
}

/// Writes message then envelope from a helper thread that also reaps the child;
/// waits at most `timeout`, then SIGKILLs the child.
fn feed_and_wait(
    mut child: Child,
    env_w: OwnedFd,
    job: QueueJob,
    timeout: Duration,
) -> QueueOutcome {
    let pid = child.id();
    let Some(mut fd0) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return QueueOutcome::Temporary("queue program pipes missing".into());
    };
    let mut fd1 = std::fs::File::from(env_w);
    let envelope = job.envelope.to_qmail();
    let message = job.message;
    let (tx, rx) = mpsc::channel();
    let feeder = std::thread::spawn(move || {
        let written = fd0
            .write_all(&message)
            .and_then(|()| {
                drop(fd0);
                fd1.write_all(&envelope)
            })
            .map_err(|e| e.to_string());
        drop(fd1);
        let _ = tx.send((written, child.wait()));
    });
    let outcome = match rx.recv_timeout(timeout) {
        Ok((written, Ok(status))) => verdict(status, written),
        Ok((_, Err(e))) => QueueOutcome::Temporary(format!("cannot wait for queue program: {e}")),
        Err(_) => {
            kill(pid);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            QueueOutcome::Temporary(format!(
                "queue program timed out after {} s; killed",
                timeout.as_secs()
            ))
        }
    };
    let _ = feeder.join();
    outcome
}

fn verdict(status: ExitStatus, written: Result<(), String>) -> QueueOutcome {
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return QueueOutcome::Temporary(format!("queue program killed by signal {sig}"));
    };
    match (queue_verdict(code), written) {
        (QueueVerdict::Committed, Ok(())) => QueueOutcome::Committed,
        (QueueVerdict::Committed, Err(e)) => QueueOutcome::Temporary(format!(
            "queue program exited 0 without reading everything: {e}"
        )),
        (QueueVerdict::Permanent, _) => QueueOutcome::Permanent(format!("exit status {code}")),
        (QueueVerdict::Temporary, _) => QueueOutcome::Temporary(format!("exit status {code}")),
    }
}

fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
