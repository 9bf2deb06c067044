//! The worker loop: job lines in on stdin, result lines out on stdout
//! (common/src/delivery_proto.rs, ARCHITECTURE.md §4).
//!
//! One job at a time: open the queue file, hand it to the transport's [`Agent`], write
//! one `rcpt` line per recipient and a `done` line, flush. Between jobs the loop waits
//! on stdin with `poll(2)` so an agent can close idle cached connections on time
//! ([`Agent::idle`]). EOF on stdin ends the loop (exit 0).
//!
//! Nothing but protocol lines is written to stdout. A job line that does not parse is
//! logged and skipped (the queue manager times the job out and replaces us). A panic
//! inside an agent is caught: the job's recipients are deferred, then the worker exits
//! so the queue manager starts a fresh one.

use crate::message::QueuedMessage;
use crate::result::RcptResult;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sloop_common::delivery_proto::{Job, Reply, Transport};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A transport's delivery code.
pub trait Agent {
    /// The transport this agent serves; jobs for another one are deferred.
    fn transport(&self) -> Transport;

    /// Delivers `msg` to the job's recipients; one result per recipient, in order.
    fn deliver(&mut self, job: &Job, msg: &QueuedMessage) -> Vec<RcptResult>;

    /// How long the agent can wait before [`Agent::idle`] must run; `None`: never.
    fn next_wakeup(&self) -> Option<Duration> {
        None
    }

    /// Housekeeping while no job is running (close expired connections).
    fn idle(&mut self) {}

    /// Called once at EOF, before the worker exits.
    fn shutdown(&mut self) {}
}

/// How a worker loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// stdin reached EOF.
    Eof,
    /// An agent panicked; the job was answered and the worker should exit non-zero.
    Panicked,
}

/// Runs jobs from `input` until EOF.
pub fn serve<I, O>(agent: &mut dyn Agent, input: I, mut output: O) -> io::Result<Ending>
where
    I: Read + AsFd,
    O: Write,
{
    let mut input = BufReader::new(input);
    let mut line = String::new();
    loop {
        if input.buffer().is_empty() && !wait_readable(agent, input.get_ref())? {
            continue;
        }
        line.clear();
        if input.read_line(&mut line)? == 0 {
            agent.shutdown();
            return Ok(Ending::Eof);
        }
        let Some(job) = Job::parse(&line) else {
            log::error!("malformed job line ignored: {:?}", truncate(&line, 200));
            continue;
        };
        let (results, panicked) = run_job(agent, &job);
        write_results(&mut output, &job, &results)?;
        if panicked {
            return Ok(Ending::Panicked);
        }
    }
}

