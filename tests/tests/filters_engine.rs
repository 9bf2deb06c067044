//! End-to-end: the filter hooks' runtime in `sloop-smtpd`, with small scripted
//! in-process services standing in for real ones (the real daemons are in
//! filters_interop.rs, every failure of the failure policy in filters_failures.rs):
//! a policy service whose action depends on the recipient's local-part, and a milter
//! that adds a header and rejects a marked body. What is checked is the flow: PREPEND
//! lands in the delivered message, HOLD puts the message in `hold/`, DISCARD queues
//! nothing, DEFER_IF_PERMIT answers 450, a milter's header lands in the delivered
//! message and its reject is the client's reply, an unreachable service applies its
//! `on_error`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_hooks::milter::{encode_reply, read_packet, Reply};
use sloop_tests::{files_under, free_port, maildir_new, wait_until, Daemon, Smtp, TestDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A policy service on a free loopback port: at RCPT, the action is chosen by the
/// recipient's local-part (`grey`, `hold`, `discard`, `prepend`, `reject`, `where`:
/// prepends the connection's addresses and ports as the request gave them), else
/// DUNNO.
fn fake_policy() -> u16 {
    scripted_policy(|attrs| {
        let rcpt = attrs.get("recipient").map_or("", String::as_str);
        let get = |k: &str| attrs.get(k).map_or("-", String::as_str).to_string();
        let action = match rcpt.split('@').next().unwrap_or("") {
            "grey" => "DEFER_IF_PERMIT Greylisted for 300 seconds".to_string(),
            "hold" => "HOLD Review please".to_string(),
            "discard" => "DISCARD".to_string(),
            "prepend" => "PREPEND X-Policy: checked".to_string(),
            "reject" => "REJECT Not here".to_string(),
            "where" => format!(
                "PREPEND X-Where: client {} port {} server {} port {}",
                get("client_address"),
                get("client_port"),
                get("server_address"),
                get("server_port")
            ),
            _ => "DUNNO".to_string(),
        };
        (action, Duration::ZERO)
    })
}

type Attrs = std::collections::HashMap<String, String>;

/// A policy service answering what `script` says of each request's attributes, after
/// the delay it says.
fn scripted_policy(script: fn(&Attrs) -> (String, Duration)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_policy(conn, script));
        }
    });
    port
}

fn serve_policy(conn: TcpStream, script: fn(&Attrs) -> (String, Duration)) {
    let mut out = conn.try_clone().unwrap();
    let mut rd = BufReader::new(conn);
    let mut attrs = Attrs::new();
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end_matches('\n');
        if let Some((k, v)) = line.split_once('=') {
            attrs.insert(k.to_string(), v.to_string());
            continue;
        }
        let (action, delay) = script(&attrs);
        std::thread::sleep(delay);
        if out
            .write_all(format!("action={action}\n\n").as_bytes())
            .is_err()
        {
            return;
        }
        attrs.clear();
    }
}

/// A milter on a free loopback port: adds `X-Milter: seen` to every message, rejects
/// a body containing `REJECTME` with its own 554.
fn fake_milter() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_milter(conn));
        }
    });
    port
}

fn serve_milter(mut conn: TcpStream) {
    let mut buf = Vec::new();
    let mut body = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let packet = match read_packet(&buf) {
            Ok(Some((p, used))) => {
                buf.drain(..used);
                p
            }
            Ok(None) => match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            },
            Err(_) => return,
        };
        let replies = match packet.cmd {
            b'O' => vec![Reply::OptNeg {
                version: 6,
                actions: 0x01, // add headers
                protocol: 0,
                symlists: Vec::new(),
            }],
            b'D' | b'A' => {
                if packet.cmd == b'A' {
                    body.clear();
                }
                continue;
            }
            b'Q' => return,
            b'B' => {
                body.extend_from_slice(&packet.data);
                vec![Reply::Continue]
            }
            b'E' => {
                let seen = std::mem::take(&mut body);
                if seen.windows(8).any(|w| w == b"REJECTME") {
                    vec![Reply::ReplyCode(
                        "554 5.7.1 Rejected by the fake milter".into(),
                    )]
                } else {
                    vec![
                        Reply::AddHeader {
                            name: "X-Milter".into(),
                            value: "seen".into(),
                        },
                        Reply::Continue,
                    ]
                }
            }
            _ => vec![Reply::Continue],
        };
        for r in replies {
            if conn.write_all(&encode_reply(&r)).is_err() {
                return;
            }
        }
    }
}

