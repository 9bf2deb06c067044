//! The queue manager's decisions, with no I/O: what happens to each message of the
//! active set, from the moment it is loaded to the moment it leaves (removed, bounced,
//! expired, deferred or held).
//!
//! The core takes events (a message loaded or found unreadable, a recipient's result,
//! a job over with recipients unanswered, an operator having taken a message away, the
//! end of a loop turn, the status logs written) and answers with effects, which the
//! shell (mod.rs) carries out: log lines and jobs to schedule directly, everything that
//! touches the spool through the spool's executor (`sloop_common::spool::writer`). It
//! never reads a clock (events carry the time) and never sees a file, so every decision
//! is tested here without a file system, and a property test drives it with random
//! event sequences to check that no recipient is ever lost.
//!
//! The rules:
//! - A message is **loaded** with its envelope and its status log; recipients with a
//!   final result are skipped, the others are grouped into jobs. A queue file that
//!   cannot be parsed, or that cannot be read for a reason that will not go away by
//!   itself (permissions), goes to `hold/` with one log line; one that cannot be read
//!   right now (an I/O error) is deferred.
//! - Each **result** is logged (Postfix's `to=<..>, relay=.., delay=.., dsn=..,
//!   status=sent|deferred|bounced` line) and queued for the status log; the turn's
//!   lines are written and synced together (group commit) before any message is
//!   decided on. A message whose recipients all succeeded in this turn writes none:
//!   its removal is the record.
//! - A **job over** with recipients that got no result (the worker died, timed out,
//!   spoke garbage, could not be started) defers those recipients: nothing is lost.
//! - When a message's last job is over, at the end of the turn: if its status log
//!   could not be written it is deferred (the next attempt starts from the disk); if
//!   recipients are pending and the message is younger than `queue.max_lifetime` it
//!   is deferred for the backoff of its most-tried recipient (after a delay warning
//!   if one is due); older, its pending recipients fail with `4.4.7` (recorded before
//!   anything else). Then, every recipient being final: failures are bounced to the
//!   sender (those whose NOTIFY asks for it), a failed message from `<>` goes once to
//!   the postmaster instead (never a bounce of a bounce) or is dropped when it was
//!   for the postmaster; the bounce is committed and recorded before the message is
//!   removed, and if that fails the message is deferred and the bounce retried.
//! - A message an **operator** took out of `active/` (held, deleted) is dropped from
//!   memory; if it was deleted its status log is removed too.

use super::bounce::{DsnRecipient, Notice, NoticeKind};
use super::scheduler::{group, JobSpec};
use sloop_common::config::Config;
use sloop_common::spool::status::{self, MessageStatus, Outcome, RcptStatus};
use sloop_common::spool::writer::{Effect as SpoolEffect, LoadError, Plan};
use sloop_common::spool::{Envelope, QueueId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The settings the decisions depend on (from `[queue]`, `[domains]`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub max_lifetime: Duration,
    pub delay_warning: Option<Duration>,
    pub local_domains: Vec<String>,
    pub hostname: String,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        let q = &cfg.queue;
        Policy {
            retry_min: q.retry_min,
            retry_max: q.retry_max,
            max_lifetime: q.max_lifetime,
            delay_warning: q.delay_warning.filter(|d| !d.is_zero()),
            local_domains: cfg.local_domains.clone(),
            hostname: cfg.server.hostname.clone(),
        }
    }

    fn is_local(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Where a failed message from `<>` goes.
    fn postmaster(&self) -> String {
        super::bounce::postmaster_address(&self.local_domains)
    }

    fn notice(
        &self,
        id: QueueId,
        kind: NoticeKind,
        recipients: Vec<DsnRecipient>,
        now: u64,
    ) -> SpoolEffect {
        SpoolEffect::Notice {
            id,
            notice: Box::new(Notice {
                kind,
                recipients,
                hostname: self.hostname.clone(),
                postmaster: self.postmaster(),
                now,
            }),
        }
    }
}

/// What happens next; each variant is one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message moved into `active/`, with what its queue file and status log say.
    Loaded {
        id: QueueId,
        env: Envelope,
        status: MessageStatus,
    },
    /// A message moved into `active/` whose queue file or status log cannot be used.
    Unreadable { id: QueueId, problem: LoadError },
    /// A delivery agent's result for recipient `index` (envelope index) of `id`.
    Result {
        id: QueueId,
        index: usize,
        outcome: Outcome,
        dsn: String,
        relay: String,
        text: String,
        /// Seconds since the epoch.
        now: u64,
    },
    /// One job of `id` is over; `unanswered` got no result, for the reason `why`.
    JobOver {
        id: QueueId,
        unanswered: Vec<usize>,
        /// The enhanced status code of the deferral (`4.3.0`, `4.4.1` suspended).
        dsn: String,
        why: String,
        now: u64,
    },
    /// The status log of `id` was (or could not be) written and synced.
    Written { id: QueueId, ok: bool },
    /// The queue file of `id` left `active/` behind our back (an operator); `deleted`
    /// when it is nowhere in the spool any more.
    Vanished { id: QueueId, deleted: bool },
    /// The end of a loop turn: decide the messages whose last job is over.
    Settle { now: u64 },
}

