//! The shell's side of a message's life: moving it into the active set and loading it
//! (what the core is told), and carrying out the core's effects.
//!
//! Loading: a rename into `active/` (the spool's executor), then its envelope and
//! status log. What cannot be read becomes an [`Event::Unreadable`]: the core holds a
//! file that will not become readable by itself (corrupt, truncated, permission denied)
//! and defers one that may (an I/O error), so a bad file costs one log line, not a
//! retry loop.

use super::core::{Effect, Event};
use super::Qmgr;
use sloop_common::spool::writer::{Effect as SpoolEffect, Plan};
use sloop_common::spool::{QueueId, QueueState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, the core's clock.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Qmgr {
    /// Moves `id` from `from` into the active set and tells the core what it holds.
    pub(super) fn load(&mut self, from: QueueState, id: QueueId) {
        if self.core.contains(&id) {
            return;
        }
        match self.writer.activate(from, &id) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                log::error!("{id}: cannot move from {from} to active: {e}");
                return;
            }
        }
        let event = match self.writer.load(&id) {
            Ok((env, status)) => Event::Loaded { id, env, status },
            Err(problem) => Event::Unreadable { id, problem },
        };
        self.handle(event);
    }

    /// Gives the core an event and carries out what it answers.
    pub(super) fn handle(&mut self, event: Event) {
        let effects = self.core.handle(event);
        self.apply(effects);
    }

    /// Carries out the core's effects, in order.
    pub(super) fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Info(line) => log::info!("{line}"),
                Effect::Warn(line) => log::warn!("{line}"),
                Effect::Schedule(job) => self.sched.push(job),
                Effect::Spool(e) => {
                    let delay = deferral(&e);
                    match self.writer.apply(&e) {
                        Ok(()) => self.after(&e, delay),
                        Err(err) => log::error!("{err}"),
                    }
                }
                Effect::Plan(plan) => self.run(&plan),
            }
        }
    }

    fn run(&mut self, plan: &Plan) {
        match self.writer.run(plan) {
            Ok(()) => {
                for (e, _) in &plan.steps {
                    self.after(e, deferral(e));
                }
            }
            // The fallback ran (the error is logged by the executor).
            Err(_) => {
                for e in &plan.fallback {
                    self.after(e, deferral(e));
                }
            }
        }
    }

    /// What the shell notes after an effect was carried out.
    fn after(&mut self, e: &SpoolEffect, delay: Option<Duration>) {
        if let Some(d) = delay {
            self.wake_deferred_at(Instant::now() + d);
        }
        if matches!(e, SpoolEffect::Notice { .. }) {
            // A notification was committed into incoming/.
            self.poked = true;
        }
    }
}

fn deferral(e: &SpoolEffect) -> Option<Duration> {
    match e {
        SpoolEffect::Defer { delay, .. } => Some(*delay),
        _ => None,
    }
}