struct Server {
    dir: TestDir,
    daemon: Daemon,
    port: u16,
}

impl Server {
    fn start(name: &str, hooks: &str) -> Server {
        let dir = TestDir::new(name);
        let port = free_port();
        let config = dir.write_config(port, &[], hooks);
        let daemon = Daemon::start(&config, port);
        Server { dir, daemon, port }
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }

    fn wait_log_line(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(10), || self.log().contains(needle))
    }

    /// One message to `rcpt` in a new session; the reply codes of RCPT and of the end
    /// of data (0 when DATA was not reached) and the end-of-data reply line.
    fn send(&self, rcpt: &str, body: &str) -> (u16, u16, String) {
        let mut c = Smtp::connect(self.port);
        assert_eq!(c.code(), 220, "log:\n{}", self.log());
        assert_eq!(c.cmd("EHLO client.test"), 250);
        assert_eq!(c.cmd("MAIL FROM:<sender@example.org>"), 250);
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if r != 250 {
            c.cmd("QUIT");
            return (r, 0, String::new());
        }
        assert_eq!(c.cmd("DATA"), 354);
        c.send_raw(format!("Subject: test\r\n\r\n{body}\r\n.\r\n").as_bytes());
        let lines = c.reply();
        let last = lines.last().cloned().unwrap_or_default();
        let code = last.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        c.cmd("QUIT");
        (r, code, last)
    }

    fn delivered(&self, user: &str) -> Vec<String> {
        maildir_new(&self.dir.mail(), "localhost.test", user)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn wait_delivered(&self, user: &str) -> String {
        let ok = wait_until(Duration::from_secs(20), || !self.delivered(user).is_empty());
        assert!(ok, "nothing delivered to {user}; log:\n{}", self.log());
        self.delivered(user).remove(0)
    }
}

fn policy_toml(port: u16) -> String {
    format!("[[policy]]\nname = \"fake\"\nsocket = \"inet:127.0.0.1:{port}\"\nstage = \"rcpt\"\n")
}

