//! `MilterSession` against an in-process fake filter on a unix socket: each test
//! scripts the filter's side and checks what the MTA sent and decided.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sloop_common::config::hooks::{HookSocket, MilterHook, OnError};

use super::negotiate::*;
use super::*;

const ALL_NR: u32 = SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_HDR
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY;

const MESSAGE: &[u8] = b"Received: from client.example.net\r\n\tby mx.example.org\r\n\
From: Alice <alice@example.test>\r\n\
Subject:  two spaces\r\n\
\r\n\
Hello\r\n";

/// The filter's end of the connection.
struct Peer {
    s: UnixStream,
    buf: Vec<u8>,
    /// Every command octet received, macros included.
    seen: Vec<u8>,
    /// The macro packets received (their data).
    macros: Vec<Vec<u8>>,
}

impl Peer {
    /// The next packet, or `None` at EOF.
    fn packet(&mut self) -> Option<Packet> {
        loop {
            if let Some((p, used)) = read_packet(&self.buf).unwrap() {
                self.buf.drain(..used);
                self.seen.push(p.cmd);
                return Some(p);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next event (macro packets are recorded and skipped).
    fn event(&mut self) -> Option<Packet> {
        loop {
            let p = self.packet()?;
            if p.cmd != b'D' {
                return Some(p);
            }
            self.macros.push(p.data);
        }
    }

    fn expect(&mut self, cmd: u8) -> Packet {
        let p = self.event().expect("EOF where an event was due");
        assert_eq!(p.cmd as char, cmd as char, "unexpected event");
        p
    }

    /// Sends a reply; false when the MTA is gone (the timeout tests).
    fn send(&mut self, reply: Reply) -> bool {
        self.s.write_all(&encode_reply(&reply)).is_ok()
    }

    fn negotiate(&mut self, actions: u32, protocol: u32, symlists: Vec<(u32, String)>) {
        let p = self.expect(b'O');
        assert_eq!(&p.data[..4], &6u32.to_be_bytes());
        self.send(Reply::OptNeg {
            version: 6,
            actions,
            protocol,
            symlists,
        });
    }
}

struct Fake {
    hook: MilterHook,
    thread: JoinHandle<Peer>,
    dir: PathBuf,
}

impl Fake {
    fn start(script: impl FnOnce(&mut Peer) + Send + 'static) -> Fake {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sloop-milter-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("milter.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut peer = Peer {
                s,
                buf: Vec::new(),
                seen: Vec::new(),
                macros: Vec::new(),
            };
            script(&mut peer);
            peer
        });
        Fake {
            hook: hook(HookSocket::Unix(path)),
            thread,
            dir,
        }
    }

    fn finish(self) -> Peer {
        let peer = self.thread.join().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
        peer
    }
}

