//! Local mail that a milter rejected goes back to its sender, as Postfix's pickup has
//! its cleanup server do (`CLEANUP_FLAG_BOUNCE`): a local sender has no SMTP client to
//! be told, so the notice is a delivery status notification (the same report the
//! queue manager sends for a failed delivery, `qmgr::bounce`), with the milter's reply
//! as each recipient's diagnostic and the original headers (the whole message with
//! `RET=FULL`).
//!
//! - The notice comes from `<>` and goes to the sender; when the sender is `<>` itself
//!   it goes to the postmaster instead, as a failed bounce does.
//! - Recipients whose `NOTIFY` excludes `FAILURE` (`sendmail -N never`) are not
//!   reported; when none is left, nothing is sent and the message is only dropped.
//! - The rejected message itself is never queued. The notice is committed first and
//!   the maildrop file removed after it, so a crash between the two sends the notice
//!   twice at worst (the next scan asks the milters again), never loses it.

use crate::qmgr::bounce::{self, Dsn, DsnRecipient, Kind};
use sloop_common::spool::inject::{commit_bytes, InjectError};
use sloop_common::spool::{Envelope, Recipient, Spool};
use std::io::{Cursor, Read};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who writes and who receives the notices of one pickup process.
#[derive(Debug, Clone)]
pub struct Returner {
    /// `server.hostname`: the reporting MTA.
    pub hostname: String,
    /// Where the notice about a message from `<>` goes.
    pub postmaster: String,
}

/// What became of a rejected message.
#[derive(Debug, PartialEq, Eq)]
pub enum Returned {
    /// The notice was committed under this queue ID.
    Notice(String),
    /// No recipient wanted a notice (`NOTIFY=NEVER`): nothing was sent.
    NoNotice,
}

impl Returner {
    /// Commits the notice for message `name` (its envelope and bytes as the milters left
    /// them), rejected with `reply` (`550 5.7.1 text`), and logs one line per
    /// recipient and one for the notice in Postfix's words. An error is temporary for
    /// the caller: the maildrop file stays for the next scan.
    pub fn reject(
        &self,
        spool: &Spool,
        name: &str,
        env: &Envelope,
        message: &[u8],
        reply: &str,
    ) -> Result<Returned, InjectError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut original = env.clone();
        original.id = name.to_string();
        if original.arrival == 0 {
            original.arrival = now;
        }
        let status = enhanced_status(reply);
        // Logged once the outcome is sure: a notice that cannot be committed now is
        // tried again at the next scan.
        let log_results = || {
            for r in &original.recipients {
                log::info!(
                    "{name}: to=<{}>, relay=none, delay={}, dsn={status}, status=bounced ({reply})",
                    r.address,
                    now.saturating_sub(original.arrival)
                );
            }
        };
        let recipients: Vec<DsnRecipient> = original
            .recipients
            .iter()
            .filter(|r| bounce::wants_notice(r, Kind::Failure))
            .map(|r| DsnRecipient {
                address: r.address.clone(),
                orcpt: r.orcpt.clone(),
                status: status.clone(),
                diagnostic: reply.to_string(),
            })
            .collect();
        if recipients.is_empty() {
            log_results();
            log::info!("{name}: no notice: every recipient has NOTIFY=NEVER");
            return Ok(Returned::NoNotice);
        }
        let dsn = Dsn {
            kind: Kind::Failure,
            envelope: &original,
            recipients,
            hostname: &self.hostname,
            now,
        };
        let mut text = Vec::new();
        dsn.reader(Cursor::new(message.to_vec()))
            .and_then(|mut r| r.read_to_end(&mut text))
            .map_err(InjectError::ReadMessage)?;
        let (to, describe) = if original.sender.is_empty() {
            (
                self.postmaster.clone(),
                format!(
                    "undeliverable message from <> sent to <{}>",
                    self.postmaster
                ),
            )
        } else {
            (
                original.sender.clone(),
                "sender non-delivery notification".to_string(),
            )
        };
        let notice = Envelope::new("", vec![Recipient::new(to)]);
        let id = commit_bytes(spool, &text, notice, 0, None)?;
        log_results();
        log::info!("{name}: {describe}: {id}");
        Ok(Returned::Notice(id))
    }
}

