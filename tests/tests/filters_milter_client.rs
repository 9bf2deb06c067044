//! Sloop's milter client (`sloop_hooks::milter::MilterSession`) against the real filters
//! from Debian's packages, without an SMTP server in between: the same fixtures as
//! `filters_interop.rs` (OpenDKIM, rspamd, clamav-milter), each driven through a whole
//! session (connect, HELO, MAIL, RCPT, DATA, the message) the way the smtpd drives it.
//! The edits a filter returns are applied with `apply_edits` and the result checked
//! with an independent tool (dkimpy for OpenDKIM's signature).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_common::config::hooks::{HookListener, HookSocket, MilterHook, OnError};
use sloop_common::spool::{Envelope, Recipient};
use sloop_hooks::milter::{apply_edits, ConnectInfo, Edit, Macros, MilterReply, MilterSession};
use sloop_tests::filters::clamav::{self, ClamavMilter};
use sloop_tests::filters::opendkim::OpenDkim;
use sloop_tests::filters::rspamd::{self, Rspamd};
use sloop_tests::filters::{eicar, gtube};
use sloop_tests::TestDir;
use std::time::{Duration, Instant};

fn hook(name: &str, port: u16) -> MilterHook {
    MilterHook {
        name: name.to_string(),
        socket: HookSocket::Inet {
            host: "127.0.0.1".to_string(),
            port,
        },
        on_error: OnError::Tempfail,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(30),
        content_timeout: Duration::from_secs(120),
        listeners: vec![HookListener::Smtpd],
        reuse: true,
    }
}

fn macros(pairs: &[(&str, &str)]) -> Macros {
    let mut m = Macros::new();
    m.set("j", "sloop.test")
        .set("{daemon_name}", "sloop")
        .set("v", "Sloop");
    for (k, v) in pairs {
        m.set(k, v);
    }
    m
}

/// The outcome of one transaction: every event's reply, then the message's reply and
/// edits (None when an earlier event already decided).
struct Outcome {
    replies: Vec<(&'static str, MilterReply)>,
    message: Option<(MilterReply, Vec<Edit>)>,
}

/// Runs one session and one transaction from `sender` to b@localhost.test with
/// `message` (CRLF line ends), as the smtpd does for a client on 127.0.0.1.
fn transaction(port: u16, name: &str, sender: &str, message: &str) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut s = MilterSession::open(&hook(name, port), deadline)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    let info = ConnectInfo {
        hostname: "localhost".to_string(),
        addr: Some("127.0.0.1".parse().unwrap()),
        port: 40000,
    };
    let mut replies = Vec::new();
    let conn = macros(&[
        ("{client_addr}", "127.0.0.1"),
        ("{client_name}", "localhost"),
        ("{client_port}", "40000"),
    ]);
    let r = s.connect(&info, &conn, deadline).expect("connect");
    replies.push(("connect", r));
    let r = s.helo("client.test", &macros(&[]), deadline).expect("helo");
    replies.push(("helo", r));
    let r = s
        .mail(
            &[format!("<{sender}>")],
            &macros(&[("{mail_addr}", sender)]),
            deadline,
        )
        .expect("mail");
    replies.push(("mail", r));
    let r = s
        .rcpt(
            &["<b@localhost.test>".to_string()],
            &macros(&[("{rcpt_addr}", "b@localhost.test")]),
            deadline,
        )
        .expect("rcpt");
    replies.push(("rcpt", r));
    let r = s
        .data(&macros(&[("i", "4F2A9C01")]), deadline)
        .expect("data");
    replies.push(("data", r));
    let decided = replies
        .iter()
        .any(|(_, r)| !matches!(r, MilterReply::Continue));
    let message = if decided {
        None
    } else {
        Some(
            s.message(
                message.as_bytes(),
                &macros(&[("i", "4F2A9C01")]),
                Duration::from_secs(120),
                deadline,
            )
            .expect("message"),
        )
    };
    s.quit();
    Outcome { replies, message }
}

fn message(from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <b@localhost.test>\r\nSubject: {subject}\r\n\
         Date: Thu, 03 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\n\
         \r\n{body}\r\n"
    )
}

