//! The SMTP command parser: the session's input buffer, an incremental line splitter
//! with a hard length limit, and a table-driven verb parser.
//!
//! [`Input`] holds the octets read but not yet used, with a cursor: cutting a line or
//! a run of message octets off the front moves the cursor, and the used octets are
//! dropped once per read, so a 64 KiB read of pipelined commands costs time linear in
//! its size, not in the square of it.
//!
//! [`LineSplitter::take_line`] cuts one command line off the front of the input. A
//! line ends at CRLF. A line ending in a bare LF is [`Line::BareLf`], which the session
//! refuses as it refuses bare LF inside DATA (`smtpd.bare_newline`): a bare LF that
//! ends a command for us but not for the next hop is how commands are smuggled. A line
//! longer than the limit (512 octets with CRLF, RFC 5321 §4.5.3.1.4) yields
//! [`Line::TooLong`] and everything up to the next LF is dropped, so an endless line
//! cannot grow memory. [`parse`] turns a line into a [`Command`]; verbs are
//! case-insensitive; arguments stay raw for `address.rs`. Nothing here fails other than
//! by returning a value the session answers.

/// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Octets read from the client and not yet used by the session.
#[derive(Debug, Default)]
pub struct Input {
    buf: Vec<u8>,
    /// Where the unused octets start in `buf`.
    start: usize,
    /// Octets examined or moved so far: a measure of work for tests.
    work: u64,
}

impl Input {
    /// Appends octets read from the client, first dropping the used ones (once per
    /// read, not once per line).
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.work += (self.buf.len() - self.start) as u64;
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The unused octets.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks the first `n` unused octets as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every unused octet.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Octets examined or moved since the start (for tests that bound the work).
    pub fn work(&self) -> u64 {
        self.work
    }
}

/// One unit cut off the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its CRLF.
    Complete(Vec<u8>),
    /// A line that ended in a bare LF (without it).
    BareLf(Vec<u8>),
    /// A line over the limit; its rest up to LF has been (or will be) discarded.
    TooLong,
}

/// State kept between calls while an over-long line is being discarded.
#[derive(Debug, Default, Clone)]
pub struct LineSplitter {
    discarding: bool,
}

impl LineSplitter {
    /// Cuts the next line off `input`; `None` when more input is needed.
    pub fn take_line(&mut self, input: &mut Input, limit: usize) -> Option<Line> {
        loop {
            let bytes = &input.buf[input.start..];
            let Some(lf) = memchr::memchr(b'\n', bytes) else {
                input.work += bytes.len() as u64;
                if input.len() > limit || (self.discarding && !input.is_empty()) {
                    input.clear();
                    let first = !self.discarding;
                    self.discarding = true;
                    return first.then_some(Line::TooLong);
                }
                return None;
            };
            let line = &bytes[..lf];
            let result = if std::mem::take(&mut self.discarding) {
                None
            } else if lf + 1 > limit {
                Some(Line::TooLong)
            } else if let Some(text) = line.strip_suffix(b"\r") {
                Some(Line::Complete(text.to_vec()))
            } else {
                Some(Line::BareLf(line.to_vec()))
            };
            input.work += lf as u64 + 1;
            input.consume(lf + 1);
            if result.is_some() {
                return result;
            }
        }
    }
}

/// An SMTP command with its raw arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `MAIL FROM:` followed by the raw path and parameters.
    Mail(String),
    /// `RCPT TO:` followed by the raw path and parameters.
    Rcpt(String),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    StartTls,
    /// `AUTH` with its raw arguments (mechanism and optional initial response).
    Auth(String),
    /// A known verb with arguments it does not take, or missing ones.
    Syntax(&'static str),
    /// Not UTF-8 or not a command at all.
    Unknown(String),
}

