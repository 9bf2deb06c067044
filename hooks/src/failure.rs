//! The one failure policy of every hook, and the replies hooks may give.
//!
//! Pure functions, no I/O (beyond one log line each where a reply was changed):
//! - [`on_error_reply`]: what a failed hook (unreachable, silent, garbage, an unknown
//!   action, an answer illegal for its stage) makes of the stage, by its `on_error`:
//!   `accept` goes on; `tempfail` is `451 4.3.5` (at connect and HELO `421 4.3.5` and
//!   close); `reject` is `550 5.3.5` (at connect `554 5.3.5`); `shutdown` is
//!   `421 4.3.5` and close.
//! - [`legalize`]: a hook's own reply code forced legal for the stage. Only 4xx and 5xx
//!   are replies a hook can give (2xx or 3xx from a milter's `y` is a failure of the
//!   hook); at connect 4xx becomes 421 and 5xx 554 (RFC 5321 §3.1: the greeting is
//!   220, 421 or 554), with a `notice: hook NAME: ... sent as 421` line; an enhanced
//!   code whose class disagrees with the basic code is replaced.
//! - [`sanitize`]: reply text without CR, LF, NUL or other controls, valid UTF-8,
//!   at most [`MAX_TEXT`] octets, with a `notice: hook NAME: reply text sanitized`
//!   line when anything was changed.
//!
//! Nothing here can fail or panic: a hook's answer always ends in a well-formed reply.

use sloop_common::config::hooks::{HookStage, OnError};

/// Longest reply text taken from a hook, in octets (the SMTP line limit is 512 with
/// the codes and the CRLF).
pub const MAX_TEXT: usize = 400;

/// A reply decided by a hook (or by the failure policy), legal for its stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReply {
    /// 421, 4xx, 5xx (at connect only 421 and 554).
    pub code: u16,
    /// The enhanced status code; its class is the basic code's.
    pub enhanced: (u8, u16, u16),
    /// Clean text (see [`sanitize`]).
    pub text: String,
}

impl HookReply {
    /// A reply with text already clean.
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> HookReply {
        HookReply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// True when the session ends after this reply (`421`, `521`).
    pub fn closes(&self) -> bool {
        self.code == 421 || self.code == 521
    }

    /// True for a temporary (4xx) reply.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// `450 4.7.1 text`, for logs.
    pub fn summary(&self) -> String {
        let (a, b, c) = self.enhanced;
        format!("{} {a}.{b}.{c} {}", self.code, self.text)
    }
}

/// The text of the failure replies.
const CONFIG_PROBLEM: &str = "Server configuration problem";

/// What a failed hook makes of `stage`: `None` for `accept` (go on as if the hook had
/// said nothing), else the reply.
pub fn on_error_reply(stage: HookStage, on_error: OnError) -> Option<HookReply> {
    match on_error {
        OnError::Accept => None,
        OnError::Tempfail if stage.is_session_phase() => {
            Some(HookReply::new(421, (4, 3, 5), CONFIG_PROBLEM))
        }
        OnError::Tempfail => Some(HookReply::new(451, (4, 3, 5), CONFIG_PROBLEM)),
        OnError::Reject if stage == HookStage::Connect => {
            Some(HookReply::new(554, (5, 3, 5), CONFIG_PROBLEM))
        }
        OnError::Reject => Some(HookReply::new(550, (5, 3, 5), CONFIG_PROBLEM)),
        OnError::Shutdown => Some(HookReply::new(421, (4, 3, 5), CONFIG_PROBLEM)),
    }
}

/// A code a hook may not give (2xx, 3xx, or not a reply code at all): a failure of the
/// hook, whose `on_error` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalCode(pub u16);

impl std::fmt::Display for IllegalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "illegal reply code {}", self.0)
    }
}

impl std::error::Error for IllegalCode {}

/// A hook's reply (code, optional enhanced code, raw text) made legal for `stage`;
/// `hook` names it in the notice lines. `default_detail` is the enhanced code used
/// when the hook gave none or a wrong one (`(7, 1)` gives `4.7.1`/`5.7.1`).
pub fn legalize(
    stage: HookStage,
    hook: &str,
    code: u16,
    enhanced: Option<(u8, u16, u16)>,
    text: &str,
) -> Result<HookReply, IllegalCode> {
    if !(400..600).contains(&code) {
        return Err(IllegalCode(code));
    }
    let mut legal = code;
    if stage == HookStage::Connect {
        legal = if code < 500 { 421 } else { 554 };
        if legal != code {
            log::info!("notice: hook {hook}: {code} reply at connect sent as {legal}");
        }
    }
    let class = (legal / 100) as u8;
    let enhanced = match enhanced {
        Some(e) if e.0 == class => e,
        _ => (class, 7, 1),
    };
    Ok(HookReply::new(legal, enhanced, sanitize(hook, text)))
}

