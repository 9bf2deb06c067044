//! Dialogue tests of STARTTLS and AUTH in the session state machine (no sockets).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::tests::policy;
use super::*;
use crate::auth::AuthOutcome;
use crate::reply::tests::assert_wire;

fn tls13() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        bits: 256,
        resumed: false,
    }
}

/// AUTH configured (the password file is never read here: the tests decide).
fn auth_cfg() -> String {
    format!(
        "[auth]\nbackend = \"file\"\npassword_file = \"{}/Cargo.toml\"\n\
         senders = {{ alice = [\"alice@local.test\"] }}\n",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// What the socket layer saw.
#[derive(Debug, Default)]
struct Seen {
    lines: Vec<String>,
    starttls: usize,
    auths: Vec<(String, String)>,
    jobs: Vec<QueueJob>,
    closed: bool,
}

/// Drives `s` over `input`: handshakes succeed, credentials `alice`/`pw` succeed.
fn drive(s: &mut Session<'_>, input: &[u8], seen: &mut Seen) {
    s.input(input);
    loop {
        match s.step() {
            Step::Reply(r) => {
                let wire = r.to_wire();
                assert_wire(&wire, r.enhanced.is_some());
                seen.lines
                    .extend(String::from_utf8(wire).unwrap().lines().map(str::to_string));
            }
            Step::Queue(job) => {
                let id = job.id.clone();
                seen.jobs.push(job);
                s.queued(&id, QueueOutcome::Committed);
            }
            Step::StartTls => {
                seen.starttls += 1;
                s.tls_started(tls13());
            }
            Step::Authenticate(c) => {
                let ok = c.username == "alice" && c.password.0 == b"pw";
                seen.auths
                    .push((c.mechanism.to_string(), c.username.clone()));
                let outcome = if ok {
                    AuthOutcome::Success
                } else {
                    AuthOutcome::Failure { close: false }
                };
                s.authenticated(c.mechanism, &c.username, outcome);
            }
            Step::NeedInput => return,
            Step::Close => {
                seen.closed = true;
                return;
            }
            Step::Hook(_) => panic!("no hooks in these tests"),
        }
    }
}

fn start<'a>(p: &'a Policy, role: ListenRole, tls: Option<TlsInfo>) -> Session<'a> {
    let client = Client {
        addr: "192.0.2.7".parse().unwrap(),
        name: "unknown".into(),
    };
    Session::start(p, client, Opening::Greet).with_listener(role, true, tls)
}

