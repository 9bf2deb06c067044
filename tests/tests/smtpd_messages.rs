//! End-to-end: messages sent through `sloopd` + `sloop-smtpd` with Python's smtplib
//! (and a raw client for BDAT and pipelining) are committed byte-exact apart from the
//! added `Received` header: plain ASCII, 8-bit body, SMTPUTF8 addresses, dot lines,
//! 10 MiB, 100 recipients, BDAT chunks, pipelined batches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;

use sloop_tests::Smtp;
use smtpd_support::{queued_id, strip_received, Server};

const SEND: &str = r#"
import smtplib, json, sys
spec = json.load(open(sys.argv[1]))
s = smtplib.SMTP('127.0.0.1', PORT, local_hostname='client.test', timeout=120)
s.ehlo()
for m in spec:
    data = open(m['file'], 'rb').read()
    code, resp = s.mail(m['from'], m.get('mail_opts', []))
    assert code == 250, (code, resp)
    for r in m['to']:
        code, resp = s.rcpt(r, m.get('rcpt_opts', []))
        assert code == 250, (r, code, resp)
    code, resp = s.data(data)
    assert code == 250, (code, resp)
    print(resp.decode())
s.quit()
"#;

struct Msg {
    from: &'static str,
    to: Vec<String>,
    body: Vec<u8>,
    mail_opts: Vec<&'static str>,
}

/// Sends `msgs` in one session; returns their queue IDs.
fn send(server: &Server, msgs: &[Msg]) -> Vec<String> {
    let mut spec = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let file = server.dir.path.join(format!("msg{i}"));
        std::fs::write(&file, &m.body).unwrap();
        spec.push(serde_json::json!({
            "from": m.from, "to": m.to, "file": file, "mail_opts": m.mail_opts,
        }));
    }
    let spec_file = server.dir.path.join("spec.json");
    std::fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = server.python(SEND, &[spec_file.to_str().unwrap()]);
    out.lines().map(queued_id).collect()
}

fn msg(from: &'static str, to: &str, body: &[u8]) -> Msg {
    Msg {
        from,
        to: vec![to.to_string()],
        body: body.to_vec(),
        mail_opts: vec![],
    }
}

#[test]
fn messages_are_committed_byte_exact() {
    let server = Server::start("smtpd-messages", &[], &[]);
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    let line = format!("{}\r\n", "0123456789abcdef".repeat(6));
    while big.len() < 10 * 1024 * 1024 {
        big.extend_from_slice(line.as_bytes());
    }
    let mut many = msg(
        "many@b.example",
        "x@localhost.test",
        b"Subject: many\r\n\r\nhi\r\n",
    );
    many.to = (0..100)
        .map(|i| format!("user{i}@localhost.test"))
        .collect();
    let mut eight = msg(
        "a@b.example",
        "y@localhost.test",
        "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße, ½ € \u{1F600}\r\n"
            .as_bytes(),
    );
    eight.mail_opts = vec!["BODY=8BITMIME"];
    let mut utf8 = msg(
        "δοκιμή@b.example",
        "用户@localhost.test",
        "Subject: utf8\r\n\r\nü\r\n".as_bytes(),
    );
    utf8.mail_opts = vec!["SMTPUTF8", "BODY=8BITMIME"];
    let msgs = vec![
        msg(
            "a@b.example",
            "alice@localhost.test",
            b"Subject: plain\r\n\r\nHello.\r\n",
        ),
        eight,
        utf8,
        msg(
            "",
            "dots@localhost.test",
            b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend.\r\n. \r\n",
        ),
        Msg {
            from: "big@b.example",
            to: vec!["big@localhost.test".into()],
            body: big,
            mail_opts: vec!["SIZE=10500000"],
        },
        many,
    ];
    let ids = send(&server, &msgs);
    assert_eq!(ids.len(), msgs.len(), "{ids:?}");
    for (id, m) in ids.iter().zip(&msgs) {
        let (env, committed) = server.committed(id);
        assert_eq!(
            strip_received(&committed),
            &m.body[..],
            "message {id} differs"
        );
        let head = String::from_utf8_lossy(&committed[..200.min(committed.len())]).into_owned();
        assert!(head.contains(&format!("id {id}")), "{head}");
        assert!(head.contains("(unknown [127.0.0.1])"), "{head}");
        assert_eq!(env.sender, m.from);
        assert_eq!(env.recipients.len(), m.to.len());
        assert_eq!(env.client.as_deref(), Some("unknown[127.0.0.1]"));
    }
    let (env, committed) = server.committed(&ids[2]);
    assert!(env.smtputf8);
    assert_eq!(env.recipients[0].address, "用户@localhost.test");
    assert!(String::from_utf8_lossy(&committed).contains("with UTF8SMTP id"));
    assert_eq!(
        server.committed(&ids[1]).0.body.as_deref(),
        Some("8BITMIME")
    );
    assert!(server
        .log()
        .contains(&format!("{}: client=unknown[127.0.0.1]", ids[0])));
    assert!(server.log().contains(
        "disconnect from unknown[127.0.0.1] ehlo=1 mail=6 rcpt=105 data=6 quit=1 commands=119"
    ));
}

