//! The worker loop: job lines in on stdin, result lines out on stdout
//! (common/src/delivery_proto.rs, docs/architecture.md §4).
//!
//! One job at a time: open the queue file, hand it to the transport's [`Agent`], write
//! one `rcpt` line per recipient and a `done` line, flush. Between jobs the loop waits
//! on stdin with `poll(2)` so an agent can close idle cached connections on time
//! ([`Agent::idle`]). EOF on stdin ends the loop (exit 0).
//!
//! Group commit: when the next job line is already waiting as a job ends, the worker
//! runs it before answering, up to [`MAX_BATCH`] jobs; then [`Agent::sync`] makes the
//! batch durable at once (the local agent fsyncs each Maildir `new/` once for the
//! batch instead of once per message) and only then are the batch's results written.
//! If the sync fails, the batch's successes are reported as deferrals. The queue
//! manager queues a second job on a busy local worker only when every local worker is
//! busy (qmgr/workers.rs), so a batch forms only under load.
//!
//! When the results cannot be written because the queue manager is gone (killed), the
//! batch's deliveries are recorded in the messages' status logs instead
//! ([`serve_recording`], spool/status.rs `record_delivered`), so the next queue manager,
//! which waits for this worker to exit (spool/workers.rs), sees those recipients as
//! delivered instead of delivering them again. Recording every delivery this way would
//! create a status file per message; the queue manager's own records are cheaper while
//! it lives.
//!
//! Nothing but protocol lines is written to stdout. A job line that does not parse is
//! logged and skipped (the queue manager times the job out and replaces us). A panic
//! inside an agent is caught: the job's recipients are deferred, then the worker exits
//! so the queue manager starts a fresh one.

use crate::message::QueuedMessage;
use crate::result::RcptResult;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sloop_common::delivery_proto::{Job, Reply, Transport};
use sloop_common::spool::status::{self, Outcome};
use sloop_common::spool::Spool;
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

    /// Makes the deliveries since the last call durable where [`Agent::deliver`] left
    /// that for later; called before their results are reported.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Most jobs answered together after one [`Agent::sync`].
pub const MAX_BATCH: usize = 16;

