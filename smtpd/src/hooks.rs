//! Running the filter hooks of a session (docs/filters.md): the socket side of
//! `session/hooks.rs`.
//!
//! The session asks with `Step::Hook`; [`SessionRun::run`] arms the watchdog with the
//! stage's phase deadline, runs the worker's hook engine (`sloop_hooks::engine`) with
//! that deadline (each hook call gets the earlier of its own timeout and it), and gives
//! the decision back, with the queue job at the end of the message (edited by the
//! milters when they all accepted). Phase deadlines: the rest of
//! `smtpd.connect_timeout` less a margin at connect (the greeting or the refusal must
//! still be written in time, docs/invariants.md G1); `smtpd.command_timeout` at HELO,
//! MAIL, RCPT and DATA; `smtpd.data_timeout` at the end of the message. A hook that
//! blocks past its deadline is cut off by its client's own timers; if anything is
//! stuck anyway, the watchdog's `421 4.4.2` is the last line.
//!
//! A listener without hooks never gets here ([`stages`] is empty and the session never
//! asks); nothing is allocated for it.

use crate::session::{HookCall, HookStages, Policy, QueueJob};
use crate::watchdog::Watchdog;
use sloop_common::config::hooks::{HookListener, HookStage};
use sloop_hooks::engine::{Decision, Message, SessionHooks};
use std::time::{Duration, Instant};

/// The part of `smtpd.connect_timeout` kept for writing the greeting (or the refusal)
/// after the connect hooks, at most.
const CONNECT_REPLY_MARGIN: Duration = Duration::from_secs(1);

/// How long the milters are given to hear that the session ends.
const QUIT_BUDGET: Duration = Duration::from_secs(2);

/// The stages at which hooks run for `listener` in this worker.
pub fn stages(policy: &Policy, listener: HookListener) -> HookStages {
    let engine = policy.hook_engine();
    if engine.idle(listener) {
        return HookStages::NONE;
    }
    HookStages::of(|s| engine.active(listener, s))
}

/// One session's hooks: its milter connections and its deadlines.
pub struct SessionRun<'a> {
    policy: &'a Policy,
    /// `None` when no hook runs for the listener.
    hooks: Option<SessionHooks>,
    connect_deadline: Instant,
}

impl<'a> SessionRun<'a> {
    /// A session started at `started` on `listener`.
    pub fn new(
        policy: &'a Policy,
        listener: HookListener,
        stages: HookStages,
        started: Instant,
    ) -> SessionRun<'a> {
        let s = &policy.cfg.smtpd;
        let margin = CONNECT_REPLY_MARGIN.min(s.connect_timeout / 10);
        SessionRun {
            policy,
            hooks: (!stages.is_empty()).then(|| policy.hook_engine().session(listener)),
            connect_deadline: started + s.connect_timeout - margin,
        }
    }

    /// Runs the hooks `call` asks for; returns the decision and the job given back.
    pub fn run(
        &mut self,
        call: HookCall,
        watchdog: &Watchdog,
    ) -> (Decision, Option<Box<QueueJob>>) {
        let Some(sess) = self.hooks.as_mut() else {
            return (Decision::accept(), call.job);
        };
        let s = &self.policy.cfg.smtpd;
        let now = Instant::now();
        let deadline = match call.stage {
            HookStage::Connect => self.connect_deadline.max(now),
            HookStage::Eom => now + s.data_timeout,
            _ => now + s.command_timeout,
        };
        watchdog.arm("hooks", deadline);
        crate::faults::hook_check();
        let mut engine = self.policy.hook_engine();
        match (call.stage, call.job) {
            (HookStage::Eom, Some(mut job)) => {
                let before = job.message.len();
                let decision = engine.end_of_message(
                    sess,
                    &call.facts,
                    Message {
                        bytes: &mut job.message,
                        envelope: &mut job.envelope,
                    },
                    deadline,
                );
                // Octets a milter added (a header, a new body) are ours, not the
                // client's: the size limit stays the client's.
                job.trace_len += job.message.len().saturating_sub(before);
                (decision, Some(job))
            }
            (stage, job) => (engine.run(sess, stage, &call.facts, deadline), job),
        }
    }

    /// Ends the milter connections of the session (kept for the worker's next session
    /// where they allow it).
    pub fn finish(&mut self, watchdog: &Watchdog) {
        if let Some(mut sess) = self.hooks.take() {
            let deadline = Instant::now() + QUIT_BUDGET;
            watchdog.arm("hooks", deadline);
            self.policy.hook_engine().finish(&mut sess, deadline);
        }
    }
}
