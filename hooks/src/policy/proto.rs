//! The policy delegation wire format, without I/O: the request Sloop writes and the
//! reply it reads.
//!
//! Request: `name=value` lines, each ended by `\n`, then an empty line. Values never
//! hold CR, LF or NUL ([`Request::set`] drops them), so a client-supplied HELO name or
//! address cannot inject an attribute or end the request early.
//!
//! Reply: `name=value` lines ended by an empty line, at most [`MAX_REPLY`] octets in
//! all, holding exactly one `action=` attribute; other lines are skipped, as Postfix
//! skips attributes it did not ask for (a line without `=` included). A reply that is
//! too long, holds a NUL, is not UTF-8, has no `action=` or two of them, or is
//! followed by more data before Sloop asked again, is a [`ProtoError`]: the service is
//! broken and its connection is dropped.

use std::fmt;

use super::action::Action;

/// The longest reply accepted, the final empty line included (Postfix policy services
/// answer with one short line).
pub const MAX_REPLY: usize = 4096;

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// More than [`MAX_REPLY`] octets without the final empty line.
    TooLong,
    /// The reply does not end with an empty line.
    Incomplete,
    /// Data after the reply's final empty line.
    TrailingData,
    /// A NUL octet.
    Nul,
    /// Not UTF-8.
    NotUtf8,
    /// No `action=` attribute.
    MissingAction,
    /// More than one `action=` attribute.
    DuplicateAction,
    /// `PREPEND` without `name: value` (the text's start).
    BadPrepend(String),
    /// An action Sloop does not know or does not implement (its keyword).
    UnknownAction(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooLong => write!(f, "reply longer than {MAX_REPLY} octets"),
            ProtoError::Incomplete => f.write_str("reply without the final empty line"),
            ProtoError::TrailingData => f.write_str("data after the end of the reply"),
            ProtoError::Nul => f.write_str("NUL in the reply"),
            ProtoError::NotUtf8 => f.write_str("reply is not UTF-8"),
            ProtoError::MissingAction => f.write_str("reply without an action attribute"),
            ProtoError::DuplicateAction => f.write_str("reply with more than one action"),
            ProtoError::BadPrepend(t) => write!(f, "PREPEND without a header: {t:?}"),
            ProtoError::UnknownAction(a) => write!(f, "unknown action {a:?}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// The `protocol_state` of a request: the SMTP command being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolState {
    Connect,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    Vrfy,
}

impl ProtocolState {
    /// The attribute value (`RCPT`, `END-OF-MESSAGE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolState::Connect => "CONNECT",
            ProtocolState::Ehlo => "EHLO",
            ProtocolState::Helo => "HELO",
            ProtocolState::Mail => "MAIL",
            ProtocolState::Rcpt => "RCPT",
            ProtocolState::Data => "DATA",
            ProtocolState::EndOfMessage => "END-OF-MESSAGE",
            ProtocolState::Vrfy => "VRFY",
        }
    }
}

/// One policy request: `request=smtpd_access_policy`, `protocol_state`, then the
/// attributes set, in the order first set. Postfix's attribute names are used as they
/// are (`client_address`, `helo_name`, `sender`, `recipient`, `queue_id`, `instance`,
/// `sasl_username`, `encryption_protocol`, ...); an attribute Sloop does not know is
/// left out or sent empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    attrs: Vec<(&'static str, String)>,
}

impl Request {
    /// A request for a check at `state`.
    pub fn new(state: ProtocolState) -> Request {
        Request {
            attrs: vec![
                ("request", "smtpd_access_policy".to_string()),
                ("protocol_state", state.as_str().to_string()),
            ],
        }
    }

