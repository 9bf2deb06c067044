//! The Postfix policy delegation client (`check_policy_service`), spoken exactly as
//! Postfix speaks it, so that the policy daemons operators already run (postgrey,
//! postfix-policyd-spf-python, postfwd, ...) plug in unchanged.
//!
//! The protocol: for each check, Sloop writes `name=value` lines ended by an empty
//! line (`request=smtpd_access_policy`, `protocol_state=RCPT`, `client_address=...`);
//! the service answers with exactly one `action=...` line and an empty line. The
//! connection is kept for the next request, of this session or a later one.
//!
//! - `proto`: the request encoder and the reply framing (I/O-free; the reply reader
//!   knows when a reply is complete and refuses anything over 4 KiB).
//! - `action`: what an `action=` value means ([`Action`]), with Postfix's keywords and
//!   their texts; an unknown action is an error, never an accept.
//! - `client`: [`PolicyClient`], one per `[[policy]]` table per process: connects
//!   (`unix:` or `inet:`), keeps the connection (closed when idle more than 300 s,
//!   older than 1000 s, or after any error), tries `tries` times within the caller's
//!   deadline, and reports each failure as a [`PolicyError`] whose text is the log
//!   line's (`timeout after 5000ms (try 2/2)`).
//!
//! What the answers do to the SMTP session (DEFER_IF_PERMIT, HOLD, PREPEND, ...) is
//! the hook engine's business; docs/filters.md is the operator's page and
//! docs/policy-protocol.md the protocol reference.

mod action;
mod client;
mod proto;

pub use action::{split_enhanced, Action, Enhanced};
pub use client::{PolicyClient, PolicyError};
pub use proto::{
    encode_reply, parse_reply, ProtoError, ProtocolState, ReplyReader, Request, MAX_REPLY,
};
