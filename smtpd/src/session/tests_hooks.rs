//! Dialogue tests of the session with filter hooks: scripted decisions stand in for
//! the hook engine, so these test the session's side (what waits for a decision, what
//! each decision answers and stores) without sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::tests::policy;
use super::*;
use crate::reply::tests::assert_wire;
use sloop_common::config::hooks::{HookListener, HookStage};
use sloop_hooks::engine::{Decision, Effects, Source};
use sloop_hooks::failure::HookReply;

/// What the scripted engine answers at each stage (accept when not listed).
type Script = Vec<(HookStage, Decision)>;

#[derive(Debug, Default)]
struct Seen {
    codes: Vec<u16>,
    lines: Vec<String>,
    jobs: Vec<QueueJob>,
    calls: Vec<(HookStage, String)>,
    closed: bool,
}

fn session_with<'a>(p: &'a Policy, stages: &[HookStage]) -> Session<'a> {
    let client = Client {
        addr: "192.0.2.7".parse().unwrap(),
        name: "unknown".into(),
    };
    let all = HookStages::of(|s| stages.contains(&s));
    Session::start(p, client, Opening::Greet).with_hooks(all, HookListener::Smtpd)
}

fn drive(s: &mut Session<'_>, input: &[u8], script: &Script, seen: &mut Seen) {
    s.input(input);
    loop {
        match s.step() {
            Step::Reply(r) => {
                assert_wire(&r.to_wire(), r.enhanced.is_some());
                seen.codes.push(r.code);
                seen.lines.push(r.summary());
            }
            Step::Queue(job) => {
                let id = job.id.clone();
                seen.jobs.push(job);
                s.queued(&id, QueueOutcome::Committed);
            }
            Step::Hook(call) => {
                let subject = call.facts.subject(call.stage);
                seen.calls.push((call.stage, subject));
                let d = script
                    .iter()
                    .find(|(st, _)| *st == call.stage)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(Decision::accept);
                s.hooked(d, call.job);
            }
            Step::NeedInput => return,
            Step::Close => {
                seen.closed = true;
                return;
            }
            Step::StartTls | Step::Authenticate(_) => panic!("no TLS/AUTH here"),
        }
    }
}

fn reply(code: u16, e: (u8, u16, u16), text: &str, source: Source) -> Decision {
    Decision::Reply {
        reply: HookReply::new(code, e, text),
        source,
    }
}

const TXN: &[u8] = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@local.test>\r\n\
DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n";

#[test]
fn without_hooks_no_hook_step_is_ever_asked() {
    let p = policy("");
    let mut s = session_with(&p, &[]);
    let mut seen = Seen::default();
    drive(&mut s, TXN, &vec![], &mut seen);
    assert!(seen.calls.is_empty());
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 354, 250]);
}

#[test]
fn every_stage_asks_and_accepting_changes_nothing() {
    let p = policy("");
    let all = [
        HookStage::Connect,
        HookStage::Helo,
        HookStage::Mail,
        HookStage::Rcpt,
        HookStage::Data,
        HookStage::Eom,
    ];
    let mut s = session_with(&p, &all);
    let mut seen = Seen::default();
    drive(&mut s, TXN, &vec![], &mut seen);
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 354, 250]);
    let stages: Vec<HookStage> = seen.calls.iter().map(|c| c.0).collect();
    assert_eq!(stages, all.to_vec());
    assert_eq!(seen.calls[1].1, "c.example");
    assert_eq!(seen.calls[2].1, "a@b.example");
    assert_eq!(seen.calls[3].1, "alice@local.test");
    assert_eq!(seen.jobs.len(), 1);
}

#[test]
fn a_refused_connect_is_554_then_503_or_421_and_close() {
    let p = policy("");
    let mut s = session_with(&p, &[HookStage::Connect]);
    let mut seen = Seen::default();
    let script = vec![(
        HookStage::Connect,
        reply(554, (5, 7, 1), "no", Source::Policy),
    )];
    drive(&mut s, b"EHLO x\r\nQUIT\r\n", &script, &mut seen);
    assert_eq!(seen.codes, vec![554, 503, 221]);
    let mut s = session_with(&p, &[HookStage::Connect]);
    let mut seen = Seen::default();
    let script = vec![(
        HookStage::Connect,
        reply(
            421,
            (4, 3, 5),
            "Server configuration problem",
            Source::Policy,
        ),
    )];
    drive(&mut s, b"", &script, &mut seen);
    assert_eq!(seen.codes, vec![421]);
    assert!(seen.closed);
}

#[test]
fn a_rejected_rcpt_keeps_the_transaction_and_defer_is_450() {
    let p = policy("");
    let mut s = session_with(&p, &[HookStage::Rcpt]);
    let mut seen = Seen::default();
    let script = vec![(
        HookStage::Rcpt,
        reply(
            450,
            (4, 7, 1),
            "<alice@local.test>: Recipient address rejected: Greylisted",
            Source::Policy,
        ),
    )];
    drive(&mut s, TXN, &script, &mut seen);
    // RCPT deferred: DATA has no valid recipient; the message lines are then
    // commands (each refused), as with any client that ignores a failed RCPT.
    assert_eq!(&seen.codes[..4], &[220, 250, 250, 450]);
    assert_eq!(seen.codes[4], 554);
    assert!(seen.jobs.is_empty());
    assert!(seen.lines[3].contains("Greylisted"));
}

