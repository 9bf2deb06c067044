//! [`MilterSession`]: one connection to one filter for the length of one SMTP session.
//!
//! The SMTP session drives it event by event: `connect`, `helo`, then per transaction
//! `mail`, `rcpt`..., `data`, `message` (the header fields one by one, end of header,
//! the body in chunks of at most 65535 octets, end of message), and `abort` when a
//! transaction ends without a message; `quit` at the end. Before each event go the
//! macros of its stage (only those the filter asked for, when it asked).
//!
//! The filter's negotiated flags decide what is sent and what is waited for: an event
//! it asked not to see is not sent; an event it asked not to answer is sent and not
//! waited for (rspamd answers nothing before the end of the message: waiting would
//! stall until the timeout). `SMFIR_PROGRESS` restarts the event's timer, never past
//! the phase deadline the caller passes. `SMFIR_SKIP` during the body jumps to the end
//! of the message. Modifications are accepted only in reply to the end of the message.
//!
//! Every failure (connect, timeout, EOF, garbage, negotiation) is a [`MilterError`];
//! after one the session is broken and every later event fails with
//! `MilterError::Closed`: the caller drops the filter for the rest of the SMTP session.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use sloop_common::config::hooks::MilterHook;

use super::codec::{self, encode_command, read_packet, Command, Reply};
use super::conn::Conn;
use super::header::{split, value_for_filter};
use super::negotiate::{
    Event, MacroStage, Negotiated, SMFIF_ADDHDRS, SMFIF_ADDRCPT, SMFIF_ADDRCPT_PAR, SMFIF_CHGBODY,
    SMFIF_CHGFROM, SMFIF_CHGHDRS, SMFIF_DELRCPT, SMFIF_QUARANTINE,
};
use super::reply_code::parse_reply_code;
use super::{os_reason, ConnectInfo, Edit, Macros, MilterError, MilterReply};

/// The largest body chunk sent (libmilter's `MILTER_CHUNK_SIZE`).
pub const BODY_CHUNK: usize = 65535;

/// The most octets of modifications accepted for one message (header values, body
/// replacement, addresses), so a runaway filter cannot exhaust memory.
pub const MAX_EDIT_OCTETS: usize = 64 << 20;

/// One filter connection for one SMTP session.
#[derive(Debug)]
pub struct MilterSession {
    name: String,
    conn: Conn,
    buf: Vec<u8>,
    negotiated: Negotiated,
    command_timeout: Duration,
    state: State,
    /// A quarantine asked for before the end of the message.
    quarantine: Option<String>,
    /// The filter answered the last body chunk with `SMFIR_SKIP`.
    skipped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Events are sent.
    Open,
    /// The filter accepted the connection: no more events until quit.
    SessionAccepted,
    /// The filter accepted the message: no more events until the next transaction.
    MessageAccepted,
    /// An error happened: nothing more is sent.
    Broken,
}

impl MilterSession {
    /// Connects to the filter and negotiates, within `hook.connect_timeout` and the
    /// deadline.
    pub fn open(hook: &MilterHook, deadline: Instant) -> Result<MilterSession, MilterError> {
        let started = Instant::now();
        let budget = hook
            .connect_timeout
            .min(deadline.saturating_duration_since(started));
        let conn = Conn::connect(&hook.socket, budget)?;
        let mut session = MilterSession {
            name: hook.name.clone(),
            conn,
            buf: Vec::new(),
            negotiated: Negotiated::before_negotiation(),
            command_timeout: hook.command_timeout,
            state: State::Open,
            quarantine: None,
            skipped: false,
        };
        let mut timer = Timer {
            length: budget,
            started,
            deadline,
        };
        session.send(&Negotiated::offer(), "OPTNEG", timer.end())?;
        let reply = session.read_reply("OPTNEG", &mut timer)?;
        session.negotiated = Negotiated::accept(&reply)?;
        Ok(session)
    }

