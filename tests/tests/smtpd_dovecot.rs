//! `auth.backend = "dovecot"` against the real Dovecot (`dovecot-core`): a private
//! Dovecot instance on a temporary config (passwd-file with a SHA512-CRYPT hash made
//! by `doveadm pw`, its `auth-client` socket in the test directory), and a `sloopd`
//! whose submission listeners check passwords with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;
mod smtpd_tls_support;

use smtpd_tls_support::{have, TlsServer};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Dovecot {
    child: Child,
    dir: sloop_tests::TestDir,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dovecot() -> Dovecot {
    let dir = sloop_tests::TestDir::new("dovecot");
    let d = dir.path.display().to_string();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let group = String::from_utf8(Command::new("id").arg("-gn").output().unwrap().stdout).unwrap();
    let (user, group) = (user.trim(), group.trim());
    let hash = Command::new("doveadm")
        .args(["pw", "-s", "SHA512-CRYPT", "-p", "alice pw"])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    std::fs::write(dir.path.join("users"), format!("alice:{}\n", hash.trim())).unwrap();
    std::fs::create_dir_all(dir.path.join("run")).unwrap();
    std::fs::create_dir_all(dir.path.join("state")).unwrap();
    let conf = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
         protocols =\nssl = no\n\
         default_internal_user = {user}\ndefault_internal_group = {group}\n\
         default_login_user = {user}\n\
         auth_mechanisms = plain login\ndisable_plaintext_auth = no\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = static\n  args = uid={user} gid={group} home={d}\n}}\n\
         service auth {{\n  unix_listener auth-client {{\n    path = {d}/auth-client\n    mode = 0666\n  }}\n}}\n"
    );
    let conf_path = dir.path.join("dovecot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path.join("auth-client");
    let up = sloop_tests::wait_until(Duration::from_secs(20), || socket.exists());
    let mut dc = Dovecot { child, dir };
    if !up {
        let _ = dc.child.kill();
        let out = dc.child.wait_with_output_ref();
        panic!(
            "dovecot did not create {}: {out}\n{}",
            socket.display(),
            std::fs::read_to_string(dc.dir.path.join("dovecot.log")).unwrap_or_default()
        );
    }
    dc
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

const LOGIN: &str = r#"
import smtplib, ssl
ctx = ssl._create_unverified_context()
for user, pw, mech in [('alice', 'alice pw', 'PLAIN'), ('alice', 'wrong', 'PLAIN'), ('nobody', 'x', 'PLAIN'), ('alice', 'alice pw', 'LOGIN')]:
    s = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ctx)
    s.ehlo()
    s.user, s.password = user, pw
    try:
        code, text = s.auth(mech, s.auth_plain if mech == 'PLAIN' else s.auth_login, initial_response_ok=(mech == 'PLAIN'))
        print(user, mech, code)
        s.sendmail('alice@localhost.test', ['bob@localhost.test'], 'Subject: dovecot\r\n\r\nhi\r\n')
        print('sent')
    except smtplib.SMTPAuthenticationError as e:
        print(user, mech, e.smtp_code)
    s.close()
"#;

#[test]
fn dovecot_checks_the_passwords() {
    if !have("dovecot_checks_the_passwords", "dovecot", "dovecot-core") {
        return;
    }
    let dc = start_dovecot();
    let socket = format!(
        "{:?}",
        dc.dir.path.join("auth-client").display().to_string()
    );
    let t = TlsServer::start(
        "tls-dovecot",
        &[
            ("auth.backend", "\"dovecot\""),
            ("auth.dovecot_socket", &socket),
            ("auth.failure_delay", "\"0s\""),
            ("auth.max_failures", "100"),
        ],
    );
    let out = t.python(LOGIN, &[]);
    assert!(out.contains("alice PLAIN 235"), "{out}\n{}", t.srv.log());
    assert!(out.contains("alice PLAIN 535"), "{out}");
    assert!(out.contains("nobody PLAIN 535"), "{out}");
    assert!(out.contains("alice LOGIN 235"), "{out}");
    assert_eq!(out.matches("sent").count(), 2, "{out}");
    assert!(t
        .srv
        .log()
        .contains("sasl_method=LOGIN, sasl_username=alice"));
    // Dovecot gone: a temporary failure, not a refusal.
    drop(dc);
    let out = t.python(
        "import smtplib, ssl\ns = smtplib.SMTP_SSL('127.0.0.1', SUBS, context=ssl._create_unverified_context())\n\
         s.ehlo()\nprint(s.docmd('AUTH', 'PLAIN AGFsaWNlAGFsaWNlIHB3'))\n",
        &[],
    );
    assert!(
        out.contains("454, b'4.7.0 Temporary authentication failure'"),
        "{out}"
    );
}
