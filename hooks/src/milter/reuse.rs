//! Keeping a filter connection for the next SMTP session (`SMFIC_QUIT_NC`, protocol 6),
//! without I/O: where the filter stands, and how to say goodbye.
//!
//! libmilter (sendmail's `libmilter/engine.c`) takes QUIT_NC in two states only: at the
//! end of a message the filter answered with "continue", and right after an
//! unknown-command event. Anywhere else it ignores QUIT_NC, and then ignores the
//! connect event that follows without answering it, so an MTA waiting for that answer
//! would stall. OpenDKIM, for one, answers the end of a message it signed with
//! "accept", which puts libmilter back in its HELO state. So the session tracks where
//! the filter stands ([`Rest`]); when it is not at the end of a message answered with
//! "continue", an unknown-command event goes first (`SMFIC_UNKNOWN` with the text
//! `QUIT`, the command that ended the SMTP session: libmilter takes it in every state
//! and answers it itself when the filter has no callback for it), and if the filter
//! answers that with "accept" (libmilter's HELO state again) the connection is closed
//! with `SMFIC_QUIT` instead. A filter that does not speak QUIT_NC at all closes the
//! connection or leaves it unusable; the next session sees that before using it
//! (`Wire::quiet`) or at its connect event, and connects again.
//!
//! A kept connection is used for at most [`MAX_SESSIONS`] SMTP sessions and is closed
//! after [`MAX_IDLE`] unused (filters time out idle connections of their own: rspamd
//! after its `timeout`, libmilter after two hours).

use std::time::{Duration, Instant};

use super::codec::Reply;

/// SMTP sessions one filter connection serves at most.
pub const MAX_SESSIONS: u32 = 100;

/// How long a kept connection may wait for the next session.
pub const MAX_IDLE: Duration = Duration::from_secs(60);

/// The text of the unknown-command event sent before QUIT_NC.
pub(crate) const UNKNOWN_TEXT: &str = "QUIT";

/// Where the filter stands between events, as far as QUIT_NC is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rest {
    /// At the end of a message it answered with "continue": QUIT_NC is taken as it is.
    EndOfMessage,
    /// Anywhere else (after connect, HELO, an abort, a message it accepted or
    /// refused, ...).
    Elsewhere,
}

/// How the connection ends with the SMTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goodbye {
    /// `SMFIC_QUIT`: the connection closes.
    Quit,
    /// `SMFIC_QUIT_NC` at once; the connection is kept.
    QuitNc,
    /// An unknown-command event first, then (unless the filter accepts it)
    /// `SMFIC_QUIT_NC`; the connection is kept.
    UnknownThenQuitNc,
}

/// How to end a connection that is still sound. `sessions` is the number of SMTP
/// sessions it has served, the one ending included; `version` the negotiated
/// protocol version (QUIT_NC is version 6).
pub(crate) fn goodbye(reuse: bool, version: u32, sessions: u32, rest: Rest) -> Goodbye {
    if !reuse || version < 6 || sessions >= MAX_SESSIONS {
        return Goodbye::Quit;
    }
    match rest {
        Rest::EndOfMessage => Goodbye::QuitNc,
        Rest::Elsewhere => Goodbye::UnknownThenQuitNc,
    }
}

/// Whether QUIT_NC may follow the filter's reply to the unknown-command event:
/// `Some(true)` yes, `Some(false)` no (close instead), `None` read the next reply
/// (a progress report).
pub(crate) fn after_unknown(reply: &Reply) -> Option<bool> {
    match reply {
        // libmilter stays in its unknown-command state after any of these.
        Reply::Continue
        | Reply::Reject
        | Reply::Tempfail
        | Reply::Discard
        | Reply::ReplyCode(_) => Some(true),
        Reply::Progress => None,
        // "accept" puts libmilter back at HELO, where QUIT_NC is ignored; anything
        // else is not a reply to this event.
        _ => Some(false),
    }
}

/// Whether a connection kept since `idle_since` may still be used at `now`.
pub(crate) fn fresh(idle_since: Instant, now: Instant) -> bool {
    now.saturating_duration_since(idle_since) < MAX_IDLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_nc_goes_straight_only_after_a_continued_message() {
        assert_eq!(goodbye(true, 6, 1, Rest::EndOfMessage), Goodbye::QuitNc);
        assert_eq!(
            goodbye(true, 6, 1, Rest::Elsewhere),
            Goodbye::UnknownThenQuitNc
        );
    }

    #[test]
    fn no_reuse_when_switched_off_old_version_or_worn_out() {
        assert_eq!(goodbye(false, 6, 1, Rest::EndOfMessage), Goodbye::Quit);
        assert_eq!(goodbye(true, 5, 1, Rest::EndOfMessage), Goodbye::Quit);
        assert_eq!(goodbye(true, 2, 1, Rest::Elsewhere), Goodbye::Quit);
        assert_eq!(
            goodbye(true, 6, MAX_SESSIONS - 1, Rest::EndOfMessage),
            Goodbye::QuitNc
        );
        assert_eq!(
            goodbye(true, 6, MAX_SESSIONS, Rest::EndOfMessage),
            Goodbye::Quit
        );
    }

    #[test]
    fn an_accepted_unknown_command_closes_instead() {
        assert_eq!(after_unknown(&Reply::Continue), Some(true));
        assert_eq!(after_unknown(&Reply::Reject), Some(true));
        assert_eq!(after_unknown(&Reply::Tempfail), Some(true));
        assert_eq!(
            after_unknown(&Reply::ReplyCode("500 5.5.1 no".into())),
            Some(true)
        );
        assert_eq!(after_unknown(&Reply::Progress), None);
        assert_eq!(after_unknown(&Reply::Accept), Some(false));
        assert_eq!(after_unknown(&Reply::AddRcpt("<a@b>".into())), Some(false));
    }

    #[test]
    fn idle_connections_go_stale() {
        let t = Instant::now();
        assert!(fresh(t, t));
        assert!(fresh(t, t + MAX_IDLE - Duration::from_millis(1)));
        assert!(!fresh(t, t + MAX_IDLE));
        // A clock that seems to go back does not keep a connection forever.
        assert!(fresh(t + Duration::from_secs(1), t));
    }
}
