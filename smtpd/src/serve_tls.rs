//! The socket-side steps of TLS and AUTH for `serve.rs`: the handshake (after STARTTLS,
//! or before the greeting on `submissions.listen`) under its own deadline and the
//! watchdog, with Postfix's log lines, and the blocking password check.

use crate::auth::sasl::Credentials;
use crate::auth::AuthOutcome;
use crate::conn::Conn;
use crate::session::{Client, Policy};
use crate::tls::{handshake, TlsInfo};
use crate::watchdog::Watchdog;
use std::time::Instant;

/// Runs the server handshake; logs the outcome the way Postfix does. `None`: the
/// connection is unusable and must be closed.
pub fn start(policy: &Policy, conn: &mut Conn, watchdog: &Watchdog, who: &str) -> Option<TlsInfo> {
    let Some(ctx) = policy.tls.as_ref() else {
        log::error!("TLS requested from {who} but no TLS context was loaded");
        return None;
    };
    let deadline = Instant::now() + policy.cfg.tls.handshake_timeout;
    watchdog.arm("tls handshake", deadline);
    match handshake(conn, ctx, deadline) {
        Ok(info) => {
            // From now on a plaintext line from the watchdog would corrupt the stream.
            watchdog.attach(conn.watchdog_fd(), Vec::new());
            let resumed = if info.resumed { " (resumed)" } else { "" };
            log::info!(
                "Anonymous TLS connection established from {who}: {}{resumed}",
                info.describe()
            );
            Some(info)
        }
        Err(e) => {
            log::info!("SSL_accept error from {who}: {e}");
            None
        }
    }
}

/// Checks credentials (with the failure delay) under the watchdog.
pub fn authenticate(
    policy: &Policy,
    client: &Client,
    watchdog: &Watchdog,
    creds: &Credentials,
) -> AuthOutcome {
    let a = &policy.cfg.auth;
    let budget = policy.cfg.smtpd.command_timeout + crate::auth::failure_delay(a.failure_delay, 5);
    watchdog.arm("auth", Instant::now() + budget);
    crate::auth::authenticate(policy, client.addr, creds)
}
