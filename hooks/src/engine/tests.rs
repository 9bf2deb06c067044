//! The engine with real configuration and no servers: sockets nobody listens on
//! stand in for failed services.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::failure::HookReply;
use sloop_common::config::hooks::{AccessEntry, AccessList, HookSocket, OnError, PolicyHook};
use std::path::PathBuf;
use std::time::Duration;

/// A socket path nobody listens on.
fn nowhere(name: &str) -> HookSocket {
    HookSocket::Unix(PathBuf::from(format!(
        "/nonexistent/sloop-engine-test/{name}.sock"
    )))
}

fn policy(name: &str, stage: HookStage, on_error: OnError) -> PolicyHook {
    PolicyHook {
        name: name.into(),
        socket: nowhere(name),
        stage,
        timeout: Duration::from_millis(200),
        tries: 1,
        on_error,
        listeners: vec![HookListener::Smtpd],
    }
}

fn milter(name: &str, on_error: OnError) -> MilterHook {
    MilterHook {
        name: name.into(),
        socket: nowhere(name),
        on_error,
        connect_timeout: Duration::from_millis(200),
        command_timeout: Duration::from_millis(200),
        content_timeout: Duration::from_millis(200),
        listeners: vec![HookListener::Smtpd],
    }
}

fn facts() -> Facts {
    let mut f = Facts::new(
        HookListener::Smtpd,
        Some("192.0.2.7".parse().unwrap()),
        "unknown",
    );
    f.helo = "client.example".into();
    f.sender = "a@b.example".into();
    f.queue_id = "0123456789ABCDEF012345".into();
    f
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn reply_code(d: &Decision) -> Option<u16> {
    match d {
        Decision::Reply { reply, .. } => Some(reply.code),
        Decision::Accept(_) => None,
    }
}

#[test]
fn nothing_configured_is_idle_everywhere() {
    let e = Engine::new(&HooksConfig::default());
    assert!(e.idle(HookListener::Smtpd));
    assert!(e.idle(HookListener::Local));
}

#[test]
fn a_policy_runs_only_at_its_stage_and_listener() {
    let cfg = HooksConfig {
        policies: vec![policy("p", HookStage::Rcpt, OnError::Tempfail)],
        ..HooksConfig::default()
    };
    let e = Engine::new(&cfg);
    assert!(e.active(HookListener::Smtpd, HookStage::Rcpt));
    assert!(!e.active(HookListener::Smtpd, HookStage::Mail));
    assert!(e.idle(HookListener::Submission));
}

#[test]
fn an_access_accept_skips_the_policy_services_of_the_stage() {
    let mut cfg = HooksConfig {
        policies: vec![policy("p", HookStage::Rcpt, OnError::Reject)],
        ..HooksConfig::default()
    };
    cfg.access.recipient =
        vec![AccessEntry::parse(AccessList::Recipient, "abuse@example.com accept").unwrap()];
    let mut e = Engine::new(&cfg);
    let mut s = e.session(HookListener::Smtpd);
    let mut f = facts();
    f.recipient = "abuse@example.com".into();
    assert_eq!(
        e.run(&mut s, HookStage::Rcpt, &f, soon()),
        Decision::accept()
    );
    f.recipient = "other@example.com".into();
    let d = e.run(&mut s, HookStage::Rcpt, &f, soon());
    assert_eq!(
        d,
        Decision::Reply {
            reply: HookReply::new(550, (5, 3, 5), "Server configuration problem"),
            source: Source::Policy
        }
    );
}

#[test]
fn a_failed_milter_applies_its_on_error_at_every_later_stage() {
    let cfg = HooksConfig {
        milters: vec![milter("m", OnError::Accept), milter("t", OnError::Tempfail)],
        ..HooksConfig::default()
    };
    let mut e = Engine::new(&cfg);
    // "t" fails at connect: its tempfail there is 421 and close.
    let mut s = e.session(HookListener::Smtpd);
    let d = e.run(&mut s, HookStage::Connect, &facts(), soon());
    assert_eq!(reply_code(&d), Some(421));
    // Only "m" (on_error accept): the session goes on without it, at every stage.
    let cfg = HooksConfig {
        milters: vec![milter("m", OnError::Accept)],
        ..HooksConfig::default()
    };
    let mut e = Engine::new(&cfg);
    let mut s = e.session(HookListener::Smtpd);
    for st in [HookStage::Connect, HookStage::Helo, HookStage::Mail] {
        assert_eq!(e.run(&mut s, st, &facts(), soon()), Decision::accept());
    }
    // With reject, each later stage is refused (not only the first).
    let cfg = HooksConfig {
        milters: vec![milter("r", OnError::Reject)],
        ..HooksConfig::default()
    };
    let mut e = Engine::new(&cfg);
    let mut s = e.session(HookListener::Smtpd);
    assert_eq!(
        reply_code(&e.run(&mut s, HookStage::Connect, &facts(), soon())),
        Some(554)
    );
    assert_eq!(
        reply_code(&e.run(&mut s, HookStage::Mail, &facts(), soon())),
        Some(550)
    );
    let mut bytes = b"Subject: x\r\n\r\nbody\r\n".to_vec();
    let mut sender = "a@b.example".to_string();
    let mut rcpts = vec!["c@d.example".to_string()];
    let d = e.end_of_message(
        &mut s,
        &facts(),
        Message {
            bytes: &mut bytes,
            sender: &mut sender,
            recipients: &mut rcpts,
        },
        soon(),
    );
    assert_eq!(reply_code(&d), Some(550));
    assert_eq!(bytes, b"Subject: x\r\n\r\nbody\r\n");
    e.finish(&mut s, soon());
}

#[test]
fn a_deadline_already_past_fails_the_call_not_the_session() {
    let cfg = HooksConfig {
        policies: vec![policy("p", HookStage::Mail, OnError::Tempfail)],
        ..HooksConfig::default()
    };
    let mut e = Engine::new(&cfg);
    let mut s = e.session(HookListener::Smtpd);
    let started = Instant::now();
    let d = e.run(&mut s, HookStage::Mail, &facts(), Instant::now());
    assert_eq!(reply_code(&d), Some(451));
    assert!(started.elapsed() < Duration::from_secs(1));
}
