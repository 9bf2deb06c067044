//! Runs the hooks of each SMTP stage in order and turns their answers into one
//! decision for the session (docs/filters.md, "Policy services", "Milters",
//! "Failure policy").
//!
//! An [`Engine`] lives as long as the worker process: the configuration, the access
//! tables, one [`PolicyClient`] per `[[policy]]` (whose connection is reused across
//! sessions), and the milter connections kept between sessions (`pool.rs`). A
//! [`SessionHooks`] lives as long as one SMTP session (or one `sendmail` message): one
//! milter connection per `[[milter]]` that sees its listener, taken from the pool or
//! opened at connect, dropped for the rest of the session after its first failure (its
//! `on_error` then applies at each later stage), and given back to the pool at the end
//! of the session when it is sound and `reuse` allows.
//!
//! At each stage, in order: the `[access]` rules of the stage (the first match wins;
//! `accept` skips the policy services), the `[[policy]]` services of the stage in table
//! order, then every milter's event for the stage. The answers are folded by
//! `decide.rs` (Postfix's semantics); what each says is read by `answers.rs`. Each call
//! gets the earlier of its own timeout and the phase deadline the caller gives; the
//! caller's watchdog stays the last line. Relay permission is never a hook's to give:
//! the caller runs its built-in checks first and asks the engine only when they pass.
//!
//! The milters' side (their events, edits and failures) is `milters.rs`; the kept
//! connections `pool.rs`.
//!
//! At the end of the message ([`Engine::end_of_message`]) the milters' edits are
//! applied in order to copies of the message and the envelope, each milter seeing the
//! previous one's result; the copies replace the originals only when the whole stage
//! accepts (all or nothing).

pub mod answers;
pub mod decide;
pub mod facts;
mod milters;
mod pool;

use crate::access::{AccessError, AccessTables};
use crate::milter::{MilterSession, Released};
use crate::policy::PolicyClient;
use answers::policy_said;
use decide::{access_said, Flow, Said, StageFold};
pub use decide::{Decision, Effects, Source};
pub use facts::Facts;
pub use pool::MilterPool;
use sloop_common::config::hooks::{HookListener, HookStage, HooksConfig, OnError};
use sloop_common::spool::Envelope;
use std::time::Instant;

/// The hooks of one worker process.
#[derive(Debug)]
pub struct Engine {
    cfg: HooksConfig,
    /// The compiled `[access]` rules (an error only for rules that did not come from a
    /// validated configuration).
    access: Result<AccessTables, AccessError>,
    /// One client per `cfg.policies` entry, same order.
    policies: Vec<PolicyClient>,
    /// The milter connections kept between sessions.
    pool: MilterPool,
}

/// The message and envelope the end-of-message milters may edit.
#[derive(Debug)]
pub struct Message<'a> {
    /// Header, empty line, body, as it will be committed.
    pub bytes: &'a mut Vec<u8>,
    /// Sender, recipients (with their DSN parameters), `RET`, `ENVID`, ...
    pub envelope: &'a mut Envelope,
}

/// The milters of one session.
#[derive(Debug)]
pub struct SessionHooks {
    listener: HookListener,
    milters: Vec<MilterSlot>,
    /// A milter has seen MAIL for a message it has not seen the end of.
    in_message: bool,
}

#[derive(Debug)]
struct MilterSlot {
    /// Index into `HooksConfig::milters`.
    index: usize,
    state: MilterState,
}

#[derive(Debug)]
enum MilterState {
    /// Not connected yet (connected at the connect stage).
    Idle,
    /// Connected. `skip_message`: it accepted the current message.
    Open {
        session: Box<MilterSession>,
        skip_message: bool,
    },
    /// It accepted the session at connect or HELO: nothing more is asked (the
    /// connection stays open, to be kept or closed at the end of the session).
    AcceptedSession(Box<MilterSession>),
    /// It failed: its `on_error` applies at every later stage.
    Failed,
}

