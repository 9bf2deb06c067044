//! The milters' part of the engine: each milter's event at a stage (connecting it, or
//! taking its kept connection, at connect), its message events and edits, aborts, and
//! what a failure makes of it.

use super::answers::milter_said;
use super::decide::Said;
use super::{qid, Engine, Facts, Message, MilterPool, MilterSlot, MilterState, SessionHooks};
use crate::milter::{apply_edits, MilterError, MilterReply, MilterSession};
use sloop_common::config::hooks::{HookStage, MilterHook};
use sloop_common::spool::Envelope;
use std::time::Instant;

impl Engine {
    /// One milter's event for `stage` (connecting it at connect).
    pub(super) fn milter_event(
        &mut self,
        sess: &mut SessionHooks,
        i: usize,
        stage: HookStage,
        facts: &Facts,
        deadline: Instant,
    ) -> Said {
        let Some((slot, hook)) = slot_and_hook(sess, &self.cfg.milters, i) else {
            return Said::Dunno;
        };
        if stage == HookStage::Connect && matches!(slot.state, MilterState::Idle) {
            return connect_milter(&mut self.pool, slot, hook, facts, deadline);
        }
        let by = deadline.min(Instant::now() + hook.command_timeout);
        let macros = facts.macros(stage);
        let (session, skip) = match &mut slot.state {
            MilterState::Open {
                session,
                skip_message,
            } => (session, skip_message),
            MilterState::AcceptedSession(_) => return Said::Dunno,
            MilterState::Failed | MilterState::Idle => return Said::Failed(hook.on_error),
        };
        if stage == HookStage::Mail {
            *skip = false;
        }
        if *skip {
            return Said::Dunno;
        }
        let result = match stage {
            HookStage::Connect => session.connect(&facts.connect_info(), &macros, by),
            HookStage::Helo => session.helo(&facts.helo, &macros, by),
            HookStage::Mail => {
                let mut args = vec![format!("<{}>", facts.sender)];
                args.extend(facts.mail_args.iter().cloned());
                session.mail(&args, &macros, by)
            }
            HookStage::Rcpt => {
                let mut args = vec![format!("<{}>", facts.recipient)];
                args.extend(facts.rcpt_args.iter().cloned());
                session.rcpt(&args, &macros, by)
            }
            HookStage::Data => session.data(&macros, by),
            HookStage::Eom => return Said::Dunno,
        };
        match result {
            Ok(reply) => {
                let said = milter_said(stage, &hook.name, hook.on_error, reply);
                if said == Said::MilterAccept {
                    if stage.is_session_phase() {
                        accept_session(slot);
                    } else {
                        *skip = true;
                    }
                }
                said
            }
            Err(e) => failed(slot, hook, facts, &e),
        }
    }

    /// One milter's message events (header, body, end of message) and its edits,
    /// applied to `work` (a copy of `msg` made at the first edit).
    pub(super) fn milter_message(
        &mut self,
        sess: &mut SessionHooks,
        i: usize,
        facts: &Facts,
        msg: &Message<'_>,
        work: &mut Option<(Vec<u8>, Envelope)>,
        deadline: Instant,
    ) -> Said {
        let Some((slot, hook)) = slot_and_hook(sess, &self.cfg.milters, i) else {
            return Said::Dunno;
        };
        let session = match &mut slot.state {
            MilterState::Open {
                skip_message: true, ..
            }
            | MilterState::AcceptedSession(_) => return Said::Dunno,
            MilterState::Open { session, .. } => session,
            MilterState::Failed | MilterState::Idle => return Said::Failed(hook.on_error),
        };
        let macros = facts.macros(HookStage::Eom);
        let current: &[u8] = match work {
            Some((bytes, _)) => bytes,
            None => msg.bytes,
        };
        let (reply, edits) = match session.message(current, &macros, hook.content_timeout, deadline)
        {
            Ok(r) => r,
            Err(e) => return failed(slot, hook, facts, &e),
        };
        if !edits.is_empty() {
            let (bytes, envelope) =
                work.get_or_insert_with(|| (msg.bytes.clone(), msg.envelope.clone()));
            match apply_edits(&edits, bytes, envelope) {
                Ok(ignored) => {
                    for i in ignored {
                        log::info!("{}milter {}: {i}", qid(facts), hook.name);
                    }
                }
                Err(e) => {
                    log::warn!(
                        "{}milter {}: cannot apply its changes: {e}; on_error={}",
                        qid(facts),
                        hook.name,
                        hook.on_error.name()
                    );
                    slot.state = MilterState::Failed;
                    return Said::Failed(hook.on_error);
                }
            }
        }
        milter_said(HookStage::Eom, &hook.name, hook.on_error, reply)
    }

