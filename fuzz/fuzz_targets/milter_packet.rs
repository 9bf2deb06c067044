//! Fuzz target: the milter reply codec (`sloop_hooks::milter::{read_packet, Reply}`),
//! which reads what a filter (a separate daemon that may misbehave) sends.
//! Properties: never panics; a packet read takes at least its 5-octet frame and never
//! more than the input; a reply that decodes, encoded again, is the very same packet;
//! an option negotiation reply either negotiates or fails with a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_hooks::milter::{encode_reply, read_packet, Negotiated, Reply};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((packet, used))) = read_packet(rest) {
        assert!(used >= 5 && used <= rest.len(), "bad packet size {used}");
        if let Ok(reply) = Reply::decode(&packet) {
            assert_eq!(
                encode_reply(&reply),
                &rest[..used],
                "{} does not round-trip",
                reply.name()
            );
            if let Reply::OptNeg { .. } = reply {
                if let Err(e) = Negotiated::accept(&reply) {
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        rest = &rest[used..];
    }
});
