//! The one failure policy of the filter hooks (docs/filters.md, "Failure policy"), row
//! by row, end to end: a real `sloopd` on loopback with `[[policy]]` and `[[milter]]`
//! hooks pointing at scripted fake services (`fake_hook`) that are missing, refuse,
//! never answer, answer garbage or an unknown action, answer a code illegal for the
//! phase, answer text with control characters, close mid-reply, negotiate a protocol
//! the MTA does not speak, or crash at a given stage. Each test asserts the client's
//! exact reply, that it came within the budget (an upper bound with the load margin,
//! never a measurement), and the log line as the syslog daemon receives it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_hook;

use fake_hook::{
    cmd, refused_socket, reply_code, sock_path, within, Answer, Endpoint, FakeMilter, FakePolicy,
    MilterScript, Mta,
};
use sloop_tests::{Smtp, TestDir};
use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// `on_error = "tempfail"` in a message phase.
const TEMPFAIL: &str = "451 4.3.5 Server configuration problem";
/// `on_error = "reject"` in a message phase.
const REJECT: &str = "550 5.3.5 Server configuration problem";
/// `on_error = "reject"` at connect.
const REJECT_CONNECT: &str = "554 5.3.5 Server configuration problem";
/// `on_error = "shutdown"` anywhere, or `tempfail` at connect and helo.
const SHUTDOWN: &str = "421 4.3.5 Server configuration problem";
/// The default greeting of the test config.
const GREETING: &str = "220 sloop.test ESMTP Sloop";

/// A `[[policy]]` table.
fn policy(name: &str, socket: &str, stage: &str, extra: &str) -> String {
    format!("[[policy]]\nname = \"{name}\"\nsocket = \"{socket}\"\nstage = \"{stage}\"\n{extra}\n")
}

/// A `[[milter]]` table.
fn milter(name: &str, socket: &str, extra: &str) -> String {
    format!("[[milter]]\nname = \"{name}\"\nsocket = \"{socket}\"\n{extra}\n")
}

/// The reply's one line (panics on a multi-line reply or a closed connection).
fn line(c: &mut Smtp, mta: &Mta) -> String {
    let r = c.reply();
    assert_eq!(
        r.len(),
        1,
        "expected one reply line, got {r:?}\n{}",
        mta.all_logs()
    );
    r[0].clone()
}

/// Sends `command` and asserts the exact one-line reply.
fn expect(c: &mut Smtp, command: &str, want: &str, mta: &Mta) {
    c.send(command);
    let got = c.reply();
    assert_eq!(
        got,
        vec![want.to_string()],
        "after {command:?}\n{}",
        mta.all_logs()
    );
}

/// Sends `command`, asserts the reply starts with `code`.
fn ok(c: &mut Smtp, command: &str, code: u16, mta: &Mta) {
    c.send(command);
    let r = c.reply();
    let got = r.last().and_then(|l| l.get(..3)).unwrap_or("");
    assert_eq!(
        got,
        code.to_string(),
        "after {command:?}: {r:?}\n{}",
        mta.all_logs()
    );
}

/// Reads the greeting and asserts it exactly, within `budget`.
fn greeting(c: &mut Smtp, start: Instant, want: &str, budget: Duration, mta: &Mta) {
    let got = c.reply();
    within(start.elapsed(), budget, "greeting");
    assert_eq!(got, vec![want.to_string()], "{}", mta.all_logs());
}

/// Asserts the server closed the connection.
fn closed(c: &mut Smtp, mta: &Mta) {
    assert!(c.closed(), "connection still open\n{}", mta.all_logs());
}

/// EHLO, MAIL, one RCPT, all accepted.
fn envelope(c: &mut Smtp, mta: &Mta) {
    ok(c, "EHLO client.test", 250, mta);
    ok(c, "MAIL FROM:<s@b.example>", 250, mta);
    ok(c, "RCPT TO:<a@localhost.test>", 250, mta);
}

/// DATA and a short message; returns the reply to the final dot.
fn message(c: &mut Smtp, mta: &Mta) -> String {
    ok(c, "DATA", 354, mta);
    c.send_raw(b"Subject: failures\r\nX-Test: 1\r\n\r\nbody line\r\n.\r\n");
    line(c, mta)
}

/// The events (not abort or quit) a filter was sent after the first `at`; panics when
/// `at` never came (the misbehaviour was not reached).
fn events_after(seen: &str, at: u8) -> String {
    let i = seen
        .find(at as char)
        .unwrap_or_else(|| panic!("{} never sent: {seen}", at as char));
    seen[i + 1..]
        .chars()
        .filter(|c| !matches!(*c, 'A' | 'Q' | 'K'))
        .collect()
}

fn start(name: &str, overrides: &[(&str, &str)], hooks: &str) -> Mta {
    Mta::start(TestDir::new(name), overrides, hooks)
}

// ---------------------------------------------------------------------------------
// Socket missing / refused
// ---------------------------------------------------------------------------------

