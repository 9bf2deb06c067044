//! Fuzz target: the qmgr <-> sloop-deliver pipe protocol parsers
//! (`sloop_common::delivery_proto::{Job, Reply}::parse`). `Reply::parse` reads what a
//! delivery worker (a child that may misbehave) writes; `Job::parse` is its mirror.
//! Properties: never panics; a line that parses, written again with `to_line`, is a
//! single line that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_common::delivery_proto::{Job, Reply};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(job) = Job::parse(line) {
        let out = job.to_line();
        assert_eq!(
            out.matches('\n').count(),
            1,
            "job line is not one line: {out:?}"
        );
        assert_eq!(Job::parse(&out), Some(job), "job does not round-trip");
    }
    if let Some(reply) = Reply::parse(line) {
        let out = reply.to_line();
        assert_eq!(
            out.matches('\n').count(),
            1,
            "reply line is not one line: {out:?}"
        );
        assert_eq!(Reply::parse(&out), Some(reply), "reply does not round-trip");
    }
});
