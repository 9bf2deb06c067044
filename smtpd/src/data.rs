//! The DATA receiver: turns the dot-stuffed stream after `354` into message octets.
//!
//! The end of data is `CRLF . CRLF` and nothing else: the `.` line must follow a line
//! that ended in CRLF (or be the first line) and must itself end in CRLF. `<LF>.<LF>`,
//! `<CR>.<CR>`, `<LF>.<CR><LF>` and friends are content, so no second message can be
//! smuggled in (SMTP smuggling). Bare LF and bare CR are refused after the end of data
//! (`554 5.6.0`) unless `smtpd.bare_newline = "normalize"`, which stores them as CRLF
//! but still never lets them end the message. A line starting with `.` after CRLF loses
//! that dot (RFC 5321 §4.5.2). NUL octets, lines over the limit and messages over the
//! size limit are refused, but the receiver keeps reading to the real end of data so
//! the session stays in step; memory stays bounded by the limits.
//!
//! [`DataReceiver::feed`] consumes as much input as belongs to the message and reports
//! how much, so pipelined commands after the final dot are left for the parser.

use crate::reply::Reply;

/// Limits a receiver enforces.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    pub max_size: u64,
    pub max_line: usize,
    pub normalize_bare_newlines: bool,
}

/// Why a message is refused at the end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    TooBig,
    LineTooLong,
    BareLf,
    BareCr,
    Nul,
}

impl DataError {
    /// The reply given after the final dot.
    pub fn reply(self, limits: &DataLimits) -> Reply {
        match self {
            DataError::TooBig => Reply::new(
                552,
                (5, 3, 4),
                format!(
                    "Message size exceeds fixed limit of {} octets",
                    limits.max_size
                ),
            ),
            DataError::LineTooLong => Reply::new(
                554,
                (5, 6, 0),
                format!("Message line longer than {} octets", limits.max_line),
            ),
            DataError::BareLf => Reply::new(554, (5, 6, 0), "Bare <LF> received in message"),
            DataError::BareCr => Reply::new(554, (5, 6, 0), "Bare <CR> received in message"),
            DataError::Nul => Reply::new(554, (5, 6, 0), "Message contains NUL octets"),
        }
    }
}

/// The DATA state: collects the message until `CRLF.CRLF`.
#[derive(Debug)]
pub struct DataReceiver {
    limits: DataLimits,
    body: Vec<u8>,
    line: Vec<u8>,
    /// The previous line ended in CRLF (true at the start: 354 follows a CRLF).
    prev_crlf: bool,
    /// Dropping the rest of an over-long line.
    discarding: bool,
    /// Last octet seen while discarding (to know whether the LF had a CR).
    discard_last: u8,
    error: Option<DataError>,
    size: u64,
}

/// Initial room for the message body.
const INITIAL_BODY: usize = 16 * 1024;

impl DataReceiver {
    pub fn new(limits: DataLimits) -> DataReceiver {
        DataReceiver {
            limits,
            // Most messages fit: no regrowth (and copy) at each doubling.
            body: Vec::with_capacity(INITIAL_BODY),
            line: Vec::new(),
            prev_crlf: true,
            discarding: false,
            discard_last: 0,
            error: None,
            size: 0,
        }
    }

