//! The milter wire format, without I/O.
//!
//! Every packet is a 4-octet big-endian length, then that many octets: a command octet
//! and its data. Strings are NUL-terminated; integers are 4-octet big-endian (the
//! connect event's port is 2 octets). The constants are libmilter's (`mfdef.h`):
//! `SMFIC_*` commands from the MTA, `SMFIR_*` replies from the filter.
//!
//! A length of zero (no command octet) or over [`MAX_PACKET_LEN`] is a protocol error:
//! the stream cannot be trusted after it. A reply is decoded strictly: every string
//! present and NUL-terminated, valid UTF-8, no octet left over, so that a decoded
//! reply encodes back to the very same packet (the fuzz target checks this).

use std::net::IpAddr;

use super::MilterError;

/// The largest packet accepted from a filter (libmilter's own limit is 1 MiB with the
/// largest body chunk option; Sloop does not offer larger chunks than 65535 octets).
pub const MAX_PACKET_LEN: usize = 1 << 20;

// Commands, MTA to filter.
pub(crate) const SMFIC_ABORT: u8 = b'A';
pub(crate) const SMFIC_BODY: u8 = b'B';
pub(crate) const SMFIC_CONNECT: u8 = b'C';
pub(crate) const SMFIC_MACRO: u8 = b'D';
pub(crate) const SMFIC_BODYEOB: u8 = b'E';
pub(crate) const SMFIC_HELO: u8 = b'H';
pub(crate) const SMFIC_HEADER: u8 = b'L';
pub(crate) const SMFIC_MAIL: u8 = b'M';
pub(crate) const SMFIC_EOH: u8 = b'N';
pub(crate) const SMFIC_OPTNEG: u8 = b'O';
pub(crate) const SMFIC_QUIT: u8 = b'Q';
pub(crate) const SMFIC_RCPT: u8 = b'R';
pub(crate) const SMFIC_DATA: u8 = b'T';

// Replies, filter to MTA.
const SMFIR_ADDRCPT: u8 = b'+';
const SMFIR_DELRCPT: u8 = b'-';
const SMFIR_ADDRCPT_PAR: u8 = b'2';
const SMFIR_SHUTDOWN: u8 = b'4';
const SMFIR_ACCEPT: u8 = b'a';
const SMFIR_REPLBODY: u8 = b'b';
const SMFIR_CONTINUE: u8 = b'c';
const SMFIR_DISCARD: u8 = b'd';
const SMFIR_CHGFROM: u8 = b'e';
const SMFIR_CONN_FAIL: u8 = b'f';
const SMFIR_ADDHEADER: u8 = b'h';
const SMFIR_INSHEADER: u8 = b'i';
const SMFIR_CHGHEADER: u8 = b'm';
const SMFIR_PROGRESS: u8 = b'p';
const SMFIR_QUARANTINE: u8 = b'q';
const SMFIR_REJECT: u8 = b'r';
const SMFIR_SKIP: u8 = b's';
const SMFIR_TEMPFAIL: u8 = b't';
const SMFIR_REPLYCODE: u8 = b'y';

// Connect event address families.
const SMFIA_UNKNOWN: u8 = b'U';
const SMFIA_INET: u8 = b'4';
const SMFIA_INET6: u8 = b'6';

/// One packet: the command octet and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub cmd: u8,
    pub data: Vec<u8>,
}

/// Reads one packet from the front of `buf`: `Ok(None)` when more octets are needed,
/// else the packet and the number of octets it took.
pub fn read_packet(buf: &[u8]) -> Result<Option<(Packet, usize)>, MilterError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 {
        return Err(MilterError::Protocol("packet of length 0".into()));
    }
    if len > MAX_PACKET_LEN {
        return Err(MilterError::Protocol(format!(
            "packet length {len} exceeds {MAX_PACKET_LEN}"
        )));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let packet = Packet {
        cmd: body[0],
        data: body[1..].to_vec(),
    };
    Ok(Some((packet, 4 + len)))
}

