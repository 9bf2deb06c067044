//! Delivery status notifications (RFC 3464): the bounce sent to a message's sender when
//! recipients failed, and the optional delay warning.
//!
//! A DSN is a `multipart/report; report-type=delivery-status` message from the null
//! sender with three parts: a human-readable explanation, a `message/delivery-status`
//! part (per-message fields, then one block per recipient with Final-Recipient,
//! Original-Recipient from ORCPT, Action, Status and Diagnostic-Code), and the original
//! message's headers (`text/rfc822-headers`) or, when the envelope asked for RET=FULL,
//! the whole message (`message/rfc822`).
//!
//! [`Dsn::reader`] streams the notification: the original message is read from its queue
//! file, never held in memory whole, and the result is handed to
//! `sloop_common::spool::commit` by the caller (mod.rs). Failing to read the queue file is
//! an I/O error the caller treats as temporary (the bounce is retried later).
//! NOTIFY (RFC 3461) is honoured by [`wants_notice`]: NEVER, or a list without FAILURE
//! (or DELAY for warnings), means no notice for that recipient.

use sloop_common::logging::rfc5322_date;
use sloop_common::spool::status;
use sloop_common::spool::{Envelope, QueueId, Recipient, Ret};
use std::fs::File;
use std::io::{self, Cursor, Read};

/// Which notification to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Recipients failed for good (Action: failed).
    Failure,
    /// Recipients are still being retried (Action: delayed).
    Delay,
}

/// What the queue manager tells whom about a message (see core.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A bounce to the sender.
    Failure,
    /// A delay warning to the sender.
    Delay,
    /// A failed message from `<>`: the message itself, once, to the postmaster.
    PostmasterCopy,
}

/// A notification about one message, for the spool's executor to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The recipients reported (none for a postmaster copy).
    pub recipients: Vec<DsnRecipient>,
    pub hostname: String,
    /// Where a postmaster copy goes.
    pub postmaster: String,
    /// Seconds since the epoch.
    pub now: u64,
}

impl sloop_common::spool::writer::Notice for Notice {
    fn envelope(&self, original: &Envelope) -> Envelope {
        let to = match self.kind {
            NoticeKind::PostmasterCopy => self.postmaster.clone(),
            _ => original.sender.clone(),
        };
        Envelope::new("", vec![Recipient::new(to)])
    }

    fn render(&self, original: &Envelope, body: io::Take<File>) -> io::Result<Box<dyn Read>> {
        let kind = match self.kind {
            NoticeKind::PostmasterCopy => return Ok(Box::new(body)),
            NoticeKind::Failure => Kind::Failure,
            NoticeKind::Delay => Kind::Delay,
        };
        let dsn = Dsn {
            kind,
            envelope: original,
            recipients: self.recipients.clone(),
            hostname: &self.hostname,
            now: self.now,
        };
        Ok(Box::new(dsn.reader(body)?))
    }

    fn record_line(&self, notice: &QueueId) -> String {
        match self.kind {
            NoticeKind::Delay => status::warned_line(),
            _ => status::bounced_line(notice.as_str()),
        }
    }

    fn describe(&self) -> String {
        match self.kind {
            NoticeKind::Failure => "sender non-delivery notification".into(),
            NoticeKind::Delay => "sender delay notification".into(),
            NoticeKind::PostmasterCopy => {
                format!(
                    "undeliverable message from <> sent to <{}>",
                    self.postmaster
                )
            }
        }
    }
}

/// Where a notice about a message from `<>` goes: `postmaster@` the first local domain
/// (`postmaster` alone when there is none).
pub fn postmaster_address(local_domains: &[String]) -> String {
    match local_domains.first() {
        Some(d) => format!("postmaster@{d}"),
        None => "postmaster".to_string(),
    }
}

/// One recipient reported in a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    pub address: String,
    pub orcpt: Option<String>,
    /// Enhanced status code (`5.1.1`).
    pub status: String,
    /// The reply or reason (`550 5.1.1 no such user`).
    pub diagnostic: String,
}

