//! The decision of one stage, as a pure fold over what its hooks said.
//!
//! The driver (`mod.rs`) asks the hooks of a stage in order (access rules, policy
//! services, milters), turns each answer into a [`Said`] (the conversions below), and
//! feeds it to a [`StageFold`], which says whether to ask the next hook and, at the
//! end, what the stage decided ([`Decision`]). Postfix's semantics:
//! - `OK` (or an access `accept`) skips the later policy services of the stage (not
//!   the milters); `DUNNO` goes on;
//! - a reply (`REJECT`, `DEFER`, `4NN`/`5NN`, a milter's reject or tempfail) ends the
//!   stage; after `DEFER_IF_REJECT` a 5xx reply becomes `450 4.7.1`;
//! - `DEFER_IF_PERMIT` is remembered: if the stage ends without a reply, it answers
//!   `450 4.7.1` with that text;
//! - `HOLD`, `DISCARD`, `PREPEND` are collected for the transaction (or the session, at
//!   connect and HELO) and only take effect if the stage accepts;
//! - a failed hook applies its `on_error` ([`crate::failure::on_error_reply`]).
//!
//! No I/O but log lines (`INFO`, `WARN`, the notices of `failure.rs`).

use crate::failure::{legalize, on_error_reply, HookReply};
use sloop_common::config::hooks::{AccessVerdict, HookStage, OnError};

/// One hook's answer in the engine's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// No decision: ask the next hook.
    Dunno,
    /// Accept this check: the later policy services of the stage are skipped.
    Ok,
    /// A milter accepted the message (or, at connect and HELO, the session): it is not
    /// asked again until then.
    MilterAccept,
    /// A reply, legal for the stage.
    Reply(HookReply),
    /// `DEFER_IF_PERMIT`: this reply if the stage would otherwise accept.
    DeferIfPermit(HookReply),
    /// `DEFER_IF_REJECT`: a later 5xx of this stage becomes `450 4.7.1`.
    DeferIfReject,
    /// Put the message on hold, with the reason.
    Hold(String),
    /// Accept and drop the message, with the reason.
    Discard(String),
    /// Add this header field (`Name: value`) on top of the message.
    Prepend(String),
    /// The hook failed (already logged): its `on_error` applies.
    Failed(OnError),
}

/// Who gave a reply, for the log line's word (`reject` or `milter-reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Access,
    Policy,
    Milter,
}

/// What the hooks of a stage asked of the message, if the stage accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Hold the message, with the reason.
    pub hold: Option<String>,
    /// Drop the message after `250`, with the reason.
    pub discard: Option<String>,
    /// Header fields (`Name: value`) to add on top, in order.
    pub prepend: Vec<String>,
}

impl Effects {
    /// True when nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.hold.is_none() && self.discard.is_none() && self.prepend.is_empty()
    }

    /// Adds `other`'s effects (the first hold and discard reasons are kept).
    pub fn merge(&mut self, other: Effects) {
        if self.hold.is_none() {
            self.hold = other.hold;
        }
        if self.discard.is_none() {
            self.discard = other.discard;
        }
        self.prepend.extend(other.prepend);
    }
}

/// What a stage decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on (the built-in reply stands), with these effects.
    Accept(Effects),
    /// Answer this instead (and close the session when it is 421/521).
    Reply { reply: HookReply, source: Source },
}

impl Decision {
    /// An accept with no effects (the stage had nothing to say).
    pub fn accept() -> Decision {
        Decision::Accept(Effects::default())
    }
}

/// Whether to ask the next hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Go,
    Stop,
}

/// The fold over a stage's answers.
#[derive(Debug)]
pub struct StageFold {
    stage: HookStage,
    effects: Effects,
    defer_if_permit: Option<HookReply>,
    defer_if_reject: bool,
    skip_policies: bool,
    reply: Option<(HookReply, Source)>,
}

impl StageFold {
    pub fn new(stage: HookStage) -> StageFold {
        StageFold {
            stage,
            effects: Effects::default(),
            defer_if_permit: None,
            defer_if_reject: false,
            skip_policies: false,
            reply: None,
        }
    }

