//! The life of one message in the active set: loading it from `incoming/` or
//! `deferred/`, recording each recipient's result, and deciding its fate when its last
//! job is done (removed, bounced, expired or deferred).
//!
//! Every result is appended to `status/<id>` and synced (settle.rs, once per loop turn)
//! before anything is decided on it (ARCHITECTURE.md §3, invariant 2). If an append fails the message is not removed:
//! it is deferred so the next attempt starts again from what is on disk. A message whose
//! queue file is corrupt is moved to `hold/` for an operator (logged), never deleted;
//! one that cannot be read right now is deferred.
//! A bounce that cannot be committed leaves the message deferred; the bounce is tried
//! again on the next attempt (its recipients are already final). A failed message from
//! `<>` is never bounced: it goes once to the postmaster, then is dropped.

use super::bounce::{self, Dsn, DsnRecipient, Kind};
use super::scheduler::{group, retry_delay};
use super::Qmgr;
use sloop_common::spool::status::{self, MessageStatus, Outcome, RcptStatus};
use sloop_common::spool::{commit, fsync_dir, open_message, Envelope, QueueState, Recipient};
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A message in the active set: its envelope and results, never its body.
#[derive(Debug)]
pub struct Message {
    pub env: Envelope,
    pub status: MessageStatus,
    /// Jobs not yet finished.
    pub jobs_left: usize,
    /// A status append failed: do not trust the in-memory results for removal.
    pub io_error: bool,
    /// `status/<id>` exists (so removing the message must remove it too).
    pub status_on_disk: bool,
}

