//! Relay control end to end: every relay trick (%-hack, bang paths, quoted `@`,
//! source routes, IP literals, plain remote addresses) is refused with
//! `554 5.7.1 Relay access denied` from an address outside `relay.networks`, and
//! accepted from a trusted one, stored as the real destination (a configured remote
//! route). Local recipients are accepted from anyone; unknown local ones get 550 5.1.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;

use smtpd_support::{queued_id, Server};

const TRICKS: [(&str, &str); 7] = [
    ("x@remote.test", "x@remote.test"),
    ("x%remote.test@localhost.test", "x@remote.test"),
    ("remote.test!x@localhost.test", "x@remote.test"),
    ("remote.test!x", "x@remote.test"),
    ("\"x@remote.test\"@localhost.test", "x@remote.test"),
    ("@localhost.test,@other.test:x@remote.test", "x@remote.test"),
    ("x@[192.0.2.1]", "x@[192.0.2.1]"),
];

/// Connects from `source`, sends MAIL and one RCPT per argument (in one transaction),
/// prints each RCPT reply; with `data`, sends a message and prints the final reply.
const RCPTS: &str = r#"
import smtplib, sys
source, data, rcpts = sys.argv[1], sys.argv[2] == 'data', sys.argv[3:]
s = smtplib.SMTP('127.0.0.1', PORT, local_hostname='client.test', source_address=(source, 0))
s.ehlo()
assert s.docmd('MAIL FROM:<a@b.example>')[0] == 250
for r in rcpts:
    code, msg = s.docmd('RCPT TO:<%s>' % r)
    print(code, msg.decode())
if data:
    code, msg = s.data(b'Subject: relay\r\n\r\nhi\r\n')
    print(code, msg.decode())
s.quit()
"#;

#[test]
fn relay_tricks_refused_untrusted_accepted_trusted() {
    let server = Server::start(
        "smtpd-relay",
        &[
            ("relay.networks", "[\"127.0.0.1/32\"]"),
            ("local.mailboxes", "[\"alice@localhost.test\"]"),
            ("remote.routes", "{ \"remote.test\" = \"127.0.0.1:2\" }"),
        ],
        &[],
    );
    let forms: Vec<&str> = TRICKS.iter().map(|(f, _)| *f).collect();
    let mut args = vec!["127.0.0.2", "nodata"];
    args.extend(&forms);
    args.push("alice@localhost.test");
    args.push("bob@localhost.test");
    let out = server.python(RCPTS, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), forms.len() + 2, "{out}");
    for (form, line) in forms.iter().zip(&lines) {
        assert!(line.starts_with("554 5.7.1 "), "{form}: {line}");
        assert!(line.contains("Relay access denied"), "{form}: {line}");
    }
    assert!(lines[forms.len()].starts_with("250 "), "{out}");
    assert!(lines[forms.len() + 1].starts_with("550 5.1.1 "), "{out}");
    assert!(server.log().contains("reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 <x@remote.test>: Relay access denied; from=<a@b.example> to=<x@remote.test>"), "{}", server.log());

    let mut args = vec!["127.0.0.1", "data"];
    args.extend(&forms);
    let out = server.python(RCPTS, &args);
    let lines: Vec<&str> = out.lines().collect();
    for (form, line) in forms.iter().zip(&lines) {
        assert!(line.starts_with("250 "), "{form}: {line}");
    }
    let last = lines.last().unwrap();
    assert!(last.starts_with("250 2.0.0 Ok: queued as "), "{out}");
    let (env, _) = server.committed(&queued_id(last));
    let stored: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    let want: Vec<&str> = TRICKS.iter().map(|(_, w)| *w).collect();
    assert_eq!(stored, want);
}