    /// Tells the open milters the current message is abandoned.
    pub(super) fn abort_milters(&mut self, sess: &mut SessionHooks, deadline: Instant) {
        for slot in &mut sess.milters {
            if let MilterState::Open {
                session,
                skip_message,
            } = &mut slot.state
            {
                let by = self.cfg.milters.get(slot.index).map_or(deadline, |h| {
                    deadline.min(Instant::now() + h.command_timeout)
                });
                session.abort(by);
                *skip_message = false;
            }
        }
        sess.in_message = false;
    }
}

/// Milter `i` of the session and its table (`None`: no such milter; the caller says
/// DUNNO).
fn slot_and_hook<'a>(
    sess: &'a mut SessionHooks,
    milters: &'a [MilterHook],
    i: usize,
) -> Option<(&'a mut MilterSlot, &'a MilterHook)> {
    let slot = sess.milters.get_mut(i)?;
    let hook = milters.get(slot.index)?;
    Some((slot, hook))
}

/// The connect event of a milter not connected yet: on a connection kept from an
/// earlier session when there is one fit for it (if that one turns out closed by the
/// filter, on a new one), else on a new connection.
fn connect_milter(
    pool: &mut MilterPool,
    slot: &mut MilterSlot,
    hook: &MilterHook,
    facts: &Facts,
    deadline: Instant,
) -> Said {
    let macros = facts.macros(HookStage::Connect);
    let info = facts.connect_info();
    let by = || deadline.min(Instant::now() + hook.command_timeout);
    let kept = if hook.reuse {
        pool.take(slot.index, Instant::now())
    } else {
        None
    };
    if let Some(mut session) = kept {
        match session.connect(&info, &macros, by()) {
            Ok(reply) => return connected(slot, hook, session, reply),
            // Closed under us (the filter restarted, or timed the idle connection
            // out just now): the filter has seen nothing of this session.
            Err(e @ (MilterError::Eof { .. } | MilterError::Io { .. })) => {
                log::info!(
                    "milter {}: kept connection unusable ({e}); connecting again",
                    hook.name
                );
            }
            Err(e) => {
                log::warn!(
                    "milter {}: a kept connection failed; its connections are no longer \
                     kept by this process",
                    hook.name
                );
                pool.switch_off(slot.index);
                return failed(slot, hook, facts, &e);
            }
        }
    }
    let open_by = deadline.min(Instant::now() + hook.connect_timeout);
    let mut session = match MilterSession::open(hook, open_by) {
        Ok(s) => Box::new(s),
        Err(e) => return failed(slot, hook, facts, &e),
    };
    match session.connect(&info, &macros, by()) {
        Ok(reply) => connected(slot, hook, session, reply),
        Err(e) => failed(slot, hook, facts, &e),
    }
}

/// The milter answered the connect event: open, or done with for the session.
fn connected(
    slot: &mut MilterSlot,
    hook: &MilterHook,
    session: Box<MilterSession>,
    reply: MilterReply,
) -> Said {
    let said = milter_said(HookStage::Connect, &hook.name, hook.on_error, reply);
    slot.state = if said == Said::MilterAccept {
        MilterState::AcceptedSession(session)
    } else {
        MilterState::Open {
            session,
            skip_message: false,
        }
    };
    said
}

/// The milter accepted the session (at HELO): nothing more is asked of it.
fn accept_session(slot: &mut MilterSlot) {
    if let MilterState::Open { session, .. } =
        std::mem::replace(&mut slot.state, MilterState::Failed)
    {
        slot.state = MilterState::AcceptedSession(session);
    }
}

/// Marks the milter failed, logs why, and applies its `on_error`.
fn failed(
    slot: &mut MilterSlot,
    hook: &MilterHook,
    facts: &Facts,
    e: &crate::milter::MilterError,
) -> Said {
    log::warn!(
        "{}milter {}: {e}; on_error={}",
        qid(facts),
        hook.name,
        hook.on_error.name()
    );
    slot.state = MilterState::Failed;
    Said::Failed(hook.on_error)
}
