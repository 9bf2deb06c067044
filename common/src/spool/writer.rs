//! The queue manager's hands on the spool: the one executor of every change it makes.
//!
//! The queue manager's core decides (queue-manager/src/qmgr/core.rs) and returns
//! effects; [`Writer`] carries them out. Together with the rest of this module it is
//! the only code that renames queue files, sets their next-attempt times, appends to
//! status logs and fsyncs spool directories (a test in `tests/tests/spool_owner.rs`
//! scans the source tree for such calls elsewhere). What it does, and what each step
//! costs on disk:
//!
//! - **activate**: `incoming/` or `deferred/` → `active/`, one rename, no fsync (a
//!   rename lost in a crash leaves the message where recovery would put it anyway).
//! - **load**: the envelope and the status log. A file that cannot be parsed
//!   (corrupt, truncated) or opened for a reason that will not go away by itself
//!   (permission denied) is *permanent* trouble, any other read error *transient*.
//! - **status lines** are buffered for the turn and written by [`Writer::flush`]: one
//!   append per log, then their fsyncs back to back (group commit). When writes fail
//!   (a full disk), the failure is logged once, the affected messages are deferred by
//!   the core, and the recovery is logged once when writes succeed again.
//! - **defer**: the file's mtime becomes the next attempt time, then a rename into
//!   `deferred/` and an fsync of `deferred/`.
//! - **hold**: a rename into `hold/` and an fsync of it, with one log line naming the
//!   file and the reason.
//! - **retire**: into `free/` for reuse or unlinked (pool.rs); the turn's retirements
//!   share one fsync of `active/` ([`Writer::end_turn`]), after which their status
//!   logs are removed (a crash before that fsync brings a file back with its log).
//! - **notice**: a bounce, delay warning or postmaster copy is rendered from the
//!   original queue file by the caller's [`Notice`], committed like any message, and
//!   recorded durably in the original's status log before the next step.
//!
//! A [`Plan`] is one message's steps in order; the first failing step that must
//! succeed stops the plan and its fallback (recording what is not yet recorded, then a
//! deferral) runs instead, so a message is
//! never removed unless every step before the removal is durable.

use super::pool::Recycler;
use super::status::{self, MessageStatus};
use super::{
    commit, ctx, fsync_dir, open_message, Envelope, QueueId, QueueState, Spool, SpoolError,
};
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime};

/// A notification the queue manager sends about a message (rendered by the caller,
/// which knows DSNs; committed here).
pub trait Notice: fmt::Debug {
    /// The notification's envelope, given the original's.
    fn envelope(&self, original: &Envelope) -> Envelope;
    /// The notification's content; `body` reads the original message.
    fn render(&self, original: &Envelope, body: io::Take<File>) -> io::Result<Box<dyn Read>>;
    /// The status line recording that the notification `notice` was committed.
    fn record_line(&self, notice: &QueueId) -> String;
    /// What it is, for the log (`sender non-delivery notification`).
    fn describe(&self) -> String;
}

/// One change to the spool.
#[derive(Debug)]
pub enum Effect {
    /// Append `lines` to the status log of `id` and fsync it now.
    Record { id: QueueId, lines: Vec<String> },
    /// Move `id` from `active/` to `deferred/`, due in `delay`.
    Defer { id: QueueId, delay: Duration },
    /// Move `id` from `active/` to `hold/` because of `why`.
    Hold { id: QueueId, why: String },
    /// Take `id` (message of `size` octets) out of the queue: it is finished.
    /// `has_log`: it has a status log to remove too.
    Retire {
        id: QueueId,
        size: u64,
        has_log: bool,
    },
    /// Remove the status log of a message an operator deleted.
    Forget { id: QueueId },
    /// Commit a notification about `id` and record it in the status log of `id`.
    Notice {
        id: QueueId,
        notice: Box<dyn Notice>,
    },
}

/// Steps for one message; see the module comment.
#[derive(Debug)]
pub struct Plan {
    pub id: QueueId,
    /// Each step, and whether the plan stops (and falls back) when it fails.
    pub steps: Vec<(Effect, bool)>,
    /// Run, in order, instead of the remaining steps when a required one fails.
    pub fallback: Vec<Effect>,
}