/// What the notification is about.
#[derive(Debug)]
pub struct Dsn<'a> {
    pub kind: Kind,
    pub envelope: &'a Envelope,
    pub recipients: Vec<DsnRecipient>,
    /// `server.hostname`.
    pub hostname: &'a str,
    /// Now, in seconds since the epoch.
    pub now: u64,
}

/// True when recipient `r`'s NOTIFY parameter asks for a notice of this kind. No NOTIFY
/// means failures are reported and delays are too (RFC 3461 §4.1 leaves it to the MTA).
pub fn wants_notice(r: &Recipient, kind: Kind) -> bool {
    let Some(notify) = &r.notify else {
        return true;
    };
    let word = match kind {
        Kind::Failure => "FAILURE",
        Kind::Delay => "DELAY",
    };
    notify
        .split(',')
        .any(|w| w.trim().eq_ignore_ascii_case(word))
}

/// Largest header block copied into a HDRS notice.
const MAX_HEADERS: u64 = 256 * 1024;

impl Dsn<'_> {
    /// The whole notification as a reader: the report, then the original headers (read
    /// now from `original`) or the whole original message (streamed from `original`).
    pub fn reader<R: Read + 'static>(&self, mut original: R) -> io::Result<impl Read> {
        let boundary = format!("{}/{}.{}", self.envelope.id, self.now, self.hostname);
        let mut head = self.headers(&boundary);
        head.push_str(&self.human_part(&boundary));
        head.push_str(&self.status_part(&boundary));
        let full = self.kind == Kind::Failure && self.envelope.ret == Some(Ret::Full);
        let mut head = head.into_bytes();
        let body: Box<dyn Read> = if full {
            head.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Description: Undelivered Message\r\n\
                     Content-Type: message/rfc822\r\n\r\n"
                )
                .as_bytes(),
            );
            Box::new(original)
        } else {
            head.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Description: Message Headers\r\n\
                     Content-Type: text/rfc822-headers\r\n\r\n"
                )
                .as_bytes(),
            );
            let mut hdrs = Vec::new();
            (&mut original).take(MAX_HEADERS).read_to_end(&mut hdrs)?;
            hdrs.truncate(header_len(&hdrs));
            Box::new(Cursor::new(hdrs))
        };
        let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
        Ok(Cursor::new(head).chain(body).chain(Cursor::new(tail)))
    }

    fn headers(&self, boundary: &str) -> String {
        let subject = match self.kind {
            Kind::Failure => "Undelivered Mail Returned to Sender",
            Kind::Delay => "Delayed Mail (still being retried)",
        };
        format!(
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{id}.{now}.dsn@{host}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"{boundary}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\r\n",
            host = self.hostname,
            to = self.envelope.sender,
            date = rfc5322_date(self.now),
            id = self.envelope.id,
            now = self.now,
        )
    }

    fn human_part(&self, boundary: &str) -> String {
        let intro = match self.kind {
            Kind::Failure => {
                "I'm sorry to have to inform you that your message could not\r\n\
                 be delivered to one or more recipients. It's attached below.\r\n"
            }
            Kind::Delay => {
                "Your message could not be delivered yet to one or more recipients.\r\n\
                 It will be retried; you do not need to resend it.\r\n"
            }
        };
        let mut s = format!(
            "--{boundary}\r\nContent-Description: Notification\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n\
             This is the mail system at host {}.\r\n\r\n{intro}\r\n",
            self.hostname
        );
        for r in &self.recipients {
            s.push_str(&format!(
                "<{}>: {}\r\n",
                one_line(&r.address),
                one_line(&r.diagnostic)
            ));
        }
        s.push_str("\r\n");
        s
    }

    fn status_part(&self, boundary: &str) -> String {
        let mut s = format!(
            "--{boundary}\r\nContent-Description: Delivery report\r\n\
             Content-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; {}\r\nX-Sloop-Queue-ID: {}\r\n",
            self.hostname, self.envelope.id
        );
        if let Some(envid) = &self.envelope.envid {
            s.push_str(&format!(
                "Original-Envelope-Id: {}\r\n",
                one_line(&xtext_decode(envid))
            ));
        }
        s.push_str(&format!(
            "Arrival-Date: {}\r\n",
            rfc5322_date(self.envelope.arrival)
        ));
        for r in &self.recipients {
            s.push_str(&self.recipient_block(r));
        }
        s.push_str("\r\n");
        s
    }

    fn recipient_block(&self, r: &DsnRecipient) -> String {
        let mut s = format!("\r\nFinal-Recipient: rfc822; {}\r\n", one_line(&r.address));
        if let Some(orcpt) = &r.orcpt {
            let orcpt = one_line(orcpt);
            let (kind, addr) = orcpt.split_once(';').unwrap_or(("rfc822", &orcpt));
            s.push_str(&format!(
                "Original-Recipient: {}; {}\r\n",
                kind.trim(),
                one_line(&xtext_decode(addr.trim()))
            ));
        }
        let (action, class) = match self.kind {
            Kind::Failure => ("failed", '5'),
            Kind::Delay => ("delayed", '4'),
        };
        s.push_str(&format!(
            "Action: {action}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            status_code(&r.status, class),
            one_line(&r.diagnostic)
        ));
        s
    }
}

