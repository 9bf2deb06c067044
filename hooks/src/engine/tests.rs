//! The engine with real configuration and no servers: sockets nobody listens on
//! stand in for failed services.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::failure::HookReply;
use sloop_common::config::hooks::{
    AccessEntry, AccessList, HookSocket, MilterHook, OnError, PolicyHook,
};
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
        reuse: true,
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
    let mut envelope = Envelope::new(
        "a@b.example",
        vec![sloop_common::spool::Recipient::new("c@d.example")],
    );
    let d = e.end_of_message(
        &mut s,
        &facts(),
        Message {
            bytes: &mut bytes,
            envelope: &mut envelope,
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

/// A filter on a unix socket that answers every event with continue (the end of the
/// message with accept, as OpenDKIM does), takes QUIT_NC after an unknown command,
/// and counts its connections and what it was sent.
struct KeepingFilter {
    socket: HookSocket,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
    dir: PathBuf,
}

impl KeepingFilter {
    fn start(name: &str) -> KeepingFilter {
        use crate::milter::{encode_reply, read_packet, Reply};
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let dir =
            std::env::temp_dir().join(format!("sloop-engine-keep-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("milter.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (c, s) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
                loop {
                    let packet = match read_packet(&buf) {
                        Ok(Some((p, used))) => {
                            buf.drain(..used);
                            p
                        }
                        Ok(None) => match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                buf.extend_from_slice(&chunk[..n]);
                                continue;
                            }
                        },
                        Err(_) => break,
                    };
                    s.lock().unwrap().push(packet.cmd as char);
                    let reply = match packet.cmd {
                        b'O' => Reply::OptNeg {
                            version: 6,
                            actions: 0x01,
                            protocol: 0,
                            symlists: Vec::new(),
                        },
                        b'D' | b'A' | b'K' => continue,
                        b'Q' => break,
                        b'E' => Reply::Accept,
                        _ => Reply::Continue,
                    };
                    if conn.write_all(&encode_reply(&reply)).is_err() {
                        break;
                    }
                }
            }
        });
        KeepingFilter {
            socket: HookSocket::Unix(path),
            connections,
            seen,
            dir,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for KeepingFilter {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One SMTP session with one message through the engine.
fn one_session(e: &mut Engine) {
    let mut s = e.session(HookListener::Smtpd);
    for st in [
        HookStage::Connect,
        HookStage::Helo,
        HookStage::Mail,
        HookStage::Rcpt,
        HookStage::Data,
    ] {
        assert_eq!(e.run(&mut s, st, &facts(), soon()), Decision::accept());
    }
    let mut bytes = b"Subject: x\r\n\r\nbody\r\n".to_vec();
    let mut envelope = Envelope::new(
        "a@b.example",
        vec![sloop_common::spool::Recipient::new("c@d.example")],
    );
    let msg = Message {
        bytes: &mut bytes,
        envelope: &mut envelope,
    };
    assert_eq!(
        e.end_of_message(&mut s, &facts(), msg, soon()),
        Decision::accept()
    );
    e.finish(&mut s, soon());
}

#[test]
fn consecutive_sessions_use_one_kept_connection() {
    let f = KeepingFilter::start("on");
    let mut m = milter("keep", OnError::Tempfail);
    m.socket = f.socket.clone();
    m.command_timeout = Duration::from_secs(10);
    m.content_timeout = Duration::from_secs(10);
    let mut e = Engine::new(&HooksConfig {
        milters: vec![m],
        ..HooksConfig::default()
    });
    for n in 1..=3 {
        one_session(&mut e);
        assert_eq!(e.kept(), 1, "session {n}");
    }
    assert_eq!(f.connections(), 1);
    // Idle for less than the limit: kept; the process exits: closed with QUIT.
    e.close_idle(Instant::now());
    assert_eq!(e.kept(), 1);
    e.close_kept();
    assert_eq!(e.kept(), 0);
    let ok = |seen: &str| seen.ends_with("UKQ") && seen.matches('O').count() == 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(&f.seen.lock().unwrap()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = f.seen.lock().unwrap().clone();
    assert!(ok(&seen), "{seen}");
    assert_eq!(seen.matches("UK").count(), 3, "{seen}");
    // Idle too long: closed.
    one_session(&mut e);
    e.close_idle(Instant::now() + crate::milter::REUSE_MAX_IDLE);
    assert_eq!(e.kept(), 0);
}

#[test]
fn with_reuse_off_each_session_connects() {
    let f = KeepingFilter::start("off");
    let mut m = milter("nokeep", OnError::Tempfail);
    m.socket = f.socket.clone();
    m.command_timeout = Duration::from_secs(10);
    m.content_timeout = Duration::from_secs(10);
    m.reuse = false;
    let mut e = Engine::new(&HooksConfig {
        milters: vec![m],
        ..HooksConfig::default()
    });
    one_session(&mut e);
    one_session(&mut e);
    assert_eq!(e.kept(), 0);
    assert_eq!(f.connections(), 2);
}
