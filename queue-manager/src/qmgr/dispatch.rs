//! Running jobs on workers: handing out the scheduler's next jobs, reading the workers'
//! result lines, and ending jobs, whether the worker answered for every recipient or
//! not (docs/architecture.md §4).
//!
//! A worker that writes a line that does not parse, a result for another job or an
//! unknown recipient, closes its stdout, cannot be written to, or runs past
//! `queue.delivery_timeout` is killed and discarded; the recipients of its job without a
//! result are deferred ("delivery worker died", "timed out", ...) so none is ever lost,
//! and the next job gets a fresh worker. Crashes do not count against the destination
//! in the dead-destination cache; deferrals the worker reported do.

use super::core::Event;
use super::messages::unix_now;
use super::scheduler::{JobSpec, Next};
use super::workers::{Output, Running};
use super::Qmgr;
use sloop_common::delivery_proto::{Job, Reply};
use sloop_common::spool::status::Outcome;
use sloop_common::spool::QueueState;
use std::time::Instant;

impl Qmgr {
    /// Starts or suspends jobs while workers are available.
    pub(super) fn dispatch(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        loop {
            let pools = &self.pools;
            match self.sched.next(now, |t| pools.available(t, now)) {
                None => return,
                Some(Next::Run(spec)) => self.start(spec, now),
                Some(Next::Suspend(spec, why)) => {
                    self.handle(Event::JobOver {
                        id: spec.msg,
                        unanswered: spec.rcpts,
                        dsn: "4.4.1".into(),
                        why,
                        now: unix_now(),
                    });
                }
            }
        }
    }

    /// The protocol line for `spec`, with a fresh job ID; `None` if its message is gone.
    fn job_for(&mut self, spec: &JobSpec) -> Option<Job> {
        let env = self.core.envelope(&spec.msg)?;
        let path = self
            .writer
            .spool()
            .path(QueueState::Active, spec.msg.as_str());
        let pairs: Vec<(usize, String)> = spec
            .rcpts
            .iter()
            .filter_map(|&i| env.recipients.get(i).map(|r| (i, r.address.clone())))
            .collect();
        let job = Job {
            job_id: self.next_job_id,
            queue_id: spec.msg,
            path: path.display().to_string(),
            transport: spec.dest.transport,
            nexthop: spec.dest.domain.clone(),
            sender: env.sender.clone(),
            indices: pairs.iter().map(|p| p.0).collect(),
            recipients: pairs.into_iter().map(|p| p.1).collect(),
        };
        self.next_job_id += 1;
        Some(job)
    }

    fn start(&mut self, spec: JobSpec, now: Instant) {
        let Some(job) = self.job_for(&spec) else {
            self.sched.release(&spec.dest);
            return;
        };
        let slot = match self.pools.acquire(
            job.transport,
            &self.deliver_program,
            &self.cfg,
            &self.registry,
        ) {
            Ok(slot) => slot,
            Err(e) => {
                log::error!("cannot start {} delivery worker: {e}", job.transport.word());
                self.sched.release(&spec.dest);
                self.handle(Event::JobOver {
                    id: spec.msg,
                    unanswered: spec.rcpts,
                    dsn: "4.3.0".into(),
                    why: format!("delivery agent unavailable: {e}"),
                    now: unix_now(),
                });
                return;
            }
        };
        let running = Running {
            job_id: job.job_id,
            answered: vec![false; spec.rcpts.len()],
            spec,
            deadline: now + self.cfg.queue.delivery_timeout,
            last_defer: None,
            any_final: false,
        };
        let sent = self.pools.get_mut(slot).map(|w| {
            w.jobs.push_back(running);
            w.send(&job)
        });
        if let Some(Err(e)) = sent {
            self.break_worker(slot, &format!("delivery worker died ({e})"));
        }
    }

    /// Reads and acts on everything worker `slot` wrote.
    pub(super) fn on_worker_output(&mut self, slot: usize) {
        let outputs = match self.pools.get_mut(slot) {
            Some(w) => w.read(),
            None => return,
        };
        for out in outputs {
            let broken = match out {
                Output::Reply(r) => self.on_reply(slot, r).err(),
                Output::Garbage(line) => Some(WorkerFault::Garbage(
                    line.chars().take(100).collect::<String>(),
                )),
                Output::Eof => Some(WorkerFault::Died),
            };
            if let Some(why) = broken {
                self.break_worker(slot, &why.to_string());
                return;
            }
        }
    }