/// `status` with its class forced to `class` (`4.4.7` -> `5.4.7` in a failure report);
/// anything that is not an enhanced code becomes `<class>.0.0`.
pub fn status_code(status: &str, class: char) -> String {
    let parts: Vec<&str> = status.split('.').collect();
    let well_formed = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if well_formed {
        format!("{class}.{}.{}", parts[1], parts[2])
    } else {
        format!("{class}.0.0")
    }
}

/// Decodes RFC 3461 xtext (`+XX` is the octet XX in hex); a malformed `+` stays as is.
pub fn xtext_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Length of the header block of a message (up to and including the empty line), or
/// all of `msg` when there is no empty line.
fn header_len(msg: &[u8]) -> usize {
    let mut i = 0;
    while i < msg.len() {
        match msg[i..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                let line = &msg[i..i + n];
                i += n + 1;
                if line.is_empty() || line == b"\r" {
                    return i;
                }
            }
            None => return msg.len(),
        }
    }
    msg.len()
}

/// A field value on one line: control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const ORIGINAL: &[u8] =
        b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nsecret body\r\n";

    fn envelope() -> Envelope {
        let mut r = Recipient::new("b@example.net");
        r.orcpt = Some("rfc822;B@example.net".into());
        let mut e = Envelope::new("a@example.org", vec![r]);
        e.id = "0123456789ABCDEF012345".into();
        e.arrival = 1_795_883_642;
        e
    }

    fn render(kind: Kind, env: &Envelope) -> String {
        let dsn = Dsn {
            kind,
            envelope: env,
            recipients: vec![DsnRecipient {
                address: "b@example.net".into(),
                orcpt: env.recipients[0].orcpt.clone(),
                status: "4.4.7".into(),
                diagnostic: "550 5.1.1 no\r\nsuch user".into(),
            }],
            hostname: "mx.example.org",
            now: 1_795_883_700,
        };
        let mut out = String::new();
        dsn.reader(ORIGINAL)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    /// A minimal MIME check: the top-level type, the boundary, the parts' types.
    fn parts(msg: &str) -> (String, Vec<(String, String)>) {
        let (head, body) = msg.split_once("\r\n\r\n").unwrap();
        let unfolded = head.replace("\r\n\t", " ");
        let ctype = unfolded
            .lines()
            .find(|l| l.starts_with("Content-Type:"))
            .unwrap()
            .to_string();
        let boundary = ctype
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let delim = format!("--{boundary}");
        let mut out = Vec::new();
        let chunks: Vec<&str> = body.split(delim.as_str()).collect();
        assert!(
            chunks.last().unwrap().starts_with("--"),
            "closing delimiter"
        );
        for chunk in &chunks[1..chunks.len() - 1] {
            let (h, b) = chunk
                .trim_start_matches("\r\n")
                .split_once("\r\n\r\n")
                .unwrap();
            let t = h
                .lines()
                .find_map(|l| l.strip_prefix("Content-Type: "))
                .unwrap();
            out.push((t.split(';').next().unwrap().to_string(), b.to_string()));
        }
        (ctype, out)
    }

    #[test]
    fn failure_report_is_multipart_report_with_headers_only() {
        let out = render(Kind::Failure, &envelope());
        assert!(out.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.example.org>"));
        assert!(out.contains("To: <a@example.org>\r\n"));
        let (ctype, parts) = parts(&out);
        assert!(ctype.contains("multipart/report; report-type=delivery-status"));
        let types: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let status = &parts[1].1;
        for want in [
            "Reporting-MTA: dns; mx.example.org\r\n",
            "Arrival-Date: Sat, 28 Nov 2026 16:34:02 +0000\r\n",
            "\r\n\r\nFinal-Recipient: rfc822; b@example.net\r\n",
            "Original-Recipient: rfc822; B@example.net\r\n",
            "Action: failed\r\nStatus: 5.4.7\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no  such user\r\n",
        ] {
            assert!(status.contains(want), "{want:?} missing in {status:?}");
        }
        assert!(parts[2].1.contains("Subject: hi"));
        assert!(!out.contains("secret body"), "HDRS must not carry the body");
    }

    #[test]
    fn ret_full_carries_the_whole_message_and_delay_says_delayed() {
        let mut env = envelope();
        env.ret = Some(Ret::Full);
        env.envid = Some("QQ314".into());
        let out = render(Kind::Failure, &env);
        let (_, parts) = parts(&out);
        assert_eq!(parts[2].0, "message/rfc822");
        assert!(parts[2].1.contains("secret body"));
        assert!(parts[1].1.contains("Original-Envelope-Id: QQ314\r\n"));
        let delay = render(Kind::Delay, &env);
        assert!(delay.contains("Action: delayed\r\nStatus: 4.4.7\r\n"));
        assert!(
            !delay.contains("secret body"),
            "warnings carry headers only"
        );
    }

    #[test]
    fn notify_is_honoured() {
        let mut r = Recipient::new("x@y");
        assert!(wants_notice(&r, Kind::Failure));
        r.notify = Some("NEVER".into());
        assert!(!wants_notice(&r, Kind::Failure));
        r.notify = Some("SUCCESS,DELAY".into());
        assert!(!wants_notice(&r, Kind::Failure));
        assert!(wants_notice(&r, Kind::Delay));
        r.notify = Some("success,failure".into());
        assert!(wants_notice(&r, Kind::Failure));
    }

    #[test]
    fn status_codes_are_forced_into_their_class() {
        assert_eq!(status_code("5.1.1", '5'), "5.1.1");
        assert_eq!(status_code("4.4.7", '5'), "5.4.7");
        assert_eq!(status_code("garbage", '5'), "5.0.0");
        assert_eq!(status_code("", '4'), "4.0.0");
    }

    #[test]
    fn orcpt_xtext_is_decoded() {
        assert_eq!(xtext_decode("a+2Bb@example.net"), "a+b@example.net");
        assert_eq!(xtext_decode("plain@x"), "plain@x");
        assert_eq!(xtext_decode("bad+zz+"), "bad+zz+");
        let mut env = envelope();
        env.recipients[0].orcpt = Some("rfc822;user+2Btag@Example.net".into());
        let out = render(Kind::Failure, &env);
        assert!(out.contains("Original-Recipient: rfc822; user+tag@Example.net\r\n"));
    }

    #[test]
    fn header_block_ends_at_the_empty_line() {
        assert_eq!(header_len(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(header_len(b"A: b\n\nbody"), 6);
        assert_eq!(header_len(b"A: b\r\n"), 6);
    }
}
