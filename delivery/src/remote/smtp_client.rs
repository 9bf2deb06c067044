//! The SMTP client session: connect, greeting, EHLO/HELO, then any number of mail
//! transactions (MAIL, RCPT..., DATA) with RSET between them, then QUIT.
//!
//! Timeouts follow RFC 5321 §4.5.3.2 through the config: `remote.connect_timeout` for
//! the TCP connect, `remote.command_timeout` for the greeting and every command reply,
//! `remote.data_timeout` for sending the content and waiting for the final reply.
//! PIPELINING (RFC 2920) sends MAIL and all RCPTs in one write; SIZE (RFC 1870) is
//! announced and a message over the server's fixed limit fails without being sent.
//!
//! STARTTLS is used whenever the server offers it (tls.rs: opportunistic, the
//! certificate is not authenticated); a failed TLS handshake is retried once in
//! plaintext on a new connection to the same address.
//!
//! Failures before a transaction starts ([`Session::open`]) are returned as a reason
//! so the caller can try the next address. Once MAIL is sent, every recipient gets a
//! result: from the server's reply (2xx ok, 4xx defer, 5xx fail), or `defer` when the
//! connection breaks or a reply is garbage; the session is then not reused.

use super::data::DotStuffer;
use super::mx::Candidate;
use super::reply::{ReplyBuilder, ServerReply, MAX_LINE};
use super::stream::Stream;
use super::tls;
use crate::message::QueuedMessage;
use crate::result::RcptResult;
use sloop_common::config::TlsLevel;
use sloop_common::spool::Ret;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client settings taken from the validated config.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub helo_name: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// TLS settings for STARTTLS; `None` never starts TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS settings that verify the server (`remote.tls = "verify"`).
    pub verify_tls: Option<Arc<rustls::ClientConfig>>,
    /// The TLS level for this destination (`remote.tls`, `remote.tls_policy`).
    pub level: TlsLevel,
    /// `remote.credentials_file`, or why it could not be read.
    pub credentials:
        Option<Arc<Result<super::credentials::Credentials, super::credentials::CredentialsError>>>,
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The TLS handshake failed: worth a plaintext retry.
    Tls(String),
    /// The server greeted us (220 or EHLO) with our own host name: the mail would
    /// loop back to this host. Permanent (5.4.6), as in Postfix.
    Loop(String),
    /// Anything else (connect, greeting, EHLO): try the next address.
    Other(String),
}

/// Why logging in to a smarthost failed (the delivery defers with this text).
#[derive(Debug)]
enum LoginError {
    /// `remote.credentials_file` could not be read or parsed.
    Unusable(String),
    /// A login exists for the host, but the session is not encrypted.
    NotEncrypted(String),
    /// A login exists for the host, but it does not offer AUTH PLAIN.
    NotOffered(String),
    /// The AUTH command could not be sent or answered.
    Io(String),
    /// The server refused the login.
    Refused { user: String, reply: String },
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Unusable(e) => write!(f, "remote.credentials_file unusable: {e}"),
            LoginError::NotEncrypted(name) => write!(
                f,
                "credentials for {name} are configured, but the session is not encrypted: not sending the password"
            ),
            LoginError::NotOffered(name) => write!(
                f,
                "credentials for {name} are configured, but AUTH PLAIN is not offered"
            ),
            LoginError::Io(e) => f.write_str(e),
            LoginError::Refused { user, reply } => {
                write!(f, "SASL authentication failed as {user}: {reply}")
            }
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Tls(why) | OpenError::Loop(why) | OpenError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for OpenError {}

/// What one transaction sends.
#[derive(Debug)]
pub struct Transaction<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub message: &'a QueuedMessage,
}

/// The results of one transaction and whether the session can carry another.
#[derive(Debug)]
pub struct Outcome {
    pub results: Vec<RcptResult>,
    pub reusable: bool,
    /// The connection broke before the server answered MAIL: nothing was accepted, so
    /// the transaction can be retried on a new connection without a duplicate.
    pub broke_before_mail: bool,
}

/// An open SMTP session after a successful EHLO or HELO.
#[derive(Debug)]
pub struct Session {
    conn: BufReader<Stream>,
    cfg: ClientConfig,
    relay: String,
    /// The EHLO reply, `None` after a HELO fallback.
    ehlo: Option<ServerReply>,
    pub last_used: Instant,
    pub transactions: u32,
    /// Whether the current transaction's MAIL has been answered.
    mail_answered: bool,
}

