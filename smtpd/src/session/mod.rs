//! The SMTP session as a state machine with no I/O (STYLE.md point 6).
//!
//! The socket layer (`conn.rs`) feeds bytes with [`Session::input`] and asks for the
//! next thing to do with [`Session::step`]: send a reply, run the queue program (then
//! report back with [`Session::queued`]), read more, or close. Replies are produced in
//! command order, one complete reply per command line (docs/invariants.md G2), whether or not the
//! client negotiated PIPELINING; the socket layer flushes them whenever it needs input.
//!
//! States hold only what is valid in them: no transaction exists before MAIL, no
//! recipient list before RCPT, a DATA or BDAT receiver only while message octets are
//! expected. Commands are handled in `commands.rs`, the transaction and its parameters
//! in `txn.rs`, the recipient policy in `policy.rs`. Peer garbage is answered, never a
//! panic; the worker still catches panics per session (G3).

mod commands;
pub mod hooks;
pub mod policy;
mod secure;
pub mod txn;

use crate::auth::sasl::{Credentials, Pending};
use crate::bdat::BdatReceiver;
use crate::data::{count_received, DataLimits, DataReceiver};
use crate::parser::{self, Input, Line, LineSplitter, MAX_COMMAND_LINE};
use crate::reply::{Enhanced, Reply};
use crate::tls::TlsInfo;
pub use hooks::{HookCall, HookStages};
pub use policy::Policy;
pub use secure::Identity;
use sloop_common::config::hooks::HookStage;
use sloop_common::config::ListenRole;
use std::collections::VecDeque;
use std::net::IpAddr;
pub use txn::{QueueJob, Txn};

/// The connecting client.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: IpAddr,
    /// Reverse DNS name, or `unknown`.
    pub name: String,
}

impl Client {
    /// `name[addr]` as Postfix logs it.
    pub fn display(&self) -> String {
        format!("{}[{}]", self.name, self.addr)
    }
}

/// How the connect phase ended (decided by `connect.rs` before the session starts).
#[derive(Debug, Clone)]
pub enum Opening {
    /// Send the greeting.
    Greet,
    /// A `554` greeting; every command but QUIT then gets `503 5.5.1` (RFC 5321 §3.1).
    Refuse(Reply),
    /// A `421` greeting and close.
    Close(Reply),
}

/// What the socket layer must do next.
#[derive(Debug)]
pub enum Step {
    Reply(Reply),
    /// Run the queue program and report with [`Session::queued`].
    Queue(QueueJob),
    /// Flush replies and read more input (with the deadline [`Session::phase`] names).
    NeedInput,
    /// Flush replies and close the connection.
    Close,
    /// Flush replies (the `220` to STARTTLS), run the TLS handshake and report with
    /// [`Session::tls_started`] or [`Session::tls_failed`].
    StartTls,
    /// Check the credentials and report with [`Session::authenticated`].
    Authenticate(Credentials),
    /// Run the filter hooks of a stage and report with [`Session::hooked`] (only when
    /// hooks are configured for the stage: see `hooks.rs`).
    Hook(HookCall),
}

/// What the queue program said.
#[derive(Debug, Clone)]
pub enum QueueOutcome {
    Committed,
    /// Permanent refusal (exit 11-40): `554 5.3.0`.
    Permanent(String),
    /// Anything else: `451 4.3.0`.
    Temporary(String),
}

/// Which deadline applies while waiting for input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Command,
    Data,
}

/// What the client said in HELO/EHLO.
#[derive(Debug, Clone)]
struct Helo {
    name: String,
    esmtp: bool,
}

/// A BDAT chunk being read: `remaining` octets still belong to it.
#[derive(Debug)]
struct Chunk {
    size: u64,
    remaining: u64,
    last: bool,
    target: ChunkTarget,
}

/// Where a chunk's octets go.
#[derive(Debug)]
enum ChunkTarget {
    /// Into the message, checked as DATA is; after an error the octets are dropped
    /// and the error is answered at the LAST chunk.
    Collect { txn: Txn, rx: BdatReceiver },
    /// Nowhere: the BDAT was refused, but its octets are still read (RFC 3030 §2).
    Refused(Reply),
}

