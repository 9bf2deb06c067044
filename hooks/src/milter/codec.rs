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
pub(crate) const SMFIC_QUIT_NC: u8 = b'K';
pub(crate) const SMFIC_HEADER: u8 = b'L';
pub(crate) const SMFIC_MAIL: u8 = b'M';
pub(crate) const SMFIC_EOH: u8 = b'N';
pub(crate) const SMFIC_OPTNEG: u8 = b'O';
pub(crate) const SMFIC_QUIT: u8 = b'Q';
pub(crate) const SMFIC_RCPT: u8 = b'R';
pub(crate) const SMFIC_DATA: u8 = b'T';
pub(crate) const SMFIC_UNKNOWN: u8 = b'U';

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
    let Some(len) = declared_len(buf) else {
        return Ok(None);
    };
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

/// True when the front of `buf` holds as many octets as its packet declares (the length
/// itself is checked by [`read_packet`]).
pub fn holds_whole_packet(buf: &[u8]) -> bool {
    declared_len(buf).is_some_and(|len| buf.len() - 4 >= len)
}

/// The length the packet at the front of `buf` declares (command and data), once its
/// four length octets are there.
fn declared_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..4)?;
    Some(u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize)
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
    /// Quit, a new SMTP session follows on this connection (protocol 6): the filter
    /// forgets the session and waits for a connect event.
    QuitNc,
    /// An SMTP command the filter has no event for.
    Unknown(&'a str),
}

/// The packet for a command. NUL octets inside strings (which would end them early)
/// are dropped.
pub fn encode_command(command: &Command<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command_into(command, &mut out);
    out
}

/// Appends the packet for a command to `out` (so that several packets go out in one
/// write).
pub fn encode_command_into(command: &Command<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    // The length is filled in once the data is known.
    out.extend_from_slice(&[0, 0, 0, 0, 0]);
    let data = out;
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
                put_str(data, name);
                put_str(data, value);
            }
            SMFIC_MACRO
        }
        Command::Connect { hostname, addr } => {
            put_str(data, hostname);
            match addr {
                None => data.push(SMFIA_UNKNOWN),
                Some((ip, port)) => {
                    data.push(match ip {
                        IpAddr::V4(_) => SMFIA_INET,
                        IpAddr::V6(_) => SMFIA_INET6,
                    });
                    data.extend_from_slice(&port.to_be_bytes());
                    put_str(data, &ip.to_string());
                }
            }
            SMFIC_CONNECT
        }
        Command::Helo(name) => {
            put_str(data, name);
            SMFIC_HELO
        }
        Command::Mail(args) | Command::Rcpt(args) => {
            for arg in args.iter() {
                put_str(data, arg);
            }
            if matches!(command, Command::Mail(_)) {
                SMFIC_MAIL
            } else {
                SMFIC_RCPT
            }
        }
        Command::Data => SMFIC_DATA,
        Command::Header { name, value } => {
            put_str(data, name);
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
        Command::QuitNc => SMFIC_QUIT_NC,
        Command::Unknown(line) => {
            put_str(data, line);
            SMFIC_UNKNOWN
        }
    };
    // Commands Sloop sends are far below 4 GiB (body chunks are at most 65535 octets).
    let len = (data.len() - start - 4) as u32;
    data[start..start + 4].copy_from_slice(&len.to_be_bytes());
    data[start + 4] = cmd;
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
#[path = "codec_tests.rs"]
mod tests;