/// A command the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Option negotiation: protocol version, actions offered, protocol steps offered.
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    /// Macros for the event whose command octet is `cmd`.
    Macro {
        cmd: u8,
        pairs: Vec<(&'a str, &'a str)>,
    },
    /// The client: host name, and address and port (`None`: family unknown).
    Connect {
        hostname: &'a str,
        addr: Option<(IpAddr, u16)>,
    },
    Helo(&'a str),
    /// `MAIL FROM`: the sender in angle brackets, then the ESMTP parameters.
    Mail(&'a [String]),
    /// `RCPT TO`: the recipient in angle brackets, then the ESMTP parameters.
    Rcpt(&'a [String]),
    Data,
    /// A header field: the name, and the value as the filter is to see it (folded
    /// lines separated by a bare LF, as Postfix sends them).
    Header {
        name: &'a str,
        value: &'a [u8],
    },
    Eoh,
    Body(&'a [u8]),
    BodyEob,
    Abort,
    Quit,
}

/// The packet for a command. NUL octets inside strings (which would end them early)
/// are dropped.
pub fn encode_command(command: &Command<'_>) -> Vec<u8> {
    let mut data = Vec::new();
    let cmd = match command {
        Command::OptNeg {
            version,
            actions,
            protocol,
        } => {
            for n in [version, actions, protocol] {
                data.extend_from_slice(&n.to_be_bytes());
            }
            SMFIC_OPTNEG
        }
        Command::Macro { cmd, pairs } => {
            data.push(*cmd);
            for (name, value) in pairs {
                put_str(&mut data, name);
                put_str(&mut data, value);
            }
            SMFIC_MACRO
        }
        Command::Connect { hostname, addr } => {
            put_str(&mut data, hostname);
            match addr {
                None => data.push(SMFIA_UNKNOWN),
                Some((ip, port)) => {
                    data.push(match ip {
                        IpAddr::V4(_) => SMFIA_INET,
                        IpAddr::V6(_) => SMFIA_INET6,
                    });
                    data.extend_from_slice(&port.to_be_bytes());
                    put_str(&mut data, &ip.to_string());
                }
            }
            SMFIC_CONNECT
        }
        Command::Helo(name) => {
            put_str(&mut data, name);
            SMFIC_HELO
        }
        Command::Mail(args) | Command::Rcpt(args) => {
            for arg in args.iter() {
                put_str(&mut data, arg);
            }
            if matches!(command, Command::Mail(_)) {
                SMFIC_MAIL
            } else {
                SMFIC_RCPT
            }
        }
        Command::Data => SMFIC_DATA,
        Command::Header { name, value } => {
            put_str(&mut data, name);
            data.extend(value.iter().copied().filter(|&b| b != 0));
            data.push(0);
            SMFIC_HEADER
        }
        Command::Eoh => SMFIC_EOH,
        Command::Body(chunk) => {
            data.extend_from_slice(chunk);
            SMFIC_BODY
        }
        Command::BodyEob => SMFIC_BODYEOB,
        Command::Abort => SMFIC_ABORT,
        Command::Quit => SMFIC_QUIT,
    };
    frame(cmd, &data)
}

/// A reply a filter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The answer to option negotiation, with the macro lists asked for per stage.
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
        symlists: Vec<(u32, String)>,
    },
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// `SMFIR_SHUTDOWN`: close the SMTP session (421).
    Shutdown,
    /// `SMFIR_CONN_FAIL`: the filter's connection failed (treated as a failure).
    ConnFail,
    /// `SMFIR_REPLYCODE`: an SMTP reply, checked by the session.
    ReplyCode(String),
    AddHeader {
        name: String,
        value: String,
    },
    InsHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChgHeader {
        index: u32,
        name: String,
        value: String,
    },
    ReplBody(Vec<u8>),
    AddRcpt(String),
    AddRcptPar {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChgFrom {
        sender: String,
        args: Option<String>,
    },
    Quarantine(String),
    Progress,
    Skip,
}

impl Reply {
    /// Decodes a filter's packet.
    pub fn decode(packet: &Packet) -> Result<Reply, MilterError> {
        let mut d = Data::new(&packet.data, packet.cmd);
        let reply = match packet.cmd {
            b'O' => {
                let version = d.u32()?;
                let actions = d.u32()?;
                let protocol = d.u32()?;
                let mut symlists = Vec::new();
                while !d.is_empty() {
                    let stage = d.u32()?;
                    symlists.push((stage, d.string()?));
                }
                Reply::OptNeg {
                    version,
                    actions,
                    protocol,
                    symlists,
                }
            }
            SMFIR_ACCEPT => Reply::Accept,
            SMFIR_CONTINUE => Reply::Continue,
            SMFIR_DISCARD => Reply::Discard,
            SMFIR_REJECT => Reply::Reject,
            SMFIR_TEMPFAIL => Reply::Tempfail,
            SMFIR_SHUTDOWN => Reply::Shutdown,
            SMFIR_CONN_FAIL => Reply::ConnFail,
            SMFIR_PROGRESS => Reply::Progress,
            SMFIR_SKIP => Reply::Skip,
            SMFIR_REPLYCODE => Reply::ReplyCode(d.string()?),
            SMFIR_ADDHEADER => Reply::AddHeader {
                name: d.string()?,
                value: d.string()?,
            },
            SMFIR_INSHEADER => Reply::InsHeader {
                index: d.u32()?,
                name: d.string()?,
                value: d.string()?,
            },
            SMFIR_CHGHEADER => Reply::ChgHeader {
                index: d.u32()?,
                name: d.string()?,
                value: d.string()?,
            },
            SMFIR_REPLBODY => Reply::ReplBody(d.rest()),
            SMFIR_ADDRCPT => Reply::AddRcpt(d.string()?),
            SMFIR_ADDRCPT_PAR => Reply::AddRcptPar {
                rcpt: d.string()?,
                args: d.optional_string()?,
            },
            SMFIR_DELRCPT => Reply::DelRcpt(d.string()?),
            SMFIR_CHGFROM => Reply::ChgFrom {
                sender: d.string()?,
                args: d.optional_string()?,
            },
            SMFIR_QUARANTINE => Reply::Quarantine(d.string()?),
            other => {
                return Err(MilterError::Protocol(format!(
                    "unknown reply {}",
                    show_cmd(other)
                )))
            }
        };
        d.finish()?;
        Ok(reply)
    }

    /// The reply's name as libmilter spells it, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::OptNeg { .. } => "SMFIC_OPTNEG",
            Reply::Accept => "SMFIR_ACCEPT",
            Reply::Continue => "SMFIR_CONTINUE",
            Reply::Discard => "SMFIR_DISCARD",
            Reply::Reject => "SMFIR_REJECT",
            Reply::Tempfail => "SMFIR_TEMPFAIL",
            Reply::Shutdown => "SMFIR_SHUTDOWN",
            Reply::ConnFail => "SMFIR_CONN_FAIL",
            Reply::ReplyCode(_) => "SMFIR_REPLYCODE",
            Reply::AddHeader { .. } => "SMFIR_ADDHEADER",
            Reply::InsHeader { .. } => "SMFIR_INSHEADER",
            Reply::ChgHeader { .. } => "SMFIR_CHGHEADER",
            Reply::ReplBody(_) => "SMFIR_REPLBODY",
            Reply::AddRcpt(_) => "SMFIR_ADDRCPT",
            Reply::AddRcptPar { .. } => "SMFIR_ADDRCPT_PAR",
            Reply::DelRcpt(_) => "SMFIR_DELRCPT",
            Reply::ChgFrom { .. } => "SMFIR_CHGFROM",
            Reply::Quarantine(_) => "SMFIR_QUARANTINE",
            Reply::Progress => "SMFIR_PROGRESS",
            Reply::Skip => "SMFIR_SKIP",
        }
    }
}

