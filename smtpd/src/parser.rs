//! The SMTP command parser: an incremental line splitter with a hard length limit, and
//! a table-driven verb parser.
//!
//! [`LineSplitter::take_line`] cuts one command line off the front of the session's input buffer.
//! A line ends at LF (a CR before it is dropped; RFC 5321 §2.3.8 only forbids bare LF
//! *inside DATA*, which `data.rs` handles). A line longer than the limit (512 octets
//! with CRLF, §4.5.3.1.4) yields [`Line::TooLong`] and everything up to the next LF is
//! dropped, so an endless line cannot grow memory. [`parse`] turns a line into a
//! [`Command`]; verbs are case-insensitive; arguments stay raw for `address.rs`.
//! Nothing here fails other than by returning a value the session answers.

/// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// One unit cut off the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its terminator.
    Complete(Vec<u8>),
    /// A line over the limit; its rest up to LF has been (or will be) discarded.
    TooLong,
}

/// State kept between calls while an over-long line is being discarded.
#[derive(Debug, Default, Clone)]
pub struct LineSplitter {
    discarding: bool,
}

impl LineSplitter {
    /// Cuts the next line off `buf`; `None` when more input is needed.
    pub fn take_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> Option<Line> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let mut line: Vec<u8> = buf.drain(..=lf).collect();
                if std::mem::take(&mut self.discarding) {
                    return self.take_line(buf, limit);
                }
                if line.len() > limit {
                    return Some(Line::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Line::Complete(line))
            }
            None if buf.len() > limit || (self.discarding && !buf.is_empty()) => {
                buf.clear();
                let first = !self.discarding;
                self.discarding = true;
                first.then_some(Line::TooLong)
            }
            None => None,
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
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        while let Some(l) = s.take_line(&mut buf, limit) {
            out.push(l);
        }
        out
    }

    #[test]
    fn splits_crlf_and_lf() {
        assert_eq!(
            lines(b"NOOP\r\nQUIT\nRSET", 512),
            vec![
                Line::Complete(b"NOOP".to_vec()),
                Line::Complete(b"QUIT".to_vec())
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
        let mut buf = vec![b'A'; 600];
        assert_eq!(s.take_line(&mut buf, 512), Some(Line::TooLong));
        buf.extend_from_slice(&[b'B'; 600]);
        assert_eq!(s.take_line(&mut buf, 512), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"BB\r\nQUIT\r\n");
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
