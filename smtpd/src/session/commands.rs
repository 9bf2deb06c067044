//! Command handlers of the session: one function per verb, each producing exactly one
//! reply (G2) and the next state. Sequence errors are `503 5.5.1`, syntax errors
//! `501`/`500`, parameter errors `555 5.5.4`; rejects are logged Postfix style
//! (`<ID>: reject: RCPT from name[addr]: 554 5.7.1 ...; from=<..> to=<..>`).

use super::hooks::Pending;
use super::txn::{mail_params, rcpt_params, Txn};
use super::{Chunk, ChunkTarget, Helo, Session, State};
use crate::address::{parse_path, AddrError, PathArg};
use crate::bdat::BdatReceiver;
use crate::data::DataReceiver;
use crate::parser::Command;
use crate::reply::Reply;
use sloop_common::config::hooks::HookStage;
use sloop_common::spool::{queue_id, Recipient};

impl Session<'_> {
    pub(super) fn dispatch(&mut self, cmd: Command) {
        let verb = cmd.verb();
        self.last_verb = upper(verb);
        if matches!(self.state, State::Refused) {
            return self.refused(cmd);
        }
        if let State::Chunking(..) = self.state {
            if !matches!(
                cmd,
                Command::Bdat { .. } | Command::Rset | Command::Noop | Command::Quit
            ) {
                self.counters.count(verb, false);
                return self.answer(bad_sequence("BDAT chunks must continue with BDAT"));
            }
        }
        let junk = matches!(cmd, Command::Noop | Command::Rset | Command::Vrfy(_));
        let reply = match cmd {
            Command::Helo(name) => self.helo(name, false),
            Command::Ehlo(name) => self.helo(name, true),
            Command::Mail(arg) => self.mail(&arg),
            Command::Rcpt(arg) => self.rcpt(&arg),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::StartTls => self.starttls(),
            Command::Auth(arg) => self.auth_command(&arg),
            Command::Rset => {
                self.state = State::Ready;
                Some(Reply::new(250, (2, 0, 0), "Ok"))
            }
            other => Some(stateless_reply(&other)),
        };
        // DATA/BDAT accepted (None) are counted at the end of the message, STARTTLS
        // and AUTH when they complete, commands waiting for hooks when they decide.
        if let Some(r) = reply {
            self.counters.count(verb, !r.is_error());
            self.answer(r);
        }
        if junk {
            self.junk_command();
        }
    }

    fn refused(&mut self, cmd: Command) {
        let verb = cmd.verb();
        if let Command::Quit = cmd {
            self.counters.count(verb, true);
            return self.answer(Reply::new(221, (2, 0, 0), "Bye"));
        }
        self.counters.count(verb, false);
        self.answer(bad_sequence(
            "Error: service refused; only QUIT is accepted",
        ));
    }

    fn helo(&mut self, name: String, esmtp: bool) -> Option<Reply> {
        if name.chars().any(char::is_control) || name.split_whitespace().count() != 1 {
            return Some(Reply::new(501, (5, 5, 4), "Syntax: EHLO hostname"));
        }
        if self.hooks_at(HookStage::Helo) {
            self.hook(HookStage::Helo, Pending::Helo { name, esmtp });
            return None;
        }
        Some(self.helo_accepted(name, esmtp))
    }

    /// HELO/EHLO accepted: the session's HELO name is set and the reply built.
    pub(super) fn helo_accepted(&mut self, name: String, esmtp: bool) -> Reply {
        self.helo = Some(Helo { name, esmtp });
        self.state = State::Ready;
        let cfg = &self.policy.cfg;
        let host = cfg.server.hostname.clone();
        if !esmtp {
            return Reply::bare(250, vec![host]);
        }
        let mut lines = vec![
            host,
            "PIPELINING".into(),
            format!("SIZE {}", cfg.smtpd.max_message_size),
        ];
        lines.extend(self.secure_keywords());
        lines.extend([
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ]);
        Reply::bare(250, lines)
    }

    fn mail(&mut self, arg: &str) -> Option<Reply> {
        match self.mail_checks(arg) {
            Ok(txn) if self.hooks_at(HookStage::Mail) => {
                let facts = self.hook_facts(Some(&txn), None);
                self.hook_with(HookStage::Mail, Pending::Mail(txn), facts);
                None
            }
            Ok(txn) => {
                self.state = State::Mail(txn);
                Some(Reply::new(250, (2, 1, 0), "Ok"))
            }
            Err(r) => Some(r),
        }
    }

    /// The built-in checks of MAIL; the transaction it would open.
    fn mail_checks(&mut self, arg: &str) -> Result<Txn, Reply> {
        let Some(helo) = &self.helo else {
            return Err(bad_sequence("Error: send HELO/EHLO first"));
        };
        if !matches!(self.state, State::Ready) {
            return Err(bad_sequence("Error: nested MAIL command"));
        }
        let esmtp = helo.esmtp;
        let path = parse_path(arg).map_err(|e| addr_error(e, "Sender"))?;
        let max = self.policy.cfg.smtpd.max_message_size;
        let params = mail_params(&path.params, esmtp, max)?;
        let sender = path
            .mailbox
            .as_ref()
            .map(|m| m.address())
            .unwrap_or_default();
        if path.mailbox.as_ref().is_some_and(|m| m.is_utf8()) && !params.smtputf8 {
            return Err(Reply::new(
                553,
                (5, 6, 7),
                "Error: SMTPUTF8 is required for this address",
            ));
        }
        if let Some(r) = self.mail_auth_check(&sender) {
            return Err(r);
        }
        if let Some(r) = crate::spool_room::at_mail(&self.policy.cfg, params.size) {
            // The spool's state change is logged once (space.rs), not per client.
            log::debug!(
                "NOQUEUE: reject: MAIL from {}: 452 4.3.1",
                self.client.display()
            );
            return Err(r);
        }
        let id = queue_id::new_id();
        Ok(Txn {
            id,
            sender,
            params,
            recipients: Vec::new(),
            effects: None,
        })
    }

    fn rcpt(&mut self, arg: &str) -> Option<Reply> {
        let mut txn = match std::mem::replace(&mut self.state, State::Ready) {
            State::Mail(t) | State::Rcpt(t) => t,
            other => {
                self.state = other;
                return Some(bad_sequence("Error: need MAIL command"));
            }
        };
        let result = self.check_rcpt(&txn, arg);
        let reply = match result {
            Ok(r) if self.hooks_at(HookStage::Rcpt) => {
                let facts = self.hook_facts(Some(&txn), Some(&r));
                self.hook_with(HookStage::Rcpt, Pending::Rcpt { txn, rcpt: r }, facts);
                return None;
            }
            Ok(r) => self.rcpt_accepted(&mut txn, r),
            Err(r) => {
                self.log_reject(&txn, "RCPT", &r, arg);
                r
            }
        };
        self.state = if txn.recipients.is_empty() {
            State::Mail(txn)
        } else {
            State::Rcpt(txn)
        };
        Some(reply)
    }

    /// A recipient every check accepted joins the transaction.
    pub(super) fn rcpt_accepted(&mut self, txn: &mut Txn, r: Recipient) -> Reply {
        txn.recipients.push(r);
        if txn.recipients.len() == 1 {
            // As Postfix, at the first accepted recipient (where its queue
            // file is made): log readers (pflogsumm) count this line as a
            // message received, so a transaction with no recipient has none.
            log::info!("{}: client={}", txn.id, self.client.display());
        }
        Reply::new(250, (2, 1, 5), "Ok")
    }

    fn check_rcpt(&self, txn: &Txn, arg: &str) -> Result<Recipient, Reply> {
        if txn.recipients.len() >= self.policy.cfg.smtpd.max_recipients {
            return Err(Reply::new(452, (4, 5, 3), "Error: too many recipients"));
        }
        let esmtp = self.helo.as_ref().is_some_and(|h| h.esmtp);
        let PathArg {
            mailbox, params, ..
        } = parse_path(arg).map_err(|e| addr_error(e, "Recipient"))?;
        let mailbox = mailbox.ok_or_else(|| Reply::new(501, (5, 1, 3), "Error: null recipient"))?;
        if mailbox.is_utf8() && !txn.params.smtputf8 {
            return Err(Reply::new(
                553,
                (5, 6, 7),
                "Error: SMTPUTF8 is required for this address",
            ));
        }
        let relay = self.identity().is_some() || self.policy.may_relay(self.client.addr);
        let accepted = self.policy.recipient_with(&mailbox, relay)?;
        if let Some(trick) = accepted.trick {
            log::info!(
                "{}: RCPT from {}: <{}> resolved ({trick}) to <{}>",
                txn.id,
                self.client.display(),
                mailbox.address(),
                accepted.address
            );
        }
        let mut r = Recipient::new(accepted.address);
        rcpt_params(&params, esmtp, &mut r)?;
        Ok(r)
    }

    fn data(&mut self) -> Option<Reply> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Rcpt(txn) if self.hooks_at(HookStage::Data) => {
                let facts = self.hook_facts(Some(&txn), None);
                self.hook_with(HookStage::Data, Pending::Data(txn), facts);
                None
            }
            State::Rcpt(txn) => {
                let rx = DataReceiver::new(self.data_limits());
                self.state = State::Data(txn, rx);
                self.push(Reply::new(
                    354,
                    (2, 0, 0),
                    "End data with <CR><LF>.<CR><LF>",
                ));
                None
            }
            State::Mail(txn) => {
                self.state = State::Mail(txn);
                Some(Reply::new(554, (5, 5, 1), "Error: no valid recipients"))
            }
            other => {
                self.state = other;
                Some(bad_sequence("Error: need RCPT command"))
            }
        }
    }

    fn bdat(&mut self, size: u64, last: bool) -> Option<Reply> {
        let target = match std::mem::replace(&mut self.state, State::Ready) {
            State::Rcpt(txn) if self.hooks_at(HookStage::Data) => {
                let facts = self.hook_facts(Some(&txn), None);
                self.hook_with(HookStage::Data, Pending::Bdat { txn, size, last }, facts);
                return None;
            }
            State::Rcpt(txn) => ChunkTarget::Collect {
                txn,
                rx: BdatReceiver::new(self.data_limits()),
            },
            State::Chunking(txn, rx) => ChunkTarget::Collect { txn, rx },
            State::Mail(_) => {
                ChunkTarget::Refused(Reply::new(554, (5, 5, 1), "Error: no valid recipients"))
            }
            _ => ChunkTarget::Refused(bad_sequence("Error: need RCPT command")),
        };
        self.state = State::Bdat(Chunk {
            size,
            remaining: size,
            last,
            target,
        });
        None
    }

    fn log_reject(&self, txn: &Txn, verb: &str, r: &Reply, arg: &str) {
        let to: String = arg.chars().take(300).collect();
        log::info!(
            "{}: reject: {verb} from {}: {}; from=<{}> to={}",
            txn.id,
            self.client.display(),
            r.summary(),
            txn.sender,
            to.split_whitespace().next().unwrap_or("")
        );
    }
}

