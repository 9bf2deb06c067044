//! The DATA phase's byte transformation (RFC 5321 §4.5.2): every line ends in CRLF (a
//! bare LF becomes CRLF, a bare CR is kept only as part of CRLF), a line starting with
//! `.` gets a second `.`, and the end is `CRLF.CRLF`.
//!
//! [`DotStuffer`] is a streaming writer: it keeps only whether it is at the start of a
//! line and whether the previous octet was CR, so messages of any size pass through it
//! in constant memory. A message without a final line ending gets one.

use std::io::{self, Write};

/// Wraps a writer and dot-stuffs / CRLF-normalises everything written through it.
#[derive(Debug)]
pub struct DotStuffer<W: Write> {
    inner: W,
    at_line_start: bool,
    pending_cr: bool,
    out: Vec<u8>,
}

impl<W: Write> DotStuffer<W> {
    pub fn new(inner: W) -> DotStuffer<W> {
        DotStuffer {
            inner,
            at_line_start: true,
            pending_cr: false,
            out: Vec::with_capacity(64 * 1024),
        }
    }

    /// Writes the final line ending if needed and the `.` line; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.pending_cr {
            self.out.extend_from_slice(b"\r\n");
            self.pending_cr = false;
            self.at_line_start = true;
        }
        if !self.at_line_start {
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
        self.inner.write_all(&self.out)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn push(&mut self, b: u8) {
        if self.pending_cr {
            self.pending_cr = false;
            if b == b'\n' {
                self.out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                return;
            }
            // A bare CR ends a line too: normalise it to CRLF.
            self.out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => {
                self.out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
            }
            _ => {
                if self.at_line_start && b == b'.' {
                    self.out.push(b'.');
                }
                self.out.push(b);
                self.at_line_start = false;
            }
        }
    }
}

impl<W: Write> Write for DotStuffer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.push(b);
        }
        if self.out.len() >= 32 * 1024 {
            self.inner.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.out)?;
        self.out.clear();
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::new(Vec::new());
        for c in chunks {
            s.write_all(c).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn dots_are_doubled_at_line_start_only() {
        assert_eq!(
            stuff(&[b".a\r\nb.c\r\n..\r\n"]),
            b"..a\r\nb.c\r\n...\r\n.\r\n"
        );
        assert_eq!(stuff(&[b"x\r\n.\r\ny\r\n"]), b"x\r\n..\r\ny\r\n.\r\n");
    }

    #[test]
    fn line_endings_are_normalised() {
        assert_eq!(stuff(&[b"a\nb\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b"a\rb\r\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b"no end"]), b"no end\r\n.\r\n");
        assert_eq!(stuff(&[b"cr end\r"]), b"cr end\r\n.\r\n");
        assert_eq!(stuff(&[]), b".\r\n");
    }

    #[test]
    fn state_survives_chunk_boundaries() {
        assert_eq!(stuff(&[b"a\r", b"\n.b\r", b"\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r\n", b".", b"\r\n"]), b"a\r\n..\r\n.\r\n");
        assert_eq!(
            stuff(&[b"x\r\n", b".", b"\r", b"\n"]),
            stuff(&[b"x\r\n.\r\n"])
        );
    }

    #[test]
    fn smuggling_sequences_cannot_end_data_early() {
        // A bare-LF dot line must not become a terminator on the wire.
        let out = stuff(&[b"a\n.\nb\r\n"]);
        assert_eq!(out, b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(out.windows(5).filter(|w| w == b"\r\n.\r\n").count(), 1);
    }

    /// Random inputs over the interesting bytes, split at random points: the output is
    /// the same as for one write, every CR is followed by LF, and the only `CRLF.CRLF`
    /// is the terminator.
    #[test]
    fn random_inputs_and_splits() {
        let alphabet = b".\r\nab";
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..2000 {
            let len = next() % 40;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            let whole = stuff(&[&input]);
            let cut = if input.is_empty() {
                0
            } else {
                next() % input.len()
            };
            let (a, b) = input.split_at(cut);
            assert_eq!(stuff(&[a, b]), whole, "{input:?}");
            for (i, &c) in whole.iter().enumerate() {
                if c == b'\r' {
                    assert_eq!(whole.get(i + 1), Some(&b'\n'), "{input:?}");
                }
            }
            let ends = whole.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            let expected = usize::from(whole.len() > 3);
            assert_eq!(ends, expected, "{input:?} -> {whole:?}");
        }
    }
}
