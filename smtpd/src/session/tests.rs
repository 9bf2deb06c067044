//! Dialogue tests of the session state machine: scripts of client input and the
//! replies expected, with no sockets (STYLE.md point 11), and the G7 property test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::reply::tests::assert_wire;
use sloop_common::aliases::Aliases;
use sloop_common::Config;
use std::path::Path;

pub(crate) fn policy(extra: &str) -> Policy {
    let text = format!(
        "[server]\nhostname = \"mx.test\"\n[domains]\nlocal = [\"local.test\"]\n\
         [local]\nmailboxes = [\"alice@local.test\", \"bob@local.test\"]\n\
         [relay]\nnetworks = [\"10.0.0.0/8\"]\n{extra}"
    );
    let cfg = Config::parse(Path::new("/nonexistent/sloop.toml"), &text).unwrap();
    Policy::new(cfg, Aliases::empty())
}

const UNTRUSTED: &str = "192.0.2.7";
const TRUSTED: &str = "10.1.2.3";

fn session<'a>(p: &'a Policy, ip: &str) -> Session<'a> {
    let client = Client {
        addr: ip.parse().unwrap(),
        name: "unknown".into(),
    };
    Session::start(p, client, Opening::Greet)
}

/// Drives the session over `input`, answering queue jobs with `outcome`; returns the
/// reply codes, the jobs and whether it closed.
fn drive(
    s: &mut Session<'_>,
    input: &[u8],
    outcome: &QueueOutcome,
) -> (Vec<u16>, Vec<QueueJob>, bool) {
    s.input(input);
    let (mut codes, mut jobs) = (Vec::new(), Vec::new());
    loop {
        match s.step() {
            Step::Reply(r) => {
                assert_wire(&r.to_wire(), r.enhanced.is_some());
                codes.push(r.code);
            }
            Step::Queue(job) => {
                let id = job.id.clone();
                jobs.push(job);
                s.queued(&id, outcome.clone());
            }
            Step::NeedInput => return (codes, jobs, false),
            Step::Close => return (codes, jobs, true),
            Step::StartTls | Step::Authenticate(_) => panic!("no TLS/AUTH in these tests"),
            Step::Hook(_) => panic!("no hooks in these tests"),
        }
    }
}

fn codes(p: &Policy, ip: &str, input: &str) -> Vec<u16> {
    let mut s = session(p, ip);
    drive(&mut s, input.as_bytes(), &QueueOutcome::Committed).0
}

