//! TLS and AUTH end to end with real clients: swaks (`--tls`, `--tlsc`), `openssl
//! s_client -starttls smtp`, Python's smtplib (`starttls()` + `login()`, `SMTP_SSL`)
//! and ssl module; the STARTTLS command-injection test, garbage and stalled handshakes,
//! session resumption across the worker pool, AUTH rules (538 before TLS, 530 before
//! AUTH on submission, 535 for a wrong password and an unknown user, 553 for a sender
//! the user does not own, the lock-out after too many failures).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;
mod smtpd_tls_support;

use smtpd_tls_support::{have, last_queued, TlsServer, ALICE_PW};
use std::process::Command;
use std::time::{Duration, Instant};

fn swaks(args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn swaks_submits_on_587_with_starttls_and_on_465_with_implicit_tls() {
    if !have("swaks_submits", "swaks", "swaks") {
        return;
    }
    let t = TlsServer::start("tls-swaks", &[]);
    let sub = t.sub.to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &sub,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        ALICE_PW,
        "--from",
        "alice@localhost.test",
        "--to",
        "someone@far.test",
        "--helo",
        "client.test",
    ]);
    assert!(ok, "swaks --tls --auth:\n{out}\nlog:\n{}", t.srv.log());
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
    let id = last_queued(&out);
    let received = t.received(&id);
    assert!(received.contains("with ESMTPSA id"), "{received}");
    // The server's order wins over OpenSSL's (AES-256 first): AES-128-GCM.
    assert!(
        received.contains("(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))"),
        "{received}"
    );

    let subs = t.subs.to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &subs,
        "--tlsc",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice",
        "--auth-password",
        ALICE_PW,
        "--from",
        "x@alice.test",
        "--to",
        "bob@localhost.test",
    ]);
    assert!(ok, "swaks --tlsc --auth:\n{out}\nlog:\n{}", t.srv.log());
    let id = last_queued(&out);
    assert!(t.received(&id).contains("with ESMTPSA id"));
    let log = t.srv.log();
    assert!(
        log.contains("sasl_method=PLAIN, sasl_username=alice")
            && log.contains("sasl_method=LOGIN, sasl_username=alice"),
        "{log}"
    );
    assert!(log.contains(
        "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher"
    ));
    // The identity is in the envelope.
    let (env, _) = t.srv.committed(&id);
    assert_eq!(
        env.client.as_deref(),
        Some("unknown[127.0.0.1], sasl_method=LOGIN, sasl_username=alice")
    );
}

