//! What a policy service's `action=` value means, with Postfix's access(5) semantics
//! as its `check_policy_service` applies them.
//!
//! The value is a keyword (compared without case), optionally followed by spaces or
//! tabs and a text: `REJECT Not here`, `DEFER_IF_PERMIT Greylisted`,
//! `450 4.7.1 Try later`, `PREPEND X-Greylist: delayed 300 seconds`. A value made of
//! digits only means `OK` (some services answer a time stamp). `DUNNO` and `OK` ignore
//! their text, as Postfix does. A keyword Sloop does not implement (`FILTER`,
//! `REDIRECT`, `BCC`, `HANGUP`, a restriction name) is [`ProtoError::UnknownAction`]:
//! the service's `on_error` applies, it is never taken for an accept.
//!
//! Texts are kept as the service sent them (UTF-8, without CR, LF or NUL, which the
//! framing refuses); the engine sanitizes and clamps them before they reach a client.
//! An optional RFC 3463 code at the start of a text (`5.7.1 Go away`) is the
//! service's; [`split_enhanced`] separates it.

use super::proto::ProtoError;

/// An RFC 3463 enhanced status code `class.subject.detail` (`(4, 7, 1)` = `4.7.1`).
pub type Enhanced = (u8, u16, u16);

/// One policy service answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `OK` (or `RELAY`, or digits only): this check accepts; the later policy services
    /// of the stage are skipped. Never grants relaying.
    Ok,
    /// `DUNNO`: no decision, ask the next check.
    Dunno,
    /// `REJECT [text]`: a permanent refusal (`554`/`550 5.7.1` unless the text starts
    /// with its own enhanced code).
    Reject(Option<String>),
    /// `DEFER [text]`: a temporary refusal (`450 4.7.1`).
    Defer(Option<String>),
    /// `DEFER_IF_PERMIT [text]`: refuse temporarily if the stage would otherwise
    /// accept (greylisting).
    DeferIfPermit(Option<String>),
    /// `DEFER_IF_REJECT [text]`: if the stage refuses permanently, refuse temporarily
    /// instead.
    DeferIfReject(Option<String>),
    /// `4NN text` / `5NN text`, with an optional enhanced code at the start of the
    /// text (its class is made to agree with `code`). `text` may be empty when only an
    /// enhanced code was given (`450 4.7.1`): the engine supplies a default text.
    Code {
        code: u16,
        enhanced: Option<Enhanced>,
        text: String,
    },
    /// `HOLD [text]`: accept, but the message goes to `hold/`.
    Hold(Option<String>),
    /// `DISCARD [text]`: claim success, then drop the message.
    Discard(Option<String>),
    /// `PREPEND name: value`: add this header on top of the message (the text is
    /// checked to start with a header name and a colon).
    Prepend(String),
    /// `INFO [text]`: log only.
    Info(String),
    /// `WARN [text]`: log only, as a warning.
    Warn(String),
}

impl Action {
    /// Reads an `action=` value (without the `action=`).
    pub fn parse(value: &str) -> Result<Action, ProtoError> {
        let cmd_end = value.find([' ', '\t']).unwrap_or(value.len());
        let (cmd, rest) = value.split_at(cmd_end);
        let text = rest.trim_start_matches([' ', '\t']);
        let opt = || (!text.is_empty()).then(|| text.to_string());
        let keyword = cmd.to_ascii_uppercase();
        let action = match keyword.as_str() {
            "DUNNO" => Action::Dunno,
            "OK" | "RELAY" => Action::Ok,
            "REJECT" => Action::Reject(opt()),
            "DEFER" => Action::Defer(opt()),
            "DEFER_IF_PERMIT" => Action::DeferIfPermit(opt()),
            "DEFER_IF_REJECT" => Action::DeferIfReject(opt()),
            "HOLD" => Action::Hold(opt()),
            "DISCARD" => Action::Discard(opt()),
            "INFO" => Action::Info(text.to_string()),
            "WARN" => Action::Warn(text.to_string()),
            "PREPEND" if is_header(text) => Action::Prepend(text.to_string()),
            "PREPEND" => return Err(ProtoError::BadPrepend(clamp(text, 64))),
            _ if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Action::Ok,
            _ => match reply_code(cmd) {
                Some(code) if !text.is_empty() => {
                    let (enhanced, rest) = split_enhanced(text);
                    let class = (code / 100) as u8;
                    Action::Code {
                        code,
                        enhanced: enhanced.map(|(_, s, d)| (class, s, d)),
                        text: rest.to_string(),
                    }
                }
                _ => return Err(ProtoError::UnknownAction(clamp(cmd, 64))),
            },
        };
        Ok(action)
    }

