//! Envelopes: the qmail-queue envelope read from fd 1, and the envelope trailer stored
//! in each queue file.
//!
//! ## The fd-1 envelope (qmail-queue(8), with Sloop's extensions)
//! A sequence of NUL-terminated records ending with an empty record: `F<sender>` first,
//! then `T<recipient>` records. Sloop also accepts, anywhere after `F`:
//! `E<envid>` and `R<FULL|HDRS>` (DSN, RFC 3461), `N<notify>` and `O<orcpt>` (apply to
//! the preceding `T`), `C<client information>`, `U` (SMTPUTF8), `B<7BIT|8BITMIME>`,
//! `H<reason>` (a filter put the message on hold: it is committed into `hold/`).
//! Anything else, a missing `F`, no recipient, or a field with CR, LF or NUL is an
//! envelope format error (exit 91).
//!
//! ## The queue file
//! `message bytes || envelope lines || "Z" 16-hex-digit offset "\n"`. The final 18
//! octets locate the envelope, so the message is written first as it streams in and the
//! whole is one file with one fsync. Envelope lines are `<letter><value>\n` with the
//! same letters as above plus `V1` (format version), `I<id>` and `A<arrival secs>`.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};

/// Longest address accepted (RFC 5321 path limit is 256; SMTPUTF8 may need more).
pub const MAX_ADDRESS: usize = 1024;
/// Octets of the fixed trailer: `Z` + 16 hex digits + `\n`.
pub const TRAILER_LEN: u64 = 18;

/// How much of a queue file's end is read at once to find its envelope.
const TAIL_READ: u64 = 4096;

/// DSN `RET=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Ret {
    Full,
    Hdrs,
}

/// One recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipient {
    pub address: String,
    /// `NOTIFY=` value as given (`NEVER`, or a comma list of SUCCESS, FAILURE, DELAY).
    pub notify: Option<String>,
    /// `ORCPT=` value as given (`rfc822;addr`, xtext-encoded).
    pub orcpt: Option<String>,
}

impl Recipient {
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// Everything the queue knows about a message except its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Envelope {
    pub id: String,
    /// Arrival, seconds since the epoch.
    pub arrival: u64,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    /// Free-form client description (`name[addr] helo=... proto=...`).
    pub client: Option<String>,
    pub smtputf8: bool,
    pub body: Option<String>,
    /// Message size in octets (the offset of the trailer).
    pub size: u64,
    /// Why a filter put the message on hold (`H` record): the commit puts it into
    /// `hold/` instead of `incoming/`. Kept when an operator releases it.
    pub hold: Option<String>,
}

/// What is wrong with an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not in the expected format (qmail exit 91).
    Format(String),
    /// An address longer than [`MAX_ADDRESS`] (qmail exit 11).
    AddressTooLong,
    /// Reading failed.
    Io(String),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Format(s) => write!(f, "envelope format error: {s}"),
            EnvelopeError::AddressTooLong => write!(f, "address too long"),
            EnvelopeError::Io(s) => write!(f, "cannot read envelope: {s}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

fn check_field(what: &str, v: &str) -> Result<(), EnvelopeError> {
    if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(EnvelopeError::Format(format!(
            "{what} contains CR, LF or NUL"
        )));
    }
    Ok(())
}

impl Envelope {
    /// An envelope with no ID or arrival yet (filled in at commit).
    pub fn new(sender: impl Into<String>, recipients: Vec<Recipient>) -> Envelope {
        Envelope {
            id: String::new(),
            arrival: 0,
            sender: sender.into(),
            recipients,
            envid: None,
            ret: None,
            client: None,
            smtputf8: false,
            body: None,
            size: 0,
            hold: None,
        }
    }

