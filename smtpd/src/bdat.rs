//! The BDAT receiver (RFC 3030): collects chunk octets into the message with the
//! checks DATA applies (`data.rs`): bare CR or LF (refused, or stored as CRLF with
//! `smtpd.bare_newline = "normalize"`), NUL, line length and size.
//!
//! The checks run across chunk boundaries: a CR that ends one chunk and the LF that
//! starts the next are one line end, and a line split over chunks is measured whole.
//! A CR still pending when the LAST chunk ends is a bare CR. BDAT has no dot-stuffing
//! and no end-of-data marker; the octets are taken as they come. After the first
//! error the octets are only counted, so memory stays bounded by the limits, and the
//! error is answered at the LAST chunk, as DATA answers at the final dot.

use crate::data::{DataError, DataLimits};

/// A BDAT message being collected, chunk after chunk.
#[derive(Debug)]
pub struct BdatReceiver {
    limits: DataLimits,
    body: Vec<u8>,
    /// Octets of the current line so far, line end excluded.
    line: usize,
    /// The last octet fed was a CR whose LF may open the next chunk.
    cr: bool,
    size: u64,
    error: Option<DataError>,
}

impl BdatReceiver {
    pub fn new(limits: DataLimits) -> BdatReceiver {
        BdatReceiver {
            limits,
            body: Vec::new(),
            line: 0,
            cr: false,
            size: 0,
            error: None,
        }
    }

    /// Takes the next octets of the message (any part of any chunk).
    pub fn feed(&mut self, mut octets: &[u8]) {
        while let Some(&first) = octets.first() {
            if std::mem::take(&mut self.cr) {
                if first == b'\n' {
                    self.end_line();
                    octets = &octets[1..];
                    continue;
                }
                self.bare(DataError::BareCr);
            }
            let Some(i) = memchr::memchr3(b'\r', b'\n', 0, octets) else {
                self.text(octets);
                return;
            };
            self.text(&octets[..i]);
            match octets[i] {
                b'\r' => self.cr = true,
                b'\n' => self.bare(DataError::BareLf),
                _ => {
                    self.set_error(DataError::Nul);
                    self.text(&octets[i..=i]);
                }
            }
            octets = &octets[i + 1..];
        }
    }

    /// The message, or why it is refused; call after the LAST chunk.
    pub fn finish(mut self) -> Result<Vec<u8>, DataError> {
        if std::mem::take(&mut self.cr) {
            self.bare(DataError::BareCr);
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.body),
        }
    }

    pub fn limits(&self) -> &DataLimits {
        &self.limits
    }

    /// Line content (no CR or LF).
    fn text(&mut self, t: &[u8]) {
        if t.is_empty() {
            return;
        }
        self.line += t.len();
        // The line limit counts the CRLF, as in DATA.
        if self.line + 2 > self.limits.max_line {
            self.set_error(DataError::LineTooLong);
        }
        self.store(t);
    }

    fn end_line(&mut self) {
        self.line = 0;
        self.store(b"\r\n");
    }

    /// A bare CR or LF: a line end when normalizing, else the message's error.
    fn bare(&mut self, e: DataError) {
        if !self.limits.normalize_bare_newlines {
            self.set_error(e);
        }
        self.end_line();
    }

    fn store(&mut self, t: &[u8]) {
        self.size += t.len() as u64;
        if self.size > self.limits.max_size {
            self.set_error(DataError::TooBig);
        }
        if self.error.is_none() {
            self.body.extend_from_slice(t);
        }
    }

    fn set_error(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
            self.body = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn limits(normalize: bool) -> DataLimits {
        DataLimits {
            max_size: 10_000,
            max_line: 1000,
            normalize_bare_newlines: normalize,
        }
    }

    /// Feeds `input` cut at every `step` octets.
    fn run(input: &[u8], step: usize, normalize: bool) -> Result<Vec<u8>, DataError> {
        let mut rx = BdatReceiver::new(limits(normalize));
        for piece in input.chunks(step.max(1)) {
            rx.feed(piece);
        }
        rx.finish()
    }

    #[test]
    fn crlf_messages_pass_unchanged_however_cut() {
        let msg = b"Subject: x\r\n\r\n.leading dot kept\r\nbody\r\n";
        for step in [1, 2, 3, 11, 100] {
            assert_eq!(run(msg, step, false).unwrap(), msg);
        }
    }

    #[test]
    fn bare_newlines_nul_and_limits() {
        assert_eq!(run(b"a\nb\r\n", 1, false), Err(DataError::BareLf));
        assert_eq!(run(b"a\rb\r\n", 1, false), Err(DataError::BareCr));
        assert_eq!(run(b"a\r\nb\r", 1, false), Err(DataError::BareCr));
        assert_eq!(run(b"a\0b\r\n", 2, false), Err(DataError::Nul));
        assert_eq!(run(b"a\nb\rc\r\n", 1, true).unwrap(), b"a\r\nb\r\nc\r\n");
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n");
        assert!(run(&ok, 7, false).is_ok());
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n");
        assert_eq!(run(&long, 7, false), Err(DataError::LineTooLong));
        let big = b"y"
            .repeat(98)
            .into_iter()
            .chain(*b"\r\n")
            .collect::<Vec<u8>>();
        assert_eq!(run(&big.repeat(101), 4096, false), Err(DataError::TooBig));
    }

    /// The verdict and the message do not depend on where the chunks are cut.
    #[test]
    fn cutting_never_changes_the_verdict() {
        let alphabet: &[&[u8]] = &[b"\r\n", b"\n", b"\r", b"x", b"\0", b"."];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..(next() % 30) {
                input.extend_from_slice(alphabet[(next() as usize) % alphabet.len()]);
            }
            let step = (next() % 7 + 1) as usize;
            for normalize in [false, true] {
                let whole = run(&input, input.len(), normalize);
                assert_eq!(whole, run(&input, step, normalize), "{input:?}");
            }
        }
    }
}
