//! The failure policy for milters, row by row, end to end: a real `sloopd` on
//! loopback with a `[[milter]]` pointing at a scripted fake milter (`fake_hook`) that
//! is missing, refuses, never answers, answers "progress" forever, stops reading,
//! sends bad packet lengths, a `y` reply with a 2xx code or with control characters,
//! closes mid-packet, negotiates version 7 or actions not offered, or crashes at each
//! stage of the session. Each test asserts the client's exact reply, the budget, and
//! the log line; a dropped milter is checked never to be asked again in its session.
//! The fake milter itself is first proven against miltertest (the MTA side from
//! OpenDKIM's tools).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_hook;

use fake_hook::dialogue::*;
use fake_hook::milter::{cmd, reply_code, FakeMilter, MilterScript};
use fake_hook::mta::{within, Mta};
use fake_hook::{refused_socket, sock_path, Endpoint};
use sloop_tests::TestDir;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// Socket missing / refused
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Accepts and never answers
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Legal action, code illegal for the phase
// ---------------------------------------------------------------------------------

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
    // QUIT has no reply: the fake may record it a moment after miltertest exits.
    let all = "OCHMRTLNBEQ";
    sloop_tests::wait_until(Duration::from_secs(5), || fake.commands(0) == all);
    assert_eq!(fake.commands(0), all);
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