/// The enhanced status code of a reply (`550 5.7.1 text` -> `5.7.1`), in the failure
/// class; `5.7.1` when the reply has none (a milter refusal is a policy refusal).
fn enhanced_status(reply: &str) -> String {
    match reply.split_whitespace().nth(1) {
        Some(code) if code.starts_with(|c: char| c.is_ascii_digit()) => {
            bounce::status_code(code, '5')
        }
        _ => "5.7.1".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::pickup::take::tests::spool;
    use sloop_common::spool::QueueState;

    fn returner() -> Returner {
        Returner {
            hostname: "mx.example".into(),
            postmaster: "postmaster@example.org".into(),
        }
    }

    fn queued(s: &Spool, id: &str) -> (Envelope, String) {
        let path = s.path(QueueState::Incoming, id);
        let bytes = std::fs::read(&path).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let env = Envelope::read_from(&mut f).unwrap();
        let text = String::from_utf8_lossy(&bytes[..env.size as usize]).into_owned();
        (env, text)
    }

    #[test]
    fn enhanced_status_comes_from_the_reply() {
        assert_eq!(enhanced_status("550 5.7.1 Gtube pattern"), "5.7.1");
        assert_eq!(enhanced_status("554 5.6.0 bad"), "5.6.0");
        assert_eq!(enhanced_status("554 4.7.0 odd class"), "5.7.0");
        assert_eq!(enhanced_status("554 Rejected"), "5.7.1");
        assert_eq!(enhanced_status("554"), "5.7.1");
        assert_eq!(enhanced_status("554 5.7.x junk"), "5.0.0");
    }

    #[test]
    fn the_sender_gets_a_report_with_the_reply_and_the_headers() {
        let s = spool("sender");
        let env = Envelope::new("alice@example.org", vec![Recipient::new("bob@example.net")]);
        let msg = b"Subject: spam\r\nX-Tag: mine\r\n\r\nsecret body\r\n";
        let got = returner()
            .reject(&s, "ABC123", &env, msg, "554 5.7.1 Gtube pattern")
            .unwrap();
        let Returned::Notice(id) = got else {
            panic!("no notice: {got:?}")
        };
        let (notice, text) = queued(&s, &id);
        assert_eq!(notice.sender, "");
        assert_eq!(notice.recipients.len(), 1);
        assert_eq!(notice.recipients[0].address, "alice@example.org");
        assert!(
            text.contains("Subject: Undelivered Mail Returned to Sender"),
            "{text}"
        );
        assert!(
            text.contains("<bob@example.net>: 554 5.7.1 Gtube pattern"),
            "{text}"
        );
        assert!(text.contains("Status: 5.7.1\r\n"), "{text}");
        assert!(
            text.contains("Diagnostic-Code: smtp; 554 5.7.1 Gtube pattern"),
            "{text}"
        );
        assert!(text.contains("X-Sloop-Queue-ID: ABC123"), "{text}");
        assert!(text.contains("X-Tag: mine"), "{text}");
        // HDRS by default: the body stays out of the notice.
        assert!(!text.contains("secret body"), "{text}");
        // The rejected message itself is not queued.
        assert!(!s.path(QueueState::Incoming, "ABC123").exists());
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let s = spool("full");
        let mut env = Envelope::new("alice@example.org", vec![Recipient::new("bob@example.net")]);
        env.ret = Some(sloop_common::spool::Ret::Full);
        let got = returner()
            .reject(
                &s,
                "ABC124",
                &env,
                b"Subject: x\r\n\r\nsecret body\r\n",
                "550 5.7.1 no",
            )
            .unwrap();
        let Returned::Notice(id) = got else {
            panic!("no notice: {got:?}")
        };
        assert!(queued(&s, &id).1.contains("secret body"));
    }

    #[test]
    fn a_message_from_the_null_sender_is_reported_to_the_postmaster() {
        let s = spool("null");
        let env = Envelope::new("", vec![Recipient::new("bob@example.net")]);
        let got = returner()
            .reject(
                &s,
                "ABC125",
                &env,
                b"Subject: x\r\n\r\nx\r\n",
                "550 5.7.1 no",
            )
            .unwrap();
        let Returned::Notice(id) = got else {
            panic!("no notice: {got:?}")
        };
        let (notice, _) = queued(&s, &id);
        assert_eq!(notice.recipients[0].address, "postmaster@example.org");
    }

    #[test]
    fn notify_never_sends_nothing() {
        let s = spool("never");
        let mut r = Recipient::new("bob@example.net");
        r.notify = Some("NEVER".into());
        let env = Envelope::new("alice@example.org", vec![r]);
        let got = returner()
            .reject(
                &s,
                "ABC126",
                &env,
                b"Subject: x\r\n\r\nx\r\n",
                "550 5.7.1 no",
            )
            .unwrap();
        assert_eq!(got, Returned::NoNotice);
        assert_eq!(
            std::fs::read_dir(s.state_dir(QueueState::Incoming))
                .unwrap()
                .count(),
            0
        );
    }
}