/// The packet for a reply (what a filter sends; used by tests and the fuzz target).
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut data = Vec::new();
    let cmd = match reply {
        Reply::OptNeg {
            version,
            actions,
            protocol,
            symlists,
        } => {
            for n in [version, actions, protocol] {
                data.extend_from_slice(&n.to_be_bytes());
            }
            for (stage, list) in symlists {
                data.extend_from_slice(&stage.to_be_bytes());
                put_str(&mut data, list);
            }
            SMFIC_OPTNEG
        }
        Reply::Accept => SMFIR_ACCEPT,
        Reply::Continue => SMFIR_CONTINUE,
        Reply::Discard => SMFIR_DISCARD,
        Reply::Reject => SMFIR_REJECT,
        Reply::Tempfail => SMFIR_TEMPFAIL,
        Reply::Shutdown => SMFIR_SHUTDOWN,
        Reply::ConnFail => SMFIR_CONN_FAIL,
        Reply::Progress => SMFIR_PROGRESS,
        Reply::Skip => SMFIR_SKIP,
        Reply::ReplyCode(text) => {
            put_str(&mut data, text);
            SMFIR_REPLYCODE
        }
        Reply::AddHeader { name, value } => {
            put_str(&mut data, name);
            put_str(&mut data, value);
            SMFIR_ADDHEADER
        }
        Reply::InsHeader { index, name, value } | Reply::ChgHeader { index, name, value } => {
            data.extend_from_slice(&index.to_be_bytes());
            put_str(&mut data, name);
            put_str(&mut data, value);
            if matches!(reply, Reply::InsHeader { .. }) {
                SMFIR_INSHEADER
            } else {
                SMFIR_CHGHEADER
            }
        }
        Reply::ReplBody(body) => {
            data.extend_from_slice(body);
            SMFIR_REPLBODY
        }
        Reply::AddRcpt(rcpt) => {
            put_str(&mut data, rcpt);
            SMFIR_ADDRCPT
        }
        Reply::AddRcptPar { rcpt, args } | Reply::ChgFrom { sender: rcpt, args } => {
            put_str(&mut data, rcpt);
            if let Some(args) = args {
                put_str(&mut data, args);
            }
            if matches!(reply, Reply::AddRcptPar { .. }) {
                SMFIR_ADDRCPT_PAR
            } else {
                SMFIR_CHGFROM
            }
        }
        Reply::DelRcpt(rcpt) => {
            put_str(&mut data, rcpt);
            SMFIR_DELRCPT
        }
        Reply::Quarantine(reason) => {
            put_str(&mut data, reason);
            SMFIR_QUARANTINE
        }
    };
    frame(cmd, &data)
}

