//! Who may send what: the recipient policy of the RCPT phase.
//!
//! A [`Policy`] holds the validated config and the aliases, loaded once at worker
//! start. [`Policy::recipient`] sees through relay tricks (`address.rs`), then accepts
//! a local domain's address only when it is a known mailbox or alias (`550 5.1.1`
//! otherwise, at RCPT time, so nothing is bounced later), and a remote address only for
//! clients in `relay.networks` (`554 5.7.1 Relay access denied`). Relay permission
//! comes only from that built-in rule (docs/invariants.md G5). Pure functions of their inputs.
//!
//! If the aliases file could not be loaded when the worker started, local recipients
//! get `451 4.3.0` (the client retries later; nothing is refused for good on a broken
//! table), while the greeting, relaying and everything else keep working.

use crate::address::{resolve, Mailbox};
use crate::reply::Reply;
use sloop_common::aliases::{AliasError, Aliases};
use sloop_common::local_recipient::{classify, LocalVerdict};
use sloop_common::Config;
use std::net::IpAddr;

/// The settings a session needs, fixed for the worker's life.
#[derive(Debug)]
pub struct Policy {
    pub cfg: Config,
    /// The aliases, or why they could not be loaded.
    pub aliases: Result<Aliases, AliasError>,
    /// The TLS server context, when a certificate is configured (set at worker start).
    pub tls: Option<crate::tls::TlsContext>,
    /// The filter hooks of this worker (policy connections are kept across sessions).
    /// One session at a time uses it; the lock keeps `Policy` shareable.
    pub hooks: std::sync::Mutex<sloop_hooks::engine::Engine>,
}

/// An accepted recipient: the address to store and the trick seen, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub address: String,
    pub trick: Option<&'static str>,
}

impl Policy {
    /// The worker's hook engine (a panic in an earlier session does not make it
    /// unusable: its state is connections, each checked before use).
    pub fn hook_engine(&self) -> std::sync::MutexGuard<'_, sloop_hooks::engine::Engine> {
        self.hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn new(cfg: Config, aliases: Aliases) -> Policy {
        Policy {
            hooks: std::sync::Mutex::new(sloop_hooks::engine::Engine::new(&cfg.hooks)),
            cfg,
            aliases: Ok(aliases),
            tls: None,
        }
    }

    /// A policy whose aliases file is unusable (`why` is logged, not shown).
    pub fn without_aliases(cfg: Config, why: AliasError) -> Policy {
        Policy {
            hooks: std::sync::Mutex::new(sloop_hooks::engine::Engine::new(&cfg.hooks)),
            cfg,
            aliases: Err(why),
            tls: None,
        }
    }

    /// True when `ip` is in `relay.networks`.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.cfg.relay_networks.iter().any(|n| n.contains(&ip))
    }

    /// The RCPT decision for `m` from a client at `ip`.
    pub fn recipient(&self, m: &Mailbox, ip: IpAddr) -> Result<Accepted, Reply> {
        self.recipient_with(m, self.may_relay(ip))
    }

    /// The RCPT decision for `m` when relaying is (`relay`) or is not permitted (a
    /// client in `relay.networks`, or one that authenticated).
    pub fn recipient_with(&self, m: &Mailbox, relay: bool) -> Result<Accepted, Reply> {
        let shown = display(m);
        let m = if m.domain.is_empty() && m.local.eq_ignore_ascii_case("postmaster") {
            match self.cfg.local_domains.first() {
                Some(d) => Mailbox {
                    local: "postmaster".into(),
                    domain: d.clone(),
                },
                None => return Err(unknown(&shown)),
            }
        } else {
            m.clone()
        };
        let r = resolve(m, |d| self.cfg.is_local_domain(d));
        let address = r.mailbox.address();
        if r.mailbox.domain.is_empty() {
            return Err(unknown(&shown));
        }
        if self.cfg.is_local_domain(&r.mailbox.domain) {
            let Ok(aliases) = &self.aliases else {
                return Err(Reply::new(
                    451,
                    (4, 3, 0),
                    format!(
                        "<{shown}>: Recipient address rejected: local recipient table unavailable"
                    ),
                ));
            };
            return match classify(&self.cfg, aliases, &address) {
                LocalVerdict::Mailbox { .. }
                | LocalVerdict::Alias { .. }
                | LocalVerdict::Account { .. } => Ok(Accepted {
                    address,
                    trick: r.trick,
                }),
                LocalVerdict::Invalid(why) => Err(Reply::new(
                    550,
                    (5, 1, 3),
                    format!("<{shown}>: Recipient address rejected: local-part {why}"),
                )),
                LocalVerdict::Unknown | LocalVerdict::NotLocal => Err(unknown(&shown)),
            };
        }
        if relay {
            return Ok(Accepted {
                address,
                trick: r.trick,
            });
        }
        Err(Reply::new(
            554,
            (5, 7, 1),
            format!("<{shown}>: Relay access denied"),
        ))
    }
}

fn unknown(shown: &str) -> Reply {
    Reply::new(
        550,
        (5, 1, 1),
        format!("<{shown}>: Recipient address rejected: User unknown in local recipient table"),
    )
}

/// The address as the client wrote it (for replies and logs).
fn display(m: &Mailbox) -> String {
    if m.domain.is_empty() {
        m.local.clone()
    } else {
        m.address()
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so `127.0.0.0/8` matches `::ffff:127.0.0.1`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