#[test]
fn openssl_s_client_starttls_on_the_mx_port() {
    if !have("openssl_s_client", "openssl", "openssl") {
        return;
    }
    let t = TlsServer::start("tls-openssl", &[]);
    let script = "EHLO client.test\nMAIL FROM:<a@remote.example>\nRCPT TO:<bob@localhost.test>\n\
                  DATA\nSubject: s_client\n\nhello over TLS\n.\nQUIT\n";
    let connect = format!("127.0.0.1:{}", t.mx);
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-quiet",
            "-connect",
            &connect,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One line at a time, each after the previous reply could have come: s_client
    // sends what it reads from stdin as soon as the handshake is done.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        std::thread::sleep(Duration::from_millis(500));
        for line in script.lines() {
            stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("250 2.0.0 Ok: queued as"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("STARTTLS\r\n250"),
        "no STARTTLS offered inside TLS"
    );
    let id = last_queued(&text);
    assert!(
        t.received(&id).contains("with ESMTPS id"),
        "{}",
        t.received(&id)
    );
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
ctx = ssl._create_unverified_context()
msg = 'Subject: smtplib\r\n\r\nhi\r\n'
s = smtplib.SMTP('127.0.0.1', SUB, local_hostname='client.test')
s.ehlo()
assert not s.has_extn('auth'), 'AUTH offered before TLS'
code, _ = s.docmd('AUTH', 'PLAIN AGFsaWNlAGFsaWNlIHB3')
print('auth-before-tls', code)
code, _ = s.docmd('MAIL FROM:<alice@localhost.test>')
print('mail-before-auth', code)
s.starttls(context=ctx)
s.ehlo()
assert s.has_extn('auth'), s.esmtp_features
code, _ = s.docmd('MAIL FROM:<alice@localhost.test>')
print('mail-before-auth-tls', code)
s.login('alice', 'alice pw')
try:
    s.sendmail('bob@localhost.test', ['x@far.test'], msg)
    print('spoof accepted')
except smtplib.SMTPSenderRefused as e:
    print('spoof', e.smtp_code, e.smtp_error.decode())
r = s.sendmail('alice@localhost.test', ['x@far.test'], msg)
print('relay', r)
s.quit()
s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx, local_hostname='client.test')
s.login('alice', 'alice pw')
s.sendmail('x@alice.test', ['bob@localhost.test'], msg)
print('ssl ok')
s.quit()
# Unauthenticated relay on the MX port is still refused.
s = smtplib.SMTP('127.0.0.1', MX, local_hostname='client.test')
s.starttls(context=ctx)
s.ehlo()
s.docmd('MAIL FROM:<a@b.example>')
print('mx-relay', s.docmd('RCPT TO:<x@far.test>')[0])
"#;

#[test]
fn python_smtplib_starttls_login_and_smtp_ssl() {
    let t = TlsServer::start("tls-smtplib", &[]);
    let out = t.python(SMTPLIB, &[]);
    assert!(out.contains("auth-before-tls 538"), "{out}");
    assert!(out.contains("mail-before-auth 530"), "{out}");
    assert!(out.contains("mail-before-auth-tls 530"), "{out}");
    assert!(
        out.contains("spoof 553 5.7.1 <bob@localhost.test>: Sender address rejected: not owned by user alice"),
        "{out}"
    );
    assert!(out.contains("relay {}"), "{out}");
    assert!(out.contains("ssl ok"), "{out}");
    assert!(out.contains("mx-relay 554"), "{out}");
    assert_eq!(t.srv.committed_ids().len(), 2);
}

const WRONG: &str = r#"
import smtplib, ssl, sys, time
ctx = ssl._create_unverified_context()
for user, pw in [('alice', 'wrong'), ('nobody', 'wrong'), ('alice', 'wrong2'), ('mallory', 'x')]:
    s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx)
    t0 = time.monotonic()
    try:
        s.login(user, pw)
        print(user, 'accepted')
    except smtplib.SMTPAuthenticationError as e:
        print(user, e.smtp_code, e.smtp_error.decode(), 'ms=%d' % ((time.monotonic() - t0) * 1000))
    s.close()
"#;

#[test]
fn wrong_password_and_unknown_user_get_the_same_535() {
    // No delay, no lock-out here: the timings compare the password checks alone.
    let t = TlsServer::start(
        "tls-wrong",
        &[
            ("auth.failure_delay", "\"0s\""),
            ("auth.max_failures", "100"),
        ],
    );
    let out = t.python(WRONG, &[]);
    println!("AUTH failure timings (wrong password vs unknown user):\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for l in lines {
        assert!(
            l.contains(" 535 5.7.8 Error: authentication failed "),
            "{l}"
        );
    }
    let log = t.srv.log();
    assert!(
        log.contains("SASL PLAIN authentication failed: sasl_username=nobody"),
        "{log}"
    );
    assert!(!log.contains("wrong2"), "a password reached the log");
}

const LOCKOUT: &str = r#"
import smtplib, ssl
ctx = ssl._create_unverified_context()
s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx)
s.ehlo()
for pw in ['a', 'b', 'c']:
    code, text = s.docmd('AUTH', 'PLAIN ' + __import__('base64').b64encode(b'\0alice\0' + pw.encode()).decode())
    print(code, text.decode())
try:
    print('after', s.docmd('NOOP')[0])
except smtplib.SMTPServerDisconnected:
    print('closed')
s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx)
s.ehlo()
try:
    code, text = s.docmd('AUTH', 'PLAIN AGFsaWNlAGFsaWNlIHB3')
    print('right password while locked', code, text.decode())
except smtplib.SMTPServerDisconnected:
    print('closed')
"#;

#[test]
fn repeated_failures_close_the_session_and_lock_the_address_out() {
    let t = TlsServer::start(
        "tls-lockout",
        &[("auth.failure_delay", "\"0s\""), ("auth.max_failures", "3")],
    );
    let out = t.python(LOCKOUT, &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("535 ") && lines[1].starts_with("535 "),
        "{out}"
    );
    assert!(lines[2].starts_with("535 "), "{out}");
    assert!(lines[3] == "closed" || lines[3] == "after 421", "{out}");
    assert!(
        lines[4].starts_with("right password while locked 421 b'4.7.0")
            || lines[4].starts_with("right password while locked 421"),
        "{out}"
    );
    assert!(t.srv.log().contains("too many authentication failures"));
}

