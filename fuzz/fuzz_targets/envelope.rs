//! Fuzz target: the two envelope readers in `sloop_common::spool::envelope`.
//! The same bytes are read as a qmail-queue fd-1 envelope (`parse_qmail`, what any
//! local client may write to sloop-queue) and as a whole queue file
//! (`read_from`: message || envelope trailer, what the queue manager reads from disk).
//! Properties: neither reader panics; an fd-1 envelope that parses serialises
//! (`to_qmail`) to one that parses equal; a trailer that reads back, written again
//! after the same message bytes (`to_trailer`), reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_common::spool::Envelope;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse_qmail(data) {
        let again = Envelope::parse_qmail(&env.to_qmail());
        assert_eq!(
            again.as_ref(),
            Ok(&env),
            "fd-1 envelope does not round-trip"
        );
    }
    if let Ok(env) = Envelope::read_from(&mut Cursor::new(data)) {
        let size = usize::try_from(env.size).expect("size within the input");
        let mut file = data[..size].to_vec();
        file.extend_from_slice(&env.to_trailer());
        let again = Envelope::read_from(&mut Cursor::new(file.as_slice()));
        assert_eq!(
            again.as_ref(),
            Ok(&env),
            "queue-file trailer does not round-trip"
        );
    }
});
