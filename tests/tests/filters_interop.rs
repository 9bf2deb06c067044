//! The filters operators already run, as real daemons from Debian's packages started
//! by the tests (fixtures in `tests/src/filters/`): postgrey and policyd-spf (policy
//! delegation), OpenDKIM, rspamd and clamav-milter (milter).
//!
//! Each fixture is first proved with a private Postfix instance as the MTA (the
//! `postfix_*` tests: they show the fixture, not Sloop, is right), then the same
//! fixture is used with Sloop (the `sloop_*` tests), with the `[[policy]]` and
//! `[[milter]]` tables of docs/filters.md, Python's smtplib as the client, and the
//! message checked as delivered into the Maildir. No test queries the internet: the
//! daemons that resolve names get a resolver that knows only the test's names.
//!
//! Ports: fixtures on 127.0.0.1:231xx (one port per test, so tests run in parallel);
//! private Postfix instances on 127.0.0.1:2315x; Sloop on free loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod filters_support;
mod smtpd_support;
mod smtpd_tls_support;

use filters_support::{above, header, message, read, retry_until_accepted, sendmail, smtp, Sloop};
use sloop_tests::filters::clamav::{self, ClamavMilter};
use sloop_tests::filters::opendkim::OpenDkim;
use sloop_tests::filters::postfix::Postfix;
use sloop_tests::filters::postgrey::Postgrey;
use sloop_tests::filters::rspamd::{self, Rspamd};
use sloop_tests::filters::spf::{self, PolicydSpf};
use sloop_tests::filters::{eicar, gtube};
use sloop_tests::TestDir;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- postgrey

#[test]
fn postfix_postgrey_fixture_greylists_then_accepts() {
    let t = "postfix_postgrey_fixture_greylists_then_accepts";
    let dir = TestDir::new("pf-postgrey");
    let Some(grey) = Postgrey::start(t, &dir.path, 23101, Duration::from_secs(3)) else {
        return;
    };
    let Some(pf) = Postfix::start(
        t,
        &dir.path,
        23151,
        "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:23101, permit_mynetworks, reject",
    ) else {
        return;
    };
    let msg = message("a@grey.test", "grey", "hello");
    let first = smtp(
        &dir.path,
        pf.port,
        "a@grey.test",
        "b@localhost.test",
        &msg,
        None,
    );
    assert_eq!(first.code("RCPT"), 450, "{first:?}\n{}", pf.log());
    assert!(first.text("RCPT").contains("Greylisted"), "{first:?}");
    let second = retry_until_accepted(grey.delay, || {
        smtp(
            &dir.path,
            pf.port,
            "a@grey.test",
            "b@localhost.test",
            &msg,
            None,
        )
    });
    assert_eq!(second.code("DATA"), 250, "{second:?}\n{}", pf.log());
    let got = pf.wait_delivered(1);
    assert!(
        header(&got[0]).contains("X-Greylist: delayed"),
        "{}",
        read(&got[0])
    );
}

#[test]
fn sloop_postgrey_greylists_then_accepts_after_the_delay() {
    let t = "sloop_postgrey_greylists_then_accepts_after_the_delay";
    let base = TestDir::new("sloop-postgrey-peer");
    let Some(grey) = Postgrey::start(t, &base.path, 23102, Duration::from_secs(3)) else {
        return;
    };
    let s = Sloop::start(
        "sloop-postgrey",
        &[],
        "[[policy]]\nname = \"postgrey\"\nsocket = \"inet:127.0.0.1:23102\"\nstage = \"rcpt\"\n",
    );
    let msg = message("a@grey.test", "grey", "hello");
    let started = Instant::now();
    let first = smtp(
        &base.path,
        s.port,
        "a@grey.test",
        "b@localhost.test",
        &msg,
        None,
    );
    // DEFER_IF_PERMIT on first sight: the stage would accept, so 450.
    assert_eq!(first.code("RCPT"), 450, "{first:?}\n{}", s.log());
    let text = "4.7.1 <b@localhost.test>: Recipient address rejected: Greylisted";
    assert!(first.text("RCPT").starts_with(text), "{first:?}");
    // Postfix's reject line.
    let log = s.log();
    assert!(
        log.contains(&format!("reject: RCPT from unknown[127.0.0.1]: 450 {text}"))
            && log.contains(
                "; from=<a@grey.test> to=<b@localhost.test> proto=ESMTP helo=<client.test>"
            ),
        "{log}"
    );
    let second = retry_until_accepted(grey.delay, || {
        smtp(
            &base.path,
            s.port,
            "a@grey.test",
            "b@localhost.test",
            &msg,
            None,
        )
    });
    assert_eq!(second.code("RCPT"), 250, "{second:?}\n{}", s.log());
    assert_eq!(second.code("DATA"), 250, "{second:?}\n{}", s.log());
    // postgrey counts whole seconds (the first attempt at 10.9 s, a retry at 13.0 s
    // is 3 s later for it): up to a second less of real time may have passed.
    assert!(
        started.elapsed() + Duration::from_secs(1) >= grey.delay,
        "accepted before the delay"
    );
    // postgrey's PREPEND on the accepted retry is on top of the stored message.
    let got = s.wait_delivered(1);
    assert!(
        header(&got[0]).contains("X-Greylist: delayed")
            && above(&header(&got[0]), "X-Greylist:", "Received:"),
        "{}",
        read(&got[0])
    );
}