    /// True once `OK` (or an access `accept`) was said: no more policy services.
    pub fn skips_policies(&self) -> bool {
        self.skip_policies
    }

    /// Takes one answer.
    pub fn take(&mut self, source: Source, said: Said) -> Flow {
        if self.reply.is_some() {
            return Flow::Stop;
        }
        match said {
            Said::Dunno | Said::MilterAccept => Flow::Go,
            Said::Ok => {
                self.skip_policies = true;
                Flow::Go
            }
            Said::Reply(r) => self.stop(r, source),
            Said::DeferIfPermit(r) => {
                self.defer_if_permit.get_or_insert(r);
                Flow::Go
            }
            Said::DeferIfReject => {
                self.defer_if_reject = true;
                Flow::Go
            }
            Said::Hold(why) => {
                self.effects.hold.get_or_insert(why);
                Flow::Go
            }
            Said::Discard(why) => {
                self.effects.discard.get_or_insert(why);
                Flow::Go
            }
            Said::Prepend(h) => {
                self.effects.prepend.push(h);
                Flow::Go
            }
            Said::Failed(on_error) => match on_error_reply(self.stage, on_error) {
                Some(r) => {
                    self.reply = Some((r, source));
                    Flow::Stop
                }
                None => Flow::Go,
            },
        }
    }

    fn stop(&mut self, mut r: HookReply, source: Source) -> Flow {
        if self.defer_if_reject && r.code >= 500 {
            r.code = if self.stage == HookStage::Connect {
                421
            } else {
                450
            };
            r.enhanced = (4, 7, 1);
        }
        self.reply = Some((r, source));
        Flow::Stop
    }

    /// The stage's decision.
    pub fn finish(self) -> Decision {
        if let Some((reply, source)) = self.reply {
            return Decision::Reply { reply, source };
        }
        if let Some(reply) = self.defer_if_permit {
            return Decision::Reply {
                reply,
                source: Source::Policy,
            };
        }
        Decision::Accept(self.effects)
    }
}

/// What the reply texts of access rules and policy services start with at `stage`, as
/// Postfix writes them (`<rcpt>: Recipient address rejected: `).
pub fn reject_prefix(stage: HookStage, subject: &str) -> String {
    match stage {
        HookStage::Connect => format!("<{subject}>: Client host rejected: "),
        HookStage::Helo => format!("<{subject}>: Helo command rejected: "),
        HookStage::Mail => format!("<{subject}>: Sender address rejected: "),
        HookStage::Rcpt => format!("<{subject}>: Recipient address rejected: "),
        HookStage::Data => "<DATA>: Data command rejected: ".to_string(),
        HookStage::Eom => "<END-OF-MESSAGE>: End-of-data rejected: ".to_string(),
    }
}

/// The reject code of access rules and policy services (Postfix's
/// `access_map_reject_code`), at every stage.
const REJECT_CODE: u16 = 554;

/// The defer code of a stage (`450`, at connect `421`).
fn defer_code(stage: HookStage) -> u16 {
    if stage == HookStage::Connect {
        421
    } else {
        450
    }
}

/// An access rule's verdict.
pub fn access_said(stage: HookStage, subject: &str, verdict: &AccessVerdict) -> Said {
    let prefix = reject_prefix(stage, subject);
    let text =
        |t: &Option<String>, default: &str| format!("{prefix}{}", t.as_deref().unwrap_or(default));
    match verdict {
        AccessVerdict::Accept => Said::Ok,
        AccessVerdict::Reject(t) => Said::Reply(legal_or_tempfail(
            stage,
            "access",
            REJECT_CODE,
            &text(t, "Access denied"),
        )),
        AccessVerdict::Tempfail(t) => Said::Reply(legal_or_tempfail(
            stage,
            "access",
            defer_code(stage),
            &text(t, "Service unavailable"),
        )),
        AccessVerdict::Hold(t) => Said::Hold(hold_reason(stage, subject, t.as_deref())),
        AccessVerdict::Discard(t) => Said::Discard(discard_reason(stage, subject, t.as_deref())),
    }
}

