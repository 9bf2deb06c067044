//! Outbound TLS policy end to end, Sloop delivering to Sloop on loopback: a receiver
//! with a certificate issued by a test CA (made with rcgen) and a receiver without
//! TLS. `remote.tls_policy` asks `verify` for one and `encrypt` for the other: with the
//! CA in `remote.ca_file` the first is delivered over verified TLS, the second defers
//! (STARTTLS not offered); a sender without the CA defers the first too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use sloop_tests::{free_port, maildir_new, wait_until, Daemon, TestDir};
use std::time::Duration;

fn q(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A CA and a leaf for localhost / 127.0.0.1 signed by it: (ca.pem, leaf.pem, leaf.key).
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_p = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_p.distinguished_name
        .push(DnType::CommonName, "Sloop Test CA");
    let ca = ca_p.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut lp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    lp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf = lp.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// A receiving sloopd for `domain`, with TLS when `tls` is given.
fn receiver(name: &str, domain: &str, tls: Option<(&str, &str)>) -> (TestDir, Daemon, u16) {
    let dir = TestDir::new(name);
    let port = free_port();
    let local = format!("[\"{domain}\"]");
    let boxes = format!("[\"@{domain}\"]");
    // A name of its own: a receiver greeting with the sender's name is a mail loop.
    let mut o: Vec<(&str, &str)> = vec![
        ("server.hostname", "\"mx.receiver.test\""),
        ("domains.local", &local),
        ("local.mailboxes", &boxes),
    ];
    if let Some((c, k)) = tls {
        o.push(("tls.cert_file", c));
        o.push(("tls.key_file", k));
    }
    let cfg = dir.write_config(port, &o, "");
    let d = Daemon::start(&cfg, port);
    (dir, d, port)
}

fn sender(name: &str, routes: &str, policy: &str, ca: Option<&str>) -> (TestDir, Daemon, u16) {
    let dir = TestDir::new(name);
    let port = free_port();
    let mut o: Vec<(&str, &str)> = vec![
        ("remote.routes", routes),
        ("remote.tls_policy", policy),
        ("remote.connect_timeout", "\"5s\""),
        ("remote.command_timeout", "\"5s\""),
    ];
    if let Some(ca) = ca {
        o.push(("remote.ca_file", ca));
    }
    let cfg = dir.write_config(port, &o, "");
    let d = Daemon::start(&cfg, port);
    (dir, d, port)
}

fn submit(port: u16, rcpt: &str) {
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port})\n\
         s.sendmail('a@localhost.test', ['{rcpt}'], 'Subject: tls policy\\r\\n\\r\\nhi\\r\\n')\ns.quit()\n"
    );
    let (code, out, err) = sloop_tests::python(&script, &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn verify_with_the_ca_delivers_and_encrypt_without_starttls_defers() {
    let material = TestDir::new("tls-policy-ca");
    let (ca, leaf, key) = test_ca(&material.path);
    let (leaf_q, key_q) = (q(&leaf), q(&key));
    let (rdir, _r, rport) = receiver("tls-policy-rx", "far.test", Some((&leaf_q, &key_q)));
    let (_pdir, _p, pport) = receiver("tls-policy-plain", "plain.test", None);
    let routes = format!(
        "{{ \"far.test\" = \"127.0.0.1:{rport}\", \"plain.test\" = \"127.0.0.1:{pport}\" }}"
    );
    let policy = "{ \"far.test\" = \"verify\", \"plain.test\" = \"encrypt\" }";
    let (_sdir, s, sport) = sender("tls-policy-tx", &routes, policy, Some(&q(&ca)));
    submit(sport, "x@far.test");
    submit(sport, "y@plain.test");
    let delivered = wait_until(Duration::from_secs(30), || {
        !maildir_new(&rdir.mail(), "far.test", "x").is_empty()
    });
    assert!(delivered, "sender log:\n{}", s.log_text());
    let ok = wait_until(Duration::from_secs(30), || {
        s.log_text().contains("STARTTLS was not offered")
    });
    assert!(ok, "{}", s.log_text());
    let log = s.log_text();
    assert!(
        log.contains("Verified TLS connection established to 127.0.0.1[127.0.0.1]"),
        "{log}"
    );
    assert!(log.contains("(verified)"), "{log}");
    assert!(log.contains("status=deferred"), "{log}");

    // Without the CA, verify defers.
    let (_s2dir, s2, s2port) = sender("tls-policy-tx2", &routes, policy, None);
    submit(s2port, "z@far.test");
    let ok = wait_until(Duration::from_secs(30), || {
        s2.log_text().contains("status=deferred")
    });
    assert!(ok, "{}", s2.log_text());
    assert!(
        s2.log_text().contains("invalid peer certificate"),
        "{}",
        s2.log_text()
    );
    assert!(maildir_new(&rdir.mail(), "far.test", "z").is_empty());
}

#[test]
fn a_route_with_credentials_logs_in_over_tls_to_a_submission_port() {
    let material = TestDir::new("tls-cred-ca");
    let (ca, leaf, key) = test_ca(&material.path);
    // The receiver: submission (587 role) needs TLS and AUTH; alice may send as
    // @localhost.test.
    let rdir = TestDir::new("tls-cred-rx");
    let (port, sub) = (free_port(), free_port());
    let users = rdir.path.join("users");
    std::fs::write(
        &users,
        format!(
            "alice:{}\n",
            sloop_common::passwd::hash_new(b"alice pw").unwrap()
        ),
    )
    .unwrap();
    let sub_l = format!("[\"127.0.0.1:{sub}\"]");
    let (leaf_q, key_q, users_q) = (q(&leaf), q(&key), q(&users));
    let cfg = rdir.write_config(
        port,
        &[
            ("server.hostname", "\"mx.receiver.test\""),
            ("domains.local", "[\"far.test\"]"),
            ("local.mailboxes", "[\"@far.test\"]"),
            ("relay.networks", "[]"),
            ("submission.listen", &sub_l),
            ("tls.cert_file", &leaf_q),
            ("tls.key_file", &key_q),
            ("auth.backend", "\"file\""),
            ("auth.password_file", &users_q),
            ("auth.senders", "{ alice = [\"@localhost.test\"] }"),
            ("auth.failure_delay", "\"0s\""),
            ("auth.max_failures", "100"),
        ],
        "",
    );
    let _r = Daemon::start(&cfg, port);
    let routes = format!("{{ \"far.test\" = \"127.0.0.1:{sub}\" }}");
    let policy = "{ \"far.test\" = \"verify\" }";
    let creds = material.path.join("credentials");
    std::fs::write(&creds, "127.0.0.1 alice alice pw\n").unwrap();
    let dir = TestDir::new("tls-cred-tx");
    let sport = free_port();
    let (ca_q, creds_q) = (q(&ca), q(&creds));
    let scfg = dir.write_config(
        sport,
        &[
            ("remote.routes", &routes),
            ("remote.tls_policy", policy),
            ("remote.ca_file", &ca_q),
            ("remote.credentials_file", &creds_q),
        ],
        "",
    );
    let s = Daemon::start(&scfg, sport);
    submit(sport, "x@far.test");
    let delivered = wait_until(Duration::from_secs(30), || {
        !maildir_new(&rdir.mail(), "far.test", "x").is_empty()
    });
    assert!(delivered, "sender log:\n{}", s.log_text());
    assert!(
        s.log_text().contains("SASL PLAIN authenticated as alice"),
        "{}",
        s.log_text()
    );

    // A wrong password defers, and nothing is delivered.
    std::fs::write(&creds, "127.0.0.1 alice wrong\n").unwrap();
    let reloads = |log: String| log.matches("configuration reloaded from").count();
    let before = reloads(s.log_text());
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(10), || reloads(s.log_text()) > before);
    assert!(reloaded, "{}", s.log_text());
    submit(sport, "y@far.test");
    let ok = wait_until(Duration::from_secs(30), || {
        s.log_text().contains("SASL authentication failed as alice")
    });
    assert!(ok, "{}", s.log_text());
    assert!(maildir_new(&rdir.mail(), "far.test", "y").is_empty());
}