#[test]
fn policy_socket_missing_at_rcpt_tempfails() {
    let dir = TestDir::new("ff-missing");
    let path = sock_path(&dir.path, "nosuch.sock");
    let socket = format!("unix:{}", path.display());
    let mta = Mta::start(dir, &[], &policy("nosock", &socket, "rcpt", ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    let t = Instant::now();
    expect(&mut c, "RCPT TO:<a@localhost.test>", TEMPFAIL, &mta);
    within(t.elapsed(), Duration::from_secs(5), "RCPT");
    let l = mta.expect_log(&[&format!(
        "warning: policy nosock: connect {socket}: No such file or directory; on_error=tempfail"
    )]);
    assert!(fake_hook::queue_id(&l).is_some(), "no queue ID: {l}");
    mta.expect_log(&[
        "reject: RCPT from unknown[127.0.0.1]: 451 4.3.5 Server configuration problem; \
         from=<s@b.example> to=<a@localhost.test> proto=ESMTP helo=<client.test>",
    ]);
    // The session goes on.
    ok(&mut c, "RSET", 250, &mta);
    ok(&mut c, "QUIT", 221, &mta);
}

#[test]
fn policy_refused_at_connect_shuts_down_within_connect_timeout() {
    let socket = refused_socket();
    let mta = start(
        "ff-refused-connect",
        &[
            ("smtpd.connect_timeout", "\"3s\""),
            ("smtpd.dns_timeout", "\"1s\""),
        ],
        &policy("refused", &socket, "connect", ""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, SHUTDOWN, Duration::from_secs(3), &mta);
    closed(&mut c, &mta);
    mta.expect_log(&[&format!(
        "warning: policy refused: connect {socket}: Connection refused; on_error=shutdown"
    )]);
}

#[test]
fn milter_socket_missing_tempfails_the_session_at_connect() {
    let dir = TestDir::new("ff-milter-missing");
    let path = sock_path(&dir.path, "nosuch.milter");
    let socket = format!("unix:{}", path.display());
    let mta = Mta::start(dir, &[], &milter("gone", &socket, ""));
    let (mut c, t) = mta.connect();
    // The milter is opened at connect; `tempfail` there is 421 and close.
    greeting(&mut c, t, SHUTDOWN, Duration::from_secs(10), &mta);
    closed(&mut c, &mta);
    mta.expect_log(&[&format!(
        "warning: milter gone: connect {socket}: No such file or directory; on_error=tempfail"
    )]);
}

#[test]
fn milter_refused_with_on_error_accept_lets_mail_through() {
    let socket = refused_socket();
    let mta = start(
        "ff-milter-refused",
        &[],
        &milter("refused", &socket, "on_error = \"accept\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    envelope(&mut c, &mta);
    let r = message(&mut c, &mta);
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    ok(&mut c, "QUIT", 221, &mta);
    mta.expect_log(&[&format!(
        "warning: milter refused: connect {socket}: Connection refused; on_error=accept"
    )]);
}

#[test]
fn policy_failure_at_helo_defaults_to_shutdown() {
    let socket = refused_socket();
    let mta = start(
        "ff-helo-refused",
        &[],
        &policy("greeter", &socket, "helo", ""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    let t = Instant::now();
    expect(&mut c, "EHLO client.test", SHUTDOWN, &mta);
    within(t.elapsed(), Duration::from_secs(3), "EHLO");
    closed(&mut c, &mta);
    mta.expect_log(&[&format!(
        "warning: policy greeter: connect {socket}: Connection refused; on_error=shutdown"
    )]);
}

// ---------------------------------------------------------------------------------
// Accepts and never answers
// ---------------------------------------------------------------------------------

#[test]
fn policy_silent_times_out_after_each_try() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::Silent]);
    let mta = start(
        "ff-silent",
        &[],
        &policy(
            "silent",
            &fake.socket,
            "rcpt",
            "timeout = \"1s\"\ntries = 2",
        ),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    let t = Instant::now();
    expect(&mut c, "RCPT TO:<a@localhost.test>", TEMPFAIL, &mta);
    let took = t.elapsed();
    // Two tries of 1 s each (Postfix waits 1 s between tries; Sloop's budget allows
    // for it), never the client's own timeout.
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    within(took, Duration::from_secs(3), "RCPT after two silent tries");
    mta.expect_log(&["warning: policy silent: timeout after 1000ms (try 1/2)"]);
    mta.expect_log(&["warning: policy silent: timeout after 1000ms (try 2/2)"]);
    assert_eq!(fake.requests().len(), 2, "{:?}", fake.requests());
    ok(&mut c, "QUIT", 221, &mta);
}

#[test]
fn policy_silent_at_end_of_message_queues_nothing() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::Silent]);
    let mta = start(
        "ff-silent-eom",
        &[],
        &policy(
            "lastword",
            &fake.socket,
            "eom",
            "timeout = \"1s\"\ntries = 1",
        ),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    envelope(&mut c, &mta);
    let t = Instant::now();
    let r = message(&mut c, &mta);
    within(t.elapsed(), Duration::from_secs(1), "end of message");
    assert_eq!(r, TEMPFAIL, "{}", mta.all_logs());
    mta.expect_log(&[
        "warning: policy lastword: timeout after 1000ms (try 1/1); on_error=tempfail",
    ]);
    mta.expect_log(&["reject: END-OF-MESSAGE from unknown[127.0.0.1]: 451 4.3.5 "]);
    assert!(fake.requests()[0].contains("protocol_state=END-OF-MESSAGE\n"));
    // The client may retry: nothing of this message was kept.
    ok(&mut c, "QUIT", 221, &mta);
    for state in ["incoming", "active", "deferred", "hold"] {
        let files = sloop_tests::files_under(&mta.dir.spool().join(state));
        assert!(files.is_empty(), "{state}: {files:?}");
    }
    assert_eq!(mta.log.count("(queued)"), 0, "{}", mta.all_logs());
}

#[test]
fn policy_silent_at_connect_still_greets_within_connect_timeout() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::Silent]);
    // 5 s x 2 tries would be 10 s: the phase deadline (2 s) cuts it.
    let hooks = policy(
        "slowgreet",
        &fake.socket,
        "connect",
        "timeout = \"5s\"\ntries = 2\non_error = \"accept\"",
    );
    let mta = start(
        "ff-silent-connect",
        &[
            ("smtpd.connect_timeout", "\"2s\""),
            ("smtpd.dns_timeout", "\"1s\""),
        ],
        &hooks,
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(2), &mta);
    mta.expect_log(&[
        "warning: policy slowgreet: timeout after ",
        "on_error=accept",
    ]);
    ok(&mut c, "QUIT", 221, &mta);
}

