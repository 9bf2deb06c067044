//! The one failure policy of the filter hooks (docs/filters.md, "Failure policy: what
//! each failure gives"), row by row, end to end: a real `sloopd` on loopback with
//! `[[policy]]` hooks pointing at a scripted fake policy server (`fake_hook`) that is
//! missing, refuses, never answers, answers garbage or an unknown action, answers a
//! code illegal for the phase or text with control characters, or closes mid-reply;
//! also each `on_error` value, the queue program after the hooks, a client that leaves
//! during a hook, and a hook blocked where only the watchdog reaches. Each test asserts
//! the client's exact reply, that it came within the budget (an upper bound with the
//! load margin, never a measurement), and the log line as the syslog daemon receives
//! it. The milter rows are in `filters_failures_milter.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_hook;

use fake_hook::dialogue::*;
use fake_hook::mta::{within, Mta};
use fake_hook::policy::{Answer, FakePolicy};
use fake_hook::{refused_socket, sock_path, Endpoint};
use sloop_tests::TestDir;
use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant};

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
    assert!(fake_hook::mta::queue_id(&l).is_some(), "no queue ID: {l}");
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
// A hook blocked past the phase budget: the watchdog's 421 4.4.2, never silence
// ---------------------------------------------------------------------------------

#[test]
fn hook_blocked_past_the_phase_budget_ends_in_the_watchdogs_421() {
    // A hook stuck past every timer of its own (injected: the hook runner blocks for
    // ever): the watchdog answers `421 4.4.2` at the phase deadline plus
    // `smtpd.watchdog_grace` and the worker exits. Never silence.
    let dir = TestDir::new("ff-watchdog");
    let hooks = policy(
        "stuck",
        "inet:127.0.0.1:9",
        "connect",
        "timeout = \"1s\"\ntries = 1",
    );
    let mta = Mta::start_env(
        dir,
        &[
            ("smtpd.connect_timeout", "\"2s\""),
            ("smtpd.dns_timeout", "\"1s\""),
            ("smtpd.watchdog_grace", "\"1s\""),
        ],
        &hooks,
        None,
        &[("SLOOP_FAULT", "hook-hang")],
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
}

#[test]
fn an_unanswering_resolver_costs_the_hook_its_deadline_not_the_session() {
    // A connect-stage policy service named by a host name whose DNS server never
    // answers. The lookup is bounded by the phase deadline like the connect itself:
    // the hook fails with its on_error (shutdown at connect: `421 4.3.5`) within
    // smtpd.connect_timeout, before the watchdog would fire.
    if !nix::unistd::geteuid().is_root() {
        // A mount namespace for a private resolv.conf, and port 53.
        println!(
            "SKIP: an_unanswering_resolver_costs_the_hook_its_deadline_not_the_session: needs root"
        );
        return;
    }
    let dir = TestDir::new("ff-resolver");
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
    greeting(&mut c, t, SHUTDOWN, Duration::from_secs(2), &mta);
    closed(&mut c, &mta);
    mta.expect_log(&[
        "warning: policy faraway: connect inet:policy.hang.test:10023: Connection timed out; on_error=shutdown",
    ]);
    assert!(
        !mta.all_logs().contains("watchdog fired"),
        "{}",
        mta.all_logs()
    );
    // The resolver did ask the silent server.
    dns.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 512];
    assert!(dns.recv(&mut buf).is_ok(), "no DNS query was sent");
}
