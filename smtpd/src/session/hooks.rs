//! The filter hooks in the session, without I/O (docs/filters.md).
//!
//! When hooks run at a stage (connect, HELO/EHLO, MAIL, RCPT, DATA/BDAT, end of
//! message), the command handler first runs its built-in checks (syntax, sequence,
//! relay permission, recipient table: a hook can narrow access, never widen it), then,
//! instead of answering, parks what it would have done in `State::Hooking` and asks
//! the socket layer to run the stage's hooks with [`Step::Hook`]. The socket layer
//! reports the stage's decision with [`Session::hooked`], which gives the built-in
//! answer (accept) or the hooks' reply, and logs rejects the way Postfix does
//! (`QID: reject: RCPT from name[addr]: 450 4.7.1 ...; from=<s> to=<r> proto=ESMTP
//! helo=<h>`, `milter-reject` for a milter's).
//!
//! What hooks ask of the message (HOLD, DISCARD, PREPEND) is collected per transaction
//! (per session at connect and HELO) and applied at the end of the message: PREPEND
//! header fields go on top, HOLD sets the envelope's hold reason (the commit puts the
//! message into `hold/`), DISCARD answers `250` and commits nothing.
//!
//! A session whose listener has no hooks never leaves its usual path: [`HookStages`] is
//! empty and nothing here runs.

use super::{Chunk, ChunkTarget, Session, State, Step};
use crate::bdat::BdatReceiver;
use crate::data::DataReceiver;
use crate::reply::Reply;
use crate::session::txn::{QueueJob, Txn};
use sloop_common::config::hooks::{HookListener, HookStage};
use sloop_common::spool::Recipient;
use sloop_hooks::engine::{Decision, Effects, Facts, Source};
use sloop_hooks::failure::HookReply;

/// The stages at which some hook runs for this session's listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookStages(u8);

impl HookStages {
    /// No hook at all.
    pub const NONE: HookStages = HookStages(0);

    /// The set of stages for which `active` is true.
    pub fn of(mut active: impl FnMut(HookStage) -> bool) -> HookStages {
        let mut bits = 0;
        for (i, s) in ALL_STAGES.iter().enumerate() {
            if active(*s) {
                bits |= 1 << i;
            }
        }
        HookStages(bits)
    }

    /// True when hooks run at `stage`.
    pub fn has(self, stage: HookStage) -> bool {
        let i = ALL_STAGES.iter().position(|s| *s == stage).unwrap_or(0);
        self.0 & (1 << i) != 0
    }

    /// True when no hook runs at any stage.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const ALL_STAGES: [HookStage; 6] = [
    HookStage::Connect,
    HookStage::Helo,
    HookStage::Mail,
    HookStage::Rcpt,
    HookStage::Data,
    HookStage::Eom,
];

/// What the socket layer runs: the stage's hooks with these facts, and at the end of
/// the message the queue job the milters may edit.
#[derive(Debug)]
pub struct HookCall {
    pub stage: HookStage,
    pub facts: Facts,
    /// The message and envelope, at the end of the message only.
    pub job: Option<Box<QueueJob>>,
}

/// What the session does once the hooks have decided.
#[derive(Debug)]
pub(super) enum Pending {
    /// Send the greeting.
    Connect,
    Helo {
        name: String,
        esmtp: bool,
    },
    Mail(Txn),
    Rcpt {
        txn: Txn,
        rcpt: Recipient,
    },
    Data(Txn),
    Bdat {
        txn: Txn,
        size: u64,
        last: bool,
    },
    /// The job went out with the call; the effects of the earlier stages wait here.
    Eom {
        verb: &'static str,
        effects: Effects,
    },
}

