//! What the session knows at a stage ([`Facts`]), and what each kind of hook is told
//! of it: a policy request's attributes, a milter's macros and connect information.
//!
//! Pure functions of the facts; the session builds them (only when a hook runs at
//! the stage, so a server without hooks builds none).

use crate::milter::{ConnectInfo, Macros};
use crate::policy::{ProtocolState, Request};
use sloop_common::config::hooks::{HookListener, HookStage};
use std::net::IpAddr;

/// The session's facts at a stage. Empty strings are facts not known (yet).
#[derive(Debug, Clone)]
pub struct Facts {
    pub listener: HookListener,
    /// `None` for mail with no network client (`sendmail`).
    pub client_addr: Option<IpAddr>,
    /// The verified client name, or `unknown`.
    pub client_name: String,
    pub client_port: u16,
    /// This server's name (`server.hostname`): the milter macro `j`.
    pub hostname: String,
    pub helo: String,
    pub esmtp: bool,
    /// The transaction's queue ID (from MAIL on).
    pub queue_id: String,
    pub sender: String,
    /// MAIL FROM's ESMTP parameters as sent (`SIZE=100`), for milters.
    pub mail_args: Vec<String>,
    /// The recipient being checked at RCPT.
    pub recipient: String,
    /// RCPT TO's ESMTP parameters as sent, for milters.
    pub rcpt_args: Vec<String>,
    /// Recipients accepted so far (at DATA and end of message: all of them).
    pub recipients: Vec<String>,
    /// The message size (declared at MAIL, actual at end of message).
    pub size: u64,
    pub sasl_method: String,
    pub sasl_username: String,
    pub tls_protocol: String,
    pub tls_cipher: String,
    pub tls_bits: u16,
}

impl Facts {
    /// Facts about a client with nothing else known yet.
    pub fn new(listener: HookListener, client_addr: Option<IpAddr>, client_name: &str) -> Facts {
        Facts {
            listener,
            client_addr,
            client_name: client_name.to_string(),
            client_port: 0,
            hostname: String::new(),
            helo: String::new(),
            esmtp: false,
            queue_id: String::new(),
            sender: String::new(),
            mail_args: Vec::new(),
            recipient: String::new(),
            rcpt_args: Vec::new(),
            recipients: Vec::new(),
            size: 0,
            sasl_method: String::new(),
            sasl_username: String::new(),
            tls_protocol: String::new(),
            tls_cipher: String::new(),
            tls_bits: 0,
        }
    }

    /// `name[addr]` as Postfix logs a client (`localhost` for local mail).
    pub fn client_display(&self) -> String {
        match self.client_addr {
            Some(a) => format!("{}[{a}]", self.client_name),
            None => self.client_name.clone(),
        }
    }

    /// What a stage's reply and log lines name: the client, HELO name, sender or
    /// recipient.
    pub fn subject(&self, stage: HookStage) -> String {
        match stage {
            HookStage::Connect => self.client_display(),
            HookStage::Helo => self.helo.clone(),
            HookStage::Mail => self.sender.clone(),
            HookStage::Rcpt => self.recipient.clone(),
            HookStage::Data => "DATA".to_string(),
            HookStage::Eom => "END-OF-MESSAGE".to_string(),
        }
    }

    /// The policy request for `stage` (Postfix's `smtpd_access_policy` attributes).
    pub fn policy_request(&self, stage: HookStage) -> Request {
        let state = match stage {
            HookStage::Connect => ProtocolState::Connect,
            HookStage::Helo if self.esmtp => ProtocolState::Ehlo,
            HookStage::Helo => ProtocolState::Helo,
            HookStage::Mail => ProtocolState::Mail,
            HookStage::Rcpt => ProtocolState::Rcpt,
            HookStage::Data => ProtocolState::Data,
            HookStage::Eom => ProtocolState::EndOfMessage,
        };
        let mut r = Request::new(state);
        let addr = self.client_addr.map(|a| a.to_string()).unwrap_or_default();
        let recipient = match stage {
            HookStage::Rcpt => self.recipient.as_str(),
            HookStage::Data | HookStage::Eom if self.recipients.len() == 1 => {
                self.recipients[0].as_str()
            }
            _ => "",
        };
        let count = match stage {
            HookStage::Data | HookStage::Eom => self.recipients.len(),
            _ => 0,
        };
        r.set("protocol_name", if self.esmtp { "ESMTP" } else { "SMTP" })
            .set("helo_name", &self.helo)
            .set("queue_id", &self.queue_id)
            .set("sender", &self.sender)
            .set("recipient", recipient)
            .set("recipient_count", &count.to_string())
            .set("client_address", &addr)
            .set("client_name", &self.client_name)
            .set("reverse_client_name", &self.client_name)
            .set("client_port", &port(self.client_port))
            .set("instance", &self.queue_id)
            .set("size", &self.size.to_string())
            .set("sasl_method", &self.sasl_method)
            .set("sasl_username", &self.sasl_username)
            .set("sasl_sender", "")
            .set("encryption_protocol", &self.tls_protocol)
            .set("encryption_cipher", &self.tls_cipher)
            .set("encryption_keysize", &bits(self.tls_bits))
            .set("stress", "")
            .set("mail_version", env!("CARGO_PKG_VERSION"));
        r
    }

