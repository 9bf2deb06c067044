//! SMTP replies that cannot be malformed (docs/invariants.md G7).
//!
//! A [`Reply`] is a basic code, an enhanced status code and one or more text lines.
//! Only the greeting and the answer to EHLO/HELO go without an enhanced code, as
//! RFC 2034 §3 requires (clients read EHLO lines as extension keywords); they are
//! built with [`Reply::bare`].
//! [`Reply::to_wire`] never fails: a code outside 200..=599 is clamped to 451/554
//! style defaults, an enhanced code whose class disagrees with the basic code is
//! replaced by `<class>.0.0`, CR, LF, NUL and other control octets in the text become
//! spaces, and every line is cut to at most 512 octets including CRLF (on a UTF-8
//! character boundary). The session builds every reply through this type, so nothing
//! it sends can break a client's parser.

use std::fmt;

/// Longest reply line on the wire, CRLF included (RFC 5321 §4.5.3.1.5).
pub const MAX_LINE: usize = 512;

/// An enhanced status code (RFC 3463): class.subject.detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply such as `Reply::new(250, (2, 1, 0), "Ok")`.
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(Enhanced(enhanced.0, enhanced.1, enhanced.2)),
            lines: vec![text.into()],
        }
    }

    /// A reply without enhanced code: only for the greeting and EHLO/HELO (RFC 2034 §3).
    pub fn bare(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// A multi-line reply; every line carries the same codes.
    pub fn multi(code: u16, enhanced: (u8, u16, u16), lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(Enhanced(enhanced.0, enhanced.1, enhanced.2)),
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// True when the session ends after this reply (421, 221).
    pub fn closes(&self) -> bool {
        self.code == 421 || self.code == 221
    }

    /// The first line as text without CRLF, for logs.
    pub fn summary(&self) -> String {
        let wire = self.to_wire();
        let text = String::from_utf8_lossy(&wire);
        let first = text.split("\r\n").next().unwrap_or("");
        let mut s = first.to_string();
        if let Some(b) = s.as_bytes().get(3) {
            if *b == b'-' {
                s.replace_range(3..4, " ");
            }
        }
        s
    }

    /// The reply as it goes on the wire; always well-formed.
    pub fn to_wire(&self) -> Vec<u8> {
        let code = clamp_code(self.code);
        let enh = self.enhanced.map(|e| fit_enhanced(code, e));
        let mut out = Vec::with_capacity(64);
        let lines: Vec<&str> = if self.lines.is_empty() {
            vec![""]
        } else {
            self.lines.iter().map(String::as_str).collect()
        };
        let last = lines.len() - 1;
        for (i, text) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let head = match enh {
                Some(e) => format!("{code}{sep}{e} "),
                None => format!("{code}{sep}"),
            };
            let room = MAX_LINE - 2 - head.len();
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(sanitise(text, room).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// How a reply on the wire breaks G7 (with the offending line, lossily decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    NoFinalCrlf,
    TooLong(String),
    BareCrOrNul(String),
    BadCode(String),
    NoEnhancedCode(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NoFinalCrlf => f.write_str("reply does not end in CRLF"),
            WireError::TooLong(l) => write!(f, "line longer than {MAX_LINE} octets: {l}"),
            WireError::BareCrOrNul(l) => write!(f, "bare CR or NUL: {l}"),
            WireError::BadCode(l) => write!(f, "bad code: {l}"),
            WireError::NoEnhancedCode(l) => write!(f, "no enhanced status code: {l}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Checks a reply as sent on the wire against G7: every line `^[2-5]\d\d[ -]`, an
/// enhanced code after it (unless `enhanced` is false: greeting, EHLO/HELO), no CR,
/// LF or NUL inside, at most 512 octets with CRLF. Used by tests and fuzz targets.
pub fn check_wire(wire: &[u8], enhanced: bool) -> Result<(), WireError> {
    let body = wire.strip_suffix(b"\r\n").ok_or(WireError::NoFinalCrlf)?;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let shown = || String::from_utf8_lossy(line).into_owned();
        if line.len() + 2 > MAX_LINE {
            return Err(WireError::TooLong(shown()));
        }
        if line.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(WireError::BareCrOrNul(shown()));
        }
        let ok_code = line.len() >= 4
            && (b'2'..=b'5').contains(&line[0])
            && line[1].is_ascii_digit()
            && line[2].is_ascii_digit()
            && (line[3] == b' ' || line[3] == b'-');
        if !ok_code {
            return Err(WireError::BadCode(shown()));
        }
        if enhanced && !has_enhanced(&line[4..], line[0]) {
            return Err(WireError::NoEnhancedCode(shown()));
        }
    }
    Ok(())
}

/// `class.subject.detail ` with the class of the basic code (2 for 3xx).
fn has_enhanced(rest: &[u8], first: u8) -> bool {
    let Some(end) = rest.iter().position(|&b| b == b' ') else {
        return false;
    };
    let parts: Vec<&[u8]> = rest[..end].split(|&b| b == b'.').collect();
    let class = if first == b'3' { b'2' } else { first };
    parts.len() == 3
        && parts[0] == [class]
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit))
}

/// Codes outside 200..=599 become 451 (4xx-looking or below 200) or 554.
fn clamp_code(code: u16) -> u16 {
    match code {
        200..=599 => code,
        0..=199 => 451,
        _ => 554,
    }
}

/// The enhanced code's class must equal the basic code's first digit (2, 4 or 5;
/// a 3xx reply carries class 2 as Postfix does, since RFC 3463 has no class 3).
fn fit_enhanced(code: u16, e: Enhanced) -> Enhanced {
    let class = match code / 100 {
        3 | 2 => 2,
        c => c as u8,
    };
    if e.0 == class && e.1 < 1000 && e.2 < 1000 {
        e
    } else {
        Enhanced(class, 0, 0)
    }
}

/// Replaces control octets by spaces and cuts to `room` octets on a char boundary.
fn sanitise(text: &str, room: usize) -> String {
    let mut s = String::with_capacity(text.len().min(room));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if s.len() + c.len_utf8() > room {
            break;
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// G7 for tests: panics with the reason.
    pub fn assert_valid_wire(wire: &[u8]) {
        assert_wire(wire, true);
    }

    /// Like [`assert_valid_wire`]; `enhanced` false for the greeting and EHLO/HELO.
    pub fn assert_wire(wire: &[u8], enhanced: bool) {
        if let Err(e) = check_wire(wire, enhanced) {
            panic!("{e}");
        }
    }

    #[test]
    fn checker_rejects_bad_wires() {
        for bad in [
            &b"250 ok\r\n"[..],
            b"250 2.0.0 a\r\nb",
            b"199 2.0.0 x\r\n",
            b"250 4.0.0 x\r\n",
            b"250 2.0.0 a\rb\r\n",
        ] {
            assert!(check_wire(bad, true).is_err(), "{bad:?}");
        }
        assert!(check_wire(b"354 2.0.0 go\r\n", true).is_ok());
        assert!(check_wire(b"220 host ESMTP\r\n", false).is_ok());
    }

    #[test]
    fn plain_reply() {
        let r = Reply::new(250, (2, 1, 0), "Ok");
        assert_eq!(r.to_wire(), b"250 2.1.0 Ok\r\n");
    }

    #[test]
    fn multi_line_uses_dashes() {
        let r = Reply::multi(250, (2, 0, 0), vec!["a".into(), "b".into()]);
        assert_eq!(r.to_wire(), b"250-2.0.0 a\r\n250 2.0.0 b\r\n");
    }

    #[test]
    fn clamps_and_sanitises() {
        let r = Reply::new(999, (4, 7, 1), "bad\r\nMAIL FROM:<x>\0");
        let w = r.to_wire();
        assert_eq!(w, b"554 5.0.0 bad  MAIL FROM:<x> \r\n");
        assert_valid_wire(&w);
        let long = Reply::new(550, (5, 1, 1), "é".repeat(600));
        let w = long.to_wire();
        assert!(w.len() <= MAX_LINE);
        assert_valid_wire(&w);
        assert_valid_wire(&Reply::multi(354, (9, 9, 9), vec![]).to_wire());
        assert_valid_wire(&Reply::new(12, (2, 0, 0), "").to_wire());
    }

    #[test]
    fn summary_is_first_line() {
        let r = Reply::multi(250, (2, 0, 0), vec!["a".into(), "b".into()]);
        assert_eq!(r.summary(), "250 2.0.0 a");
    }
}
