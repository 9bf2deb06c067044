//! `log.target = "syslog"`: every program sends its lines to `log.syslog_socket` as
//! `sloop/<name>[pid]`, facility mail; a tiny datagram listener (Python) writes them as
//! a syslog daemon writes /var/log/mail.log, and Debian's `pflogsumm` counts what this
//! test did: received, delivered, deferred, bounced, rejected. With
//! `log.syslog_name = "postfix"` the lines say `postfix/<name>` and pflogsumm reads
//! them without options.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_tests::{bin, free_port, wait_until, Daemon, Smtp, TestDir};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Receives RFC 3164 datagrams on argv[1]; writes `Mmm dd hh:mm:ss host <message>`
/// lines to argv[2] and `<facility> <severity>` per line to argv[2].pri.
const LISTENER: &str = r#"
import os, re, socket, sys, time
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
f, p = open(out, 'a'), open(out + '.pri', 'a')
print('ready', flush=True)
while True:
    data = s.recv(65536).decode('utf-8', 'replace')
    m = re.match(r'<(\d+)>(.*)', data, re.S)
    if not m:
        continue
    pri = int(m.group(1))
    f.write(time.strftime('%b %e %H:%M:%S') + ' testhost ' + m.group(2).rstrip('\n') + '\n')
    f.flush()
    p.write('%d %d\n' % (pri >> 3, pri & 7))
    p.flush()
"#;

struct Listener(Child);

impl Listener {
    fn start(socket: &Path, out: &Path) -> Listener {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(LISTENER)
            .arg(socket)
            .arg(out)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn transaction(port: u16, from: &str, rcpt: &str, accepted: bool) {
    let mut s = Smtp::connect(port);
    assert_eq!(s.code(), 220);
    assert_eq!(s.cmd("EHLO client.test"), 250);
    assert_eq!(s.cmd(&format!("MAIL FROM:<{from}>")), 250);
    let code = s.cmd(&format!("RCPT TO:<{rcpt}>"));
    if !accepted {
        assert_eq!(code / 100, 5, "RCPT {rcpt}");
        assert_eq!(s.cmd("QUIT"), 221);
        return;
    }
    assert_eq!(code, 250, "RCPT {rcpt}");
    assert_eq!(s.cmd("DATA"), 354);
    s.send_raw(b"Subject: counted\r\n\r\nhello\r\n.\r\n");
    assert_eq!(s.code(), 250);
    assert_eq!(s.cmd("QUIT"), 221);
}

/// The number before `word` in pflogsumm's "Grand Totals".
fn total(report: &str, word: &str) -> u32 {
    report
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut f| {
            let n = f.next()?.parse().ok()?;
            (f.next()? == word).then_some(n)
        })
        .unwrap_or_else(|| panic!("no {word} line in:\n{report}"))
}

/// Whether Debian's pflogsumm is there; without it `test` is skipped, unless the run
/// requires every peer (`SLOOP_REQUIRE_PEERS=1`, as CI).
fn pflogsumm_installed(test: &str) -> bool {
    if Command::new("pflogsumm").arg("--help").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("SLOOP_REQUIRE_PEERS").as_deref() != Ok("1"),
        "pflogsumm not installed"
    );
    println!("SKIP: {test}: pflogsumm not installed");
    false
}

/// A test directory with a syslog listener writing `mail.log` in it.
struct SyslogRun {
    dir: TestDir,
    maillog: PathBuf,
    port: u16,
    _listener: Listener,
}

impl SyslogRun {
    fn start(name: &str) -> SyslogRun {
        let dir = TestDir::new(name);
        let maillog = dir.path.join("mail.log");
        let listener = Listener::start(&dir.path.join("log.sock"), &maillog);
        SyslogRun {
            dir,
            maillog,
            port: free_port(),
            _listener: listener,
        }
    }

    /// A config logging to the listener, with `more` keys.
    fn config(&self, more: &[(&str, &str)]) -> PathBuf {
        let socket = quoted(&self.dir.path.join("log.sock"));
        let mut keys = vec![("log.target", "\"syslog\""), ("log.syslog_socket", &socket)];
        keys.extend_from_slice(more);
        self.dir.write_config(self.port, &keys, "")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.maillog).unwrap_or_default()
    }
}

