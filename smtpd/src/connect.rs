//! The connect phase: everything between accept and the greeting.
//!
//! In order: the test-only injected fault (`faults.rs`), the client access rules
//! (`smtpd.access`, first matching CIDR wins: allow, `554 5.7.1` reject, `421 4.7.1`
//! tempfail), and the early-talker check (a client that sent anything before the
//! greeting gets `554 5.5.1` and then `503` to all but QUIT). With
//! `smtpd.reverse_dns` the client's forward-confirmed name is looked up within
//! `smtpd.dns_timeout` (`rdns.rs`), else it is named `unknown`. The whole phase runs under
//! the watchdog with `smtpd.connect_timeout`; a panic here is caught by the session
//! boundary in `serve.rs` (`421 4.3.0`).

use crate::conn::Conn;
use crate::reply::Reply;
use crate::session::policy::canonical;
use crate::session::{Client, Opening, Policy};
use sloop_common::config::AccessAction;
use std::net::IpAddr;

/// Runs the connect checks for a client at `ip`.
pub fn check(policy: &Policy, ip: IpAddr, conn: &Conn) -> (Client, Opening) {
    crate::faults::connect_check();
    let addr = canonical(ip);
    let s = &policy.cfg.smtpd;
    let name = if s.reverse_dns {
        crate::rdns::client_name(addr, s.dns_timeout)
    } else {
        "unknown".into()
    };
    let (port, server) = conn.endpoints();
    let client = Client {
        addr,
        name,
        port,
        server,
    };
    let opening = match access(policy, client.addr) {
        Some(opening) => opening,
        None if conn.has_early_input() => {
            log::info!(
                "reject: early talker {}: talked before the greeting",
                client.display()
            );
            Opening::Refuse(Reply::new(
                554,
                (5, 5, 1),
                format!(
                    "{} Error: talked before the greeting",
                    policy.cfg.server.hostname
                ),
            ))
        }
        None => Opening::Greet,
    };
    (client, opening)
}

/// The first matching access rule's opening, or `None` to go on.
fn access(policy: &Policy, ip: IpAddr) -> Option<Opening> {
    let rule = policy
        .cfg
        .smtpd
        .access
        .iter()
        .find(|r| r.network.contains(&ip))?;
    let host = &policy.cfg.server.hostname;
    match rule.action {
        AccessAction::Allow => None,
        AccessAction::Reject => {
            log::info!(
                "reject: CONNECT from unknown[{ip}]: 554 5.7.1 Access denied ({})",
                rule.network
            );
            Some(Opening::Refuse(Reply::new(
                554,
                (5, 7, 1),
                format!("{host} Access denied"),
            )))
        }
        AccessAction::Tempfail => {
            log::info!(
                "reject: CONNECT from unknown[{ip}]: 421 4.7.1 Try again later ({})",
                rule.network
            );
            Some(Opening::Close(Reply::new(
                421,
                (4, 7, 1),
                format!("{host} Service temporarily unavailable, try again later"),
            )))
        }
    }
}
