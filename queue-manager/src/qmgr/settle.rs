//! Group commit: the results of one loop turn are made durable together, then acted on.
//!
//! During a turn each recipient result only goes to the core, which keeps its status
//! line, and a message whose last job ended is only noted. At the end of the turn
//! [`Qmgr::settle`] hands the turn's lines to the spool's executor, which appends them
//! to their `status/<id>` logs and fsyncs them back to back; the core learns which
//! logs are durable, then decides the fate of the noted messages (remove, bounce,
//! defer: core.rs); the turn's removals are made durable with one fsync of `active/`.
//! So a result is durable before its message can be moved or removed.
//!
//! One exception, as in Postfix: a message whose recipients all succeeded and that is
//! removed in this very turn gets no status lines from the queue manager; the durable
//! removal is the record. A crash before that removal means another attempt: a Maildir
//! copy is then found by its name and not written again (delivery's maildir.rs); if the
//! removal itself fails, the withheld lines are written before the message is deferred.

use super::core::Event;
use super::messages::unix_now;
use super::Qmgr;

impl Qmgr {
    /// Ends a loop turn: writes and syncs the turn's results, then decides the noted
    /// messages and makes their removals durable.
    pub(super) fn settle(&mut self) {
        for (id, line) in self.core.take_status_lines() {
            self.writer.queue_line(id, line);
        }
        for (id, ok) in self.writer.flush() {
            self.handle(Event::Written { id, ok });
        }
        for id in self.core.finished().to_vec() {
            if !self.writer.is_active(&id) {
                let deleted = self.writer.spool().find(id.as_str()).is_none();
                self.handle(Event::Vanished { id, deleted });
            }
        }
        self.handle(Event::Settle { now: unix_now() });
        for id in self.writer.end_turn() {
            log::info!("{id}: removed");
        }
    }
}