/// Waits for input, running the agent's idle work when its timer expires. Returns
/// true when stdin is readable (or at EOF).
fn wait_readable(agent: &mut dyn Agent, input: &impl AsFd) -> io::Result<bool> {
    let timeout = match agent.next_wakeup() {
        None => PollTimeout::NONE,
        Some(d) => {
            PollTimeout::try_from(d.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) => {
            agent.idle();
            Ok(false)
        }
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Opens the message and runs the agent, containing a panic.
fn run_job(agent: &mut dyn Agent, job: &Job) -> (Vec<RcptResult>, bool) {
    if job.transport != agent.transport() {
        let text = format!(
            "job for the {} transport sent to a {} worker",
            job.transport.word(),
            agent.transport().word()
        );
        return (
            vec![RcptResult::defer("4.3.5", text); job.recipients.len()],
            false,
        );
    }
    let msg = match QueuedMessage::open(std::path::Path::new(&job.path)) {
        Ok(m) => m,
        Err(r) => return (vec![r; job.recipients.len()], false),
    };
    let delay = delay_secs(msg.envelope.arrival);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.deliver(job, &msg)));
    let (mut results, panicked) = match outcome {
        Ok(r) => (r, false),
        Err(_) => {
            log::error!(
                "{}: delivery agent panicked; deferring the job",
                job.queue_id
            );
            let r = RcptResult::defer("4.3.0", "internal error in the delivery agent");
            (vec![r; job.recipients.len()], true)
        }
    };
    results.resize(
        job.recipients.len(),
        RcptResult::defer("4.3.0", "no result from the delivery agent"),
    );
    for (rcpt, r) in job.recipients.iter().zip(&results) {
        log_result(&job.queue_id, rcpt, r, delay);
    }
    (results, panicked)
}

/// The worker's view of one result, at debug level: the queue manager records every
/// result and writes the one Postfix-style `status=` line per attempt, so logging it
/// here as well would double every line.
fn log_result(queue_id: &str, rcpt: &str, r: &RcptResult, delay: u64) {
    let relay = if r.relay.is_empty() { "none" } else { &r.relay };
    log::debug!(
        "{queue_id}: to=<{rcpt}>, relay={relay}, delay={delay}, dsn={}, status={} ({})",
        r.dsn,
        r.status_word(),
        r.text
    );
}

fn write_results<O: Write>(output: &mut O, job: &Job, results: &[RcptResult]) -> io::Result<()> {
    for (index, r) in results.iter().enumerate() {
        let reply = Reply::Rcpt {
            job_id: job.job_id,
            index,
            outcome: r.outcome,
            dsn: r.dsn.clone(),
            relay: r.relay.clone(),
            text: r.text.clone(),
        };
        output.write_all(reply.to_line().as_bytes())?;
    }
    output.write_all(Reply::Done { job_id: job.job_id }.to_line().as_bytes())?;
    output.flush()
}

fn delay_secs(arrival: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(arrival))
        .unwrap_or(0)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use sloop_common::spool::status::Outcome;
    use sloop_common::spool::{commit, Envelope, QueueState, Recipient, Spool};
    use std::fs::File;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Fake {
        panic_on: Option<String>,
        idles: Arc<AtomicUsize>,
    }

    impl Agent for Fake {
        fn transport(&self) -> Transport {
            Transport::Local
        }
        fn deliver(&mut self, job: &Job, msg: &QueuedMessage) -> Vec<RcptResult> {
            if self.panic_on.as_deref() == job.recipients.first().map(String::as_str) {
                panic!("boom");
            }
            let text = format!("{} octets", msg.size());
            vec![RcptResult::ok("2.0.0", text); job.recipients.len()]
        }
        fn next_wakeup(&self) -> Option<Duration> {
            (self.idles.load(Ordering::SeqCst) == 0).then_some(Duration::from_millis(1))
        }
        fn idle(&mut self) {
            self.idles.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn job_line(id: u64, path: &std::path::Path, rcpt: &str) -> String {
        Job {
            job_id: id,
            queue_id: "Q".into(),
            path: path.display().to_string(),
            transport: Transport::Local,
            nexthop: String::new(),
            sender: String::new(),
            recipients: vec![rcpt.into(), "b@d.test".into()],
        }
        .to_line()
    }

    fn spool_message(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sloop-worker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::new(dir.join("spool"));
        spool.ensure_layout().unwrap();
        let env = Envelope::new("", vec![Recipient::new("a@d.test")]);
        let id = commit(&spool, &mut &b"12345"[..], env, 0).unwrap();
        (dir, spool.path(QueueState::Incoming, &id))
    }

    #[test]
    fn jobs_garbage_idle_time_and_eof() {
        let (dir, path) = spool_message("batch");
        let (r, w) = nix::unistd::pipe().unwrap();
        let (input, mut writer) = (File::from(r), File::from(w));
        let batch = format!(
            "{}garbage\n{}",
            job_line(1, &path, "a@d.test"),
            job_line(2, &dir.join("missing"), "a@d.test")
        );
        writer.write_all(batch.as_bytes()).unwrap();
        let idles = Arc::new(AtomicUsize::new(0));
        let mut agent = Fake {
            panic_on: None,
            idles: idles.clone(),
        };
        let server = std::thread::spawn(move || {
            let mut out = Vec::new();
            let end = serve(&mut agent, input, &mut out).unwrap();
            (end, String::from_utf8(out).unwrap())
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while idles.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(
            idles.load(Ordering::SeqCst),
            1,
            "idle work ran while waiting"
        );
        drop(writer);
        let (end, out) = server.join().unwrap();
        assert_eq!(end, Ending::Eof);
        let replies: Vec<Reply> = out.lines().map(|l| Reply::parse(l).unwrap()).collect();
        assert_eq!(replies.len(), 6);
        assert!(
            matches!(&replies[0], Reply::Rcpt { job_id: 1, index: 0, outcome: Outcome::Ok, text, .. } if text == "5 octets")
        );
        assert_eq!(replies[2], Reply::Done { job_id: 1 });
        assert!(matches!(
            &replies[4],
            Reply::Rcpt {
                job_id: 2,
                index: 1,
                outcome: Outcome::Defer,
                ..
            }
        ));
        assert_eq!(replies[5], Reply::Done { job_id: 2 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_panicking_agent_defers_its_job_and_stops() {
        let (dir, path) = spool_message("panic");
        let (r, w) = nix::unistd::pipe().unwrap();
        let (input, mut writer) = (File::from(r), File::from(w));
        writer
            .write_all(job_line(7, &path, "boom@d.test").as_bytes())
            .unwrap();
        let mut agent = Fake {
            panic_on: Some("boom@d.test".into()),
            idles: Arc::new(AtomicUsize::new(1)),
        };
        let mut out = Vec::new();
        assert_eq!(
            serve(&mut agent, input, &mut out).unwrap(),
            Ending::Panicked
        );
        let out = String::from_utf8(out).unwrap();
        let replies: Vec<Reply> = out.lines().map(|l| Reply::parse(l).unwrap()).collect();
        assert!(matches!(
            &replies[0],
            Reply::Rcpt {
                outcome: Outcome::Defer,
                ..
            }
        ));
        assert_eq!(replies[2], Reply::Done { job_id: 7 });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