/// What the shell must do.
#[derive(Debug)]
pub enum Effect {
    /// An informational log line (queue ID first).
    Info(String),
    /// A warning log line.
    Warn(String),
    /// Queue a delivery job.
    Schedule(JobSpec),
    /// Something for the spool's executor.
    Spool(SpoolEffect),
    /// Steps on the spool for one message, in order; on the first failure of a step
    /// that must succeed, the plan's fallback runs instead of the rest.
    Plan(Plan),
}

/// A message in the active set: its envelope and results, never its body.
#[derive(Debug, Clone)]
struct Message {
    env: Envelope,
    status: MessageStatus,
    jobs_left: usize,
    /// Its status log could not be written or synced this attempt.
    io_error: bool,
    /// Status lines not written because the message was to be removed in this turn
    /// (its removal being the record): written after all if the removal fails.
    unrecorded: Vec<String>,
    /// It has a status log (loaded with one, or lines were written this attempt).
    has_log: bool,
}

/// The active set and the decisions about it.
#[derive(Debug)]
pub struct Core {
    policy: Policy,
    active: HashMap<QueueId, Message>,
    /// Status lines of this turn, not yet handed to the executor.
    unwritten: Vec<(QueueId, String)>,
    /// Messages whose last job ended this turn.
    finished: Vec<QueueId>,
}