impl Session {
    /// Connects to `c`, reads the greeting, says EHLO (HELO if EHLO is refused) and
    /// starts TLS when offered; a failed TLS handshake is retried in plaintext.
    pub fn open(c: &Candidate, cfg: &ClientConfig) -> Result<Session, OpenError> {
        match Session::open_once(c, cfg) {
            Ok(s) => Ok(s),
            Err(OpenError::Tls(why)) if cfg.level > TlsLevel::May => Err(OpenError::Other(
                format!("{why} (TLS is required: remote.tls = {})", cfg.level.name()),
            )),
            Err(OpenError::Tls(why)) => {
                log::warn!("{why}; retrying {} without TLS", c.relay());
                let plain = ClientConfig {
                    tls: None,
                    ..cfg.clone()
                };
                Session::open_once(c, &plain).map_err(|e| match e {
                    OpenError::Tls(s) => OpenError::Other(s),
                    other => other,
                })
            }
            other => other,
        }
    }

    fn open_once(c: &Candidate, cfg: &ClientConfig) -> Result<Session, OpenError> {
        let stream = TcpStream::connect_timeout(&c.addr, cfg.connect_timeout)
            .map_err(|e| OpenError::Other(format!("connect to {}: {e}", c.relay())))?;
        let _ = stream.set_nodelay(true);
        let mut s = Session {
            conn: BufReader::new(Stream::Plain(stream)),
            cfg: cfg.clone(),
            relay: c.relay(),
            ehlo: None,
            last_used: Instant::now(),
            transactions: 0,
            mail_answered: false,
        };
        s.handshake(&c.name).map_err(|e| match e {
            OpenError::Tls(why) => OpenError::Tls(format!("{}: {why}", s.relay)),
            OpenError::Loop(why) => OpenError::Loop(format!("{}: {why}", s.relay)),
            OpenError::Other(why) => OpenError::Other(format!("{}: {why}", s.relay)),
        })?;
        Ok(s)
    }

    /// `host[ip]:port` of the server.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// True once STARTTLS has succeeded.
    pub fn is_tls(&self) -> bool {
        self.conn.get_ref().is_tls()
    }

    fn handshake(&mut self, name: &str) -> Result<(), OpenError> {
        let other = |e: io::Error| OpenError::Other(io_text(e));
        let greeting = self.read_reply(self.cfg.command_timeout).map_err(other)?;
        if greeting.code != 220 {
            let text = format!("greeting was {}", greeting.one_line());
            return Err(OpenError::Other(text));
        }
        self.check_not_me("greeted me", &greeting)?;
        self.hello()?;
        if let Some(ehlo) = &self.ehlo {
            self.check_not_me("answered EHLO", ehlo)?;
        }
        let offered = self
            .ehlo
            .as_ref()
            .is_some_and(|e| e.has_extension("STARTTLS"));
        let level = self.cfg.level;
        let config = match level {
            TlsLevel::None => None,
            TlsLevel::May | TlsLevel::Encrypt => self.cfg.tls.clone(),
            TlsLevel::Verify => self.cfg.verify_tls.clone(),
        };
        let started = match (offered, config) {
            (true, Some(tls)) => self.starttls(&tls, name, level == TlsLevel::Verify)?,
            _ => false,
        };
        if started {
            self.hello()?;
        } else if level > TlsLevel::May {
            let why = if offered {
                "STARTTLS was declined or TLS is unavailable here"
            } else {
                "STARTTLS was not offered"
            };
            return Err(OpenError::Other(format!(
                "TLS is required (remote.tls = {}), but {why}",
                level.name()
            )));
        }
        self.login(name)
            .map_err(|e| OpenError::Other(e.to_string()))
    }