// ---------------------------------------------------------------- policyd-spf

fn spf_cases(dir: &Path, port: u16, log: &dyn Fn() -> String) {
    // Fail: rejected per its config (Mail_From_reject = Fail), with policyd-spf's text.
    let msg = message(&format!("a@{}", spf::FAIL_DOMAIN), "spf-fail", "hello");
    let r = smtp(
        dir,
        port,
        &format!("a@{}", spf::FAIL_DOMAIN),
        "b@localhost.test",
        &msg,
        None,
    );
    assert_eq!(r.code("RCPT"), 550, "{r:?}\n{}", log());
    assert!(r.text("RCPT").contains("5.7.23"), "{r:?}");
    assert!(r.text("RCPT").contains("SPF fail"), "{r:?}");
    // Pass and softfail: accepted, with Received-SPF prepended.
    for domain in [spf::PASS_DOMAIN, spf::SOFTFAIL_DOMAIN] {
        let sender = format!("a@{domain}");
        let msg = message(&sender, domain, "hello");
        let r = smtp(dir, port, &sender, "b@localhost.test", &msg, None);
        assert_eq!(r.code("DATA"), 250, "{domain}: {r:?}\n{}", log());
    }
}

fn assert_received_spf(files: &[PathBuf]) {
    let headers: Vec<String> = files.iter().map(|f| header(f)).collect();
    for (domain, result) in [
        (spf::PASS_DOMAIN, "Pass"),
        (spf::SOFTFAIL_DOMAIN, "Softfail"),
    ] {
        let h = headers
            .iter()
            .find(|h| h.contains(&format!("envelope-from=a@{domain}")))
            .unwrap_or_else(|| panic!("no message with Received-SPF for {domain}: {headers:#?}"));
        assert!(
            h.contains(&format!(
                "Received-SPF: {result} (mailfrom) identity=mailfrom; client-ip=127.0.0.1"
            )) && above(h, "Received-SPF:", "Received:"),
            "{h}"
        );
    }
}

#[test]
fn postfix_policyd_spf_fixture_rejects_fail_and_prepends_received_spf() {
    let t = "postfix_policyd_spf_fixture_rejects_fail_and_prepends_received_spf";
    let dir = TestDir::new("pf-spf");
    let Some(spf) = PolicydSpf::start(t, &dir.path) else {
        return;
    };
    let Some(pf) = Postfix::start(
        t,
        &dir.path,
        23152,
        &format!(
            "smtpd_recipient_restrictions = check_policy_service unix:{}, permit_mynetworks, reject",
            spf.socket.display()
        ),
    ) else {
        return;
    };
    spf_cases(&dir.path, pf.port, &|| pf.log());
    assert_received_spf(&pf.wait_delivered(2));
}

