//! sloop-qmgr with the real `sloop-deliver` workers: local delivery into a Maildir
//! that Python's `mailbox.Maildir` reads, and remote delivery over a `remote.routes`
//! entry to a loopback SMTP sink written in Python (451 once then accept: deferred then
//! delivered; 550: a DSN lands in the sender's local Maildir and parses as
//! multipart/report).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod qmgr_support;

use qmgr_support::{python_report, Setup};
use sloop_tests::{free_port, maildir_new, python, wait_until};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A loopback SMTP sink: `reject` answers 550 to RCPT; `tempfail-once` answers 451 to
/// the first RCPT and 250 after. Messages accepted are written to `outdir/<n>`.
const SINK: &str = r#"
import os, socket, sys, threading
port, mode, outdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', port))
srv.listen(16)
rcpts = [0]
lock = threading.Lock()
def handle(c):
    f = c.makefile('rb')
    w = lambda s: c.sendall(s.encode() + b'\r\n')
    w('220 sink ESMTP')
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.strip().upper()
        if cmd.startswith(b'EHLO') or cmd.startswith(b'HELO'):
            w('250 sink')
        elif cmd.startswith(b'MAIL') or cmd in (b'RSET', b'NOOP'):
            w('250 2.1.0 ok')
        elif cmd.startswith(b'RCPT'):
            with lock:
                rcpts[0] += 1
                n = rcpts[0]
            if mode == 'reject':
                w('550 5.1.1 no such user here')
            elif mode == 'tempfail-once' and n == 1:
                w('451 4.3.0 try again later')
            else:
                w('250 2.1.5 ok')
        elif cmd == b'DATA':
            w('354 go ahead')
            data = []
            while True:
                l = f.readline()
                if l in (b'.\r\n', b''):
                    break
                data.append(l)
            with lock:
                name = os.path.join(outdir, str(len(os.listdir(outdir))))
                open(name, 'wb').write(b''.join(data))
            w('250 2.0.0 queued')
        elif cmd == b'QUIT':
            w('221 bye')
            c.close()
            return
        else:
            w('502 5.5.2 unknown command')
print('ready', flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    fn start(mode: &str, outdir: &Path) -> Sink {
        std::fs::create_dir_all(outdir).unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SINK)
            .arg(port.to_string())
            .arg(mode)
            .arg(outdir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Sink { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn local_delivery_into_maildir_read_by_python() {
    let s = Setup::with_real_workers("qmgr-real-local", &[]);
    let q = s.start();
    let original: &[u8] =
        b"From: Alice <alice@localhost.test>\r\nTo: bob@localhost.test\r\nSubject: real local\r\n\r\nLine one.\r\n.Leading dot\r\n";
    let id = s.inject_raw("alice@localhost.test", &["bob@localhost.test"], original);
    q.wait_log(&format!("{id}: removed"), 30);
    assert!(q.log_text().contains("status=sent"));
    let files = maildir_new(&s.dir.mail(), "localhost.test", "bob");
    assert_eq!(files.len(), 1, "{}", q.log_text());
    let delivered = std::fs::read(&files[0]).unwrap();
    let norm = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    let (got, want) = (norm(&delivered), norm(original));
    assert!(got.ends_with(&want), "not byte-exact:\n{got}");
    let added = &got[..got.len() - want.len()];
    assert!(
        added.contains("Return-Path: <alice@localhost.test>"),
        "{added}"
    );
    assert!(
        added.contains("Delivered-To: bob@localhost.test"),
        "{added}"
    );
    let script = "import mailbox, sys\nmd = mailbox.Maildir(sys.argv[1], create=False)\nfor k, m in md.items():\n    print(m['Subject'])\n";
    let maildir = s.dir.mail().join("localhost.test/bob/Maildir");
    let (code, out, err) = python(script, &[&maildir.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "real local");
}

#[test]
fn remote_route_defers_on_451_then_delivers_and_550_bounces_to_local_sender() {
    let s0 = Setup::with_real_workers("qmgr-real-remote", &[]);
    let tempfail = Sink::start("tempfail-once", &s0.dir.path.join("sink-tempfail"));
    let reject = Sink::start("reject", &s0.dir.path.join("sink-reject"));
    let routes = format!(
        "{{ \"later.test\" = \"127.0.0.1:{}\", \"reject.test\" = \"127.0.0.1:{}\" }}",
        tempfail.port, reject.port
    );
    // Rewrite the config of the same directory with the routes.
    let config = s0
        .dir
        .write_config(free_port(), &[("remote.routes", routes.as_str())], "");
    assert_eq!(config, s0.config);
    let q = s0.start();

    let later = s0.inject("alice@localhost.test", &["carol@later.test"], "later");
    q.wait_log(&format!("{later}: removed"), 60);
    let log = q.log_text();
    let deferred = log
        .find("to=<carol@later.test>")
        .and_then(|i| log[i..].find("status=deferred").map(|j| i + j));
    let sent = log.find("status=sent");
    assert!(deferred.is_some() && sent > deferred, "{log}");
    let got = sloop_tests::files_under(&s0.dir.path.join("sink-tempfail"));
    assert_eq!(got.len(), 1, "{log}");
    assert!(String::from_utf8_lossy(&std::fs::read(&got[0]).unwrap()).contains("Subject: later"));

    let doomed = s0.inject("alice@localhost.test", &["dave@reject.test"], "doomed");
    q.wait_log(&format!("{doomed}: removed"), 60);
    let ok = wait_until(Duration::from_secs(30), || {
        !maildir_new(&s0.dir.mail(), "localhost.test", "alice").is_empty()
    });
    assert!(ok, "no DSN in alice's Maildir:\n{}", q.log_text());
    let dsn = &maildir_new(&s0.dir.mail(), "localhost.test", "alice")[0];
    let (ctype, out) = python_report(dsn);
    assert_eq!(ctype, "multipart/report delivery-status", "{out}");
    assert!(
        out.contains("DS Final-Recipient: rfc822; dave@reject.test"),
        "{out}"
    );
    assert!(out.contains("DS Action: failed"), "{out}");
    assert!(out.contains("DS Status: 5.1.1"), "{out}");
    assert!(out.contains("550"), "{out}");
}

#[test]
fn full_stack_smtplib_to_maildir_through_sloopd() {
    let s = Setup::with_real_workers("qmgr-real-stack", &[]);
    let port = free_port();
    let config = s.dir.write_config(port, &[], "");
    let d = sloop_tests::Daemon::start(&config, port);
    let script = r#"
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m['From'] = 'alice@localhost.test'
m['To'] = 'erin@localhost.test'
m['Subject'] = 'full stack'
m.set_content('Hello through sloopd.\n')
with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=30) as c:
    c.send_message(m)
"#;
    let (code, _, err) = python(script, &[&port.to_string()]);
    assert_eq!(code, 0, "smtplib: {err}\n{}", d.log_text());
    let ok = wait_until(Duration::from_secs(30), || {
        maildir_new(&s.dir.mail(), "localhost.test", "erin").len() == 1
    });
    assert!(
        ok,
        "not delivered:\n{}",
        qmgr_support::tail(&d.log_text(), 40)
    );
    let read = "import mailbox, sys\nfor m in mailbox.Maildir(sys.argv[1], create=False):\n    print(m['Subject'])\n";
    let maildir = s.dir.mail().join("localhost.test/erin/Maildir");
    let (code, out, err) = python(read, &[&maildir.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "full stack");
    let log = d.log_text();
    assert!(log.contains("sloop-qmgr"), "{log}");
    assert!(log.contains(": removed"), "{log}");
}
