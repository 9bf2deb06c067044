//! STARTTLS (RFC 3207) and AUTH (RFC 4954) in the session, without I/O.
//!
//! STARTTLS: accepted only after EHLO, outside a transaction, when a certificate is
//! configured and TLS is not already on. On acceptance the `220 2.0.0` is queued,
//! **everything the client sent after the STARTTLS line is discarded** (it arrived in
//! plaintext and must never be executed inside TLS: the CVE-2011-0411 class of
//! command injection), the EHLO is forgotten, and [`Step::StartTls`] asks the socket
//! layer for the handshake; it reports back with [`Session::tls_started`] or
//! [`Session::tls_failed`].
//!
//! AUTH: offered (EHLO keyword `AUTH PLAIN LOGIN`) only under TLS, on the submission
//! listeners and, with `auth.offer_on_smtpd`, on `smtpd.listen`. Before TLS AUTH gets
//! `538 5.7.11`. The SASL exchange (`334` challenges) is decoded by `auth::sasl`; the
//! credentials go to the socket layer in [`Step::Authenticate`], which reports with
//! [`Session::authenticated`]. On the submission listeners MAIL needs AUTH first
//! (`530 5.7.0`); an authenticated user may relay, and may use only the senders
//! `auth.senders` gives it (`553 5.7.1`).

use super::{Session, State, Step};
use crate::auth::sasl::{self, Exchange, Pending, MAX_SASL_LINE};
use crate::auth::AuthOutcome;
use crate::parser::Line;
use crate::reply::Reply;
use crate::tls::TlsInfo;
use sloop_common::config::{AuthBackend, ListenRole};

/// Who the client authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `PLAIN` or `LOGIN`.
    pub method: &'static str,
    pub username: String,
}

