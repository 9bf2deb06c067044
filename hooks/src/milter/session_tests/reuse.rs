//! Connection reuse (`SMFIC_QUIT_NC`) and the coalescing of writes, against the fake
//! filter: what goes over the wire, in which order, in how many writes.

use super::*;
use crate::milter::session::Released;

/// One SMTP session's events up to the end of a message.
fn transaction(s: &mut MilterSession) -> (MilterReply, Vec<Edit>) {
    let m = macros();
    for reply in [
        s.connect(&info(), &m, soon()),
        s.helo("client.example.net", &m, soon()),
        s.mail(&args("<a@example.org>"), &m, soon()),
        s.rcpt(&args("<b@example.net>"), &m, soon()),
        s.data(&m, soon()),
    ] {
        assert_eq!(reply.unwrap(), MilterReply::Continue);
    }
    s.message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap()
}

/// The filter's side of one transaction, every event answered, the end of the
/// message with `eom`.
fn answer_transaction(p: &mut Peer, eom: Reply) {
    for cmd in b"CHMRTLLLNB" {
        p.expect(*cmd);
        p.send(Reply::Continue);
    }
    p.expect(b'E');
    p.send(eom);
}

fn kept(r: Released) -> MilterSession {
    match r {
        Released::Kept(s) => *s,
        other => panic!("not kept: {other:?}"),
    }
}