/// `legalize` for codes this module chose itself (always legal; the fallback is
/// never taken).
fn legal_or_tempfail(stage: HookStage, hook: &str, code: u16, text: &str) -> HookReply {
    legalize(stage, hook, code, None, text)
        .unwrap_or_else(|_| HookReply::new(451, (4, 3, 5), "Server configuration problem"))
}

/// The reason logged and stored for a HOLD (`<rcpt>: Recipient address triggers HOLD
/// action`, as Postfix logs it, or the hook's text).
pub fn hold_reason(stage: HookStage, subject: &str, text: Option<&str>) -> String {
    triggered(stage, subject, text, "HOLD")
}

/// The reason logged for a DISCARD.
pub fn discard_reason(stage: HookStage, subject: &str, text: Option<&str>) -> String {
    triggered(stage, subject, text, "DISCARD")
}

fn triggered(stage: HookStage, subject: &str, text: Option<&str>, action: &str) -> String {
    let what = match stage {
        HookStage::Connect => "Client host",
        HookStage::Helo => "Helo command",
        HookStage::Mail => "Sender address",
        HookStage::Rcpt => "Recipient address",
        HookStage::Data => "Data command",
        HookStage::Eom => "End-of-data",
    };
    let reason = crate::failure::sanitize("hold", text.unwrap_or(""));
    if reason.is_empty() {
        format!("<{subject}>: {what} triggers {action} action")
    } else {
        format!("<{subject}>: {what} triggers {action} action: {reason}")
    }
}