#[test]
fn policy_silent_at_connect_default_is_421_within_connect_timeout() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::Silent]);
    let hooks = policy("slow", &fake.socket, "connect", "timeout = \"5s\"");
    let mta = start(
        "ff-silent-connect-421",
        &[
            ("smtpd.connect_timeout", "\"2s\""),
            ("smtpd.dns_timeout", "\"1s\""),
        ],
        &hooks,
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, SHUTDOWN, Duration::from_secs(2), &mta);
    closed(&mut c, &mta);
    mta.expect_log(&["warning: policy slow: timeout after ", "on_error=shutdown"]);
}

#[test]
fn milter_silent_at_helo_gives_421_after_command_timeout() {
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            silent_at: Some(cmd::HELO),
            ..Default::default()
        },
    );
    let mta = start(
        "ff-milter-silent",
        &[],
        &milter("quiet", &fake.socket, "command_timeout = \"1s\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    let t = Instant::now();
    expect(&mut c, "EHLO client.test", SHUTDOWN, &mta);
    within(t.elapsed(), Duration::from_secs(1), "EHLO");
    closed(&mut c, &mta);
    // The per-event timer, clipped by the phase deadline: it says what was left of it.
    mta.expect_log(&[
        "warning: milter quiet: timeout after ",
        "ms waiting for the reply to HELO; on_error=tempfail",
    ]);
}

#[test]
fn milter_progress_never_extends_the_phase_deadline() {
    // A filter that answers "progress" every 200 ms at end of message keeps its
    // per-event timer alive forever; the end-of-message phase deadline
    // (smtpd.data_timeout) still ends it.
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            progress_at: Some(cmd::EOM),
            ..Default::default()
        },
    );
    let mta = start(
        "ff-milter-progress",
        &[("smtpd.data_timeout", "\"3s\"")],
        &milter("chatty", &fake.socket, "content_timeout = \"1s\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    envelope(&mut c, &mta);
    ok(&mut c, "DATA", 354, &mta);
    let t = Instant::now();
    c.send_raw(b"Subject: progress\r\n\r\nbody\r\n.\r\n");
    let r = line(&mut c, &mta);
    within(t.elapsed(), Duration::from_secs(3), "end of message");
    assert_eq!(r, TEMPFAIL, "{}", mta.all_logs());
    mta.expect_log(&[
        "warning: milter chatty: timeout after ",
        "waiting for the reply to EOM; on_error=tempfail",
    ]);
    ok(&mut c, "QUIT", 221, &mta);
}

// ---------------------------------------------------------------------------------
// Garbage, unknown action
// ---------------------------------------------------------------------------------

#[test]
fn policy_garbage_answers_are_protocol_errors() {
    let mut long = b"action=REJECT ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 5000));
    long.extend_from_slice(b"\n\n");
    let script = vec![
        Answer::Raw(b"result=fine\n\n".to_vec()),
        Answer::Raw(b"action=DU\0NNO\n\n".to_vec()),
        Answer::Raw(long),
        Answer::Raw(b"action=REJECT caf\xe9\n\n".to_vec()),
    ];
    let fake = FakePolicy::start(Endpoint::Tcp, script);
    let mta = start(
        "ff-garbage",
        &[],
        &policy("junk", &fake.socket, "rcpt", "tries = 1"),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    for what in ["no action", "NUL", "over 4 KiB", "not UTF-8"] {
        let t = Instant::now();
        c.send("RCPT TO:<a@localhost.test>");
        let r = c.reply();
        assert_eq!(r, vec![TEMPFAIL.to_string()], "{what}\n{}", mta.all_logs());
        within(t.elapsed(), Duration::from_secs(5), what);
    }
    ok(&mut c, "QUIT", 221, &mta);
    for why in [
        "reply without an action attribute",
        "NUL in the reply",
        "reply longer than 4096 octets",
        "reply is not UTF-8",
    ] {
        mta.expect_log(&[&format!(
            "warning: policy junk: protocol error: {why}; on_error=tempfail"
        )]);
    }
}

#[test]
fn milter_bad_packet_length_is_a_protocol_error_and_drops_it() {
    // A length of 0 (no command byte) and one of 4 GiB at RCPT.
    let fake = FakeMilter::start_each(
        Endpoint::Tcp,
        vec![
            MilterScript {
                raw_at: Some((cmd::RCPT, 0u32.to_be_bytes().to_vec())),
                ..Default::default()
            },
            MilterScript {
                raw_at: Some((cmd::RCPT, b"\xff\xff\xff\xffc".to_vec())),
                ..Default::default()
            },
        ],
    );
    let mta = start("ff-milter-len", &[], &milter("badlen", &fake.socket, ""));
    for session in 0..2 {
        let (mut c, t) = mta.connect();
        greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
        ok(&mut c, "EHLO client.test", 250, &mta);
        ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
        let t = Instant::now();
        expect(&mut c, "RCPT TO:<a@localhost.test>", TEMPFAIL, &mta);
        within(t.elapsed(), Duration::from_secs(30), "RCPT");
        // Dropped: its on_error at every later stage, and it is not asked again.
        ok(&mut c, "RSET", 250, &mta);
        expect(&mut c, "MAIL FROM:<s@b.example>", TEMPFAIL, &mta);
        ok(&mut c, "QUIT", 221, &mta);
        let seen = fake.commands(session);
        assert_eq!(
            events_after(&seen, cmd::RCPT),
            "",
            "session {session}: {seen}"
        );
    }
    assert_eq!(fake.connections(), 2);
    mta.expect_log(&[
        "warning: milter badlen: protocol error: packet of length 0; on_error=tempfail",
    ]);
    mta.expect_log(&[
        "warning: milter badlen: protocol error: packet length 4294967295 exceeds 1048576; on_error=tempfail",
    ]);
}

#[test]
fn policy_unknown_action_is_a_failure() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::action("FROBNICATE")]);
    let mta = start("ff-unknown", &[], &policy("frob", &fake.socket, "mail", ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    let t = Instant::now();
    expect(&mut c, "MAIL FROM:<s@b.example>", TEMPFAIL, &mta);
    within(t.elapsed(), Duration::from_secs(5), "MAIL");
    ok(&mut c, "QUIT", 221, &mta);
    mta.expect_log(&["warning: policy frob: unknown action \"FROBNICATE\""]);
}

// ---------------------------------------------------------------------------------
// Legal action, code illegal for the phase
// ---------------------------------------------------------------------------------

#[test]
fn policy_450_at_connect_is_sent_as_421() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::action("450 4.7.1 Not now")]);
    let mta = start(
        "ff-450-connect",
        &[],
        &policy("early", &fake.socket, "connect", ""),
    );
    let (mut c, t) = mta.connect();
    greeting(
        &mut c,
        t,
        "421 4.7.1 <unknown[127.0.0.1]>: Client host rejected: Not now",
        Duration::from_secs(10),
        &mta,
    );
    closed(&mut c, &mta);
    mta.expect_log(&["notice: hook early: 450 reply at connect sent as 421"]);
}

