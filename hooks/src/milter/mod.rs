//! The MTA side of the milter protocol, version 6, as Postfix speaks it to OpenDKIM,
//! rspamd, clamav-milter and every other libmilter filter.
//!
//! - `codec`: the wire format, I/O-free: packets (4-octet big-endian length, command
//!   octet, data), the commands the MTA sends and the replies a filter sends. This is
//!   the fuzz target `milter_packet`.
//! - `negotiate`: option negotiation (`SMFIC_OPTNEG`): what Sloop offers, what a filter
//!   may ask for, the macro lists it asks for (`SETSYMLIST`).
//! - `session`: [`MilterSession`], one connection to one filter for one SMTP session
//!   (or several in a row): the events (connect, HELO, MAIL, RCPT, DATA, the message,
//!   abort, quit) under deadlines, honouring the filter's "no such event" and "no
//!   reply" flags.
//! - `eom`: the replies to the end of the message (modifications, decision), I/O-free.
//! - `reuse`: keeping a connection for the next SMTP session (`SMFIC_QUIT_NC`) where
//!   libmilter's state machine takes it, I/O-free.
//! - `wire`: packets queued and written together, replies read against a timer.
//! - `conn`: the socket (`unix:` or `inet:`), connected within a budget.
//! - `reply_code`: the filter's own SMTP reply (`SMFIR_REPLYCODE`), checked.
//! - `header`: the header block of a message split into fields, shared by the session
//!   (which sends them) and the edits (which change them).
//! - `edits`: [`apply_edits`], the end-of-message modifications applied to the message
//!   and the envelope, all or nothing; `esmtp`: the ESMTP parameters that come with an
//!   added recipient or a new sender.
//!
//! What can go wrong: the filter is unreachable, silent, answers garbage, or asks for
//! what was not offered. Each is a [`MilterError`]; its `Display` is the text that
//! follows `milter NAME: ` in the log line (`protocol version 7 conflict`,
//! `protocol error: ...`). The caller applies the filter's `on_error` and drops the
//! filter for the rest of the SMTP session.

mod codec;
mod conn;
mod edits;
mod eom;
mod esmtp;
mod header;
mod negotiate;
mod reply_code;
mod reuse;
mod session;
mod wire;

use std::fmt;
use std::net::IpAddr;

pub use codec::{
    encode_command, encode_command_into, encode_reply, read_packet, Command, Packet, Reply,
    MAX_PACKET_LEN,
};
pub use edits::{apply_edits, EditError, IgnoredParam};
pub use negotiate::{MacroStage, Negotiated, NegotiationError};
pub(crate) use reuse::fresh as reuse_fresh;
pub use reuse::{MAX_IDLE as REUSE_MAX_IDLE, MAX_SESSIONS as REUSE_MAX_SESSIONS};
pub use session::{MilterSession, Released};

/// The macros the MTA passes with an event: `(name, value)` pairs such as
/// `("{client_addr}", "192.0.2.1")`, `("j", "mx.example.org")`, `("i", queue_id)`.
/// When the filter asked for a list of macros for the stage (`SETSYMLIST`), only those
/// are sent; otherwise all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Macros(pub Vec<(String, String)>);

impl Macros {
    /// No macros.
    pub fn new() -> Macros {
        Macros(Vec::new())
    }

    /// Adds (or replaces) one macro; `name` as the filter knows it (`j`, `{auth_type}`).
    pub fn set(&mut self, name: &str, value: &str) -> &mut Macros {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.0.push((name.to_string(), value.to_string())),
        }
        self
    }
}

/// The client as the milter's connect event describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The verified client name, or the address in brackets (`[192.0.2.1]`) as Postfix
    /// sends it when there is none.
    pub hostname: String,
    /// `None` for mail with no network client (sent as family `U`, unknown).
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// A filter's decision on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterReply {
    /// Go on (also what an event the filter asked not to answer gets).
    Continue,
    /// Accept: no more events for this message (or, at connect, this session).
    Accept,
    /// `550 5.7.1 Command rejected`.
    Reject,
    /// `451 4.7.1 Service unavailable - try again later`.
    Tempfail,
    /// Accept the message and drop it (only after MAIL).
    Discard,
    /// The filter's own reply: code 4xx or 5xx (a 2xx or 3xx is a protocol error),
    /// optional enhanced status code of the same class, and the text (the lines of a
    /// multi-line reply joined with a space).
    Code {
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        text: String,
    },
    /// The message accepted but to be held (`hold/`) with this reason. Only the
    /// message event returns it: when the filter asked for quarantine and then
    /// accepted or continued. A reject or tempfail wins over a quarantine.
    Quarantine(String),
}

/// One end-of-message modification, in the order the filter sent them.
///
/// Header values are the text after the colon exactly as it goes into the message
/// (the session has already put back the space after the colon that a filter without
/// the "leading space" option leaves out). Folded values keep their line breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Append a header field at the end of the header block.
    AddHeader { name: String, value: String },
    /// Insert a header field so that it becomes field number `index` (0 = the first).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Replace occurrence `index` (1-based) of the field `name` (case-insensitive);
    /// an empty value deletes it. An occurrence that does not exist is added (when the
    /// value is not empty), as Sendmail and Postfix do.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Replace the body (everything after the blank line) with these octets.
    ReplaceBody(Vec<u8>),
    /// Add an envelope recipient (with ESMTP parameters when `args` is set:
    /// `NOTIFY=NEVER ORCPT=rfc822;a+40b`).
    AddRcpt { rcpt: String, args: Option<String> },
    /// Delete an envelope recipient.
    DelRcpt(String),
    /// Replace the envelope sender.
    ChangeFrom {
        sender: String,
        args: Option<String>,
    },
    /// Hold the message with this reason (no change to the message itself).
    Quarantine(String),
}

/// Why talking to a filter failed. `Display` is the log text after `milter NAME: `.
#[derive(Debug)]
pub enum MilterError {
    /// Could not connect (`connect inet:127.0.0.1:8891: Connection refused`).
    Connect { socket: String, reason: String },
    /// No complete reply before the per-event timer or the phase deadline.
    Timeout { ms: u128, event: &'static str },
    /// The filter closed the connection where a reply was due.
    Eof { event: &'static str },
    /// Reading or writing failed (`write BODY: Broken pipe`).
    Io {
        op: &'static str,
        event: &'static str,
        reason: String,
    },
    /// The filter sent something the protocol does not allow.
    Protocol(String),
    /// The filter wants a protocol version or actions Sloop did not offer.
    Negotiation(NegotiationError),
    /// The session was already broken by an earlier failure, or quit.
    Closed,
}

impl fmt::Display for MilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterError::Connect { socket, reason } => write!(f, "connect {socket}: {reason}"),
            MilterError::Timeout { ms, event } => {
                write!(f, "timeout after {ms}ms waiting for the reply to {event}")
            }
            MilterError::Eof { event } => {
                write!(f, "unexpected EOF waiting for the reply to {event}")
            }
            MilterError::Io { op, event, reason } => write!(f, "{op} {event}: {reason}"),
            MilterError::Protocol(what) => write!(f, "protocol error: {what}"),
            MilterError::Negotiation(e) => write!(f, "{e}"),
            MilterError::Closed => write!(f, "connection already closed after an error"),
        }
    }
}

impl std::error::Error for MilterError {}

impl From<NegotiationError> for MilterError {
    fn from(e: NegotiationError) -> MilterError {
        MilterError::Negotiation(e)
    }
}

/// The text of an OS error without Rust's `(os error N)` suffix, as Postfix logs it.
pub(crate) fn os_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod session_tests;
