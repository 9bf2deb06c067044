//! Failures and final decisions: negotiation mismatch, silence, EOF, garbage,
//! modifications not negotiated, accept, reject and quarantine.

use super::*;

#[test]
fn negotiation_mismatch_fails() {
    for (version, actions, want) in [
        (7, 0, "protocol version 7 conflict"),
        (6, 0x400, "action flags 0x400 not offered (offered 0x1ff)"),
    ] {
        let fake = Fake::start(move |p| {
            p.expect(b'O');
            p.send(Reply::OptNeg {
                version,
                actions,
                protocol: 0,
                symlists: Vec::new(),
            });
        });
        let err = MilterSession::open(&fake.hook, soon()).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert!(matches!(err, MilterError::Negotiation(_)));
        fake.finish();
    }
}

#[test]
fn silent_filter_times_out_within_the_connect_timeout() {
    let fake = Fake::start(|p| {
        p.expect(b'O');
        // Never answers; waits for the MTA to give up.
        assert!(p.packet().is_none());
    });
    let mut hook = fake.hook.clone();
    hook.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = MilterSession::open(&hook, soon()).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert_eq!(
        err.to_string(),
        "timeout after 300ms waiting for the reply to OPTNEG"
    );
    fake.finish();

    // A phase deadline shorter than the timeout wins.
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        p.expect(b'H');
        assert!(p.packet().is_none());
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let deadline = Instant::now() + Duration::from_millis(200);
    let err = s.helo("h", &Macros::new(), deadline).unwrap_err();
    assert!(Instant::now() >= deadline);
    assert!(matches!(err, MilterError::Timeout { event: "HELO", ms } if ms <= 200));
    drop(s);
    fake.finish();
}

#[test]
fn eof_and_refused_connections() {
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        p.expect(b'R');
        p.s.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let err = s.rcpt(&args("<a@b>"), &Macros::new(), soon()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected EOF waiting for the reply to RCPT"
    );
    assert!(matches!(
        s.data(&Macros::new(), soon()),
        Err(MilterError::Closed)
    ));
    fake.finish();

    let missing = std::env::temp_dir().join("sloop-milter-test-missing/milter.sock");
    let err = MilterSession::open(&hook(HookSocket::Unix(missing.clone())), soon()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "connect unix:{}: No such file or directory",
            missing.display()
        )
    );
}

#[test]
fn garbage_and_illegal_replies_are_protocol_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            encode_reply(&Reply::ReplyCode("250 2.0.0 Ok".into())),
            "reply code 250 is not 4xx or 5xx",
        ),
        (
            encode_reply(&Reply::AddHeader {
                name: "X".into(),
                value: "y".into(),
            }),
            "unexpected SMFIR_ADDHEADER after RCPT",
        ),
        (b"\0\0\0\0".to_vec(), "packet of length 0"),
        (
            b"\x7f\0\0\0".to_vec(),
            "packet length 2130706432 exceeds 1048576",
        ),
        (b"\0\0\0\x01Z".to_vec(), "unknown reply 'Z'"),
    ];
    for (bytes, want) in cases {
        let fake = Fake::start(move |p| {
            p.negotiate(OFFERED_ACTIONS, 0, Vec::new());
            p.expect(b'R');
            let _ = p.s.write_all(&bytes);
        });
        let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
        let err = s.rcpt(&args("<a@b>"), &Macros::new(), soon()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("protocol error: {want}")),
            "{err}"
        );
        drop(s);
        fake.finish();
    }
}

#[test]
fn edits_need_their_action_and_quarantine_is_surfaced() {
    let fake = Fake::start(|p| {
        p.negotiate(
            SMFIF_QUARANTINE,
            SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY,
            Vec::new(),
        );
        p.expect(b'M');
        p.send(Reply::Quarantine("suspicious sender".into()));
        p.send(Reply::Continue);
        p.expect(b'E');
        p.send(Reply::Continue);
        p.expect(b'M');
        p.send(Reply::Continue);
        p.expect(b'E');
        p.send(Reply::AddRcpt("<x@y>".into()));
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = Macros::new();
    assert_eq!(
        s.mail(&args("<a@b>"), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    let (reply, edits) = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert_eq!(reply, MilterReply::Quarantine("suspicious sender".into()));
    assert_eq!(edits, [Edit::Quarantine("suspicious sender".into())]);
    // The next transaction starts without it; an edit not negotiated is an error.
    s.mail(&args("<a@b>"), &m, soon()).unwrap();
    let err = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol error: SMFIR_ADDRCPT without the action negotiated"
    );
    drop(s);
    fake.finish();
}

#[test]
fn accept_ends_the_message_and_reject_beats_edits() {
    let fake = Fake::start(|p| {
        p.negotiate(OFFERED_ACTIONS, 0, Vec::new());
        p.expect(b'M');
        p.send(Reply::Accept);
        // Nothing of the first message; abort, then the second transaction.
        p.expect(b'A');
        p.expect(b'M');
        p.send(Reply::Continue);
        for cmd in b"LLLNB" {
            p.expect(*cmd);
            p.send(Reply::Continue);
        }
        p.expect(b'E');
        p.send(Reply::AddHeader {
            name: "X-A".into(),
            value: "1".into(),
        });
        p.send(Reply::ReplyCode("554 5.7.1 Gtube pattern".into()));
        p.expect(b'M');
        p.send(Reply::Discard);
        p.expect(b'Q');
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = Macros::new();
    assert_eq!(
        s.mail(&args("<a@b>"), &m, soon()).unwrap(),
        MilterReply::Accept
    );
    assert_eq!(
        s.rcpt(&args("<c@d>"), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    let done = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert_eq!(done, (MilterReply::Accept, Vec::new()));
    s.abort(soon());
    s.mail(&args("<a@b>"), &m, soon()).unwrap();
    let (reply, edits) = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert!(edits.is_empty());
    assert_eq!(
        reply,
        MilterReply::Code {
            code: 554,
            enhanced: Some((5, 7, 1)),
            text: "Gtube pattern".into()
        }
    );
    assert_eq!(
        s.mail(&args("<a@b>"), &m, soon()).unwrap(),
        MilterReply::Discard
    );
    s.quit();
    fake.finish();
}

#[test]
fn quarantine_survives_an_early_accept() {
    let fake = Fake::start(|p| {
        p.negotiate(SMFIF_QUARANTINE, 0, Vec::new());
        p.expect(b'M');
        p.send(Reply::Continue);
        p.expect(b'R');
        p.send(Reply::Quarantine("held by policy".into()));
        p.send(Reply::Accept);
        p.expect(b'Q');
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = Macros::new();
    s.mail(&args("<a@b>"), &m, soon()).unwrap();
    assert_eq!(
        s.rcpt(&args("<c@d>"), &m, soon()).unwrap(),
        MilterReply::Accept
    );
    assert_eq!(s.data(&m, soon()).unwrap(), MilterReply::Continue);
    let (reply, edits) = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert_eq!(reply, MilterReply::Quarantine("held by policy".into()));
    assert_eq!(edits, [Edit::Quarantine("held by policy".into())]);
    s.quit();
    fake.finish();
}