    /// AUTH PLAIN when `remote.credentials_file` has a login for `name` (TLS only).
    fn login(&mut self, name: &str) -> Result<(), LoginError> {
        let Some(creds) = self.cfg.credentials.clone() else {
            return Ok(());
        };
        let login = match creds.as_ref() {
            Ok(c) => match c.get(name) {
                Some(l) => l.clone(),
                None => return Ok(()),
            },
            Err(e) => return Err(LoginError::Unusable(e.to_string())),
        };
        if !self.is_tls() {
            return Err(LoginError::NotEncrypted(name.to_string()));
        }
        let offered = self
            .ehlo
            .as_ref()
            .and_then(|e| e.extension("AUTH"))
            .is_some_and(|m| {
                m.split_whitespace()
                    .any(|w| w.eq_ignore_ascii_case("PLAIN"))
            });
        if !offered {
            return Err(LoginError::NotOffered(name.to_string()));
        }
        let r = self
            .command(&format!(
                "AUTH PLAIN {}",
                super::credentials::plain_response(&login)
            ))
            .map_err(|e| LoginError::Io(io_text(e)))?;
        if r.code != 235 {
            return Err(LoginError::Refused {
                user: login.user,
                reply: r.one_line(),
            });
        }
        log::info!("{}: SASL PLAIN authenticated as {}", self.relay, login.user);
        Ok(())
    }

    /// Fails with [`OpenError::Loop`] when `reply` (the 220 greeting or the EHLO
    /// reply) names the server by our own host name: this host would receive the mail
    /// it is sending, and a bounce would travel the same loop.
    fn check_not_me(&self, what: &str, reply: &ServerReply) -> Result<(), OpenError> {
        let named = reply
            .lines
            .first()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("");
        if names_this_host(named, &self.cfg.helo_name) {
            return Err(OpenError::Loop(format!(
                "{what} with my own hostname {named}: mail loops back to myself"
            )));
        }
        Ok(())
    }

    /// EHLO, or HELO when EHLO is refused.
    fn hello(&mut self) -> Result<(), OpenError> {
        let other = |e: io::Error| OpenError::Other(io_text(e));
        let helo = self.cfg.helo_name.clone();
        let ehlo = self.command(&format!("EHLO {helo}")).map_err(other)?;
        if ehlo.is_positive() {
            self.ehlo = Some(ehlo);
            return Ok(());
        }
        self.ehlo = None;
        let r = self.command(&format!("HELO {helo}")).map_err(other)?;
        if r.is_positive() {
            Ok(())
        } else {
            Err(OpenError::Other(format!("HELO refused: {}", r.one_line())))
        }
    }

    /// STARTTLS; `Ok(false)` when the server declines (the session stays plaintext).
    fn starttls(
        &mut self,
        config: &Arc<rustls::ClientConfig>,
        name: &str,
        verified: bool,
    ) -> Result<bool, OpenError> {
        let r = self
            .command("STARTTLS")
            .map_err(|e| OpenError::Other(io_text(e)))?;
        if r.code != 220 {
            log::info!("{}: STARTTLS declined: {}", self.relay, r.one_line());
            return Ok(false);
        }
        if !self.conn.buffer().is_empty() {
            return Err(OpenError::Other(
                "data after the STARTTLS reply (response injection?)".to_string(),
            ));
        }
        let old = std::mem::replace(&mut self.conn, BufReader::new(Stream::Closed));
        let Stream::Plain(tcp) = old.into_inner() else {
            return Err(OpenError::Other("STARTTLS on a TLS session".to_string()));
        };
        let t = tls::handshake(config, name, tcp)
            .map_err(|e| OpenError::Tls(format!("TLS handshake failed: {}", io_text(e))))?;
        // Postfix's words: Verified when the chain and the name were checked.
        let (how, note) = if verified {
            ("Verified", "verified")
        } else {
            ("Untrusted", "unverified")
        };
        log::info!(
            "{how} TLS connection established to {}: {} ({note})",
            self.relay,
            tls::describe(&t.conn)
        );
        self.conn = BufReader::new(Stream::Tls(Box::new(t)));
        Ok(true)
    }

    /// RSET before reusing the session; false when the session is no longer usable.
    pub fn reset(&mut self) -> bool {
        matches!(self.command("RSET"), Ok(r) if r.is_positive())
    }

