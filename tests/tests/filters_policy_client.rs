//! Sloop's policy delegation client (`sloop_hooks::policy::PolicyClient`) against the
//! real policy services from Debian's packages, without an SMTP server in between: the
//! fixtures of `filters_interop.rs` (postgrey on 127.0.0.1, policyd-spf on a unix socket
//! with its own DNS), asked the requests the smtpd sends at RCPT, over one reused
//! connection as Postfix does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_common::config::hooks::{HookListener, HookSocket, HookStage, OnError, PolicyHook};
use sloop_hooks::policy::{Action, PolicyClient, ProtocolState, Request};
use sloop_tests::filters::postgrey::Postgrey;
use sloop_tests::filters::spf::{self, PolicydSpf};
use sloop_tests::{TestDir, LOAD_MARGIN};
use std::time::{Duration, Instant};

fn hook(name: &str, socket: HookSocket) -> PolicyHook {
    PolicyHook {
        name: name.to_string(),
        socket,
        stage: HookStage::Rcpt,
        timeout: Duration::from_secs(20),
        tries: 2,
        on_error: OnError::Tempfail,
        listeners: vec![HookListener::Smtpd],
    }
}

fn rcpt_request(sender: &str, instance: &str) -> Request {
    let mut r = Request::new(ProtocolState::Rcpt);
    r.set("protocol_name", "ESMTP")
        .set("helo_name", "client.test")
        .set("queue_id", "")
        .set("sender", sender)
        .set("recipient", "b@localhost.test")
        .set("recipient_count", "0")
        .set("client_address", "127.0.0.1")
        .set("client_name", "localhost")
        .set("reverse_client_name", "localhost")
        .set("client_port", "40000")
        .set("server_address", "127.0.0.1")
        .set("server_port", "25")
        .set("instance", instance)
        .set("mail_version", "Sloop");
    r
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[test]
fn policy_client_gets_postgreys_defer_if_permit_then_its_prepend_after_the_delay() {
    let t = "policy_client_gets_postgreys_defer_if_permit_then_its_prepend_after_the_delay";
    let dir = TestDir::new("policy-client-postgrey");
    let Some(grey) = Postgrey::start(t, &dir.path, 23103, Duration::from_secs(2)) else {
        return;
    };
    let mut client = PolicyClient::new(&hook(
        "postgrey",
        HookSocket::Inet {
            host: "127.0.0.1".to_string(),
            port: grey.port,
        },
    ));
    let started = Instant::now();
    let first = client
        .query(&rcpt_request("a@grey.test", "1.1"), deadline())
        .expect("first query");
    match &first {
        Action::DeferIfPermit(Some(text)) => assert!(text.contains("Greylisted"), "{first:?}"),
        other => panic!("first sight is not DEFER_IF_PERMIT: {other:?}"),
    }
    // A different triplet on the same (reused) connection is greylisted too.
    let other = client
        .query(&rcpt_request("c@grey.test", "1.2"), deadline())
        .expect("second query");
    assert!(matches!(other, Action::DeferIfPermit(_)), "{other:?}");
    assert!(
        client.is_connected(),
        "the connection was not kept for reuse"
    );
    // After the delay (polled, no faster than once a second) the triplet passes, with
    // postgrey's X-Greylist header to prepend.
    let end = Instant::now() + grey.delay + LOAD_MARGIN + Duration::from_secs(30);
    let last = loop {
        let a = client
            .query(&rcpt_request("a@grey.test", "1.3"), deadline())
            .expect("retry query");
        if !matches!(a, Action::DeferIfPermit(_)) || Instant::now() >= end {
            break a;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    match &last {
        Action::Prepend(h) => assert!(h.starts_with("X-Greylist: delayed"), "{last:?}"),
        other => panic!("retry after the delay: {other:?}"),
    }
    assert!(started.elapsed() >= grey.delay);
}

#[test]
fn policy_client_gets_policyd_spfs_reject_and_received_spf() {
    let t = "policy_client_gets_policyd_spfs_reject_and_received_spf";
    let dir = TestDir::new("policy-client-spf");
    let Some(spf) = PolicydSpf::start(t, &dir.path) else {
        return;
    };
    let mut client = PolicyClient::new(&hook("policyd-spf", HookSocket::Unix(spf.socket.clone())));
    let fail = client
        .query(
            &rcpt_request(&format!("a@{}", spf::FAIL_DOMAIN), "2.1"),
            deadline(),
        )
        .expect("fail query");
    match &fail {
        Action::Code {
            code: 550,
            enhanced,
            text,
        } => {
            assert_eq!(*enhanced, Some((5, 7, 23)), "{fail:?}");
            assert!(text.contains("SPF fail - not authorized"), "{fail:?}");
        }
        other => panic!("SPF fail not rejected: {other:?}"),
    }
    // One message each (policyd-spf prepends once per `instance`, then says DUNNO).
    for (domain, result, instance) in [
        (spf::PASS_DOMAIN, "Pass", "2.2"),
        (spf::SOFTFAIL_DOMAIN, "Softfail", "2.3"),
    ] {
        let a = client
            .query(&rcpt_request(&format!("a@{domain}"), instance), deadline())
            .expect("query");
        match &a {
            // policyd-spf writes the action in lower case (`action=prepend`).
            Action::Prepend(h) => assert!(
                h.starts_with(&format!(
                    "Received-SPF: {result} (mailfrom) identity=mailfrom; client-ip=127.0.0.1"
                )) && h.contains(&format!("envelope-from=a@{domain}")),
                "{a:?}"
            ),
            other => panic!("{domain}: {other:?}"),
        }
        // A second recipient of the same message: already checked, nothing to add.
        let again = client
            .query(&rcpt_request(&format!("a@{domain}"), instance), deadline())
            .expect("query");
        assert_eq!(again, Action::Dunno, "{domain}");
    }
}