fn hook(socket: HookSocket) -> MilterHook {
    MilterHook {
        name: "fake".into(),
        socket,
        on_error: OnError::Tempfail,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(10),
        content_timeout: Duration::from_secs(10),
        listeners: Vec::new(),
        reuse: true,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn info() -> ConnectInfo {
    ConnectInfo {
        hostname: "client.example.net".into(),
        addr: Some("192.0.2.1".parse().unwrap()),
        port: 40000,
    }
}

fn macros() -> Macros {
    let mut m = Macros::new();
    m.set("j", "mx.example.org")
        .set("{daemon_name}", "sloop")
        .set("{client_addr}", "192.0.2.1")
        .set("i", "4FqT2x");
    m
}

fn args(a: &str) -> Vec<String> {
    vec![a.to_string()]
}

fn strings(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn full_transaction_with_replies_and_edits() {
    let fake = Fake::start(|p| {
        p.negotiate(
            OFFERED_ACTIONS,
            0,
            vec![(0, "{client_addr}".into()), (5, "i".into())],
        );
        let c = p.expect(b'C');
        assert_eq!(&c.data[..20], b"client.example.net\x004");
        p.send(Reply::Continue);
        assert_eq!(strings(&p.expect(b'H').data), ["mx.client.example", ""]);
        p.send(Reply::Continue);
        p.expect(b'M');
        p.send(Reply::Continue);
        p.expect(b'R');
        p.send(Reply::ReplyCode("550 5.1.1 No such user".into()));
        p.expect(b'R');
        p.send(Reply::Continue);
        p.expect(b'T');
        p.send(Reply::Continue);
        let mut headers = Vec::new();
        for _ in 0..3 {
            headers.push(strings(&p.expect(b'L').data));
            p.send(Reply::Continue);
        }
        assert_eq!(
            headers[0],
            [
                "Received",
                "from client.example.net\n\tby mx.example.org",
                ""
            ]
        );
        assert_eq!(headers[2], ["Subject", " two spaces", ""]);
        p.expect(b'N');
        p.send(Reply::Continue);
        assert_eq!(p.expect(b'B').data, b"Hello\r\n");
        p.send(Reply::Continue);
        p.expect(b'E');
        p.send(Reply::Progress);
        p.send(Reply::InsHeader {
            index: 0,
            name: "DKIM-Signature".into(),
            value: "v=1;\n\tb=xyz".into(),
        });
        p.send(Reply::ChgHeader {
            index: 1,
            name: "subject".into(),
            value: "[SPAM] two spaces".into(),
        });
        p.send(Reply::AddRcptPar {
            rcpt: "<archive@example.org>".into(),
            args: Some("NOTIFY=NEVER".into()),
        });
        p.send(Reply::ReplBody(b"Hello\n".to_vec()));
        p.send(Reply::ReplBody(b"World\n".to_vec()));
        p.send(Reply::Continue);
        p.expect(b'Q');
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = macros();
    assert_eq!(
        s.connect(&info(), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    assert_eq!(
        s.helo("mx.client.example", &m, soon()).unwrap(),
        MilterReply::Continue
    );
    assert_eq!(
        s.mail(&args("<alice@example.test>"), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    assert_eq!(
        s.rcpt(&args("<nobody@example.org>"), &m, soon()).unwrap(),
        MilterReply::Code {
            code: 550,
            enhanced: Some((5, 1, 1)),
            text: "No such user".into()
        }
    );
    assert_eq!(
        s.rcpt(&args("<bob@example.org>"), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    assert_eq!(s.data(&m, soon()).unwrap(), MilterReply::Continue);
    let (reply, edits) = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert_eq!(reply, MilterReply::Continue);
    assert_eq!(edits.len(), 4, "{edits:?}");
    s.quit();
    let peer = fake.finish();
    // SETSYMLIST: connect got only {client_addr}, end of message only i; HELO (no list)
    // got everything.
    assert_eq!(
        strings(&peer.macros[0]),
        ["C{client_addr}", "192.0.2.1", ""]
    );
    assert_eq!(strings(&peer.macros[1]).len(), 9);
    assert_eq!(strings(peer.macros.last().unwrap()), ["Ei", "4FqT2x", ""]);

    let mut message = MESSAGE.to_vec();
    let mut env = sloop_common::spool::Envelope::new(
        "alice@example.test",
        vec![sloop_common::spool::Recipient::new("bob@example.org")],
    );
    apply_edits(&edits, &mut message, &mut env).unwrap();
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        String::from_utf8(message).unwrap(),
        "DKIM-Signature: v=1;\r\n\tb=xyz\r\n\
Received: from client.example.net\r\n\tby mx.example.org\r\n\
From: Alice <alice@example.test>\r\n\
subject: [SPAM] two spaces\r\n\
\r\n\
Hello\r\nWorld\r\n"
    );
    assert_eq!(rcpts, ["bob@example.org", "archive@example.org"]);
}

#[test]
fn no_reply_flags_are_not_waited_for() {
    // rspamd: no answers before the end of the message, values with leading space.
    let fake = Fake::start(|p| {
        p.negotiate(SMFIF_ADDHDRS, ALL_NR | SMFIP_HDR_LEADSPC, Vec::new());
        for cmd in b"CHMRTLLLNBE" {
            let e = p.expect(*cmd);
            if *cmd == b'L' && e.data.starts_with(b"Subject") {
                assert_eq!(strings(&e.data), ["Subject", "  two spaces", ""]);
            }
        }
        p.send(Reply::AddHeader {
            name: "X-Spam".into(),
            value: " Yes".into(),
        });
        p.send(Reply::Accept);
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = Macros::new();
    for reply in [
        s.connect(&info(), &m, soon()),
        s.helo("h", &m, soon()),
        s.mail(&args("<a@b>"), &m, soon()),
        s.rcpt(&args("<c@d>"), &m, soon()),
        s.data(&m, soon()),
    ] {
        assert_eq!(reply.unwrap(), MilterReply::Continue);
    }
    let (reply, edits) = s
        .message(MESSAGE, &m, Duration::from_secs(10), soon())
        .unwrap();
    assert_eq!(reply, MilterReply::Accept);
    assert_eq!(
        edits,
        [Edit::AddHeader {
            name: "X-Spam".into(),
            value: " Yes".into()
        }]
    );
    fake.finish();
}

#[test]
fn no_event_flags_leave_events_out() {
    let fake = Fake::start(|p| {
        let no = SMFIP_NOCONNECT
            | SMFIP_NOHELO
            | SMFIP_NODATA
            | SMFIP_NOHDRS
            | SMFIP_NOEOH
            | SMFIP_NOBODY;
        p.negotiate(0, no, Vec::new());
        for cmd in b"MRE" {
            p.expect(*cmd);
            p.send(Reply::Continue);
        }
        p.expect(b'A');
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = macros();
    assert_eq!(
        s.connect(&info(), &m, soon()).unwrap(),
        MilterReply::Continue
    );
    assert_eq!(s.helo("h", &m, soon()).unwrap(), MilterReply::Continue);
    s.mail(&args("<a@b>"), &m, soon()).unwrap();
    s.rcpt(&args("<c@d>"), &m, soon()).unwrap();
    s.data(&m, soon()).unwrap();
    let done = s.message(MESSAGE, &m, Duration::from_secs(10), soon());
    assert_eq!(done.unwrap(), (MilterReply::Continue, Vec::new()));
    s.abort(soon());
    let peer = fake.finish();
    // Only the macros of the events sent went out.
    let stages: Vec<u8> = peer.macros.iter().map(|d| d[0]).collect();
    assert_eq!(stages, b"MRE");
}

#[test]
fn progress_extends_the_event_timer_but_not_the_phase_deadline() {
    let fake = Fake::start(|p| {
        p.negotiate(0, SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY, Vec::new());
        p.expect(b'E');
        // 6 x 150 ms = 900 ms of work, three times the 300 ms event timer.
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(150));
            p.send(Reply::Progress);
        }
        p.send(Reply::Continue);
        p.expect(b'E');
        // Keeps reporting progress for ever (until the MTA is gone).
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            if !p.send(Reply::Progress) {
                break;
            }
        }
    });
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = Macros::new();
    let per_event = Duration::from_millis(300);
    let (reply, _) = s.message(MESSAGE, &m, per_event, soon()).unwrap();
    assert_eq!(reply, MilterReply::Continue);
    let started = Instant::now();
    let phase = started + Duration::from_millis(700);
    let err = s.message(MESSAGE, &m, per_event, phase).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, MilterError::Timeout { event: "EOM", .. }),
        "{err}"
    );
    assert!(took >= Duration::from_millis(690), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(matches!(
        s.rcpt(&args("<a@b>"), &m, soon()),
        Err(MilterError::Closed)
    ));
    drop(s);
    fake.finish();
}

#[test]
fn skip_ends_the_body_early_and_chunks_are_at_most_65535() {
    let fake = Fake::start(|p| {
        p.negotiate(0, SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_SKIP, Vec::new());
        // First message: every chunk is answered.
        let mut sizes = Vec::new();
        loop {
            let e = p.event().unwrap();
            if e.cmd == b'E' {
                break;
            }
            assert_eq!(e.cmd, b'B');
            sizes.push(e.data.len());
            p.send(Reply::Continue);
        }
        assert_eq!(sizes, [65535, 65535, 65535, 4795]);
        p.send(Reply::Continue);
        // Second message: skip after the first chunk.
        p.expect(b'B');
        p.send(Reply::Skip);
        p.expect(b'E');
        p.send(Reply::Continue);
    });
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    body.extend(
        std::iter::repeat_n(
            b"0123456789abcdefghijklmnopqrstuvwxyz\r\n"[..].to_vec(),
            5300,
        )
        .flatten(),
    );
    let mut s = MilterSession::open(&fake.hook, soon()).unwrap();
    let m = Macros::new();
    for _ in 0..2 {
        let (reply, _) = s
            .message(&body, &m, Duration::from_secs(10), soon())
            .unwrap();
        assert_eq!(reply, MilterReply::Continue);
    }
    fake.finish();
}

mod failures;
mod reuse;
