//! Option negotiation (`SMFIC_OPTNEG`): what Sloop offers a filter and what it makes of
//! the filter's answer.
//!
//! Sloop offers protocol version 6, every modification action (headers, body,
//! recipients with parameters, sender, quarantine, macro lists) and every protocol
//! step it can leave out or leave unanswered. The filter answers with its version, the
//! actions it will use and the steps it wants skipped (`SMFIP_NO*`: the event is not
//! sent) or unanswered (`SMFIP_NR_*`: the event is sent, no reply is read). A version
//! above 6 (or below 2) or an action that was not offered ends the negotiation; protocol
//! bits that were not offered are ignored, as libmilter itself masks them.

use std::fmt;

use super::codec::{Command, Reply};
use super::Macros;

/// The milter protocol version Sloop speaks.
pub const PROTOCOL_VERSION: u32 = 6;

// Actions (SMFIF_*).
pub(crate) const SMFIF_ADDHDRS: u32 = 0x01;
pub(crate) const SMFIF_CHGBODY: u32 = 0x02;
pub(crate) const SMFIF_ADDRCPT: u32 = 0x04;
pub(crate) const SMFIF_DELRCPT: u32 = 0x08;
pub(crate) const SMFIF_CHGHDRS: u32 = 0x10;
pub(crate) const SMFIF_QUARANTINE: u32 = 0x20;
pub(crate) const SMFIF_CHGFROM: u32 = 0x40;
pub(crate) const SMFIF_ADDRCPT_PAR: u32 = 0x80;
pub(crate) const SMFIF_SETSYMLIST: u32 = 0x100;

// Protocol steps (SMFIP_*).
pub(crate) const SMFIP_NOCONNECT: u32 = 0x01;
pub(crate) const SMFIP_NOHELO: u32 = 0x02;
pub(crate) const SMFIP_NOMAIL: u32 = 0x04;
pub(crate) const SMFIP_NORCPT: u32 = 0x08;
pub(crate) const SMFIP_NOBODY: u32 = 0x10;
pub(crate) const SMFIP_NOHDRS: u32 = 0x20;
pub(crate) const SMFIP_NOEOH: u32 = 0x40;
pub(crate) const SMFIP_NR_HDR: u32 = 0x80;
pub(crate) const SMFIP_NOUNKNOWN: u32 = 0x100;
pub(crate) const SMFIP_NODATA: u32 = 0x200;
pub(crate) const SMFIP_SKIP: u32 = 0x400;
pub(crate) const SMFIP_NR_CONN: u32 = 0x1000;
pub(crate) const SMFIP_NR_HELO: u32 = 0x2000;
pub(crate) const SMFIP_NR_MAIL: u32 = 0x4000;
pub(crate) const SMFIP_NR_RCPT: u32 = 0x8000;
pub(crate) const SMFIP_NR_DATA: u32 = 0x10000;
pub(crate) const SMFIP_NR_UNKN: u32 = 0x20000;
pub(crate) const SMFIP_NR_EOH: u32 = 0x40000;
pub(crate) const SMFIP_NR_BODY: u32 = 0x80000;
pub(crate) const SMFIP_HDR_LEADSPC: u32 = 0x100000;

/// Every action Sloop can carry out.
pub const OFFERED_ACTIONS: u32 = SMFIF_ADDHDRS
    | SMFIF_CHGBODY
    | SMFIF_ADDRCPT
    | SMFIF_DELRCPT
    | SMFIF_CHGHDRS
    | SMFIF_QUARANTINE
    | SMFIF_CHGFROM
    | SMFIF_ADDRCPT_PAR
    | SMFIF_SETSYMLIST;

/// Every protocol step Sloop can leave out or leave unanswered, body skipping, and
/// header values with their leading space. (Sloop never sends the "unknown command"
/// event, so it offers to leave it out.)
pub const OFFERED_PROTOCOL: u32 = SMFIP_NOCONNECT
    | SMFIP_NOHELO
    | SMFIP_NOMAIL
    | SMFIP_NORCPT
    | SMFIP_NOBODY
    | SMFIP_NOHDRS
    | SMFIP_NOEOH
    | SMFIP_NR_HDR
    | SMFIP_NOUNKNOWN
    | SMFIP_NODATA
    | SMFIP_SKIP
    | SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY
    | SMFIP_HDR_LEADSPC;

/// The stages a filter can ask a macro list for (`SMFIM_*`, the index in `SETSYMLIST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroStage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