impl Engine {
    /// The engine of a worker for this configuration (no connection is opened here).
    pub fn new(cfg: &HooksConfig) -> Engine {
        Engine {
            cfg: cfg.clone(),
            access: AccessTables::new(&cfg.access),
            policies: cfg.policies.iter().map(PolicyClient::new).collect(),
            pool: MilterPool::new(cfg.milters.len()),
        }
    }

    /// Closes the kept milter connections that have waited too long (the process
    /// calls this when it is idle).
    pub fn close_idle(&mut self, now: Instant) {
        self.pool.expire(now);
    }

    /// Closes every kept milter connection (the process is about to exit).
    pub fn close_kept(&mut self) {
        self.pool.close_all();
    }

    /// How many milter connections are kept for the next session.
    pub fn kept(&self) -> usize {
        self.pool.len()
    }

    /// True when some hook runs for `listener` at `stage` (when none does, the caller
    /// skips the engine altogether).
    pub fn active(&self, listener: HookListener, stage: HookStage) -> bool {
        (listener != HookListener::Local && self.access_list(stage).is_some())
            || self.cfg.policies_at(listener, stage).next().is_some()
            || self.cfg.milters_for(listener).next().is_some()
    }

    /// True when no hook at all runs for `listener`.
    pub fn idle(&self, listener: HookListener) -> bool {
        [
            HookStage::Connect,
            HookStage::Helo,
            HookStage::Mail,
            HookStage::Rcpt,
            HookStage::Data,
            HookStage::Eom,
        ]
        .iter()
        .all(|s| !self.active(listener, *s))
    }