/// `text` with every control character (CR, LF, NUL, TAB, DEL, ...) replaced by a
/// space and cut to [`MAX_TEXT`] octets on a character boundary; logs one notice when
/// anything changed. Invalid UTF-8 is replaced before (see [`sanitize_bytes`]).
pub fn sanitize(hook: &str, text: &str) -> String {
    let (clean, changed) = clean(text);
    if changed {
        log::info!("notice: hook {hook}: reply text sanitized");
    }
    clean
}

/// As [`sanitize`], for octets that may not be UTF-8 (each bad sequence becomes U+FFFD).
pub fn sanitize_bytes(hook: &str, text: &[u8]) -> String {
    match std::str::from_utf8(text) {
        Ok(s) => sanitize(hook, s),
        Err(_) => {
            let lossy = String::from_utf8_lossy(text);
            log::info!("notice: hook {hook}: reply text sanitized");
            clean(&lossy).0
        }
    }
}

/// The cleaning itself: (clean text, whether anything changed).
fn clean(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    let mut changed = false;
    for c in text.chars() {
        let c = if c.is_control() {
            changed = true;
            ' '
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_TEXT {
            changed = true;
            break;
        }
        out.push(c);
    }
    (out, changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use HookStage::*;

    const ALL: [HookStage; 6] = [Connect, Helo, Mail, Rcpt, Data, Eom];

    #[test]
    fn on_error_gives_the_table_of_the_failure_policy() {
        for s in ALL {
            assert_eq!(on_error_reply(s, OnError::Accept), None);
            let shut = on_error_reply(s, OnError::Shutdown).unwrap();
            assert_eq!((shut.code, shut.enhanced), (421, (4, 3, 5)));
            assert!(shut.closes());
        }
        let t = |s| on_error_reply(s, OnError::Tempfail).unwrap();
        assert_eq!(t(Connect).code, 421);
        assert_eq!(t(Helo).code, 421);
        for s in [Mail, Rcpt, Data, Eom] {
            assert_eq!((t(s).code, t(s).enhanced), (451, (4, 3, 5)));
            assert!(!t(s).closes());
        }
        let r = |s| on_error_reply(s, OnError::Reject).unwrap();
        assert_eq!((r(Connect).code, r(Connect).enhanced), (554, (5, 3, 5)));
        for s in [Helo, Mail, Rcpt, Data, Eom] {
            assert_eq!((r(s).code, r(s).enhanced), (550, (5, 3, 5)));
        }
    }

    #[test]
    fn connect_codes_become_421_or_554() {
        let r = legalize(Connect, "pg", 450, Some((4, 7, 1)), "later").unwrap();
        assert_eq!((r.code, r.enhanced), (421, (4, 7, 1)));
        assert!(r.closes());
        let r = legalize(Connect, "pg", 550, None, "no").unwrap();
        assert_eq!((r.code, r.enhanced), (554, (5, 7, 1)));
        assert!(!r.closes());
        let r = legalize(Connect, "pg", 521, None, "no").unwrap();
        assert_eq!(r.code, 554);
    }

    #[test]
    fn other_stages_keep_the_code_and_fix_the_enhanced_class() {
        let r = legalize(Rcpt, "pg", 450, Some((5, 1, 1)), "x").unwrap();
        assert_eq!((r.code, r.enhanced), (450, (4, 7, 1)));
        let r = legalize(Mail, "pg", 553, Some((5, 1, 8)), "x").unwrap();
        assert_eq!((r.code, r.enhanced), (553, (5, 1, 8)));
        assert!(legalize(Mail, "m", 421, None, "x").unwrap().closes());
        assert!(legalize(Mail, "m", 521, None, "x").unwrap().closes());
    }

    #[test]
    fn success_and_nonsense_codes_are_failures() {
        for code in [0, 199, 200, 250, 354, 600, 999] {
            assert_eq!(
                legalize(Eom, "m", code, None, "x"),
                Err(IllegalCode(code)),
                "{code}"
            );
        }
    }

    #[test]
    fn text_loses_controls_and_is_clamped_on_a_char_boundary() {
        assert_eq!(sanitize("h", "fine text"), "fine text");
        assert_eq!(sanitize("h", "a\r\nb\0c\td"), "a  b c d");
        let long = "é".repeat(300);
        let s = sanitize("h", &long);
        assert!(s.len() <= MAX_TEXT && s.len() >= MAX_TEXT - 1);
        assert!(s.chars().all(|c| c == 'é'));
        assert_eq!(sanitize_bytes("h", b"ok\xffok"), "ok\u{fffd}ok");
        assert_eq!(sanitize_bytes("h", b"plain"), "plain");
    }
}
