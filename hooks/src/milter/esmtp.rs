//! The ESMTP parameters a filter gives with an added recipient (`SMFIR_ADDRCPT_PAR`) or
//! a new sender (`SMFIR_CHGFROM`), without I/O.
//!
//! libmilter passes them as one string, parameters separated by blanks
//! (`NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.org`). What the envelope can
//! carry is kept, checked as `sloop-smtpd` checks the client's: for a recipient
//! `NOTIFY` and `ORCPT` (RFC 3461); for the sender `RET`, `ENVID` (RFC 3461), `BODY`
//! (`7BIT`, `8BITMIME`) and `SMTPUTF8`. Anything else (`SIZE`, `AUTH`, an unknown
//! keyword, a malformed value, a parameter given twice) is left out and returned, for
//! the caller to log; the edit itself still applies.

use sloop_common::dsn_params::{valid_notify, valid_orcpt, valid_xtext};
use sloop_common::spool::{Envelope, Recipient, Ret};

/// Applies a recipient's parameters; returns those left out.
pub(crate) fn rcpt_params(args: &str, r: &mut Recipient) -> Vec<String> {
    let mut ignored = Vec::new();
    for param in args.split_ascii_whitespace() {
        let (key, value) = split(param);
        let taken = match (key.to_ascii_uppercase().as_str(), value) {
            ("NOTIFY", Some(n)) if r.notify.is_none() && valid_notify(n) => {
                r.notify = Some(n.to_ascii_uppercase());
                true
            }
            ("ORCPT", Some(o)) if r.orcpt.is_none() && valid_orcpt(o) => {
                r.orcpt = Some(o.to_string());
                true
            }
            _ => false,
        };
        if !taken {
            ignored.push(param.to_string());
        }
    }
    ignored
}

/// Applies a new sender's parameters to the envelope (those not given keep their
/// values); returns those left out.
pub(crate) fn sender_params(args: &str, env: &mut Envelope) -> Vec<String> {
    let mut ignored = Vec::new();
    let (mut ret, mut envid, mut body, mut utf8) = (false, false, false, false);
    for param in args.split_ascii_whitespace() {
        let (key, value) = split(param);
        let taken = match (key.to_ascii_uppercase().as_str(), value) {
            ("RET", Some(v)) if !ret => {
                ret = true;
                match v.to_ascii_uppercase().as_str() {
                    "FULL" => env.ret = Some(Ret::Full),
                    "HDRS" => env.ret = Some(Ret::Hdrs),
                    _ => ret = false,
                }
                ret
            }
            ("ENVID", Some(v)) if !envid && valid_xtext(v, 100) => {
                envid = true;
                env.envid = Some(v.to_string());
                true
            }
            ("BODY", Some(v))
                if !body
                    && (v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME")) =>
            {
                body = true;
                env.body = Some(v.to_ascii_uppercase());
                true
            }
            ("SMTPUTF8", None) if !utf8 => {
                utf8 = true;
                env.smtputf8 = true;
                true
            }
            _ => false,
        };
        if !taken {
            ignored.push(param.to_string());
        }
    }
    ignored
}

fn split(param: &str) -> (&str, Option<&str>) {
    match param.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (param, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_dsn_parameters_are_kept() {
        let mut r = Recipient::new("bob@example.org");
        let ignored = rcpt_params(
            "notify=success,delay ORCPT=rfc822;bob+40example.org",
            &mut r,
        );
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(r.notify.as_deref(), Some("SUCCESS,DELAY"));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;bob+40example.org"));
    }

    #[test]
    fn recipient_parameters_that_cannot_be_kept_are_returned() {
        let mut r = Recipient::new("bob@example.org");
        let ignored = rcpt_params(
            "NOTIFY=NEVER,SUCCESS ORCPT=nosemicolon X-FOO=1 NOTIFY=DELAY NOTIFY=NEVER",
            &mut r,
        );
        assert_eq!(
            ignored,
            vec![
                "NOTIFY=NEVER,SUCCESS",
                "ORCPT=nosemicolon",
                "X-FOO=1",
                "NOTIFY=NEVER"
            ]
        );
        // The first valid NOTIFY is kept; a second one is not.
        assert_eq!(r.notify.as_deref(), Some("DELAY"));
        assert_eq!(r.orcpt, None);
    }

    #[test]
    fn sender_parameters_set_the_envelope() {
        let mut env = Envelope::new("a@example.org", vec![Recipient::new("b@example.org")]);
        env.envid = Some("old".into());
        let ignored = sender_params("RET=HDRS BODY=8bitmime SMTPUTF8 SIZE=100 AUTH=<>", &mut env);
        assert_eq!(ignored, vec!["SIZE=100", "AUTH=<>"]);
        assert_eq!(env.ret, Some(Ret::Hdrs));
        assert_eq!(env.body.as_deref(), Some("8BITMIME"));
        assert!(env.smtputf8);
        assert_eq!(env.envid.as_deref(), Some("old"), "not given: kept");
        let ignored = sender_params("ENVID=QQ+2B1 RET=SOME ENVID=x", &mut env);
        assert_eq!(ignored, vec!["RET=SOME", "ENVID=x"]);
        assert_eq!(env.envid.as_deref(), Some("QQ+2B1"));
        assert_eq!(env.ret, Some(Ret::Hdrs));
    }
}