impl Session<'_> {
    /// Sets what the listener offers: its role, whether STARTTLS is available, and the
    /// TLS already on (port 465, where the handshake precedes the greeting).
    pub fn with_listener(
        mut self,
        role: ListenRole,
        tls_available: bool,
        tls: Option<TlsInfo>,
    ) -> Self {
        self.role = role;
        self.tls_available = tls_available;
        self.tls = tls;
        self
    }

    /// TLS facts once the handshake is done.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The authenticated identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.auth.as_ref()
    }

    /// True when AUTH is offered on this listener (once TLS is on).
    fn auth_configured(&self) -> bool {
        let a = &self.policy.cfg.auth;
        a.backend != AuthBackend::None && (self.role.requires_auth() || a.offer_on_smtpd)
    }

    /// The EHLO keywords this module adds.
    pub(super) fn secure_keywords(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tls_available && self.tls.is_none() {
            out.push("STARTTLS".to_string());
        }
        if self.tls.is_some() && self.auth_configured() {
            out.push(format!("AUTH {}", sasl::MECHANISMS));
        }
        out
    }

    /// STARTTLS; `None` when accepted (the reply and the handshake step are queued).
    pub(super) fn starttls(&mut self) -> Option<Reply> {
        if !self.tls_available {
            return Some(Reply::new(502, (5, 5, 1), "Error: command not implemented"));
        }
        if self.tls.is_some() {
            return Some(Reply::new(554, (5, 5, 1), "Error: TLS already active"));
        }
        if self.helo.is_none() {
            return Some(Reply::new(503, (5, 5, 1), "Error: send EHLO first"));
        }
        if !matches!(self.state, State::Ready) {
            return Some(Reply::new(
                503,
                (5, 5, 1),
                "Error: MAIL transaction in progress",
            ));
        }
        self.counters.count("starttls", true);
        self.push(Reply::new(220, (2, 0, 0), "Ready to start TLS"));
        let dropped = self.input.len();
        if dropped > 0 {
            log::info!(
                "discarded {dropped} octet(s) sent after STARTTLS from {} (command injection attempt or broken pipelining)",
                self.client.display()
            );
        }
        self.input.clear();
        self.splitter = Default::default();
        self.helo = None;
        self.state = State::Ready;
        self.out.push_back(Step::StartTls);
        None
    }

    /// The handshake after STARTTLS succeeded: the session starts over before EHLO.
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.helo = None;
        self.state = State::Ready;
        self.input.clear();
    }

    /// The handshake failed: nothing more can be said in plaintext; close.
    pub fn tls_failed(&mut self) {
        log::info!(
            "lost connection after STARTTLS from {}",
            self.client.display()
        );
        self.state = State::Closed;
        self.input.clear();
        self.out.push_back(Step::Close);
    }

    /// AUTH `<mechanism> [initial-response]`; `None` when an exchange started.
    pub(super) fn auth_command(&mut self, arg: &str) -> Option<Reply> {
        if !self.auth_configured() {
            return Some(Reply::new(502, (5, 5, 1), "Error: command not implemented"));
        }
        if self.tls.is_none() {
            return Some(Reply::new(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ));
        }
        if !self.helo.as_ref().is_some_and(|h| h.esmtp) {
            return Some(Reply::new(503, (5, 5, 1), "Error: send EHLO first"));
        }
        if self.auth.is_some() {
            return Some(Reply::new(503, (5, 5, 1), "Error: already authenticated"));
        }
        if !matches!(self.state, State::Ready) {
            return Some(Reply::new(
                503,
                (5, 5, 1),
                "Error: MAIL transaction in progress",
            ));
        }
        let mut words = arg.split_whitespace();
        let Some(mechanism) = words.next() else {
            return Some(Reply::new(501, (5, 5, 4), "Syntax: AUTH mechanism"));
        };
        let initial = words.next();
        if words.next().is_some() {
            return Some(Reply::new(
                501,
                (5, 5, 4),
                "Syntax: AUTH mechanism [initial-response]",
            ));
        }
        match sasl::start(mechanism, initial) {
            None => Some(Reply::new(
                504,
                (5, 5, 4),
                "Unsupported authentication mechanism",
            )),
            Some(x) => self.sasl_next(x),
        }
    }

    /// Acts on where the exchange stands; `None` when it goes on or was handed off.
    fn sasl_next(&mut self, x: Exchange) -> Option<Reply> {
        match x {
            Exchange::Challenge(text, pending) => {
                self.state = State::Sasl(pending);
                self.push(Reply::bare(334, vec![text.to_string()]));
                None
            }
            Exchange::Done(creds) => {
                self.state = State::Authenticating;
                self.out.push_back(Step::Authenticate(creds));
                None
            }
            Exchange::Cancelled => {
                self.state = State::Ready;
                Some(Reply::new(501, (5, 7, 0), "Authentication aborted"))
            }
            Exchange::Malformed => {
                self.state = State::Ready;
                Some(Reply::new(
                    501,
                    (5, 5, 2),
                    "Error: cannot decode the authentication response",
                ))
            }
        }
    }

    /// A client response line during the exchange.
    pub(super) fn advance_sasl(&mut self, pending: Pending) -> bool {
        let Some(line) = self.splitter.take_line(&mut self.input, MAX_SASL_LINE) else {
            self.state = State::Sasl(pending);
            return false;
        };
        let reply = match line {
            Line::TooLong => {
                self.state = State::Ready;
                Some(Reply::new(
                    500,
                    (5, 5, 6),
                    "Error: authentication exchange line is too long",
                ))
            }
            Line::Complete(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.sasl_next(sasl::step(pending, &text))
            }
            // Base64 and `*` need no bare-LF leniency: the line ending is refused as
            // it is on command lines, and the exchange ends.
            Line::BareLf(_) => {
                self.state = State::Ready;
                Some(Reply::new(
                    500,
                    (5, 5, 2),
                    "Error: bare <LF> received in the authentication exchange",
                ))
            }
        };
        if let Some(r) = reply {
            self.counters.count("auth", false);
            self.answer(r);
        }
        true
    }

    /// The verdict on the credentials of the last [`Step::Authenticate`].
    pub fn authenticated(&mut self, method: &'static str, username: &str, outcome: AuthOutcome) {
        self.state = State::Ready;
        let who = self.client.display();
        match outcome {
            AuthOutcome::Success => {
                self.counters.count("auth", true);
                log::info!("{who}: sasl_method={method}, sasl_username={username}");
                self.auth = Some(Identity {
                    method,
                    username: username.to_string(),
                });
                self.push(Reply::new(235, (2, 7, 0), "Authentication successful"));
            }
            AuthOutcome::Failure { close } => {
                self.counters.count("auth", false);
                log::warn!("{who}: SASL {method} authentication failed: sasl_username={username}");
                self.answer(Reply::new(535, (5, 7, 8), "Error: authentication failed"));
                if close && !matches!(self.state, State::Closed) {
                    self.too_many_failures();
                }
            }
            AuthOutcome::Locked => {
                self.counters.count("auth", false);
                log::warn!("{who}: SASL {method} refused: too many authentication failures");
                self.too_many_failures();
            }
            AuthOutcome::TempFail(why) => {
                self.counters.count("auth", false);
                log::warn!("{who}: SASL {method} authentication unavailable: {why}");
                self.answer(Reply::new(
                    454,
                    (4, 7, 0),
                    "Temporary authentication failure",
                ));
            }
        }
    }

    fn too_many_failures(&mut self) {
        let host = &self.policy.cfg.server.hostname;
        self.push(Reply::new(
            421,
            (4, 7, 0),
            format!("{host} Error: too many authentication failures"),
        ));
        self.close();
    }

    /// The AUTH rules of MAIL: required on submission, sender owned by the user.
    pub(super) fn mail_auth_check(&self, sender: &str) -> Option<Reply> {
        match &self.auth {
            None if self.role.requires_auth() => {
                Some(Reply::new(530, (5, 7, 0), "Authentication required"))
            }
            None => None,
            Some(id) if !crate::auth::may_send_as(self.policy, &id.username, sender) => {
                log::info!(
                    "reject: MAIL from {}: 553 5.7.1 <{sender}>: Sender address rejected: not owned by user {}",
                    self.client.display(),
                    id.username
                );
                Some(Reply::new(
                    553,
                    (5, 7, 1),
                    format!(
                        "<{sender}>: Sender address rejected: not owned by user {}",
                        id.username
                    ),
                ))
            }
            Some(_) => None,
        }
    }

    /// `, sasl_method=PLAIN, sasl_username=alice` after `client=name[addr]` in the
    /// log and the envelope's client field; empty before AUTH.
    pub(super) fn sasl_suffix(&self) -> String {
        match &self.auth {
            Some(id) => format!(", sasl_method={}, sasl_username={}", id.method, id.username),
            None => String::new(),
        }
    }
}