/// Why a queue file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// Will not go away by itself: corrupt, truncated, permission denied.
    Permanent(String),
    /// May go away: an I/O error.
    Transient(String),
}

/// The queue manager's spool writer; see the module comment.
#[derive(Debug)]
pub struct Writer {
    spool: Spool,
    recycler: Recycler,
    /// Status lines of this turn, by message, in first-seen order.
    lines: Vec<(QueueId, String)>,
    /// Retired this turn, awaiting the fsync of `active/`, with whether each has a
    /// status log.
    retired: Vec<(QueueId, bool)>,
    /// The error status writes currently fail with, logged once when it started.
    status_failing: Option<String>,
}

impl Writer {
    pub fn new(spool: Spool) -> Writer {
        Writer {
            spool,
            recycler: Recycler::new(),
            lines: Vec::new(),
            retired: Vec::new(),
            status_failing: None,
        }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// True when `id` is in `active/`.
    pub fn is_active(&self, id: &QueueId) -> bool {
        self.spool.path(QueueState::Active, id.as_str()).exists()
    }

    /// Moves `id` from `from` into `active/`. `Ok(false)`: it is no longer there (an
    /// operator moved it).
    pub fn activate(&self, from: QueueState, id: &QueueId) -> Result<bool, SpoolError> {
        let src = self.spool.path(from, id.as_str());
        let dst = self.spool.path(QueueState::Active, id.as_str());
        match std::fs::rename(&src, dst) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => ctx(Err(e), "rename", &src),
        }
    }

    /// The envelope and status of active message `id`.
    pub fn load(&self, id: &QueueId) -> Result<(Envelope, MessageStatus), LoadError> {
        let path = self.spool.path(QueueState::Active, id.as_str());
        let mut f = File::open(&path).map_err(|e| classify(&e, &path.display().to_string()))?;
        let env = Envelope::read_from(&mut f).map_err(|e| match e {
            super::EnvelopeError::Io(s) => LoadError::Transient(s),
            other => LoadError::Permanent(other.to_string()),
        })?;
        let status = status::load(&self.spool, id.as_str(), env.recipients.len())
            .map_err(|e| classify(&e.source, &e.to_string()))?;
        Ok((env, status))
    }

    /// Queues a status line for [`Writer::flush`].
    pub fn queue_line(&mut self, id: QueueId, line: String) {
        self.lines.push((id, line));
    }

    /// Writes the queued status lines, one append per log, then fsyncs the logs one
    /// after another. Returns each message's outcome (false: not durable).
    pub fn flush(&mut self) -> Vec<(QueueId, bool)> {
        let mut order: Vec<QueueId> = Vec::new();
        let mut text: HashMap<QueueId, String> = HashMap::new();
        for (id, line) in std::mem::take(&mut self.lines) {
            let buf = text.entry(id).or_insert_with(|| {
                order.push(id);
                String::new()
            });
            buf.push_str(&line);
            buf.push('\n');
        }
        let mut files = Vec::new();
        for id in order {
            let bytes = text.remove(&id).unwrap_or_default();
            let p = status::path(&self.spool, id.as_str());
            let written = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .and_then(|mut f| f.write_all(bytes.as_bytes()).map(|()| f));
            files.push((id, written));
        }
        let mut out = Vec::with_capacity(files.len());
        for (id, file) in files {
            let synced = file.and_then(|f| f.sync_data());
            out.push((id, self.note_status_write(&id, synced)));
        }
        out
    }

    /// Logs a change between "status writes work" and "they fail", once per change.
    fn note_status_write(&mut self, id: &QueueId, r: io::Result<()>) -> bool {
        match r {
            Ok(()) => {
                if let Some(e) = self.status_failing.take() {
                    log::warn!("status logs are writable again (they failed with: {e})");
                }
                true
            }
            Err(e) => {
                let why = e.to_string();
                if self.status_failing.as_deref() != Some(why.as_str()) {
                    log::error!(
                        "{id}: cannot write status log: {why}; messages whose results cannot \
                         be recorded are deferred until writes succeed again"
                    );
                    self.status_failing = Some(why);
                }
                false
            }
        }
    }

