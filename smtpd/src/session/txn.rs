//! One mail transaction: what MAIL and RCPT established, their ESMTP parameters, and
//! the queue job built from it at the end of data.
//!
//! MAIL parameters: `SIZE` (RFC 1870), `BODY=7BIT|8BITMIME` (RFC 6152), `SMTPUTF8`
//! (RFC 6531), `RET` and `ENVID` (RFC 3461). RCPT parameters: `NOTIFY` and `ORCPT`
//! (RFC 3461). Anything else is refused with `555 5.5.4`. The DSN values are stored
//! in the envelope for the bounce code. [`Txn::into_job`] prepends the `Received`
//! header that names the queue ID, the client and the protocol.

use crate::reply::Reply;
use sloop_common::dsn_params::{valid_notify, valid_orcpt, valid_xtext};
use sloop_common::spool::{Envelope, Recipient, Ret};

/// What MAIL FROM established.
#[derive(Debug, Clone, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<String>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
}

impl Txn {
    /// Adds what a stage's hooks asked of the message.
    pub fn add_effects(&mut self, e: sloop_hooks::engine::Effects) {
        if !e.is_empty() {
            self.effects.get_or_insert_with(Default::default).merge(e);
        }
    }
}

impl MailParams {
    /// The parameters as MAIL FROM carried them (`SIZE=100`), for milters.
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.size {
            out.push(format!("SIZE={n}"));
        }
        if let Some(b) = &self.body {
            out.push(format!("BODY={b}"));
        }
        if self.smtputf8 {
            out.push("SMTPUTF8".to_string());
        }
        if let Some(r) = self.ret {
            out.push(format!(
                "RET={}",
                if r == Ret::Full { "FULL" } else { "HDRS" }
            ));
        }
        if let Some(e) = &self.envid {
            out.push(format!("ENVID={e}"));
        }
        out
    }
}

/// A transaction in progress; exists only after MAIL was accepted.
#[derive(Debug, Clone)]
pub struct Txn {
    pub id: String,
    pub sender: String,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
    /// What filter hooks asked of this message so far (HOLD, DISCARD, PREPEND);
    /// `None` (no allocation) until one asks something.
    pub effects: Option<Box<sloop_hooks::engine::Effects>>,
}

/// What the worker hands to the queue program.
#[derive(Debug, Clone)]
pub struct QueueJob {
    pub id: String,
    pub envelope: Envelope,
    /// The message as committed: our `Received` header, then the client's octets.
    pub message: Vec<u8>,
    /// Octets of our own `Received` header at the front of `message`: the size limit
    /// applies to the client's octets only.
    pub trace_len: usize,
}

/// Facts about the session that go into the Received header.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_name: &'a str,
    pub client_addr: &'a str,
    pub hostname: &'a str,
    pub esmtp: bool,
    /// The TLS in use, for the `(using ...)` comment and the `S` of ESMTPS.
    pub tls: Option<&'a crate::tls::TlsInfo>,
    /// True after AUTH: the `A` of ESMTPA.
    pub authenticated: bool,
    pub now: u64,
}

impl Txn {
    /// The protocol name for the Received header (RFC 3848 / RFC 6531): `ESMTP`, then
    /// `S` for TLS and `A` for AUTH (`ESMTPSA`); `UTF8SMTP` likewise.
    pub fn protocol(&self, t: &Trace<'_>) -> String {
        let base = match (t.esmtp, self.params.smtputf8) {
            (_, true) => "UTF8SMTP",
            (true, false) => "ESMTP",
            (false, false) => return "SMTP".to_string(),
        };
        let s = if t.tls.is_some() { "S" } else { "" };
        let a = if t.authenticated { "A" } else { "" };
        format!("{base}{s}{a}")
    }

    /// Builds the queue job from the received body.
    pub fn into_job(self, body: Vec<u8>, t: &Trace<'_>) -> QueueJob {
        let received = self.received_header(t);
        let mut message = Vec::with_capacity(received.len() + body.len());
        message.extend_from_slice(received.as_bytes());
        message.extend_from_slice(&body);
        let client = format!("{}[{}]", t.client_name, t.client_addr);
        let mut envelope = Envelope::new(self.sender, self.recipients);
        envelope.envid = self.params.envid;
        envelope.ret = self.params.ret;
        envelope.client = Some(client);
        envelope.smtputf8 = self.params.smtputf8;
        envelope.body = self.params.body;
        QueueJob {
            id: self.id,
            envelope,
            message,
            trace_len: received.len(),
        }
    }

    fn received_header(&self, t: &Trace<'_>) -> String {
        let helo = clean(t.helo);
        let using = match t.tls {
            Some(tls) => format!("\r\n\t(using {})", tls.describe()),
            None => String::new(),
        };
        let mut h = format!(
            "Received: from {helo} ({} [{}]){using}\r\n\tby {} (Sloop) with {} id {}",
            clean(t.client_name),
            t.client_addr,
            t.hostname,
            self.protocol(t),
            self.id
        );
        if let [only] = self.recipients.as_slice() {
            h.push_str(&format!("\r\n\tfor <{}>", clean(&only.address)));
        }
        h.push_str(&format!(
            "; {}\r\n",
            sloop_common::logging::rfc5322_date(t.now)
        ));
        h
    }
}

/// Header-safe text: no controls, no parentheses confusion, bounded.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

