//! Group commit: the results of one loop turn are made durable together, then acted on.
//!
//! During a turn, each recipient result is only queued ([`Qmgr::write_status`]) and a
//! message whose last job ended is only noted. At the end of the turn [`Qmgr::settle`]
//! writes the queued lines to their `status/<id>` logs and fsyncs them back to back, and
//! only then decides the fate of the noted messages (remove, bounce, defer: messages.rs)
//! and makes the turn's removals durable with one fsync of `active/`. So a result is
//! durable before its message can be moved or removed (ARCHITECTURE.md §3, invariant 2).
//!
//! One exception, as in Postfix: a message whose recipients all succeeded and that is
//! removed in this very turn gets no status lines at all; the durable removal is the
//! record. A crash before that removal is durable brings the message back whole, and
//! its recipients get a second delivery: a duplicate, the same worst case as a crash
//! during the delivery itself. This saves a file creation, an fsync and an unlink per
//! message, the queue manager's main cost.
//!
//! A status log that cannot be written or synced marks its message: it is then deferred
//! rather than removed, and its next attempt starts again from what is on disk.

use super::Qmgr;
use sloop_common::spool::status::{self, Outcome};
use sloop_common::spool::QueueState;
use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};

impl Qmgr {
    /// Queues `line` for the status log of `id`; [`Qmgr::settle`] writes and syncs it.
    pub(super) fn write_status(&mut self, id: &str, line: String) {
        self.unwritten.push((id.to_string(), line));
    }

    /// Notes that the last job of `id` ended; [`Qmgr::settle`] decides its fate.
    pub(super) fn note_finished(&mut self, id: &str) {
        self.finished.push(id.to_string());
    }

    /// Ends a loop turn: writes and syncs the turn's results, then finishes the noted
    /// messages and makes their removals durable.
    pub(super) fn settle(&mut self) {
        let finished = std::mem::take(&mut self.finished);
        let clean: HashSet<&str> = finished
            .iter()
            .map(String::as_str)
            .filter(|id| self.all_delivered(id))
            .collect();
        let mut lines = std::mem::take(&mut self.unwritten);
        lines.retain(|(id, _)| !clean.contains(id.as_str()));
        self.write_and_sync(lines);
        for id in &finished {
            self.finish(id);
        }
        self.flush_removals();
    }

    /// True when every recipient of `id` succeeded and its file is still in `active/`.
    fn all_delivered(&self, id: &str) -> bool {
        let Some(m) = self.active.get(id) else {
            return false;
        };
        let all_ok = m
            .status
            .recipients
            .iter()
            .all(|r| r.as_ref().map(|r| r.outcome) == Some(Outcome::Ok));
        all_ok && !m.io_error && self.spool.path(QueueState::Active, id).exists()
    }

    /// Appends each message's lines to its log, then fsyncs the logs one after another.
    fn write_and_sync(&mut self, lines: Vec<(String, String)>) {
        let mut order: Vec<String> = Vec::new();
        let mut text: HashMap<String, String> = HashMap::new();
        for (id, line) in lines {
            let buf = text.entry(id.clone()).or_insert_with(|| {
                order.push(id.clone());
                String::new()
            });
            buf.push_str(&line);
            buf.push('\n');
        }
        let mut files = Vec::new();
        for id in order {
            let bytes = text.remove(&id).unwrap_or_default();
            let p = status::path(&self.spool, &id);
            let written = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .and_then(|mut f| f.write_all(bytes.as_bytes()).map(|()| f));
            files.push((id, written));
        }
        for (id, file) in files {
            let synced = file.and_then(|f| f.sync_data());
            self.mark_written(&id, synced);
        }
    }

    fn mark_written(&mut self, id: &str, result: io::Result<()>) {
        let Some(m) = self.active.get_mut(id) else {
            return;
        };
        m.status_on_disk = true;
        if let Err(e) = result {
            log::error!("{id}: cannot record results in the status log: {e}");
            m.io_error = true;
        }
    }
}
