//! Fuzz target: arbitrary client bytes through the command parser and the whole
//! session state machine. The first octet picks the size of the pieces the input is
//! fed in. Every reply must pass the G7 check (`reply::check_wire`); the session must
//! never panic; queue jobs are answered as committed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_smtpd::reply::check_wire;
use sloop_smtpd::session::{Client, Opening, Policy, QueueOutcome, Session, Step};
use std::sync::OnceLock;

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let text = "[server]\nhostname = \"mx.test\"\n[domains]\nlocal = [\"local.test\", \"catch.test\"]\n\
                    [local]\nmailboxes = [\"alice@local.test\", \"@catch.test\"]\n\
                    [smtpd]\nmax_errors = 1000\nmax_recipients = 20\nmax_message_size = \"4K\"\n";
        let cfg = sloop_common::Config::parse(std::path::Path::new("/fuzz.toml"), text)
            .expect("fuzz config");
        Policy::new(cfg, sloop_common::aliases::Aliases::empty())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 64) + 1;
    let client = Client {
        addr: "192.0.2.1".parse().expect("address"),
        name: "unknown".into(),
    };
    let mut s = Session::start(policy(), client, Opening::Greet);
    let mut greeting = true;
    for chunk in input.chunks(piece).map(Some).chain([None]) {
        match chunk {
            Some(c) => s.input(c),
            None => s.eof(),
        }
        loop {
            match s.step() {
                Step::Reply(r) => {
                    let wire = r.to_wire();
                    // Only the greeting and the EHLO/HELO reply (a 250 naming our host
                    // first) may go without an enhanced code; decided from what the
                    // reply says, not from its own `enhanced` field.
                    let bare = greeting
                        || wire.starts_with(b"250-mx.test\r\n")
                        || wire == b"250 mx.test\r\n";
                    if let Err(e) = check_wire(&wire, !bare) {
                        panic!("G7 violated: {e}");
                    }
                    greeting = false;
                }
                Step::Queue(job) => s.queued(&job.id, QueueOutcome::Committed),
                Step::NeedInput => break,
                Step::Close => return,
                // No certificate, no AUTH backend, no filter in this configuration:
                // the session must never ask for them.
                Step::StartTls | Step::Authenticate(_) | Step::Hook(_) => {
                    panic!("a step this configuration cannot produce")
                }
            }
        }
    }
});
