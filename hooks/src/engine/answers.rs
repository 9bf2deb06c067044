//! A policy service's action and a milter's reply in the engine's words ([`Said`]),
//! with the texts, codes and log lines Postfix gives them. Pure but for log lines.

use super::decide::{discard_reason, hold_reason, prepend_header, reject_prefix, Said};
use crate::failure::{legalize, sanitize, HookReply};
use crate::milter::MilterReply;
use crate::policy::Action;
use sloop_common::config::hooks::{HookStage, OnError};

/// What policy service `name` answered at `stage` about `subject`.
pub fn policy_said(
    stage: HookStage,
    name: &str,
    on_error: OnError,
    subject: &str,
    action: Action,
) -> Said {
    let prefix = reject_prefix(stage, subject);
    let reply = |code: u16, enhanced: Option<(u8, u16, u16)>, text: &str| {
        let text = format!("{prefix}{text}");
        legalize(stage, name, code, enhanced, &text)
    };
    let defer_code = if stage == HookStage::Connect {
        421
    } else {
        450
    };
    let result = match action {
        Action::Ok => return Said::Ok,
        Action::Dunno => return Said::Dunno,
        Action::Reject(t) => reply(554, None, t.as_deref().unwrap_or("Access denied")),
        Action::Defer(t) => reply(
            defer_code,
            None,
            t.as_deref().unwrap_or("Service unavailable"),
        ),
        Action::DeferIfPermit(t) => {
            return match reply(
                defer_code,
                None,
                t.as_deref().unwrap_or("Service unavailable"),
            ) {
                Ok(r) => Said::DeferIfPermit(r),
                Err(_) => Said::Failed(on_error),
            }
        }
        Action::DeferIfReject(_) => return Said::DeferIfReject,
        Action::Code {
            code,
            enhanced,
            text,
        } => {
            let text = if text.is_empty() {
                if code >= 500 {
                    "Access denied"
                } else {
                    "Service unavailable"
                }
            } else {
                text.as_str()
            };
            reply(code, enhanced, text)
        }
        Action::Hold(t) => return Said::Hold(hold_reason(stage, subject, t.as_deref())),
        Action::Discard(t) => return Said::Discard(discard_reason(stage, subject, t.as_deref())),
        Action::Prepend(h) => {
            return match prepend_header(name, &h) {
                Some(h) => Said::Prepend(h),
                None => Said::Dunno,
            }
        }
        Action::Info(t) => {
            log::info!("policy {name}: info: {}", sanitize(name, &t));
            return Said::Dunno;
        }
        Action::Warn(t) => {
            log::warn!("policy {name}: {}", sanitize(name, &t));
            return Said::Dunno;
        }
    };
    match result {
        Ok(r) => Said::Reply(r),
        Err(e) => {
            log::warn!("policy {name}: {e}; on_error={}", on_error.name());
            Said::Failed(on_error)
        }
    }
}

