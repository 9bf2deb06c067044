//! `sloop-deliver remote` on its own, against SMTP sinks on loopback (routes only,
//! never real DNS): per-recipient results, PIPELINING and SIZE, dot-stuffing,
//! connection failures and timeouts, HELO fallback, session reuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deliver_support;

use deliver_support::sink::{Script, Sink};
use deliver_support::{queue, Worker};
use sloop_common::delivery_proto::Transport::Remote;
use sloop_common::spool::status::Outcome;
use sloop_tests::{free_port, TestDir};
use std::path::PathBuf;
use std::sync::Arc;

const MSG: &[u8] = b"From: a@x.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbare lf\nend\r\n";

fn config(dir: &TestDir, routes: &[(&str, u16)], extra: &[(&str, &str)]) -> PathBuf {
    let table: Vec<String> = routes
        .iter()
        .map(|(d, p)| format!("\"{d}\" = \"127.0.0.1:{p}\""))
        .collect();
    let routes = format!("{{ {} }}", table.join(", "));
    let mut o: Vec<(&str, &str)> = vec![
        ("remote.routes", routes.as_str()),
        ("remote.connect_timeout", "\"2s\""),
        ("remote.command_timeout", "\"2s\""),
        ("remote.data_timeout", "\"2s\""),
    ];
    o.extend_from_slice(extra);
    dir.write_config(free_port(), &o, "")
}

#[test]
fn per_recipient_results_with_pipelining_size_and_dot_stuffing() {
    let script = Script {
        rcpt: Arc::new(|a: &str| match a.split('@').next().unwrap_or("") {
            "later" => "451 4.3.0 try later".to_string(),
            "nobody" => "550 5.1.1 no such user".to_string(),
            _ => "250 2.1.5 Ok".to_string(),
        }),
        ..Script::default()
    };
    let sink = Sink::start(script);
    let dir = TestDir::new("deliver-remote-rcpt");
    let cfg = config(&dir, &[("example.net", sink.port)], &[]);
    let rcpts = [
        "ok@example.net",
        "later@example.net",
        "nobody@example.net",
        "ok2@example.net",
    ];
    let (_, path) = queue(&dir, "a@x.test", &rcpts, MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    let res = w.run(Remote, &path, "a@x.test", &rcpts);
    let got: Vec<(Outcome, &str)> = res.iter().map(|r| (r.outcome, r.dsn.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Outcome::Ok, "2.0.0"),
            (Outcome::Defer, "4.3.0"),
            (Outcome::Fail, "5.1.1"),
            (Outcome::Ok, "2.0.0")
        ],
        "{res:#?}"
    );
    let relay = format!("127.0.0.1[127.0.0.1]:{}", sink.port);
    assert!(res.iter().all(|r| r.relay == relay), "{res:#?}");
    assert!(
        res[2].text.contains("550 5.1.1 no such user"),
        "{}",
        res[2].text
    );
    let conns = sink.conns();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert!(
        c.pipelined,
        "MAIL and RCPTs should come in one write: {:?}",
        c.commands
    );
    assert_eq!(c.commands[0], "EHLO sloop.test");
    assert_eq!(
        c.commands[1],
        format!("MAIL FROM:<a@x.test> SIZE={}", MSG.len())
    );
    assert_eq!(c.commands[2], "RCPT TO:<ok@example.net>");
    // Dot-stuffing undone by the sink gives the message back, bare LF made CRLF.
    let want = b"From: a@x.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbare lf\r\nend\r\n";
    assert_eq!(c.messages, vec![want.to_vec()]);
    assert_eq!(w.finish(), Some(0));
    assert!(sloop_tests::wait_until(
        std::time::Duration::from_secs(5),
        || { sink.conns()[0].commands.last().map(String::as_str) == Some("QUIT") }
    ));
}