#[derive(Debug)]
enum State {
    /// The greeting was 554: only QUIT is served.
    Refused,
    /// Between transactions (before or after HELO/EHLO).
    Ready,
    /// After MAIL.
    Mail(Txn),
    /// After at least one accepted RCPT.
    Rcpt(Txn),
    /// After a non-LAST BDAT chunk: only BDAT, RSET, NOOP, QUIT are useful.
    Chunking(Txn, BdatReceiver),
    /// Reading DATA octets.
    Data(Txn, DataReceiver),
    /// Reading a BDAT chunk's octets.
    Bdat(Chunk),
    /// The queue program runs.
    Queueing,
    /// An AUTH exchange waits for the client's next response line.
    Sasl(Pending),
    /// The credentials are being checked.
    Authenticating,
    /// The filter hooks of a stage run; what to do after them waits here.
    Hooking(hooks::Pending),
    Closed,
}

/// Per-verb counters for the disconnect log line (`rcpt=1/2` when some failed).
#[derive(Debug, Default)]
struct Counters {
    verbs: Vec<(&'static str, u32, u32)>,
}

impl Counters {
    fn count(&mut self, verb: &'static str, ok: bool) {
        match self.verbs.iter_mut().find(|(v, _, _)| *v == verb) {
            Some(e) => {
                e.1 += u32::from(ok);
                e.2 += 1;
            }
            None => self.verbs.push((verb, u32::from(ok), 1)),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let (mut ok, mut all) = (0, 0);
        for (v, o, a) in &self.verbs {
            ok += o;
            all += a;
            out.push_str(&fmt_count(v, *o, *a));
            out.push(' ');
        }
        out.push_str(&fmt_count("commands", ok, all));
        out
    }
}

fn fmt_count(v: &str, ok: u32, all: u32) -> String {
    if ok == all {
        format!("{v}={all}")
    } else {
        format!("{v}={ok}/{all}")
    }
}

/// One SMTP session.
pub struct Session<'a> {
    policy: &'a Policy,
    client: Client,
    input: Input,
    splitter: LineSplitter,
    out: VecDeque<Step>,
    state: State,
    helo: Option<Helo>,
    errors: u32,
    /// NOOP, RSET and VRFY since the last accepted message (`smtpd.junk_command_limit`).
    junk: u32,
    counters: Counters,
    /// The last command verb, for `lost connection after X` log lines.
    last_verb: &'static str,
    now: fn() -> u64,
    /// The listener's role and whether it can offer STARTTLS.
    role: ListenRole,
    tls_available: bool,
    /// Set once TLS is up.
    tls: Option<TlsInfo>,
    /// Set once AUTH succeeded.
    auth: Option<Identity>,
    /// The stages at which filter hooks run (none by default).
    hooks: HookStages,
    hook_listener: sloop_common::config::hooks::HookListener,
    /// What hooks at connect and HELO asked of every message of the session.
    session_effects: sloop_hooks::engine::Effects,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.client)
            .field("state", &self.state)
            .finish()
    }
}

impl<'a> Session<'a> {
    /// Starts a session; the first step is the greeting (or the refusal).
    pub fn start(policy: &'a Policy, client: Client, opening: Opening) -> Session<'a> {
        let mut s = Session {
            policy,
            client,
            input: Input::default(),
            splitter: LineSplitter::default(),
            out: VecDeque::new(),
            state: State::Ready,
            helo: None,
            errors: 0,
            junk: 0,
            counters: Counters::default(),
            last_verb: "CONNECT",
            now: unix_now,
            role: ListenRole::Smtp,
            tls_available: false,
            tls: None,
            auth: None,
            hooks: HookStages::NONE,
            hook_listener: sloop_common::config::hooks::HookListener::Smtpd,
            session_effects: Default::default(),
        };
        match opening {
            Opening::Greet => {
                let greeting = policy.cfg.smtpd.greeting.clone();
                s.push(Reply::bare(220, vec![greeting]));
            }
            Opening::Refuse(r) => {
                s.push(remap_opening(r, 5));
                s.state = State::Refused;
            }
            Opening::Close(r) => {
                s.push(remap_opening(r, 4));
                s.close();
            }
        }
        s
    }

    /// True when input read from the client is still waiting to be handled.
    pub fn has_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Appends octets read from the client.
    pub fn input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
    }