#[test]
fn bdat_and_pipelined_batches() {
    let server = Server::start("smtpd-bdat", &[], &[]);
    let mut c = Smtp::connect(server.port);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    // One pipelined batch: two transactions, the second with BDAT chunks.
    let mut batch = String::from("MAIL FROM:<a@b.example>\r\n");
    for i in 0..20 {
        batch.push_str(&format!(
            "RCPT TO:<p{i}@localhost.test> NOTIFY=FAILURE,DELAY\r\n"
        ));
    }
    batch.push_str("DATA\r\n");
    c.send_raw(batch.as_bytes());
    for _ in 0..21 {
        assert_eq!(c.code(), 250);
    }
    assert_eq!(c.code(), 354);
    c.send_raw(b"Subject: piped\r\n\r\n..x\r\n.\r\nMAIL FROM:<> RET=HDRS ENVID=e1\r\nRCPT TO:<q@localhost.test>\r\n");
    let first = c.reply();
    assert!(
        first[0].starts_with("250 2.0.0 Ok: queued as "),
        "{first:?}"
    );
    assert_eq!(c.code(), 250);
    assert_eq!(c.code(), 250);
    c.send_raw(b"BDAT 12\r\nSubject: b\r\nBDAT 0\r\nBDAT 9 LAST\r\n\r\nchunk\r\n");
    assert_eq!(c.code(), 250);
    assert_eq!(c.code(), 250);
    let last = c.reply();
    assert!(last[0].starts_with("250 2.0.0 Ok: queued as "), "{last:?}");
    assert_eq!(c.cmd("QUIT"), 221);

    let (env, m) = server.committed(&queued_id(&first[0]));
    assert_eq!(strip_received(&m), b"Subject: piped\r\n\r\n.x\r\n");
    assert_eq!(env.recipients.len(), 20);
    assert_eq!(env.recipients[3].notify.as_deref(), Some("FAILURE,DELAY"));
    let (env, m) = server.committed(&queued_id(&last[0]));
    assert_eq!(strip_received(&m), b"Subject: b\r\n\r\nchunk\r\n");
    assert_eq!(env.envid.as_deref(), Some("e1"));
    assert_eq!(env.ret, Some(sloop_common::spool::Ret::Hdrs));
}

/// Regression: a message within a few hundred octets of `smtpd.max_message_size`,
/// accepted by SIZE and by the DATA receiver, was refused after the upload because
/// the limit at commit counted Sloop's own `Received` header. The limit applies to the
/// client's octets, in the in-process commit and through `sloop-queue` alike.
#[test]
fn a_message_of_exactly_the_size_limit_is_accepted() {
    for (name, queue_program) in [("size-inproc", Some("\"\"")), ("size-queue", None)] {
        let mut overrides = vec![("smtpd.max_message_size", "\"4K\"")];
        if let Some(q) = queue_program {
            overrides.push(("smtpd.queue_program", q));
        }
        let server = Server::start(name, &overrides, &[]);
        // 64 lines of 62 octets + CRLF: exactly 4096 octets, the limit.
        let line = format!("{}\r\n", "x".repeat(62));
        let body = line.repeat(64);
        assert_eq!(body.len(), 4096);
        let mut c = Smtp::connect(server.port);
        assert_eq!(c.code(), 220);
        assert_eq!(c.cmd("EHLO client.test"), 250);
        for (extra, want) in [("", 250u16), ("y\r\n", 552)] {
            let size = body.len() + extra.len();
            assert_eq!(
                c.cmd(&format!("MAIL FROM:<a@b.example> SIZE={}", body.len())),
                250
            );
            assert_eq!(c.cmd("RCPT TO:<u@localhost.test>"), 250);
            assert_eq!(c.cmd("DATA"), 354);
            c.send_raw(format!("{body}{extra}.\r\n").as_bytes());
            let r = c.reply();
            assert!(
                r[0].starts_with(&want.to_string()),
                "{name}: {size} octets: {r:?}\n{}",
                server.log()
            );
        }
        assert_eq!(c.cmd("QUIT"), 221);
    }
}