    /// Consumes input; returns (octets consumed, end of data seen).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match memchr::memchr(b'\n', rest) {
                Some(lf) => {
                    let whole = &rest[..=lf];
                    pos += lf + 1;
                    // A whole line in the input, nothing pending: handled in place.
                    let end = if self.line.is_empty()
                        && !self.discarding
                        && whole.len() <= self.limits.max_line
                    {
                        self.finish_line(whole)
                    } else {
                        self.push_partial(whole);
                        self.end_line()
                    };
                    if end {
                        return (pos, true);
                    }
                }
                None => {
                    self.push_partial(rest);
                    pos = input.len();
                }
            }
        }
        (pos, false)
    }

    /// The message, or why it is refused. Call after `feed` reported the end.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.body),
        }
    }

    pub fn limits(&self) -> &DataLimits {
        &self.limits
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if !self.discarding && self.line.len() + bytes.len() > self.limits.max_line {
            // A line's limit counts its CRLF; drop the rest of it, remembering the
            // octet before its LF.
            self.set_error(DataError::LineTooLong);
            self.discarding = true;
            self.discard_last = self.line.last().copied().unwrap_or(0);
            self.line.clear();
        }
        if self.discarding {
            if let Some(&b) = bytes.iter().rev().find(|&&b| b != b'\n') {
                self.discard_last = b;
            }
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// Handles a complete line (ending in LF); true at the end of data.
    fn end_line(&mut self) -> bool {
        if std::mem::take(&mut self.discarding) {
            self.prev_crlf = self.discard_last == b'\r';
            self.discard_last = 0;
            return false;
        }
        // Taken for the borrow, given back cleared: one buffer for every line.
        let mut line = std::mem::take(&mut self.line);
        let end = self.finish_line(&line);
        line.clear();
        self.line = line;
        end
    }

    /// Handles one whole line (ending in LF, within the limit); true at the end of data.
    fn finish_line(&mut self, line: &[u8]) -> bool {
        let crlf = line.ends_with(b"\r\n");
        if self.prev_crlf && crlf && line == b".\r\n" {
            return true;
        }
        let content = &line[..line.len() - if crlf { 2 } else { 1 }];
        let content = if self.prev_crlf && content.first() == Some(&b'.') {
            &content[1..]
        } else {
            content
        };
        let crs = self.check_line(content, crlf);
        self.store_line(content, crs);
        self.prev_crlf = crlf;
        false
    }

    /// Records the line's error, if any; returns how many CRs it holds.
    fn check_line(&mut self, content: &[u8], crlf: bool) -> u64 {
        if !crlf && !self.limits.normalize_bare_newlines {
            self.set_error(DataError::BareLf);
        }
        // One SIMD pass for the common case of a line with neither.
        if memchr::memchr2(b'\r', 0, content).is_none() {
            return 0;
        }
        let crs = content.iter().filter(|&&b| b == b'\r').count() as u64;
        if crs > 0 && !self.limits.normalize_bare_newlines {
            self.set_error(DataError::BareCr);
        }
        if content.contains(&0) {
            self.set_error(DataError::Nul);
        }
        crs
    }

    /// Appends `content` CRLF (its `extra` bare CRs become CRLF when normalizing).
    fn store_line(&mut self, content: &[u8], extra: u64) {
        self.size += content.len() as u64 + 2 + extra;
        if self.size > self.limits.max_size {
            self.set_error(DataError::TooBig);
        }
        if self.error.is_some() {
            return;
        }
        if extra == 0 {
            self.body.extend_from_slice(content);
        } else {
            for &b in content {
                self.body.push(b);
                if b == b'\r' {
                    self.body.push(b'\n');
                }
            }
        }
        self.body.extend_from_slice(b"\r\n");
    }

    fn set_error(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
            self.body = Vec::new();
        }
    }
}

