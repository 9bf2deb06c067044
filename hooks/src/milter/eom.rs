//! The replies to the end of the message, without I/O: the modifications, in the
//! order received, until the filter's decision.
//!
//! Only negotiated modifications are taken (any other is a protocol error); header
//! values get back the space after the colon a filter without `SMFIP_HDR_LEADSPC`
//! leaves out; the `SMFIR_REPLBODY` chunks make one replacement; at most
//! [`MAX_EDIT_OCTETS`] of modifications are kept. A quarantine (asked at this or an
//! earlier event) makes an accept or continue a [`MilterReply::Quarantine`]; a reject,
//! tempfail or discard drops the edits.

use super::codec::Reply;
use super::negotiate::{
    Negotiated, SMFIF_ADDHDRS, SMFIF_ADDRCPT, SMFIF_ADDRCPT_PAR, SMFIF_CHGBODY, SMFIF_CHGFROM,
    SMFIF_CHGHDRS, SMFIF_DELRCPT, SMFIF_QUARANTINE,
};
use super::reply_code::parse_reply_code;
use super::{Edit, MilterError, MilterReply};

/// The most octets of modifications accepted for one message (header values, body
/// replacement, addresses), so a runaway filter cannot exhaust memory.
pub const MAX_EDIT_OCTETS: usize = 64 << 20;

/// What to do after one reply to the end of the message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EomStep {
    /// Read the next reply.
    More,
    /// A progress report: restart the event's timer and read the next reply.
    Progress,
    /// The filter decided. `continued`: the decision was `SMFIR_CONTINUE` (libmilter
    /// then stays at the end of the message, where QUIT_NC is taken).
    Done {
        reply: MilterReply,
        edits: Vec<Edit>,
        continued: bool,
    },
}

/// The modifications so far.
#[derive(Debug)]
pub(crate) struct EomFold {
    actions: u32,
    /// What goes back after the colon of an added or changed header field.
    space: &'static str,
    edits: Vec<Edit>,
    octets: usize,
    quarantine: Option<String>,
}

impl EomFold {
    /// `quarantine`: a quarantine the filter asked for at an earlier event.
    pub(crate) fn new(negotiated: &Negotiated, quarantine: Option<String>) -> EomFold {
        EomFold {
            actions: negotiated.actions,
            space: if negotiated.leading_space() { "" } else { " " },
            edits: Vec::new(),
            octets: 0,
            quarantine,
        }
    }

    /// Takes one reply.
    pub(crate) fn take(&mut self, reply: Reply) -> Result<EomStep, MilterError> {
        let name = reply.name();
        let space = self.space;
        let edit = match reply {
            Reply::AddHeader { name: n, value } => {
                self.check(SMFIF_ADDHDRS, name)?;
                Edit::AddHeader {
                    name: n,
                    value: format!("{space}{value}"),
                }
            }
            Reply::InsHeader {
                index,
                name: n,
                value,
            } => {
                self.check(SMFIF_ADDHDRS, name)?;
                Edit::InsertHeader {
                    index,
                    name: n,
                    value: format!("{space}{value}"),
                }
            }
            Reply::ChgHeader {
                index,
                name: n,
                value,
            } => {
                self.check(SMFIF_CHGHDRS, name)?;
                if n.is_empty() {
                    return Err(MilterError::Protocol("null change header name".into()));
                }
                let value = if value.is_empty() {
                    value
                } else {
                    format!("{space}{value}")
                };
                Edit::ChangeHeader {
                    index,
                    name: n,
                    value,
                }
            }
            Reply::ReplBody(chunk) => {
                self.check(SMFIF_CHGBODY, name)?;
                self.count(chunk.len())?;
                // All the chunks make one replacement, where the first one was.
                if let Some(Edit::ReplaceBody(body)) = self
                    .edits
                    .iter_mut()
                    .find(|e| matches!(e, Edit::ReplaceBody(_)))
                {
                    body.extend_from_slice(&chunk);
                    return Ok(EomStep::More);
                }
                self.edits.push(Edit::ReplaceBody(chunk));
                return Ok(EomStep::More);
            }
            Reply::AddRcpt(rcpt) => {
                self.check(SMFIF_ADDRCPT, name)?;
                Edit::AddRcpt { rcpt, args: None }
            }
            Reply::AddRcptPar { rcpt, args } => {
                self.check(SMFIF_ADDRCPT_PAR, name)?;
                Edit::AddRcpt { rcpt, args }
            }
            Reply::DelRcpt(rcpt) => {
                self.check(SMFIF_DELRCPT, name)?;
                Edit::DelRcpt(rcpt)
            }
            Reply::ChgFrom { sender, args } => {
                self.check(SMFIF_CHGFROM, name)?;
                Edit::ChangeFrom { sender, args }
            }
            Reply::Quarantine(reason) => {
                self.check(SMFIF_QUARANTINE, name)?;
                self.quarantine = Some(reason.clone());
                Edit::Quarantine(reason)
            }
            Reply::Progress => return Ok(EomStep::Progress),
            Reply::Continue | Reply::Accept => {
                let continued = name == "SMFIR_CONTINUE";
                let mut edits = std::mem::take(&mut self.edits);
                let reply = match self.quarantine.take() {
                    Some(reason) => {
                        if !edits.iter().any(|e| matches!(e, Edit::Quarantine(_))) {
                            edits.push(Edit::Quarantine(reason.clone()));
                        }
                        MilterReply::Quarantine(reason)
                    }
                    None if continued => MilterReply::Continue,
                    None => MilterReply::Accept,
                };
                return Ok(EomStep::Done {
                    reply,
                    edits,
                    continued,
                });
            }
            Reply::Reject => return Ok(done(MilterReply::Reject)),
            Reply::Tempfail => return Ok(done(MilterReply::Tempfail)),
            Reply::Discard => return Ok(done(MilterReply::Discard)),
            Reply::Shutdown => return Ok(done(shutdown_reply())),
            Reply::ReplyCode(text) => return Ok(done(parse_reply_code(&text)?)),
            other => {
                return Err(MilterError::Protocol(format!(
                    "unexpected {} after EOM",
                    other.name()
                )))
            }
        };
        self.count(edit_octets(&edit))?;
        self.edits.push(edit);
        Ok(EomStep::More)
    }