const INJECTION: &str = r#"
import socket, ssl, time
s = socket.create_connection(('127.0.0.1', MX))
f = s.makefile('rb')
def reply(f):
    lines = []
    while True:
        l = f.readline()
        if not l:
            return lines
        lines.append(l.decode().rstrip())
        if l[3:4] == b' ':
            return lines
reply(f)
# STARTTLS and commands after it in one packet: the classic injection.
s.sendall(b'EHLO client.test\r\nSTARTTLS\r\nHELP\r\nMAIL FROM:<evil@x.example>\r\n')
print('ehlo', reply(f)[-1][:3])
print('starttls', reply(f)[-1])
ctx = ssl._create_unverified_context()
t = ctx.wrap_socket(s, server_hostname='sloop.test')
t.sendall(b'NOOP\r\n')
t.settimeout(5)
data = b''
while not data.endswith(b'\r\n'):
    chunk = t.recv(4096)
    if not chunk:
        break
    data += chunk
print('first reply inside TLS', data.decode().strip())
t.settimeout(1)
try:
    extra = t.recv(4096)
except socket.timeout:
    extra = b''
print('extra', repr(extra))
"#;

#[test]
fn commands_pipelined_after_starttls_are_not_executed_inside_tls() {
    let t = TlsServer::start("tls-inject", &[]);
    let out = t.python(INJECTION, &[]);
    assert!(
        out.contains("starttls 220 2.0.0 Ready to start TLS"),
        "{out}"
    );
    assert!(
        out.contains("first reply inside TLS 250 2.0.0 Ok"),
        "an injected command was answered inside TLS:\n{out}"
    );
    assert!(out.contains("extra b''"), "{out}");
    assert!(t
        .srv
        .log()
        .contains("sent after STARTTLS from unknown[127.0.0.1]"));
}

const STILL_SERVES: &str = r#"
import smtplib, ssl
ctx = ssl._create_unverified_context()
s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx, timeout=10)
s.login('alice', 'alice pw')
s.quit()
print('ok')
"#;

#[test]
fn garbage_and_stalled_handshakes_cost_one_deadline_and_close_cleanly() {
    let t = TlsServer::start("tls-garbage", &[("tls.handshake_timeout", "\"1s\"")]);
    // Garbage instead of a ClientHello, on 465 and after STARTTLS on the MX port.
    let mut c = sloop_tests::Smtp::connect(t.subs);
    let started = Instant::now();
    c.send_raw(b"GET / HTTP/1.0\r\n\r\n");
    assert!(c.closed(), "garbage on 465 is closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let mut m = sloop_tests::Smtp::connect(t.mx);
    assert_eq!(m.code(), 220);
    assert_eq!(m.cmd("EHLO client.test"), 250);
    assert_eq!(m.cmd("STARTTLS"), 220);
    m.send_raw(b"\x16\x03\x01\x00\x05hello garbage that is not a handshake\r\n");
    assert!(m.closed(), "garbage after STARTTLS is closed");

    // A client that connects and says nothing is closed at the handshake deadline.
    let mut s = sloop_tests::Smtp::connect(t.subs);
    let started = Instant::now();
    assert!(s.closed());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "stalled handshake closed after {took:?}"
    );
    let log = t.srv.log();
    assert!(
        log.contains("SSL_accept error from unknown[127.0.0.1]: handshake timeout"),
        "{log}"
    );
    assert!(
        log.contains("lost connection after STARTTLS from unknown[127.0.0.1]"),
        "{log}"
    );
    // The pool still serves.
    assert!(t.python(STILL_SERVES, &[]).contains("ok"));
}

const RESUME: &str = r#"
import socket, ssl, sys
ctx = ssl._create_unverified_context()
ctx.maximum_version = getattr(ssl.TLSVersion, sys.argv[1])
def session(sess=None, hold=False):
    s = socket.create_connection(('127.0.0.1', SUBS))
    t = ctx.wrap_socket(s, server_hostname='sloop.test', session=sess)
    greeting = t.recv(4096)
    assert greeting.startswith(b'220 '), greeting
    t.sendall(b'NOOP\r\n')
    t.recv(4096)
    reused = t.session_reused
    sess = t.session
    if hold:
        return t, sess, reused
    t.sendall(b'QUIT\r\n')
    t.recv(4096)
    t.close()
    return None, sess, reused
held, sess, _ = session(hold=True)
# The first worker is busy with `held`: the next sessions go to other workers.
results = []
for i in range(3):
    _, s2, reused = session(sess)
    results.append(reused)