#[test]
fn policy_actions_reach_the_client_and_the_queue() {
    let server = Server::start("filters-policy", &policy_toml(fake_policy()));

    // DEFER_IF_PERMIT with nothing else refusing: 450 with the service's text.
    let (r, _, _) = server.send("grey@localhost.test", "x");
    assert_eq!(r, 450);
    assert!(server.log().contains(
        "reject: RCPT from unknown[127.0.0.1]: 450 4.7.1 <grey@localhost.test>: \
         Recipient address rejected: Greylisted for 300 seconds; from=<sender@example.org> \
         to=<grey@localhost.test> proto=ESMTP helo=<client.test>"
    ));
    let (r, _, _) = server.send("reject@localhost.test", "x");
    assert_eq!(r, 554);

    // PREPEND: the header is on top of the message as received (above our Received
    // header; local delivery adds Return-Path and Delivered-To above it).
    let (r, d, _) = server.send("prepend@localhost.test", "hello");
    assert_eq!((r, d), (250, 250));
    let msg = server.wait_delivered("prepend").replace("\r\n", "\n");
    assert!(
        msg.contains("\nX-Policy: checked\nReceived: from client.test"),
        "{msg}"
    );

    // The request names both ends of the connection, as Postfix's does.
    let (r, d, _) = server.send("where@localhost.test", "where");
    assert_eq!((r, d), (250, 250));
    let msg = server.wait_delivered("where");
    let line = msg
        .lines()
        .find(|l| l.starts_with("X-Where: "))
        .unwrap_or_else(|| panic!("{msg}"));
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words[1..3], ["client", "127.0.0.1"], "{line}");
    assert!(words[4].parse::<u16>().is_ok_and(|p| p > 0), "{line}");
    assert_eq!(
        words[5..],
        ["server", "127.0.0.1", "port", &server.port.to_string()],
        "{line}"
    );

    // HOLD: committed into hold/, never delivered, logged with its reason.
    let (r, d, _) = server.send("hold@localhost.test", "held");
    assert_eq!((r, d), (250, 250));
    let held = files_under(&server.dir.spool().join("hold"));
    assert_eq!(held.len(), 1, "log:\n{}", server.log());
    assert!(server
        .log()
        .contains("hold: RCPT from unknown[127.0.0.1]: <hold@localhost.test>: Recipient address triggers HOLD action: Review please"));
    // The operator sees why, and a release delivers it (the record does not hold it
    // again).
    let held_id = held[0].file_name().unwrap().to_string_lossy().into_owned();
    let config = server.dir.path.join("sloop.toml");
    let sloop = |args: &[&str]| {
        let out = std::process::Command::new(sloop_tests::bin("sloop"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = sloop(&["queue", "show", &held_id]);
    assert!(shown.contains("state: hold"), "{shown}");
    assert!(
        shown.contains("held by filter: <hold@localhost.test>: Recipient address triggers HOLD action: Review please"),
        "{shown}"
    );
    sloop(&["queue", "release", &held_id]);
    server.wait_delivered("hold");

    // DISCARD: the client is told 250, nothing is queued, the log says so.
    let (r, d, line) = server.send("discard@localhost.test", "gone");
    assert_eq!((r, d), (250, 250));
    let id = line.rsplit(' ').next().unwrap().to_string();
    assert!(server.log().contains(&format!(
        "{id}: discard: END-OF-MESSAGE from unknown[127.0.0.1]"
    )));

    // A DUNNO lets the built-in answer stand: delivered.
    let (r, d, _) = server.send("plain@localhost.test", "fine");
    assert_eq!((r, d), (250, 250));
    server.wait_delivered("plain");
    assert!(server.delivered("discard").is_empty());
}

#[test]
fn milter_header_lands_and_its_reject_is_the_reply() {
    let milter = fake_milter();
    let toml = format!("[[milter]]\nname = \"fake\"\nsocket = \"inet:127.0.0.1:{milter}\"\n");
    let server = Server::start("filters-milter", &toml);
    let (r, d, _) = server.send("alice@localhost.test", "hello");
    assert_eq!((r, d), (250, 250), "log:\n{}", server.log());
    let msg = server.wait_delivered("alice");
    let head = msg.split("\r\n\r\n").next().unwrap();
    assert!(head.contains("\r\nX-Milter: seen"), "{msg}");
    let (r, d, line) = server.send("bob@localhost.test", "REJECTME");
    assert_eq!((r, d), (250, 554));
    assert_eq!(line, "554 5.7.1 Rejected by the fake milter");
    assert!(server.log().contains("milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 554 5.7.1 Rejected by the fake milter"));
    assert!(server.delivered("bob").is_empty());
}

#[test]
fn an_unreachable_policy_service_applies_on_error() {
    // A port nobody listens on.
    let dead = free_port();
    let server = Server::start("filters-dead", &policy_toml(dead));
    let (r, _, _) = server.send("alice@localhost.test", "x");
    assert_eq!(r, 451);
    assert!(
        server.log().contains(&format!(
            "policy fake: connect inet:127.0.0.1:{dead}: Connection refused; on_error=tempfail"
        )),
        "log:\n{}",
        server.log()
    );
    assert!(server
        .log()
        .contains("reject: RCPT from unknown[127.0.0.1]: 451 4.3.5 Server configuration problem"));
}

#[test]
fn local_mail_goes_through_local_milters() {
    let milter = fake_milter();
    let toml = format!(
        "[[milter]]\nname = \"fake\"\nsocket = \"inet:127.0.0.1:{milter}\"\nlisteners = [\"local\"]\n"
    );
    let server = Server::start("filters-local", &toml);
    let spool = sloop_common::spool::Spool::new(server.dir.spool());
    let drop_from = |from: &str, to: &str, body: &str| {
        let env =
            sloop_common::spool::Envelope::new(from, vec![sloop_common::spool::Recipient::new(to)]);
        let msg = format!("Subject: local\r\n\r\n{body}\r\n");
        sloop_common::spool::maildrop::drop_message(
            &spool,
            &mut msg.as_bytes(),
            || Ok(env),
            0,
            None,
        )
        .unwrap()
    };
    let drop = |to: &str, body: &str| drop_from("user@sloop.test", to, body);
    drop("alice@localhost.test", "from cron");
    let msg = server.wait_delivered("alice");
    assert!(msg.contains("X-Milter: seen"), "{msg}");
    // sendmail run by the spool's owner (cron running as that user) goes through the
    // maildrop too while a milter sees local mail: nothing from sendmail escapes it.
    let mut sendmail = std::process::Command::new(sloop_tests::bin("sloop-sendmail"))
        .arg("-C")
        .arg(server.dir.path.join("sloop.toml"))
        .arg("dave@localhost.test")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sendmail
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: cron\n\nfrom the owner\n")
        .unwrap();
    assert!(sendmail.wait().unwrap().success());
    let msg = server.wait_delivered("dave");
    assert!(msg.contains("X-Milter: seen"), "{msg}");
    // Rejected local mail goes back to its sender, as Postfix bounces it; the message
    // itself is neither delivered nor kept.
    let id = drop_from("eve@localhost.test", "bob@localhost.test", "REJECTME");
    let notice = server.wait_delivered("eve");
    assert!(
        notice.contains("Subject: Undelivered Mail Returned to Sender"),
        "{notice}"
    );
    assert!(
        notice.contains("<bob@localhost.test>: 554 5.7.1 Rejected by the fake milter"),
        "{notice}"
    );
    assert!(
        notice.contains(&format!("X-Sloop-Queue-ID: {id}")),
        "{notice}"
    );
    let log = server.log();
    assert!(
        log.contains(&format!("{id}: milter-reject: local mail from uid=")),
        "{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains(&format!("{id}: to=<bob@localhost.test>, relay=none, "))
                && l.contains("dsn=5.7.1, status=bounced (554 5.7.1 Rejected by the fake milter)")
        ),
        "{log}"
    );
    assert!(
        log.contains(&format!("{id}: sender non-delivery notification: ")),
        "{log}"
    );
    let spool = server.dir.spool();
    assert!(!spool.join("hold").join(&id).exists());
    assert!(!spool.join("maildrop").join(&id).exists());
    // SMTP sessions do not see a local-only milter.
    let (r, d, _) = server.send("carol@localhost.test", "REJECTME");
    assert_eq!((r, d), (250, 250));
}

#[test]
fn a_connect_policy_reply_is_made_legal_for_the_greeting() {
    let port = scripted_policy(|_| ("450 4.7.1 Come back later".into(), Duration::ZERO));
    let toml = format!(
        "[[policy]]\nname = \"early\"\nsocket = \"inet:127.0.0.1:{port}\"\nstage = \"connect\"\n"
    );
    let server = Server::start("filters-connect", &toml);
    let mut c = Smtp::connect(server.port);
    let reply = c.reply();
    assert_eq!(
        reply,
        vec!["421 4.7.1 <unknown[127.0.0.1]>: Client host rejected: Come back later".to_string()],
        "log:\n{}",
        server.log()
    );
    assert!(c.closed());
    assert!(server
        .log()
        .contains("notice: hook early: 450 reply at connect sent as 421"));
}

#[test]
fn a_client_gone_during_hooks_gets_nothing_and_nothing_is_queued() {
    let port = scripted_policy(|_| ("DUNNO".into(), Duration::from_millis(700)));
    let toml = format!(
        "[[policy]]\nname = \"slow\"\nsocket = \"inet:127.0.0.1:{port}\"\nstage = \"eom\"\n"
    );
    let server = Server::start("filters-gone", &toml);
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    assert_eq!(c.cmd("MAIL FROM:<s@example.org>"), 250);
    assert_eq!(c.cmd("RCPT TO:<alice@localhost.test>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send_raw(b"Subject: x\r\n\r\nbye\r\n.\r\n");
    c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    assert!(
        server.wait_log_line("lost connection during END-OF-MESSAGE hooks from unknown[127.0.0.1]"),
        "log:\n{}",
        server.log()
    );
    // The session's last line: whatever it was going to queue, it has by now.
    assert!(
        server.wait_log_line("disconnect from unknown[127.0.0.1]"),
        "log:\n{}",
        server.log()
    );
    assert!(!server.log().contains("(queued)"), "log:\n{}", server.log());
    // A committed message is always in one of these, in this order of its travel
    // (each move publishes the new copy before the old one goes).
    for state in ["incoming", "hold", "active", "deferred"] {
        assert!(
            files_under(&server.dir.spool().join(state)).is_empty(),
            "{state}/"
        );
    }
    assert!(server.delivered("alice").is_empty());
}
