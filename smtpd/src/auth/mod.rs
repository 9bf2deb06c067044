//! SMTP AUTH (RFC 4954): the SASL decoding ([`sasl`]), the per-client failure counts
//! across the pool ([`failures`]), the password check (`auth.password_file`, or
//! Dovecot's auth server: [`dovecot`]) and who may send as whom.
//!
//! The session (I/O-free) decodes the exchange and hands the credentials to the socket
//! layer, which calls [`authenticate`]: it refuses at once a client address that has
//! failed `auth.max_failures` times within `auth.failure_window` (`421 4.7.0`),
//! checks the password against `auth.password_file` (an unknown user is checked against
//! a dummy hash of the same cost, so it takes as long as a wrong password), and on
//! failure records it and waits `auth.failure_delay` times the client's recent failures
//! (at most five times) before the `535 5.7.8`, closing the session once the limit is
//! reached. Passwords are never logged.

pub mod dovecot;
pub mod failures;
pub mod sasl;

use crate::session::Policy;
use sasl::Credentials;
use sloop_common::config::AuthBackend;
use std::net::IpAddr;
use std::time::Duration;

/// What the password check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// `235 2.7.0`.
    Success,
    /// `535 5.7.8`; `close` once the client has reached `auth.max_failures`.
    Failure { close: bool },
    /// Too many recent failures from this address: `421 4.7.0` without checking.
    Locked,
    /// The backend could not answer: `454 4.7.0`.
    TempFail(String),
}

/// Checks `creds` for a client at `ip` (blocking: file reads, the hash, the delay).
pub fn authenticate(policy: &Policy, ip: IpAddr, creds: &Credentials) -> AuthOutcome {
    let cfg = &policy.cfg;
    let a = &cfg.auth;
    let run_dir = &cfg.server.run_dir;
    let window = a.failure_window.as_secs() as i64;
    let now = sloop_common::tls_material::unix_now();
    match failures::count(run_dir, ip, now, window) {
        Ok(n) if n >= a.max_failures => return AuthOutcome::Locked,
        Ok(_) => {}
        Err(e) => return AuthOutcome::TempFail(format!("failure counter: {e}")),
    }
    let ok = match (a.backend, &a.password_file) {
        (AuthBackend::File, Some(path)) => match sloop_common::passwd::load(path) {
            Ok(entries) => {
                sloop_common::passwd::check(&entries, &creds.username, &creds.password.0)
            }
            Err(e) => return AuthOutcome::TempFail(e.to_string()),
        },
        (AuthBackend::Dovecot, _) => match &a.dovecot_socket {
            Some(socket) => match dovecot::check(
                socket,
                &creds.username,
                &creds.password.0,
                ip,
                cfg.smtpd.command_timeout,
            ) {
                Ok(ok) => ok,
                Err(e) => return AuthOutcome::TempFail(e.to_string()),
            },
            None => return AuthOutcome::TempFail("auth.dovecot_socket is not set".into()),
        },
        _ => return AuthOutcome::TempFail("no authentication backend configured".into()),
    };
    if ok {
        return AuthOutcome::Success;
    }
    let n = match failures::record(run_dir, ip, now, window) {
        Ok(n) => n,
        Err(e) => {
            log::warn!("cannot record an AUTH failure of [{ip}]: {e}");
            a.max_failures
        }
    };
    let delay = failure_delay(a.failure_delay, n);
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    AuthOutcome::Failure {
        close: n >= a.max_failures,
    }
}

/// The pause before a `535`: `base` times the recent failures, at most five times.
pub fn failure_delay(base: Duration, failures: u32) -> Duration {
    base * failures.clamp(1, 5)
}

/// True when `user` may use `sender` as envelope sender: the addresses and `@domain`
/// wildcards `auth.senders` lists for the user, or, for a user not listed, the address
/// equal to the user name. The null sender is always allowed (bounces and receipts).
pub fn may_send_as(policy: &Policy, user: &str, sender: &str) -> bool {
    if sender.is_empty() {
        return true;
    }
    let sender = sender.to_ascii_lowercase();
    match policy.cfg.auth.senders.get(&user.to_ascii_lowercase()) {
        Some(list) => list.iter().any(|allowed| match allowed.strip_prefix('@') {
            Some(domain) => sender.rsplit_once('@').is_some_and(|(_, d)| d == domain),
            None => *allowed == sender,
        }),
        None => sender.eq_ignore_ascii_case(user),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn policy(extra: &str) -> Policy {
        let text = format!("[auth]\n{extra}\n");
        let cfg = sloop_common::Config::parse(std::path::Path::new("/nonexistent/s.toml"), &text)
            .unwrap();
        Policy::without_aliases(cfg, sloop_common::aliases::AliasError::Invalid(Vec::new()))
    }

    #[test]
    fn senders_table_and_default_rule() {
        let p = policy("senders = { alice = [\"alice@example.com\", \"@alice.example\"] }");
        assert!(may_send_as(&p, "alice", "Alice@Example.com"));
        assert!(may_send_as(&p, "ALICE", "x@alice.example"));
        assert!(!may_send_as(&p, "alice", "bob@example.com"));
        assert!(!may_send_as(&p, "alice", "x@sub.alice.example"));
        assert!(!may_send_as(&p, "alice", "alice"));
        assert!(may_send_as(&p, "alice", ""), "null sender");
        assert!(may_send_as(&p, "bob@example.com", "bob@example.com"));
        assert!(!may_send_as(&p, "bob@example.com", "alice@example.com"));
        assert!(!may_send_as(&p, "bob", "bob@example.com"));
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let s = Duration::from_secs(1);
        assert_eq!(failure_delay(s, 0), s);
        assert_eq!(failure_delay(s, 3), 3 * s);
        assert_eq!(failure_delay(s, 50), 5 * s);
        assert_eq!(failure_delay(Duration::ZERO, 4), Duration::ZERO);
    }
}