#[test]
fn plain_transaction_is_queued_byte_exact() {
    let p = policy("");
    let mut s = session(&p, UNTRUSTED);
    let input = b"EHLO c.example\r\nMAIL FROM:<a@b.example> BODY=8BITMIME\r\n\
                  RCPT TO:<alice@local.test> NOTIFY=FAILURE ORCPT=rfc822;alice@local.test\r\n\
                  DATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";
    let (c, jobs, closed) = drive(&mut s, input, &QueueOutcome::Committed);
    assert_eq!(c, vec![220, 250, 250, 250, 354, 250, 221]);
    assert!(closed);
    let job = &jobs[0];
    let msg = String::from_utf8(job.message.clone()).unwrap();
    let (received, rest) = msg.split_once("\r\nSubject").unwrap();
    assert!(received.starts_with("Received: from c.example (unknown [192.0.2.7])"));
    assert!(received.contains(&format!("with ESMTP id {}", job.id)));
    assert_eq!(rest, ": hi\r\n\r\n.dot\r\nbody\r\n");
    assert_eq!(job.envelope.sender, "a@b.example");
    assert_eq!(job.envelope.body.as_deref(), Some("8BITMIME"));
    let r = &job.envelope.recipients[0];
    assert_eq!(r.address, "alice@local.test");
    assert_eq!(r.notify.as_deref(), Some("FAILURE"));
    assert_eq!(r.orcpt.as_deref(), Some("rfc822;alice@local.test"));
    assert_eq!(
        s.disconnect_line(),
        "disconnect from unknown[192.0.2.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    );
}

#[test]
fn greeting_is_the_configured_banner() {
    let p = policy("");
    let mut s = session(&p, UNTRUSTED);
    match s.step() {
        Step::Reply(r) => assert_eq!(r.to_wire(), b"220 mx.test ESMTP Sloop\r\n"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sequence_errors() {
    let p = policy("");
    assert_eq!(codes(&p, UNTRUSTED, "MAIL FROM:<a@b>\r\n"), vec![220, 503]);
    assert_eq!(
        codes(&p, UNTRUSTED, "HELO x\r\nRCPT TO:<alice@local.test>\r\n"),
        vec![220, 250, 503]
    );
    assert_eq!(
        codes(&p, UNTRUSTED, "HELO x\r\nDATA\r\n"),
        vec![220, 250, 503]
    );
    assert_eq!(
        codes(
            &p,
            UNTRUSTED,
            "HELO x\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\nDATA\r\n"
        ),
        vec![220, 250, 250, 503, 554]
    );
    assert_eq!(
        codes(&p, UNTRUSTED, "FOO\r\nvrfy x\r\nhelp\r\nnoop\r\n"),
        vec![220, 500, 252, 214, 250]
    );
}

#[test]
fn recipients_local_unknown_and_relay() {
    let p = policy("");
    let pre = "EHLO x\r\nMAIL FROM:<s@x.example>\r\n";
    let run = |ip: &str, rcpt: &str| codes(&p, ip, &format!("{pre}RCPT TO:<{rcpt}>\r\n"))[3];
    assert_eq!(run(UNTRUSTED, "Alice@LOCAL.test"), 250);
    assert_eq!(run(UNTRUSTED, "carol@local.test"), 550);
    assert_eq!(run(UNTRUSTED, "x@remote.example"), 554);
    assert_eq!(run(TRUSTED, "x@remote.example"), 250);
    assert_eq!(run(UNTRUSTED, "postmaster"), 550);
    for trick in [
        "x%remote.example@local.test",
        "remote.example!x@local.test",
        "\"x@remote.example\"@local.test",
        "@local.test:x@remote.example",
        "x@[192.0.2.1]",
    ] {
        assert_eq!(run(UNTRUSTED, trick), 554, "{trick}");
        assert_eq!(run(TRUSTED, trick), 250, "{trick}");
    }
}

#[test]
fn unusable_aliases_give_temporary_failures_for_local_recipients() {
    let p = policy("");
    let p = Policy::without_aliases(
        p.cfg,
        sloop_common::aliases::AliasError::Invalid(Vec::new()),
    );
    let pre = "EHLO x\r\nMAIL FROM:<s@x.example>\r\n";
    let c = codes(
        &p,
        TRUSTED,
        &format!("{pre}RCPT TO:<alice@local.test>\r\nRCPT TO:<x@remote.example>\r\n"),
    );
    assert_eq!(c, vec![220, 250, 250, 451, 250]);
}

#[test]
fn trusted_trick_is_stored_resolved() {
    let p = policy("");
    let mut s = session(&p, TRUSTED);
    let input =
        b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<x%remote.example@local.test>\r\nDATA\r\n\r\n.\r\n";
    let (_, jobs, _) = drive(&mut s, input, &QueueOutcome::Committed);
    assert_eq!(jobs[0].envelope.recipients[0].address, "x@remote.example");
}

#[test]
fn too_many_recipients_and_errors() {
    let p = policy("[smtpd]\nmax_recipients = 2\nmax_errors = 3\n");
    let mut input = String::from("EHLO x\r\nMAIL FROM:<>\r\n");
    for _ in 0..5 {
        input.push_str("RCPT TO:<alice@local.test>\r\n");
    }
    assert_eq!(
        codes(&p, UNTRUSTED, &input),
        vec![220, 250, 250, 250, 250, 452, 452, 452]
    );
    let c = codes(&p, UNTRUSTED, "FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(c, vec![220, 500, 500, 500, 421]);
}

/// Regression: `MAIL FROM:<a>` ended by a bare LF got 250, although a bare LF in
/// DATA is refused; a line end we accept and the next hop does not is how commands
/// are smuggled. Refused with `500 5.5.2` unless `smtpd.bare_newline = "normalize"`.
#[test]
fn bare_lf_does_not_end_a_command() {
    let p = policy("");
    let mut s = session(&p, UNTRUSTED);
    let (c, _, _) = drive(
        &mut s,
        b"EHLO x\r\nMAIL FROM:<a@b.example>\nRCPT TO:<alice@local.test>\r\n",
        &QueueOutcome::Committed,
    );
    assert_eq!(c, vec![220, 250, 500, 503]);
    let p = policy("[smtpd]\nbare_newline = \"normalize\"\n");
    let c = codes(&p, UNTRUSTED, "EHLO x\nMAIL FROM:<a@b.example>\n");
    assert_eq!(c, vec![220, 250, 250]);
}

/// Regression: NOOP and RSET were free, so a client could keep a worker busy forever.
/// Past `smtpd.junk_command_limit` each counts as an error (Postfix's junk commands);
/// an accepted message resets the count.
#[test]
fn a_flood_of_junk_commands_ends_the_session() {
    let p = policy("");
    let flood = "NOOP\r\nRSET\r\n".repeat(100);
    let mut s = session(&p, UNTRUSTED);
    let (c, _, closed) = drive(&mut s, flood.as_bytes(), &QueueOutcome::Committed);
    // 100 free, then 10 more counted as errors (smtpd.max_errors = 10), then 421.
    assert_eq!(c.len(), 1 + 110 + 1, "{c:?}");
    assert!(c[1..111].iter().all(|&x| x == 250));
    assert_eq!(c.last(), Some(&421));
    assert!(closed);
    let message = "MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nx\r\n.\r\n";
    let input = format!(
        "EHLO x\r\n{}{message}{}QUIT\r\n",
        "NOOP\r\n".repeat(100),
        "NOOP\r\n".repeat(100)
    );
    let c = codes(&p, UNTRUSTED, &input);
    assert!(!c.contains(&421), "{c:?}");
    assert_eq!(c.last(), Some(&221));
}

/// Pipelined commands cost work linear in the input: one 64 KiB read of RCPTs moves
/// and scans each octet a bounded number of times (octets counted, not time).
#[test]
fn pipelined_input_costs_linear_work() {
    let p = policy("[smtpd]\nmax_recipients = 100000\n");
    let mut s = session(&p, UNTRUSTED);
    let mut input = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n".to_vec();
    while input.len() < 64 * 1024 - 40 {
        input.extend_from_slice(b"RCPT TO:<alice@local.test>\r\n");
    }
    let (c, _, _) = drive(&mut s, &input, &QueueOutcome::Committed);
    assert!(c[3..].iter().all(|&x| x == 250));
    assert!(
        s.input.work() <= 2 * input.len() as u64,
        "{} octets of work for {}",
        s.input.work(),
        input.len()
    );
}

#[test]
fn pipelined_batch_answers_in_order() {
    let p = policy("");
    let mut input = String::from("EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    for i in 0..50u32 {
        input.push_str(&format!(
            "RCPT TO:<{}@local.test>\r\n",
            if i.is_multiple_of(2) { "alice" } else { "bob" }
        ));
    }
    input.push_str("DATA\r\nx\r\n.\r\nRSET\r\nQUIT\r\n");
    let mut s = session(&p, UNTRUSTED);
    let (c, jobs, closed) = drive(&mut s, input.as_bytes(), &QueueOutcome::Committed);
    assert_eq!(c.len(), 1 + 2 + 50 + 2 + 2);
    assert!(c[3..53].iter().all(|&x| x == 250));
    assert_eq!(jobs[0].envelope.recipients.len(), 50);
    assert!(closed);
}

#[test]
fn smuggling_does_not_start_a_second_message() {
    let p = policy("");
    let mut s = session(&p, UNTRUSTED);
    let input = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n\
        Subject: 1\r\n\r\nx\n.\r\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n\
        Subject: 2\r\n\r\n.\r\n";
    let (c, jobs, _) = drive(&mut s, input, &QueueOutcome::Committed);
    assert_eq!(c, vec![220, 250, 250, 250, 354, 554]);
    assert!(jobs.is_empty());
}

#[test]
fn queue_outcomes_map_to_replies() {
    let p = policy("");
    let input = b"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n.\r\nNOOP\r\n";
    for (outcome, code) in [
        (QueueOutcome::Permanent("exit 31".into()), 554),
        (QueueOutcome::Temporary("killed".into()), 451),
    ] {
        let mut s = session(&p, UNTRUSTED);
        let (c, _, _) = drive(&mut s, input, &outcome);
        assert_eq!(c, vec![220, 250, 250, 250, 354, code, 250]);
    }
}

#[test]
fn bdat_chunks() {
    let p = policy("");
    let mut s = session(&p, UNTRUSTED);
    let input = b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@local.test>\r\n\
        BDAT 5\r\nSubjeBDAT 9 LAST\r\nct: x\r\n\r\nNOOP\r\n";
    let (c, jobs, _) = drive(&mut s, input, &QueueOutcome::Committed);
    assert_eq!(c, vec![220, 250, 250, 250, 250, 250, 250]);
    assert!(jobs[0].message.ends_with(b"\r\nSubject: x\r\n\r\n"));
    // BDAT without a transaction still consumes its octets.
    let c = codes(&p, UNTRUSTED, "EHLO x\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(c, vec![220, 250, 503, 250]);
    // DATA between chunks is a sequence error.
    let c = codes(
        &p,
        UNTRUSTED,
        "EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<bob@local.test>\r\nBDAT 1\r\nxDATA\r\nRSET\r\n",
    );
    assert_eq!(c, vec![220, 250, 250, 250, 250, 503, 250]);
}

/// Sends `chunks` as BDAT chunks (the last one LAST) in one transaction; returns the
/// final reply's code and the committed message.
fn bdat_message(p: &Policy, chunks: &[&[u8]]) -> (u16, Option<Vec<u8>>) {
    let mut s = session(p, UNTRUSTED);
    let mut input = b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@local.test>\r\n".to_vec();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        input.extend_from_slice(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        input.extend_from_slice(chunk);
    }
    let (c, jobs, _) = drive(&mut s, &input, &QueueOutcome::Committed);
    assert_eq!(c.len(), 4 + chunks.len(), "{c:?}");
    let body = jobs
        .into_iter()
        .next()
        .map(|j| j.message[j.trace_len..].to_vec());
    (*c.last().unwrap(), body)
}

/// Regression: BDAT skipped the bare CR/LF, NUL and line-length checks DATA applies.
/// They hold across chunk boundaries: a CRLF split over two chunks is one line end,
/// a line split over chunks is measured whole.
#[test]
fn bdat_gets_the_checks_data_gets() {
    let p = policy("");
    assert_eq!(bdat_message(&p, &[b"a\nb\r\n"]).0, 554);
    assert_eq!(bdat_message(&p, &[b"a\rb\r\n"]).0, 554);
    assert_eq!(bdat_message(&p, &[b"a\0b\r\n"]).0, 554);
    assert_eq!(bdat_message(&p, &[b"a\r\n", b"b\r"]).0, 554);
    let (code, body) = bdat_message(&p, &[b"Subject: x\r", b"\n\r\nbody\r\n"]);
    assert_eq!(code, 250);
    assert_eq!(body.unwrap(), b"Subject: x\r\n\r\nbody\r\n");
    let half = vec![b'x'; 500];
    assert_eq!(bdat_message(&p, &[&half, &half, b"\r\n"]).0, 554);
    assert_eq!(bdat_message(&p, &[&half, &half[2..], b"\r\n"]).0, 250);
    let p = policy("[smtpd]\nbare_newline = \"normalize\"\n");
    let (code, body) = bdat_message(&p, &[b"a\nb\r", b"c\r\n"]);
    assert_eq!(code, 250);
    assert_eq!(body.unwrap(), b"a\r\nb\r\nc\r\n");
}

#[test]
fn smtputf8_and_size() {
    let p = policy("[smtpd]\nmax_message_size = \"2K\"\n");
    let pre = "EHLO x\r\n";
    assert_eq!(
        codes(&p, UNTRUSTED, &format!("{pre}MAIL FROM:<δ@b.example>\r\n"))[2],
        553
    );
    assert_eq!(
        codes(
            &p,
            UNTRUSTED,
            &format!("{pre}MAIL FROM:<δ@b.example> SMTPUTF8\r\n")
        )[2],
        250
    );
    assert_eq!(
        codes(
            &p,
            UNTRUSTED,
            &format!("{pre}MAIL FROM:<a@b.example> SIZE=4096\r\n")
        )[2],
        552
    );
    let big = "x".repeat(900);
    let body = format!("{big}\r\n{big}\r\n{big}\r\n.\r\n");
    let c = codes(
        &p,
        UNTRUSTED,
        &format!("{pre}MAIL FROM:<>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n{body}NOOP\r\n"),
    );
    assert_eq!(c, vec![220, 250, 250, 250, 354, 552, 250]);
}

#[test]
fn mail_loop_is_refused() {
    let p = policy("[smtpd]\nmax_received_headers = 10\n");
    let hdrs = "Received: x\r\n".repeat(10);
    let input =
        format!("EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n{hdrs}\r\n.\r\n");
    let mut s = session(&p, UNTRUSTED);
    let (c, jobs, _) = drive(&mut s, input.as_bytes(), &QueueOutcome::Committed);
    assert_eq!(c.last(), Some(&554));
    assert!(jobs.is_empty());
}

#[test]
fn refused_session_only_serves_quit() {
    let p = policy("");
    let client = Client {
        addr: UNTRUSTED.parse().unwrap(),
        name: "unknown".into(),
    };
    let mut s = Session::start(
        &p,
        client,
        Opening::Refuse(Reply::new(554, (5, 7, 1), "go away")),
    );
    let (c, _, closed) = drive(
        &mut s,
        b"EHLO x\r\nMAIL FROM:<>\r\nQUIT\r\n",
        &QueueOutcome::Committed,
    );
    assert_eq!(c, vec![554, 503, 503, 221]);
    assert!(closed);
}

#[test]
fn connect_replies_are_remapped_to_legal_codes() {
    let p = policy("");
    let client = || Client {
        addr: UNTRUSTED.parse().unwrap(),
        name: "unknown".into(),
    };
    let mut s = Session::start(
        &p,
        client(),
        Opening::Refuse(Reply::new(550, (5, 7, 1), "no")),
    );
    assert_eq!(drive(&mut s, b"", &QueueOutcome::Committed).0, vec![554]);
    let mut s = Session::start(
        &p,
        client(),
        Opening::Close(Reply::new(450, (4, 7, 1), "later")),
    );
    let (c, _, closed) = drive(&mut s, b"EHLO x\r\n", &QueueOutcome::Committed);
    assert_eq!((c, closed), (vec![421], true));
}

#[test]
fn timeout_gives_421() {
    let p = policy("");
    let mut s = session(&p, UNTRUSTED);
    drive(&mut s, b"", &QueueOutcome::Committed);
    s.timeout();
    match s.step() {
        Step::Reply(r) => assert_eq!(&r.to_wire()[..9], b"421 4.4.2"),
        other => panic!("{other:?}"),
    }
}

/// A small deterministic generator (xorshift) so the property test needs no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Checks one reply's wire form against docs/invariants.md G7 on its own terms, not against the
/// reply's own fields: every line matches `^[2-5]\d\d[ -]`, all lines share the code,
/// only the last has a space after it, each ends in CRLF with no other CR, LF or NUL,
/// and is at most 512 octets; an enhanced code `c.d.d` whose class is the code's
/// first digit (2 for a 354) follows, unless `bare` (the greeting and the EHLO/HELO reply, which
/// RFC 2034 §3 leaves without one).
fn check_g7(wire: &[u8], bare: bool) -> Result<(), String> {
    let text = std::str::from_utf8(wire).map_err(|e| format!("not UTF-8: {e}"))?;
    let body = text.strip_suffix("\r\n").ok_or("no final CRLF")?;
    let lines: Vec<&str> = body.split("\r\n").collect();
    for (i, line) in lines.iter().enumerate() {
        let b = line.as_bytes();
        if b.len() + 2 > 512 {
            return Err(format!("line of {} octets", b.len() + 2));
        }
        if b.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0) {
            return Err(format!("bare CR, LF or NUL in {line:?}"));
        }
        let ok_code = b.len() >= 4
            && (b'2'..=b'5').contains(&b[0])
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
            && matches!(b[3], b' ' | b'-');
        if !ok_code || b[..3] != lines[0].as_bytes()[..3] {
            return Err(format!("bad or changing code in {line:?}"));
        }
        let last = i + 1 == lines.len();
        if (b[3] == b' ') != last {
            return Err(format!("wrong separator in {line:?}"));
        }
        if bare {
            continue;
        }
        let enhanced = line[4..].split(' ').next().unwrap_or("");
        let parts: Vec<&str> = enhanced.split('.').collect();
        // RFC 3463 has no class 3: a 354 carries a success code (2.0.0).
        let class = if b[0] == b'3' { b'2' } else { b[0] };
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|c| c.is_ascii_digit())
        };
        if parts.len() != 3
            || parts[0].as_bytes() != [class]
            || !digits(parts[1], 3)
            || !digits(parts[2], 3)
        {
            return Err(format!(
                "no enhanced status code of class {} in {line:?}",
                class as char
            ));
        }
    }
    Ok(())
}

/// G7 property: for any input bytes, every reply is well-formed and has an enhanced
/// status code (except the greeting and EHLO/HELO, RFC 2034 §3), for input fed in
/// random pieces, ending in EOF. Each reply's wire form is checked by [`check_g7`];
/// the only replies allowed without an enhanced code are the session's first (the
/// greeting) and a 250 naming our host first (the EHLO/HELO reply), told apart by
/// what they say, not by the reply's own `enhanced` field.
#[test]
fn property_any_input_gives_valid_replies() {
    let p = policy("[smtpd]\nmax_errors = 1000\n");
    let pieces: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"HELO \xff\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<\"\r\n",
        b"RCPT TO:<alice@local.test>\r\n",
        b"RCPT TO:<a%b@local.test> NOTIFY=X\r\n",
        b"DATA\r\n",
        b"BDAT 3\r\n",
        b"BDAT 2 LAST\r\n",
        b".\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b".",
        b"RSET\r\n",
        b"QUIT\r\n",
        b"NOOP\r\n",
        b"x",
        b"\xc3\xa9",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let mut s = session(&p, UNTRUSTED);
        let mut input = Vec::new();
        for _ in 0..(rng.next() % 40) {
            if rng.next().is_multiple_of(4) {
                let n = (rng.next() % 700) as usize;
                input.extend((0..n).map(|_| rng.next() as u8));
            } else {
                input.extend_from_slice(pieces[(rng.next() as usize) % pieces.len()]);
            }
        }
        let mut first = true;
        let mut pos = 0;
        let mut closed = false;
        while pos < input.len() && !closed {
            let n = 1 + (rng.next() % 64) as usize;
            let end = (pos + n).min(input.len());
            closed = feed_checked(&mut s, &input[pos..end], &mut first);
            pos = end;
        }
        s.eof();
        feed_checked(&mut s, b"", &mut first);
    }
}

/// Feeds `input` and checks every reply with [`check_g7`]; true when the session closed.
fn feed_checked(s: &mut Session<'_>, input: &[u8], first: &mut bool) -> bool {
    s.input(input);
    loop {
        match s.step() {
            Step::Reply(r) => {
                let wire = r.to_wire();
                let bare = std::mem::take(first)
                    || wire.starts_with(b"250-mx.test\r\n")
                    || wire == b"250 mx.test\r\n";
                if let Err(e) = check_g7(&wire, bare) {
                    panic!("G7 violated: {e}: {:?}", String::from_utf8_lossy(&wire));
                }
            }
            Step::Queue(job) => {
                let id = job.id.clone();
                s.queued(&id, QueueOutcome::Committed);
            }
            Step::NeedInput => return false,
            Step::Close => return true,
            Step::StartTls | Step::Authenticate(_) => panic!("no TLS/AUTH in these tests"),
            Step::Hook(_) => panic!("no hooks in these tests"),
        }
    }
}

#[test]
fn the_g7_checker_refuses_what_g7_forbids() {
    assert!(check_g7(b"250 2.0.0 Ok\r\n", false).is_ok());
    assert!(check_g7(b"250-mx.test\r\n250 SIZE 1\r\n", true).is_ok());
    for bad in [
        &b"250 Ok\r\n"[..],
        b"250 4.0.0 Ok\r\n",
        b"199 1.0.0 x\r\n",
        b"250 2.0.0 a\rb\r\n",
        b"250 2.0.0 a\0b\r\n",
        b"250 2.0.0 a",
        b"250-2.0.0 a\r\n251 2.0.0 b\r\n",
        b"250 2.0.0 a\r\n250 2.0.0 b\r\n",
    ] {
        assert!(check_g7(bad, false).is_err(), "{bad:?}");
    }
    let mut long = b"250 2.0.0 ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 501));
    long.extend_from_slice(b"\r\n");
    assert!(check_g7(&long, false).is_err());
}