#[test]
fn sloop_policyd_spf_rejects_fail_and_prepends_received_spf() {
    let t = "sloop_policyd_spf_rejects_fail_and_prepends_received_spf";
    let base = TestDir::new("sloop-spf-peer");
    let Some(spf) = PolicydSpf::start(t, &base.path) else {
        return;
    };
    let s = Sloop::start(
        "sloop-spf",
        &[],
        &format!(
            "[[policy]]\nname = \"policyd-spf\"\nsocket = \"unix:{}\"\nstage = \"rcpt\"\n",
            spf.socket.display()
        ),
    );
    spf_cases(&base.path, s.port, &|| s.log());
    assert_received_spf(&s.wait_delivered(2));
    let log = s.log();
    assert!(
        log.contains(
            "reject: RCPT from unknown[127.0.0.1]: 550 5.7.23 <b@localhost.test>: \
             Recipient address rejected: Message rejected due to: SPF fail - not authorized."
        ) && log.contains("; from=<a@spf-fail.test> to=<b@localhost.test> proto=ESMTP"),
        "{log}"
    );
    // Two messages in one SMTP session, two recipients each: policyd-spf prepends once
    // per message (its cache is keyed by the `instance` attribute, which must change
    // from one message to the next and stay the same across one message's recipients).
    let (code, out, err) = sloop_tests::python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.test", timeout=120)
for n in (1, 2):
    msg = "From: <a@spf-pass.test>\r\nSubject: same-session-%d\r\n\r\nhello\r\n" % n
    s.sendmail("a@spf-pass.test", ["b@localhost.test", "c@localhost.test"], msg)
s.quit()
"#,
        &[&s.port.to_string()],
    );
    assert_eq!(code, 0, "{out}{err}\n{}", s.log());
    let got = s.wait_delivered(4);
    for n in [1, 2] {
        let f = got
            .iter()
            .find(|f| header(f).contains(&format!("Subject: same-session-{n}")))
            .unwrap_or_else(|| panic!("message {n} not delivered"));
        let h = header(f);
        assert_eq!(
            h.matches("Received-SPF: Pass").count(),
            1,
            "message {n}:\n{h}"
        );
    }
}

// ---------------------------------------------------------------- OpenDKIM

#[test]
fn postfix_opendkim_fixture_signs_and_dkimpy_verifies() {
    let t = "postfix_opendkim_fixture_signs_and_dkimpy_verifies";
    let dir = TestDir::new("pf-dkim");
    let Some(dkim) = OpenDkim::start(t, &dir.path, 23121) else {
        return;
    };
    let Some(pf) = Postfix::start(
        t,
        &dir.path,
        23153,
        "smtpd_milters = inet:127.0.0.1:23121\nnon_smtpd_milters = inet:127.0.0.1:23121",
    ) else {
        return;
    };
    let msg = message("a@localhost.test", "dkim", "signed by OpenDKIM");
    let r = smtp(
        &dir.path,
        pf.port,
        "a@localhost.test",
        "b@localhost.test",
        &msg,
        None,
    );
    assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", pf.log());
    let got = pf.wait_delivered(1);
    assert!(
        header(&got[0]).contains("DKIM-Signature:"),
        "{}",
        read(&got[0])
    );
    let report = dkim.verify(&got[0]);
    assert!(report.is_ok(), "{report:?}\n{}", read(&got[0]));
    // A message that was changed after signing does not verify: the verifier checks.
    let tampered = dir.path.join("tampered.eml");
    std::fs::write(&tampered, read(&got[0]).replace("signed by", "forged by")).unwrap();
    assert!(dkim.verify(&tampered).is_err());
}