/// Replies to commands that do not touch the session state.
fn stateless_reply(cmd: &Command) -> Reply {
    match cmd {
        Command::Quit => Reply::new(221, (2, 0, 0), "Bye"),
        Command::Vrfy(_) => Reply::new(
            252,
            (2, 5, 2),
            "Cannot VRFY user, but will accept message and attempt delivery",
        ),
        Command::Expn(_) => Reply::new(502, (5, 5, 1), "Error: EXPN not available"),
        Command::Help => Reply::new(214, (2, 0, 0), "See https://www.rfc-editor.org/rfc/rfc5321"),
        Command::Syntax(v) => Reply::new(501, (5, 5, 4), format!("Syntax: {}", syntax_hint(v))),
        Command::Unknown(_) => Reply::new(500, (5, 5, 2), "Error: command not recognized"),
        _ => Reply::new(250, (2, 0, 0), "Ok"),
    }
}

fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, (5, 5, 1), text.to_string())
}

fn addr_error(e: AddrError, what: &str) -> Reply {
    match e {
        AddrError::Syntax(why) => {
            Reply::new(501, (5, 5, 4), format!("Syntax error in parameters: {why}"))
        }
        AddrError::BadAddress(why) => Reply::new(
            553,
            (5, 1, if what == "Sender" { 7 } else { 3 }),
            format!("{what} address rejected: {why}"),
        ),
        AddrError::TooLong => Reply::new(553, (5, 1, 3), format!("{what} address too long")),
    }
}

fn syntax_hint(verb: &str) -> &'static str {
    match verb {
        "helo" => "HELO hostname",
        "ehlo" => "EHLO hostname",
        "mail" => "MAIL FROM:<address>",
        "rcpt" => "RCPT TO:<address>",
        "bdat" => "BDAT size [LAST]",
        "vrfy" => "VRFY address",
        "expn" => "EXPN list",
        _ => "command takes no argument",
    }
}

fn upper(verb: &'static str) -> &'static str {
    match verb {
        "helo" => "HELO",
        "ehlo" => "EHLO",
        "mail" => "MAIL",
        "rcpt" => "RCPT",
        "data" => "DATA",
        "bdat" => "BDAT",
        "rset" => "RSET",
        "noop" => "NOOP",
        "quit" => "QUIT",
        "vrfy" => "VRFY",
        "expn" => "EXPN",
        "help" => "HELP",
        "starttls" => "STARTTLS",
        "auth" => "AUTH",
        _ => "UNKNOWN",
    }
}
