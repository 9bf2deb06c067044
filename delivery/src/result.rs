//! The result of one delivery attempt for one recipient, as it goes back to the queue
//! manager on the pipe (common/src/delivery_proto.rs) and into the log.
//!
//! Every way a delivery can end is one of three outcomes (qmail-local's 0/100/111):
//! `ok` (final, delivered), `fail` (final, the sender gets a bounce) and `defer` (try
//! again later). Each result carries an enhanced status code (RFC 3463) and a text
//! that is safe to log and to put in a bounce. Building a result cannot fail.

use sloop_common::spool::status::Outcome;

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    pub outcome: Outcome,
    /// Enhanced status code such as `2.0.0`.
    pub dsn: String,
    /// Where it went: `local`, `mx.example.com[192.0.2.1]:25`, or empty.
    pub relay: String,
    pub text: String,
}

impl RcptResult {
    /// Delivered.
    pub fn ok(dsn: &str, text: impl Into<String>) -> RcptResult {
        RcptResult::new(Outcome::Ok, dsn, text)
    }

    /// Temporary failure: the queue manager retries later.
    pub fn defer(dsn: &str, text: impl Into<String>) -> RcptResult {
        RcptResult::new(Outcome::Defer, dsn, text)
    }

    /// Permanent failure: the sender gets a bounce.
    pub fn fail(dsn: &str, text: impl Into<String>) -> RcptResult {
        RcptResult::new(Outcome::Fail, dsn, text)
    }

    fn new(outcome: Outcome, dsn: &str, text: impl Into<String>) -> RcptResult {
        RcptResult {
            outcome,
            dsn: dsn.to_string(),
            relay: String::new(),
            text: clean_text(&text.into()),
        }
    }

    /// The same result with `relay` set.
    pub fn via(mut self, relay: impl Into<String>) -> RcptResult {
        self.relay = relay.into();
        self
    }

    /// Postfix's status word for the log line.
    pub fn status_word(&self) -> &'static str {
        match self.outcome {
            Outcome::Ok => "sent",
            Outcome::Defer => "deferred",
            Outcome::Fail => "bounced",
        }
    }
}

/// Replaces control characters by spaces and clamps the text to 400 characters, so a
/// peer's garbage cannot break a log line or a bounce.
pub fn clean_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_clamped() {
        let r = RcptResult::fail("5.1.1", "bad\r\nthing\0 ");
        assert_eq!(r.text, "bad  thing");
        assert_eq!(r.status_word(), "bounced");
        let long = "x".repeat(1000);
        assert_eq!(RcptResult::ok("2.0.0", long).text.len(), 400);
        assert_eq!(RcptResult::defer("4.0.0", "t").via("local").relay, "local");
    }
}