    /// The hooks of a new session on `listener` (no milter is connected yet).
    pub fn session(&self, listener: HookListener) -> SessionHooks {
        let milters = self
            .cfg
            .milters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.listeners.contains(&listener))
            .map(|(index, _)| MilterSlot {
                index,
                state: MilterState::Idle,
            })
            .collect();
        SessionHooks {
            listener,
            milters,
            in_message: false,
        }
    }

    /// Runs the hooks of `stage` (not the end of message: see
    /// [`Engine::end_of_message`]) with every call ending by `deadline`.
    pub fn run(
        &mut self,
        sess: &mut SessionHooks,
        stage: HookStage,
        facts: &Facts,
        deadline: Instant,
    ) -> Decision {
        let mut fold = StageFold::new(stage);
        if self.rules_and_policies(&mut fold, sess.listener, stage, facts, deadline) == Flow::Go {
            if stage == HookStage::Mail && sess.in_message {
                self.abort_milters(sess, deadline);
            }
            for i in 0..sess.milters.len() {
                let said = self.milter_event(sess, i, stage, facts, deadline);
                if fold.take(Source::Milter, said) == Flow::Stop {
                    break;
                }
            }
            if stage == HookStage::Mail {
                sess.in_message = true;
            }
        }
        fold.finish()
    }

    /// Runs the end-of-message hooks: access rules have none; the policy services of
    /// `eom`, then the milters, which see `msg` and may edit it. The edits are applied
    /// to `msg` only when the stage accepts.
    pub fn end_of_message(
        &mut self,
        sess: &mut SessionHooks,
        facts: &Facts,
        msg: Message<'_>,
        deadline: Instant,
    ) -> Decision {
        let stage = HookStage::Eom;
        let mut fold = StageFold::new(stage);
        let mut work: Option<(Vec<u8>, Envelope)> = None;
        if self.rules_and_policies(&mut fold, sess.listener, stage, facts, deadline) == Flow::Go {
            for i in 0..sess.milters.len() {
                let said = self.milter_message(sess, i, facts, &msg, &mut work, deadline);
                if fold.take(Source::Milter, said) == Flow::Stop {
                    break;
                }
            }
        }
        let decision = fold.finish();
        // A refused message may have left a milter mid-transaction (a reject at a
        // header): the next MAIL, or the end of the session, aborts it.
        sess.in_message = !matches!(decision, Decision::Accept(_));
        if let (Decision::Accept(_), Some((bytes, envelope))) = (&decision, work) {
            *msg.bytes = bytes;
            *msg.envelope = envelope;
        }
        decision
    }

    /// Ends the session's milter connections (politely, as far as `deadline` allows):
    /// each sound one is kept for the next session when its `reuse` allows, else
    /// closed.
    pub fn finish(&mut self, sess: &mut SessionHooks, deadline: Instant) {
        if sess.in_message {
            self.abort_milters(sess, deadline);
        }
        for slot in sess.milters.drain(..) {
            let session = match slot.state {
                MilterState::Open { session, .. } | MilterState::AcceptedSession(session) => {
                    session
                }
                MilterState::Idle | MilterState::Failed => continue,
            };
            let keep = self
                .cfg
                .milters
                .get(slot.index)
                .filter(|h| h.reuse && self.pool.may_keep(slot.index));
            let Some(hook) = keep else {
                session.quit();
                continue;
            };
            match session.release(deadline) {
                Released::Kept(s) => self.pool.put(slot.index, s, Instant::now()),
                Released::Closed => {}
                Released::Failed(e) => {
                    log::warn!(
                        "milter {}: cannot keep the connection for the next session: {e}; \
                         its connections are no longer kept by this process",
                        hook.name
                    );
                    self.pool.switch_off(slot.index);
                }
            }
        }
    }

    /// The access rules and policy services of the stage.
    fn rules_and_policies(
        &mut self,
        fold: &mut StageFold,
        listener: HookListener,
        stage: HookStage,
        facts: &Facts,
        deadline: Instant,
    ) -> Flow {
        let subject = facts.subject(stage);
        if listener != HookListener::Local {
            if let Some(said) = self.access_said(stage, facts, &subject) {
                if fold.take(Source::Access, said) == Flow::Stop {
                    return Flow::Stop;
                }
            }
        }
        for (i, hook) in self.cfg.policies.iter().enumerate() {
            if hook.stage != stage || !hook.listeners.contains(&listener) {
                continue;
            }
            if fold.skips_policies() {
                break;
            }
            let Some(client) = self.policies.get_mut(i) else {
                continue;
            };
            let req = facts.policy_request(stage);
            let said = match client.query(&req, deadline) {
                Ok(action) => policy_said(stage, &hook.name, hook.on_error, &subject, action),
                Err(e) => {
                    log::warn!(
                        "{}policy {}: {e}; on_error={}",
                        qid(facts),
                        hook.name,
                        hook.on_error.name()
                    );
                    Said::Failed(hook.on_error)
                }
            };
            if fold.take(Source::Policy, said) == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// What the first matching access rule of the stage's list says, if one matches.
    fn access_said(&self, stage: HookStage, facts: &Facts, subject: &str) -> Option<Said> {
        let tables = match &self.access {
            Ok(t) => t,
            Err(e) => {
                // The loader compiles every pattern with the same code: this cannot
                // happen with a validated configuration. Fail closed, temporarily.
                log::error!("{e}; access rules unusable, on_error=tempfail");
                return Some(Said::Failed(OnError::Tempfail));
            }
        };
        let verdict = match stage {
            HookStage::Connect => {
                let name = (facts.client_name != "unknown").then_some(facts.client_name.as_str());
                tables.client(facts.client_addr?, name)
            }
            HookStage::Helo => tables.helo(&facts.helo),
            HookStage::Mail => tables.sender(&facts.sender),
            HookStage::Rcpt => tables.recipient(&facts.recipient),
            HookStage::Data | HookStage::Eom => None,
        }?;
        Some(access_said(stage, subject, verdict))
    }

    fn access_list(&self, stage: HookStage) -> Option<()> {
        let a = &self.cfg.access;
        let list = match stage {
            HookStage::Connect => &a.client,
            HookStage::Helo => &a.helo,
            HookStage::Mail => &a.sender,
            HookStage::Rcpt => &a.recipient,
            HookStage::Data | HookStage::Eom => return None,
        };
        (!list.is_empty()).then_some(())
    }
}

/// `QID: ` when the facts have a queue ID, else nothing.
fn qid(facts: &Facts) -> String {
    if facts.queue_id.is_empty() {
        String::new()
    } else {
        format!("{}: ", facts.queue_id)
    }
}

#[cfg(test)]
mod tests;
