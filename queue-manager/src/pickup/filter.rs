//! The milters of mail injected with `sendmail` (`[[milter]]` tables whose
//! `listeners` include `local`), run by `sloop-pickup` before the commit, as Postfix
//! runs its `non_smtpd_milters`.
//!
//! Each message gets a milter session of its own (on a connection kept from the
//! previous message of the same scan when the milter's `reuse` allows; closed after
//! the scan): a connect event for `localhost` with
//! no address (family unknown), no HELO, then MAIL, one RCPT per recipient, DATA and
//! the message, with the macros of a local submission (`{daemon_name}` =
//! `sloop-pickup`, `i` = the queue ID). The milters' edits are applied to the message
//! and envelope before the commit (all or nothing). What the answers make of the
//! message ([`Verdict`]):
//! - accept: committed (into `hold/` if a milter quarantined it);
//! - discard: not committed, logged `QID: discard: ...`, the maildrop file removed;
//! - reject (5xx, or a failed milter whose `on_error` is `reject`): logged
//!   `QID: milter-reject: ...` and **returned to the sender** (`returned.rs`), as
//!   Postfix bounces rejected local mail: a local sender has no SMTP client to tell;
//! - tempfail (4xx, or a failed milter whose `on_error` is `tempfail` or `shutdown`):
//!   left in `maildrop/` and tried again at the next scan.
//!
//! Access rules and policy services never see local mail (they check SMTP clients).

use super::returned::Returner;
use sloop_common::config::hooks::{HookListener, HookStage, HooksConfig};
use sloop_common::spool::Envelope;
use sloop_hooks::engine::{Decision, Engine, Facts, Message};
use std::time::{Duration, Instant};

/// Budget of each event but the message (the milters' own timeouts are shorter).
const COMMAND_BUDGET: Duration = Duration::from_secs(60);
/// Budget of the message events.
const MESSAGE_BUDGET: Duration = Duration::from_secs(600);

/// The local milters of the pickup process; `None` when there are none.
pub struct LocalFilters {
    engine: Engine,
    returner: Returner,
}

/// What the milters decided about one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Commit it (the message and envelope may have been edited; `hold` set when a
    /// milter quarantined it).
    Commit,
    /// Drop it: a milter discarded it.
    Discard(String),
    /// Return it to its sender: a milter rejected it (the reply).
    Reject(String),
    /// Leave it in `maildrop/` for the next scan (the reply).
    Defer(String),
}

impl LocalFilters {
    /// The local milters of `hooks`, or `None` when no `[[milter]]` lists `local`;
    /// `returner` says who reports their rejections to whom.
    pub fn new(hooks: &HooksConfig, returner: Returner) -> Option<LocalFilters> {
        hooks.milters_for(HookListener::Local).next()?;
        Some(LocalFilters {
            engine: Engine::new(hooks),
            returner,
        })
    }

    /// Who returns a rejected message to its sender.
    pub fn returner(&self) -> &Returner {
        &self.returner
    }

    /// Closes the milter connections kept from one message to the next (after a scan
    /// of `maildrop/`).
    pub fn close_kept(&mut self) {
        self.engine.close_kept();
    }

    /// Runs the milters on one message (`uid` is its submitter).
    pub fn run(
        &mut self,
        id: &str,
        uid: u32,
        env: &mut Envelope,
        message: &mut Vec<u8>,
    ) -> Verdict {
        let mut sess = self.engine.session(HookListener::Local);
        let mut facts = Facts::new(HookListener::Local, None, "localhost");
        facts.hostname = self.returner.hostname.clone();
        facts.helo = "localhost".into();
        facts.queue_id = id.to_string();
        facts.sender = env.sender.clone();
        facts.recipients = env.recipients.iter().map(|r| r.address.clone()).collect();
        facts.size = message.len() as u64;
        let verdict = self.stages(&mut sess, &mut facts, env, message);
        self.engine
            .finish(&mut sess, Instant::now() + Duration::from_secs(2));
        match &verdict {
            Verdict::Commit | Verdict::Defer(_) => {}
            Verdict::Discard(why) => {
                log::info!(
                    "{id}: discard: local mail from uid={uid}: {why}; from=<{}>",
                    env.sender
                )
            }
            Verdict::Reject(why) => log::info!(
                "{id}: milter-reject: local mail from uid={uid}: {why}; from=<{}>",
                env.sender
            ),
        }
        verdict
    }