    /// The `action=` value that reads back as this action (`REJECT Not here`,
    /// `450 4.7.1 Greylisted`). A digits-only `OK` is written `OK`.
    pub fn to_value(&self) -> String {
        fn with(keyword: &str, text: &Option<String>) -> String {
            match text {
                Some(t) => format!("{keyword} {t}"),
                None => keyword.to_string(),
            }
        }
        fn with_text(keyword: &str, text: &str) -> String {
            if text.is_empty() {
                keyword.to_string()
            } else {
                format!("{keyword} {text}")
            }
        }
        match self {
            Action::Ok => "OK".to_string(),
            Action::Dunno => "DUNNO".to_string(),
            Action::Reject(t) => with("REJECT", t),
            Action::Defer(t) => with("DEFER", t),
            Action::DeferIfPermit(t) => with("DEFER_IF_PERMIT", t),
            Action::DeferIfReject(t) => with("DEFER_IF_REJECT", t),
            Action::Hold(t) => with("HOLD", t),
            Action::Discard(t) => with("DISCARD", t),
            Action::Prepend(h) => format!("PREPEND {h}"),
            Action::Info(t) => with_text("INFO", t),
            Action::Warn(t) => with_text("WARN", t),
            Action::Code {
                code,
                enhanced,
                text,
            } => {
                let mut v = code.to_string();
                if let Some((c, s, d)) = enhanced {
                    v.push_str(&format!(" {c}.{s}.{d}"));
                }
                if !text.is_empty() {
                    v.push(' ');
                    v.push_str(text);
                }
                v
            }
        }
    }

    /// The action's keyword for logs (`DEFER_IF_PERMIT`; a code action is its code).
    pub fn keyword(&self) -> String {
        match self {
            Action::Ok => "OK".into(),
            Action::Dunno => "DUNNO".into(),
            Action::Reject(_) => "REJECT".into(),
            Action::Defer(_) => "DEFER".into(),
            Action::DeferIfPermit(_) => "DEFER_IF_PERMIT".into(),
            Action::DeferIfReject(_) => "DEFER_IF_REJECT".into(),
            Action::Hold(_) => "HOLD".into(),
            Action::Discard(_) => "DISCARD".into(),
            Action::Prepend(_) => "PREPEND".into(),
            Action::Info(_) => "INFO".into(),
            Action::Warn(_) => "WARN".into(),
            Action::Code { code, .. } => code.to_string(),
        }
    }
}