#[test]
fn sloop_opendkim_signs_submission_and_sendmail_mail() {
    let t = "sloop_opendkim_signs_submission_and_sendmail_mail";
    let base = TestDir::new("sloop-dkim-peer");
    let Some(dkim) = OpenDkim::start(t, &base.path, 23122) else {
        return;
    };
    let material = smtpd_tls_support::Material::new("sloop-dkim");
    let sub = sloop_tests::free_port();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let (rc, rk, users) = (q(&material.rsa.0), q(&material.rsa.1), q(&material.users));
    let sub_l = format!("[\"127.0.0.1:{sub}\"]");
    // Mail from sendmail reaches the `local` milters through the maildrop and
    // sloop-pickup, which is the path of every user but the spool owner (the owner's
    // sendmail commits directly). As root, the spool belongs to `nobody` and root's
    // sendmail takes that path, as cron's does on a real system.
    let root = sloop_tests::filters::is_root();
    let mut overrides: Vec<(&str, &str)> = vec![
        ("tls.cert_file", &rc),
        ("tls.key_file", &rk),
        ("auth.backend", "\"file\""),
        ("auth.password_file", &users),
        ("auth.senders", "{ alice = [\"alice@localhost.test\"] }"),
        ("submission.listen", &sub_l),
    ];
    if root {
        overrides.push(("server.user", "\"nobody\""));
        // The workers (as nobody) read the password file through its group.
        use std::os::unix::fs::PermissionsExt;
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        std::os::unix::fs::chown(&material.users, Some(0), Some(nobody.gid.as_raw())).unwrap();
        std::fs::set_permissions(&material.users, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let s = Sloop::start(
        "sloop-dkim",
        &overrides,
        "[[milter]]\nname = \"opendkim\"\nsocket = \"inet:127.0.0.1:23122\"\n\
         listeners = [\"submission\", \"local\"]\n",
    );
    // Submission: STARTTLS, AUTH as alice, a message from alice.
    let msg = message(
        "alice@localhost.test",
        "dkim-submission",
        "signed on submission",
    );
    let r = smtp(
        &base.path,
        sub,
        "alice@localhost.test",
        "b@localhost.test",
        &msg,
        Some(("alice", smtpd_tls_support::ALICE_PW)),
    );
    assert_eq!(r.code("AUTH"), 235, "{r:?}\n{}", s.log());
    assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", s.log());
    // Two more in one session: each message gets its own signature.
    let (code, out, err) = sloop_tests::python(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.test", timeout=120)
s.starttls(context=ctx)
s.login("alice", sys.argv[2])
for n in (1, 2):
    msg = ("From: <alice@localhost.test>\r\nTo: <b@localhost.test>\r\n"
           "Subject: dkim-session-%d\r\nMessage-ID: <s%d@client.test>\r\n\r\nbody %d\r\n" % (n, n, n))
    s.sendmail("alice@localhost.test", ["b@localhost.test"], msg)
s.quit()
"#,
        &[&sub.to_string(), smtpd_tls_support::ALICE_PW],
    );
    assert_eq!(code, 0, "{out}{err}\n{}", s.log());
    let mut subjects = vec!["dkim-submission", "dkim-session-1", "dkim-session-2"];
    if root {
        // sendmail: picked up from the maildrop, signed by the `local` milter.
        sendmail(
            &s.config(),
            &message("root@localhost.test", "dkim-sendmail", "signed on pickup"),
        );
        subjects.push("dkim-sendmail");
    } else {
        println!("SKIP: {t} (the sendmail half): needs root (a sendmail caller other than the spool owner)");
    }
    let got = s.wait_delivered(subjects.len());
    for subject in subjects {
        let f = got
            .iter()
            .find(|f| header(f).contains(&format!("Subject: {subject}")))
            .unwrap_or_else(|| panic!("no {subject} message in {got:?}"));
        let h = header(f);
        assert!(
            h.contains("DKIM-Signature:"),
            "{subject} not signed:\n{}\n{}",
            read(f),
            s.log()
        );
        assert!(h.contains("d=localhost.test"), "{h}");
        let report = dkim.verify(f);
        assert!(report.is_ok(), "{subject}: {report:?}\n{}", read(f));
    }
}

/// The local ports of the ESTABLISHED TCP connections to 127.0.0.1:`port` (from
/// /proc/net/tcp: the connections this host has open to that server).
fn connections_to(port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (f.get(1)?, f.get(2)?, f.get(3)?);
            if *remote != want || *state != "01" {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// The one kept connection to 127.0.0.1:`port` (waits for it): its local port.
fn kept_connection(port: u16, log: &dyn Fn() -> String) -> u16 {
    let one = sloop_tests::wait_until(Duration::from_secs(10), || connections_to(port).len() == 1);
    let open = connections_to(port);
    assert!(one, "connections to {port}: {open:?}\n{}", log());
    open[0]
}

#[test]
fn sloop_keeps_one_opendkim_connection_for_consecutive_sessions() {
    let t = "sloop_keeps_one_opendkim_connection_for_consecutive_sessions";
    let base = TestDir::new("sloop-dkim-keep");
    let Some(dkim) = OpenDkim::start(t, &base.path, 23124) else {
        return;
    };
    // One smtpd worker: the second session is served by the process that served the
    // first, on the connection it kept (SMFIC_QUIT_NC, after an unknown-command event:
    // OpenDKIM answers a signed message with "accept").
    let s = Sloop::start(
        "sloop-dkim-keep",
        &[("smtpd.max_processes", "1"), ("smtpd.min_idle", "1")],
        "[[milter]]\nname = \"opendkim\"\nsocket = \"inet:127.0.0.1:23124\"\n",
    );
    let mut kept = Vec::new();
    for n in 1..=2 {
        let subject = format!("dkim-kept-{n}");
        let msg = message("a@localhost.test", &subject, &format!("message {n}"));
        let r = smtp(
            &base.path,
            s.port,
            "a@localhost.test",
            "b@localhost.test",
            &msg,
            None,
        );
        assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", s.log());
        // After the session: one connection to OpenDKIM is still open, kept.
        let one = sloop_tests::wait_until(Duration::from_secs(10), || {
            connections_to(dkim.port).len() == 1
        });
        let open = connections_to(dkim.port);
        assert!(
            one,
            "session {n}: connections to opendkim: {open:?}\n{}",
            s.log()
        );
        kept.push(open[0]);
    }
    assert_eq!(kept[0], kept[1], "the second session used a new connection");
    let got = s.wait_delivered(2);
    for n in 1..=2 {
        let f = got
            .iter()
            .find(|f| header(f).contains(&format!("Subject: dkim-kept-{n}")))
            .unwrap_or_else(|| panic!("no message {n} in {got:?}"));
        assert!(header(f).contains("DKIM-Signature:"), "{}", read(f));
        let report = dkim.verify(f);
        assert!(report.is_ok(), "message {n}: {report:?}\n{}", read(f));
    }
    let log = s.log();
    assert!(!log.contains("milter opendkim:"), "{log}");
}

// ---------------------------------------------------------------- rspamd

fn rspamd_cases(dir: &Path, port: u16, log: &dyn Fn() -> String) {
    let spam = message("a@spam.test", "gtube", &gtube());
    let r = smtp(dir, port, "a@spam.test", "b@localhost.test", &spam, None);
    assert_eq!(r.code("DATA"), 554, "{r:?}\n{}", log());
    assert!(r.text("DATA").contains(rspamd::GTUBE_REPLY), "{r:?}");
    let clean = message("a@ham.test", "clean", "An ordinary message.");
    let r = smtp(dir, port, "a@ham.test", "b@localhost.test", &clean, None);
    assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", log());
}

fn assert_rspamd_headers(file: &Path) {
    let h = header(file);
    for name in [
        "X-Spamd-Result: default: False",
        "X-Rspamd-Server:",
        "X-Rspamd-Queue-Id:",
    ] {
        assert!(h.contains(name), "no {name} in:\n{h}");
    }
}

#[test]
fn postfix_rspamd_fixture_rejects_gtube_and_adds_headers() {
    let t = "postfix_rspamd_fixture_rejects_gtube_and_adds_headers";
    let dir = TestDir::new("pf-rspamd");
    let Some(_rs) = Rspamd::start(t, &dir.path, 23131, 23139) else {
        return;
    };
    let Some(pf) = Postfix::start(t, &dir.path, 23154, "smtpd_milters = inet:127.0.0.1:23131")
    else {
        return;
    };
    rspamd_cases(&dir.path, pf.port, &|| pf.log());
    assert_rspamd_headers(&pf.wait_delivered(1)[0]);
}

#[test]
fn sloop_rspamd_rejects_gtube_with_rspamds_reply_and_adds_headers() {
    let t = "sloop_rspamd_rejects_gtube_with_rspamds_reply_and_adds_headers";
    let base = TestDir::new("sloop-rspamd-peer");
    let Some(_rs) = Rspamd::start(t, &base.path, 23132, 23138) else {
        return;
    };
    // One smtpd worker: the second session runs on the connection the first one
    // kept (rspamd takes QUIT_NC in any state).
    let s = Sloop::start(
        "sloop-rspamd",
        &[("smtpd.max_processes", "1"), ("smtpd.min_idle", "1")],
        "[[milter]]\nname = \"rspamd\"\nsocket = \"inet:127.0.0.1:23132\"\n",
    );
    rspamd_cases(&base.path, s.port, &|| s.log());
    let log = s.log();
    assert!(
        log.contains(
            "milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 554 5.7.1 Gtube pattern; \
             from=<a@spam.test> to=<b@localhost.test> proto=ESMTP helo=<client.test>"
        ),
        "{log}"
    );
    // One more session: on the connection the worker kept.
    let kept = kept_connection(23132, &|| s.log());
    let clean = message("a@ham.test", "clean-again", "Another ordinary message.");
    let r = smtp(
        &base.path,
        s.port,
        "a@ham.test",
        "b@localhost.test",
        &clean,
        None,
    );
    assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", s.log());
    assert_eq!(
        kept_connection(23132, &|| s.log()),
        kept,
        "not the kept connection"
    );
    let got = s.wait_delivered(2);
    assert!(got.iter().any(|f| read(f).contains("An ordinary message.")));
    for f in &got {
        assert_rspamd_headers(f);
        // rspamd names the message by Sloop's queue ID (the `i` macro, sent again on
        // the kept connection): the delivered file's name carries the same ID.
        let h = header(f);
        let qid = h
            .lines()
            .find_map(|l| l.strip_prefix("X-Rspamd-Queue-Id: "))
            .unwrap()
            .trim();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.contains(&format!(".Q{qid}R")), "{qid} vs {name}");
    }
}

// ---------------------------------------------------------------- clamav-milter

fn clamav_cases(dir: &Path, port: u16, log: &dyn Fn() -> String) {
    let virus = message("a@virus.test", "eicar", &eicar());
    let r = smtp(dir, port, "a@virus.test", "b@localhost.test", &virus, None);
    assert_eq!(r.code("DATA") / 100, 5, "{r:?}\n{}", log());
    assert!(
        r.text("DATA")
            .contains(&clamav::REJECT_TEXT.replace("%v", clamav::VIRUS_NAME)),
        "{r:?}"
    );
    let clean = message("a@clean.test", "clean", "No virus here.");
    let r = smtp(dir, port, "a@clean.test", "b@localhost.test", &clean, None);
    assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", log());
}

#[test]
fn postfix_clamav_fixture_rejects_eicar() {
    let t = "postfix_clamav_fixture_rejects_eicar";
    let dir = TestDir::new("pf-clamav");
    let Some(_cl) = ClamavMilter::start(t, &dir.path, 23141) else {
        return;
    };
    let Some(pf) = Postfix::start(t, &dir.path, 23155, "smtpd_milters = inet:127.0.0.1:23141")
    else {
        return;
    };
    clamav_cases(&dir.path, pf.port, &|| pf.log());
    let got = pf.wait_delivered(1);
    assert!(read(&got[0]).contains("No virus here."));
}

#[test]
fn sloop_clamav_milter_rejects_eicar() {
    let t = "sloop_clamav_milter_rejects_eicar";
    let base = TestDir::new("sloop-clamav-peer");
    let Some(_cl) = ClamavMilter::start(t, &base.path, 23142) else {
        return;
    };
    // One smtpd worker: the second session runs on the connection the first one
    // kept (after the unknown-command event: libmilter is back at HELO after the
    // rejected message).
    let s = Sloop::start(
        "sloop-clamav",
        &[("smtpd.max_processes", "1"), ("smtpd.min_idle", "1")],
        "[[milter]]\nname = \"clamav\"\nsocket = \"inet:127.0.0.1:23142\"\n",
    );
    clamav_cases(&base.path, s.port, &|| s.log());
    let log = s.log();
    assert!(
        log.contains("milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 5")
            && log.contains(&clamav::REJECT_TEXT.replace("%v", clamav::VIRUS_NAME)),
        "{log}"
    );
    // One more session: on the connection the worker kept.
    let kept = kept_connection(23142, &|| s.log());
    let clean = message("a@clean.test", "clean-again", "Still no virus.");
    let r = smtp(
        &base.path,
        s.port,
        "a@clean.test",
        "b@localhost.test",
        &clean,
        None,
    );
    assert_eq!(r.code("DATA"), 250, "{r:?}\n{}", s.log());
    assert_eq!(
        kept_connection(23142, &|| s.log()),
        kept,
        "not the kept connection"
    );
    let got = s.wait_delivered(2);
    assert!(got.iter().all(|f| read(f).contains("o virus")), "{got:?}");
    assert_eq!(got.len(), 2, "the infected message was delivered too");
}
