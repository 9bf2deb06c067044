//! Shared by the filter interop tests: one SMTP transaction with Python's smtplib
//! (optionally STARTTLS and AUTH first), test messages, header checks, and a `sloopd`
//! that delivers `localhost.test` into Maildirs, plus injection with `sloop-sendmail`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use sloop_tests::{maildir_new, wait_until, Daemon, TestDir, LOAD_MARGIN};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One SMTP transaction with Python's smtplib. Prints one line per step:
/// `STEP CODE TEXT` (STEP = EHLO, AUTH, MAIL, RCPT, DATA, or CLOSED when the server
/// hung up). Arguments: port, sender, recipient, message file, and optionally a user
/// and password (then STARTTLS and AUTH first).
pub const SMTP: &str = r#"
import smtplib, ssl, sys
port, sender, rcpt, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
user = sys.argv[5] if len(sys.argv) > 5 else None
message = open(path, "rb").read()
def show(step, code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    print(step, code, text.replace("\n", " "), flush=True)
try:
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=120)
    code, text = s.ehlo()
    show("EHLO", code, "")
    if user:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo()
        code, text = s.login(user, sys.argv[6])
        show("AUTH", code, text)
    code, text = s.mail(sender)
    show("MAIL", code, text)
    if code == 250:
        code, text = s.rcpt(rcpt)
        show("RCPT", code, text)
        if code in (250, 251):
            try:
                code, text = s.data(message)
            except smtplib.SMTPDataError as e:
                code, text = e.smtp_code, e.smtp_error
            show("DATA", code, text)
    s.quit()
except smtplib.SMTPServerDisconnected as e:
    show("CLOSED", 0, str(e))
"#;

/// The replies of one transaction, as (step, code, text).
pub struct Replies(pub Vec<(String, u16, String)>);

impl Replies {
    pub fn get(&self, step: &str) -> Option<(u16, &str)> {
        self.0
            .iter()
            .find(|(s, _, _)| s == step)
            .map(|(_, c, t)| (*c, t.as_str()))
    }

    pub fn code(&self, step: &str) -> u16 {
        self.get(step).map(|(c, _)| c).unwrap_or(0)
    }

    pub fn text(&self, step: &str) -> String {
        self.get(step)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (s, c, t) in &self.0 {
            writeln!(f, "{s} {c} {t}")?;
        }
        Ok(())
    }
}

/// A test message (CRLF line ends) from `from` with `body`, with the header fields a
/// DKIM signer signs.
pub fn message(from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <b@localhost.test>\r\nSubject: {subject}\r\n\
         Date: Thu, 03 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{subject}.{}@client.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n",
        std::process::id()
    )
}

/// Sends `msg` from `sender` to `rcpt` on 127.0.0.1:`port` with smtplib; `auth` =
/// (user, password) uses STARTTLS and AUTH first.
pub fn smtp(
    dir: &Path,
    port: u16,
    sender: &str,
    rcpt: &str,
    msg: &str,
    auth: Option<(&str, &str)>,
) -> Replies {
    let file = dir.join(format!("msg-{}.eml", next()));
    std::fs::write(&file, msg).unwrap();
    let port_s = port.to_string();
    let file_s = file.display().to_string();
    let mut args = vec![port_s.as_str(), sender, rcpt, file_s.as_str()];
    if let Some((u, p)) = auth {
        args.extend([u, p]);
    }
    let (code, out, err) = sloop_tests::python(SMTP, &args);
    assert_eq!(code, 0, "smtplib: {out}{err}");
    Replies(
        out.lines()
            .map(|l| {
                let mut it = l.splitn(3, ' ');
                let step = it.next().unwrap_or("").to_string();
                let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                (step, code, it.next().unwrap_or("").to_string())
            })
            .collect(),
    )
}

pub fn next() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

/// The header section of a stored message.
pub fn header(p: &Path) -> String {
    let text = read(p);
    let end = text
        .find("\r\n\r\n")
        .or_else(|| text.find("\n\n"))
        .unwrap_or(text.len());
    text[..end].to_string()
}

/// True when the header field starting `first` comes before the one starting `then`
/// (a prepended field is on top of the `Received:` the MTA added).
pub fn above(header: &str, first: &str, then: &str) -> bool {
    let at = |name: &str| header.lines().position(|l| l.starts_with(name));
    matches!((at(first), at(then)), (Some(a), Some(b)) if a < b)
}

/// Retries the greylisted transaction until it is accepted, polling no faster than
/// once a second, within the greylisting delay plus a margin for a loaded machine.
pub fn retry_until_accepted(delay: Duration, mut attempt: impl FnMut() -> Replies) -> Replies {
    let deadline = Instant::now() + delay + LOAD_MARGIN + Duration::from_secs(30);
    loop {
        let r = attempt();
        if r.code("RCPT") == 250 || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------- Sloop

/// A running sloopd delivering `localhost.test` into Maildirs under its TestDir, with
/// `extra` appended to its configuration (the `[[policy]]`/`[[milter]]` tables).
pub struct Sloop {
    pub dir: TestDir,
    pub daemon: Daemon,
    pub port: u16,
}

impl Sloop {
    pub fn start(name: &str, overrides: &[(&str, &str)], extra: &str) -> Sloop {
        let dir = TestDir::new(name);
        let port = sloop_tests::free_port();
        let cfg = dir.write_config(port, overrides, extra);
        let daemon = Daemon::start(&cfg, port);
        Sloop { dir, daemon, port }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path.join("sloop.toml")
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }

    /// Waits until `n` messages are in b@localhost.test's Maildir; returns them.
    pub fn wait_delivered(&self, n: usize) -> Vec<PathBuf> {
        let ok = wait_until(Duration::from_secs(60), || self.delivered().len() >= n);
        assert!(
            ok,
            "{} of {n} messages delivered; log:\n{}",
            self.delivered().len(),
            self.log()
        );
        self.delivered()
    }

    pub fn delivered(&self) -> Vec<PathBuf> {
        maildir_new(&self.dir.mail(), "localhost.test", "b")
    }
}

/// Injects `msg` for b@localhost.test with `sloop-sendmail -C config -t`-less form.
pub fn sendmail(config: &Path, msg: &str) {
    let mut child = Command::new(sloop_tests::bin("sloop-sendmail"))
        .arg("-C")
        .arg(config)
        .arg("-f")
        .arg("root@localhost.test")
        .arg("b@localhost.test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.replace("\r\n", "\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sloop-sendmail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