/// A job run but not answered yet.
struct Done {
    job: Job,
    results: Vec<RcptResult>,
    delay: u64,
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
pub fn serve<I, O>(agent: &mut dyn Agent, input: I, output: O) -> io::Result<Ending>
where
    I: Read + AsFd,
    O: Write,
{
    serve_recording(agent, input, output, None)
}

/// Runs jobs from `input` until EOF, recording each batch's deliveries in the status
/// logs of `spool` (when given) before answering.
pub fn serve_recording<I, O>(
    agent: &mut dyn Agent,
    input: I,
    mut output: O,
    spool: Option<&Spool>,
) -> io::Result<Ending>
where
    I: Read + AsFd,
    O: Write,
{
    let mut input = BufReader::new(input);
    let mut line = String::new();
    let mut batch: Vec<Done> = Vec::new();
    loop {
        if !batch.is_empty() && (batch.len() >= MAX_BATCH || !line_waiting(&input)) {
            answer(agent, &mut output, &mut batch, spool)?;
        }
        if batch.is_empty() && input.buffer().is_empty() && !wait_readable(agent, input.get_ref())?
        {
            continue;
        }
        line.clear();
        if input.read_line(&mut line)? == 0 {
            answer(agent, &mut output, &mut batch, spool)?;
            agent.shutdown();
            return Ok(Ending::Eof);
        }
        let Some(job) = Job::parse(&line) else {
            log::error!("malformed job line ignored: {:?}", truncate(&line, 200));
            continue;
        };
        let (results, delay, panicked) = run_job(agent, &job);
        batch.push(Done {
            job,
            results,
            delay,
        });
        if panicked {
            answer(agent, &mut output, &mut batch, spool)?;
            return Ok(Ending::Panicked);
        }
    }
}

/// True when a whole job line can be read without waiting.
fn line_waiting<I: Read + AsFd>(input: &BufReader<I>) -> bool {
    if input.buffer().contains(&b'\n') {
        return true;
    }
    // The queue manager writes each line with one write: readable means a line.
    let mut fds = [PollFd::new(input.get_ref().as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Syncs the agent, then writes the batch's results (successes turned into
/// deferrals if the sync failed) and flushes.
fn answer<O: Write>(
    agent: &mut dyn Agent,
    output: &mut O,
    batch: &mut Vec<Done>,
    spool: Option<&Spool>,
) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let synced = agent.sync();
    if let Err(e) = &synced {
        log::error!("cannot make {} deliveries durable: {e}", batch.len());
    }
    for done in batch.iter_mut() {
        if let Err(e) = &synced {
            for r in done.results.iter_mut().filter(|r| r.outcome == Outcome::Ok) {
                *r = RcptResult::defer("4.3.0", format!("cannot make the delivery durable: {e}"));
            }
        }
    }
    let written = write_batch(output, batch);
    if let (Err(e), Some(spool)) = (&written, spool) {
        // The queue manager is gone: what we delivered must not be delivered again.
        log::warn!(
            "cannot report {} jobs ({e}); recording their deliveries",
            batch.len()
        );
        for done in batch.iter() {
            record(spool, done);
        }
    }
    batch.clear();
    written
}

/// Writes the results of every job of the batch, in order, and flushes.
fn write_batch<O: Write>(output: &mut O, batch: &[Done]) -> io::Result<()> {
    for done in batch {
        for (rcpt, r) in done.job.recipients.iter().zip(&done.results) {
            log_result(done.job.queue_id.as_str(), rcpt, r, done.delay);
        }
        write_results(output, &done.job, &done.results)?;
    }
    output.flush()
}

/// Appends the job's successes to its message's status log (see the module comment).
fn record(spool: &Spool, done: &Done) {
    let delivered: Vec<(usize, &str, &str)> = done
        .job
        .indices
        .iter()
        .zip(&done.results)
        .filter(|(_, r)| r.outcome == Outcome::Ok)
        .map(|(&i, r)| (i, r.dsn.as_str(), r.text.as_str()))
        .collect();
    if let Err(e) = status::record_delivered(spool, done.job.queue_id.as_str(), &delivered) {
        log::warn!("{}: cannot record the delivery: {e}", done.job.queue_id);
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

/// Opens the message and runs the agent, containing a panic. Returns the results, the
/// message's time in the queue (for the log) and whether the agent panicked.
fn run_job(agent: &mut dyn Agent, job: &Job) -> (Vec<RcptResult>, u64, bool) {
    if job.transport != agent.transport() {
        let text = format!(
            "job for the {} transport sent to a {} worker",
            job.transport.word(),
            agent.transport().word()
        );
        return (
            vec![RcptResult::defer("4.3.5", text); job.recipients.len()],
            0,
            false,
        );
    }
    let msg = match QueuedMessage::open(std::path::Path::new(&job.path)) {
        Ok(m) => m,
        Err(r) => return (vec![r; job.recipients.len()], 0, false),
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
    (results, delay, panicked)
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
    output.write_all(Reply::Done { job_id: job.job_id }.to_line().as_bytes())
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

    /// Counts syncs and can fail them; remembers what was delivered since the last.
    struct Batching {
        syncs: usize,
        fail: bool,
        unsynced: usize,
        batches: Vec<usize>,
    }

    impl Agent for Batching {
        fn transport(&self) -> Transport {
            Transport::Local
        }
        fn deliver(&mut self, job: &Job, _msg: &QueuedMessage) -> Vec<RcptResult> {
            self.unsynced += 1;
            vec![RcptResult::ok("2.0.0", "delivered"); job.recipients.len()]
        }
        fn sync(&mut self) -> io::Result<()> {
            self.syncs += 1;
            self.batches.push(std::mem::take(&mut self.unsynced));
            if self.fail {
                Err(io::Error::other("disk on fire"))
            } else {
                Ok(())
            }
        }
    }

    fn run_batch(fail: bool, jobs: usize) -> (Batching, Vec<Reply>) {
        let (_dir, path) = spool_message(&format!("group-{fail}-{jobs}"));
        let (r, w) = nix::unistd::pipe().unwrap();
        let (input, mut writer) = (File::from(r), File::from(w));
        let lines: String = (1..=jobs as u64)
            .map(|id| job_line(id, &path, "a@d.test"))
            .collect();
        writer.write_all(lines.as_bytes()).unwrap();
        drop(writer);
        let mut agent = Batching {
            syncs: 0,
            fail,
            unsynced: 0,
            batches: Vec::new(),
        };
        let mut out = Vec::new();
        assert_eq!(serve(&mut agent, input, &mut out).unwrap(), Ending::Eof);
        let out = String::from_utf8(out).unwrap();
        let replies = out.lines().map(|l| Reply::parse(l).unwrap()).collect();
        (agent, replies)
    }

    /// Runs one job of message `id` (envelope indices 4 and 7) with a spool to record in,
    /// the queue manager alive or gone; returns what the message's status log then says
    /// about those recipients.
    fn run_recorded(fail: bool, gone: bool) -> Vec<bool> {
        let (dir, path) = spool_message(&format!("record-{fail}-{gone}"));
        let spool = Spool::new(dir.join("spool"));
        let id = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut job = Job::parse(&job_line(1, &path, "a@d.test")).unwrap();
        job.queue_id = sloop_common::spool::queue_id::QueueId::parse(&id).unwrap();
        job.indices = vec![4, 7];
        let (r, w) = nix::unistd::pipe().unwrap();
        let (input, mut writer) = (File::from(r), File::from(w));
        writer.write_all(job.to_line().as_bytes()).unwrap();
        drop(writer);
        let mut agent = Batching {
            syncs: 0,
            fail,
            unsynced: 0,
            batches: Vec::new(),
        };
        if gone {
            // Its end of the pipe is closed: writing the results fails (EPIPE).
            let (_, w) = nix::unistd::pipe().unwrap();
            let out = File::from(w);
            assert!(serve_recording(&mut agent, input, &out, Some(&spool)).is_err());
        } else {
            let mut out = Vec::new();
            serve_recording(&mut agent, input, &mut out, Some(&spool)).unwrap();
            assert!(!out.is_empty());
        }
        let st = status::load(&spool, &id, 8).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (0..8).map(|i| st.is_final(i)).collect()
    }

    #[test]
    fn deliveries_are_recorded_under_their_envelope_index_when_the_queue_manager_is_gone() {
        let finals = run_recorded(false, true);
        assert_eq!(
            finals,
            [false, false, false, false, true, false, false, true]
        );
        // While it lives the results go to it; nothing is recorded here.
        assert!(run_recorded(false, false).iter().all(|f| !f));
        // A failed sync means deferrals: nothing to record.
        assert!(run_recorded(true, true).iter().all(|f| !f));
    }

    #[test]
    fn waiting_jobs_are_answered_together_after_one_sync() {
        let (agent, replies) = run_batch(false, 3);
        assert_eq!(
            agent.batches,
            vec![3],
            "one sync for the three waiting jobs"
        );
        // Every job answered, in order: two rcpt lines and a done line each.
        assert_eq!(replies.len(), 9);
        for (k, id) in (1..=3u64).enumerate() {
            assert_eq!(replies[3 * k + 2], Reply::Done { job_id: id });
            assert!(matches!(
                &replies[3 * k],
                Reply::Rcpt { job_id, outcome: Outcome::Ok, .. } if *job_id == id
            ));
        }
        // A batch is at most MAX_BATCH jobs.
        let (agent, replies) = run_batch(false, MAX_BATCH + 2);
        assert_eq!(agent.batches, vec![MAX_BATCH, 2]);
        assert_eq!(replies.len(), 3 * (MAX_BATCH + 2));
    }

    #[test]
    fn a_failed_sync_turns_the_batch_successes_into_deferrals() {
        let (agent, replies) = run_batch(true, 2);
        assert_eq!(agent.syncs, 1);
        let outcomes: Vec<Outcome> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Rcpt { outcome, text, .. } => {
                    assert!(text.contains("disk on fire"), "{text}");
                    Some(*outcome)
                }
                Reply::Done { .. } => None,
            })
            .collect();
        assert_eq!(outcomes, vec![Outcome::Defer; 4]);
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
            queue_id: sloop_common::spool::queue_id::QueueId::new(),
            path: path.display().to_string(),
            transport: Transport::Local,
            nexthop: String::new(),
            sender: String::new(),
            indices: (0..2).collect(),
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