    /// The milter's connect information (`[addr]` as the name when there is none, as
    /// Postfix sends it; `localhost` and family unknown for local mail).
    pub fn connect_info(&self) -> ConnectInfo {
        let hostname = match self.client_addr {
            Some(a) if self.client_name == "unknown" || self.client_name.is_empty() => {
                format!("[{a}]")
            }
            _ => self.client_name.clone(),
        };
        ConnectInfo {
            hostname,
            addr: self.client_addr,
            port: self.client_port,
        }
    }

    /// The milter macros for `stage` (Postfix's defaults for `milter_*_macros`).
    pub fn macros(&self, stage: HookStage) -> Macros {
        let mut m = Macros::new();
        let daemon = if self.client_addr.is_some() {
            "sloop-smtpd"
        } else {
            "sloop-pickup"
        };
        m.set("j", &self.hostname)
            .set("{daemon_name}", daemon)
            .set("v", concat!("Sloop ", env!("CARGO_PKG_VERSION")));
        let addr = self.client_addr.map(|a| a.to_string()).unwrap_or_default();
        m.set("{client_addr}", &addr)
            .set("{client_name}", &self.client_name)
            .set("{client_ptr}", &self.client_name)
            .set("{client_port}", &port(self.client_port))
            .set("_", &self.client_display());
        if stage >= HookStage::Helo && !self.tls_protocol.is_empty() {
            m.set("{tls_version}", &self.tls_protocol)
                .set("{cipher}", &self.tls_cipher)
                .set("{cipher_bits}", &bits(self.tls_bits));
        }
        if stage >= HookStage::Mail {
            if !self.sasl_method.is_empty() {
                m.set("{auth_type}", &self.sasl_method)
                    .set("{auth_authen}", &self.sasl_username);
            }
            m.set("i", &self.queue_id)
                .set("{mail_mailer}", "smtp")
                .set("{mail_addr}", &self.sender);
        }
        if stage == HookStage::Rcpt {
            m.set("{rcpt_mailer}", "smtp")
                .set("{rcpt_addr}", &self.recipient);
        }
        m
    }
}

fn port(p: u16) -> String {
    if p == 0 {
        String::new()
    } else {
        p.to_string()
    }
}

fn bits(b: u16) -> String {
    if b == 0 {
        String::new()
    } else {
        b.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn facts() -> Facts {
        let mut f = Facts::new(
            HookListener::Smtpd,
            Some("192.0.2.7".parse().unwrap()),
            "unknown",
        );
        f.helo = "client.example".into();
        f.esmtp = true;
        f.queue_id = "0123456789ABCDEF012345".into();
        f.sender = "a@b.example".into();
        f.recipient = "c@d.example".into();
        f.recipients = vec!["c@d.example".into()];
        f
    }

    #[test]
    fn policy_requests_carry_postfix_attributes() {
        let f = facts();
        let r = f.policy_request(HookStage::Rcpt);
        assert_eq!(r.get("protocol_state"), Some("RCPT"));
        assert_eq!(r.get("client_address"), Some("192.0.2.7"));
        assert_eq!(r.get("recipient"), Some("c@d.example"));
        assert_eq!(r.get("recipient_count"), Some("0"));
        assert_eq!(r.get("instance"), Some("0123456789ABCDEF012345"));
        let r = f.policy_request(HookStage::Eom);
        assert_eq!(r.get("protocol_state"), Some("END-OF-MESSAGE"));
        assert_eq!(r.get("recipient_count"), Some("1"));
        assert_eq!(r.get("recipient"), Some("c@d.example"));
        let r = f.policy_request(HookStage::Helo);
        assert_eq!(r.get("protocol_state"), Some("EHLO"));
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.starts_with("request=smtpd_access_policy\nprotocol_state=EHLO\n"));
    }

    #[test]
    fn milter_macros_grow_with_the_stage() {
        let f = facts();
        let m = f.macros(HookStage::Connect);
        assert!(m
            .0
            .iter()
            .any(|(n, v)| n == "{client_addr}" && v == "192.0.2.7"));
        assert!(!m.0.iter().any(|(n, _)| n == "i"));
        let m = f.macros(HookStage::Rcpt);
        assert!(m
            .0
            .iter()
            .any(|(n, v)| n == "i" && v == "0123456789ABCDEF012345"));
        assert!(m
            .0
            .iter()
            .any(|(n, v)| n == "{rcpt_addr}" && v == "c@d.example"));
        assert_eq!(f.connect_info().hostname, "[192.0.2.7]");
        let local = Facts::new(HookListener::Local, None, "localhost");
        assert_eq!(local.connect_info().hostname, "localhost");
        assert_eq!(local.connect_info().addr, None);
    }
}
