//! Exit codes at Sloop's process boundaries, one mapping each (STYLE.md point 3).
//!
//! - `sloop-queue` follows qmail-queue(8): 0 committed; 11-40 permanent; anything else
//!   temporary. [`queue_verdict`] is the one place a caller turns a code into a class.
//! - Operator and sendmail tools use sysexits(3).

/// qmail-queue: message committed.
pub const QQ_OK: i32 = 0;
/// qmail-queue: address too long (permanent).
pub const QQ_ADDRESS_TOO_LONG: i32 = 11;
/// qmail-queue: the queue permanently refuses the message (too large).
pub const QQ_PERM_REFUSED: i32 = 31;
/// qmail-queue: out of memory (temporary).
pub const QQ_NOMEM: i32 = 51;
/// qmail-queue: timeout (temporary).
pub const QQ_TIMEOUT: i32 = 52;
/// qmail-queue: write error, e.g. disk full (temporary).
pub const QQ_WRITE_ERROR: i32 = 53;
/// qmail-queue: unable to read the message or envelope (temporary).
pub const QQ_READ_ERROR: i32 = 54;
/// qmail-queue: unable to read the configuration (temporary).
pub const QQ_CONFIG_ERROR: i32 = 55;
/// qmail-queue: trouble in the queue directory (temporary).
pub const QQ_QUEUE_DIR: i32 = 62;
/// qmail-queue: internal bug (temporary).
pub const QQ_BUG: i32 = 81;
/// qmail-queue: envelope format error (qmail treats 91 as temporary; so do we).
pub const QQ_ENVELOPE_FORMAT: i32 = 91;

/// What a queue program's exit status means to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueVerdict {
    Committed,
    Permanent,
    Temporary,
}

/// The class of a queue program's exit code (qmail-queue(8)).
pub fn queue_verdict(code: i32) -> QueueVerdict {
    match code {
        0 => QueueVerdict::Committed,
        11..=40 => QueueVerdict::Permanent,
        _ => QueueVerdict::Temporary,
    }
}

/// `sloop-smtpd`: the worker was ended by its watchdog (a session blocked past its
/// deadline plus `smtpd.watchdog_grace`). One stuck session, not a broken program:
/// `sloopd` replaces the worker at once and does not count it toward restart backoff.
/// (The value is EX_TEMPFAIL's; no other path of the smtpd exits with it.)
pub const SMTPD_WATCHDOG: i32 = 75;

/// sysexits(3).
pub const EX_OK: i32 = 0;
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOINPUT: i32 = 66;
pub const EX_NOUSER: i32 = 67;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_OSERR: i32 = 71;
pub const EX_CANTCREAT: i32 = 73;
pub const EX_IOERR: i32 = 74;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_NOPERM: i32 = 77;
/// Configuration error: `sloopd` refuses to start with this (docs/invariants.md G6).
pub const EX_CONFIG: i32 = 78;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmail_ranges() {
        assert_eq!(queue_verdict(0), QueueVerdict::Committed);
        assert_eq!(queue_verdict(11), QueueVerdict::Permanent);
        assert_eq!(queue_verdict(31), QueueVerdict::Permanent);
        assert_eq!(queue_verdict(40), QueueVerdict::Permanent);
        assert_eq!(queue_verdict(41), QueueVerdict::Temporary);
        assert_eq!(queue_verdict(91), QueueVerdict::Temporary);
        assert_eq!(queue_verdict(-1), QueueVerdict::Temporary);
    }
}