print('reused', results)
held.close()
"#;

#[test]
fn sessions_resume_on_other_workers_with_shared_ticket_keys() {
    let t = TlsServer::start("tls-resume", &[("smtpd.min_idle", "3")]);
    for version in ["TLSv1_3", "TLSv1_2"] {
        let out = t.python(RESUME, &[version]);
        assert!(
            out.contains("reused [True, True, True]"),
            "{version}: {out}"
        );
    }
    let log = t.srv.log();
    let resumed: Vec<&str> = log.lines().filter(|l| l.contains("(resumed)")).collect();
    assert!(resumed.len() >= 6, "{log}");
    // The first session's worker was busy holding it: the first resumption ran on
    // another worker, with the ticket the first one issued.
    let pid = |l: &str| -> String {
        l.split_whitespace()
            .find(|w| w.starts_with("sloop-smtpd["))
            .unwrap_or("")
            .to_string()
    };
    let issuer = log
        .lines()
        .find(|l| l.contains("Anonymous TLS connection established"))
        .map(pid)
        .unwrap();
    assert_ne!(pid(resumed[0]), issuer, "{log}");
}

/// A STARTTLS client that says nothing after the handshake (as `openssl s_client
/// -sess_out` does) still gets its TLS 1.3 session ticket, and resumes with it; the
/// ticket must not wait for a reply to go with.
const TICKET_UNASKED: &str = r#"
import select, socket, ssl, time
ctx = ssl._create_unverified_context()
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
def starttls(sess=None):
    s = socket.create_connection(('127.0.0.1', MX))
    f = s.makefile('rb')
    assert f.readline().startswith(b'220 ')
    s.sendall(b'EHLO client.test\r\n')
    while not f.readline().startswith(b'250 '):
        pass
    s.sendall(b'STARTTLS\r\n')
    assert f.readline().startswith(b'220 ')
    return ctx.wrap_socket(s, server_hostname='sloop.test', session=sess)
t = starttls()
t.setblocking(False)
deadline = time.time() + 10
while not (t.session is not None and t.session.has_ticket) and time.time() < deadline:
    select.select([t], [], [], 0.2)
    try:
        t.recv(4096)
    except ssl.SSLWantReadError:
        pass
print('ticket', t.session is not None and t.session.has_ticket)
sess = t.session
t.close()
t = starttls(sess)
print('reused', t.session_reused)
t.sendall(b'QUIT\r\n')
t.close()
"#;

#[test]
fn a_starttls_client_that_says_nothing_still_gets_its_ticket() {
    let t = TlsServer::start("tls-ticket", &[]);
    let out = t.python(TICKET_UNASKED, &[]);
    assert!(out.contains("ticket True"), "{out}\n{}", t.srv.log());
    assert!(out.contains("reused True"), "{out}\n{}", t.srv.log());
}

