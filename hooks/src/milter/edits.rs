//! The end-of-message modifications of a filter, applied to the message and the
//! envelope before the commit.
//!
//! [`apply_edits`] is pure and all or nothing: it works on copies and replaces the
//! caller's message, sender and recipients only when every edit applied, so the
//! spooled message is the one the filter approved or the one received, never a mix.
//! The edits apply in the order the filter sent them, each on the result of the one
//! before (header indexes count the header fields as they stand at that point), as
//! Postfix's cleanup does.
//!
//! Header fields keep CRLF line ends: a filter's bare LF in a folded value becomes
//! CRLF. Envelope addresses are stored without angle brackets (`<>` is the null
//! sender). A recipient kept keeps its DSN parameters; the ESMTP parameters of an
//! added recipient or a new sender are kept where the envelope has a place for them
//! (`esmtp.rs`), and the others are returned for the caller to log.

use std::fmt;

use sloop_common::spool::{Envelope, Recipient};

use super::esmtp::{rcpt_params, sender_params};
use super::header::{split, Split};
use super::Edit;

/// Why a filter's edits could not be applied (nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// A header name that is empty or not printable ASCII without a colon.
    HeaderName(String),
    /// A header value that would break the header block (an empty line, or a
    /// continuation line that does not start with a blank).
    HeaderValue { name: String, why: &'static str },
    /// An envelope address that is empty or holds blanks or control characters.
    Address(String),
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::HeaderName(n) => write!(f, "bad header name {n:?} in edit"),
            EditError::HeaderValue { name, why } => {
                write!(f, "bad value for header {name} in edit: {why}")
            }
            EditError::Address(a) => write!(f, "bad address {a:?} in edit"),
        }
    }
}

impl std::error::Error for EditError {}

/// An ESMTP parameter of an edit that the envelope cannot carry (left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredParam {
    /// The parameter as the filter gave it (`SIZE=100`).
    pub param: String,
    /// The address it came with (an added recipient, or the new sender).
    pub address: String,
}

impl fmt::Display for IgnoredParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ESMTP parameter {:?} for <{}> not kept",
            self.param, self.address
        )
    }
}

/// Applies `edits` to the message (header, empty line, body, CRLF line ends) and the
/// envelope (sender, recipients, DSN and body parameters); on error nothing is
/// changed. Returns the ESMTP parameters left out. `Quarantine` edits change nothing
/// here: the caller holds the message (see `MilterReply::Quarantine`).
pub fn apply_edits(
    edits: &[Edit],
    message: &mut Vec<u8>,
    envelope: &mut Envelope,
) -> Result<Vec<IgnoredParam>, EditError> {
    let mut msg = message.clone();
    let mut env = envelope.clone();
    let mut ignored = Vec::new();
    let mut left_out = |params: Vec<String>, address: &str| {
        ignored.extend(params.into_iter().map(|param| IgnoredParam {
            param,
            address: address.to_string(),
        }))
    };
    let mut i = 0;
    while i < edits.len() {
        match &edits[i] {
            Edit::AddHeader { name, value } => {
                let field = field_bytes(name, value)?;
                let at = split(&msg).header_end;
                insert_field(&mut msg, at, &field);
            }
            Edit::InsertHeader { index, name, value } => {
                let field = field_bytes(name, value)?;
                let s = split(&msg);
                let at = s
                    .fields
                    .get(*index as usize)
                    .map_or(s.header_end, |f| f.start);
                insert_field(&mut msg, at, &field);
            }
            Edit::ChangeHeader { index, name, value } => {
                change_header(&mut msg, (*index).max(1), name, value)?;
            }
            Edit::ReplaceBody(_) => {
                // Consecutive body edits are the chunks of one replacement.
                let mut body = Vec::new();
                while let Some(Edit::ReplaceBody(chunk)) = edits.get(i) {
                    body.extend_from_slice(chunk);
                    i += 1;
                }
                replace_body(&mut msg, &body);
                continue;
            }
            Edit::AddRcpt { rcpt, args } => {
                let addr = address(rcpt)?;
                let args = args.as_deref().unwrap_or("");
                if env
                    .recipients
                    .iter()
                    .any(|r| same_address(&r.address, &addr))
                {
                    // Already a recipient: it keeps what it has.
                    let all = args.split_ascii_whitespace().map(str::to_string).collect();
                    left_out(all, &addr);
                } else {
                    let mut r = Recipient::new(addr);
                    left_out(rcpt_params(args, &mut r), &r.address);
                    env.recipients.push(r);
                }
            }
            Edit::DelRcpt(rcpt) => env.recipients.retain(|r| !same_address(&r.address, rcpt)),
            Edit::ChangeFrom { sender, args } => {
                env.sender = address(sender)?;
                let params = sender_params(args.as_deref().unwrap_or(""), &mut env);
                left_out(params, &env.sender);
            }
            Edit::Quarantine(_) => {}
        }
        i += 1;
    }
    *message = msg;
    *envelope = env;
    Ok(ignored)
}

