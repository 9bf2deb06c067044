//! [`MilterSession`]: one connection to one filter, for one SMTP session or (kept with
//! `SMFIC_QUIT_NC`) for several in a row.
//!
//! The SMTP session drives it event by event: `connect`, `helo`, then per transaction
//! `mail`, `rcpt`..., `data`, `message` (the header fields one by one, end of header,
//! the body in chunks of at most 65535 octets, end of message), and `abort` when a
//! transaction ends without a message; at the end `release` (keep the connection for
//! the next session, `reuse.rs`) or `quit`. Before each event go the macros of its
//! stage (only those the filter asked for, when it asked), in the same write as the
//! event (`wire.rs`).
//!
//! The filter's negotiated flags decide what is sent and what is waited for: an event
//! it asked not to see is not sent; an event it asked not to answer is sent and not
//! waited for (rspamd answers nothing before the end of the message: waiting would
//! stall until the timeout), and the message events it does not answer go out
//! together. `SMFIR_PROGRESS` restarts the event's timer, never past the phase
//! deadline the caller passes. `SMFIR_SKIP` during the body jumps to the end of the
//! message. Modifications are accepted only in reply to the end of the message
//! (`eom.rs`).
//!
//! Every failure (connect, timeout, EOF, garbage, negotiation) is a [`MilterError`];
//! after one the session is broken and every later event fails with
//! `MilterError::Closed`: the caller drops the filter for the rest of the SMTP session,
//! and the connection is never kept.

use std::time::{Duration, Instant};

use sloop_common::config::hooks::MilterHook;

use super::codec::{self, Command, Reply};
use super::conn::Conn;
use super::eom::{check_action, shutdown_reply, EomFold, EomStep};
use super::header::{split, value_for_filter};
use super::negotiate::{Event, MacroStage, Negotiated, SMFIF_QUARANTINE};
use super::reply_code::parse_reply_code;
use super::reuse::{after_unknown, goodbye, Goodbye, Rest, UNKNOWN_TEXT};
use super::wire::{Timer, Wire, FLUSH_AT};
use super::{ConnectInfo, Edit, Macros, MilterError, MilterReply};

/// The largest body chunk sent (libmilter's `MILTER_CHUNK_SIZE`).
pub const BODY_CHUNK: usize = 65535;

/// One filter connection.
#[derive(Debug)]
pub struct MilterSession {
    name: String,
    wire: Wire,
    negotiated: Negotiated,
    command_timeout: Duration,
    state: State,
    /// A quarantine asked for before the end of the message.
    quarantine: Option<String>,
    /// The filter answered the last body chunk with `SMFIR_SKIP`.
    skipped: bool,
    /// Where the filter stands, for QUIT_NC.
    rest: Rest,
    /// SMTP sessions this connection has served, the current one included.
    sessions: u32,
    /// `[[milter]] reuse`: the connection may be kept for the next session.
    reuse: bool,
}

