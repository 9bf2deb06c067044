//! The message a job refers to: its queue file, opened once per job.
//!
//! The queue file holds `message || envelope trailer`; [`QueuedMessage`] keeps the file
//! open and hands out independent readers of the message octets (positioned reads), so
//! one job can copy the message to several mailboxes, pipes or servers without reading
//! it into memory and without the file vanishing under it (an operator's `hold` or
//! `delete` renames or unlinks the path, not the open file).
//!
//! A queue file that is missing, unreadable or malformed makes the whole job defer with
//! a clear text; the queue manager decides what happens next.

use crate::result::RcptResult;
use sloop_common::spool::Envelope;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How much of the header section is examined for `Delivered-To:` loops and the like.
pub const MAX_HEADER_SCAN: usize = 256 * 1024;

/// An open queue file.
#[derive(Debug)]
pub struct QueuedMessage {
    file: File,
    pub envelope: Envelope,
}

impl QueuedMessage {
    /// Opens the queue file at `path`; the error is a `defer` for every recipient.
    /// (No `exists()` first: the open tells a vanished file apart by itself.)
    pub fn open(path: &Path) -> Result<QueuedMessage, RcptResult> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RcptResult::defer(
                    "4.3.0",
                    "queue file is gone (held or deleted by the operator?)",
                ))
            }
            Err(e) => {
                return Err(RcptResult::defer(
                    "4.3.0",
                    format!("cannot read queue file: {}: {e}", path.display()),
                ))
            }
        };
        // Every later read is positioned (`read_at`), so the offset the envelope
        // reader leaves does not matter.
        match Envelope::read_from(&mut file) {
            Ok(envelope) => Ok(QueuedMessage { file, envelope }),
            Err(e) => Err(RcptResult::defer(
                "4.3.0",
                format!("cannot read queue file: {e}"),
            )),
        }
    }

    /// Size of the message in octets.
    pub fn size(&self) -> u64 {
        self.envelope.size
    }

    /// A fresh reader of the message octets, from the first.
    pub fn reader(&self) -> MessageReader<'_> {
        MessageReader {
            file: &self.file,
            pos: 0,
            end: self.envelope.size,
        }
    }

    /// The header section (up to the empty line, or [`MAX_HEADER_SCAN`] octets).
    pub fn header_bytes(&self) -> io::Result<Vec<u8>> {
        // Sized up front: growing from empty cost a read(2) per doubling.
        let cap = usize::try_from(self.envelope.size)
            .unwrap_or(MAX_HEADER_SCAN)
            .min(MAX_HEADER_SCAN);
        let mut buf = Vec::with_capacity(cap);
        self.reader()
            .take(MAX_HEADER_SCAN as u64)
            .read_to_end(&mut buf)?;
        let end = header_end(&buf).unwrap_or(buf.len());
        buf.truncate(end);
        Ok(buf)
    }

    /// [`uses_crlf`](Self::uses_crlf) answered from `header` (what
    /// [`header_bytes`](Self::header_bytes) returned) when it holds the first line's
    /// end, without reading the file again.
    pub fn uses_crlf_given(&self, header: &[u8]) -> bool {
        match header.iter().position(|&b| b == b'\n') {
            Some(i) => i > 0 && header[i - 1] == b'\r',
            None => self.uses_crlf(),
        }
    }

    /// True when the message's first line ends in CRLF (so added headers do too).
    pub fn uses_crlf(&self) -> bool {
        let mut buf = [0u8; 1024];
        let n = self.file.read_at(&mut buf, 0).unwrap_or(0);
        let n = n.min(self.envelope.size as usize);
        match buf[..n].iter().position(|&b| b == b'\n') {
            Some(i) => i > 0 && buf[i - 1] == b'\r',
            None => true,
        }
    }
}

/// Reads the message octets of a queue file with positioned reads.
#[derive(Debug)]
pub struct MessageReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file shorter than its envelope says",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Offset just past the header section's end (the empty line), if present in `buf`.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n") {
            return Some(i);
        }
        if rest.starts_with(b"\n") {
            return Some(i);
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => i += nl + 1,
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end_finds_the_empty_line() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), Some(6));
        assert_eq!(header_end(b"A: b\nC: d\n\nbody"), Some(10));
        assert_eq!(header_end(b"\r\nbody"), Some(0));
        assert_eq!(header_end(b"A: b\r\nno end"), None);
    }

    /// A queue file holding `body` and an envelope trailer, opened.
    fn queued(name: &str, body: &[u8]) -> QueuedMessage {
        let path = std::env::temp_dir().join(format!("sloop-msg-{name}-{}", std::process::id()));
        let mut env = Envelope::new(
            "s@x.test",
            vec![sloop_common::spool::Recipient::new("u@x.test")],
        );
        env.id = "0123456789ABCDEF012345".into();
        env.size = body.len() as u64;
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&env.to_trailer());
        std::fs::write(&path, bytes).unwrap();
        let msg = QueuedMessage::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        msg
    }

    #[test]
    fn line_ends_come_from_the_header_read_or_from_the_file() {
        for (name, body, crlf) in [
            ("crlf", &b"A: b\r\n\r\nhi\r\n"[..], true),
            ("lf", &b"A: b\n\nhi\n"[..], false),
            // No header section: the first line is read from the file.
            ("bodyonly", &b"\nhi\r\n"[..], false),
        ] {
            let msg = queued(name, body);
            let header = msg.header_bytes().unwrap();
            assert_eq!(msg.uses_crlf_given(&header), crlf, "{name}");
            assert_eq!(msg.uses_crlf_given(&header), msg.uses_crlf(), "{name}");
        }
    }

    #[test]
    fn a_vanished_queue_file_defers_as_gone() {
        let path = std::env::temp_dir().join(format!("sloop-msg-none-{}", std::process::id()));
        let err = QueuedMessage::open(&path).unwrap_err();
        assert!(format!("{err:?}").contains("queue file is gone"), "{err:?}");
    }
}
