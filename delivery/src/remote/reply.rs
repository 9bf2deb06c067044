//! SMTP replies from a server (RFC 5321 §4.2): parsing lines into a [`ServerReply`], and
//! mapping a reply onto a delivery result.
//!
//! A reply is one or more lines `ddd-text` ending with `ddd text` (or a bare `ddd`).
//! Lines that do not have that shape, a code outside 200-599, or a reply whose lines
//! disagree on the code are protocol errors: the caller treats the connection as
//! broken. Enhanced status codes (RFC 2034) are taken from the first line when
//! present, otherwise derived from the basic code's class.

use crate::result::RcptResult;

/// Longest reply line accepted (RFC 5321 says 512; be lenient but bounded).
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply (EHLO lists a few dozen at most).
pub const MAX_LINES: usize = 100;

/// A complete server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// Text of each line, without the code and separator.
    pub lines: Vec<String>,
}

/// One parsed reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    pub code: u16,
    /// False for `ddd-` continuation lines.
    pub last: bool,
    pub text: String,
}

/// Parses one line (without CRLF); `None` when it is not a reply line.
pub fn parse_line(line: &str) -> Option<ReplyLine> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = line[..3].parse().ok()?;
    if !(200..=599).contains(&code) {
        return None;
    }
    let (last, text) = match b.get(3) {
        None => (true, ""),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return None,
    };
    Some(ReplyLine {
        code,
        last,
        text: text.to_string(),
    })
}

/// Why the server's lines are not a reply (garbage from the peer, not our bug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Not `ddd`, `ddd-text` or `ddd text`.
    Malformed(String),
    /// A multi-line reply whose lines do not share one code.
    CodeChanged { from: u16, to: u16 },
    /// More than `MAX_LINES` lines.
    TooManyLines,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            ReplyError::CodeChanged { from, to } => {
                write!(f, "reply code changed from {from} to {to}")
            }
            ReplyError::TooManyLines => f.write_str("reply has too many lines"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Accumulates lines into a reply.
#[derive(Debug, Default)]
pub struct ReplyBuilder {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyBuilder {
    /// Feeds one line; `Ok(Some(reply))` when complete, `Err` on garbage.
    pub fn push(&mut self, raw: &str) -> Result<Option<ServerReply>, ReplyError> {
        let line = parse_line(raw).ok_or_else(|| ReplyError::Malformed(clip(raw)))?;
        if let Some(c) = self.code {
            if c != line.code {
                return Err(ReplyError::CodeChanged {
                    from: c,
                    to: line.code,
                });
            }
        }
        if self.lines.len() >= MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(line.code);
        self.lines.push(line.text);
        if line.last {
            let lines = std::mem::take(&mut self.lines);
            let code = line.code;
            self.code = None;
            return Ok(Some(ServerReply { code, lines }));
        }
        Ok(None)
    }
}

impl ServerReply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code, from the text or derived from the class.
    pub fn dsn(&self) -> String {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let class = (self.code / 100) as u8;
        match enhanced_code(first) {
            Some(e) if e.starts_with(char::from(b'0' + class)) => e.to_string(),
            _ => format!("{class}.0.0"),
        }
    }

    /// `code text` on one line, the way Postfix quotes a remote reply.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }

    /// Whether an EHLO reply advertises `keyword` (case-insensitive).
    pub fn has_extension(&self, keyword: &str) -> bool {
        self.extension(keyword).is_some()
    }

    /// The parameters of an EHLO keyword, if advertised.
    pub fn extension(&self, keyword: &str) -> Option<String> {
        self.lines.iter().skip(1).find_map(|l| {
            let mut words = l.split_whitespace();
            let k = words.next()?;
            k.eq_ignore_ascii_case(keyword)
                .then(|| words.collect::<Vec<_>>().join(" "))
        })
    }

    /// The result this reply means for a recipient: 2xx ok, 4xx defer, 5xx fail.
    pub fn to_result(&self, relay: &str, context: &str) -> RcptResult {
        let text = format!(
            "host {relay} said: {} (in reply to {context})",
            self.one_line()
        );
        let r = if self.is_positive() {
            RcptResult::ok(&self.dsn(), format!("{relay} said: {}", self.one_line()))
        } else if self.is_permanent() {
            RcptResult::fail(&self.dsn(), text)
        } else {
            RcptResult::defer(&self.dsn(), text)
        };
        r.via(relay)
    }
}

/// `x.y.z` at the start of `text` (RFC 3463 syntax), if there.
pub fn enhanced_code(text: &str) -> Option<&str> {
    let word = text.split_whitespace().next()?;
    let parts: Vec<&str> = word.split('.').collect();
    let ok = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && (1..=3).contains(&parts[1].len())
        && (1..=3).contains(&parts[2].len())
        && parts[1..]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(word)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn feed(lines: &[&str]) -> Result<Option<ServerReply>, ReplyError> {
        let mut b = ReplyBuilder::default();
        let mut out = None;
        for l in lines {
            out = b.push(l)?;
        }
        Ok(out)
    }

    #[test]
    fn single_and_multi_line() {
        let r = feed(&["250 2.1.0 Ok"]).unwrap().unwrap();
        assert_eq!((r.code, r.dsn()), (250, "2.1.0".to_string()));
        let r = feed(&[
            "250-mx.test hi",
            "250-PIPELINING",
            "250-SIZE 1000",
            "250 8BITMIME",
        ])
        .unwrap()
        .unwrap();
        assert!(r.has_extension("pipelining"));
        assert_eq!(r.extension("SIZE").as_deref(), Some("1000"));
        assert!(!r.has_extension("STARTTLS"));
        assert_eq!(feed(&["220"]).unwrap().unwrap().lines, vec![String::new()]);
        assert_eq!(feed(&["250-a"]).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in ["", "25", "hello", "250x", "099 no", "600 no", "25a ok"] {
            assert!(feed(&[bad]).is_err(), "{bad:?}");
        }
        assert!(feed(&["250-a", "251 b"]).is_err());
    }

    #[test]
    fn dsn_is_derived_when_missing_or_inconsistent() {
        let r = feed(&["451 try later"]).unwrap().unwrap();
        assert_eq!(r.dsn(), "4.0.0");
        let r = feed(&["550 2.1.5 odd"]).unwrap().unwrap();
        assert_eq!(r.dsn(), "5.0.0");
        let r = feed(&["550 5.1.1 <x@y>: no such user"]).unwrap().unwrap();
        assert_eq!(r.dsn(), "5.1.1");
    }

    #[test]
    fn replies_map_to_outcomes() {
        use sloop_common::spool::status::Outcome;
        let relay = "mx.test[127.0.0.1]:25";
        let ok = feed(&["250 2.0.0 queued"]).unwrap().unwrap();
        assert_eq!(ok.to_result(relay, "end of DATA").outcome, Outcome::Ok);
        let d = feed(&["451 4.3.0 later"]).unwrap().unwrap();
        let r = d.to_result(relay, "RCPT TO");
        assert_eq!((r.outcome, r.relay.as_str()), (Outcome::Defer, relay));
        assert!(r.text.contains("451 4.3.0 later"));
        let f = feed(&["550 5.1.1 unknown"]).unwrap().unwrap();
        assert_eq!(f.to_result(relay, "RCPT TO").outcome, Outcome::Fail);
    }
}