#[test]
fn final_reply_decides_every_accepted_recipient() {
    for (end, outcome, dsn) in [
        ("451 4.4.5 insufficient storage", Outcome::Defer, "4.4.5"),
        ("554 5.6.0 rejected", Outcome::Fail, "5.6.0"),
        ("250 ok", Outcome::Ok, "2.0.0"),
    ] {
        let sink = Sink::start(Script {
            end: end.to_string(),
            ..Script::default()
        });
        let dir = TestDir::new("deliver-remote-final");
        let cfg = config(&dir, &[("example.net", sink.port)], &[]);
        let rcpts = ["a@example.net", "b@example.net"];
        let (_, path) = queue(&dir, "", &rcpts, MSG);
        let mut w = Worker::start(&dir, "remote", &cfg);
        let res = w.run(Remote, &path, "", &rcpts);
        for r in &res {
            assert_eq!((r.outcome, r.dsn.as_str()), (outcome, dsn), "{end}: {r:?}");
        }
        assert_eq!(
            sink.conns()[0].commands[1],
            format!("MAIL FROM:<> SIZE={}", MSG.len())
        );
    }
}

#[test]
fn unreachable_hung_or_garbage_servers_defer() {
    let dir = TestDir::new("deliver-remote-down");
    let closed = free_port();
    let hung = Sink::start(Script {
        greeting: None,
        ..Script::default()
    });
    let garbage = Sink::start(Script {
        greeting: Some("hello there".into()),
        ..Script::default()
    });
    let mail_refused = Sink::start(Script {
        mail: "421 4.3.2 shutting down".into(),
        ..Script::default()
    });
    let cfg = config(
        &dir,
        &[
            ("closed.test", closed),
            ("hung.test", hung.port),
            ("garbage.test", garbage.port),
            ("refused.test", mail_refused.port),
        ],
        &[("remote.command_timeout", "\"500ms\"")],
    );
    let rcpts = [
        "a@closed.test",
        "b@hung.test",
        "c@garbage.test",
        "d@refused.test",
    ];
    let (_, path) = queue(&dir, "s@x.test", &rcpts, MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    let res = w.run(Remote, &path, "s@x.test", &rcpts);
    for r in &res {
        assert_eq!(r.outcome, Outcome::Defer, "{r:?}");
    }
    assert_eq!(res[0].relay, format!("127.0.0.1[127.0.0.1]:{closed}"));
    assert!(res[1].text.contains("timed out"), "{}", res[1].text);
    assert!(res[2].text.contains("malformed"), "{}", res[2].text);
    assert!(res[3].text.contains("421 4.3.2"), "{}", res[3].text);
    assert_eq!(res[3].dsn, "4.3.2");
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn helo_fallback_without_pipelining() {
    let sink = Sink::start(Script {
        ehlo: None,
        ..Script::default()
    });
    let dir = TestDir::new("deliver-remote-helo");
    let cfg = config(&dir, &[("example.net", sink.port)], &[]);
    let (_, path) = queue(&dir, "s@x.test", &["a@example.net"], MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    let res = w.run(
        Remote,
        &path,
        "s@x.test",
        &["a@example.net", "b@example.net"],
    );
    assert!(res.iter().all(|r| r.outcome == Outcome::Ok), "{res:?}");
    let c = &sink.conns()[0];
    assert_eq!(
        &c.commands[..3],
        ["EHLO sloop.test", "HELO sloop.test", "MAIL FROM:<s@x.test>"]
    );
    assert!(!c.pipelined);
}

#[test]
fn sessions_are_reused_with_rset_and_smarthost_is_used() {
    let sink = Sink::start(Script::default());
    let dir = TestDir::new("deliver-remote-reuse");
    let smarthost = format!("\"127.0.0.1:{}\"", sink.port);
    let cfg = config(&dir, &[], &[("remote.smarthost", &smarthost)]);
    let (_, p1) = queue(&dir, "s@x.test", &["a@one.test"], MSG);
    let (_, p2) = queue(&dir, "s@x.test", &["b@two.test"], MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    assert_eq!(
        w.run(Remote, &p1, "s@x.test", &["a@one.test"])[0].outcome,
        Outcome::Ok
    );
    assert_eq!(
        w.run(Remote, &p2, "s@x.test", &["b@two.test"])[0].outcome,
        Outcome::Ok
    );
    let conns = sink.conns();
    assert_eq!(conns.len(), 1, "one connection for both messages");
    assert_eq!(conns[0].messages.len(), 2);
    assert!(
        conns[0].commands.iter().any(|c| c == "RSET"),
        "{:?}",
        conns[0].commands
    );
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn over_size_message_fails_without_sending() {
    let sink = Sink::start(Script {
        ehlo: Some(vec!["SIZE 10".into()]),
        ..Script::default()
    });
    let dir = TestDir::new("deliver-remote-size");
    let cfg = config(&dir, &[("example.net", sink.port)], &[]);
    let (_, path) = queue(&dir, "s@x.test", &["a@example.net"], MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    let res = w.run(Remote, &path, "s@x.test", &["a@example.net"]);
    assert_eq!(
        (res[0].outcome, res[0].dsn.as_str()),
        (Outcome::Fail, "5.3.4")
    );
    assert!(sink.conns()[0].messages.is_empty());
}

#[test]
fn dsn_parameters_are_passed_on_when_offered() {
    use sloop_common::spool::{commit, Envelope, QueueState, Recipient, Ret, Spool};
    let sink = Sink::start(Script {
        ehlo: Some(vec!["PIPELINING".into(), "DSN".into()]),
        ..Script::default()
    });
    let dir = TestDir::new("deliver-remote-dsn");
    let cfg = config(&dir, &[("example.net", sink.port)], &[]);
    let spool = Spool::new(dir.spool());
    spool.ensure_layout().unwrap();
    let mut r = Recipient::new("a@example.net");
    r.notify = Some("FAILURE,DELAY".into());
    r.orcpt = Some("rfc822;a@example.net".into());
    let mut env = Envelope::new("s@x.test", vec![r, Recipient::new("b@example.net")]);
    env.ret = Some(Ret::Hdrs);
    env.envid = Some("QQ314159".into());
    let id = commit(&spool, &mut &MSG[..], env, 0).unwrap();
    let path = spool.path(QueueState::Incoming, &id);
    let mut w = Worker::start(&dir, "remote", &cfg);
    let res = w.run(
        Remote,
        &path,
        "s@x.test",
        &["a@example.net", "b@example.net"],
    );
    assert!(res.iter().all(|r| r.outcome == Outcome::Ok), "{res:?}");
    let c = &sink.conns()[0];
    assert_eq!(
        c.commands[1],
        "MAIL FROM:<s@x.test> RET=HDRS ENVID=QQ314159"
    );
    assert_eq!(
        c.commands[2],
        "RCPT TO:<a@example.net> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@example.net"
    );
    assert_eq!(c.commands[3], "RCPT TO:<b@example.net>");
}

#[test]
fn a_cached_session_that_breaks_before_mail_is_replaced() {
    let sink = Sink::start(Script {
        drop_second_mail: true,
        ..Script::default()
    });
    let dir = TestDir::new("deliver-remote-rebreak");
    let cfg = config(&dir, &[("example.net", sink.port)], &[]);
    let (_, p1) = queue(&dir, "s@x.test", &["a@example.net"], MSG);
    let (_, p2) = queue(&dir, "s@x.test", &["b@example.net"], MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    assert_eq!(
        w.run(Remote, &p1, "s@x.test", &["a@example.net"])[0].outcome,
        Outcome::Ok
    );
    let res = w.run(Remote, &p2, "s@x.test", &["b@example.net"]);
    assert_eq!(res[0].outcome, Outcome::Ok, "{res:?}");
    let conns = sink.conns();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].messages.len() + conns[1].messages.len(), 2);
    assert_eq!(w.finish(), Some(0));
}

#[test]
fn crlf_in_a_recipient_cannot_inject_commands() {
    let sink = Sink::start(Script::default());
    let dir = TestDir::new("deliver-remote-inject");
    let cfg = config(&dir, &[("example.net", sink.port)], &[]);
    let (_, path) = queue(&dir, "s@x.test", &["a@example.net"], MSG);
    let mut w = Worker::start(&dir, "remote", &cfg);
    let rcpts = [
        "x@example.net>\r\nRSET\r\nRCPT TO:<y@example.net",
        "a@example.net",
    ];
    let res = w.run(Remote, &path, "s@x.test", &rcpts);
    assert_eq!(
        (res[0].outcome, res[0].dsn.as_str()),
        (Outcome::Fail, "5.1.3")
    );
    assert_eq!(res[1].outcome, Outcome::Ok);
    let c = &sink.conns()[0];
    assert!(
        !c.commands
            .iter()
            .any(|l| l == "RSET" || l.contains("y@example")),
        "{c:?}"
    );
}