/// Parses MAIL FROM parameters. `esmtp` false (HELO) allows none.
pub fn mail_params(
    params: &[(String, Option<String>)],
    esmtp: bool,
    max_size: u64,
) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    if !esmtp && !params.is_empty() {
        return Err(Reply::new(555, (5, 5, 4), "Parameters need EHLO"));
    }
    for (k, v) in params {
        let v = v.as_deref();
        match (k.as_str(), v) {
            ("SIZE", Some(n)) => {
                let n: u64 = n
                    .parse()
                    .map_err(|_| Reply::new(501, (5, 5, 4), "Bad SIZE parameter"))?;
                if n > max_size {
                    return Err(Reply::new(
                        552,
                        (5, 3, 4),
                        format!("Message size exceeds fixed limit of {max_size} octets"),
                    ));
                }
                p.size = Some(n);
            }
            ("BODY", Some(b))
                if b.eq_ignore_ascii_case("7BIT") || b.eq_ignore_ascii_case("8BITMIME") =>
            {
                p.body = Some(b.to_ascii_uppercase());
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(r)) if p.ret.is_none() => {
                p.ret = Some(match r.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(Reply::new(501, (5, 5, 4), "Bad RET parameter")),
                });
            }
            ("ENVID", Some(e)) if p.envid.is_none() && valid_xtext(e, 100) => {
                p.envid = Some(e.to_string());
            }
            // RFC 4954 §5: the submitter's identity as the client claims it; accepted
            // and not trusted (the AUTH exchange is what identifies a user).
            ("AUTH", Some(v)) if valid_xtext(v, 500) || v == "<>" => {}
            _ => return Err(unsupported(k)),
        }
    }
    Ok(p)
}

/// Parses RCPT TO parameters into the recipient's DSN fields.
pub fn rcpt_params(
    params: &[(String, Option<String>)],
    esmtp: bool,
    r: &mut Recipient,
) -> Result<(), Reply> {
    if !esmtp && !params.is_empty() {
        return Err(Reply::new(555, (5, 5, 4), "Parameters need EHLO"));
    }
    for (k, v) in params {
        match (k.as_str(), v.as_deref()) {
            ("NOTIFY", Some(n)) if r.notify.is_none() && valid_notify(n) => {
                r.notify = Some(n.to_ascii_uppercase());
            }
            ("ORCPT", Some(o)) if r.orcpt.is_none() && valid_orcpt(o) => {
                r.orcpt = Some(o.to_string());
            }
            _ => return Err(unsupported(k)),
        }
    }
    Ok(())
}

fn unsupported(k: &str) -> Reply {
    let k: String = k.chars().take(32).collect();
    Reply::new(
        555,
        (5, 5, 4),
        format!("Unsupported or malformed parameter {k}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.into(), v.map(str::to_string))
    }

    #[test]
    fn mail_parameters() {
        let p = mail_params(
            &[
                kv("SIZE", Some("100")),
                kv("BODY", Some("8bitmime")),
                kv("SMTPUTF8", None),
                kv("RET", Some("hdrs")),
                kv("ENVID", Some("abc+2B")),
            ],
            true,
            1000,
        )
        .unwrap();
        assert_eq!(p.size, Some(100));
        assert_eq!(p.body.as_deref(), Some("8BITMIME"));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(
            mail_params(&[kv("SIZE", Some("1001"))], true, 1000)
                .unwrap_err()
                .code,
            552
        );
        assert_eq!(
            mail_params(&[kv("BODY", Some("BINARYMIME"))], true, 1000)
                .unwrap_err()
                .code,
            555
        );
        assert_eq!(
            mail_params(&[kv("X", None)], true, 1000).unwrap_err().code,
            555
        );
        assert_eq!(
            mail_params(&[kv("SMTPUTF8", None)], false, 1000)
                .unwrap_err()
                .code,
            555
        );
    }

    #[test]
    fn the_auth_parameter_is_accepted_and_ignored() {
        assert!(mail_params(&[kv("AUTH", Some("<>"))], true, 1000).is_ok());
        assert!(mail_params(&[kv("AUTH", Some("alice+40example.com"))], true, 1000).is_ok());
        assert!(mail_params(&[kv("AUTH", None)], true, 1000).is_err());
    }

    #[test]
    fn rcpt_parameters() {
        let mut r = Recipient::new("a@b");
        rcpt_params(
            &[
                kv("NOTIFY", Some("success,failure")),
                kv("ORCPT", Some("rfc822;a+40b")),
            ],
            true,
            &mut r,
        )
        .unwrap();
        assert_eq!(r.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;a+40b"));
        let mut r = Recipient::new("a@b");
        assert!(rcpt_params(&[kv("NOTIFY", Some("NEVER,SUCCESS"))], true, &mut r).is_err());
        assert!(rcpt_params(&[kv("ORCPT", Some("nosemicolon"))], true, &mut r).is_err());
    }

    #[test]
    fn received_header_names_id_client_and_protocol() {
        let txn = Txn {
            id: "0123456789ABCDEF012345".into(),
            sender: "a@b.example".into(),
            params: MailParams::default(),
            recipients: vec![Recipient::new("c@d.example")],
            effects: None,
        };
        let t = Trace {
            helo: "client.example",
            client_name: "unknown",
            client_addr: "127.0.0.1",
            hostname: "sloop.test",
            esmtp: true,
            tls: None,
            authenticated: false,
            now: 0,
        };
        let job = txn.into_job(b"Subject: x\r\n\r\nhi\r\n".to_vec(), &t);
        let text = String::from_utf8(job.message).unwrap();
        assert!(
            text.starts_with(
                "Received: from client.example (unknown [127.0.0.1])\r\n\tby sloop.test (Sloop) \
             with ESMTP id 0123456789ABCDEF012345\r\n\tfor <c@d.example>; Thu, 1 Jan 1970"
            ),
            "{text}"
        );
        assert!(text.ends_with("+0000\r\nSubject: x\r\n\r\nhi\r\n"));
        assert_eq!(job.envelope.client.as_deref(), Some("unknown[127.0.0.1]"));
    }
}