    /// Sets attribute `name` (lower-case letters, digits and `_`) to `value` without
    /// its CR, LF and NUL characters, replacing an earlier value.
    pub fn set(&mut self, name: &'static str, value: &str) -> &mut Request {
        debug_assert!(valid_name(name), "bad policy attribute name {name:?}");
        let clean: String = value
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect();
        match self.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = clean,
            None => self.attrs.push((name, clean)),
        }
        self
    }

    /// The value of attribute `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request on the wire: `name=value\n` lines and an empty line. A name that is
    /// not a valid attribute name (a programming error) is left out rather than allowed
    /// to break the framing.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * self.attrs.len());
        for (name, value) in self.attrs.iter().filter(|(n, _)| valid_name(n)) {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

/// Reads one complete reply (the final empty line included, nothing after it).
pub fn parse_reply(bytes: &[u8]) -> Result<Action, ProtoError> {
    let body = match reply_end(bytes) {
        Some(end) if end == bytes.len() && end <= MAX_REPLY => &bytes[..end - 1],
        Some(end) if end <= MAX_REPLY => return Err(ProtoError::TrailingData),
        Some(_) => return Err(ProtoError::TooLong),
        None if bytes.len() > MAX_REPLY => return Err(ProtoError::TooLong),
        None => return Err(ProtoError::Incomplete),
    };
    if memchr::memchr(0, body).is_some() {
        return Err(ProtoError::Nul);
    }
    let text = std::str::from_utf8(body).map_err(|_| ProtoError::NotUtf8)?;
    let mut action = None;
    // `body` is the attribute lines, each ended by '\n' (none when the reply is
    // only the empty line).
    for line in text.split_terminator('\n') {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name == "action" {
            if action.is_some() {
                return Err(ProtoError::DuplicateAction);
            }
            action = Some(value);
        }
    }
    Action::parse(action.ok_or(ProtoError::MissingAction)?)
}

/// A reply on the wire: `action=<value>\n\n` (for fake services in tests and the fuzz
/// target's round trip).
pub fn encode_reply(action: &Action) -> Vec<u8> {
    format!("action={}\n\n", action.to_value()).into_bytes()
}

/// Collects a reply as it arrives and says when it is complete: at the first empty
/// line. Refuses more than [`MAX_REPLY`] octets and data after the end.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    complete: bool,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Appends `bytes` read from the service. `Ok(true)` once the reply is complete;
    /// an error for a reply over the limit or data after its end.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<bool, ProtoError> {
        if self.complete && !bytes.is_empty() {
            return Err(ProtoError::TrailingData);
        }
        // Only the octet before the new data can start a "\n\n" with it.
        let from = self.buf.len().saturating_sub(1);
        self.buf.extend_from_slice(bytes);
        let end = if self.buf.first() == Some(&b'\n') {
            Some(1)
        } else {
            memchr::memmem::find(&self.buf[from..], b"\n\n").map(|i| i + from + 2)
        };
        match end {
            Some(end) if end > MAX_REPLY => Err(ProtoError::TooLong),
            Some(end) if end < self.buf.len() => Err(ProtoError::TrailingData),
            Some(_) => {
                self.complete = true;
                Ok(true)
            }
            None if self.buf.len() > MAX_REPLY => Err(ProtoError::TooLong),
            None => Ok(false),
        }
    }

    /// Octets received so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been received.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The action of the complete reply.
    pub fn action(&self) -> Result<Action, ProtoError> {
        parse_reply(&self.buf)
    }
}