/// `name:value` with CRLF line ends, checked so it stays one field.
fn field_bytes(name: &str, value: &str) -> Result<Vec<u8>, EditError> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(EditError::HeaderName(name.to_string()));
    }
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    let value = value.strip_suffix('\n').unwrap_or(value);
    let value = value.strip_suffix('\r').unwrap_or(value);
    for (n, line) in value.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if n > 0 {
            let bad = |why| EditError::HeaderValue {
                name: name.to_string(),
                why,
            };
            if line.trim_matches([' ', '\t']).is_empty() {
                return Err(bad("empty continuation line"));
            }
            if !line.starts_with([' ', '\t']) {
                return Err(bad("continuation line does not start with a blank"));
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Inserts a field at `at`, first ending an unterminated last header line.
fn insert_field(msg: &mut Vec<u8>, at: usize, field: &[u8]) {
    let mut bytes = Vec::with_capacity(field.len() + 2);
    if at > 0 && msg[at - 1] != b'\n' {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(field);
    msg.splice(at..at, bytes);
}

fn change_header(msg: &mut Vec<u8>, index: u32, name: &str, value: &str) -> Result<(), EditError> {
    let field = if value.is_empty() {
        None
    } else {
        Some(field_bytes(name, value)?)
    };
    let s: Split = split(msg);
    let found = s
        .fields
        .iter()
        .filter(|f| f.name(msg).eq_ignore_ascii_case(name.as_bytes()))
        .nth(index as usize - 1)
        .copied();
    match (found, field) {
        (Some(f), Some(bytes)) => {
            let mut bytes = bytes;
            if f.end == msg.len() && msg.last() != Some(&b'\n') {
                // The field was the unterminated end of the message.
                bytes.truncate(bytes.len() - 2);
            }
            msg.splice(f.start..f.end, bytes);
        }
        (Some(f), None) => {
            msg.drain(f.start..f.end);
        }
        (None, Some(bytes)) => insert_field(msg, s.header_end, &bytes),
        (None, None) => {}
    }
    Ok(())
}

/// Replaces everything after the header block with `body`, line ends made CRLF.
fn replace_body(msg: &mut Vec<u8>, body: &[u8]) {
    let s = split(msg);
    let mut out = msg[..s.header_end].to_vec();
    if s.header_end > 0 && msg[s.header_end - 1] != b'\n' {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !body.is_empty() && prev != b'\n' {
        out.extend_from_slice(b"\r\n");
    }
    *msg = out;
}

/// An address from a filter, without angle brackets, checked.
fn address(raw: &str) -> Result<String, EditError> {
    let bare = strip_brackets(raw);
    let bad = bare.is_empty() && raw.trim() != "<>"
        || bare.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(EditError::Address(raw.to_string()));
    }
    Ok(bare.to_string())
}

fn strip_brackets(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
}

fn same_address(a: &str, b: &str) -> bool {
    strip_brackets(a).eq_ignore_ascii_case(strip_brackets(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from client.example.net (client.example.net [192.0.2.1])\r\n\
\tby mx.example.org (Sloop) with ESMTP id 4FqT2x\r\n\
From: Alice <alice@example.test>\r\n\
To: bob@example.org\r\n\
Subject: Lunch\r\n\
X-Tag: one\r\n\
x-tag: two\r\n\
\r\n\
Shall we meet at noon?\r\n\
-- \r\n\
Alice\r\n";

    fn envelope() -> Envelope {
        let mut bob = Recipient::new("bob@example.org");
        bob.notify = Some("NEVER".into());
        Envelope::new("alice@example.test", vec![bob])
    }

    fn addresses(env: &Envelope) -> Vec<String> {
        env.recipients.iter().map(|r| r.address.clone()).collect()
    }

    fn apply(edits: &[Edit]) -> (String, String, Vec<String>) {
        let mut m = MSG.to_vec();
        let mut env = envelope();
        apply_edits(edits, &mut m, &mut env).unwrap();
        let r = addresses(&env);
        (String::from_utf8(m).unwrap(), env.sender, r)
    }

    fn add(name: &str, value: &str) -> Edit {
        Edit::AddHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn add_header_goes_before_the_blank_line_with_crlf() {
        let (m, _, _) = apply(&[add("X-Spam-Status", " No, score=-0.1\n\ttests=NONE")]);
        assert!(m.contains(
            "x-tag: two\r\nX-Spam-Status: No, score=-0.1\r\n\ttests=NONE\r\n\r\nShall we"
        ));
    }

    #[test]
    fn insert_header_at_index() {
        let sig = Edit::InsertHeader {
            index: 0,
            name: "DKIM-Signature".into(),
            value: " v=1; a=rsa-sha256;\r\n\tb=abc".into(),
        };
        let (m, _, _) = apply(&[sig]);
        assert!(m.starts_with("DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\nReceived: "));
        let third = Edit::InsertHeader {
            index: 2,
            name: "X-A".into(),
            value: " 1".into(),
        };
        let (m, _, _) = apply(&[third]);
        assert!(m.contains("<alice@example.test>\r\nX-A: 1\r\nTo: bob"));
        let past_end = Edit::InsertHeader {
            index: 99,
            name: "X-A".into(),
            value: " 1".into(),
        };
        let (m, _, _) = apply(&[past_end]);
        assert!(m.contains("x-tag: two\r\nX-A: 1\r\n\r\n"));
    }

    #[test]
    fn change_header_nth_occurrence_case_insensitive() {
        let chg = |index, value: &str| Edit::ChangeHeader {
            index,
            name: "X-TAG".into(),
            value: value.into(),
        };
        let (m, _, _) = apply(&[chg(2, " zwei")]);
        assert!(m.contains("X-Tag: one\r\nX-TAG: zwei\r\n\r\n"));
        // Index 0 means the first (Sendmail).
        let (m, _, _) = apply(&[chg(0, " eins")]);
        assert!(m.contains("X-TAG: eins\r\nx-tag: two\r\n"));
        // Empty value deletes.
        let (m, _, _) = apply(&[chg(1, "")]);
        assert!(m.contains("Subject: Lunch\r\nx-tag: two\r\n\r\n"));
        // Missing occurrence: added; deleting a missing one does nothing.
        let (m, _, _) = apply(&[chg(3, " drei")]);
        assert!(m.contains("x-tag: two\r\nX-TAG: drei\r\n\r\n"));
        let (m, _, _) = apply(&[chg(3, "")]);
        assert_eq!(m.as_bytes(), MSG);
        // A folded header changed keeps its fold; indexes see earlier edits.
        let fold = Edit::ChangeHeader {
            index: 1,
            name: "received".into(),
            value: " from x\n\tby y".into(),
        };
        let (m, _, _) = apply(&[fold, chg(1, ""), chg(1, "")]);
        assert!(m.starts_with("received: from x\r\n\tby y\r\nFrom: "));
        assert!(!m.to_lowercase().contains("x-tag"));
    }

    #[test]
    fn body_replacement_concatenates_chunks_and_makes_crlf() {
        let (m, _, _) = apply(&[
            Edit::ReplaceBody(b"line one\nline ".to_vec()),
            Edit::ReplaceBody(b"two\r\nlast".to_vec()),
        ]);
        assert!(m.ends_with("x-tag: two\r\n\r\nline one\r\nline two\r\nlast\r\n"));
        let (m, _, _) = apply(&[Edit::ReplaceBody(Vec::new())]);
        assert!(m.ends_with("x-tag: two\r\n\r\n"));
    }

    #[test]
    fn envelope_edits() {
        let (_, s, r) = apply(&[
            Edit::AddRcpt {
                rcpt: "<carol@example.org>".into(),
                args: None,
            },
            Edit::AddRcpt {
                rcpt: "<BOB@example.org>".into(),
                args: Some("NOTIFY=NEVER".into()),
            },
            Edit::DelRcpt("Bob@Example.Org".into()),
            Edit::ChangeFrom {
                sender: "<>".into(),
                args: None,
            },
            Edit::Quarantine("looks odd".into()),
        ]);
        assert_eq!(s, "");
        assert_eq!(r, vec!["carol@example.org".to_string()]);
        let (_, _, r) = apply(&[Edit::DelRcpt("<bob@example.org>".into())]);
        assert!(r.is_empty());
        let (_, s, _) = apply(&[Edit::ChangeFrom {
            sender: "bounce@example.test".into(),
            args: None,
        }]);
        assert_eq!(s, "bounce@example.test");
    }

    #[test]
    fn esmtp_parameters_of_edits_are_kept_where_the_envelope_can() {
        let mut m = MSG.to_vec();
        let mut env = envelope();
        let ignored = apply_edits(
            &[
                Edit::AddRcpt {
                    rcpt: "<carol@example.org>".into(),
                    args: Some("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol+40example.org".into()),
                },
                // Already a recipient: keeps its NOTIFY=NEVER.
                Edit::AddRcpt {
                    rcpt: "<bob@example.org>".into(),
                    args: Some("NOTIFY=DELAY".into()),
                },
                Edit::ChangeFrom {
                    sender: "<bounce@example.test>".into(),
                    args: Some("RET=HDRS ENVID=abc SIZE=100".into()),
                },
            ],
            &mut m,
            &mut env,
        )
        .unwrap();
        assert_eq!(env.sender, "bounce@example.test");
        assert_eq!(env.ret, Some(sloop_common::spool::Ret::Hdrs));
        assert_eq!(env.envid.as_deref(), Some("abc"));
        assert_eq!(env.recipients[0].address, "bob@example.org");
        assert_eq!(env.recipients[0].notify.as_deref(), Some("NEVER"));
        let carol = &env.recipients[1];
        assert_eq!(carol.address, "carol@example.org");
        assert_eq!(carol.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(carol.orcpt.as_deref(), Some("rfc822;carol+40example.org"));
        let shown: Vec<String> = ignored.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "ESMTP parameter \"NOTIFY=DELAY\" for <bob@example.org> not kept",
                "ESMTP parameter \"SIZE=100\" for <bounce@example.test> not kept",
            ]
        );
    }

    #[test]
    fn all_or_nothing() {
        let mut m = MSG.to_vec();
        let mut env = envelope();
        let cases = [
            (add("Bad Name", "x"), "bad header name \"Bad Name\" in edit"),
            (add("", "x"), "bad header name \"\" in edit"),
            (
                add("X-Inject", " a\nBcc: evil@example.net"),
                "bad value for header X-Inject in edit: continuation line does not start with a blank",
            ),
            (
                add("X-Inject", " a\n\nbody"),
                "bad value for header X-Inject in edit: empty continuation line",
            ),
            (
                Edit::ChangeFrom {
                    sender: "a b@c".into(),
                    args: None,
                },
                "bad address \"a b@c\" in edit",
            ),
            (
                Edit::AddRcpt {
                    rcpt: "".into(),
                    args: None,
                },
                "bad address \"\" in edit",
            ),
        ];
        for (bad, want) in cases {
            let edits = [
                add("X-First", " applied?"),
                Edit::AddRcpt {
                    rcpt: "x@example.org".into(),
                    args: None,
                },
                bad,
            ];
            let err = apply_edits(&edits, &mut m, &mut env).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(m, MSG);
            assert_eq!(env, envelope());
        }
    }

    #[test]
    fn messages_without_separator_or_final_line_end() {
        let mut m = b"Subject: x".to_vec();
        let mut env = Envelope::new("", Vec::new());
        apply_edits(&[add("X-A", " 1")], &mut m, &mut env).unwrap();
        assert_eq!(m, b"Subject: x\r\nX-A: 1\r\n");
        let mut m = b"Subject: x".to_vec();
        let chg = Edit::ChangeHeader {
            index: 1,
            name: "Subject".into(),
            value: " y".into(),
        };
        apply_edits(&[chg], &mut m, &mut env).unwrap();
        assert_eq!(m, b"Subject: y");
        let mut m = b"Subject: x\r\nnot a header\r\n".to_vec();
        apply_edits(&[Edit::ReplaceBody(b"new".to_vec())], &mut m, &mut env).unwrap();
        assert_eq!(m, b"Subject: x\r\n\r\nnew\r\n");
    }
}