    /// The filter's name (for log lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The connect event.
    pub fn connect(
        &mut self,
        info: &ConnectInfo,
        macros: &Macros,
        deadline: Instant,
    ) -> Result<MilterReply, MilterError> {
        let command = Command::Connect {
            hostname: &info.hostname,
            addr: info.addr.map(|a| (a, info.port)),
        };
        let stage = (MacroStage::Connect, codec::SMFIC_CONNECT);
        self.session_event(Event::Connect, stage, macros, &command, deadline)
    }

    /// The HELO/EHLO event.
    pub fn helo(
        &mut self,
        name: &str,
        macros: &Macros,
        deadline: Instant,
    ) -> Result<MilterReply, MilterError> {
        let stage = (MacroStage::Helo, codec::SMFIC_HELO);
        self.session_event(Event::Helo, stage, macros, &Command::Helo(name), deadline)
    }

    /// `MAIL FROM`: `args[0]` is the sender in angle brackets, then the ESMTP
    /// parameters. Starts a new transaction.
    pub fn mail(
        &mut self,
        args: &[String],
        macros: &Macros,
        deadline: Instant,
    ) -> Result<MilterReply, MilterError> {
        self.new_transaction();
        let stage = (MacroStage::Mail, codec::SMFIC_MAIL);
        self.message_event(Event::Mail, stage, macros, &Command::Mail(args), deadline)
    }

    /// `RCPT TO`: `args[0]` is the recipient in angle brackets, then the parameters.
    pub fn rcpt(
        &mut self,
        args: &[String],
        macros: &Macros,
        deadline: Instant,
    ) -> Result<MilterReply, MilterError> {
        let stage = (MacroStage::Rcpt, codec::SMFIC_RCPT);
        self.message_event(Event::Rcpt, stage, macros, &Command::Rcpt(args), deadline)
    }

    /// The DATA command (not sent when the filter asked not to see it).
    pub fn data(&mut self, macros: &Macros, deadline: Instant) -> Result<MilterReply, MilterError> {
        let stage = (MacroStage::Data, codec::SMFIC_DATA);
        self.message_event(Event::Data, stage, macros, &Command::Data, deadline)
    }

    /// The message (header, empty line, body, as received): header fields, end of
    /// header, body chunks, end of message; then the modifications and the final
    /// decision. Each event has `per_event` (restarted by progress reports), never
    /// past `phase_deadline`. Edits come only with `Continue`, `Accept` or
    /// `Quarantine`. A decision before the end of the message (a reject at a header,
    /// say) leaves the filter mid-transaction: the caller ends it with `abort`, as for
    /// any transaction that does not end in a committed message.
    pub fn message(
        &mut self,
        message: &[u8],
        macros: &Macros,
        per_event: Duration,
        phase_deadline: Instant,
    ) -> Result<(MilterReply, Vec<Edit>), MilterError> {
        let result = self.message_inner(message, macros, per_event, phase_deadline);
        if result.is_err() {
            self.state = State::Broken;
        } else if self.state == State::MessageAccepted {
            self.state = State::Open;
        }
        self.quarantine = None;
        result
    }

    /// Tells the filter the transaction ended without a message (RSET, a rejected
    /// MAIL, a lost client). No reply is read. A failure breaks the session and is
    /// logged here, since there is nothing for the caller to decide.
    pub fn abort(&mut self, deadline: Instant) {
        if self.state == State::Broken {
            return;
        }
        self.new_transaction();
        let end = deadline.min(Instant::now() + self.command_timeout);
        if let Err(e) = self.send(&Command::Abort, "ABORT", end) {
            log::warn!("milter {}: {e}", self.name);
            self.state = State::Broken;
        }
    }

    /// Says goodbye (best effort) and closes the connection.
    pub fn quit(mut self) {
        if self.state != State::Broken {
            let end = Instant::now() + self.command_timeout.min(Duration::from_secs(1));
            // The connection closes either way; a filter that is gone needs no goodbye.
            let _ = self.send(&Command::Quit, "QUIT", end);
        }
    }