#[test]
fn the_built_in_relay_check_comes_first() {
    let p = policy("");
    let mut s = session_with(&p, &[HookStage::Rcpt]);
    let mut seen = Seen::default();
    drive(
        &mut s,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@elsewhere.example>\r\n",
        &vec![],
        &mut seen,
    );
    assert_eq!(seen.codes, vec![220, 250, 250, 554]);
    assert!(
        seen.calls.is_empty(),
        "no hook is asked about a relay refusal"
    );
}

#[test]
fn a_milter_reject_at_end_of_message_queues_nothing() {
    let p = policy("");
    let mut s = session_with(&p, &[HookStage::Eom]);
    let mut seen = Seen::default();
    let script = vec![(
        HookStage::Eom,
        reply(550, (5, 7, 1), "Message content rejected", Source::Milter),
    )];
    drive(&mut s, TXN, &script, &mut seen);
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 354, 550]);
    assert!(seen.jobs.is_empty());
    // The session goes on.
    drive(&mut s, b"QUIT\r\n", &script, &mut seen);
    assert_eq!(seen.codes.last(), Some(&221));
}

#[test]
fn hold_prepend_and_discard_reach_the_message() {
    let p = policy("");
    let effects = Effects {
        hold: Some("<a@b.example>: Sender address triggers HOLD action".into()),
        discard: None,
        prepend: vec!["X-Policy: checked".into()],
    };
    let mut s = session_with(&p, &[HookStage::Mail]);
    let mut seen = Seen::default();
    let script = vec![(HookStage::Mail, Decision::Accept(effects))];
    drive(&mut s, TXN, &script, &mut seen);
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 354, 250]);
    let job = &seen.jobs[0];
    assert!(job
        .message
        .starts_with(b"X-Policy: checked\r\nReceived: from c.example"));
    assert_eq!(
        job.envelope.hold.as_deref(),
        Some("<a@b.example>: Sender address triggers HOLD action")
    );
    // DISCARD: 250 and nothing queued.
    let discard = Effects {
        discard: Some("<alice@local.test>: Recipient address triggers DISCARD action".into()),
        ..Effects::default()
    };
    let mut s = session_with(&p, &[HookStage::Rcpt]);
    let mut seen = Seen::default();
    let script = vec![(HookStage::Rcpt, Decision::Accept(discard))];
    drive(&mut s, TXN, &script, &mut seen);
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 354, 250]);
    assert!(seen.jobs.is_empty());
    assert!(seen.lines[5].starts_with("250 2.0.0 Ok: queued as "));
}

#[test]
fn connect_effects_apply_to_every_message_of_the_session() {
    let p = policy("");
    let effects = Effects {
        hold: Some("<unknown[192.0.2.7]>: Client host triggers HOLD action".into()),
        ..Effects::default()
    };
    let mut s = session_with(&p, &[HookStage::Connect]);
    let mut seen = Seen::default();
    let script = vec![(HookStage::Connect, Decision::Accept(effects))];
    drive(&mut s, TXN, &script, &mut seen);
    drive(
        &mut s,
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\nx\r\n.\r\n",
        &script,
        &mut seen,
    );
    assert_eq!(seen.jobs.len(), 2);
    assert!(seen.jobs.iter().all(|j| j.envelope.hold.is_some()));
}

#[test]
fn a_refused_data_or_bdat_keeps_the_session_in_step() {
    let p = policy("");
    let script = vec![(
        HookStage::Data,
        reply(
            554,
            (5, 7, 1),
            "<DATA>: Data command rejected: no",
            Source::Policy,
        ),
    )];
    let mut s = session_with(&p, &[HookStage::Data]);
    let mut seen = Seen::default();
    drive(
        &mut s,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\nRSET\r\n",
        &script,
        &mut seen,
    );
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 554, 250]);
    let mut s = session_with(&p, &[HookStage::Data]);
    let mut seen = Seen::default();
    drive(
        &mut s,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@local.test>\r\nBDAT 5 LAST\r\nhelloNOOP\r\n",
        &script,
        &mut seen,
    );
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 554, 250]);
    assert!(seen.jobs.is_empty());
}

#[test]
fn a_421_to_bdat_is_sent_before_the_close() {
    let p = policy("");
    let script = vec![(
        HookStage::Data,
        reply(
            421,
            (4, 3, 5),
            "Server configuration problem",
            Source::Policy,
        ),
    )];
    let mut s = session_with(&p, &[HookStage::Data]);
    let mut seen = Seen::default();
    drive(
        &mut s,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@local.test>\r\nBDAT 5 LAST\r\nhello",
        &script,
        &mut seen,
    );
    assert_eq!(seen.codes, vec![220, 250, 250, 250, 421]);
    assert!(seen.closed);
}

#[test]
fn a_hook_421_closes_the_session() {
    let p = policy("");
    let mut s = session_with(&p, &[HookStage::Helo]);
    let mut seen = Seen::default();
    let script = vec![(
        HookStage::Helo,
        reply(
            421,
            (4, 3, 5),
            "Server configuration problem",
            Source::Milter,
        ),
    )];
    drive(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\n", &script, &mut seen);
    assert_eq!(seen.codes, vec![220, 421]);
    assert!(seen.closed);
}

#[test]
fn a_client_lost_during_hooks_gets_nothing() {
    let p = policy("");
    let mut s = session_with(&p, &[HookStage::Mail]);
    s.input(b"EHLO c\r\nMAIL FROM:<a@b>\r\n");
    let mut n = 0;
    loop {
        match s.step() {
            Step::Reply(_) => n += 1,
            Step::Hook(_) => {
                s.lost_during_hooks();
            }
            Step::Close => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The greeting and the EHLO reply were produced before; nothing after.
    assert_eq!(n, 2);
}