    /// Parses the qmail-queue fd-1 format.
    pub fn parse_qmail(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let mut env: Option<Envelope> = None;
        let mut rest = bytes;
        loop {
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| EnvelopeError::Format("missing final empty record".into()))?;
            if nul == 0 {
                break;
            }
            let (rec, tail) = rest.split_at(nul);
            rest = &tail[1..];
            let kind = rec[0];
            let value = std::str::from_utf8(&rec[1..])
                .map_err(|_| EnvelopeError::Format("record is not UTF-8".into()))?;
            check_field("record", value)?;
            match env.as_mut() {
                Some(e) => e.apply(kind, value)?,
                None if kind == b'F' => {
                    if value.len() > MAX_ADDRESS {
                        return Err(EnvelopeError::AddressTooLong);
                    }
                    env = Some(Envelope::new(value, Vec::new()));
                }
                None => {
                    return Err(EnvelopeError::Format(
                        "first record is not F<sender>".into(),
                    ))
                }
            }
        }
        let env = env.ok_or_else(|| EnvelopeError::Format("no F<sender> record".into()))?;
        if env.recipients.is_empty() {
            return Err(EnvelopeError::Format("no T<recipient> record".into()));
        }
        Ok(env)
    }

    fn apply(&mut self, kind: u8, value: &str) -> Result<(), EnvelopeError> {
        match kind {
            b'T' => {
                if value.len() > MAX_ADDRESS {
                    return Err(EnvelopeError::AddressTooLong);
                }
                if value.is_empty() {
                    return Err(EnvelopeError::Format("empty recipient".into()));
                }
                self.recipients.push(Recipient::new(value));
            }
            b'N' | b'O' => {
                let r = self
                    .recipients
                    .last_mut()
                    .ok_or_else(|| EnvelopeError::Format("N or O record before any T".into()))?;
                if kind == b'N' {
                    r.notify = Some(value.to_string());
                } else {
                    r.orcpt = Some(value.to_string());
                }
            }
            b'E' => self.envid = Some(value.to_string()),
            b'R' => {
                self.ret = match value.to_ascii_uppercase().as_str() {
                    "FULL" => Some(Ret::Full),
                    "HDRS" => Some(Ret::Hdrs),
                    _ => return Err(EnvelopeError::Format(format!("bad RET value {value:?}"))),
                }
            }
            b'C' => self.client = Some(value.to_string()),
            b'U' => self.smtputf8 = true,
            b'B' => self.body = Some(value.to_string()),
            b'H' => self.hold = Some(value.to_string()),
            other => {
                return Err(EnvelopeError::Format(format!(
                    "unknown record type {:?}",
                    other as char
                )))
            }
        }
        Ok(())
    }

    /// Serialises to the qmail-queue fd-1 format (what a client writes to sloop-queue).
    pub fn to_qmail(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rec = |k: u8, v: &str| {
            out.push(k);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        };
        rec(b'F', &self.sender);
        if let Some(v) = &self.envid {
            rec(b'E', v);
        }
        if let Some(r) = self.ret {
            rec(b'R', if r == Ret::Full { "FULL" } else { "HDRS" });
        }
        if let Some(v) = &self.client {
            rec(b'C', v);
        }
        if self.smtputf8 {
            rec(b'U', "");
        }
        if let Some(v) = &self.body {
            rec(b'B', v);
        }
        if let Some(v) = &self.hold {
            rec(b'H', v);
        }
        for r in &self.recipients {
            rec(b'T', &r.address);
            if let Some(v) = &r.notify {
                rec(b'N', v);
            }
            if let Some(v) = &r.orcpt {
                rec(b'O', v);
            }
        }
        out.push(0);
        out
    }

    /// The envelope lines and trailer appended after `size` octets of message.
    pub fn to_trailer(&self) -> Vec<u8> {
        let mut s = format!("V1\nI{}\nA{}\nF{}\n", self.id, self.arrival, self.sender);
        let mut line = |k: char, v: &str| {
            s.push(k);
            s.push_str(v);
            s.push('\n');
        };
        if let Some(v) = &self.envid {
            line('E', v);
        }
        if let Some(r) = self.ret {
            line('R', if r == Ret::Full { "FULL" } else { "HDRS" });
        }
        if let Some(v) = &self.client {
            line('C', v);
        }
        if self.smtputf8 {
            line('U', "");
        }
        if let Some(v) = &self.body {
            line('B', v);
        }
        if let Some(v) = &self.hold {
            line('H', v);
        }
        for r in &self.recipients {
            line('T', &r.address);
            if let Some(v) = &r.notify {
                line('N', v);
            }
            if let Some(v) = &r.orcpt {
                line('O', v);
            }
        }
        s.push_str(&format!("Z{:016X}\n", self.size));
        s.into_bytes()
    }

    /// Checks every field can be stored (no CR/LF/NUL, addresses not too long).
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_field("sender", &self.sender)?;
        if self.sender.len() > MAX_ADDRESS {
            return Err(EnvelopeError::AddressTooLong);
        }
        if self.recipients.is_empty() {
            return Err(EnvelopeError::Format("no recipient".into()));
        }
        for r in &self.recipients {
            if r.address.len() > MAX_ADDRESS {
                return Err(EnvelopeError::AddressTooLong);
            }
            check_field("recipient", &r.address)?;
            for v in [&r.notify, &r.orcpt].into_iter().flatten() {
                check_field("recipient parameter", v)?;
            }
        }
        for v in [&self.envid, &self.client, &self.body, &self.hold]
            .into_iter()
            .flatten()
        {
            check_field("parameter", v)?;
        }
        Ok(())
    }

    /// Reads the envelope stored in a queue file.
    pub fn read_from<F: Read + Seek>(file: &mut F) -> Result<Envelope, EnvelopeError> {
        let io = |e: std::io::Error| EnvelopeError::Io(e.to_string());
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        if len < TRAILER_LEN {
            return Err(EnvelopeError::Format("queue file too short".into()));
        }
        // One read of the file's tail usually holds the whole envelope and the trailer.
        let tail_len = len.min(TAIL_READ);
        let tail_start = len - tail_len;
        file.seek(SeekFrom::Start(tail_start)).map_err(io)?;
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact(&mut tail).map_err(io)?;
        let z = &tail[tail.len() - TRAILER_LEN as usize..];
        let size = parse_z(z).ok_or_else(|| EnvelopeError::Format("bad trailer".into()))?;
        if size > len - TRAILER_LEN {
            return Err(EnvelopeError::Format("trailer offset past end".into()));
        }
        let end = (len - TRAILER_LEN) as usize - tail_start as usize;
        let text = if size >= tail_start {
            tail.truncate(end);
            tail.drain(..(size - tail_start) as usize);
            tail
        } else {
            file.seek(SeekFrom::Start(size)).map_err(io)?;
            let mut text = Vec::with_capacity((len - TRAILER_LEN - size) as usize);
            file.take(len - TRAILER_LEN - size)
                .read_to_end(&mut text)
                .map_err(io)?;
            text
        };
        let text = String::from_utf8(text)
            .map_err(|_| EnvelopeError::Format("envelope is not UTF-8".into()))?;
        Envelope::parse_trailer(&text, size)
    }

    fn parse_trailer(text: &str, size: u64) -> Result<Envelope, EnvelopeError> {
        let mut env = Envelope::new("", Vec::new());
        env.size = size;
        let mut seen_version = false;
        // Split at LF only and refuse CR/NUL: `lines()` would also eat a CR before the
        // LF, so a value ending in CR would not read back as written (found by fuzzing).
        for line in text.split_terminator('\n') {
            check_field("envelope line", line)?;
            let mut chars = line.chars();
            let kind = chars
                .next()
                .ok_or_else(|| EnvelopeError::Format("empty envelope line".into()))?;
            let value = chars.as_str();
            match kind {
                'V' if value == "1" => seen_version = true,
                'I' => env.id = value.to_string(),
                'A' => {
                    env.arrival = value
                        .parse()
                        .map_err(|_| EnvelopeError::Format("bad arrival".into()))?
                }
                'F' => env.sender = value.to_string(),
                k if k.is_ascii() => env.apply(k as u8, value)?,
                _ => return Err(EnvelopeError::Format("bad envelope line".into())),
            }
        }
        if !seen_version {
            return Err(EnvelopeError::Format("missing version line".into()));
        }
        Ok(env)
    }

    /// The sender as written in SMTP and logs: `<>` for the null sender.
    pub fn sender_display(&self) -> String {
        format!("<{}>", self.sender)
    }
}