    fn new_transaction(&mut self) {
        if self.state == State::MessageAccepted {
            self.state = State::Open;
        }
        self.quarantine = None;
    }

    /// Connect and HELO: an accept there covers the whole SMTP session.
    fn session_event(
        &mut self,
        event: Event,
        stage: (MacroStage, u8),
        macros: &Macros,
        command: &Command<'_>,
        deadline: Instant,
    ) -> Result<MilterReply, MilterError> {
        let reply = self.message_event(event, stage, macros, command, deadline)?;
        match reply {
            MilterReply::Accept => self.state = State::SessionAccepted,
            MilterReply::Discard => {
                log::warn!(
                    "milter {}: DISCARD action is not allowed for connect or helo",
                    self.name
                );
                return Ok(MilterReply::Continue);
            }
            _ => {}
        }
        Ok(reply)
    }

    /// One event under the command timeout: macros, the command, the reply if any.
    fn message_event(
        &mut self,
        event: Event,
        (stage, cmd): (MacroStage, u8),
        macros: &Macros,
        command: &Command<'_>,
        deadline: Instant,
    ) -> Result<MilterReply, MilterError> {
        match self.state {
            State::Broken => return Err(MilterError::Closed),
            State::SessionAccepted | State::MessageAccepted => return Ok(MilterReply::Continue),
            State::Open => {}
        }
        let mut timer = Timer::new(self.command_timeout, deadline);
        let result = self.exchange(event, (stage, cmd), macros, command, &mut timer);
        match &result {
            Err(_) => self.state = State::Broken,
            Ok(MilterReply::Accept) => self.state = State::MessageAccepted,
            Ok(_) => {}
        }
        result
    }

    fn exchange(
        &mut self,
        event: Event,
        (stage, cmd): (MacroStage, u8),
        macros: &Macros,
        command: &Command<'_>,
        timer: &mut Timer,
    ) -> Result<MilterReply, MilterError> {
        if !self.negotiated.sends(event) {
            return Ok(MilterReply::Continue);
        }
        let name = event_name(event);
        self.send_macros(stage, cmd, macros, name, timer.end())?;
        self.send(command, name, timer.end())?;
        if !self.negotiated.replies(event) {
            return Ok(MilterReply::Continue);
        }
        loop {
            let reply = self.read_reply(name, timer)?;
            if let Some(decision) = self.decision(reply, event, timer)? {
                return Ok(decision);
            }
        }
    }

    /// A reply to an event before the end of the message: `None` to read on.
    fn decision(
        &mut self,
        reply: Reply,
        event: Event,
        timer: &mut Timer,
    ) -> Result<Option<MilterReply>, MilterError> {
        Ok(Some(match reply {
            Reply::Continue => MilterReply::Continue,
            Reply::Accept => MilterReply::Accept,
            Reply::Reject => MilterReply::Reject,
            Reply::Tempfail => MilterReply::Tempfail,
            Reply::Discard => MilterReply::Discard,
            Reply::Shutdown => shutdown_reply(),
            Reply::ReplyCode(text) => parse_reply_code(&text)?,
            Reply::Progress => {
                timer.restart();
                return Ok(None);
            }
            Reply::Quarantine(reason) => {
                self.check_action(SMFIF_QUARANTINE, "SMFIR_QUARANTINE")?;
                self.quarantine = Some(reason);
                return Ok(None);
            }
            Reply::Skip if event == Event::Body && self.negotiated.may_skip() => {
                // The caller stops sending body chunks.
                self.skipped = true;
                MilterReply::Continue
            }
            other => {
                return Err(MilterError::Protocol(format!(
                    "unexpected {} after {}",
                    other.name(),
                    event_name(event)
                )))
            }
        }))
    }