/// A `PREPEND` header field checked: `Name: value`, a field name of printable ASCII
/// without `:` or space, no control characters; `None` (logged) when it is not one.
pub fn prepend_header(hook: &str, header: &str) -> Option<String> {
    let (name, _) = header.split_once(':')?;
    let ok_name = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    let ok_value = !header.chars().any(|c| c.is_control() && c != '\t');
    if ok_name && ok_value && header.len() <= 998 {
        Some(header.to_string())
    } else {
        log::warn!("policy {hook}: PREPEND of a malformed header field ignored");
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn r(code: u16, e: (u8, u16, u16), t: &str) -> HookReply {
        HookReply::new(code, e, t)
    }

    fn fold(stage: HookStage, saids: Vec<Said>) -> Decision {
        let mut f = StageFold::new(stage);
        for s in saids {
            if f.take(Source::Policy, s) == Flow::Stop {
                break;
            }
        }
        f.finish()
    }

    #[test]
    fn nothing_said_accepts_with_no_effects() {
        assert_eq!(fold(HookStage::Rcpt, vec![]), Decision::accept());
        assert_eq!(
            fold(HookStage::Rcpt, vec![Said::Dunno, Said::Ok]),
            Decision::accept()
        );
    }

    #[test]
    fn ok_skips_later_policies() {
        let mut f = StageFold::new(HookStage::Rcpt);
        assert!(!f.skips_policies());
        f.take(Source::Access, Said::Ok);
        assert!(f.skips_policies());
    }

    #[test]
    fn defer_if_permit_answers_450_when_the_stage_would_accept() {
        let grey = r(
            450,
            (4, 7, 1),
            "<a@b>: Recipient address rejected: Greylisted",
        );
        let d = fold(
            HookStage::Rcpt,
            vec![Said::DeferIfPermit(grey.clone()), Said::Dunno],
        );
        assert_eq!(
            d,
            Decision::Reply {
                reply: grey.clone(),
                source: Source::Policy
            }
        );
        // A reject later wins over the remembered defer.
        let rej = r(554, (5, 7, 1), "no");
        let d = fold(
            HookStage::Rcpt,
            vec![Said::DeferIfPermit(grey), Said::Reply(rej.clone())],
        );
        assert_eq!(
            d,
            Decision::Reply {
                reply: rej,
                source: Source::Policy
            }
        );
    }

    #[test]
    fn defer_if_reject_turns_a_later_5xx_into_450() {
        let d = fold(
            HookStage::Mail,
            vec![
                Said::DeferIfReject,
                Said::Reply(r(554, (5, 7, 1), "go away")),
            ],
        );
        let Decision::Reply { reply, .. } = d else {
            panic!()
        };
        assert_eq!((reply.code, reply.enhanced), (450, (4, 7, 1)));
        assert_eq!(reply.text, "go away");
        // A 4xx stays as it is; with nothing rejecting, it accepts.
        assert_eq!(
            fold(HookStage::Mail, vec![Said::DeferIfReject]),
            Decision::accept()
        );
    }

    #[test]
    fn effects_are_collected_and_dropped_by_a_reply() {
        let d = fold(
            HookStage::Rcpt,
            vec![
                Said::Prepend("X-A: 1".into()),
                Said::Hold("why".into()),
                Said::Hold("later".into()),
                Said::Discard("d".into()),
                Said::Prepend("X-B: 2".into()),
            ],
        );
        assert_eq!(
            d,
            Decision::Accept(Effects {
                hold: Some("why".into()),
                discard: Some("d".into()),
                prepend: vec!["X-A: 1".into(), "X-B: 2".into()],
            })
        );
        let d = fold(
            HookStage::Rcpt,
            vec![
                Said::Hold("why".into()),
                Said::Reply(r(450, (4, 7, 1), "x")),
            ],
        );
        assert!(matches!(d, Decision::Reply { .. }));
    }

    #[test]
    fn a_failure_applies_on_error() {
        let d = fold(HookStage::Rcpt, vec![Said::Failed(OnError::Accept)]);
        assert_eq!(d, Decision::accept());
        let d = fold(
            HookStage::Rcpt,
            vec![Said::Failed(OnError::Tempfail), Said::Ok],
        );
        let Decision::Reply { reply, .. } = d else {
            panic!()
        };
        assert_eq!(reply.summary(), "451 4.3.5 Server configuration problem");
        let d = fold(HookStage::Connect, vec![Said::Failed(OnError::Tempfail)]);
        let Decision::Reply { reply, .. } = d else {
            panic!()
        };
        assert_eq!(reply.code, 421);
        // DEFER_IF_REJECT softens what hooks say, not the failure policy.
        let d = fold(
            HookStage::Rcpt,
            vec![Said::DeferIfReject, Said::Failed(OnError::Reject)],
        );
        let Decision::Reply { reply, .. } = d else {
            panic!()
        };
        assert_eq!(reply.code, 550);
    }

    #[test]
    fn access_verdicts_read_as_postfix_replies() {
        let s = access_said(
            HookStage::Rcpt,
            "a@b.example",
            &AccessVerdict::Reject(Some("Go away".into())),
        );
        assert_eq!(
            s,
            Said::Reply(r(
                554,
                (5, 7, 1),
                "<a@b.example>: Recipient address rejected: Go away"
            ))
        );
        let s = access_said(
            HookStage::Connect,
            "unknown[192.0.2.1]",
            &AccessVerdict::Tempfail(None),
        );
        let Said::Reply(reply) = s else { panic!() };
        assert_eq!((reply.code, reply.enhanced), (421, (4, 7, 1)));
        assert_eq!(
            access_said(
                HookStage::Mail,
                "x@y",
                &AccessVerdict::Hold(Some("Review".into()))
            ),
            Said::Hold("<x@y>: Sender address triggers HOLD action: Review".into())
        );
        assert_eq!(
            access_said(HookStage::Rcpt, "x@y", &AccessVerdict::Accept),
            Said::Ok
        );
    }

    #[test]
    fn prepend_needs_a_header_field() {
        assert_eq!(
            prepend_header("p", "Received-SPF: pass (x)").as_deref(),
            Some("Received-SPF: pass (x)")
        );
        assert_eq!(prepend_header("p", "no colon"), None);
        assert_eq!(prepend_header("p", ": empty name"), None);
        assert_eq!(prepend_header("p", "Bad Name: v"), None);
        assert_eq!(prepend_header("p", "X: a\rb"), None);
    }
}