/// `sloopd -c cfg` run to completion: (exit code, stderr).
fn sloopd_once(cfg: &std::path::Path) -> (i32, String) {
    let out = Command::new(sloop_tests::bin("sloopd"))
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_certificates_stop_the_start_with_exit_78_naming_the_file() {
    let dir = sloop_tests::TestDir::new("tls-badcert");
    let port = sloop_tests::free_port();
    // Expired (made with rcgen: openssl 3.0 cannot back-date).
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["sloop.test".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let old_crt = dir.path.join("old.crt");
    let old_key = dir.path.join("old.key");
    std::fs::write(&old_crt, cert.pem()).unwrap();
    std::fs::write(&old_key, key.serialize_pem()).unwrap();
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let cfg = dir.write_config(
        port,
        &[
            ("tls.cert_file", &q(&old_crt)),
            ("tls.key_file", &q(&old_key)),
        ],
        "",
    );
    let (code, err) = sloopd_once(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("old.crt: certificate expired"), "{err}");

    // A key that is not the certificate's.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_key = dir.path.join("other.key");
    std::fs::write(&other_key, other.serialize_pem()).unwrap();
    let good = rcgen::CertificateParams::new(vec!["sloop.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&old_crt, good.pem()).unwrap();
    let cfg = dir.write_config(
        port,
        &[
            ("tls.cert_file", &q(&old_crt)),
            ("tls.key_file", &q(&other_key)),
        ],
        "",
    );
    let (code, err) = sloopd_once(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("other.key: private key does not match the certificate in"),
        "{err}"
    );

    // Unreadable (missing) key: the config check names the key.
    let cfg = dir.write_config(
        port,
        &[
            ("tls.cert_file", &q(&old_crt)),
            ("tls.key_file", "\"/nonexistent/k.pem\""),
        ],
        "",
    );
    let (code, err) = sloopd_once(&cfg);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("tls.key_file") && err.contains("/nonexistent/k.pem"),
        "{err}"
    );
}

#[test]
fn a_reload_onto_a_broken_key_is_rejected_and_tls_keeps_working() {
    let t = TlsServer::start("tls-reload", &[]);
    let (_, rsa_key) = &t.material.rsa;
    let good = std::fs::read(rsa_key).unwrap();
    std::fs::write(rsa_key, std::fs::read(&t.material.ecdsa.1).unwrap()).unwrap();
    t.srv.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        t.srv.wait_log("reload rejected", Duration::from_secs(10)),
        "{}",
        t.srv.log()
    );
    assert!(
        t.srv.log().contains("rsa.key: private key does not match"),
        "{}",
        t.srv.log()
    );
    assert!(t.python(STILL_SERVES, &[]).contains("ok"));
    // Repaired, the reload goes through and the new workers serve TLS.
    std::fs::write(rsa_key, good).unwrap();
    t.srv.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(t
        .srv
        .wait_log("configuration reloaded", Duration::from_secs(10)));
    assert!(t.python(STILL_SERVES, &[]).contains("ok"));
}

const AS_NOBODY: &str = r#"
import smtplib, ssl
ctx = ssl._create_unverified_context()
s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx)
s.login('alice', 'alice pw')
print(s.sendmail('alice@localhost.test', ['bob@localhost.test'], 'Subject: nobody\r\n\r\nhi\r\n'))
s.quit()
s = smtplib.SMTP('127.0.0.1', SUB)
s.starttls(context=ctx)
s.login('alice', 'alice pw')
s.quit()
print('ok')
"#;

#[test]
fn workers_running_as_nobody_serve_tls_with_root_only_keys() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: workers_running_as_nobody: needs root to run the workers as nobody");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let material = smtpd_tls_support::Material::new("tls-nobody");
    for key in [&material.rsa.1, &material.ecdsa.1] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    std::os::unix::fs::chown(&material.users, Some(0), Some(nobody.gid.as_raw())).unwrap();
    std::fs::set_permissions(&material.users, std::fs::Permissions::from_mode(0o640)).unwrap();
    let dir = sloop_tests::TestDir::new("tls-nobody");
    let (port, sub, subs) = (
        sloop_tests::free_port(),
        sloop_tests::free_port(),
        sloop_tests::free_port(),
    );
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let (sub_l, subs_l) = (
        format!("[\"127.0.0.1:{sub}\"]"),
        format!("[\"127.0.0.1:{subs}\"]"),
    );
    let (rc, rk, ec, ek, users) = (
        q(&material.rsa.0),
        q(&material.rsa.1),
        q(&material.ecdsa.0),
        q(&material.ecdsa.1),
        q(&material.users),
    );
    let cfg = dir.write_config(
        port,
        &[
            ("server.user", "\"nobody\""),
            ("tls.cert_file", &rc),
            ("tls.key_file", &rk),
            ("tls.ecdsa_cert_file", &ec),
            ("tls.ecdsa_key_file", &ek),
            ("auth.backend", "\"file\""),
            ("auth.password_file", &users),
            ("auth.senders", "{ alice = [\"alice@localhost.test\"] }"),
            ("submission.listen", &sub_l),
            ("submissions.listen", &subs_l),
        ],
        "",
    );
    let d = sloop_tests::Daemon::start(&cfg, port);
    let script = AS_NOBODY
        .replace("SUBS", &subs.to_string())
        .replace("SUB", &sub.to_string());
    let (code, out, err) = sloop_tests::python(&script, &[]);
    assert_eq!(code, 0, "{out}{err}\n{}", d.log_text());
    assert!(out.contains("{}") && out.contains("ok"), "{out}");
    // The workers run as nobody and hold no key material in their environment.
    let pids: Vec<i32> = d
        .log_text()
        .lines()
        .filter_map(|l| l.split("started sloop-smtpd pid=").nth(1))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert!(!pids.is_empty());
    let mut seen = 0;
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line.split_whitespace().nth(1) == Some(&nobody.uid.as_raw().to_string()),
            "{uid_line}"
        );
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&env).contains("PRIVATE KEY"));
        seen += 1;
    }
    assert!(seen > 0, "no live worker to inspect");
}