#[test]
fn milter_client_gets_opendkims_signature_and_dkimpy_verifies_it() {
    let t = "milter_client_gets_opendkims_signature_and_dkimpy_verifies_it";
    let dir = TestDir::new("milter-client-dkim");
    let Some(dkim) = OpenDkim::start(t, &dir.path, 23123) else {
        return;
    };
    let text = message("a@localhost.test", "signed", "A body to sign.");
    let out = transaction(dkim.port, "opendkim", "a@localhost.test", &text);
    let (reply, edits) = out.message.expect("the message event ran");
    assert!(
        matches!(reply, MilterReply::Continue | MilterReply::Accept),
        "{reply:?}"
    );
    assert!(
        edits.iter().any(|e| matches!(e,
            Edit::InsertHeader { name, .. } | Edit::AddHeader { name, .. } if name == "DKIM-Signature")),
        "no DKIM-Signature edit: {edits:?}"
    );
    let mut msg = text.into_bytes();
    let mut envelope = Envelope::new("a@localhost.test", vec![Recipient::new("b@localhost.test")]);
    apply_edits(&edits, &mut msg, &mut envelope).expect("apply");
    let file = dir.path.join("signed.eml");
    std::fs::write(&file, &msg).unwrap();
    let report = dkim.verify(&file);
    assert!(
        report.is_ok(),
        "{report:?}\n{}",
        String::from_utf8_lossy(&msg)
    );
}

#[test]
fn milter_client_gets_rspamds_gtube_reject_and_headers_for_a_clean_message() {
    let t = "milter_client_gets_rspamds_gtube_reject_and_headers_for_a_clean_message";
    let dir = TestDir::new("milter-client-rspamd");
    let Some(rs) = Rspamd::start(t, &dir.path, 23133, 23134) else {
        return;
    };
    // rspamd asks for no replies before the end of the message: every event before it
    // is Continue without waiting for the filter.
    let out = transaction(
        rs.port,
        "rspamd",
        "a@spam.test",
        &message("a@spam.test", "gtube", &gtube()),
    );
    for (event, r) in &out.replies {
        assert_eq!(*r, MilterReply::Continue, "{event}");
    }
    let (reply, _) = out.message.expect("the message event ran");
    match &reply {
        MilterReply::Code { code, text, .. } => {
            assert_eq!(*code, 554, "{reply:?}");
            assert!(text.contains(rspamd::GTUBE_REPLY), "{reply:?}");
        }
        other => panic!("GTUBE not rejected with rspamd's reply: {other:?}"),
    }
    let out = transaction(
        rs.port,
        "rspamd",
        "a@ham.test",
        &message("a@ham.test", "clean", "Nothing to see."),
    );
    let (reply, edits) = out.message.expect("the message event ran");
    assert!(
        matches!(reply, MilterReply::Continue | MilterReply::Accept),
        "{reply:?}"
    );
    let names: Vec<&str> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::AddHeader { name, .. }
            | Edit::InsertHeader { name, .. }
            | Edit::ChangeHeader { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for h in ["X-Spamd-Result", "X-Rspamd-Server", "X-Rspamd-Queue-Id"] {
        assert!(names.contains(&h), "no {h} in {edits:?}");
    }
}

#[test]
fn milter_client_gets_clamav_milters_reject_for_eicar() {
    let t = "milter_client_gets_clamav_milters_reject_for_eicar";
    let dir = TestDir::new("milter-client-clamav");
    let Some(cl) = ClamavMilter::start(t, &dir.path, 23143) else {
        return;
    };
    let out = transaction(
        cl.port,
        "clamav",
        "a@virus.test",
        &message("a@virus.test", "eicar", &eicar()),
    );
    let (reply, _) = out.message.expect("the message event ran");
    let want = clamav::REJECT_TEXT.replace("%v", clamav::VIRUS_NAME);
    match &reply {
        MilterReply::Code { code, text, .. } => {
            assert_eq!(*code / 100, 5, "{reply:?}");
            assert!(text.contains(&want), "{reply:?}");
        }
        other => panic!("EICAR not rejected with clamav-milter's reply: {other:?}"),
    }
    let out = transaction(
        cl.port,
        "clamav",
        "a@clean.test",
        &message("a@clean.test", "clean", "No virus."),
    );
    let (reply, _) = out.message.expect("the message event ran");
    assert!(
        matches!(reply, MilterReply::Continue | MilterReply::Accept),
        "{reply:?}"
    );
}