    /// Applies one reply; an error means the worker is broken.
    fn on_reply(&mut self, slot: usize, reply: Reply) -> Result<(), WorkerFault> {
        let w = self.pools.get_mut(slot).ok_or(WorkerFault::NoSuchWorker)?;
        let job = w.jobs.front_mut().ok_or(WorkerFault::Idle)?;
        match reply {
            Reply::Rcpt {
                job_id,
                index,
                outcome,
                dsn,
                relay,
                text,
            } => {
                let env_index = *job
                    .spec
                    .rcpts
                    .get(index)
                    .ok_or(WorkerFault::UnknownRecipient(index))?;
                if job_id != job.job_id || job.answered[index] {
                    return Err(WorkerFault::StrayResult);
                }
                job.answered[index] = true;
                match outcome {
                    Outcome::Defer => job.last_defer = Some(text.clone()),
                    _ => job.any_final = true,
                }
                let id = job.spec.msg;
                self.handle(Event::Result {
                    id,
                    index: env_index,
                    outcome,
                    dsn,
                    relay,
                    text,
                    now: unix_now(),
                });
                Ok(())
            }
            Reply::Done { job_id } => {
                if job_id != job.job_id {
                    return Err(WorkerFault::StrayDone);
                }
                let job = w.jobs.pop_front().ok_or(WorkerFault::Idle)?;
                w.jobs_done += 1;
                // The next job's time starts now that the worker is on it.
                if let Some(next) = w.jobs.front_mut() {
                    next.deadline = Instant::now() + self.cfg.queue.delivery_timeout;
                }
                if w.retire && w.jobs.is_empty() {
                    self.pools.discard(slot, &self.registry);
                }
                self.end_job(job, "delivery agent gave no result");
                Ok(())
            }
        }
    }

    /// Kills and discards worker `slot`; its job's unanswered recipients are deferred.
    pub(super) fn break_worker(&mut self, slot: usize, why: &str) {
        for job in self.pools.discard(slot, &self.registry) {
            log::warn!(
                "{}: {why}; deferring recipients without a result",
                job.spec.msg
            );
            self.end_job(job, why);
        }
    }

    /// Kills the workers whose job is past its deadline.
    pub(super) fn check_deadlines(&mut self, now: Instant) {
        let (_, late) = self.pools.deadlines(now);
        for slot in late {
            self.break_worker(slot, "delivery timed out, worker killed");
        }
    }

    /// Closes idle workers marked for retirement (after a reload).
    pub(super) fn retire_idle(&mut self) {
        for slot in self.pools.idle_slots() {
            if self.pools.get_mut(slot).map(|w| w.retire).unwrap_or(false) {
                self.pools.discard(slot, &self.registry);
            }
        }
    }

    /// Ends a job: defers its unanswered recipients with `missing`, updates the
    /// destination's health, and tells the message.
    fn end_job(&mut self, job: Running, missing: &str) {
        let unanswered: Vec<usize> = job
            .spec
            .rcpts
            .iter()
            .zip(&job.answered)
            .filter(|(_, answered)| !**answered)
            .map(|(&i, _)| i)
            .collect();
        let now = Instant::now();
        match (&job.last_defer, job.any_final) {
            (Some(reason), false) => {
                if let Some(d) = self.sched.finished(&job.spec.dest, Some(reason), now) {
                    log::warn!(
                        "{}: destination suspended for {}s: {reason}",
                        job.spec.dest.domain,
                        d.as_secs()
                    );
                }
            }
            (None, false) => self.sched.release(&job.spec.dest),
            (_, true) => {
                self.sched.finished(&job.spec.dest, None, now);
            }
        }
        self.handle(Event::JobOver {
            id: job.spec.msg,
            unanswered,
            dsn: "4.3.0".into(),
            why: missing.to_string(),
            now: unix_now(),
        });
    }
}

/// Why a delivery worker is taken for broken: it is killed and its job's unanswered
/// recipients are deferred.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorkerFault {
    /// Its output could not be parsed as a reply (the first 100 characters).
    Garbage(String),
    /// It closed its output.
    Died,
    /// A reply for a slot the pool no longer has.
    NoSuchWorker,
    /// A reply while it had no job.
    Idle,
    /// A result for a recipient index the job does not have.
    UnknownRecipient(usize),
    /// A result for another job, or a second result for one recipient.
    StrayResult,
    /// `done` for another job.
    StrayDone,
}

impl std::fmt::Display for WorkerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerFault::Garbage(line) => write!(f, "delivery worker protocol error ({line:?})"),
            WorkerFault::Died => f.write_str("delivery worker died"),
            WorkerFault::NoSuchWorker => {
                f.write_str("delivery worker protocol error (no such worker)")
            }
            WorkerFault::Idle => f.write_str("delivery worker protocol error (reply while idle)"),
            WorkerFault::UnknownRecipient(i) => {
                write!(f, "delivery worker protocol error (unknown recipient {i})")
            }
            WorkerFault::StrayResult => f.write_str(
                "delivery worker protocol error (result for another job or a second result)",
            ),
            WorkerFault::StrayDone => {
                f.write_str("delivery worker protocol error (done for another job)")
            }
        }
    }
}