    fn check(&self, action: u32, reply: &str) -> Result<(), MilterError> {
        check_action(self.actions, action, reply)
    }

    fn count(&mut self, octets: usize) -> Result<(), MilterError> {
        self.octets += octets;
        if self.octets > MAX_EDIT_OCTETS {
            return Err(MilterError::Protocol(format!(
                "modifications exceed {MAX_EDIT_OCTETS} octets"
            )));
        }
        Ok(())
    }
}

/// A refusal: the edits are dropped.
fn done(reply: MilterReply) -> EomStep {
    EomStep::Done {
        reply,
        edits: Vec::new(),
        continued: false,
    }
}

/// An error unless `action` was negotiated.
pub(crate) fn check_action(actions: u32, action: u32, reply: &str) -> Result<(), MilterError> {
    if actions & action == 0 {
        return Err(MilterError::Protocol(format!(
            "{reply} without the action negotiated"
        )));
    }
    Ok(())
}

/// `SMFIR_SHUTDOWN` as a reply: `421 4.7.0`, and the session closes.
pub(crate) fn shutdown_reply() -> MilterReply {
    MilterReply::Code {
        code: 421,
        enhanced: Some((4, 7, 0)),
        text: "Server closing connection".into(),
    }
}

fn edit_octets(edit: &Edit) -> usize {
    match edit {
        Edit::AddHeader { name, value }
        | Edit::InsertHeader { name, value, .. }
        | Edit::ChangeHeader { name, value, .. } => name.len() + value.len(),
        Edit::ReplaceBody(b) => b.len(),
        Edit::AddRcpt { rcpt, args } | Edit::ChangeFrom { sender: rcpt, args } => {
            rcpt.len() + args.as_ref().map_or(0, String::len)
        }
        Edit::DelRcpt(s) | Edit::Quarantine(s) => s.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::negotiate::OFFERED_ACTIONS;

    fn fold(actions: u32) -> EomFold {
        let n = Negotiated::accept(&Reply::OptNeg {
            version: 6,
            actions,
            protocol: 0,
            symlists: Vec::new(),
        })
        .unwrap();
        EomFold::new(&n, None)
    }

    #[test]
    fn edits_then_continue_or_accept() {
        let mut f = fold(OFFERED_ACTIONS);
        let add = Reply::AddHeader {
            name: "X-A".into(),
            value: "1".into(),
        };
        assert_eq!(f.take(add).unwrap(), EomStep::More);
        assert_eq!(
            f.take(Reply::ReplBody(b"a".to_vec())).unwrap(),
            EomStep::More
        );
        assert_eq!(
            f.take(Reply::ReplBody(b"b".to_vec())).unwrap(),
            EomStep::More
        );
        assert_eq!(f.take(Reply::Progress).unwrap(), EomStep::Progress);
        let EomStep::Done {
            reply,
            edits,
            continued,
        } = f.take(Reply::Continue).unwrap()
        else {
            panic!()
        };
        assert_eq!((reply, continued), (MilterReply::Continue, true));
        assert_eq!(
            edits,
            vec![
                Edit::AddHeader {
                    name: "X-A".into(),
                    value: " 1".into()
                },
                Edit::ReplaceBody(b"ab".to_vec())
            ]
        );
        let mut f = fold(OFFERED_ACTIONS);
        let EomStep::Done {
            reply, continued, ..
        } = f.take(Reply::Accept).unwrap()
        else {
            panic!()
        };
        assert_eq!((reply, continued), (MilterReply::Accept, false));
    }

    #[test]
    fn refusals_drop_the_edits_and_unnegotiated_edits_fail() {
        let mut f = fold(OFFERED_ACTIONS);
        f.take(Reply::DelRcpt("<a@b>".into())).unwrap();
        assert_eq!(f.take(Reply::Reject).unwrap(), done(MilterReply::Reject));
        let mut f = fold(0);
        let e = f.take(Reply::DelRcpt("<a@b>".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol error: SMFIR_DELRCPT without the action negotiated"
        );
        let e = f.take(Reply::Skip).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol error: unexpected SMFIR_SKIP after EOM"
        );
    }

    #[test]
    fn an_earlier_quarantine_holds_an_accepted_message() {
        let n = Negotiated::accept(&Reply::OptNeg {
            version: 6,
            actions: OFFERED_ACTIONS,
            protocol: 0,
            symlists: Vec::new(),
        })
        .unwrap();
        let mut f = EomFold::new(&n, Some("virus".into()));
        let EomStep::Done { reply, edits, .. } = f.take(Reply::Accept).unwrap() else {
            panic!()
        };
        assert_eq!(reply, MilterReply::Quarantine("virus".into()));
        assert_eq!(edits, vec![Edit::Quarantine("virus".into())]);
    }
}