#[test]
fn policy_550_at_connect_is_sent_as_554() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::action("550 5.7.1 Go away")]);
    let mta = start(
        "ff-550-connect",
        &[],
        &policy("early", &fake.socket, "connect", ""),
    );
    let (mut c, t) = mta.connect();
    greeting(
        &mut c,
        t,
        "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Go away",
        Duration::from_secs(10),
        &mta,
    );
    // RFC 5321 3.1: after a 554 greeting, 503 to everything but QUIT.
    ok(&mut c, "EHLO client.test", 503, &mta);
    ok(&mut c, "QUIT", 221, &mta);
    mta.expect_log(&["notice: hook early: 550 reply at connect sent as 554"]);
}

#[test]
fn milter_y_with_2xx_is_a_failure() {
    // On a unix socket, as OpenDKIM and clamav-milter usually listen.
    let dir = TestDir::new("ff-milter-2xx");
    let fake = FakeMilter::start(
        Endpoint::Unix(sock_path(&dir.path, "milter.sock")),
        MilterScript {
            raw_at: Some((cmd::RCPT, reply_code("250 2.0.0 fine"))),
            ..Default::default()
        },
    );
    let mta = Mta::start(dir, &[], &milter("yes2xx", &fake.socket, ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    expect(&mut c, "RCPT TO:<a@localhost.test>", TEMPFAIL, &mta);
    ok(&mut c, "QUIT", 221, &mta);
    mta.expect_log(&[
        "warning: milter yes2xx: protocol error: reply code 250 is not 4xx or 5xx: \"250 2.0.0 fine\"; on_error=tempfail",
    ]);
}

// ---------------------------------------------------------------------------------
// Reply text with CR/LF/NUL or over-long
// ---------------------------------------------------------------------------------

#[test]
fn policy_reply_text_is_sanitized_and_clamped() {
    // CR, BEL and TAB inside the text (LF ends a policy line and NUL is garbage:
    // see policy_garbage_answers_are_protocol_errors), then 1000 octets of text.
    let mut long = b"action=REJECT ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 1000));
    long.extend_from_slice(b"\n\n");
    let fake = FakePolicy::start(
        Endpoint::Tcp,
        vec![
            Answer::Raw(b"action=REJECT bad\rtext\x07here\tnow\n\n".to_vec()),
            Answer::Raw(long),
        ],
    );
    let mta = start("ff-sanitize", &[], &policy("odd", &fake.socket, "rcpt", ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    c.send("RCPT TO:<a@localhost.test>");
    let r = line(&mut c, &mta);
    // Each control character became a space; Postfix's words around the text.
    assert_eq!(
        r,
        "554 5.7.1 <a@localhost.test>: Recipient address rejected: bad text here now",
        "{}",
        mta.all_logs()
    );
    mta.expect_log(&["notice: hook odd: reply text sanitized"]);
    c.send("RCPT TO:<a@localhost.test>");
    let r = line(&mut c, &mta);
    assert!(
        r.starts_with("554 5.7.1 <a@localhost.test>: Recipient address rejected: xxx"),
        "{r}"
    );
    assert!(r.len() <= 510, "{} octets", r.len());
    // The reply text (after the codes) is clamped to 400 octets.
    assert_eq!(r.len() - "554 5.7.1 ".len(), 400, "{r}");
    ok(&mut c, "QUIT", 221, &mta);
    let ok = sloop_tests::wait_until(Duration::from_secs(5), || {
        mta.log.count("notice: hook odd: reply text sanitized") >= 2
    });
    assert!(ok, "{}", mta.all_logs());
}

#[test]
fn milter_reply_text_is_sanitized_and_clamped() {
    // A `y` reply whose text carries a bare CR and a BEL, at MAIL; 1000 octets at RCPT.
    let long = format!("550 5.7.1 {}", "z".repeat(1000));
    let fake = FakeMilter::start_each(
        Endpoint::Tcp,
        vec![
            MilterScript {
                raw_at: Some((cmd::MAIL, reply_code("550 5.7.1 bad\rtext\x07here"))),
                ..Default::default()
            },
            MilterScript {
                raw_at: Some((cmd::RCPT, reply_code(&long))),
                ..Default::default()
            },
        ],
    );
    let mta = start("ff-milter-sanitize", &[], &milter("odd", &fake.socket, ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    expect(
        &mut c,
        "MAIL FROM:<s@b.example>",
        "550 5.7.1 bad text here",
        &mta,
    );
    mta.expect_log(&["notice: hook odd: reply text sanitized"]);
    ok(&mut c, "QUIT", 221, &mta);
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    c.send("RCPT TO:<a@localhost.test>");
    let r = line(&mut c, &mta);
    assert!(r.starts_with("550 5.7.1 zzz"), "{r}");
    assert!(r.len() <= 510, "{} octets", r.len());
    let zs = r.bytes().filter(|&b| b == b'z').count();
    assert_eq!(zs, 400, "{r}");
    ok(&mut c, "QUIT", 221, &mta);
}

// ---------------------------------------------------------------------------------
// Closes mid-reply
// ---------------------------------------------------------------------------------

#[test]
fn policy_eof_mid_reply_retries_once_then_on_error() {
    // On a unix socket, as most policy services listen.
    let dir = TestDir::new("ff-eof");
    let half = || Answer::CloseAfter(b"action=DEF".to_vec());
    let fake = FakePolicy::start(
        Endpoint::Unix(sock_path(&dir.path, "policy.sock")),
        vec![
            half(),
            Answer::action("DUNNO"),
            half(),
            half(),
            Answer::action("DUNNO"),
        ],
    );
    let mta = Mta::start(dir, &[], &policy("flaky", &fake.socket, "rcpt", ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    // First request: EOF, the retry answers.
    ok(&mut c, "RCPT TO:<a@localhost.test>", 250, &mta);
    mta.expect_log(&["warning: policy flaky: unexpected EOF (try 1/2)"]);
    // Second: EOF twice, on_error.
    let t = Instant::now();
    expect(&mut c, "RCPT TO:<b@localhost.test>", TEMPFAIL, &mta);
    within(t.elapsed(), Duration::from_secs(10), "RCPT");
    mta.expect_log(&["warning: policy flaky: unexpected EOF (try 2/2)"]);
    assert_eq!(fake.requests().len(), 4, "{:?}", fake.requests());
    ok(&mut c, "QUIT", 221, &mta);
}

#[test]
fn milter_closing_mid_packet_is_dropped_with_its_on_error() {
    // A reply packet announced as 16 octets, cut after its command octet.
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            raw_at: Some((cmd::RCPT, b"\0\0\0\x10c".to_vec())),
            close_after_raw: true,
            ..Default::default()
        },
    );
    let mta = start(
        "ff-milter-eof",
        &[],
        &milter("cut", &fake.socket, "on_error = \"reject\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    let t = Instant::now();
    expect(&mut c, "RCPT TO:<a@localhost.test>", REJECT, &mta);
    within(t.elapsed(), Duration::from_secs(30), "RCPT");
    // A milter is not retried: dropped, its on_error at the later stages.
    ok(&mut c, "RSET", 250, &mta);
    expect(&mut c, "MAIL FROM:<s@b.example>", REJECT, &mta);
    ok(&mut c, "QUIT", 221, &mta);
    assert_eq!(fake.connections(), 1);
    mta.expect_log(&[
        "warning: milter cut: unexpected EOF waiting for the reply to RCPT; on_error=reject",
    ]);
}

// ---------------------------------------------------------------------------------
// Milter negotiation mismatch
// ---------------------------------------------------------------------------------

#[test]
fn milter_version_7_is_dropped_for_the_session() {
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            version: 7,
            ..Default::default()
        },
    );
    let mta = start(
        "ff-milter-v7",
        &[],
        &milter("v7", &fake.socket, "on_error = \"accept\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    envelope(&mut c, &mta);
    let r = message(&mut c, &mta);
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    ok(&mut c, "QUIT", 221, &mta);
    mta.expect_log(&["warning: milter v7: protocol version 7 conflict"]);
    // Negotiation only: the filter saw no event of the session.
    assert_eq!(fake.commands(0), "O");
    assert_eq!(fake.connections(), 1);
}

#[test]
fn milter_version_7_default_closes_at_connect() {
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            version: 7,
            ..Default::default()
        },
    );
    let mta = start("ff-milter-v7-421", &[], &milter("v7", &fake.socket, ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, SHUTDOWN, Duration::from_secs(10), &mta);
    closed(&mut c, &mta);
    mta.expect_log(&["warning: milter v7: protocol version 7 conflict"]);
}

#[test]
fn milter_asking_for_actions_not_offered_is_refused() {
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            actions: Some(u32::MAX),
            ..Default::default()
        },
    );
    let mta = start(
        "ff-milter-actions",
        &[],
        &milter("greedy", &fake.socket, "on_error = \"reject\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, REJECT_CONNECT, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 503, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 503, &mta);
    ok(&mut c, "QUIT", 221, &mta);
    mta.expect_log(&["warning: milter greedy: ", "on_error=reject"]);
    assert_eq!(fake.commands(0), "O");
}

// ---------------------------------------------------------------------------------
// A milter that crashes at each stage
// ---------------------------------------------------------------------------------

#[test]
fn milter_crash_at_each_stage_drops_it_for_the_session() {
    let stages = [
        ("connect", cmd::CONNECT),
        ("helo", cmd::HELO),
        ("mail", cmd::MAIL),
        ("rcpt", cmd::RCPT),
        ("data", cmd::DATA),
        ("header", cmd::HEADER),
        ("body", cmd::BODY),
        ("eom", cmd::EOM),
    ];
    let scripts = stages
        .iter()
        .map(|(_, at)| MilterScript {
            crash_at: Some(*at),
            ..Default::default()
        })
        .collect();
    let fake = FakeMilter::start_each(Endpoint::Tcp, scripts);
    let mta = start(
        "ff-milter-crash",
        &[],
        &milter("crashy", &fake.socket, "command_timeout = \"5s\""),
    );
    for (n, (stage, at)) in stages.iter().enumerate() {
        let (mut c, t) = mta.connect();
        let t0 = Instant::now();
        match *stage {
            "connect" => {
                greeting(&mut c, t, SHUTDOWN, Duration::from_secs(10), &mta);
                closed(&mut c, &mta);
            }
            "helo" => {
                greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
                expect(&mut c, "EHLO client.test", SHUTDOWN, &mta);
                closed(&mut c, &mta);
            }
            _ => {
                greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
                ok(&mut c, "EHLO client.test", 250, &mta);
                let mail = "MAIL FROM:<s@b.example>";
                let rcpt = "RCPT TO:<a@localhost.test>";
                match *stage {
                    "mail" => expect(&mut c, mail, TEMPFAIL, &mta),
                    "rcpt" => {
                        ok(&mut c, mail, 250, &mta);
                        expect(&mut c, rcpt, TEMPFAIL, &mta);
                        // Dropped: the same stage again gets its on_error.
                        expect(&mut c, "RCPT TO:<b@localhost.test>", TEMPFAIL, &mta);
                    }
                    "data" => {
                        ok(&mut c, mail, 250, &mta);
                        ok(&mut c, rcpt, 250, &mta);
                        expect(&mut c, "DATA", TEMPFAIL, &mta);
                    }
                    _ => {
                        ok(&mut c, mail, 250, &mta);
                        ok(&mut c, rcpt, 250, &mta);
                        let r = message(&mut c, &mta);
                        assert_eq!(r, TEMPFAIL, "{stage}\n{}", mta.all_logs());
                    }
                }
                // Each later stage it would have seen: its on_error, without asking.
                ok(&mut c, "RSET", 250, &mta);
                expect(&mut c, mail, TEMPFAIL, &mta);
                ok(&mut c, "QUIT", 221, &mta);
            }
        }
        within(t0.elapsed(), Duration::from_secs(10), stage);
        let seen = fake.commands(n);
        assert_eq!(
            events_after(&seen, *at),
            "",
            "{stage}: the filter was asked again after its crash: {seen}"
        );
        assert_eq!(fake.connections(), n + 1, "{stage}: reconnected");
    }
    for event in [
        "CONNECT", "HELO", "MAIL", "RCPT", "DATA", "HEADER", "BODY", "EOM",
    ] {
        mta.expect_log(&[&format!(
            "warning: milter crashy: unexpected EOF waiting for the reply to {event}; on_error=tempfail"
        )]);
    }
}

// ---------------------------------------------------------------------------------
// Each on_error value
// ---------------------------------------------------------------------------------

#[test]
fn each_on_error_value() {
    // mail: refused, accept -> go on; rcpt: garbage once, reject -> 550 5.3.5;
    // data: refused, shutdown -> 421 and close. (tempfail: every test above.)
    let junk_once = FakePolicy::start(
        Endpoint::Tcp,
        vec![
            Answer::Raw(b"nonsense\n\n".to_vec()),
            Answer::action("DUNNO"),
        ],
    );
    let (refused_mail, refused_data) = (refused_socket(), refused_socket());
    let hooks = [
        policy("lenient", &refused_mail, "mail", "on_error = \"accept\""),
        policy(
            "strict",
            &junk_once.socket,
            "rcpt",
            "tries = 1\non_error = \"reject\"",
        ),
        policy("fatal", &refused_data, "data", "on_error = \"shutdown\""),
    ]
    .concat();
    let mta = start("ff-on-error", &[], &hooks);
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    mta.expect_log(&[&format!(
        "warning: policy lenient: connect {refused_mail}: Connection refused; on_error=accept"
    )]);
    expect(&mut c, "RCPT TO:<a@localhost.test>", REJECT, &mta);
    mta.expect_log(&[
        "warning: policy strict: protocol error: reply without an action attribute; on_error=reject",
    ]);
    ok(&mut c, "RCPT TO:<a@localhost.test>", 250, &mta);
    expect(&mut c, "DATA", SHUTDOWN, &mta);
    closed(&mut c, &mta);
    mta.expect_log(&[&format!(
        "warning: policy fatal: connect {refused_data}: Connection refused; on_error=shutdown"
    )]);
}

// ---------------------------------------------------------------------------------
// Queue program after the hooks
// ---------------------------------------------------------------------------------

/// Picks its failure from the envelope sender's local part.
const QUEUE_SCRIPT: &str = r#"#!/bin/sh
cat > /dev/null
exec 3<&1
env=$(tr '\000' '\n' <&3)
case "$env" in
  Fperm@*) exit 31 ;;
  Ftemp@*) exit 71 ;;
  Fcrash@*) kill -9 $$ ;;
  Fhang@*) exec sleep 30 ;;
esac
exit 81
"#;

#[test]
fn queue_program_failures_after_the_hooks() {
    use std::os::unix::fs::PermissionsExt;
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::action("DUNNO")]);
    let dir = TestDir::new("ff-queue");
    let script = dir.path.join("queue.sh");
    std::fs::write(&script, QUEUE_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let qp = format!("{:?}", script.display().to_string());
    let mta = Mta::start(
        dir,
        &[
            ("smtpd.queue_program", &qp),
            ("smtpd.queue_timeout", "\"1s\""),
        ],
        &policy("last", &fake.socket, "eom", ""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    let cases = [
        (
            "perm",
            "554 5.3.0 ",
            "queueing refused the message: exit status 31",
        ),
        ("temp", "451 4.3.0 ", "queueing failed: exit status 71"),
        ("crash", "451 4.3.0 ", "queue program killed by signal 9"),
        (
            "hang",
            "451 4.3.0 ",
            "queue program timed out after 1 s; killed",
        ),
    ];
    for (n, (who, want, log)) in cases.iter().enumerate() {
        ok(&mut c, &format!("MAIL FROM:<{who}@b.example>"), 250, &mta);
        ok(&mut c, "RCPT TO:<a@localhost.test>", 250, &mta);
        let t = Instant::now();
        let r = message(&mut c, &mta);
        within(t.elapsed(), Duration::from_secs(1), who);
        assert!(r.starts_with(want), "{who}: {r}\n{}", mta.all_logs());
        // The end-of-message hook ran first, once per message.
        assert_eq!(fake.requests().len(), n + 1);
        // `QID: queue...`, the queue ID first.
        let l = mta.expect_log(&[log]);
        let msg = l.split("]: ").nth(1).unwrap_or("");
        let (qid, rest) = msg.split_once(": ").unwrap_or(("", ""));
        assert!(
            !qid.is_empty() && qid.bytes().all(|b| b.is_ascii_alphanumeric()),
            "no queue ID first: {l}"
        );
        assert!(rest.contains(log), "{l}");
    }
    assert!(fake.requests()[0].contains("protocol_state=END-OF-MESSAGE\n"));
    ok(&mut c, "QUIT", 221, &mta);
}

// ---------------------------------------------------------------------------------
// The client leaves during a hook
// ---------------------------------------------------------------------------------

#[test]
fn client_gone_during_a_hook_gets_nothing() {
    let fake = FakePolicy::start(Endpoint::Tcp, vec![Answer::Silent]);
    let mta = start(
        "ff-client-gone",
        &[],
        &policy("slow", &fake.socket, "rcpt", "timeout = \"3s\"\ntries = 1"),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    ok(&mut c, "MAIL FROM:<s@b.example>", 250, &mta);
    c.send("RCPT TO:<a@localhost.test>");
    // The server has the command once the policy service has the request.
    assert!(sloop_tests::wait_until(Duration::from_secs(5), || fake
        .requests()
        .len()
        == 1));
    let t = Instant::now();
    c.stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "sent to a client that left: {:?}\n{}",
        String::from_utf8_lossy(&rest),
        mta.all_logs()
    );
    within(t.elapsed(), Duration::from_secs(3), "close");
    mta.expect_log(&["lost connection during RCPT hooks from unknown[127.0.0.1]"]);
    // Nothing was decided for the client that left.
    assert_eq!(mta.log.count("reject: RCPT"), 0, "{}", mta.all_logs());
}

// ---------------------------------------------------------------------------------
// A legal reply is not a failure (the counterpart of the rows above)
// ---------------------------------------------------------------------------------

#[test]
fn milter_legal_reply_code_passes_and_keeps_the_filter() {
    // A milter `y` with a legal 5xx code passes through; with the enhanced code the
    // filter chose.
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            raw_at: Some((cmd::MAIL, reply_code("550 5.7.0 Sender blocked by filter"))),
            ..Default::default()
        },
    );
    let mta = start("ff-milter-y", &[], &milter("picky", &fake.socket, ""));
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    ok(&mut c, "EHLO client.test", 250, &mta);
    expect(
        &mut c,
        "MAIL FROM:<s@b.example>",
        "550 5.7.0 Sender blocked by filter",
        &mta,
    );
    // Not a failure: the filter stays, the next MAIL is asked again.
    expect(
        &mut c,
        "MAIL FROM:<t@b.example>",
        "550 5.7.0 Sender blocked by filter",
        &mta,
    );
    ok(&mut c, "QUIT", 221, &mta);
    assert_eq!(fake.connections(), 1);
}

// ---------------------------------------------------------------------------------
// The fake milter itself, checked against an independent MTA side
// ---------------------------------------------------------------------------------

/// miltertest (the milter test driver from OpenDKIM's tools) plays the MTA: it
/// negotiates protocol 6 and walks every stage; a fake that answers them all proves it
/// speaks the protocol, so the failures above are the MTA's and not the fake's.
const MILTERTEST_SCRIPT: &str = r#"
conn = mt.connect(SOCKET)
if conn == nil then error "connect" end
local function step(what, r)
  if r ~= nil then error(what .. ": " .. r) end
  if mt.getreply(conn) ~= SMFIR_CONTINUE then error(what .. ": not continue") end
end
step("conninfo", mt.conninfo(conn, "client.test", "192.0.2.1"))
step("helo", mt.helo(conn, "client.test"))
step("mail", mt.mailfrom(conn, "<s@b.example>"))
step("rcpt", mt.rcptto(conn, "<a@localhost.test>"))
step("data", mt.data(conn))
step("header", mt.header(conn, "Subject", "x"))
step("eoh", mt.eoh(conn))
step("body", mt.bodystring(conn, "body\r\n"))
step("eom", mt.eom(conn))
mt.disconnect(conn)
mt.echo("all stages answered")
"#;

#[test]
fn fake_milter_speaks_protocol_6_to_miltertest() {
    let Some(miltertest) = sloop_tests::peer_program(
        "fake_milter_speaks_protocol_6_to_miltertest",
        "miltertest",
        "/usr/bin/miltertest",
    ) else {
        return;
    };
    let fake = FakeMilter::start(Endpoint::Tcp, MilterScript::default());
    let port = fake.socket.rsplit(':').next().unwrap();
    let dir = TestDir::new("ff-miltertest");
    let script = dir.path.join("walk.lua");
    let lua = MILTERTEST_SCRIPT.replace("SOCKET", &format!("\"inet:{port}@127.0.0.1\""));
    std::fs::write(&script, lua).unwrap();
    let out = std::process::Command::new(miltertest)
        .arg("-s")
        .arg(&script)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all stages answered"), "{text}");
    assert_eq!(fake.commands(0), "OCHMRTLNBEQ");
}

// ---------------------------------------------------------------------------------
// A hook that blocks the MTA's writes: clipped by its timeout, the watchdog behind it
// ---------------------------------------------------------------------------------

#[test]
fn milter_that_stops_reading_mid_body_is_cut_by_its_timeout() {
    // 8 MiB of body: far more than the socket buffers hold, so the MTA's writes block
    // once the filter stops reading. Its content_timeout (2 s) ends the event; were a
    // write unbounded, the watchdog's `421 4.4.2` (command_timeout + watchdog_grace)
    // would be the answer instead, never silence.
    let fake = FakeMilter::start(
        Endpoint::Tcp,
        MilterScript {
            stall_at: Some(cmd::BODY),
            ..Default::default()
        },
    );
    let mta = start(
        "ff-milter-stall",
        &[
            ("smtpd.command_timeout", "\"10s\""),
            ("smtpd.watchdog_grace", "\"2s\""),
        ],
        &milter("stuck", &fake.socket, "content_timeout = \"2s\""),
    );
    let (mut c, t) = mta.connect();
    greeting(&mut c, t, GREETING, Duration::from_secs(10), &mta);
    envelope(&mut c, &mta);
    ok(&mut c, "DATA", 354, &mta);
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    let row = [b'y'; 998];
    while msg.len() < 8 << 20 {
        msg.extend_from_slice(&row);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b".\r\n");
    c.send_raw(&msg);
    let t = Instant::now();
    let r = line(&mut c, &mta);
    within(t.elapsed(), Duration::from_secs(2), "end of message");
    assert_eq!(r, TEMPFAIL, "{}", mta.all_logs());
    mta.expect_log(&[
        "warning: milter stuck: timeout after 2000ms waiting for the reply to BODY; on_error=tempfail",
    ]);
    ok(&mut c, "QUIT", 221, &mta);
}

// ---------------------------------------------------------------------------------
// A hook blocked past the phase budget: the watchdog's 421 4.4.2, never silence
// ---------------------------------------------------------------------------------

#[test]
fn hook_blocked_past_the_phase_budget_ends_in_the_watchdogs_421() {
    // A connect-stage policy service named by a host name whose DNS server never
    // answers. Resolving it (getaddrinfo) knows nothing of the phase deadline, so the
    // worker blocks past it; the watchdog answers `421 4.4.2` at the deadline plus
    // `smtpd.watchdog_grace` and the worker exits.
    if !nix::unistd::geteuid().is_root() {
        // A mount namespace for a private resolv.conf, and port 53.
        println!("SKIP: hook_blocked_past_the_phase_budget_ends_in_the_watchdogs_421: needs root");
        return;
    }
    let dir = TestDir::new("ff-watchdog");
    // A DNS server that never answers, on a loopback address of this test's own.
    let pid = std::process::id();
    let ns = format!("127.77.{}.{}", (pid >> 8) & 0xff, (pid & 0xff) | 1);
    let dns = std::net::UdpSocket::bind((ns.as_str(), 53)).unwrap();
    let resolv = dir.path.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {ns}\noptions timeout:30 attempts:1\n"),
    )
    .unwrap();
    let hooks = policy(
        "faraway",
        "inet:policy.hang.test:10023",
        "connect",
        "timeout = \"1s\"\ntries = 1",
    );
    let mta = Mta::start_with(
        dir,
        &[
            ("smtpd.connect_timeout", "\"2s\""),
            ("smtpd.dns_timeout", "\"1s\""),
            ("smtpd.watchdog_grace", "\"1s\""),
        ],
        &hooks,
        Some(&resolv),
    );
    let (mut c, t) = mta.connect();
    greeting(
        &mut c,
        t,
        "421 4.4.2 sloop.test Error: timeout exceeded",
        Duration::from_secs(3),
        &mta,
    );
    closed(&mut c, &mta);
    mta.expect_log(&["error: watchdog fired: phase hooks blocked for "]);
    // The resolver did ask the silent server.
    dns.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 512];
    assert!(dns.recv(&mut buf).is_ok(), "no DNS query was sent");
}
