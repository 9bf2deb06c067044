//! Remote agent tests: grouping, and moving on to the next MX when one refuses
//! (a loopback DNS responder and a one-session SMTP sink; never real DNS).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use sloop_common::delivery_proto::Transport;
use sloop_common::spool::status::Outcome;
use sloop_common::spool::{commit, Envelope, QueueState, Recipient, Spool};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

#[test]
fn recipients_are_grouped_by_domain() {
    let job = Job {
        job_id: 1,
        queue_id: sloop_common::spool::queue_id::QueueId::new(),
        path: "/nonexistent".into(),
        transport: Transport::Remote,
        nexthop: "a.test".into(),
        sender: String::new(),
        indices: (0..3).collect(),
        recipients: vec!["x@a.test".into(), "y@B.test".into(), "z@A.TEST".into()],
    };
    assert_eq!(
        group_by_domain(&job),
        vec![
            ("a.test".to_string(), vec![0, 2]),
            ("b.test".to_string(), vec![1])
        ]
    );
}

#[test]
fn addresses_that_could_inject_commands_are_refused() {
    assert!(wire_safe("a@b.test"));
    assert!(wire_safe(""));
    for bad in ["a@b\r\nDATA", "a>@b", "<a@b", "a\0@b"] {
        assert!(!wire_safe(bad), "{bad:?}");
    }
}

/// Accepts one SMTP session on `listener` and accepts everything; returns the data.
fn one_session(listener: TcpListener) -> std::thread::JoinHandle<Vec<String>> {
    one_session_greeting(listener, b"220 sink\r\n")
}

/// As [`one_session`], with `greeting` as the server's first reply.
fn one_session_greeting(
    listener: TcpListener,
    greeting: &'static [u8],
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut out = s.try_clone().unwrap();
        let mut lines = Vec::new();
        let mut r = BufReader::new(s);
        out.write_all(greeting).unwrap();
        let mut in_data = false;
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap_or(0) == 0 {
                return lines;
            }
            let l = l.trim_end().to_string();
            let reply: &[u8] = match () {
                _ if in_data && l == "." => {
                    in_data = false;
                    b"250 2.0.0 queued\r\n"
                }
                _ if in_data => b"",
                _ if l.starts_with("DATA") => {
                    in_data = true;
                    b"354 go\r\n"
                }
                _ if l.starts_with("QUIT") => b"221 bye\r\n",
                // A multi-line reply written line by line (Nagle on, as a server that
                // does not set TCP_NODELAY): the client reads it whole, acknowledging
                // the first line at once (Stream::ack_now).
                _ if l.starts_with("EHLO") => {
                    out.write_all(b"250-sink\r\n").unwrap();
                    b"250 8BITMIME\r\n"
                }
                _ => b"250 ok\r\n",
            };
            lines.push(l);
            out.write_all(reply).unwrap();
        }
    })
}

#[test]
fn a_refused_mx_moves_on_to_the_next() {
    let dir = std::env::temp_dir().join(format!("sloop-remote-mx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::new(dir.join("spool"));
    spool.ensure_layout().unwrap();
    let text = format!(
        "[server]\nhostname = \"me.test\"\nspool_dir = {:?}\n[remote]\nconnect_timeout = \"2s\"\n",
        spool.root().display().to_string()
    );
    let cfg = Config::parse(&dir.join("sloop.toml"), &text).unwrap();
    let env = Envelope::new("s@x.test", vec![Recipient::new("u@multi.test")]);
    let id = commit(&spool, &mut &b"Subject: x\r\n\r\nhi\r\n"[..], env, 0).unwrap();
    let path = spool.path(QueueState::Incoming, &id);
    let msg = QueuedMessage::open(Path::new(&path)).unwrap();
    // The backup listens on 127.0.0.1; nothing listens on 127.0.0.2 at that port.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = one_session(listener);
    let mut agent = RemoteAgent::new(cfg);
    agent.resolver = HopResolver::with_nameserver(mx::dns_tests::fake_dns(), port);
    let job = Job {
        job_id: 1,
        queue_id: sloop_common::spool::queue_id::QueueId::parse(&id).unwrap(),
        path: path.display().to_string(),
        transport: Transport::Remote,
        nexthop: "multi.test".into(),
        sender: "s@x.test".into(),
        indices: vec![0],
        recipients: vec!["u@multi.test".into()],
    };
    let res = agent.deliver(&job, &msg);
    assert_eq!(res[0].outcome, Outcome::Ok, "{res:?}");
    assert_eq!(res[0].relay, format!("backup.multi.test[127.0.0.1]:{port}"));
    agent.shutdown();
    let lines = sink.join().unwrap();
    assert_eq!(lines[0], "EHLO me.test");
    assert!(lines.contains(&"RCPT TO:<u@multi.test>".to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: a mail loop through an MX that points back at this host. A server that
/// greets us with our own host name (here `me.test`) is this host: the delivery fails
/// with 5.4.6 instead of sending the message to ourselves (and a bounce after it).
#[test]
fn a_server_greeting_with_our_own_name_is_a_loop() {
    let dir = std::env::temp_dir().join(format!("sloop-remote-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::new(dir.join("spool"));
    spool.ensure_layout().unwrap();
    let text = format!(
        "[server]\nhostname = \"me.test\"\nspool_dir = {:?}\n[remote]\nconnect_timeout = \"2s\"\n",
        spool.root().display().to_string()
    );
    let cfg = Config::parse(&dir.join("sloop.toml"), &text).unwrap();
    let env = Envelope::new("s@x.test", vec![Recipient::new("u@multi.test")]);
    let id = commit(&spool, &mut &b"Subject: x\r\n\r\nhi\r\n"[..], env, 0).unwrap();
    let path = spool.path(QueueState::Incoming, &id);
    let msg = QueuedMessage::open(Path::new(&path)).unwrap();
    for greeting in [
        &b"220 ME.test. ESMTP\r\n"[..],
        b"220-me.test hi\r\n220 there\r\n",
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = one_session_greeting(listener, greeting);
        let mut agent = RemoteAgent::new(cfg.clone());
        agent.resolver = HopResolver::with_nameserver(mx::dns_tests::fake_dns(), port);
        let job = Job {
            job_id: 1,
            queue_id: sloop_common::spool::queue_id::QueueId::parse(&id).unwrap(),
            path: path.display().to_string(),
            transport: Transport::Remote,
            nexthop: "multi.test".into(),
            sender: "s@x.test".into(),
            recipients: vec!["u@multi.test".into()],
            indices: vec![0],
        };
        let res = agent.deliver(&job, &msg);
        assert_eq!(res[0].outcome, Outcome::Fail, "{res:?}");
        assert_eq!(res[0].dsn, "5.4.6", "{res:?}");
        assert!(res[0].text.contains("loops back to myself"), "{res:?}");
        agent.shutdown();
        let lines = sink.join().unwrap();
        assert!(!lines.iter().any(|l| l.starts_with("MAIL")), "{lines:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