/// An event the MTA may send, for the no-event and no-reply flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    Eoh,
    Body,
    /// An SMTP command the filter has no event for (sent only before QUIT_NC).
    Unknown,
}

impl Event {
    /// (the "do not send" flag, the "do not reply" flag)
    fn flags(self) -> (u32, u32) {
        match self {
            Event::Connect => (SMFIP_NOCONNECT, SMFIP_NR_CONN),
            Event::Helo => (SMFIP_NOHELO, SMFIP_NR_HELO),
            Event::Mail => (SMFIP_NOMAIL, SMFIP_NR_MAIL),
            Event::Rcpt => (SMFIP_NORCPT, SMFIP_NR_RCPT),
            Event::Data => (SMFIP_NODATA, SMFIP_NR_DATA),
            Event::Header => (SMFIP_NOHDRS, SMFIP_NR_HDR),
            Event::Eoh => (SMFIP_NOEOH, SMFIP_NR_EOH),
            Event::Body => (SMFIP_NOBODY, SMFIP_NR_BODY),
            Event::Unknown => (SMFIP_NOUNKNOWN, SMFIP_NR_UNKN),
        }
    }
}

/// Why a negotiation failed. `Display` is the log text after `milter NAME: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The filter speaks a version Sloop does not (above 6, or below 2).
    Version(u32),
    /// The filter wants actions that were not offered (the extra bits).
    Actions(u32),
    /// A macro list for a stage that does not exist.
    MacroStage(u32),
    /// The filter answered something else than option negotiation.
    NotOptNeg(&'static str),
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::Version(v) => write!(f, "protocol version {v} conflict"),
            NegotiationError::Actions(extra) => write!(
                f,
                "action flags 0x{extra:x} not offered (offered 0x{OFFERED_ACTIONS:x})"
            ),
            NegotiationError::MacroStage(i) => write!(f, "bad macro list index {i}"),
            NegotiationError::NotOptNeg(name) => {
                write!(f, "protocol error: {name} in reply to option negotiation")
            }
        }
    }
}

impl std::error::Error for NegotiationError {}

/// What the filter and Sloop agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// The macro names asked for per stage (`None`: send all the caller gives).
    symlists: [Option<Vec<String>>; 7],
}

