//! Committing the message at the end of data on one of
//! two paths chosen by `smtpd.queue_program`.
//!
//! **In-process (the default, `smtpd.queue_program` empty).** The worker calls
//! `sloop_common::spool::inject::commit_bytes` itself, into the worker's spool handle
//! (`server.spool_dir`, kept in its `Policy`), with the envelope, the queue ID the session put in
//! the `Received` header and `smtpd.max_message_size` plus that header's length (the
//! limit is the client's, already enforced by the session): no process start and no config
//! parse per message. The commit fsyncs the queue file and `incoming/` before it
//! returns, so the durability is that of `sloop-queue`. Failures map by
//! `InjectError::is_permanent` (permanent: too large, unstorable envelope) or are
//! temporary (any spool trouble: a missing or unwritable directory, a full disk). The
//! spool layout is checked (and created if missing) once per worker process, not per
//! message: the spool handle remembers that it passed; any failed commit clears that,
//! so the next message checks again (a layout removed under a running worker costs
//! one `451`, as before, and is then re-created). A commit that blocks is not timed here: the session's watchdog, armed with
//! `smtpd.queue_timeout` by `serve.rs`, ends the worker with `421 4.4.2`; a panic is
//! caught by the session's panic boundary. The one `(queued)` log line is written here.
//!
//! **External program (`smtpd.queue_program` set).** The program follows
//! qmail-queue(8): the message on its fd 0, then the envelope
//! (`Envelope::to_qmail`) on its fd 1, exit 0 when committed. A helper thread writes
//! both (message first, closing fd 0, then the envelope) and reaps the child; the
//! session thread waits at most `smtpd.queue_timeout`, then SIGKILLs it. The queue ID
//! the session put in the Received header goes in `SLOOP_QUEUE_ID`, the config path
//! in `SLOOP_CONFIG`. Exit codes map through `exitcode::queue_verdict`: 11-40
//! permanent, anything else (and a signal, a hang, a spawn failure, a write failure)
//! temporary. The program logs its own `(queued)` line (`sloop-queue` does).
//!
//! Either way `250` is sent only after the commit succeeded (docs/architecture.md §3,
//! invariant 1).

use crate::session::{QueueJob, QueueOutcome};
use sloop_common::exitcode::{queue_verdict, QueueVerdict};
use sloop_common::spool::inject::commit_bytes;
use sloop_common::spool::Spool;
use sloop_common::Config;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Commits `job`: in-process into `spool` when `smtpd.queue_program` is empty, else
/// through it.
pub fn run(cfg: &Config, spool: &Spool, job: QueueJob) -> QueueOutcome {
    match &cfg.smtpd.queue_program {
        None => commit_in_process(cfg, spool, job),
        Some(program) => run_program(cfg, program, job),
    }
}

/// The in-process commit into `server.spool_dir` under the session's queue ID.
fn commit_in_process(cfg: &Config, spool: &Spool, job: QueueJob) -> QueueOutcome {
    if let Err(e) = spool.ensure_layout_once() {
        return QueueOutcome::Temporary(format!("in-process commit: {e}"));
    }
    let from = job.envelope.sender_display();
    let nrcpt = job.envelope.recipients.len();
    // The session held the client to smtpd.max_message_size; our Received header
    // comes on top of that.
    let limit = cfg.smtpd.max_message_size + job.trace_len as u64;
    let message_id = sloop_common::header::message_id(&job.message);
    let committed = commit_bytes(spool, &job.message, job.envelope, limit, Some(&job.id));
    if committed.is_err() {
        spool.forget_layout();
    }
    match committed {
        Ok(id) => {
            if id != job.id {
                log::warn!("{id}: committed under a new queue ID, not {}", job.id);
            }
            if let Some(mid) = message_id {
                log::info!("{id}: message-id={mid}");
            }
            log::info!("{id}: from={from}, nrcpt={nrcpt} (queued)");
            QueueOutcome::Committed
        }
        Err(e) if e.is_permanent() => QueueOutcome::Permanent(format!("in-process commit: {e}")),
        Err(e) => QueueOutcome::Temporary(format!("in-process commit: {e}")),
    }
}

/// Runs the external queue program for `job`.
fn run_program(cfg: &Config, program: &Path, job: QueueJob) -> QueueOutcome {
    let (child, env_w) = match spawn(cfg, program, &job.id) {
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
        let written = fd0.write_all(&message).and_then(|()| {
            drop(fd0);
            fd1.write_all(&envelope)
        });
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

fn verdict(status: ExitStatus, written: std::io::Result<()>) -> QueueOutcome {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use sloop_common::spool::{queue_id, Envelope, QueueState, Recipient};

    fn job() -> QueueJob {
        let id = queue_id::new_id();
        let mut envelope =
            Envelope::new("alice@example.test", vec![Recipient::new("bob@local.test")]);
        envelope.id = id.clone();
        QueueJob {
            id,
            envelope,
            message: b"Subject: t\r\n\r\nbody\r\n".to_vec(),
            trace_len: 0,
        }
    }

    /// The layout is checked once; a commit that fails because it vanished clears the
    /// flag (temporary failure, as before), and the next commit re-creates it.
    #[test]
    fn layout_checked_once_and_rechecked_after_failure() {
        let root = std::env::temp_dir().join(format!("sloop-qc-{}", std::process::id()));
        let spool_dir = root.join("spool");
        let text = format!(
            "[server]\nspool_dir = {:?}\n",
            spool_dir.display().to_string()
        );
        let cfg = Config::parse(Path::new("/nonexistent/sloop.toml"), &text).unwrap();
        let spool = Spool::new(&spool_dir);

        let first = job();
        assert!(!spool.layout_checked());
        assert!(matches!(
            run(&cfg, &spool, first.clone()),
            QueueOutcome::Committed
        ));
        assert!(spool.path(QueueState::Incoming, &first.id).is_file());
        assert!(spool.layout_checked());

        std::fs::remove_dir_all(&spool_dir).unwrap();
        let lost = run(&cfg, &spool, job());
        assert!(matches!(lost, QueueOutcome::Temporary(_)), "{lost:?}");
        assert!(!spool.layout_checked());

        let again = job();
        let id = again.id.clone();
        assert!(matches!(run(&cfg, &spool, again), QueueOutcome::Committed));
        assert!(spool.path(QueueState::Incoming, &id).is_file());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