/// One recipient's result, as a worker reported it or the queue manager decided it.
#[derive(Debug)]
pub struct RcptResult<'a> {
    pub index: usize,
    pub outcome: Outcome,
    pub dsn: &'a str,
    pub relay: &'a str,
    pub text: &'a str,
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Qmgr {
    /// Moves `id` from `from` into `active/` and queues its pending recipients' jobs.
    pub(super) fn load(&mut self, from: QueueState, id: &str) {
        if self.active.contains_key(id) {
            return;
        }
        // No directory fsync here: if this rename is lost in a crash the message is
        // back in incoming/ or deferred/, which recovery would do anyway.
        let path = self.spool.path(QueueState::Active, id);
        if let Err(e) = std::fs::rename(self.spool.path(from, id), &path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::error!("{id}: cannot move from {from} to active: {e}");
            }
            return;
        }
        let env = match sloop_common::spool::Spool::read_envelope(&path) {
            Ok(env) => env,
            Err(e @ sloop_common::spool::EnvelopeError::Io(_)) => {
                log::error!("{id}: {e}; deferred");
                self.defer_file(id, self.cfg.queue.retry_min);
                return;
            }
            Err(e) => {
                log::error!("{id}: corrupt queue file, moved to hold: {e}");
                self.move_or_log(id, QueueState::Hold);
                return;
            }
        };
        let status = match status::load(&self.spool, id, env.recipients.len()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("{id}: cannot read status log: {e}");
                self.defer_file(id, self.cfg.queue.retry_min);
                return;
            }
        };
        self.activate(id, env, status);
    }

    fn activate(&mut self, id: &str, env: Envelope, status: MessageStatus) {
        let pending: Vec<usize> = (0..env.recipients.len())
            .filter(|&i| !status.is_final(i))
            .collect();
        let addrs: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
        let cfg = &self.cfg;
        let jobs = group(id, &addrs, &pending, |d| cfg.is_local_domain(d));
        log::info!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            env.sender,
            env.size,
            env.recipients.len()
        );
        let status_on_disk = status.recipients.iter().any(Option::is_some)
            || status.bounce_id.is_some()
            || status.warned;
        let msg = Message {
            env,
            status,
            jobs_left: jobs.len(),
            io_error: false,
            status_on_disk,
        };
        self.active.insert(id.to_string(), msg);
        if jobs.is_empty() {
            self.finish(id);
            return;
        }
        for job in jobs {
            self.sched.push(job);
        }
    }

    /// Records one recipient's result in its status log (synced at the end of the turn),
    /// in memory, and in the log.
    pub(super) fn record(&mut self, id: &str, r: &RcptResult) {
        if !self.active.contains_key(id) {
            return;
        }
        let line = status::result_line(r.index, r.outcome, r.dsn, r.text);
        self.write_status(id, line);
        let Some(msg) = self.active.get_mut(id) else {
            return;
        };
        let Some(slot) = msg.status.recipients.get_mut(r.index) else {
            return;
        };
        let attempts = slot.as_ref().map(|s| s.attempts).unwrap_or(0) + 1;
        *slot = Some(RcptStatus {
            time: unix_now(),
            outcome: r.outcome,
            dsn: r.dsn.to_string(),
            text: r.text.to_string(),
            attempts,
        });
        let rcpt = msg
            .env
            .recipients
            .get(r.index)
            .map(|x| x.address.as_str())
            .unwrap_or("");
        let word = match r.outcome {
            Outcome::Ok => "sent",
            Outcome::Defer => "deferred",
            Outcome::Fail => "bounced",
        };
        log::info!(
            "{id}: to=<{rcpt}>, relay={}, delay={}, dsn={}, status={word} ({})",
            if r.relay.is_empty() { "none" } else { r.relay },
            from_arrival(msg.env.arrival),
            r.dsn,
            r.text
        );
    }

    /// Called when one of the message's jobs is over.
    pub(super) fn job_done(&mut self, id: &str) {
        let Some(msg) = self.active.get_mut(id) else {
            return;
        };
        msg.jobs_left = msg.jobs_left.saturating_sub(1);
        if msg.jobs_left == 0 {
            self.note_finished(id);
        }
    }

    /// Decides the fate of a message whose jobs are all done.
    pub(super) fn finish(&mut self, id: &str) {
        let Some(mut msg) = self.active.remove(id) else {
            return;
        };
        if !self.spool.path(QueueState::Active, id).exists() {
            log::info!("{id}: left active/ during delivery (held or deleted by an operator)");
            if self.spool.find(id).is_none() {
                // Deleted: our appends may have recreated its status log.
                let _ = status::remove(&self.spool, id);
            }
            return;
        }
        if msg.io_error {
            self.defer_file(id, self.cfg.queue.retry_min);
            return;
        }
        let pending: Vec<usize> = (0..msg.env.recipients.len())
            .filter(|&i| !msg.status.is_final(i))
            .collect();
        if !pending.is_empty() {
            let age = Duration::from_secs(from_arrival(msg.env.arrival));
            if age <= self.cfg.queue.max_lifetime {
                self.maybe_warn(id, &mut msg, age);
                self.defer_message(id, &msg, &pending);
                return;
            }
            self.expire(id, &mut msg, &pending);
            if msg.io_error {
                self.defer_file(id, self.cfg.queue.retry_min);
                return;
            }
        }
        self.complete(id, &msg);
    }

    /// Turns the remaining recipients of an expired message into failures.
    fn expire(&mut self, id: &str, msg: &mut Message, pending: &[usize]) {
        let days = self.cfg.queue.max_lifetime.as_secs_f64() / 86400.0;
        let mut lines = Vec::new();
        for &i in pending {
            let last = msg.status.recipients[i]
                .as_ref()
                .map(|s| s.text.clone())
                .unwrap_or_default();
            let text = format!("message expired after {days:.1} days in queue; last error: {last}");
            lines.push(status::result_line(i, Outcome::Fail, "4.4.7", &text));
            log::info!(
                "{id}: to=<{}>, delay={}, dsn=4.4.7, status=expired, returned to sender ({text})",
                msg.env.recipients[i].address,
                from_arrival(msg.env.arrival)
            );
            msg.status.recipients[i] = Some(RcptStatus {
                time: unix_now(),
                outcome: Outcome::Fail,
                dsn: "4.4.7".into(),
                text,
                attempts: 0,
            });
        }
        if let Err(e) = status::append(&self.spool, id, &lines) {
            log::error!("{id}: cannot record expiry: {e}");
            msg.io_error = true;
        }
    }

    /// Every recipient is final: bounce the failures if needed, then remove.
    fn complete(&mut self, id: &str, msg: &Message) {
        let failed: Vec<usize> = (0..msg.env.recipients.len())
            .filter(|&i| {
                msg.status.recipients[i].as_ref().map(|s| s.outcome) == Some(Outcome::Fail)
            })
            .collect();
        if !failed.is_empty() && msg.status.bounce_id.is_none() {
            let sent = if msg.env.sender.is_empty() {
                self.copy_to_postmaster_once(id, msg)
            } else {
                self.send_notice(id, msg, &failed, Kind::Failure)
            };
            if let Err(e) = sent {
                log::error!("{id}: cannot send bounce, will retry: {e}");
                self.defer_file(id, self.cfg.queue.retry_min);
                return;
            }
        }
        let path = self.spool.path(QueueState::Active, id);
        match self.recycler.retire(&self.spool, &path, id, msg.env.size) {
            Ok(()) => self.removed.push((id.to_string(), msg.status_on_disk)),
            Err(e) => log::error!("{id}: cannot remove {}: {e}", path.display()),
        }
    }

    /// Makes this turn's removals durable with one fsync of `active/`, then deletes
    /// their status logs (a crash before the fsync can bring a queue file back, with its
    /// status log, so nothing is delivered twice) and logs them.
    pub(super) fn flush_removals(&mut self) {
        if self.removed.is_empty() {
            return;
        }
        if let Err(e) = fsync_dir(&self.spool.state_dir(QueueState::Active)) {
            log::error!("{e}");
        }
        for (id, _) in std::mem::take(&mut self.removed) {
            // Removed even when we wrote nothing: the delivery workers record their
            // successes there too (status.rs).
            if let Err(e) = status::remove(&self.spool, &id) {
                log::warn!("{id}: {e}");
            }
            log::info!("{id}: removed");
        }
    }

    /// Builds and commits a DSN of `kind` about recipients `which`, then records it.
    /// Recipients whose NOTIFY excludes it are left out; none left means no DSN.
    fn send_notice(
        &mut self,
        id: &str,
        msg: &Message,
        which: &[usize],
        kind: Kind,
    ) -> io::Result<()> {
        let recipients = dsn_recipients(msg, which, kind);
        if recipients.is_empty() {
            log::info!("{id}: no notification requested (NOTIFY)");
            return Ok(());
        }
        let path = self.spool.path(QueueState::Active, id);
        let (_, original) = open_message(&path).map_err(|e| io::Error::other(e.to_string()))?;
        let dsn = Dsn {
            kind,
            envelope: &msg.env,
            recipients,
            hostname: &self.cfg.server.hostname,
            now: unix_now(),
        };
        let mut reader = dsn.reader(original)?;
        let env = Envelope::new("", vec![Recipient::new(msg.env.sender.clone())]);
        let bid = commit(&self.spool, &mut reader, env, 0)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let line = match kind {
            Kind::Failure => status::bounced_line(&bid),
            Kind::Delay => status::warned_line(),
        };
        status::append(&self.spool, id, &[line]).map_err(|e| io::Error::other(e.to_string()))?;
        let what = match kind {
            Kind::Failure => "non-delivery",
            Kind::Delay => "delay",
        };
        log::info!("{id}: sender {what} notification: {bid}");
        self.poked = true;
        Ok(())
    }

    /// A failed message from `<>` is never bounced (there is nobody to bounce to): it
    /// goes once, as it is, to the postmaster, from `<>`; if that copy fails too (or the
    /// message was already to the postmaster) it is dropped and logged.
    fn copy_to_postmaster_once(&mut self, id: &str, msg: &Message) -> io::Result<()> {
        let postmaster = match self.cfg.local_domains.first() {
            Some(d) => format!("postmaster@{d}"),
            None => "postmaster".to_string(),
        };
        let to_postmaster = msg.env.recipients.iter().all(|r| {
            let local = r
                .address
                .rsplit_once('@')
                .map_or(r.address.as_str(), |(l, _)| l);
            local.eq_ignore_ascii_case("postmaster")
        });
        if to_postmaster {
            log::info!("{id}: undeliverable message from <> dropped (never bounce a bounce)");
            return Ok(());
        }
        let path = self.spool.path(QueueState::Active, id);
        let (_, mut original) = open_message(&path).map_err(|e| io::Error::other(e.to_string()))?;
        let env = Envelope::new("", vec![Recipient::new(postmaster.clone())]);
        let copy = commit(&self.spool, &mut original, env, 0)
            .map_err(|e| io::Error::other(e.to_string()))?;
        status::append(&self.spool, id, &[status::bounced_line(&copy)])
            .map_err(|e| io::Error::other(e.to_string()))?;
        log::info!("{id}: undeliverable message from <> sent to <{postmaster}>: {copy}");
        self.poked = true;
        Ok(())
    }

    /// Sends the optional delay warning once.
    fn maybe_warn(&mut self, id: &str, msg: &mut Message, age: Duration) {
        let Some(after) = self.cfg.queue.delay_warning else {
            return;
        };
        if after.is_zero() || age < after || msg.status.warned || msg.env.sender.is_empty() {
            return;
        }
        let pending: Vec<usize> = (0..msg.env.recipients.len())
            .filter(|&i| !msg.status.is_final(i) && msg.status.recipients[i].is_some())
            .collect();
        match self.send_notice(id, msg, &pending, Kind::Delay) {
            Ok(()) => msg.status.warned = true,
            Err(e) => log::warn!("{id}: cannot send delay warning: {e}"),
        }
    }

    /// Moves a message with deferred recipients to `deferred/`, due after the backoff.
    fn defer_message(&mut self, id: &str, msg: &Message, pending: &[usize]) {
        let attempts = pending
            .iter()
            .filter_map(|&i| msg.status.recipients[i].as_ref().map(|s| s.attempts))
            .max()
            .unwrap_or(1);
        let q = &self.cfg.queue;
        let delay = retry_delay(attempts, q.retry_min, q.retry_max);
        self.defer_file(id, delay);
    }

    /// Sets the queue file's mtime to now + `delay` and moves it to `deferred/`.
    pub(super) fn defer_file(&mut self, id: &str, delay: Duration) {
        let path = self.spool.path(QueueState::Active, id);
        let due = SystemTime::now() + delay;
        let set = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(due));
        if let Err(e) = set {
            log::warn!("{id}: cannot set next attempt time: {e}");
        }
        if self.move_or_log(id, QueueState::Deferred) {
            self.wake_deferred_at(Instant::now() + delay);
        }
    }

    fn move_or_log(&self, id: &str, to: QueueState) -> bool {
        match self.spool.move_to(id, QueueState::Active, to) {
            Ok(()) => true,
            Err(e) => {
                log::error!("{id}: cannot move to {to}: {e}");
                false
            }
        }
    }
}

/// The recipients `which` of `msg` that asked for a notice of `kind`, with their results.
fn dsn_recipients(msg: &Message, which: &[usize], kind: Kind) -> Vec<DsnRecipient> {
    which
        .iter()
        .filter_map(|&i| {
            Some((
                msg.env.recipients.get(i)?,
                msg.status.recipients.get(i)?.as_ref()?,
            ))
        })
        .filter(|(r, _)| bounce::wants_notice(r, kind))
        .map(|(r, s)| DsnRecipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            status: s.dsn.clone(),
            diagnostic: s.text.clone(),
        })
        .collect()
}

/// Seconds since `arrival` (epoch seconds).
fn from_arrival(arrival: u64) -> u64 {
    unix_now().saturating_sub(arrival)
}
