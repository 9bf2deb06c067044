//! `sloop-deliver remote`: delivers a job's recipients over SMTP to the next hop.
//!
//! For each destination domain in a job: decide the next hop (route.rs), turn it into
//! addresses (mx.rs), then try them in order until one accepts a session
//! (smtp_client.rs); a connection failure or a refused greeting moves on to the next
//! address, and when none is left every recipient is deferred. Once a session runs
//! the transaction, its replies decide each recipient.
//!
//! Sessions are cached per next hop for [`SESSION_IDLE`] after a transaction, so a
//! burst of jobs to one destination reuses one connection (RSET between messages); the
//! worker loop calls [`Agent::idle`] so expired sessions get their QUIT on time.
//! STARTTLS is used when offered (opportunistic, tls.rs).

pub mod credentials;
pub mod data;
pub mod mx;
pub mod reply;
pub mod route;
pub mod smtp_client;
pub mod stream;
pub mod tls;

#[cfg(test)]
mod starttls_tests;

use crate::message::QueuedMessage;
use crate::result::RcptResult;
use crate::worker::Agent;
use mx::HopResolver;
use route::{domain_of, next_hop, NextHop};
use sloop_common::delivery_proto::{Job, Transport};
use sloop_common::Config;
use smtp_client::{ClientConfig, OpenError, Session, Transaction};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an idle session is kept for the next job to the same next hop.
pub const SESSION_IDLE: Duration = Duration::from_secs(5);
/// Transactions per session before it is closed anyway.
pub const SESSION_MAX_USES: u32 = 100;
/// Sessions kept open at once.
pub const MAX_CACHED: usize = 8;

/// The remote delivery agent.
#[derive(Debug)]
pub struct RemoteAgent {
    cfg: Config,
    client: ClientConfig,
    resolver: HopResolver,
    cache: HashMap<String, Session>,
}

impl RemoteAgent {
    pub fn new(cfg: Config) -> RemoteAgent {
        let client = ClientConfig {
            helo_name: cfg.server.hostname.clone(),
            connect_timeout: cfg.remote.connect_timeout,
            command_timeout: cfg.remote.command_timeout,
            data_timeout: cfg.remote.data_timeout,
            tls: match tls::client_config() {
                Ok(c) => Some(c),
                Err(e) => {
                    log::error!("STARTTLS disabled: TLS setup: {e}");
                    None
                }
            },
            verify_tls: verify_config(&cfg),
            credentials: cfg
                .remote_tls
                .credentials_file
                .as_ref()
                .map(|p| std::sync::Arc::new(credentials::Credentials::load(p))),
            level: cfg.remote_tls.level,
        };
        let resolver = HopResolver::default().refusing(mx::ThisHost::of(&cfg.server.hostname));
        RemoteAgent {
            cfg,
            client,
            resolver,
            cache: HashMap::new(),
        }
    }

    /// Delivers the recipients at `indices` of `job`, all for one domain.
    fn deliver_domain(
        &mut self,
        job: &Job,
        msg: &QueuedMessage,
        domain: &str,
        indices: &[usize],
    ) -> Vec<RcptResult> {
        let recipients: Vec<String> = indices.iter().map(|&i| job.recipients[i].clone()).collect();
        let hop = next_hop(&self.cfg.remote, domain);
        let level = self.cfg.remote_tls.level_for(domain);
        // A session is reused only for mail that wants the same TLS level.
        let key = format!("{}|{}", hop_key(&hop), level.name());
        let client = ClientConfig {
            level,
            ..self.client.clone()
        };
        let t = Transaction {
            sender: &msg.envelope.sender,
            recipients: &recipients,
            message: msg,
        };
        if let Some(mut s) = self.cached(&key) {
            log::debug!("{}: reusing session with {}", job.queue_id, s.relay());
            let out = s.send(&t);
            if !out.broke_before_mail {
                return self.finish(key, out, s);
            }
            log::info!(
                "{}: cached session with {} broke; reconnecting",
                job.queue_id,
                s.relay()
            );
        }
        let candidates = match self.resolver.candidates(&hop) {
            Ok(c) => c,
            Err(r) => return vec![r; recipients.len()],
        };
        let mut last = String::from("no address to try");
        let mut last_relay = String::new();
        for c in &candidates {
            match Session::open(c, &client) {
                Ok(mut s) => return self.finish(key, s.send(&t), s),
                Err(OpenError::Loop(why)) => {
                    log::warn!("{}: {why}", job.queue_id);
                    let r = RcptResult::fail("5.4.6", why).via(c.relay());
                    return vec![r; recipients.len()];
                }
                Err(reason) => {
                    log::info!("{}: {reason}", job.queue_id);
                    last = reason.to_string();
                    last_relay = c.relay();
                }
            }
        }
        let r = RcptResult::defer("4.4.1", last).via(last_relay);
        vec![r; recipients.len()]
    }