fn parse_z(z: &[u8]) -> Option<u64> {
    if z.first() != Some(&b'Z') || z.last() != Some(&b'\n') {
        return None;
    }
    let hex = std::str::from_utf8(&z[1..17]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn qmail_round_trip() {
        let mut e = Envelope::new(
            "a@b.test",
            vec![Recipient::new("c@d.test"), Recipient::new("e@f.test")],
        );
        e.envid = Some("xyz".into());
        e.ret = Some(Ret::Hdrs);
        e.recipients[1].notify = Some("FAILURE,DELAY".into());
        e.recipients[1].orcpt = Some("rfc822;e@f.test".into());
        e.smtputf8 = true;
        e.hold = Some("milter clamav: Eicar-Signature".into());
        let parsed = Envelope::parse_qmail(&e.to_qmail()).expect("parses");
        assert_eq!(parsed, e);
    }

    #[test]
    fn qmail_plain_and_null_sender() {
        let e = Envelope::parse_qmail(b"F\0Tx@y.test\0\0").expect("parses");
        assert_eq!(e.sender, "");
        assert_eq!(e.recipients[0].address, "x@y.test");
    }

    #[test]
    fn qmail_errors() {
        assert!(matches!(
            Envelope::parse_qmail(b"Tx@y\0\0"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            Envelope::parse_qmail(b"Fa@b\0\0"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            Envelope::parse_qmail(b"Fa@b\0Tx@y\0"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            Envelope::parse_qmail(b"Fa@b\0Tx\ny\0\0"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            Envelope::parse_qmail(b"Fa@b\0Qx\0Tx@y\0\0"),
            Err(EnvelopeError::Format(_))
        ));
        assert!(matches!(
            Envelope::parse_qmail(b""),
            Err(EnvelopeError::Format(_))
        ));
        let long = format!("Fa@b\0T{}\0\0", "x".repeat(MAX_ADDRESS + 1));
        assert_eq!(
            Envelope::parse_qmail(long.as_bytes()),
            Err(EnvelopeError::AddressTooLong)
        );
    }

    #[test]
    fn trailer_round_trip() {
        let mut e = Envelope::new("", vec![Recipient::new("c@d.test")]);
        e.id = "0123456789ABCDEF012345".into();
        e.arrival = 1_700_000_000;
        e.client = Some("localhost[127.0.0.1]".into());
        e.hold = Some("<a@b>: Sender address triggers HOLD action: Review".into());
        let body = b"Subject: x\r\n\r\nhello\r\n".to_vec();
        e.size = body.len() as u64;
        let mut file = body.clone();
        file.extend(e.to_trailer());
        let back = Envelope::read_from(&mut Cursor::new(file)).expect("reads");
        assert_eq!(back, e);
    }

    #[test]
    fn envelopes_longer_than_one_tail_read_round_trip() {
        // The envelope is found in the tail read, straddles it, or exceeds it; bodies
        // shorter and longer than the tail read.
        for (nrcpt, body_len) in [(1, 10), (1, 9000), (150, 10), (150, 9000), (2000, 50)] {
            let rcpts = (0..nrcpt)
                .map(|i| Recipient::new(format!("user{i}@example.test")))
                .collect();
            let mut e = Envelope::new("a@b.test", rcpts);
            e.id = "0123456789ABCDEF012345".into();
            let body = vec![b'x'; body_len];
            e.size = body.len() as u64;
            let mut file = body.clone();
            file.extend(e.to_trailer());
            let back = Envelope::read_from(&mut Cursor::new(file)).expect("reads");
            assert_eq!(back, e, "{nrcpt} recipients, {body_len} octets");
        }
    }

    #[test]
    fn truncated_file_is_an_error() {
        let mut e = Envelope::new("a@b", vec![Recipient::new("c@d")]);
        e.size = 3;
        let mut file = b"abc".to_vec();
        file.extend(e.to_trailer());
        for cut in 0..file.len() {
            assert!(
                Envelope::read_from(&mut Cursor::new(&file[..cut])).is_err(),
                "cut at {cut}"
            );
        }
    }

    /// Fuzzing (fuzz target `envelope`) found a trailer line ending in a bare CR read as
    /// a value ending in CR, which `to_trailer` then wrote as `...\r\n` and which read
    /// back without the CR. Such a trailer (never written by Sloop) is now refused.
    #[test]
    fn trailer_value_ending_in_cr_is_refused() {
        for text in ["V1\nI\r", "V1\nTa\r\r\n", "V1\r\nTa\n", "V1\nTa\0b\n"] {
            let mut file = text.as_bytes().to_vec();
            file.extend_from_slice(b"Z0000000000000000\n");
            let got = Envelope::read_from(&mut Cursor::new(file));
            assert!(
                matches!(got, Err(EnvelopeError::Format(_))),
                "{text:?}: {got:?}"
            );
        }
    }
}