/// A command octet for a log line: the character when printable, else its hex value.
pub(crate) fn show_cmd(cmd: u8) -> String {
    if cmd.is_ascii_graphic() {
        format!("'{}'", cmd as char)
    } else {
        format!("0x{cmd:02x}")
    }
}

fn frame(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + data.len());
    // Commands Sloop sends are far below 4 GiB (body chunks are at most 65535 octets).
    out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    out.push(cmd);
    out.extend_from_slice(data);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// A strict reader of a packet's data.
struct Data<'a> {
    rest: &'a [u8],
    cmd: u8,
}

impl<'a> Data<'a> {
    fn new(rest: &'a [u8], cmd: u8) -> Data<'a> {
        Data { rest, cmd }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn short(&self, what: &str) -> MilterError {
        MilterError::Protocol(format!("reply {} too short: no {what}", show_cmd(self.cmd)))
    }

    fn u32(&mut self) -> Result<u32, MilterError> {
        let Some(b) = self.rest.get(..4) else {
            return Err(self.short("integer"));
        };
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.rest = &self.rest[4..];
        Ok(n)
    }

    fn string(&mut self) -> Result<String, MilterError> {
        let Some(end) = memchr::memchr(0, self.rest) else {
            return Err(self.short("NUL-terminated string"));
        };
        let s = std::str::from_utf8(&self.rest[..end]).map_err(|_| {
            MilterError::Protocol(format!(
                "reply {} holds a string that is not UTF-8",
                show_cmd(self.cmd)
            ))
        })?;
        self.rest = &self.rest[end + 1..];
        Ok(s.to_string())
    }

    fn optional_string(&mut self) -> Result<Option<String>, MilterError> {
        if self.rest.is_empty() {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest).to_vec()
    }

    fn finish(&self) -> Result<(), MilterError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(MilterError::Protocol(format!(
                "reply {} followed by {} unexpected octets",
                show_cmd(self.cmd),
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(bytes: &[u8]) -> Result<Reply, MilterError> {
        match read_packet(bytes)? {
            Some((packet, used)) => {
                assert_eq!(used, bytes.len());
                Reply::decode(&packet)
            }
            None => panic!("incomplete packet"),
        }
    }

    fn all_replies() -> Vec<Reply> {
        vec![
            Reply::OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1fffff,
                symlists: vec![(0, "j {client_addr}".into()), (5, "i".into())],
            },
            Reply::Accept,
            Reply::Continue,
            Reply::Discard,
            Reply::Reject,
            Reply::Tempfail,
            Reply::Shutdown,
            Reply::ConnFail,
            Reply::ReplyCode("554 5.7.1 Gtube pattern".into()),
            Reply::AddHeader {
                name: "X-Spam".into(),
                value: "yes\n\tfolded".into(),
            },
            Reply::InsHeader {
                index: 0,
                name: "DKIM-Signature".into(),
                value: "v=1; a=rsa-sha256".into(),
            },
            Reply::ChgHeader {
                index: 2,
                name: "Subject".into(),
                value: String::new(),
            },
            Reply::ReplBody(b"new body\r\n".to_vec()),
            Reply::ReplBody(Vec::new()),
            Reply::AddRcpt("<a@example.org>".into()),
            Reply::AddRcptPar {
                rcpt: "<b@example.org>".into(),
                args: Some("NOTIFY=NEVER".into()),
            },
            Reply::AddRcptPar {
                rcpt: "<c@example.org>".into(),
                args: None,
            },
            Reply::DelRcpt("<d@example.org>".into()),
            Reply::ChgFrom {
                sender: "<e@example.org>".into(),
                args: None,
            },
            Reply::ChgFrom {
                sender: "<>".into(),
                args: Some(String::new()),
            },
            Reply::Quarantine("virus found".into()),
            Reply::Progress,
            Reply::Skip,
        ]
    }

    #[test]
    fn every_reply_round_trips() {
        for reply in all_replies() {
            let bytes = encode_reply(&reply);
            let back = decode_one(&bytes).unwrap();
            assert_eq!(back, reply);
            assert_eq!(encode_reply(&back), bytes, "{}", reply.name());
        }
    }

    #[test]
    fn partial_packets_ask_for_more() {
        let bytes = encode_reply(&Reply::AddRcpt("<a@b>".into()));
        for cut in 0..bytes.len() {
            assert!(read_packet(&bytes[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&encode_reply(&Reply::Continue));
        let (first, used) = read_packet(&two).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(first.cmd, b'+');
        let (second, _) = read_packet(&two[used..]).unwrap().unwrap();
        assert_eq!(second.cmd, b'c');
    }

    #[test]
    fn bad_lengths_are_protocol_errors() {
        let err = read_packet(&[0, 0, 0, 0, b'c']).unwrap_err();
        assert_eq!(err.to_string(), "protocol error: packet of length 0");
        let err = read_packet(&[0, 0x10, 0, 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol error: packet length 1048577 exceeds 1048576"
        );
        let err = read_packet(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.to_string().contains("exceeds"));
        // The largest allowed length waits for its data.
        assert!(read_packet(&[0, 0x10, 0, 0, b'b']).unwrap().is_none());
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"\0\0\0\x01Z", "unknown reply 'Z'"),
            (b"\0\0\0\x01\x01", "unknown reply 0x01"),
            (b"\0\0\0\x02cX", "reply 'c' followed by 1 unexpected octets"),
            (
                b"\0\0\0\x04y550",
                "reply 'y' too short: no NUL-terminated string",
            ),
            (
                b"\0\0\0\x04h\xff\0\0",
                "reply 'h' holds a string that is not UTF-8",
            ),
            (
                b"\0\0\0\x04hX\0Y",
                "reply 'h' too short: no NUL-terminated string",
            ),
            (b"\0\0\0\x03i\0\0", "reply 'i' too short: no integer"),
            (
                b"\0\0\0\x09O\0\0\0\x06\0\0\0\x01",
                "reply 'O' too short: no integer",
            ),
            (
                b"\0\0\0\x11O\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x01",
                "reply 'O' too short: no NUL-terminated string",
            ),
            (
                b"\0\0\0\x06e<>\0\0x",
                "reply 'e' followed by 1 unexpected octets",
            ),
        ];
        for (bytes, want) in cases {
            let err = decode_one(bytes).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("protocol error: {want}"),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn commands_encode_as_libmilter_expects() {
        let b = encode_command(&Command::OptNeg {
            version: 6,
            actions: 0x1ff,
            protocol: 0x1f_ffff,
        });
        assert_eq!(b, b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff");
        let b = encode_command(&Command::Connect {
            hostname: "mail.example.org",
            addr: Some(("192.0.2.1".parse().unwrap(), 25)),
        });
        assert_eq!(&b[4..], b"Cmail.example.org\x004\x00\x19192.0.2.1\0");
        let b = encode_command(&Command::Connect {
            hostname: "[2001:db8::1]",
            addr: Some(("2001:db8::1".parse().unwrap(), 587)),
        });
        assert_eq!(&b[4..], b"C[2001:db8::1]\x006\x02\x4b2001:db8::1\0");
        let b = encode_command(&Command::Connect {
            hostname: "localhost",
            addr: None,
        });
        assert_eq!(&b[4..], b"Clocalhost\0U");
        let args = vec!["<a@example.org>".to_string(), "SIZE=10".to_string()];
        assert_eq!(
            &encode_command(&Command::Mail(&args))[4..],
            b"M<a@example.org>\0SIZE=10\0"
        );
        assert_eq!(
            &encode_command(&Command::Rcpt(&args[..1]))[4..],
            b"R<a@example.org>\0"
        );
        let b = encode_command(&Command::Macro {
            cmd: b'C',
            pairs: vec![("j", "mx"), ("{client_addr}", "192.0.2.1")],
        });
        assert_eq!(&b[4..], b"DCj\0mx\0{client_addr}\x00192.0.2.1\0");
        assert_eq!(&encode_command(&Command::Helo("a\0b"))[4..], b"Hab\0");
        let b = encode_command(&Command::Header {
            name: "Subject",
            value: b"hi",
        });
        assert_eq!(b, b"\0\0\0\x0cLSubject\0hi\0");
        assert_eq!(
            encode_command(&Command::Body(b"x\r\n")),
            b"\0\0\0\x04Bx\r\n"
        );
        for (c, octet) in [
            (Command::Data, b'T'),
            (Command::Eoh, b'N'),
            (Command::BodyEob, b'E'),
            (Command::Abort, b'A'),
            (Command::Quit, b'Q'),
        ] {
            assert_eq!(encode_command(&c), vec![0, 0, 0, 1, octet]);
        }
    }
}