    /// A cached session for `key` that still answers RSET.
    fn cached(&mut self, key: &str) -> Option<Session> {
        let mut s = self.cache.remove(key)?;
        if s.last_used.elapsed() >= SESSION_IDLE || !s.reset() {
            s.quit();
            return None;
        }
        Some(s)
    }

    /// Keeps or closes the session after a transaction; returns the results.
    fn finish(
        &mut self,
        key: String,
        outcome: smtp_client::Outcome,
        s: Session,
    ) -> Vec<RcptResult> {
        if outcome.reusable && s.transactions < SESSION_MAX_USES && self.cache.len() < MAX_CACHED {
            self.cache.insert(key, s);
        } else if outcome.reusable {
            s.quit();
        }
        outcome.results
    }
}

impl Agent for RemoteAgent {
    fn transport(&self) -> Transport {
        Transport::Remote
    }

    fn deliver(&mut self, job: &Job, msg: &QueuedMessage) -> Vec<RcptResult> {
        let mut results: Vec<Option<RcptResult>> = vec![None; job.recipients.len()];
        if !wire_safe(&msg.envelope.sender) {
            let r = RcptResult::fail("5.1.7", "sender address cannot be sent over SMTP");
            return vec![r; job.recipients.len()];
        }
        for (i, rcpt) in job.recipients.iter().enumerate() {
            if !wire_safe(rcpt) {
                let r = RcptResult::fail("5.1.3", "recipient address cannot be sent over SMTP");
                results[i] = Some(r);
            }
        }
        for (domain, mut indices) in group_by_domain(job) {
            indices.retain(|&i| results[i].is_none());
            if indices.is_empty() {
                continue;
            }
            if domain.is_empty() {
                let r = RcptResult::fail("5.1.3", "recipient address has no domain");
                indices.iter().for_each(|&i| results[i] = Some(r.clone()));
                continue;
            }
            let rs = self.deliver_domain(job, msg, &domain, &indices);
            for (&i, r) in indices.iter().zip(rs) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| RcptResult::defer("4.3.0", "no result")))
            .collect()
    }

    fn next_wakeup(&self) -> Option<Duration> {
        self.cache
            .values()
            .map(|s| SESSION_IDLE.saturating_sub(s.last_used.elapsed()))
            .min()
    }

    fn idle(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .cache
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_used) >= SESSION_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(s) = self.cache.remove(&k) {
                s.quit();
            }
        }
    }

    fn shutdown(&mut self) {
        for (_, s) in self.cache.drain() {
            s.quit();
        }
    }
}

/// True when an address can go between `<` and `>` in an SMTP command: no control
/// characters (CR/LF would inject commands), no angle brackets.
fn wire_safe(address: &str) -> bool {
    !address
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>')
}

/// The job's recipients grouped by domain, in first-seen order.
fn group_by_domain(job: &Job) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in job.recipients.iter().enumerate() {
        let d = domain_of(r);
        match groups.iter_mut().find(|(g, _)| *g == d) {
            Some((_, v)) => v.push(i),
            None => groups.push((d, vec![i])),
        }
    }
    groups
}

/// The cache key of a next hop: sessions are shared by domains with the same relay.
fn hop_key(hop: &NextHop) -> String {
    match hop {
        NextHop::Relay { host, .. } => format!("relay:{host}"),
        NextHop::Mx { domain } => format!("mx:{domain}"),
    }
}

#[cfg(test)]
mod tests;

/// The verifying TLS settings, made only when some destination wants `verify`; an
/// error is logged and such mail defers (TLS required, none possible).
fn verify_config(cfg: &Config) -> Option<std::sync::Arc<rustls::ClientConfig>> {
    use sloop_common::config::TlsLevel;
    let t = &cfg.remote_tls;
    let wanted = t.level == TlsLevel::Verify || t.policy.values().any(|l| *l == TlsLevel::Verify);
    if !wanted {
        return None;
    }
    match tls::verifying_config(t.ca_file.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("remote.tls = verify unavailable: {e}; such mail defers");
            None
        }
    }
}