impl Command {
    /// The lower-case verb for the disconnect counters.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Helo(_) => "helo",
            Command::Ehlo(_) => "ehlo",
            Command::Mail(_) => "mail",
            Command::Rcpt(_) => "rcpt",
            Command::Data => "data",
            Command::Bdat { .. } => "bdat",
            Command::Rset => "rset",
            Command::Noop => "noop",
            Command::Quit => "quit",
            Command::Vrfy(_) => "vrfy",
            Command::Expn(_) => "expn",
            Command::Help => "help",
            Command::StartTls => "starttls",
            Command::Auth(_) => "auth",
            Command::Syntax(v) => v,
            Command::Unknown(_) => "unknown",
        }
    }
}

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Command {
    let Ok(text) = std::str::from_utf8(line) else {
        return Command::Unknown(String::from_utf8_lossy(line).into_owned());
    };
    let (verb, rest) = match text.find(' ') {
        Some(i) => (&text[..i], text[i + 1..].trim()),
        None => (text, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" => with_arg(rest, "helo", |a| Command::Helo(a.to_string())),
        "EHLO" => with_arg(rest, "ehlo", |a| Command::Ehlo(a.to_string())),
        "MAIL" => prefixed(rest, "FROM:", "mail", Command::Mail),
        "RCPT" => prefixed(rest, "TO:", "rcpt", Command::Rcpt),
        "DATA" => no_arg(rest, "data", Command::Data),
        "BDAT" => bdat(rest),
        "RSET" => no_arg(rest, "rset", Command::Rset),
        "NOOP" => Command::Noop,
        "QUIT" => no_arg(rest, "quit", Command::Quit),
        "VRFY" => with_arg(rest, "vrfy", |a| Command::Vrfy(a.to_string())),
        "EXPN" => with_arg(rest, "expn", |a| Command::Expn(a.to_string())),
        "HELP" => Command::Help,
        "STARTTLS" => Command::StartTls,
        "AUTH" => Command::Auth(rest.to_string()),
        _ => Command::Unknown(text.to_string()),
    }
}

fn with_arg(rest: &str, verb: &'static str, f: impl FnOnce(&str) -> Command) -> Command {
    if rest.is_empty() {
        Command::Syntax(verb)
    } else {
        f(rest)
    }
}

fn no_arg(rest: &str, verb: &'static str, c: Command) -> Command {
    if rest.is_empty() {
        c
    } else {
        Command::Syntax(verb)
    }
}

/// `MAIL FROM:<...>` / `RCPT TO:<...>`: the keyword is case-insensitive and a space
/// after the colon is tolerated (many clients send one).
fn prefixed(rest: &str, key: &str, verb: &'static str, f: fn(String) -> Command) -> Command {
    match rest.get(..key.len()) {
        Some(k) if k.eq_ignore_ascii_case(key) => {
            let arg = rest[key.len()..].trim_start();
            if arg.is_empty() {
                Command::Syntax(verb)
            } else {
                f(arg.to_string())
            }
        }
        _ => Command::Syntax(verb),
    }
}

/// `BDAT <size> [LAST]` (RFC 3030).
fn bdat(rest: &str) -> Command {
    let mut words = rest.split_ascii_whitespace();
    let size = match words.next().map(str::parse::<u64>) {
        Some(Ok(n)) => n,
        _ => return Command::Syntax("bdat"),
    };
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Command::Syntax("bdat"),
    };
    if words.next().is_some() {
        return Command::Syntax("bdat");
    }
    Command::Bdat { size, last }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<Line> {
        let mut s = LineSplitter::default();
        let mut buf = Input::default();
        buf.extend(input);
        let mut out = Vec::new();
        while let Some(l) = s.take_line(&mut buf, limit) {
            out.push(l);
        }
        out
    }

    #[test]
    fn splits_crlf_and_flags_bare_lf() {
        assert_eq!(
            lines(b"NOOP\r\nMAIL FROM:<a>\nRSET", 512),
            vec![
                Line::Complete(b"NOOP".to_vec()),
                Line::BareLf(b"MAIL FROM:<a>".to_vec())
            ]
        );
    }

    #[test]
    fn overlong_line_is_dropped_once() {
        let mut input = vec![b'A'; 2000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            lines(&input, 512),
            vec![Line::TooLong, Line::Complete(b"NOOP".to_vec())]
        );
        // Fed in pieces: the limit holds and the tail is discarded.
        let mut s = LineSplitter::default();
        let mut buf = Input::default();
        buf.extend(&[b'A'; 600]);
        assert_eq!(s.take_line(&mut buf, 512), Some(Line::TooLong));
        buf.extend(&[b'B'; 600]);
        assert_eq!(s.take_line(&mut buf, 512), None);
        assert!(buf.is_empty());
        buf.extend(b"BB\r\nQUIT\r\n");
        assert_eq!(
            s.take_line(&mut buf, 512),
            Some(Line::Complete(b"QUIT".to_vec()))
        );
    }

    #[test]
    fn exact_limit_is_accepted() {
        let mut input = vec![b'N'; 510];
        input.extend_from_slice(b"\r\n");
        assert!(matches!(lines(&input, 512)[0], Line::Complete(_)));
        input.insert(0, b'N');
        assert_eq!(lines(&input, 512), vec![Line::TooLong]);
    }

    /// Regression: each line was drained off the front of the 64 KiB read buffer,
    /// moving the rest every time: quadratic in the read (35 million octets moved
    /// for one 64 KiB read of pipelined RCPTs). The work must stay linear.
    #[test]
    fn a_full_read_of_pipelined_lines_costs_linear_work() {
        let one = b"RCPT TO:<someone@example.org>\r\n";
        let mut read = Vec::new();
        while read.len() + one.len() <= 64 * 1024 {
            read.extend_from_slice(one);
        }
        let mut s = LineSplitter::default();
        let mut input = Input::default();
        // Two reads, the second after a partial line, as a socket delivers them.
        let (a, b) = read.split_at(read.len() / 2 + 7);
        let mut n = 0;
        for part in [a, b] {
            input.extend(part);
            while let Some(l) = s.take_line(&mut input, MAX_COMMAND_LINE) {
                assert_eq!(l, Line::Complete(one[..one.len() - 2].to_vec()));
                n += 1;
            }
        }
        assert_eq!(n, read.len() / one.len());
        assert!(
            input.work() <= 2 * read.len() as u64,
            "{} octets of work for a {}-octet read",
            input.work(),
            read.len()
        );
    }

    #[test]
    fn verbs() {
        let table: &[(&str, Command)] = &[
            (
                "ehlo client.example",
                Command::Ehlo("client.example".into()),
            ),
            ("HELO x", Command::Helo("x".into())),
            ("EHLO", Command::Syntax("ehlo")),
            ("mail from:<a@b>", Command::Mail("<a@b>".into())),
            (
                "MAIL FROM: <a@b> SIZE=10",
                Command::Mail("<a@b> SIZE=10".into()),
            ),
            ("MAIL TO:<a@b>", Command::Syntax("mail")),
            ("RCPT TO:<a@b>", Command::Rcpt("<a@b>".into())),
            ("data", Command::Data),
            ("DATA x", Command::Syntax("data")),
            (
                "BDAT 10",
                Command::Bdat {
                    size: 10,
                    last: false,
                },
            ),
            (
                "bdat 0 last",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            ("BDAT x", Command::Syntax("bdat")),
            ("BDAT 1 LAST more", Command::Syntax("bdat")),
            ("QUIT", Command::Quit),
            ("noop anything", Command::Noop),
            ("VRFY user", Command::Vrfy("user".into())),
            ("FOO", Command::Unknown("FOO".into())),
        ];
        for (line, want) in table {
            assert_eq!(&parse(line.as_bytes()), want, "{line}");
        }
        assert!(matches!(parse(b"\xff\xfe"), Command::Unknown(_)));
    }
}