#[test]
fn quit_nc_right_after_a_continued_message_and_after_an_unknown_command_otherwise() {
    let fake = Fake::start(|p| {
        p.negotiate(SMFIF_ADDHDRS, 0, Vec::new());
        // Session 1 ends at a message answered with continue: QUIT_NC straight away.
        answer_transaction(p, Reply::Continue);
        p.expect(b'K');
        // Session 2: a new connect event, with its macros again; the message is
        // accepted (libmilter is back at HELO): an unknown command first.
        answer_transaction(p, Reply::Accept);
        let u = p.expect(b'U');
        assert_eq!(strings(&u.data), ["QUIT", ""]);
        p.send(Reply::Continue);
        p.expect(b'K');
        // Session 3: only connect, then the MTA closes for good.
        p.expect(b'C');
        p.send(Reply::Continue);
        p.expect(b'Q');
        assert!(p.packet().is_none(), "closed after QUIT");
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    assert_eq!(s.sessions(), 1);
    assert_eq!(transaction(&mut s).0, MilterReply::Continue);
    let mut s = kept(s.release(soon()));
    assert!(s.resume());
    assert_eq!(s.sessions(), 2);
    assert_eq!(transaction(&mut s).0, MilterReply::Accept);
    let mut s = kept(s.release(soon()));
    assert!(s.resume());
    let m = macros();
    assert_eq!(
        s.connect(&info(), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    s.quit();
    let peer = fake.finish();
    // Each connect event had its macros (libmilter forgets them at QUIT_NC).
    let connect_macros = peer.macros.iter().filter(|d| d.first() == Some(&b'C'));
    assert_eq!(connect_macros.count(), 3);
    assert_eq!(
        String::from_utf8_lossy(&peer.seen),
        "ODCDHDMDRDTLLLDNBDEKDCDHDMDRDTLLLDNBDEUKDCQ"
    );
}

#[test]
fn an_accepted_unknown_command_closes_with_quit() {
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        p.expect(b'C');
        p.send(Reply::Continue);
        p.expect(b'U');
        p.send(Reply::Accept);
        p.expect(b'Q');
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    s.connect(&info(), &Macros::new(), soon()).unwrap();
    assert!(matches!(s.release(soon()), Released::Closed));
    fake.finish();
}

#[test]
fn an_unanswered_unknown_command_goes_out_with_quit_nc() {
    // rspamd's way: nothing answered before the end of the message.
    let fake = Fake::start(|p| {
        p.negotiate(0, ALL_NR | SMFIP_NR_UNKN, Vec::new());
        p.expect(b'C');
        p.expect(b'U');
        p.expect(b'K');
        p.expect(b'C');
        p.expect(b'Q');
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    s.connect(&info(), &Macros::new(), soon()).unwrap();
    let before = s.writes();
    let mut s = kept(s.release(soon()));
    assert_eq!(
        s.writes() - before,
        1,
        "the unknown command and QUIT_NC together"
    );
    assert!(s.resume());
    s.connect(&info(), &Macros::new(), soon()).unwrap();
    s.quit();
    fake.finish();
}

#[test]
fn no_reuse_when_switched_off_or_when_the_filter_speaks_an_older_version() {
    for (version, reuse) in [(6, false), (5, true)] {
        let fake = Fake::start(move |p| {
            p.expect(b'O');
            p.send(Reply::OptNeg {
                version,
                actions: 0,
                protocol: 0,
                symlists: Vec::new(),
            });
            p.expect(b'C');
            p.send(Reply::Continue);
            p.expect(b'Q');
        });
        let mut hook = fake.hook.clone();
        hook.reuse = reuse;
        let mut s = MilterSession::open(&hook, soon()).unwrap();
        s.connect(&info(), &Macros::new(), soon()).unwrap();
        assert!(matches!(s.release(soon()), Released::Closed));
        fake.finish();
    }
}

#[test]
fn a_filter_that_closes_on_quit_nc_is_not_resumed() {
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        p.expect(b'C');
        p.send(Reply::Continue);
        p.expect(b'U');
        p.send(Reply::Continue);
        p.expect(b'K');
        // A filter that does not keep connections: it closes.
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    s.connect(&info(), &Macros::new(), soon()).unwrap();
    let mut s = kept(s.release(soon()));
    fake.finish();
    assert!(!s.resume(), "closed by the filter: not fit");
}

#[test]
fn a_filter_that_answers_quit_nc_is_not_resumed() {
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        p.expect(b'C');
        p.send(Reply::Continue);
        p.expect(b'U');
        p.send(Reply::Continue);
        p.expect(b'K');
        // Unasked: the two ends no longer agree where they are.
        p.send(Reply::Continue);
        // Held open until the MTA lets go, so what it finds is the unasked reply,
        // not an end of file.
        while p.packet().is_some() {}
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    s.connect(&info(), &Macros::new(), soon()).unwrap();
    let mut s = kept(s.release(soon()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.quiet() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!s.resume(), "data arrived unasked: not fit");
    drop(s);
    fake.finish();
}

#[test]
fn a_broken_session_is_never_kept() {
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        p.expect(b'C');
        // Garbage: the session breaks.
        p.s.write_all(b"\0\0\0\x01Z").unwrap();
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    assert!(s.connect(&info(), &Macros::new(), soon()).is_err());
    assert!(matches!(s.release(soon()), Released::Closed));
    fake.finish();
}

#[test]
fn macros_go_out_with_their_event_and_unanswered_message_events_together() {
    // Headers, end of header and body unanswered (SMFIP_NR_*): the whole message, with
    // the end-of-message macros and the end of message, goes out in one write.
    let fake = Fake::start(|p| {
        p.negotiate(0, SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY, Vec::new());
        for cmd in b"CHMRT" {
            p.expect(*cmd);
            p.send(Reply::Continue);
        }
        for cmd in b"LLLNB" {
            p.expect(*cmd);
        }
        p.expect(b'E');
        p.send(Reply::Continue);
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = macros();
    let before = s.writes();
    s.connect(&info(), &m, soon()).unwrap();
    assert_eq!(s.writes() - before, 1, "macros and connect in one write");
    s.helo("h", &m, soon()).unwrap();
    s.mail(&args("<a@b>"), &m, soon()).unwrap();
    s.rcpt(&args("<c@d>"), &m, soon()).unwrap();
    s.data(&m, soon()).unwrap();
    assert_eq!(s.writes() - before, 5, "one write per event");
    let before = s.writes();
    let (reply, _) = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert_eq!(reply, MilterReply::Continue);
    assert_eq!(s.writes() - before, 1, "the message in one write");
    let peer = fake.finish();
    assert_eq!(String::from_utf8_lossy(&peer.seen), "ODCDHDMDRDTLLLDNBDE");
}

#[test]
fn answered_message_events_go_one_by_one() {
    let fake = Fake::start(|p| {
        p.negotiate(0, 0, Vec::new());
        for cmd in b"LLLNB" {
            p.expect(*cmd);
            p.send(Reply::Continue);
        }
        p.expect(b'E');
        p.send(Reply::Continue);
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let before = s.writes();
    s.message(MESSAGE, &Macros::new(), Duration::from_secs(10), soon())
        .unwrap();
    // Three header fields, end of header, one body chunk, end of message.
    assert_eq!(s.writes() - before, 6);
    fake.finish();
}