/// What became of a connection at the end of an SMTP session ([`MilterSession::release`]).
#[derive(Debug)]
pub enum Released {
    /// Kept for the next session: the filter was told a new session follows.
    Kept(Box<MilterSession>),
    /// Closed (`SMFIC_QUIT`), or it was broken already.
    Closed,
    /// Keeping it failed (the filter did not take the unknown-command event or
    /// QUIT_NC as libmilter does); it is closed.
    Failed(MilterError),
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
            wire: Wire::new(conn),
            negotiated: Negotiated::before_negotiation(),
            command_timeout: hook.command_timeout,
            state: State::Open,
            quarantine: None,
            skipped: false,
            rest: Rest::Elsewhere,
            sessions: 1,
            reuse: hook.reuse,
        };
        let mut timer = Timer::since(started, budget, deadline);
        session.wire.queue(&Negotiated::offer());
        let reply = session.wire.read_reply("OPTNEG", &mut timer)?;
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

    /// SMTP sessions this connection has served, the current one included.
    pub fn sessions(&self) -> u32 {
        self.sessions
    }

    /// The number of `write(2)` calls so far (several packets go out in one).
    pub fn writes(&self) -> u64 {
        self.wire.writes()
    }

    /// True when the filter has sent nothing unasked and has not closed the
    /// connection.
    pub fn quiet(&self) -> bool {
        self.wire.quiet()
    }

    /// Makes a kept connection ready for a new SMTP session (the connect event comes
    /// next): false when it is not fit (the filter closed it or sent something
    /// unasked), and the caller drops it and connects again.
    pub fn resume(&mut self) -> bool {
        if self.state == State::Broken || !self.wire.quiet() {
            return false;
        }
        self.state = State::Open;
        self.quarantine = None;
        self.skipped = false;
        self.rest = Rest::Elsewhere;
        self.sessions += 1;
        true
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
        self.rest = Rest::Elsewhere;
        let end = deadline.min(Instant::now() + self.command_timeout);
        self.wire.queue(&Command::Abort);
        if let Err(e) = self.wire.flush("ABORT", end) {
            log::warn!("milter {}: {e}", self.name);
            self.state = State::Broken;
        }
    }

    /// Ends the SMTP session on this connection: keeps the connection for the next
    /// one when `reuse` allows (QUIT_NC, after an unknown-command event where
    /// libmilter needs one: `reuse.rs`), else says goodbye and closes it. Waits for
    /// the filter at most `command_timeout`, and never past `deadline`.
    pub fn release(mut self, deadline: Instant) -> Released {
        if self.state == State::Broken {
            return Released::Closed;
        }
        let end = deadline.min(Instant::now() + self.command_timeout);
        let plan = goodbye(
            self.reuse,
            self.negotiated.version,
            self.sessions,
            self.rest,
        );
        let keep = match plan {
            Goodbye::Quit => false,
            Goodbye::QuitNc => true,
            Goodbye::UnknownThenQuitNc => match self.unknown(end) {
                Ok(keep) => keep,
                Err(e) => return Released::Failed(e),
            },
        };
        if !keep {
            self.quit();
            return Released::Closed;
        }
        self.wire.queue(&Command::QuitNc);
        match self.wire.flush("QUIT_NC", end) {
            Ok(()) => Released::Kept(Box::new(self)),
            Err(e) => Released::Failed(e),
        }
    }

    /// Says goodbye (best effort) and closes the connection.
    pub fn quit(mut self) {
        if self.state != State::Broken {
            let end = Instant::now() + self.command_timeout.min(Duration::from_secs(1));
            self.wire.queue(&Command::Quit);
            // The connection closes either way; a filter that is gone needs no goodbye.
            let _ = self.wire.flush("QUIT", end);
        }
    }

    /// The unknown-command event before QUIT_NC: whether QUIT_NC may follow. Not
    /// answered (`SMFIP_NR_UNKN`): it goes out with QUIT_NC.
    fn unknown(&mut self, end: Instant) -> Result<bool, MilterError> {
        self.wire.queue(&Command::Unknown(UNKNOWN_TEXT));
        if !self.negotiated.replies(Event::Unknown) {
            return Ok(true);
        }
        let mut timer = Timer::new(end.saturating_duration_since(Instant::now()), end);
        loop {
            let reply = self.wire.read_reply("UNKNOWN", &mut timer)?;
            match after_unknown(&reply) {
                Some(keep) => return Ok(keep),
                None => timer.restart(),
            }
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
        stage: (MacroStage, u8),
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
        let result = self.exchange(event, stage, macros, command, &mut timer, true);
        match &result {
            Err(_) => self.state = State::Broken,
            Ok(MilterReply::Accept) => self.state = State::MessageAccepted,
            Ok(_) => {}
        }
        result
    }

    /// Queues the event's macros and the event; reads the reply when the filter
    /// answers the event. An unanswered event is written at once when `flush`, else
    /// it waits in the queue for the next event that is answered (or for
    /// [`FLUSH_AT`] octets).
    fn exchange(
        &mut self,
        event: Event,
        (stage, cmd): (MacroStage, u8),
        macros: &Macros,
        command: &Command<'_>,
        timer: &mut Timer,
        flush: bool,
    ) -> Result<MilterReply, MilterError> {
        if !self.negotiated.sends(event) {
            return Ok(MilterReply::Continue);
        }
        let name = event_name(event);
        self.rest = Rest::Elsewhere;
        let pairs = self.negotiated.macros_for(stage, macros);
        if !pairs.is_empty() {
            self.wire.queue(&Command::Macro { cmd, pairs });
        }
        self.wire.queue(command);
        if !self.negotiated.replies(event) {
            if flush || self.wire.queued() >= FLUSH_AT {
                self.wire.flush(name, timer.end())?;
            }
            return Ok(MilterReply::Continue);
        }
        loop {
            let reply = self.wire.read_reply(name, timer)?;
            if let Some(decision) = self.decision(reply, event, timer)? {
                return Ok(decision);
            }
            self.wire.expect_more();
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
                check_action(
                    self.negotiated.actions,
                    SMFIF_QUARANTINE,
                    "SMFIR_QUARANTINE",
                )?;
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
            match self.exchange(Event::Header, stage, &none, &command, &mut timer, false)? {
                MilterReply::Continue => {}
                other => return Ok((other, Vec::new())),
            }
        }
        let stage = (MacroStage::Eoh, codec::SMFIC_EOH);
        let mut timer = Timer::new(per_event, phase_deadline);
        match self.exchange(Event::Eoh, stage, macros, &Command::Eoh, &mut timer, false)? {
            MilterReply::Continue => {}
            other => return Ok((other, Vec::new())),
        }
        if let Some(done) = self.body(&message[parts.body_start..], per_event, phase_deadline)? {
            return Ok((done, Vec::new()));
        }
        let mut timer = Timer::new(per_event, phase_deadline);
        let pairs = self.negotiated.macros_for(MacroStage::Eom, macros);
        if !pairs.is_empty() {
            self.wire.queue(&Command::Macro {
                cmd: codec::SMFIC_BODYEOB,
                pairs,
            });
        }
        self.wire.queue(&Command::BodyEob);
        self.rest = Rest::Elsewhere;
        let mut fold = EomFold::new(&self.negotiated, self.quarantine.take());
        loop {
            let reply = self.wire.read_reply("EOM", &mut timer)?;
            match fold.take(reply)? {
                EomStep::More => self.wire.expect_more(),
                EomStep::Progress => {
                    timer.restart();
                    self.wire.expect_more();
                }
                EomStep::Done {
                    reply,
                    edits,
                    continued,
                } => {
                    if continued {
                        self.rest = Rest::EndOfMessage;
                    }
                    return Ok((reply, edits));
                }
            }
        }
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
            match self.exchange(Event::Body, stage, &none, &command, &mut timer, false)? {
                MilterReply::Continue if self.skipped => break,
                MilterReply::Continue => {}
                other => return Ok(Some(other)),
            }
        }
        Ok(None)
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
        Event::Unknown => "UNKNOWN",
    }
}
