//! Forwarding: an alias member outside the local domains is sent on by committing a
//! new message to the queue (`sloop_common::spool::commit`), with the original sender
//! and DSN parameters, the recipients being the forward addresses, and a
//! `Delivered-To:` header for the address that was expanded, so a forward that comes
//! back here is caught as a loop (headers.rs).
//!
//! The original recipient counts as delivered once the new message is committed; a
//! spool error defers it (the forward is then retried with the original).

use crate::headers::delivered_to;
use crate::message::QueuedMessage;
use crate::result::RcptResult;
use sloop_common::spool::{commit, Envelope, Recipient, Spool};
use std::io::Read;

/// Commits a copy of `msg` for `targets`; the result is for `original`.
pub fn forward(
    spool: &Spool,
    msg: &QueuedMessage,
    original: &str,
    targets: &[String],
    crlf: bool,
) -> RcptResult {
    let old = &msg.envelope;
    let mut env = Envelope::new(
        old.sender.clone(),
        targets.iter().map(|t| Recipient::new(t.clone())).collect(),
    );
    env.envid = old.envid.clone();
    env.ret = old.ret;
    env.smtputf8 = old.smtputf8;
    env.body = old.body.clone();
    env.client = Some(format!("forwarded for <{original}> from {}", old.id));
    let header = delivered_to(original, crlf);
    let mut content = header.as_slice().chain(msg.reader());
    match commit(spool, &mut content, env, 0) {
        Ok(id) => {
            log::info!(
                "{}: forwarded for <{original}> as {id} to {}",
                old.id,
                targets
                    .iter()
                    .map(|t| format!("<{t}>"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            RcptResult::ok("2.0.0", format!("forwarded as {id}")).via("local")
        }
        Err(e) if e.is_permanent() => {
            RcptResult::fail("5.3.0", format!("cannot forward: {e}")).via("local")
        }
        Err(e) => RcptResult::defer("4.3.0", format!("cannot forward: {e}")).via("local"),
    }
}
