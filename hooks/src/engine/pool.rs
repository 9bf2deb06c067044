//! The milter connections a process keeps between SMTP sessions (`[[milter]] reuse`,
//! docs/milter.md "Connection reuse"): at most one per `[[milter]]` table, since a
//! process serves one session at a time.
//!
//! A connection goes in at the end of a session (after `SMFIC_QUIT_NC`) and comes out
//! at the next session's connect event if it has waited less than
//! [`REUSE_MAX_IDLE`](crate::milter::REUSE_MAX_IDLE) and the filter has neither closed
//! it nor sent anything since. Connections that waited too long are closed with
//! `SMFIC_QUIT` when the process looks ([`MilterPool::expire`], from its idle loop),
//! and all of them when it exits ([`MilterPool::close_all`], also on drop). A filter
//! that failed a kept connection once is not kept for again by this process.

use std::time::Instant;

use crate::milter::{reuse_fresh, MilterSession};

/// The kept connections, by index into `HooksConfig::milters`.
#[derive(Debug)]
pub struct MilterPool {
    kept: Vec<Option<Kept>>,
    /// Reuse switched off (after a failure) for this filter.
    off: Vec<bool>,
}

#[derive(Debug)]
struct Kept {
    session: Box<MilterSession>,
    since: Instant,
}

impl MilterPool {
    /// An empty pool for `n` milters.
    pub fn new(n: usize) -> MilterPool {
        MilterPool {
            kept: (0..n).map(|_| None).collect(),
            off: vec![false; n],
        }
    }

    /// The kept connection of milter `i`, ready for a new session, if there is one fit
    /// for it at `now`.
    pub fn take(&mut self, i: usize, now: Instant) -> Option<Box<MilterSession>> {
        let kept = self.kept.get_mut(i)?.take()?;
        if !reuse_fresh(kept.since, now) {
            kept.session.quit();
            return None;
        }
        let mut session = kept.session;
        // Not fit (closed by the filter, or it sent something unasked): dropped.
        session.resume().then_some(session)
    }

    /// Whether milter `i`'s connections may be kept.
    pub fn may_keep(&self, i: usize) -> bool {
        !self.off.get(i).copied().unwrap_or(true)
    }

    /// Keeps `session` for milter `i` from `now`.
    pub fn put(&mut self, i: usize, session: Box<MilterSession>, now: Instant) {
        let Some(slot) = self.kept.get_mut(i) else {
            session.quit();
            return;
        };
        if let Some(old) = slot.replace(Kept {
            session,
            since: now,
        }) {
            old.session.quit();
        }
    }

    /// No more keeping connections of milter `i` in this process.
    pub fn switch_off(&mut self, i: usize) {
        if let Some(off) = self.off.get_mut(i) {
            *off = true;
        }
        if let Some(Some(kept)) = self.kept.get_mut(i).map(Option::take) {
            kept.session.quit();
        }
    }

    /// Closes the connections that have waited too long at `now`.
    pub fn expire(&mut self, now: Instant) {
        for slot in &mut self.kept {
            if slot.as_ref().is_some_and(|k| !reuse_fresh(k.since, now)) {
                if let Some(kept) = slot.take() {
                    kept.session.quit();
                }
            }
        }
    }

    /// Closes every kept connection (`SMFIC_QUIT`).
    pub fn close_all(&mut self) {
        for slot in &mut self.kept {
            if let Some(kept) = slot.take() {
                kept.session.quit();
            }
        }
    }

    /// How many connections are kept.
    pub fn len(&self) -> usize {
        self.kept.iter().filter(|k| k.is_some()).count()
    }

    /// True when no connection is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for MilterPool {
    fn drop(&mut self) {
        self.close_all();
    }
}
