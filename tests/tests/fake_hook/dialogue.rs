//! The SMTP steps of the failure tests and the replies they expect: each helper
//! asserts the exact reply and prints the daemon's logs when it differs.

use super::mta::{within, Mta};
use sloop_tests::{Smtp, TestDir};
use std::time::{Duration, Instant};

/// `on_error = "tempfail"` in a message phase.
pub const TEMPFAIL: &str = "451 4.3.5 Server configuration problem";
/// `on_error = "reject"` in a message phase.
pub const REJECT: &str = "550 5.3.5 Server configuration problem";
/// `on_error = "reject"` at connect.
pub const REJECT_CONNECT: &str = "554 5.3.5 Server configuration problem";
/// `on_error = "shutdown"` anywhere, or `tempfail` at connect and helo.
pub const SHUTDOWN: &str = "421 4.3.5 Server configuration problem";
/// The default greeting of the test config.
pub const GREETING: &str = "220 sloop.test ESMTP Sloop";

/// A `[[policy]]` table.
pub fn policy(name: &str, socket: &str, stage: &str, extra: &str) -> String {
    format!("[[policy]]\nname = \"{name}\"\nsocket = \"{socket}\"\nstage = \"{stage}\"\n{extra}\n")
}

/// A `[[milter]]` table.
pub fn milter(name: &str, socket: &str, extra: &str) -> String {
    format!("[[milter]]\nname = \"{name}\"\nsocket = \"{socket}\"\n{extra}\n")
}

/// The reply's one line (panics on a multi-line reply or a closed connection).
pub fn line(c: &mut Smtp, mta: &Mta) -> String {
    let r = c.reply();
    assert_eq!(
        r.len(),
        1,
        "expected one reply line, got {r:?}\n{}",
        mta.all_logs()
    );
    r[0].clone()
}

/// Sends `command` and asserts the exact one-line reply.
pub fn expect(c: &mut Smtp, command: &str, want: &str, mta: &Mta) {
    c.send(command);
    let got = c.reply();
    assert_eq!(
        got,
        vec![want.to_string()],
        "after {command:?}\n{}",
        mta.all_logs()
    );
}

/// Sends `command`, asserts the reply starts with `code`.
pub fn ok(c: &mut Smtp, command: &str, code: u16, mta: &Mta) {
    c.send(command);
    let r = c.reply();
    let got = r.last().and_then(|l| l.get(..3)).unwrap_or("");
    assert_eq!(
        got,
        code.to_string(),
        "after {command:?}: {r:?}\n{}",
        mta.all_logs()
    );
}

/// Reads the greeting and asserts it exactly, within `budget`.
pub fn greeting(c: &mut Smtp, start: Instant, want: &str, budget: Duration, mta: &Mta) {
    let got = c.reply();
    within(start.elapsed(), budget, "greeting");
    assert_eq!(got, vec![want.to_string()], "{}", mta.all_logs());
}

/// Asserts the server closed the connection.
pub fn closed(c: &mut Smtp, mta: &Mta) {
    assert!(c.closed(), "connection still open\n{}", mta.all_logs());
}

/// EHLO, MAIL, one RCPT, all accepted.
pub fn envelope(c: &mut Smtp, mta: &Mta) {
    ok(c, "EHLO client.test", 250, mta);
    ok(c, "MAIL FROM:<s@b.example>", 250, mta);
    ok(c, "RCPT TO:<a@localhost.test>", 250, mta);
}

/// DATA and a short message; returns the reply to the final dot.
pub fn message(c: &mut Smtp, mta: &Mta) -> String {
    ok(c, "DATA", 354, mta);
    c.send_raw(b"Subject: failures\r\nX-Test: 1\r\n\r\nbody line\r\n.\r\n");
    line(c, mta)
}

/// The events (not abort or quit) a filter was sent after the first `at`; panics when
/// `at` never came (the misbehaviour was not reached).
pub fn events_after(seen: &str, at: u8) -> String {
    let i = seen
        .find(at as char)
        .unwrap_or_else(|| panic!("{} never sent: {seen}", at as char));
    seen[i + 1..]
        .chars()
        .filter(|c| !matches!(*c, 'A' | 'Q' | 'K'))
        .collect()
}

pub fn start(name: &str, overrides: &[(&str, &str)], hooks: &str) -> Mta {
    Mta::start(TestDir::new(name), overrides, hooks)
}