impl Core {
    pub fn new(policy: Policy) -> Core {
        Core {
            policy,
            active: HashMap::new(),
            unwritten: Vec::new(),
            finished: Vec::new(),
        }
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Messages in the active set.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn contains(&self, id: &QueueId) -> bool {
        self.active.contains_key(id)
    }

    /// The envelope of an active message (to build its jobs' protocol lines).
    pub fn envelope(&self, id: &QueueId) -> Option<&Envelope> {
        self.active.get(id).map(|m| &m.env)
    }

    /// Messages whose last job ended this turn (the shell checks they are still in
    /// `active/` before [`Event::Settle`]).
    pub fn finished(&self) -> &[QueueId] {
        &self.finished
    }

    /// Ends the turn's results: the status lines to write now (all but those of
    /// messages whose every recipient succeeded: their removal is the record).
    pub fn take_status_lines(&mut self) -> Vec<(QueueId, String)> {
        let clean: HashSet<QueueId> = self
            .finished
            .iter()
            .filter(|id| self.all_delivered(id))
            .copied()
            .collect();
        let mut lines = Vec::new();
        for (id, line) in std::mem::take(&mut self.unwritten) {
            match (clean.contains(&id), self.active.get_mut(&id)) {
                (true, Some(m)) => m.unrecorded.push(line),
                (false, m) => {
                    if let Some(m) = m {
                        m.has_log = true;
                    }
                    lines.push((id, line));
                }
                (true, None) => lines.push((id, line)),
            }
        }
        lines
    }

    /// Handles one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Loaded { id, env, status } => self.loaded(id, env, status, &mut out),
            Event::Unreadable { id, problem } => self.unreadable(id, problem, &mut out),
            Event::Result {
                id,
                index,
                outcome,
                dsn,
                relay,
                text,
                now,
            } => self.result(id, index, outcome, &dsn, &relay, &text, now, &mut out),
            Event::JobOver {
                id,
                unanswered,
                dsn,
                why,
                now,
            } => {
                for i in unanswered {
                    self.result(id, i, Outcome::Defer, &dsn, "none", &why, now, &mut out);
                }
                self.job_over(id);
            }
            Event::Written { id, ok } => {
                if let (false, Some(m)) = (ok, self.active.get_mut(&id)) {
                    m.io_error = true;
                }
            }
            Event::Vanished { id, deleted } => {
                self.finished.retain(|f| *f != id);
                if self.active.remove(&id).is_some() {
                    out.push(Effect::Info(format!(
                        "{id}: left active/ during delivery (held or deleted by an operator)"
                    )));
                    if deleted {
                        // Our appends may have recreated its status log.
                        out.push(Effect::Spool(SpoolEffect::Forget { id }));
                    }
                }
            }
            Event::Settle { now } => {
                for id in std::mem::take(&mut self.finished) {
                    self.decide(id, now, &mut out);
                }
            }
        }
        out
    }

    fn loaded(&mut self, id: QueueId, env: Envelope, status: MessageStatus, out: &mut Vec<Effect>) {
        if self.active.contains_key(&id) {
            return;
        }
        let pending: Vec<usize> = (0..env.recipients.len())
            .filter(|&i| !status.is_final(i))
            .collect();
        let addrs: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
        let jobs = group(&id, &addrs, &pending, |d| self.policy.is_local(d));
        out.push(Effect::Info(format!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            env.sender,
            env.size,
            env.recipients.len()
        )));
        let has_log = status.recipients.iter().any(Option::is_some)
            || status.bounce_id.is_some()
            || status.warned;
        let msg = Message {
            has_log,
            env,
            status,
            jobs_left: jobs.len(),
            io_error: false,
            unrecorded: Vec::new(),
        };
        self.active.insert(id, msg);
        if jobs.is_empty() {
            self.finished.push(id);
        }
        out.extend(jobs.into_iter().map(Effect::Schedule));
    }

    fn unreadable(&mut self, id: QueueId, problem: LoadError, out: &mut Vec<Effect>) {
        match problem {
            LoadError::Permanent(why) => out.push(Effect::Spool(SpoolEffect::Hold { id, why })),
            LoadError::Transient(why) => {
                out.push(Effect::Warn(format!("{id}: {why}; deferred")));
                out.push(Effect::Spool(SpoolEffect::Defer {
                    id,
                    delay: self.policy.retry_min,
                }));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &mut self,
        id: QueueId,
        index: usize,
        outcome: Outcome,
        dsn: &str,
        relay: &str,
        text: &str,
        now: u64,
        out: &mut Vec<Effect>,
    ) {
        let Some(msg) = self.active.get_mut(&id) else {
            return;
        };
        let Some(slot) = msg.status.recipients.get_mut(index) else {
            return;
        };
        if slot.as_ref().is_some_and(|s| s.outcome.is_final()) {
            // A final result stays final (as in the status log).
            return;
        }
        let attempts = slot.as_ref().map_or(0, |s| s.attempts) + 1;
        *slot = Some(RcptStatus {
            time: now,
            outcome,
            dsn: dsn.to_string(),
            text: text.to_string(),
            attempts,
        });
        self.unwritten
            .push((id, status::result_line(index, outcome, dsn, text)));
        let rcpt = msg
            .env
            .recipients
            .get(index)
            .map_or("", |r| r.address.as_str());
        let word = match outcome {
            Outcome::Ok => "sent",
            Outcome::Defer => "deferred",
            Outcome::Fail => "bounced",
        };
        out.push(Effect::Info(format!(
            "{id}: to=<{rcpt}>, relay={}, delay={}, dsn={dsn}, status={word} ({text})",
            if relay.is_empty() { "none" } else { relay },
            now.saturating_sub(msg.env.arrival),
        )));
    }

    fn job_over(&mut self, id: QueueId) {
        let Some(msg) = self.active.get_mut(&id) else {
            return;
        };
        msg.jobs_left = msg.jobs_left.saturating_sub(1);
        if msg.jobs_left == 0 && !self.finished.contains(&id) {
            self.finished.push(id);
        }
    }

    fn all_delivered(&self, id: &QueueId) -> bool {
        self.active.get(id).is_some_and(|m| {
            !m.io_error
                && m.status
                    .recipients
                    .iter()
                    .all(|r| r.as_ref().map(|r| r.outcome) == Some(Outcome::Ok))
        })
    }
}

mod fate;
#[cfg(test)]
mod tests;