    fn message_inner(
        &mut self,
        message: &[u8],
        macros: &Macros,
        per_event: Duration,
        phase_deadline: Instant,
    ) -> Result<(MilterReply, Vec<Edit>), MilterError> {
        match self.state {
            State::Broken => return Err(MilterError::Closed),
            State::SessionAccepted | State::MessageAccepted => {
                return Ok(match self.quarantine.take() {
                    Some(reason) => (
                        MilterReply::Quarantine(reason.clone()),
                        vec![Edit::Quarantine(reason)],
                    ),
                    None => (MilterReply::Accept, Vec::new()),
                });
            }
            State::Open => {}
        }
        let parts = split(message);
        let leading_space = self.negotiated.leading_space();
        let none = Macros::new();
        for field in &parts.fields {
            let name = String::from_utf8_lossy(field.name(message));
            let value = value_for_filter(field.raw_value(message), leading_space);
            let command = Command::Header {
                name: &name,
                value: &value,
            };
            let stage = (MacroStage::Eoh, codec::SMFIC_HEADER);
            let mut timer = Timer::new(per_event, phase_deadline);
            match self.exchange(Event::Header, stage, &none, &command, &mut timer)? {
                MilterReply::Continue => {}
                other => return Ok((other, Vec::new())),
            }
        }
        let stage = (MacroStage::Eoh, codec::SMFIC_EOH);
        let mut timer = Timer::new(per_event, phase_deadline);
        match self.exchange(Event::Eoh, stage, macros, &Command::Eoh, &mut timer)? {
            MilterReply::Continue => {}
            other => return Ok((other, Vec::new())),
        }
        if let Some(done) = self.body(&message[parts.body_start..], per_event, phase_deadline)? {
            return Ok((done, Vec::new()));
        }
        let mut timer = Timer::new(per_event, phase_deadline);
        self.send_macros(
            MacroStage::Eom,
            codec::SMFIC_BODYEOB,
            macros,
            "EOM",
            timer.end(),
        )?;
        self.send(&Command::BodyEob, "EOM", timer.end())?;
        self.end_of_message(&mut timer)
    }

    /// The body chunks: `Some(decision)` when the filter decided before the end.
    fn body(
        &mut self,
        body: &[u8],
        per_event: Duration,
        phase_deadline: Instant,
    ) -> Result<Option<MilterReply>, MilterError> {
        let none = Macros::new();
        let stage = (MacroStage::Eom, codec::SMFIC_BODY);
        for chunk in body.chunks(BODY_CHUNK) {
            let mut timer = Timer::new(per_event, phase_deadline);
            let command = Command::Body(chunk);
            self.skipped = false;
            match self.exchange(Event::Body, stage, &none, &command, &mut timer)? {
                MilterReply::Continue if self.skipped => break,
                MilterReply::Continue => {}
                other => return Ok(Some(other)),
            }
        }
        Ok(None)
    }