    /// Says QUIT and closes, ignoring errors (the transactions are already decided).
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
        if let Some(tcp) = self.conn.get_ref().tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
    }

    /// Runs one mail transaction; every recipient gets a result.
    pub fn send(&mut self, t: &Transaction<'_>) -> Outcome {
        self.transactions += 1;
        self.last_used = Instant::now();
        self.mail_answered = false;
        let mut results: Vec<Option<RcptResult>> = vec![None; t.recipients.len()];
        let reusable = match self.transact(t, &mut results) {
            Ok(()) => true,
            Err(e) => {
                let text = format!("lost connection with {} ({})", self.relay, io_text(e));
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(RcptResult::defer("4.4.2", text.clone()).via(&self.relay));
                }
                false
            }
        };
        self.last_used = Instant::now();
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| RcptResult::defer("4.3.0", "no result")))
            .collect();
        Outcome {
            results,
            reusable,
            broke_before_mail: !reusable && !self.mail_answered,
        }
    }

    fn transact(&mut self, t: &Transaction<'_>, out: &mut [Option<RcptResult>]) -> io::Result<()> {
        if let Some(r) = self.refuse_early(t) {
            out.iter_mut().for_each(|o| *o = Some(r.clone()));
            return Ok(());
        }
        let accepted = self.envelope(t, out)?;
        if accepted.is_empty() {
            return Ok(());
        }
        let data = self.command("DATA")?;
        if !data.is_intermediate() {
            for &i in &accepted {
                out[i] = Some(data.to_result(&self.relay, "DATA"));
            }
            return Ok(());
        }
        let fin = self.content(t.message)?;
        for &i in &accepted {
            out[i] = Some(fin.to_result(&self.relay, "end of DATA"));
        }
        Ok(())
    }

    /// A result for every recipient when the message cannot be offered at all.
    fn refuse_early(&self, t: &Transaction<'_>) -> Option<RcptResult> {
        let ehlo = self.ehlo.as_ref();
        let limit = ehlo
            .and_then(|e| e.extension("SIZE"))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0);
        if let Some(limit) = limit {
            if t.message.size() > limit {
                let text = format!(
                    "message size {} exceeds the fixed limit {limit} of {}",
                    t.message.size(),
                    self.relay
                );
                return Some(RcptResult::fail("5.3.4", text).via(&self.relay));
            }
        }
        let utf8 = !t.sender.is_ascii() || t.recipients.iter().any(|r| !r.is_ascii());
        if utf8 && !ehlo.is_some_and(|e| e.has_extension("SMTPUTF8")) {
            let text = format!("{} does not support SMTPUTF8 addresses", self.relay);
            return Some(RcptResult::fail("5.6.7", text).via(&self.relay));
        }
        None
    }

    /// MAIL and RCPTs; results for the refused ones; returns the accepted indices.
    fn envelope(
        &mut self,
        t: &Transaction<'_>,
        out: &mut [Option<RcptResult>],
    ) -> io::Result<Vec<usize>> {
        let (mail_reply, rcpt_replies) = self.exchange_envelope(t)?;
        if !mail_reply.is_positive() {
            let r = mail_reply.to_result(&self.relay, "MAIL FROM");
            out.iter_mut().for_each(|o| *o = Some(r.clone()));
            return Ok(Vec::new());
        }
        let mut accepted = Vec::new();
        for (i, reply) in rcpt_replies.iter().enumerate() {
            if reply.is_positive() {
                accepted.push(i);
            } else {
                out[i] = Some(reply.to_result(&self.relay, "RCPT TO"));
            }
        }
        Ok(accepted)
    }

    /// Sends MAIL and the RCPTs, in one write when PIPELINING is offered; returns the
    /// MAIL reply and the RCPT replies (none when MAIL was refused without pipelining).
    fn exchange_envelope(
        &mut self,
        t: &Transaction<'_>,
    ) -> io::Result<(ServerReply, Vec<ServerReply>)> {
        let mail = self.mail_command(t);
        let rcpts: Vec<String> = t
            .recipients
            .iter()
            .map(|r| self.rcpt_command(t, r))
            .collect();
        let pipelining = self
            .ehlo
            .as_ref()
            .is_some_and(|e| e.has_extension("PIPELINING"));
        if !pipelining {
            let m = self.command(&mail)?;
            self.mail_answered = true;
            let mut rs = Vec::new();
            if m.is_positive() {
                for r in &rcpts {
                    rs.push(self.command(r)?);
                }
            }
            return Ok((m, rs));
        }
        let mut batch = format!("{mail}\r\n");
        rcpts
            .iter()
            .for_each(|r| batch.push_str(&format!("{r}\r\n")));
        self.write(batch.as_bytes())?;
        let m = self.read_reply(self.cfg.command_timeout)?;
        self.mail_answered = true;
        let mut rs = Vec::with_capacity(rcpts.len());
        for _ in &rcpts {
            rs.push(self.read_reply(self.cfg.command_timeout)?);
        }
        Ok((m, rs))
    }

    fn mail_command(&self, t: &Transaction<'_>) -> String {
        let mut cmd = format!("MAIL FROM:<{}>", t.sender);
        let ehlo = self.ehlo.as_ref();
        if ehlo.is_some_and(|e| e.has_extension("SIZE")) {
            cmd.push_str(&format!(" SIZE={}", t.message.size()));
        }
        let body = t.message.envelope.body.as_deref().unwrap_or("");
        if body.eq_ignore_ascii_case("8BITMIME")
            && ehlo.is_some_and(|e| e.has_extension("8BITMIME"))
        {
            cmd.push_str(" BODY=8BITMIME");
        }
        let utf8 = t.message.envelope.smtputf8 || !t.sender.is_ascii();
        if utf8 && ehlo.is_some_and(|e| e.has_extension("SMTPUTF8")) {
            cmd.push_str(" SMTPUTF8");
        }
        if self.offers_dsn() {
            let env = &t.message.envelope;
            if let Some(ret) = env.ret {
                let word = if ret == Ret::Full { "FULL" } else { "HDRS" };
                cmd.push_str(&format!(" RET={word}"));
            }
            push_param(&mut cmd, "ENVID", env.envid.as_deref());
        }
        cmd
    }

    /// `RCPT TO:<addr>`, with the recipient's NOTIFY and ORCPT when DSN is offered
    /// (RFC 3461), taken from the envelope record of the same address.
    fn rcpt_command(&self, t: &Transaction<'_>, addr: &str) -> String {
        let mut cmd = format!("RCPT TO:<{addr}>");
        if !self.offers_dsn() {
            return cmd;
        }
        let env = &t.message.envelope;
        if let Some(r) = env.recipients.iter().find(|r| r.address == addr) {
            push_param(&mut cmd, "NOTIFY", r.notify.as_deref());
            push_param(&mut cmd, "ORCPT", r.orcpt.as_deref());
        }
        cmd
    }

    fn offers_dsn(&self) -> bool {
        self.ehlo.as_ref().is_some_and(|e| e.has_extension("DSN"))
    }

    /// Sends the content, dot-stuffed, and reads the final reply.
    fn content(&mut self, msg: &QueuedMessage) -> io::Result<ServerReply> {
        self.tcp()?.set_write_timeout(Some(self.cfg.data_timeout))?;
        let mut stuffer = DotStuffer::new(self.conn.get_mut());
        io::copy(&mut msg.reader(), &mut stuffer)?;
        stuffer.finish()?;
        self.tcp()?
            .set_write_timeout(Some(self.cfg.command_timeout))?;
        self.read_reply(self.cfg.data_timeout)
    }

    fn tcp(&self) -> io::Result<&TcpStream> {
        self.conn
            .get_ref()
            .tcp()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
    }

    /// Writes one command line and reads its reply.
    fn command(&mut self, line: &str) -> io::Result<ServerReply> {
        self.write(format!("{line}\r\n").as_bytes())?;
        self.read_reply(self.cfg.command_timeout)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tcp()?
            .set_write_timeout(Some(self.cfg.command_timeout))?;
        let stream = self.conn.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads one complete reply within `timeout`; garbage is an `InvalidData` error.
    fn read_reply(&mut self, timeout: Duration) -> io::Result<ServerReply> {
        self.tcp()?.set_read_timeout(Some(timeout))?;
        let mut builder = ReplyBuilder::default();
        loop {
            let line = self.read_line()?;
            let done = builder
                .push(&line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some(reply) = done {
                return Ok(reply);
            }
            if self.conn.buffer().is_empty() {
                self.conn.get_ref().ack_now();
            }
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        (&mut self.conn)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut buf)?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if buf.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply line too long",
            ));
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// Appends ` NAME=value` when the value is present and is one printable word.
fn push_param(cmd: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
            cmd.push_str(&format!(" {name}={v}"));
        }
    }
}

/// True when `named` (a host name from a server's reply) is `hostname`, ignoring case
/// and a trailing dot.
pub fn names_this_host(named: &str, hostname: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    !named.is_empty() && norm(named) == norm(hostname)
}

fn io_text(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}