/// Splits an RFC 3463 code off the start of a reply text, as Postfix's `dsn_split`
/// does: `"4.7.1 Greylisted"` gives `(Some((4, 7, 1)), "Greylisted")`. The code must
/// have class 2, 4 or 5, one to three digits for subject and detail, and be followed
/// by a space, a tab or the end; otherwise the text is returned whole.
pub fn split_enhanced(text: &str) -> (Option<Enhanced>, &str) {
    let end = text.find([' ', '\t']).unwrap_or(text.len());
    let (head, rest) = text.split_at(end);
    let mut parts = head.split('.');
    let (Some(c), Some(s), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (None, text);
    };
    let digits = |p: &str, max: usize| {
        (!p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    match (digits(c, 1), digits(s, 3), digits(d, 3)) {
        (Some(c @ (2 | 4 | 5)), Some(s), Some(d)) => {
            (Some((c as u8, s, d)), rest.trim_start_matches([' ', '\t']))
        }
        _ => (None, text),
    }
}

/// `4NN` or `5NN`: a reply code a service may answer with.
fn reply_code(cmd: &str) -> Option<u16> {
    let b = cmd.as_bytes();
    let ok = b.len() == 3 && matches!(b[0], b'4' | b'5') && b[1..].iter().all(u8::is_ascii_digit);
    ok.then(|| cmd.parse().ok()).flatten()
}

/// True when `text` starts with an RFC 5322 field name (printable ASCII but the colon)
/// immediately followed by a colon.
fn is_header(text: &str) -> bool {
    match text.find(':') {
        Some(n) if n > 0 => text.as_bytes()[..n]
            .iter()
            .all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

/// At most `max` characters of `s`, for error messages.
fn clamp(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Action {
        Action::parse(v).unwrap()
    }

    fn s(t: &str) -> Option<String> {
        Some(t.to_string())
    }

    #[test]
    fn keywords_without_case_and_with_text() {
        assert_eq!(p("OK"), Action::Ok);
        assert_eq!(p("ok"), Action::Ok);
        assert_eq!(p("OK whatever"), Action::Ok);
        assert_eq!(p("RELAY"), Action::Ok);
        assert_eq!(p("DUNNO"), Action::Dunno);
        assert_eq!(p("dunno ignored text"), Action::Dunno);
        assert_eq!(p("REJECT"), Action::Reject(None));
        assert_eq!(p("REJECT  Not\there "), Action::Reject(s("Not\there ")));
        assert_eq!(p("Defer"), Action::Defer(None));
        assert_eq!(p("DEFER try later"), Action::Defer(s("try later")));
        assert_eq!(
            p("DEFER_IF_PERMIT Greylisted, see http://x/"),
            Action::DeferIfPermit(s("Greylisted, see http://x/"))
        );
        assert_eq!(p("DEFER_IF_PERMIT"), Action::DeferIfPermit(None));
        assert_eq!(p("defer_if_reject\tSPF"), Action::DeferIfReject(s("SPF")));
        assert_eq!(p("HOLD"), Action::Hold(None));
        assert_eq!(p("HOLD review"), Action::Hold(s("review")));
        assert_eq!(p("DISCARD spam"), Action::Discard(s("spam")));
        assert_eq!(p("INFO"), Action::Info(String::new()));
        assert_eq!(p("INFO seen"), Action::Info("seen".into()));
        assert_eq!(p("WARN odd"), Action::Warn("odd".into()));
    }

    #[test]
    fn digits_only_mean_ok() {
        assert_eq!(p("1733212345"), Action::Ok);
        // Postfix: all digits wins over the reply-code reading.
        assert_eq!(p("450"), Action::Ok);
        assert_eq!(p("0"), Action::Ok);
    }

    #[test]
    fn reply_codes_with_text_and_enhanced_code() {
        assert_eq!(
            p("450 4.7.1 Greylisted"),
            Action::Code {
                code: 450,
                enhanced: Some((4, 7, 1)),
                text: "Greylisted".into()
            }
        );
        assert_eq!(
            p("554 Go away"),
            Action::Code {
                code: 554,
                enhanced: None,
                text: "Go away".into()
            }
        );
        // The enhanced code's class follows the reply code, as Postfix makes it.
        assert_eq!(
            p("450 5.7.1 Later"),
            Action::Code {
                code: 450,
                enhanced: Some((4, 7, 1)),
                text: "Later".into()
            }
        );
        assert_eq!(
            p("421 4.3.2 Shutting down"),
            Action::Code {
                code: 421,
                enhanced: Some((4, 3, 2)),
                text: "Shutting down".into()
            }
        );
        assert_eq!(
            p("521 5.7.1"),
            Action::Code {
                code: 521,
                enhanced: Some((5, 7, 1)),
                text: String::new()
            }
        );
        // Not an enhanced code: kept as text.
        assert_eq!(
            p("550 5.7.1x bad"),
            Action::Code {
                code: 550,
                enhanced: None,
                text: "5.7.1x bad".into()
            }
        );
    }

    #[test]
    fn codes_outside_4xx_5xx_or_without_text_are_unknown() {
        for v in [
            "250 fine", "350 x", "650 x", "45 x", "4500 x", "45a x", "450 ",
        ] {
            assert!(
                matches!(Action::parse(v), Err(ProtoError::UnknownAction(_))),
                "{v:?}"
            );
        }
    }

    #[test]
    fn unknown_and_unsupported_actions_are_errors() {
        for (v, word) in [
            ("FROBNICATE", "FROBNICATE"),
            ("FROBNICATE now", "FROBNICATE"),
            ("FILTER smtp:[127.0.0.1]:10025", "FILTER"),
            ("REDIRECT a@b", "REDIRECT"),
            ("BCC a@b", "BCC"),
            ("HANGUP", "HANGUP"),
            ("reject_unauth_destination", "reject_unauth_destination"),
            ("", ""),
            (" OK", ""),
            ("OK\r", "OK\r"),
        ] {
            assert_eq!(
                Action::parse(v),
                Err(ProtoError::UnknownAction(word.into())),
                "{v:?}"
            );
        }
    }

    #[test]
    fn prepend_needs_a_header() {
        assert_eq!(
            p("PREPEND X-Greylist: delayed 3 seconds"),
            Action::Prepend("X-Greylist: delayed 3 seconds".into())
        );
        assert_eq!(
            p("prepend Received-SPF:Pass"),
            Action::Prepend("Received-SPF:Pass".into())
        );
        for v in [
            "PREPEND",
            "PREPEND no colon",
            "PREPEND : x",
            "PREPEND X Y: z",
            "PREPEND Ä: x",
        ] {
            assert!(
                matches!(Action::parse(v), Err(ProtoError::BadPrepend(_))),
                "{v:?}"
            );
        }
    }

    #[test]
    fn enhanced_code_split() {
        assert_eq!(
            split_enhanced("4.7.1 Greylisted"),
            (Some((4, 7, 1)), "Greylisted")
        );
        assert_eq!(split_enhanced("5.1.10"), (Some((5, 1, 10)), ""));
        assert_eq!(split_enhanced("2.0.0\tok"), (Some((2, 0, 0)), "ok"));
        assert_eq!(split_enhanced("5.123.999 x"), (Some((5, 123, 999)), "x"));
        for t in [
            "3.7.1 x",
            "4.7 x",
            "4.7.1.2 x",
            "4.1234.1 x",
            "44.7.1 x",
            "4..1 x",
            "x",
        ] {
            assert_eq!(split_enhanced(t), (None, t));
        }
    }

    #[test]
    fn every_action_reads_back_from_its_value() {
        let all = [
            Action::Ok,
            Action::Dunno,
            Action::Reject(None),
            Action::Reject(s("5.7.1 no")),
            Action::Defer(s("later")),
            Action::DeferIfPermit(s("Greylisted")),
            Action::DeferIfReject(None),
            Action::Hold(s("look")),
            Action::Discard(None),
            Action::Prepend("X-A: b".into()),
            Action::Info(String::new()),
            Action::Warn("w".into()),
            Action::Code {
                code: 451,
                enhanced: Some((4, 3, 0)),
                text: String::new(),
            },
            Action::Code {
                code: 550,
                enhanced: None,
                text: "no".into(),
            },
        ];
        for a in all {
            assert_eq!(Action::parse(&a.to_value()), Ok(a.clone()), "{a:?}");
        }
    }
}