/// A path as a TOML string.
fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[test]
fn pflogsumm_counts_what_happened() {
    if !pflogsumm_installed("pflogsumm_counts_what_happened") {
        return;
    }
    let run = SyslogRun::start("logs-syslog");
    let aliases = run.dir.path.join("aliases");
    std::fs::write(&aliases, "fail: \"|exit 67\"\nlater: \"|exit 75\"\n").unwrap();
    let config = run.config(&[("local.aliases", &quoted(&aliases))]);
    let (port, maillog) = (run.port, &run.maillog);
    let d = Daemon::start(&config, port);
    let log = || run.log();
    let count = |s: &str| log().matches(s).count();
    // Received by SMTP: 2 delivered, 1 bounced, 1 deferred (null senders, so no DSN
    // and no delay warning; the bounce of a message from <> goes to postmaster, and
    // that notice is one more delivery); 1 transaction rejected at RCPT.
    transaction(port, "alice@far.test", "bob@localhost.test", true);
    transaction(port, "alice@far.test", "carol@localhost.test", true);
    transaction(port, "", "fail@localhost.test", true);
    transaction(port, "", "later@localhost.test", true);
    transaction(port, "alice@far.test", "a/b@localhost.test", false);
    // Received by sendmail (Postfix's pickup line), delivered.
    let mut sm = Command::new(bin("sloop-sendmail"))
        .arg("-C")
        .arg(&config)
        .arg("dave@localhost.test")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sm.stdin
        .take()
        .unwrap()
        .write_all(b"Subject: local\n\nhi\n")
        .unwrap();
    assert!(sm.wait().unwrap().success());
    let settled = wait_until(Duration::from_secs(60), || {
        count("status=sent") >= 4 && count("status=bounced") >= 1 && count("status=deferred") >= 1
    });
    assert!(settled, "{}\n{}", log(), d.log_text());
    drop(d);
    let text = log();
    for ident in [
        "sloop/master[",
        "sloop/smtpd[",
        "sloop/qmgr[",
        "sloop/pickup[",
    ] {
        assert!(text.contains(ident), "no {ident} line in:\n{text}");
    }
    let pri = std::fs::read_to_string(run.dir.path.join("mail.log.pri")).unwrap();
    assert!(
        pri.lines().all(|l| l.starts_with("2 ")),
        "facility mail:\n{pri}"
    );
    let out = Command::new("pflogsumm")
        .arg("--syslog-name=sloop")
        .arg(maillog)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}");
    assert_eq!(total(&report, "received"), 5, "{report}\n{text}");
    // bob, carol, dave, and the postmaster notice of the bounce.
    assert_eq!(total(&report, "delivered"), 4, "{report}\n{text}");
    assert_eq!(total(&report, "deferred"), 1, "{report}\n{text}");
    assert_eq!(total(&report, "bounced"), 1, "{report}\n{text}");
    // Our RCPT, and any connection the harness's readiness probe closed before the
    // greeting (logged as an early talker's reject).
    let probes = text.matches("reject: early talker").count() as u32;
    assert_eq!(total(&report, "rejected"), 1 + probes, "{report}\n{text}");
    println!("pflogsumm report:\n{report}");
}

/// `log.syslog_name = "postfix"`: the lines carry `postfix/<name>`, so a log tool that
/// knows only Postfix (pflogsumm without `--syslog-name`) counts Sloop's mail as is.
#[test]
fn a_postfix_syslog_name_is_read_by_postfix_tools_unchanged() {
    if !pflogsumm_installed("a_postfix_syslog_name_is_read_by_postfix_tools_unchanged") {
        return;
    }
    let run = SyslogRun::start("logs-syslog-name");
    let config = run.config(&[("log.syslog_name", "\"postfix\"")]);
    let (port, maillog) = (run.port, &run.maillog);
    let d = Daemon::start(&config, port);
    let log = || run.log();
    transaction(port, "alice@far.test", "bob@localhost.test", true);
    let settled = wait_until(Duration::from_secs(60), || log().contains("status=sent"));
    assert!(settled, "{}\n{}", log(), d.log_text());
    drop(d);
    let text = log();
    for ident in ["postfix/master[", "postfix/smtpd[", "postfix/qmgr["] {
        assert!(text.contains(ident), "no {ident} line in:\n{text}");
    }
    assert!(
        !text.contains(" testhost sloop/"),
        "a line kept the default name:\n{text}"
    );
    let out = Command::new("pflogsumm").arg(maillog).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}");
    assert_eq!(total(&report, "received"), 1, "{report}\n{text}");
    assert_eq!(total(&report, "delivered"), 1, "{report}\n{text}");
}