    /// Reads modifications until the final reply to the end of the message.
    fn end_of_message(
        &mut self,
        timer: &mut Timer,
    ) -> Result<(MilterReply, Vec<Edit>), MilterError> {
        let space = if self.negotiated.leading_space() {
            ""
        } else {
            " "
        };
        let mut edits: Vec<Edit> = Vec::new();
        let mut octets = 0usize;
        loop {
            let reply = self.read_reply("EOM", timer)?;
            let name = reply.name();
            let edit = match reply {
                Reply::AddHeader { name: n, value } => {
                    self.check_action(SMFIF_ADDHDRS, name)?;
                    Edit::AddHeader {
                        name: n,
                        value: format!("{space}{value}"),
                    }
                }
                Reply::InsHeader {
                    index,
                    name: n,
                    value,
                } => {
                    self.check_action(SMFIF_ADDHDRS, name)?;
                    Edit::InsertHeader {
                        index,
                        name: n,
                        value: format!("{space}{value}"),
                    }
                }
                Reply::ChgHeader {
                    index,
                    name: n,
                    value,
                } => {
                    self.check_action(SMFIF_CHGHDRS, name)?;
                    if n.is_empty() {
                        return Err(MilterError::Protocol("null change header name".into()));
                    }
                    let value = if value.is_empty() {
                        value
                    } else {
                        format!("{space}{value}")
                    };
                    Edit::ChangeHeader {
                        index,
                        name: n,
                        value,
                    }
                }
                Reply::ReplBody(chunk) => {
                    self.check_action(SMFIF_CHGBODY, name)?;
                    octets += chunk.len();
                    check_octets(octets)?;
                    // All the chunks make one replacement, where the first one was.
                    if let Some(Edit::ReplaceBody(body)) =
                        edits.iter_mut().find(|e| matches!(e, Edit::ReplaceBody(_)))
                    {
                        body.extend_from_slice(&chunk);
                        continue;
                    }
                    Edit::ReplaceBody(chunk)
                }
                Reply::AddRcpt(rcpt) => {
                    self.check_action(SMFIF_ADDRCPT, name)?;
                    Edit::AddRcpt { rcpt, args: None }
                }
                Reply::AddRcptPar { rcpt, args } => {
                    self.check_action(SMFIF_ADDRCPT_PAR, name)?;
                    Edit::AddRcpt { rcpt, args }
                }
                Reply::DelRcpt(rcpt) => {
                    self.check_action(SMFIF_DELRCPT, name)?;
                    Edit::DelRcpt(rcpt)
                }
                Reply::ChgFrom { sender, args } => {
                    self.check_action(SMFIF_CHGFROM, name)?;
                    Edit::ChangeFrom { sender, args }
                }
                Reply::Quarantine(reason) => {
                    self.check_action(SMFIF_QUARANTINE, name)?;
                    self.quarantine = Some(reason.clone());
                    Edit::Quarantine(reason)
                }
                Reply::Progress => {
                    timer.restart();
                    continue;
                }
                Reply::Continue | Reply::Accept => {
                    let reply = match self.quarantine.take() {
                        Some(reason) => {
                            if !edits.iter().any(|e| matches!(e, Edit::Quarantine(_))) {
                                edits.push(Edit::Quarantine(reason.clone()));
                            }
                            MilterReply::Quarantine(reason)
                        }
                        None if name == "SMFIR_ACCEPT" => MilterReply::Accept,
                        None => MilterReply::Continue,
                    };
                    return Ok((reply, edits));
                }
                Reply::Reject => return Ok((MilterReply::Reject, Vec::new())),
                Reply::Tempfail => return Ok((MilterReply::Tempfail, Vec::new())),
                Reply::Discard => return Ok((MilterReply::Discard, Vec::new())),
                Reply::Shutdown => return Ok((shutdown_reply(), Vec::new())),
                Reply::ReplyCode(text) => return Ok((parse_reply_code(&text)?, Vec::new())),
                other => {
                    return Err(MilterError::Protocol(format!(
                        "unexpected {} after EOM",
                        other.name()
                    )))
                }
            };
            octets += edit_octets(&edit);
            check_octets(octets)?;
            edits.push(edit);
        }
    }

    fn check_action(&self, action: u32, reply: &str) -> Result<(), MilterError> {
        if self.negotiated.actions & action == 0 {
            return Err(MilterError::Protocol(format!(
                "{reply} without the action negotiated"
            )));
        }
        Ok(())
    }

    fn send_macros(
        &mut self,
        stage: MacroStage,
        cmd: u8,
        macros: &Macros,
        event: &'static str,
        end: Instant,
    ) -> Result<(), MilterError> {
        let pairs = self.negotiated.macros_for(stage, macros);
        if pairs.is_empty() {
            return Ok(());
        }
        self.send(&Command::Macro { cmd, pairs }, event, end)
    }