    /// The next thing to do.
    pub fn step(&mut self) -> Step {
        loop {
            if let Some(s) = self.out.pop_front() {
                return s;
            }
            if !self.advance() {
                return match self.state {
                    State::Closed => Step::Close,
                    _ => Step::NeedInput,
                };
            }
        }
    }

    /// Which input deadline applies now.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Data(..) | State::Bdat(_) => Phase::Data,
            _ => Phase::Command,
        }
    }

    /// The client closed its side.
    pub fn eof(&mut self) {
        if !matches!(self.state, State::Closed) {
            log::info!(
                "lost connection after {} from {}",
                self.last_verb,
                self.client.display()
            );
            self.close();
        }
    }

    /// A read deadline passed.
    pub fn timeout(&mut self) {
        log::info!(
            "timeout after {} from {}",
            self.last_verb,
            self.client.display()
        );
        let host = &self.policy.cfg.server.hostname;
        self.push(Reply::new(
            421,
            (4, 4, 2),
            format!("{host} Error: timeout exceeded"),
        ));
        self.close();
    }

    /// A command did not come within the short budget of an overloaded pool.
    pub fn overload_timeout(&mut self) {
        log::info!(
            "timeout after {} from {} (overload: smtpd.overload_idle_timeout)",
            self.last_verb,
            self.client.display()
        );
        let host = &self.policy.cfg.server.hostname;
        self.push(Reply::new(
            421,
            (4, 4, 2),
            format!("{host} Timeout, closing connection"),
        ));
        self.close();
    }

    /// The queue program's verdict for the job last returned by [`step`](Self::step).
    pub fn queued(&mut self, id: &str, outcome: QueueOutcome) {
        let reply = match outcome {
            QueueOutcome::Committed => {
                self.junk = 0;
                Reply::new(250, (2, 0, 0), format!("Ok: queued as {id}"))
            }
            QueueOutcome::Permanent(why) => {
                log::warn!("{id}: queueing refused the message: {why}");
                Reply::new(554, (5, 3, 0), "Error: message refused by the queue")
            }
            QueueOutcome::Temporary(why) => {
                log::warn!("{id}: queueing failed: {why}");
                Reply::new(451, (4, 3, 0), "Error: queue file write error")
            }
        };
        if matches!(self.state, State::Queueing) {
            self.state = State::Ready;
        }
        self.answer(reply);
    }

    /// The client as the connect phase named it.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The `disconnect from ...` log line's text.
    pub fn disconnect_line(&self) -> String {
        format!(
            "disconnect from {} {}",
            self.client.display(),
            self.counters.render()
        )
    }

    /// Makes progress on buffered input; false when nothing more can be done now.
    fn advance(&mut self) -> bool {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Closed => false,
            State::Queueing => {
                self.state = State::Queueing;
                false
            }
            State::Authenticating => {
                self.state = State::Authenticating;
                false
            }
            State::Hooking(p) => {
                self.state = State::Hooking(p);
                false
            }
            State::Sasl(pending) => self.advance_sasl(pending),
            State::Data(txn, rx) => self.advance_data(txn, rx),
            State::Bdat(chunk) => self.advance_bdat(chunk),
            other => {
                self.state = other;
                self.advance_command()
            }
        }
    }

    fn advance_command(&mut self) -> bool {
        // An AUTH line carries an initial response: RFC 4954 §4 allows 12288 octets.
        let limit = match self.input.bytes().get(..5) {
            Some(p) if p.eq_ignore_ascii_case(b"AUTH ") => crate::auth::sasl::MAX_SASL_LINE,
            _ => MAX_COMMAND_LINE,
        };
        let Some(line) = self.splitter.take_line(&mut self.input, limit) else {
            return false;
        };
        match line {
            Line::TooLong => {
                self.last_verb = "UNKNOWN";
                self.counters.count("unknown", false);
                self.answer(Reply::new(500, (5, 5, 2), "Error: command line too long"));
            }
            Line::Complete(bytes) => {
                let cmd = parser::parse(&bytes);
                self.dispatch(cmd);
            }
            Line::BareLf(bytes) if self.data_limits().normalize_bare_newlines => {
                let cmd = parser::parse(&bytes);
                self.dispatch(cmd);
            }
            Line::BareLf(_) => self.bare_lf_command(),
        }
        true
    }

    /// A command line ended in a bare LF: refused as bare LF in DATA is, unless
    /// `smtpd.bare_newline = "normalize"`.
    fn bare_lf_command(&mut self) {
        self.last_verb = "UNKNOWN";
        self.counters.count("unknown", false);
        log::info!(
            "reject: bare <LF> in a command from {}",
            self.client.display()
        );
        self.answer(Reply::new(500, (5, 5, 2), "Error: bare <LF> received"));
    }

    fn advance_data(&mut self, txn: Txn, mut rx: DataReceiver) -> bool {
        if self.input.is_empty() {
            self.state = State::Data(txn, rx);
            return false;
        }
        let (used, done) = rx.feed(self.input.bytes());
        self.input.consume(used);
        if !done {
            self.state = State::Data(txn, rx);
            return true;
        }
        let limits = *rx.limits();
        match rx.finish() {
            Ok(body) => self.end_of_message(txn, body, "data"),
            Err(e) => {
                self.counters.count("data", false);
                self.reject_message(&txn, e.reply(&limits));
            }
        }
        true
    }

    fn advance_bdat(&mut self, mut chunk: Chunk) -> bool {
        let take = (chunk.remaining.min(self.input.len() as u64)) as usize;
        if take == 0 && chunk.remaining > 0 {
            self.state = State::Bdat(chunk);
            return false;
        }
        if let ChunkTarget::Collect { rx, .. } = &mut chunk.target {
            rx.feed(&self.input.bytes()[..take]);
        }
        self.input.consume(take);
        chunk.remaining -= take as u64;
        if chunk.remaining > 0 {
            self.state = State::Bdat(chunk);
        } else {
            self.end_of_chunk(chunk);
        }
        true
    }

    fn end_of_chunk(&mut self, chunk: Chunk) {
        let (txn, rx) = match chunk.target {
            ChunkTarget::Refused(r) => {
                self.counters.count("bdat", false);
                self.state = State::Ready;
                return self.answer(r);
            }
            ChunkTarget::Collect { txn, rx } => (txn, rx),
        };
        if !chunk.last {
            self.counters.count("bdat", true);
            let n = chunk.size;
            self.state = State::Chunking(txn, rx);
            return self.push(Reply::new(
                250,
                (2, 0, 0),
                format!("Ok: {n} octets received"),
            ));
        }
        let limits = *rx.limits();
        match rx.finish() {
            Ok(body) => self.end_of_message(txn, body, "bdat"),
            Err(e) => {
                self.counters.count("bdat", false);
                self.reject_message(&txn, e.reply(&limits));
            }
        }
    }

    /// A complete message: loop check, then the end-of-message hooks (if any), then
    /// hand it to the queue program.
    fn end_of_message(&mut self, mut txn: Txn, body: Vec<u8>, verb: &'static str) {
        let max = self.policy.cfg.smtpd.max_received_headers;
        if count_received(&body) >= max {
            self.counters.count(verb, false);
            let r = Reply::new(
                554,
                (5, 4, 6),
                "Error: too many Received headers: mail loop",
            );
            self.reject_message(&txn, r);
            return;
        }
        let (helo, esmtp) = match &self.helo {
            Some(h) => (h.name.clone(), h.esmtp),
            None => (String::from("unknown"), false),
        };
        let addr = self.client.addr.to_string();
        let cfg = &self.policy.cfg;
        let trace = txn::Trace {
            helo: &helo,
            client_name: &self.client.name,
            client_addr: &addr,
            hostname: &cfg.server.hostname,
            esmtp,
            tls: self.tls.as_ref(),
            authenticated: self.auth.is_some(),
            now: (self.now)(),
        };
        let mut effects = txn.effects.take().map(|b| *b).unwrap_or_default();
        if !self.session_effects.is_empty() {
            let mut all = self.session_effects.clone();
            all.merge(effects);
            effects = all;
        }
        let facts = self
            .hooks_at(HookStage::Eom)
            .then(|| self.hook_facts(Some(&txn), None));
        let mut job = txn.into_job(body, &trace);
        if let Some(c) = job.envelope.client.as_mut() {
            c.push_str(&self.sasl_suffix());
        }
        match facts {
            Some(mut facts) => {
                facts.size = job.message.len() as u64;
                self.state = State::Hooking(hooks::Pending::Eom { verb, effects });
                self.out.push_back(Step::Hook(HookCall {
                    stage: HookStage::Eom,
                    facts,
                    job: Some(Box::new(job)),
                }));
            }
            None => self.finish_message(job, effects, verb),
        }
    }

    fn reject_message(&mut self, txn: &Txn, reply: Reply) {
        log::info!(
            "{}: reject: {} from {}: {}; from=<{}>",
            txn.id,
            self.last_verb,
            self.client.display(),
            reply.summary(),
            txn.sender
        );
        self.state = State::Ready;
        self.answer(reply);
    }

    fn data_limits(&self) -> DataLimits {
        let s = &self.policy.cfg.smtpd;
        DataLimits {
            max_size: s.max_message_size,
            max_line: s.max_line_length,
            normalize_bare_newlines: s.bare_newline == sloop_common::config::BareNewline::Normalize,
        }
    }

    /// Queues a reply, counting errors; ends an abusive session with 421.
    fn answer(&mut self, reply: Reply) {
        // Over-limit recipients (452 4.5.3) are not abuse: a client may pipeline
        // more than the limit and send the rest in another transaction.
        let counts = reply.is_error() && reply.enhanced != Some(Enhanced(4, 5, 3));
        let closes = reply.closes();
        self.push(reply);
        if closes {
            self.close();
            return;
        }
        if counts {
            self.count_error();
        }
    }

    /// A NOOP, RSET or VRFY was answered: past `smtpd.junk_command_limit` of them
    /// since the last accepted message, each one counts as an error, so a flood of
    /// them ends with `421` as a flood of bad commands does (Postfix's junk commands).
    fn junk_command(&mut self) {
        self.junk = self.junk.saturating_add(1);
        if self.junk > self.policy.cfg.smtpd.junk_command_limit
            && !matches!(self.state, State::Closed)
        {
            self.count_error();
        }
    }

    /// One more client error; ends the session with 421 at `smtpd.max_errors`.
    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.policy.cfg.smtpd.max_errors {
            log::info!(
                "too many errors after {} from {}",
                self.last_verb,
                self.client.display()
            );
            let host = &self.policy.cfg.server.hostname;
            self.push(Reply::new(
                421,
                (4, 7, 0),
                format!("{host} Error: too many errors"),
            ));
            self.close();
        }
    }

    fn push(&mut self, reply: Reply) {
        self.out.push_back(Step::Reply(reply));
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.input.clear();
        self.out.push_back(Step::Close);
    }
}

/// A refusal at connect must be `554` (class 5) or `421` (class 4): anything else a
/// check produced is remapped (docs/invariants.md: 4xx -> 421, 5xx -> 554 at connect).
fn remap_opening(mut r: Reply, class: u16) -> Reply {
    let want = if class == 5 { 554 } else { 421 };
    if r.code != want {
        log::warn!("connect reply {} remapped to {want}", r.code);
        r.code = want;
    }
    r
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hooks;
#[cfg(test)]
mod tests_secure;