impl Negotiated {
    /// Sloop's offer.
    pub fn offer() -> Command<'static> {
        Command::OptNeg {
            version: PROTOCOL_VERSION,
            actions: OFFERED_ACTIONS,
            protocol: OFFERED_PROTOCOL,
        }
    }

    /// Nothing agreed yet: every event sent and answered, no actions.
    pub(crate) fn before_negotiation() -> Negotiated {
        Negotiated {
            version: PROTOCOL_VERSION,
            actions: 0,
            protocol: 0,
            symlists: Default::default(),
        }
    }

    /// Checks the filter's answer to the offer.
    pub fn accept(reply: &Reply) -> Result<Negotiated, NegotiationError> {
        let Reply::OptNeg {
            version,
            actions,
            protocol,
            symlists,
        } = reply
        else {
            return Err(NegotiationError::NotOptNeg(reply.name()));
        };
        if !(2..=PROTOCOL_VERSION).contains(version) {
            return Err(NegotiationError::Version(*version));
        }
        if actions & !OFFERED_ACTIONS != 0 {
            return Err(NegotiationError::Actions(actions & !OFFERED_ACTIONS));
        }
        let mut lists: [Option<Vec<String>>; 7] = Default::default();
        for (stage, names) in symlists {
            let slot = lists
                .get_mut(*stage as usize)
                .ok_or(NegotiationError::MacroStage(*stage))?;
            *slot = Some(names.split_ascii_whitespace().map(str::to_string).collect());
        }
        Ok(Negotiated {
            version: *version,
            actions: *actions,
            protocol: protocol & OFFERED_PROTOCOL,
            symlists: lists,
        })
    }

    /// Whether the event is sent at all.
    pub(crate) fn sends(&self, event: Event) -> bool {
        self.protocol & event.flags().0 == 0
    }

    /// Whether the filter answers the event.
    pub(crate) fn replies(&self, event: Event) -> bool {
        self.protocol & event.flags().1 == 0
    }

    /// Whether header values go out (and come back) with their leading space.
    pub(crate) fn leading_space(&self) -> bool {
        self.protocol & SMFIP_HDR_LEADSPC != 0
    }

    /// Whether the filter may answer a body chunk with `SMFIR_SKIP`.
    pub(crate) fn may_skip(&self) -> bool {
        self.protocol & SMFIP_SKIP != 0
    }

    /// The macros to send at `stage`: those the filter asked for (when it asked), in the
    /// caller's order. Names compare with or without braces (`{auth_type}` = `auth_type`).
    pub(crate) fn macros_for<'a>(
        &self,
        stage: MacroStage,
        macros: &'a Macros,
    ) -> Vec<(&'a str, &'a str)> {
        let wanted = &self.symlists[stage as usize];
        macros
            .0
            .iter()
            .filter(|(name, _)| match wanted {
                None => true,
                Some(list) => list.iter().any(|w| bare(w) == bare(name)),
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

fn bare(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: u32, actions: u32, protocol: u32) -> Reply {
        Reply::OptNeg {
            version,
            actions,
            protocol,
            symlists: Vec::new(),
        }
    }

    #[test]
    fn offer_is_version_6_with_every_action() {
        assert_eq!(
            Negotiated::offer(),
            Command::OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1f_f7ff,
            }
        );
    }

    #[test]
    fn filter_choice_is_taken() {
        // rspamd: no replies before end of message, header values with leading space.
        let rspamd = SMFIP_NR_CONN
            | SMFIP_NR_HELO
            | SMFIP_NR_MAIL
            | SMFIP_NR_RCPT
            | SMFIP_NR_DATA
            | SMFIP_NR_HDR
            | SMFIP_NR_EOH
            | SMFIP_NR_BODY
            | SMFIP_HDR_LEADSPC
            | SMFIP_SKIP;
        let n = Negotiated::accept(&answer(6, SMFIF_ADDHDRS | SMFIF_CHGHDRS, rspamd)).unwrap();
        assert!(n.sends(Event::Connect) && !n.replies(Event::Connect));
        assert!(n.sends(Event::Body) && !n.replies(Event::Body));
        assert!(n.leading_space() && n.may_skip());
        let n = Negotiated::accept(&answer(2, 0, SMFIP_NOCONNECT | SMFIP_NOBODY)).unwrap();
        assert!(!n.sends(Event::Connect) && !n.sends(Event::Body));
        assert!(n.sends(Event::Helo) && n.replies(Event::Helo));
        assert!(!n.leading_space() && !n.may_skip());
    }

    #[test]
    fn protocol_bits_not_offered_are_ignored() {
        // SMFIP_RCPT_REJ and the large-chunk bits are not offered.
        let n = Negotiated::accept(&answer(6, 0, 0x800 | 0x1000_0000 | SMFIP_NOHELO)).unwrap();
        assert_eq!(n.protocol, SMFIP_NOHELO);
    }

    #[test]
    fn version_or_actions_not_offered_fail() {
        let e = Negotiated::accept(&answer(7, 0, 0)).unwrap_err();
        assert_eq!(e.to_string(), "protocol version 7 conflict");
        let e = Negotiated::accept(&answer(1, 0, 0)).unwrap_err();
        assert_eq!(e.to_string(), "protocol version 1 conflict");
        let e = Negotiated::accept(&answer(6, 0x201, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "action flags 0x200 not offered (offered 0x1ff)"
        );
        let e = Negotiated::accept(&Reply::Continue).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol error: SMFIR_CONTINUE in reply to option negotiation"
        );
        let bad_stage = Reply::OptNeg {
            version: 6,
            actions: SMFIF_SETSYMLIST,
            protocol: 0,
            symlists: vec![(7, "i".into())],
        };
        let e = Negotiated::accept(&bad_stage).unwrap_err();
        assert_eq!(e.to_string(), "bad macro list index 7");
    }

    #[test]
    fn symlist_limits_macros_per_stage() {
        let n = Negotiated::accept(&Reply::OptNeg {
            version: 6,
            actions: SMFIF_SETSYMLIST,
            protocol: 0,
            symlists: vec![(0, "{client_addr} j".into()), (2, "auth_type".into())],
        })
        .unwrap();
        let mut m = Macros::new();
        m.set("j", "mx.example.org")
            .set("{daemon_name}", "sloop")
            .set("{client_addr}", "192.0.2.1")
            .set("{auth_type}", "PLAIN");
        assert_eq!(
            n.macros_for(MacroStage::Connect, &m),
            vec![("j", "mx.example.org"), ("{client_addr}", "192.0.2.1")]
        );
        assert_eq!(
            n.macros_for(MacroStage::Mail, &m),
            vec![("{auth_type}", "PLAIN")]
        );
        // No list for HELO: everything the caller gives.
        assert_eq!(n.macros_for(MacroStage::Helo, &m).len(), 4);
    }
}