    fn send(
        &mut self,
        command: &Command<'_>,
        event: &'static str,
        end: Instant,
    ) -> Result<(), MilterError> {
        let bytes = encode_command(command);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MilterError::Timeout { ms: 0, event });
        }
        let io_err = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => MilterError::Timeout {
                ms: left.as_millis(),
                event,
            },
            _ => MilterError::Io {
                op: "write",
                event,
                reason: os_reason(&e),
            },
        };
        self.conn.set_write_timeout(left).map_err(io_err)?;
        self.conn.write_all(&bytes).map_err(io_err)
    }

    /// Reads and decodes one packet before the timer runs out.
    fn read_reply(&mut self, event: &'static str, timer: &mut Timer) -> Result<Reply, MilterError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((packet, used)) = read_packet(&self.buf)? {
                self.buf.drain(..used);
                return Reply::decode(&packet);
            }
            let left = timer.left();
            if left.is_zero() {
                return Err(MilterError::Timeout {
                    ms: timer.length().as_millis(),
                    event,
                });
            }
            let io_err = |e: io::Error| MilterError::Io {
                op: "read",
                event,
                reason: os_reason(&e),
            };
            self.conn.set_read_timeout(left).map_err(io_err)?;
            match self.conn.read(&mut chunk) {
                Ok(0) => return Err(MilterError::Eof { event }),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

/// The timer of one event: `length` from its start or the last progress report,
/// never past the phase deadline.
#[derive(Debug)]
struct Timer {
    length: Duration,
    started: Instant,
    deadline: Instant,
}

impl Timer {
    fn new(length: Duration, deadline: Instant) -> Timer {
        Timer {
            length,
            started: Instant::now(),
            deadline,
        }
    }

    fn end(&self) -> Instant {
        (self.started + self.length).min(self.deadline)
    }

    fn left(&self) -> Duration {
        self.end().saturating_duration_since(Instant::now())
    }

    /// The time this event had: the timer's length, or less when the deadline cut it.
    fn length(&self) -> Duration {
        self.length
            .min(self.deadline.saturating_duration_since(self.started))
    }

    fn restart(&mut self) {
        self.started = Instant::now();
    }
}

fn event_name(event: Event) -> &'static str {
    match event {
        Event::Connect => "CONNECT",
        Event::Helo => "HELO",
        Event::Mail => "MAIL",
        Event::Rcpt => "RCPT",
        Event::Data => "DATA",
        Event::Header => "HEADER",
        Event::Eoh => "EOH",
        Event::Body => "BODY",
    }
}

fn shutdown_reply() -> MilterReply {
    MilterReply::Code {
        code: 421,
        enhanced: Some((4, 7, 0)),
        text: "Server closing connection".into(),
    }
}

fn edit_octets(edit: &Edit) -> usize {
    match edit {
        Edit::AddHeader { name, value }
        | Edit::InsertHeader { name, value, .. }
        | Edit::ChangeHeader { name, value, .. } => name.len() + value.len(),
        Edit::ReplaceBody(b) => b.len(),
        Edit::AddRcpt { rcpt, args } | Edit::ChangeFrom { sender: rcpt, args } => {
            rcpt.len() + args.as_ref().map_or(0, String::len)
        }
        Edit::DelRcpt(s) | Edit::Quarantine(s) => s.len(),
    }
}

fn check_octets(octets: usize) -> Result<(), MilterError> {
    if octets > MAX_EDIT_OCTETS {
        return Err(MilterError::Protocol(format!(
            "modifications exceed {MAX_EDIT_OCTETS} octets"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_restarts_but_never_passes_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut t = Timer::new(Duration::from_secs(60), deadline);
        assert!(t.left() <= Duration::from_secs(2));
        t.restart();
        assert!(t.end() <= deadline);
        let t = Timer::new(Duration::from_millis(100), deadline);
        assert!(t.left() <= Duration::from_millis(100));
    }
}