fn codes(seen: &Seen) -> Vec<u16> {
    seen.lines
        .iter()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

// "\0alice\0pw" and "\0alice\0px"
const ALICE_OK: &str = "AGFsaWNlAHB3";
const ALICE_BAD: &str = "AGFsaWNlAHB4";

#[test]
fn commands_pipelined_after_starttls_are_discarded_not_executed() {
    let p = policy(&auth_cfg());
    let mut s = start(&p, ListenRole::Smtp, None);
    let mut seen = Seen::default();
    drive(
        &mut s,
        b"EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<alice@local.test>\r\n",
        &mut seen,
    );
    assert_eq!(codes(&seen), vec![220, 250, 220]);
    assert!(seen.lines.iter().any(|l| l == "250-STARTTLS"));
    assert_eq!(seen.starttls, 1);
    // Inside TLS: the state is back to before EHLO and nothing of the injection ran.
    seen.lines.clear();
    drive(&mut s, b"MAIL FROM:<a@b.example>\r\n", &mut seen);
    assert_eq!(codes(&seen), vec![503], "{:?}", seen.lines);
    seen.lines.clear();
    drive(&mut s, b"EHLO c.example\r\n", &mut seen);
    assert!(
        !seen.lines.iter().any(|l| l.contains("STARTTLS")),
        "{:?}",
        seen.lines
    );
    assert!(
        !seen.lines.iter().any(|l| l.contains("AUTH")),
        "not on port 25 by default"
    );
    seen.lines.clear();
    drive(&mut s, b"STARTTLS\r\n", &mut seen);
    assert_eq!(codes(&seen), vec![554]);
}

#[test]
fn starttls_needs_ehlo_no_transaction_and_a_certificate() {
    let p = policy("");
    let mut s = start(&p, ListenRole::Smtp, None);
    let mut seen = Seen::default();
    drive(
        &mut s,
        b"STARTTLS\r\nEHLO c\r\nMAIL FROM:<>\r\nSTARTTLS\r\n",
        &mut seen,
    );
    assert_eq!(codes(&seen), vec![220, 503, 250, 250, 503]);
    let client = Client {
        addr: "192.0.2.7".parse().unwrap(),
        name: "unknown".into(),
    };
    let mut plain = Session::start(&p, client, Opening::Greet);
    let mut seen = Seen::default();
    drive(&mut plain, b"EHLO c\r\nSTARTTLS\r\n", &mut seen);
    assert!(!seen.lines.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(*codes(&seen).last().unwrap(), 502);
}

#[test]
fn submission_requires_tls_for_auth_and_auth_for_mail() {
    let p = policy(&auth_cfg());
    let mut s = start(&p, ListenRole::Submission, None);
    let mut seen = Seen::default();
    drive(
        &mut s,
        format!("EHLO c\r\nAUTH PLAIN {ALICE_OK}\r\nMAIL FROM:<alice@local.test>\r\n").as_bytes(),
        &mut seen,
    );
    assert_eq!(codes(&seen), vec![220, 250, 538, 530]);
    assert!(seen.lines.iter().any(|l| l.starts_with("538 5.7.11 ")));
    assert!(seen
        .lines
        .iter()
        .any(|l| l == "530 5.7.0 Authentication required"));
    assert!(
        !seen.lines.iter().any(|l| l.contains("AUTH")),
        "no AUTH before TLS"
    );
    assert!(seen.auths.is_empty());
}

#[test]
fn auth_plain_then_relay_with_an_owned_sender_only() {
    let p = policy(&auth_cfg());
    let mut s = start(&p, ListenRole::Submissions, Some(tls13()));
    let mut seen = Seen::default();
    drive(
        &mut s,
        format!(
            "EHLO c\r\nAUTH PLAIN {ALICE_OK}\r\nMAIL FROM:<bob@local.test>\r\n\
             MAIL FROM:<alice@local.test>\r\nRCPT TO:<someone@far.example>\r\nDATA\r\n\
             Subject: x\r\n\r\nhi\r\n.\r\nAUTH PLAIN {ALICE_OK}\r\n"
        )
        .as_bytes(),
        &mut seen,
    );
    assert_eq!(
        codes(&seen),
        vec![220, 250, 235, 553, 250, 250, 354, 250, 503]
    );
    assert!(seen.lines.iter().any(|l| l == "250-AUTH PLAIN LOGIN"));
    assert!(seen.lines.iter().any(
        |l| l == "553 5.7.1 <bob@local.test>: Sender address rejected: not owned by user alice"
    ));
    let job = &seen.jobs[0];
    let msg = String::from_utf8(job.message.clone()).unwrap();
    assert!(
        msg.contains("(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\tby mx.test (Sloop) with ESMTPSA id"),
        "{msg}"
    );
    assert_eq!(
        job.envelope.client.as_deref(),
        Some("unknown[192.0.2.7], sasl_method=PLAIN, sasl_username=alice")
    );
}

#[test]
fn auth_login_exchange_failure_cancel_and_garbage() {
    let p = policy(&auth_cfg());
    let mut s = start(&p, ListenRole::Submissions, Some(tls13()));
    let mut seen = Seen::default();
    // LOGIN: alice / px (wrong), then cancelled, then garbage, then PLAIN in two steps.
    drive(
        &mut s,
        b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\ncHg=\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!\r\nAUTH CRAM-MD5\r\nAUTH PLAIN\r\n",
        &mut seen,
    );
    assert_eq!(
        codes(&seen),
        vec![220, 250, 334, 334, 535, 334, 501, 501, 504, 334]
    );
    assert!(seen.lines.contains(&"334 VXNlcm5hbWU6".to_string()));
    assert!(seen
        .lines
        .contains(&"535 5.7.8 Error: authentication failed".to_string()));
    assert!(seen.lines.contains(&"334 ".to_string()));
    seen.lines.clear();
    drive(&mut s, format!("{ALICE_BAD}\r\n").as_bytes(), &mut seen);
    assert_eq!(codes(&seen), vec![535]);
    assert_eq!(seen.auths.len(), 2);
}

#[test]
fn too_many_failures_close_the_session() {
    let p = policy(&auth_cfg());
    let mut s = start(&p, ListenRole::Submissions, Some(tls13()));
    let mut seen = Seen::default();
    drive(&mut s, b"EHLO c\r\n", &mut seen);
    seen.lines.clear();
    s.input(format!("AUTH PLAIN {ALICE_BAD}\r\n").as_bytes());
    loop {
        match s.step() {
            Step::Authenticate(c) => s.authenticated(
                c.mechanism,
                &c.username,
                AuthOutcome::Failure { close: true },
            ),
            Step::Reply(r) => seen.lines.push(String::from_utf8(r.to_wire()).unwrap()),
            Step::Close => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(seen.lines[0].starts_with("535 5.7.8"), "{:?}", seen.lines);
    assert!(seen.lines[1].starts_with("421 4.7.0 mx.test Error: too many authentication failures"));
}

#[test]
fn auth_is_not_offered_without_a_backend() {
    let p = policy("");
    let mut s = start(&p, ListenRole::Smtp, Some(tls13()));
    let mut seen = Seen::default();
    drive(
        &mut s,
        format!("EHLO c\r\nAUTH PLAIN {ALICE_OK}\r\n").as_bytes(),
        &mut seen,
    );
    assert_eq!(codes(&seen), vec![220, 250, 502]);
}

#[test]
fn a_long_auth_initial_response_fits_but_other_long_lines_do_not() {
    let p = policy(&auth_cfg());
    let mut s = start(&p, ListenRole::Submissions, Some(tls13()));
    let mut seen = Seen::default();
    let long = "A".repeat(1000);
    drive(
        &mut s,
        format!("EHLO c\r\nAUTH PLAIN {long}\r\nNOOP {long}\r\n").as_bytes(),
        &mut seen,
    );
    // The AUTH line is read whole (and is not valid PLAIN); the NOOP line is too long.
    assert_eq!(codes(&seen), vec![220, 250, 501, 500], "{:?}", seen.lines);
}