/// What milter `name` replied at `stage`.
pub fn milter_said(stage: HookStage, name: &str, on_error: OnError, reply: MilterReply) -> Said {
    let fixed = |code: u16, e: (u8, u16, u16), text: &str| {
        legalize(stage, name, code, Some(e), text)
            .unwrap_or_else(|_| HookReply::new(451, (4, 3, 5), "Server configuration problem"))
    };
    match reply {
        MilterReply::Continue => Said::Dunno,
        MilterReply::Accept => Said::MilterAccept,
        MilterReply::Reject if stage == HookStage::Eom => {
            Said::Reply(fixed(550, (5, 7, 1), "Message content rejected"))
        }
        MilterReply::Reject => Said::Reply(fixed(550, (5, 7, 1), "Command rejected")),
        MilterReply::Tempfail => Said::Reply(fixed(
            451,
            (4, 7, 1),
            "Service unavailable - try again later",
        )),
        MilterReply::Discard if stage.is_session_phase() => {
            log::warn!(
                "milter {name}: discard at {} is not allowed before MAIL; on_error={}",
                stage.name(),
                on_error.name()
            );
            Said::Failed(on_error)
        }
        MilterReply::Discard => Said::Discard(format!("milter {name}")),
        MilterReply::Code {
            code,
            enhanced,
            text,
        } => match legalize(stage, name, code, enhanced, &text) {
            Ok(r) => Said::Reply(r),
            Err(e) => {
                log::warn!(
                    "milter {name}: {e} at {}; on_error={}",
                    stage.name(),
                    on_error.name()
                );
                Said::Failed(on_error)
            }
        },
        MilterReply::Quarantine(why) => {
            let why = sanitize(name, &why);
            Said::Hold(format!("milter {name}: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use HookStage::*;

    fn reply_of(s: Said) -> HookReply {
        match s {
            Said::Reply(r) | Said::DeferIfPermit(r) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn policy_rejects_and_defers_read_as_postfix() {
        let r = reply_of(policy_said(
            Rcpt,
            "pg",
            OnError::Tempfail,
            "c@d.example",
            Action::DeferIfPermit(Some("Greylisted, see http://x".into())),
        ));
        assert_eq!(
            r.summary(),
            "450 4.7.1 <c@d.example>: Recipient address rejected: Greylisted, see http://x"
        );
        let r = reply_of(policy_said(
            Mail,
            "p",
            OnError::Tempfail,
            "a@b",
            Action::Reject(None),
        ));
        assert_eq!(
            r.summary(),
            "554 5.7.1 <a@b>: Sender address rejected: Access denied"
        );
        let r = reply_of(policy_said(
            Connect,
            "p",
            OnError::Tempfail,
            "unknown[192.0.2.1]",
            Action::Code {
                code: 450,
                enhanced: Some((4, 7, 1)),
                text: "later".into(),
            },
        ));
        assert_eq!(r.code, 421);
        assert!(r.closes());
        let r = reply_of(policy_said(
            Rcpt,
            "p",
            OnError::Tempfail,
            "x@y",
            Action::Code {
                code: 550,
                enhanced: Some((5, 1, 1)),
                text: String::new(),
            },
        ));
        assert_eq!(
            r.summary(),
            "550 5.1.1 <x@y>: Recipient address rejected: Access denied"
        );
    }

    #[test]
    fn policy_actions_without_reply() {
        let s = |a| policy_said(Rcpt, "p", OnError::Reject, "x@y", a);
        assert_eq!(s(Action::Ok), Said::Ok);
        assert_eq!(s(Action::Dunno), Said::Dunno);
        assert_eq!(s(Action::DeferIfReject(None)), Said::DeferIfReject);
        assert_eq!(s(Action::Info("hi".into())), Said::Dunno);
        assert_eq!(s(Action::Warn("hi".into())), Said::Dunno);
        assert_eq!(
            s(Action::Prepend("X-Spam: no".into())),
            Said::Prepend("X-Spam: no".into())
        );
        assert_eq!(
            s(Action::Hold(None)),
            Said::Hold("<x@y>: Recipient address triggers HOLD action".into())
        );
        assert!(matches!(s(Action::Discard(None)), Said::Discard(_)));
    }

    #[test]
    fn milter_replies() {
        let m = |st, r| milter_said(st, "m", OnError::Tempfail, r);
        assert_eq!(m(Rcpt, MilterReply::Continue), Said::Dunno);
        assert_eq!(
            reply_of(m(Eom, MilterReply::Reject)).summary(),
            "550 5.7.1 Message content rejected"
        );
        assert_eq!(reply_of(m(Connect, MilterReply::Reject)).code, 554);
        assert_eq!(reply_of(m(Connect, MilterReply::Tempfail)).code, 421);
        assert_eq!(
            m(Helo, MilterReply::Discard),
            Said::Failed(OnError::Tempfail)
        );
        assert!(matches!(m(Rcpt, MilterReply::Discard), Said::Discard(_)));
        let two = MilterReply::Code {
            code: 250,
            enhanced: None,
            text: "ok".into(),
        };
        assert_eq!(m(Eom, two), Said::Failed(OnError::Tempfail));
        assert_eq!(
            m(Eom, MilterReply::Quarantine("virus".into())),
            Said::Hold("milter m: virus".into())
        );
        let own = MilterReply::Code {
            code: 554,
            enhanced: Some((5, 7, 1)),
            text: "Gtube pattern\r\nmore".into(),
        };
        assert_eq!(
            reply_of(m(Eom, own)).summary(),
            "554 5.7.1 Gtube pattern  more"
        );
    }
}