/// Counts `Received:` fields in the header section of `msg` (before the first empty
/// line), for mail loop detection.
pub fn count_received(msg: &[u8]) -> usize {
    sloop_common::header::fields(msg)
        .filter(|f| f.is("received"))
        .count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn limits() -> DataLimits {
        DataLimits {
            max_size: 10_000,
            max_line: 1000,
            normalize_bare_newlines: false,
        }
    }

    /// Feeds `input` in pieces of `step`; returns (result, octets consumed) if it ended.
    fn run(
        input: &[u8],
        step: usize,
        l: DataLimits,
    ) -> Option<(Result<Vec<u8>, DataError>, usize)> {
        let mut r = DataReceiver::new(l);
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let (n, done) = r.feed(&input[pos..end]);
            pos += n;
            if done {
                return Some((r.finish(), pos));
            }
            assert_eq!(pos, end);
        }
        None
    }

    #[test]
    fn unstuffs_and_stops_at_crlf_dot_crlf() {
        let input = b"Subject: x\r\n\r\n..leading\r\n.\r\nMAIL FROM:<a@b>\r\n";
        for step in [1, 2, 3, 7, 100] {
            let (res, used) = run(input, step, limits()).unwrap();
            assert_eq!(res.unwrap(), b"Subject: x\r\n\r\n.leading\r\n");
            assert_eq!(&input[used..], b"MAIL FROM:<a@b>\r\n");
        }
        let (res, _) = run(b".\r\n", 1, limits()).unwrap();
        assert_eq!(res.unwrap(), b"");
    }

    #[test]
    fn smuggling_variants_never_end_the_message() {
        for variant in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
        ] {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            // Without the real terminator, the message does not end.
            assert!(
                run(&input, 1, limits()).is_none(),
                "{variant:?} ended the message"
            );
            input.extend_from_slice(b"\r\n.\r\n");
            let (res, used) = run(&input, 5, limits()).unwrap();
            assert_eq!(used, input.len());
            assert!(res.is_err(), "{variant:?} accepted in reject mode");
            let mut l = limits();
            l.normalize_bare_newlines = true;
            let (res, _) = run(&input, 5, l).unwrap();
            let body = res.unwrap();
            assert!(body.windows(18).any(|w| w == b"MAIL FROM:<evil@x>"));
        }
    }

    #[test]
    fn bare_newlines_and_nul() {
        let (res, _) = run(b"a\nb\r\n.\r\n", 3, limits()).unwrap();
        assert_eq!(res, Err(DataError::BareLf));
        let (res, _) = run(b"a\rb\r\n.\r\n", 3, limits()).unwrap();
        assert_eq!(res, Err(DataError::BareCr));
        let (res, _) = run(b"a\0b\r\n.\r\n", 3, limits()).unwrap();
        assert_eq!(res, Err(DataError::Nul));
        let mut l = limits();
        l.normalize_bare_newlines = true;
        let (res, _) = run(b"a\nb\rc\r\n.\r\n", 3, l).unwrap();
        assert_eq!(res.unwrap(), b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn line_and_size_limits() {
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(run(&ok, 64, limits()).unwrap().0.is_ok());
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        for step in [1, 64, 5000] {
            let (res, used) = run(&long, step, limits()).unwrap();
            assert_eq!(res, Err(DataError::LineTooLong));
            assert_eq!(used, long.len());
        }
        let mut big = Vec::new();
        for _ in 0..200 {
            big.extend_from_slice(&[b'y'; 98]);
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b".\r\n");
        assert_eq!(run(&big, 4096, limits()).unwrap().0, Err(DataError::TooBig));
    }

    #[test]
    fn dot_after_long_line_with_crlf_still_ends() {
        let mut input = vec![b'x'; 3000];
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let (res, used) = run(&input, 100, limits()).unwrap();
        assert_eq!(res, Err(DataError::LineTooLong));
        assert_eq!(&input[used..], b"QUIT\r\n");
    }

    /// The fuzz target's property on generated inputs: the verdict and the octets
    /// consumed do not depend on how the input is cut into reads.
    #[test]
    fn chunking_never_changes_the_verdict() {
        let alphabet: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b"\r",
            b".",
            b"\r\n.\r\n",
            b"x",
            b"\0",
            b"..",
        ];
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
            if next() % 8 == 0 {
                input.extend(std::iter::repeat_n(b'y', 1200));
            }
            let step = (next() % 7 + 1) as usize;
            let whole = run(&input, input.len().max(1), limits());
            assert_eq!(whole, run(&input, step, limits()), "{input:?}");
            if let Some((_, used)) = whole {
                let end = &input[..used];
                assert!(end == b".\r\n" || end.ends_with(b"\r\n.\r\n"), "{input:?}");
            }
        }
    }

    #[test]
    fn received_count() {
        let m = b"Received: a\r\nreceived: b\r\n\tcont\r\nSubject: s\r\n\r\nReceived: body\r\n";
        assert_eq!(count_received(m), 2);
    }
}