    fn stages(
        &mut self,
        sess: &mut sloop_hooks::engine::SessionHooks,
        facts: &mut Facts,
        env: &mut Envelope,
        message: &mut Vec<u8>,
    ) -> Verdict {
        let mut held: Option<String> = None;
        let mut stage = |engine: &mut Engine, stage: HookStage, facts: &Facts| {
            let d = engine.run(sess, stage, facts, Instant::now() + COMMAND_BUDGET);
            judge(d, &mut held)
        };
        for st in [HookStage::Connect, HookStage::Mail] {
            if let Some(v) = stage(&mut self.engine, st, facts) {
                return v;
            }
        }
        for r in env
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .collect::<Vec<_>>()
        {
            facts.recipient = r;
            if let Some(v) = stage(&mut self.engine, HookStage::Rcpt, facts) {
                return v;
            }
        }
        facts.recipient.clear();
        if let Some(v) = stage(&mut self.engine, HookStage::Data, facts) {
            return v;
        }
        let d = self.engine.end_of_message(
            sess,
            facts,
            Message {
                bytes: message,
                envelope: env,
            },
            Instant::now() + MESSAGE_BUDGET,
        );
        if let Some(v) = judge(d, &mut held) {
            return v;
        }
        if let Some(why) = held {
            env.hold = Some(why);
        }
        Verdict::Commit
    }
}

/// A stage's decision as a verdict (`None`: go on), remembering a hold.
fn judge(d: Decision, held: &mut Option<String>) -> Option<Verdict> {
    match d {
        Decision::Accept(effects) => {
            if let Some(why) = effects.discard {
                return Some(Verdict::Discard(why));
            }
            if held.is_none() {
                *held = effects.hold;
            }
            None
        }
        Decision::Reply { reply, .. } if reply.code >= 500 => {
            Some(Verdict::Reject(reply.summary()))
        }
        Decision::Reply { reply, .. } => Some(Verdict::Defer(reply.summary())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use sloop_hooks::engine::{Effects, Source};
    use sloop_hooks::failure::HookReply;

    #[test]
    fn decisions_become_verdicts() {
        let mut held = None;
        assert_eq!(judge(Decision::accept(), &mut held), None);
        let hold = Effects {
            hold: Some("milter m: virus".into()),
            ..Effects::default()
        };
        assert_eq!(judge(Decision::Accept(hold), &mut held), None);
        assert_eq!(held.as_deref(), Some("milter m: virus"));
        let discard = Effects {
            discard: Some("milter m".into()),
            ..Effects::default()
        };
        assert_eq!(
            judge(Decision::Accept(discard), &mut held),
            Some(Verdict::Discard("milter m".into()))
        );
        let r = |code, e| Decision::Reply {
            reply: HookReply::new(code, e, "x"),
            source: Source::Milter,
        };
        assert_eq!(
            judge(r(550, (5, 7, 1)), &mut held),
            Some(Verdict::Reject("550 5.7.1 x".into()))
        );
        assert_eq!(
            judge(r(451, (4, 3, 5)), &mut held),
            Some(Verdict::Defer("451 4.3.5 x".into()))
        );
    }

    #[test]
    fn no_local_milter_no_filters() {
        let r = Returner {
            hostname: "h".into(),
            postmaster: "postmaster@h".into(),
        };
        assert!(LocalFilters::new(&HooksConfig::default(), r).is_none());
    }
}
