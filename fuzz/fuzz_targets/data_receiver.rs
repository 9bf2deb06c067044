//! Fuzz target: the DATA receiver. The same input fed in one piece and in pieces of a
//! size picked by the first octet must give the same verdict and consume the same
//! octets; the end of data is only ever `CRLF.CRLF` (or `.CRLF` first); an accepted
//! message has only CRLF line ends, no NUL, and respects the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sloop_smtpd::data::{DataLimits, DataReceiver};

const LIMITS: DataLimits = DataLimits {
    max_size: 4096,
    max_line: 1000,
    normalize_bare_newlines: false,
};

fn run(
    input: &[u8],
    piece: usize,
    limits: DataLimits,
) -> (usize, Option<Result<Vec<u8>, sloop_smtpd::data::DataError>>) {
    let mut rx = DataReceiver::new(limits);
    let mut used = 0;
    for chunk in input.chunks(piece) {
        let (n, done) = rx.feed(chunk);
        assert!(n <= chunk.len());
        used += n;
        if done {
            return (used, Some(rx.finish()));
        }
        assert_eq!(n, chunk.len(), "input left over without end of data");
    }
    (used, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first) % 97 + 1;
    for normalize in [false, true] {
        let limits = DataLimits {
            normalize_bare_newlines: normalize,
            ..LIMITS
        };
        let whole = run(input, input.len().max(1), limits);
        let pieces = run(input, piece, limits);
        assert_eq!(whole.0, pieces.0, "consumed differs");
        assert_eq!(whole.1, pieces.1, "verdict differs");
        if whole.1.is_some() {
            let end = &input[..whole.0];
            assert!(
                end == b".\r\n" || end.ends_with(b"\r\n.\r\n"),
                "ended without CRLF.CRLF"
            );
        }
        if let Some(Ok(msg)) = whole.1 {
            assert!(msg.len() as u64 <= limits.max_size);
            assert!(!msg.contains(&0));
            for (i, &b) in msg.iter().enumerate() {
                if b == b'\n' {
                    assert!(i > 0 && msg[i - 1] == b'\r', "bare LF stored");
                }
                if b == b'\r' {
                    assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR stored");
                }
            }
        }
    }
});