/// The length of the reply up to and including its final empty line: the first
/// "\n\n", or a "\n" at the very start (a reply of no attributes).
fn reply_end(bytes: &[u8]) -> Option<usize> {
    if bytes.first() == Some(&b'\n') {
        return Some(1);
    }
    memchr::memmem::find(bytes, b"\n\n").map(|i| i + 2)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_name_value_lines_and_an_empty_line() {
        let mut r = Request::new(ProtocolState::Rcpt);
        r.set("client_address", "192.0.2.1")
            .set("helo_name", "mx.example\r\nrecipient=x@y\0")
            .set("sender", "")
            .set("client_address", "192.0.2.2");
        assert_eq!(
            String::from_utf8(r.encode()).unwrap(),
            "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.2\n\
             helo_name=mx.examplerecipient=x@y\nsender=\n\n"
        );
        assert_eq!(r.get("helo_name"), Some("mx.examplerecipient=x@y"));
        assert_eq!(r.get("recipient"), None);
        assert_eq!(
            Request::new(ProtocolState::EndOfMessage).get("protocol_state"),
            Some("END-OF-MESSAGE")
        );
    }

    #[test]
    fn reply_with_one_action_and_other_attributes_ignored() {
        assert_eq!(parse_reply(b"action=DUNNO\n\n"), Ok(Action::Dunno));
        assert_eq!(
            parse_reply(b"x-info=1\naction=REJECT no\nfoo=\n\n"),
            Ok(Action::Reject(Some("no".into())))
        );
        // Postfix skips what it did not ask for, lines without '=' too.
        assert_eq!(
            parse_reply(b"hello\naction=DUNNO\n=x\nAction=OK\n\n"),
            Ok(Action::Dunno)
        );
        assert_eq!(
            parse_reply("action=été x\n\n".as_bytes()),
            Err(ProtoError::UnknownAction("été".into()))
        );
    }

    #[test]
    fn reply_errors() {
        let long = format!("action=REJECT {}\n\n", "x".repeat(MAX_REPLY));
        let cases: &[(&[u8], ProtoError)] = &[
            (b"\n", ProtoError::MissingAction),
            (b"foo=bar\n\n", ProtoError::MissingAction),
            (b"ACTION=OK\n\n", ProtoError::MissingAction),
            (b"action=OK\n", ProtoError::Incomplete),
            (b"action=OK", ProtoError::Incomplete),
            (b"", ProtoError::Incomplete),
            (b"action=OK\r\n\r\n", ProtoError::Incomplete),
            (b"action=OK\n\naction=OK\n\n", ProtoError::TrailingData),
            (b"action=OK\naction=OK\n\n", ProtoError::DuplicateAction),
            (b"action=O\0K\n\n", ProtoError::Nul),
            (b"action=\xffOK\n\n", ProtoError::NotUtf8),
            (b"hello\n\n", ProtoError::MissingAction),
            (b"=OK\n\n", ProtoError::MissingAction),
            (b"action\n\n", ProtoError::MissingAction),
            (b"action=OK\r\n\n", ProtoError::UnknownAction("OK\r".into())),
            (
                b"action=FROBNICATE\n\n",
                ProtoError::UnknownAction("FROBNICATE".into()),
            ),
            (long.as_bytes(), ProtoError::TooLong),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_reply(bytes).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn reply_of_exactly_the_limit_is_read() {
        let head = "action=REJECT ";
        let text = "x".repeat(MAX_REPLY - head.len() - 2);
        let reply = format!("{head}{text}\n\n");
        assert_eq!(reply.len(), MAX_REPLY);
        assert_eq!(
            parse_reply(reply.as_bytes()),
            Ok(Action::Reject(Some(text)))
        );
        let mut r = ReplyReader::new();
        assert_eq!(r.feed(reply.as_bytes()), Ok(true));
    }

    #[test]
    fn reader_completes_at_the_first_empty_line_in_any_pieces() {
        let reply = b"foo=1\naction=DEFER_IF_PERMIT Greylisted\n\n";
        for size in 1..reply.len() {
            let mut r = ReplyReader::new();
            let mut done = false;
            for (i, piece) in reply.chunks(size).enumerate() {
                assert!(!done, "complete before piece {i}");
                done = r.feed(piece).unwrap();
            }
            assert!(done, "size {size}");
            assert_eq!(
                r.action(),
                Ok(Action::DeferIfPermit(Some("Greylisted".into())))
            );
        }
    }

    #[test]
    fn reader_refuses_overlong_and_trailing_data() {
        let mut r = ReplyReader::new();
        assert_eq!(r.feed(&[b'x'; MAX_REPLY]), Ok(false));
        assert_eq!(r.feed(b"x"), Err(ProtoError::TooLong));

        let mut r = ReplyReader::new();
        assert_eq!(r.feed(b"action=OK\n\nx"), Err(ProtoError::TrailingData));

        let mut r = ReplyReader::new();
        assert_eq!(r.feed(b"action=OK\n"), Ok(false));
        assert_eq!(r.feed(b"\n"), Ok(true));
        assert_eq!(r.feed(b"y"), Err(ProtoError::TrailingData));

        let mut r = ReplyReader::new();
        assert_eq!(r.feed(b"\n"), Ok(true));
        assert_eq!(r.action(), Err(ProtoError::MissingAction));
    }

    #[test]
    fn encoded_reply_reads_back() {
        let a = Action::Code {
            code: 450,
            enhanced: Some((4, 7, 1)),
            text: "Greylisted".into(),
        };
        assert_eq!(encode_reply(&a), b"action=450 4.7.1 Greylisted\n\n");
        assert_eq!(parse_reply(&encode_reply(&a)), Ok(a));
    }

    /// The fuzz target's properties on generated inputs (fuzz/fuzz_targets/
    /// policy_reply.rs runs them on libFuzzer's): the reader in pieces agrees with
    /// `parse_reply`, and a parsed action reads back from its encoding.
    #[test]
    fn property_reader_agrees_and_actions_round_trip() {
        const KEYWORDS: &[&str] = &[
            "OK",
            "ok",
            "DUNNO",
            "REJECT",
            "DEFER",
            "DEFER_IF_PERMIT",
            "defer_if_reject",
            "HOLD",
            "DISCARD",
            "INFO",
            "WARN",
            "PREPEND",
            "450",
            "521",
            "250",
            "7",
            "FROBNICATE",
            "",
        ];
        const TEXTS: &[&str] = &[
            " ", "\t", "5.7.1", "4.07.1", " text", "\r", "\0", "\u{e9}", " X-A: b", "\u{2028}",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn pick(list: &[&'static str], n: u64) -> &'static str {
            list[(n % list.len() as u64) as usize]
        }
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            if next() % 3 == 0 {
                input.extend_from_slice(b"foo=bar\n");
            }
            input.extend_from_slice(b"action=");
            input.extend_from_slice(pick(KEYWORDS, next()).as_bytes());
            for _ in 0..next() % 4 {
                input.extend_from_slice(pick(TEXTS, next()).as_bytes());
            }
            input.push(b'\n');
            if next() % 5 == 0 {
                input.extend_from_slice(b"action=OK\n");
            }
            input.push(b'\n');
            match next() % 8 {
                0 => input.truncate((next() % (input.len() as u64 + 1)) as usize),
                1 => input.extend_from_slice(pick(TEXTS, next()).as_bytes()),
                _ => {}
            }
            if next() % 50 == 0 {
                input.extend(std::iter::repeat_n(b'x', MAX_REPLY));
            }
            let whole = parse_reply(&input);
            let size = (next() % 7 + 1) as usize;
            let mut r = ReplyReader::new();
            let mut fed = Ok(false);
            let mut consumed = 0;
            for piece in input.chunks(size) {
                fed = r.feed(piece);
                consumed += piece.len();
                if fed != Ok(false) {
                    break;
                }
            }
            match fed {
                Ok(true) if consumed == input.len() => assert_eq!(r.action(), whole),
                Ok(true) => assert_eq!(whole, Err(ProtoError::TrailingData)),
                Ok(false) => assert_eq!(whole, Err(ProtoError::Incomplete)),
                Err(e) => assert_eq!(whole, Err(e)),
            }
            if let Ok(a) = whole {
                parsed += 1;
                let out = encode_reply(&a);
                assert!(out.len() <= MAX_REPLY);
                assert_eq!(parse_reply(&out), Ok(a));
            }
        }
        assert!(
            parsed > 200,
            "only {parsed} inputs parsed: the generator is off"
        );
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            ProtoError::UnknownAction("FROBNICATE".into()).to_string(),
            "unknown action \"FROBNICATE\""
        );
        assert_eq!(
            ProtoError::TooLong.to_string(),
            "reply longer than 4096 octets"
        );
    }
}