impl Session<'_> {
    /// Sets the stages at which hooks run for this session (from the worker's engine).
    /// With a connect hook, the greeting waits for its decision.
    pub fn with_hooks(mut self, stages: HookStages, listener: HookListener) -> Self {
        self.hooks = stages;
        self.hook_listener = listener;
        let greeting_next = matches!(self.out.front(), Some(Step::Reply(r)) if r.code == 220);
        if stages.has(HookStage::Connect) && greeting_next && matches!(self.state, State::Ready) {
            self.out.pop_front();
            self.hook(HookStage::Connect, Pending::Connect);
        }
        self
    }

    /// True when hooks run at `stage`.
    pub(super) fn hooks_at(&self, stage: HookStage) -> bool {
        self.hooks.has(stage)
    }

    /// Parks `pending` and asks for the stage's hooks.
    /// (At connect and HELO, before any transaction.)
    pub(super) fn hook(&mut self, stage: HookStage, pending: Pending) {
        let mut facts = self.hook_facts(None, None);
        if let Some((name, esmtp)) = pending_helo(&pending) {
            facts.helo = name.to_string();
            facts.esmtp = esmtp;
        }
        self.hook_with(stage, pending, facts);
    }

    /// Parks `pending` and asks for the stage's hooks with `facts` already built.
    pub(super) fn hook_with(&mut self, stage: HookStage, pending: Pending, facts: Facts) {
        self.state = State::Hooking(pending);
        self.out.push_back(Step::Hook(HookCall {
            stage,
            facts,
            job: None,
        }));
    }

    /// The hooks' decision for the call last returned by [`step`](Self::step); `job`
    /// is the call's job given back (edited) at the end of the message.
    pub fn hooked(&mut self, decision: Decision, job: Option<Box<QueueJob>>) {
        let State::Hooking(pending) = std::mem::replace(&mut self.state, State::Ready) else {
            return;
        };
        match decision {
            Decision::Accept(effects) => self.hook_accepted(pending, effects, job),
            Decision::Reply { reply, source } => self.hook_refused(pending, reply, source, job),
        }
    }

    /// The client went away while hooks ran: log it, close, answer nothing.
    pub fn lost_during_hooks(&mut self) {
        let what = match &self.state {
            State::Hooking(Pending::Eom { .. }) => "END-OF-MESSAGE",
            _ => self.last_verb,
        };
        log::info!(
            "lost connection during {what} hooks from {}",
            self.client.display()
        );
        self.out.clear();
        self.close();
    }

    fn hook_accepted(&mut self, pending: Pending, effects: Effects, job: Option<Box<QueueJob>>) {
        match pending {
            Pending::Connect => {
                self.note_effects(&effects, None, "CONNECT");
                self.session_effects.merge(effects);
                let greeting = self.policy.cfg.smtpd.greeting.clone();
                self.push(Reply::bare(220, vec![greeting]));
            }
            Pending::Helo { name, esmtp } => {
                self.note_effects(&effects, None, "HELO");
                self.session_effects.merge(effects);
                let r = self.helo_accepted(name, esmtp);
                self.counters
                    .count(if esmtp { "ehlo" } else { "helo" }, true);
                self.answer(r);
            }
            Pending::Mail(mut txn) => {
                self.note_effects(&effects, Some(&txn), "MAIL");
                txn.add_effects(effects);
                self.state = State::Mail(txn);
                self.counters.count("mail", true);
                self.answer(Reply::new(250, (2, 1, 0), "Ok"));
            }
            Pending::Rcpt { mut txn, rcpt } => {
                self.note_effects(&effects, Some(&txn), "RCPT");
                txn.add_effects(effects);
                let r = self.rcpt_accepted(&mut txn, rcpt);
                self.state = State::Rcpt(txn);
                self.counters.count("rcpt", true);
                self.answer(r);
            }
            Pending::Data(mut txn) => {
                self.note_effects(&effects, Some(&txn), "DATA");
                txn.add_effects(effects);
                let rx = DataReceiver::new(self.data_limits());
                self.state = State::Data(txn, rx);
                self.push(Reply::new(
                    354,
                    (2, 0, 0),
                    "End data with <CR><LF>.<CR><LF>",
                ));
            }
            Pending::Bdat {
                mut txn,
                size,
                last,
            } => {
                txn.add_effects(effects);
                let rx = BdatReceiver::new(self.data_limits());
                self.state = State::Bdat(Chunk {
                    size,
                    remaining: size,
                    last,
                    target: ChunkTarget::Collect { txn, rx },
                });
            }
            Pending::Eom {
                verb,
                effects: mut earlier,
            } => {
                let Some(job) = job else {
                    // The socket layer always gives the job back; without it nothing
                    // can be committed.
                    self.push(Reply::new(451, (4, 3, 0), "Error: internal error"));
                    return;
                };
                if let Some(why) = &effects.hold {
                    self.log_job("hold", &job, why);
                }
                earlier.merge(effects);
                self.finish_message(*job, earlier, verb);
            }
        }
    }

    fn hook_refused(
        &mut self,
        pending: Pending,
        hr: HookReply,
        source: Source,
        job: Option<Box<QueueJob>>,
    ) {
        let reply = Reply::new(hr.code, hr.enhanced, hr.text.clone());
        let word = if source == Source::Milter {
            "milter-reject"
        } else {
            "reject"
        };
        let closes = hr.closes();
        match pending {
            Pending::Connect => {
                self.log_hook(word, None, "CONNECT", &reply.summary(), "");
                self.push(reply);
                if closes {
                    self.close();
                } else {
                    self.state = State::Refused;
                }
                return;
            }
            Pending::Helo { esmtp, .. } => {
                let verb = if esmtp { "EHLO" } else { "HELO" };
                self.log_hook(word, None, verb, &reply.summary(), "");
                self.counters
                    .count(if esmtp { "ehlo" } else { "helo" }, false);
            }
            Pending::Mail(txn) => {
                self.log_hook(word, Some(&txn), "MAIL", &reply.summary(), "");
                self.counters.count("mail", false);
            }
            Pending::Rcpt { txn, rcpt } => {
                self.log_hook(word, Some(&txn), "RCPT", &reply.summary(), &rcpt.address);
                self.counters.count("rcpt", false);
                self.state = if txn.recipients.is_empty() {
                    State::Mail(txn)
                } else {
                    State::Rcpt(txn)
                };
            }
            Pending::Data(txn) => {
                self.log_hook(word, Some(&txn), "DATA", &reply.summary(), "");
                self.counters.count("data", false);
                self.state = State::Rcpt(txn);
            }
            Pending::Bdat { txn, size, last } => {
                self.log_hook(word, Some(&txn), "BDAT", &reply.summary(), "");
                if closes {
                    self.counters.count("bdat", false);
                    self.push(reply);
                    self.close();
                    return;
                }
                // The chunk's octets are still read (RFC 3030 §2), then refused.
                self.state = State::Bdat(Chunk {
                    size,
                    remaining: size,
                    last,
                    target: ChunkTarget::Refused(reply),
                });
                return;
            }
            Pending::Eom { verb, .. } => {
                if let Some(job) = &job {
                    self.log_job(word, job, &reply.summary());
                }
                self.counters.count(verb, false);
            }
        }
        if closes {
            self.push(reply);
            self.close();
        } else {
            self.answer(reply);
        }
    }

    /// The message is complete and every hook accepted it: apply what they asked
    /// (PREPEND, HOLD, DISCARD) and queue it.
    pub(super) fn finish_message(
        &mut self,
        mut job: QueueJob,
        effects: Effects,
        verb: &'static str,
    ) {
        let discard = match &effects.discard {
            Some(why) => Some(why.as_str()),
            // Milters may delete every recipient: nobody is left to deliver to.
            None if job.envelope.recipients.is_empty() => {
                Some("every recipient removed by the milters")
            }
            None => None,
        };
        if let Some(why) = discard {
            self.log_job("discard", &job, why);
            self.counters.count(verb, true);
            self.junk = 0;
            self.state = State::Ready;
            // As Postfix: the client is told the message was queued.
            self.answer(Reply::new(
                250,
                (2, 0, 0),
                format!("Ok: queued as {}", job.id),
            ));
            return;
        }
        if !effects.prepend.is_empty() {
            let mut top = Vec::new();
            for h in &effects.prepend {
                top.extend_from_slice(h.as_bytes());
                top.extend_from_slice(b"\r\n");
            }
            job.trace_len += top.len();
            top.extend_from_slice(&job.message);
            job.message = top;
        }
        if let Some(why) = effects.hold {
            job.envelope.hold = Some(why);
        }
        self.counters.count(verb, true);
        log::info!(
            "{}: from=<{}>, size={}, nrcpt={}",
            job.id,
            job.envelope.sender,
            job.message.len(),
            job.envelope.recipients.len()
        );
        self.state = State::Queueing;
        self.out.push_back(Step::Queue(job));
    }

    /// Logs the HOLD and DISCARD a stage asked for, as Postfix does when it decides.
    fn note_effects(&self, effects: &Effects, txn: Option<&Txn>, verb: &str) {
        if let Some(why) = &effects.hold {
            self.log_hook("hold", txn, verb, why, "");
        }
        if let Some(why) = &effects.discard {
            self.log_hook("discard", txn, verb, why, "");
        }
    }

    /// `QID: word: VERB from name[addr]: text; from=<s> to=<r> proto=ESMTP helo=<h>`
    /// (`NOQUEUE` before MAIL; no `from=`/`to=` before MAIL either).
    fn log_hook(&self, word: &str, txn: Option<&Txn>, verb: &str, text: &str, to: &str) {
        let mut tail = match txn {
            Some(t) => format!("from=<{}> to=<{to}> proto={}", t.sender, self.proto()),
            None => format!("proto={}", self.proto()),
        };
        if let Some(h) = &self.helo {
            tail.push_str(&format!(" helo=<{}>", h.name));
        }
        log::info!(
            "{}: {word}: {verb} from {}: {text}; {tail}",
            txn.map_or("NOQUEUE", |t| t.id.as_str()),
            self.client.display(),
        );
    }

    /// `QID: word: END-OF-MESSAGE from name[addr]: text; from=<s> to=<r> proto=.. helo=<h>`.
    fn log_job(&self, word: &str, job: &QueueJob, text: &str) {
        let to = job
            .envelope
            .recipients
            .first()
            .map_or("", |r| r.address.as_str());
        let mut tail = format!(
            "from=<{}> to=<{to}> proto={}",
            job.envelope.sender,
            self.proto()
        );
        if let Some(h) = &self.helo {
            tail.push_str(&format!(" helo=<{}>", h.name));
        }
        log::info!(
            "{}: {word}: END-OF-MESSAGE from {}: {text}; {tail}",
            job.id,
            self.client.display()
        );
    }

    fn proto(&self) -> &'static str {
        match &self.helo {
            Some(h) if h.esmtp => "ESMTP",
            _ => "SMTP",
        }
    }

    /// What the hooks are told at this point of the session.
    pub(super) fn hook_facts(&self, txn: Option<&Txn>, rcpt: Option<&Recipient>) -> Facts {
        let mut f = Facts::new(
            self.hook_listener,
            Some(self.client.addr),
            &self.client.name,
        );
        f.hostname = self.policy.cfg.server.hostname.clone();
        f.client_port = self.client.port;
        f.server = self.client.server;
        if let Some(h) = &self.helo {
            f.helo = h.name.clone();
            f.esmtp = h.esmtp;
        }
        if let Some(tls) = &self.tls {
            f.tls_protocol = tls.version.to_string();
            f.tls_cipher = tls.cipher.clone();
            f.tls_bits = u16::try_from(tls.bits).unwrap_or(u16::MAX);
        }
        if let Some(id) = &self.auth {
            f.sasl_method = id.method.to_string();
            f.sasl_username = id.username.clone();
        }
        if let Some(t) = txn {
            f.queue_id = t.id.clone();
            f.sender = t.sender.clone();
            f.mail_args = t.params.args();
            f.recipients = t.recipients.iter().map(|r| r.address.clone()).collect();
            f.size = t.params.size.unwrap_or(0);
        }
        if let Some(r) = rcpt {
            f.recipient = r.address.clone();
            if let Some(n) = &r.notify {
                f.rcpt_args.push(format!("NOTIFY={n}"));
            }
            if let Some(o) = &r.orcpt {
                f.rcpt_args.push(format!("ORCPT={o}"));
            }
        }
        f
    }
}

/// The HELO name a pending HELO is about (the session's is not set yet).
fn pending_helo(p: &Pending) -> Option<(&str, bool)> {
    match p {
        Pending::Helo { name, esmtp } => Some((name.as_str(), *esmtp)),
        _ => None,
    }
}