    /// Carries out one effect.
    pub fn apply(&mut self, effect: &Effect) -> Result<(), SpoolError> {
        match effect {
            Effect::Record { id, lines } => {
                let r = status::append(&self.spool, id.as_str(), lines);
                let seen = match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.source.kind(), e.to_string())),
                };
                self.note_status_write(id, seen);
                r
            }
            Effect::Defer { id, delay } => self.defer(id, *delay),
            Effect::Hold { id, why } => {
                let path = self.spool.path(QueueState::Active, id.as_str());
                log::error!(
                    "{id}: queue file {} cannot be used ({why}); moved to hold/ for the \
                     postmaster (sloop queue show / release / delete)",
                    path.display()
                );
                self.spool
                    .move_to(id.as_str(), QueueState::Active, QueueState::Hold)
            }
            Effect::Retire { id, size, has_log } => {
                let path = self.spool.path(QueueState::Active, id.as_str());
                ctx(
                    self.recycler.retire(&self.spool, &path, id.as_str(), *size),
                    "remove",
                    &path,
                )?;
                self.retired.push((*id, *has_log));
                Ok(())
            }
            Effect::Forget { id } => status::remove(&self.spool, id.as_str()),
            Effect::Notice { id, notice } => self.notice(id, notice.as_ref()),
        }
    }

    /// Carries out a plan (see [`Plan`]); returns the error of the step that failed.
    pub fn run(&mut self, plan: &Plan) -> Result<(), SpoolError> {
        for (effect, must) in &plan.steps {
            match self.apply(effect) {
                Ok(()) => {}
                Err(e) if !*must => log::warn!("{}: {e}", plan.id),
                Err(e) => {
                    log::error!("{}: {e}; deferred, tried again later", plan.id);
                    for f in &plan.fallback {
                        if let Err(fe) = self.apply(f) {
                            log::error!("{}: {fe}", plan.id);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn defer(&mut self, id: &QueueId, delay: Duration) -> Result<(), SpoolError> {
        let path = self.spool.path(QueueState::Active, id.as_str());
        let due = SystemTime::now() + delay;
        let set = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(due));
        if let Err(e) = set {
            // Moved anyway: it is then due at once, which is early, never lost.
            log::warn!("{id}: cannot set next attempt time: {e}");
        }
        self.spool
            .move_to(id.as_str(), QueueState::Active, QueueState::Deferred)
    }

    fn notice(&mut self, id: &QueueId, notice: &dyn Notice) -> Result<(), SpoolError> {
        let path = self.spool.path(QueueState::Active, id.as_str());
        let err = |e: &dyn fmt::Display| SpoolError {
            path: path.clone(),
            action: "send a notification about",
            source: io::Error::other(e.to_string()),
        };
        let (env, body) = open_message(&path).map_err(|e| err(&e))?;
        let mut reader = notice.render(&env, body).map_err(|e| err(&e))?;
        let notice_env = notice.envelope(&env);
        let nid = commit(&self.spool, &mut reader, notice_env, 0).map_err(|e| err(&e))?;
        let nid = QueueId::parse(&nid).ok_or_else(|| err(&"committed under a bad ID"))?;
        status::append(&self.spool, id.as_str(), &[notice.record_line(&nid)])?;
        log::info!("{id}: {}: {nid}", notice.describe());
        Ok(())
    }

    /// Ends a turn: one fsync of `active/` makes its retirements durable, then their
    /// status logs go. Returns the IDs retired.
    pub fn end_turn(&mut self) -> Vec<QueueId> {
        if self.retired.is_empty() {
            return Vec::new();
        }
        if let Err(e) = fsync_dir(&self.spool.state_dir(QueueState::Active)) {
            log::error!("{e}");
        }
        let mut ids = Vec::new();
        for (id, has_log) in std::mem::take(&mut self.retired) {
            if has_log {
                if let Err(e) = status::remove(&self.spool, id.as_str()) {
                    log::warn!("{id}: {e}");
                }
            }
            ids.push(id);
        }
        ids
    }
}

/// Sorts an error opening or reading a queue file or status log.
fn classify(e: &io::Error, what: &str) -> LoadError {
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData => {
            LoadError::Permanent(format!("{what}: {e}"))
        }
        _ => LoadError::Transient(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::spool::{Recipient, Spool};

    fn spool(name: &str) -> Spool {
        let dir = std::env::temp_dir().join(format!("sloop-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Spool::new(dir);
        s.ensure_layout().unwrap();
        s
    }

    fn queued(s: &Spool) -> QueueId {
        let env = Envelope::new("a@x.test", vec![Recipient::new("b@y.test")]);
        let id = commit(s, &mut &b"Subject: t\r\n\r\nhi\r\n"[..], env, 0).unwrap();
        QueueId::parse(&id).unwrap()
    }

    #[test]
    fn a_corrupt_queue_file_is_permanent_trouble_and_goes_to_hold() {
        let s = spool("corrupt");
        let mut w = Writer::new(s.clone());
        let id = queued(&s);
        assert!(w.activate(QueueState::Incoming, &id).unwrap());
        assert!(
            !w.activate(QueueState::Incoming, &id).unwrap(),
            "gone: not an error"
        );
        let path = s.path(QueueState::Active, id.as_str());
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        assert!(matches!(w.load(&id), Err(LoadError::Permanent(_))));
        w.apply(&Effect::Hold {
            id,
            why: "x".into(),
        })
        .unwrap();
        assert!(s.path(QueueState::Hold, id.as_str()).exists());
        let _ = std::fs::remove_dir_all(s.root());
    }

    #[test]
    fn permission_denied_is_permanent_an_io_error_transient() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(classify(&denied, "f"), LoadError::Permanent(_)));
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(classify(&eio, "f"), LoadError::Transient(_)));
    }

    #[test]
    fn a_failing_step_runs_the_fallback_and_stops_the_plan() {
        let s = spool("plan");
        let mut w = Writer::new(s.clone());
        let id = queued(&s);
        w.activate(QueueState::Incoming, &id).unwrap();
        let other = QueueId::new();
        let plan = Plan {
            id,
            steps: vec![
                // Not required: its failure is only logged.
                (
                    Effect::Retire {
                        id: other,
                        size: 1,
                        has_log: false,
                    },
                    false,
                ),
                (
                    Effect::Hold {
                        id: other,
                        why: "x".into(),
                    },
                    true,
                ),
                (
                    Effect::Retire {
                        id,
                        size: 1,
                        has_log: false,
                    },
                    true,
                ),
            ],
            fallback: vec![
                Effect::Record {
                    id,
                    lines: vec![status::result_line(0, status::Outcome::Ok, "2.0.0", "x")],
                },
                Effect::Defer {
                    id,
                    delay: Duration::from_secs(60),
                },
            ],
        };
        assert!(w.run(&plan).is_err());
        let deferred = s.path(QueueState::Deferred, id.as_str());
        let due = std::fs::metadata(&deferred).unwrap().modified().unwrap();
        assert!(due > SystemTime::now() + Duration::from_secs(30));
        assert!(w.end_turn().is_empty(), "nothing was retired");
        assert!(
            status::load(&s, id.as_str(), 1).unwrap().is_final(0),
            "recorded first"
        );
        let _ = std::fs::remove_dir_all(s.root());
    }

    #[test]
    fn status_lines_are_group_committed_and_retired_logs_removed() {
        let s = spool("flush");
        let mut w = Writer::new(s.clone());
        let (a, b) = (queued(&s), queued(&s));
        for id in [a, b] {
            w.activate(QueueState::Incoming, &id).unwrap();
        }
        w.queue_line(
            a,
            status::result_line(0, status::Outcome::Defer, "4.0.0", "x"),
        );
        w.queue_line(b, status::result_line(0, status::Outcome::Ok, "2.0.0", "y"));
        w.queue_line(
            a,
            status::result_line(0, status::Outcome::Fail, "5.0.0", "z"),
        );
        let mut r = w.flush();
        r.sort();
        let mut want = vec![(a, true), (b, true)];
        want.sort();
        assert_eq!(r, want);
        let st = status::load(&s, a.as_str(), 1).unwrap();
        assert_eq!(st.recipients[0].as_ref().unwrap().attempts, 2);
        w.apply(&Effect::Retire {
            id: b,
            size: 10,
            has_log: true,
        })
        .unwrap();
        assert_eq!(w.end_turn(), vec![b]);
        assert!(!status::path(&s, b.as_str()).exists());
        assert!(status::path(&s, a.as_str()).exists());
        let _ = std::fs::remove_dir_all(s.root());
    }
}
