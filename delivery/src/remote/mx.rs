//! From a next hop to an ordered list of addresses to try (RFC 5321 §5.1).
//!
//! A fixed relay host is used as given (an IP literal) or resolved to its addresses.
//! For an MX next hop the domain's MX records are sorted by preference and each
//! exchange resolved to its A/AAAA addresses; a domain without MX records is its own
//! implicit MX; a null MX (RFC 7505: one record whose exchange is `.`) means the domain
//! accepts no mail, and so does a domain that does not exist: both fail permanently.
//! A resolver that times out or fails defers. DNS is reached through hickory-resolver,
//! created on first use, so a worker that only uses routes never reads resolv.conf.

use super::route::NextHop;
use crate::result::RcptResult;
use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::Resolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Most addresses tried for one destination (Postfix's smtp_mx_address_limit spirit).
pub const MAX_ADDRESSES: usize = 10;
/// SMTP's port for MX delivery.
pub const SMTP_PORT: u16 = 25;

/// One address to try, with the host name it came from (for the relay text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub addr: SocketAddr,
}

impl Candidate {
    /// `name[ip]:port`, the relay text in logs and results.
    pub fn relay(&self) -> String {
        format!("{}[{}]:{}", self.name, self.addr.ip(), self.addr.port())
    }
}

/// What an MX lookup found, before address resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// `(preference, exchange)` records.
    Records(Vec<(u16, String)>),
    /// No MX records: the domain itself is the implicit MX.
    NoRecords,
    /// The domain does not exist.
    NxDomain,
}

/// What counts as this host among MX targets (mail loop prevention).
#[derive(Debug, Clone, Default)]
pub struct ThisHost {
    /// Our host names (`server.hostname`), lower case.
    pub names: Vec<String>,
    /// The addresses of our interfaces.
    pub addrs: Vec<IpAddr>,
    /// Loopback and unspecified addresses are this host (off only in tests whose
    /// fake MX hosts live on loopback).
    pub loopback: bool,
}

impl ThisHost {
    /// `hostname` and the addresses of this machine's interfaces.
    pub fn of(hostname: &str) -> ThisHost {
        let addrs = nix::ifaddrs::getifaddrs()
            .map(|ifs| {
                ifs.filter_map(|i| i.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ThisHost {
            names: vec![hostname.trim_end_matches('.').to_ascii_lowercase()],
            addrs,
            loopback: true,
        }
    }

    fn is_me(&self, c: &Candidate) -> bool {
        let ip = c.addr.ip();
        self.names.contains(&c.name.to_ascii_lowercase())
            || self.addrs.contains(&ip)
            || (self.loopback && (ip.is_loopback() || ip.is_unspecified()))
    }
}

/// Drops this host and every less preferred MX from `candidates` (best first), as
/// Postfix does: as a backup MX we deliver only to better ones; as the best MX, or
/// when the MX hosts are all loopback, the mail would loop back to us: `5.4.6`.
pub fn without_this_host(
    domain: &str,
    mut candidates: Vec<Candidate>,
    me: &ThisHost,
) -> Result<Vec<Candidate>, RcptResult> {
    if let Some(first_me) = candidates.iter().position(|c| me.is_me(c)) {
        let relay = candidates[first_me].relay();
        candidates.truncate(first_me);
        if candidates.is_empty() {
            return Err(RcptResult::fail(
                "5.4.6",
                format!("mail for {domain} loops back to myself (MX host {relay})"),
            )
            .via(relay));
        }
    }
    Ok(candidates)
}

/// Resolves next hops; holds the DNS resolver once created.
pub struct HopResolver {
    dns: Option<Resolver>,
    /// This host, never an MX target (explicit routes and the smarthost are exempt).
    me: ThisHost,
    /// Port of MX hosts (25; tests point it at a loopback sink).
    mx_port: u16,
    /// Varies the order of equal-preference MX hosts between lookups.
    seed: u64,
}

impl Default for HopResolver {
    fn default() -> HopResolver {
        HopResolver {
            dns: None,
            me: ThisHost::default(),
            mx_port: SMTP_PORT,
            seed: sloop_common::spool::queue_id::process_seed(),
        }
    }
}

impl std::fmt::Debug for HopResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopResolver")
    }
}

impl HopResolver {
    /// A resolver that asks only `server` and reaches MX hosts on `mx_port` (tests use
    /// it with a DNS responder and an SMTP sink on loopback).
    pub fn with_nameserver(server: SocketAddr, mx_port: u16) -> HopResolver {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        opts.use_hosts_file = false;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        HopResolver {
            dns: Resolver::new(config, opts).ok(),
            // The fake MX hosts of tests live on loopback.
            me: ThisHost::default(),
            mx_port,
            seed: sloop_common::spool::queue_id::process_seed(),
        }
    }

    /// Sets what counts as this host among MX targets.
    pub fn refusing(mut self, me: ThisHost) -> HopResolver {
        self.me = me;
        self
    }

    /// The addresses to try for `hop`, best first; the error applies to every recipient.
    pub fn candidates(&mut self, hop: &NextHop) -> Result<Vec<Candidate>, RcptResult> {
        match hop {
            NextHop::Relay { host, .. } => self.host_addresses(&host.host, host.port),
            NextHop::Mx { domain } => self.mx_candidates(domain),
        }
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        self.seed
    }

    fn mx_candidates(&mut self, domain: &str) -> Result<Vec<Candidate>, RcptResult> {
        let answer = self.lookup_mx(domain)?;
        let hosts = order_mx(domain, answer, self.next_seed())?;
        let mut out = Vec::new();
        let mut last_err = None;
        for host in hosts {
            match self.host_addresses(&host, self.mx_port) {
                Ok(c) => out.extend(c),
                Err(e) => last_err = Some(e),
            }
            if out.len() >= MAX_ADDRESSES {
                break;
            }
        }
        out.truncate(MAX_ADDRESSES);
        let out = without_this_host(domain, out, &self.me)?;
        if out.is_empty() {
            // An MX host without an address is a DNS problem that may be fixed: defer.
            let why = last_err
                .map(|e| format!(": {}", e.text))
                .unwrap_or_default();
            return Err(RcptResult::defer(
                "4.4.3",
                format!("no address found for the MX hosts of {domain}{why}"),
            ));
        }
        Ok(out)
    }

    fn resolver(&mut self) -> Result<&Resolver, RcptResult> {
        if self.dns.is_none() {
            let setup = |e: &dyn std::fmt::Display| {
                RcptResult::defer("4.4.3", format!("cannot set up DNS: {e}"))
            };
            let (config, mut opts) =
                hickory_resolver::system_conf::read_system_conf().map_err(|e| setup(&e))?;
            opts.timeout = Duration::from_secs(5);
            opts.attempts = 2;
            opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            let r = Resolver::new(config, opts).map_err(|e| setup(&e))?;
            self.dns = Some(r);
        }
        self.dns
            .as_ref()
            .ok_or_else(|| RcptResult::defer("4.4.3", "no DNS resolver"))
    }

    fn lookup_mx(&mut self, domain: &str) -> Result<MxAnswer, RcptResult> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver()?.mx_lookup(fqdn.as_str()) {
            Ok(l) => Ok(MxAnswer::Records(
                l.iter()
                    .map(|mx| (mx.preference(), mx.exchange().to_utf8()))
                    .collect(),
            )),
            Err(e) => match not_found(&e) {
                Some(true) => Ok(MxAnswer::NxDomain),
                Some(false) => Ok(MxAnswer::NoRecords),
                None => Err(lookup_failed(domain, "MX", &e)),
            },
        }
    }

    /// The addresses of `host` at `port`; an IP literal is used as is.
    fn host_addresses(&mut self, host: &str, port: u16) -> Result<Vec<Candidate>, RcptResult> {
        let name = host.trim_end_matches('.').to_string();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![Candidate {
                name: ip.to_string(),
                addr: SocketAddr::new(ip, port),
            }]);
        }
        let fqdn = format!("{name}.");
        match self.resolver()?.lookup_ip(fqdn.as_str()) {
            Ok(l) => Ok(l
                .iter()
                .take(MAX_ADDRESSES)
                .map(|ip| Candidate {
                    name: name.clone(),
                    addr: SocketAddr::new(ip, port),
                })
                .collect()),
            Err(e) if not_found(&e).is_some() => Err(RcptResult::fail(
                "5.1.2",
                format!("Host or domain name not found: {name} has no A or AAAA record"),
            )),
            Err(e) => Err(lookup_failed(&name, "A/AAAA", &e)),
        }
    }
}

/// The exchanges to try, best preference first; a null MX or a missing domain fail.
///
/// Hosts of equal preference are put in an order drawn from `seed` (RFC 5321 §5.1:
/// spread the load), so different workers and attempts start on different hosts.
pub fn order_mx(domain: &str, answer: MxAnswer, seed: u64) -> Result<Vec<String>, RcptResult> {
    let mut records = match answer {
        MxAnswer::NxDomain => {
            return Err(RcptResult::fail(
                "5.1.2",
                format!("Host or domain name not found: {domain} does not exist"),
            ))
        }
        MxAnswer::NoRecords => return Ok(vec![domain.to_string()]),
        MxAnswer::Records(r) => r,
    };
    let is_null = |h: &str| h.is_empty() || h == ".";
    if records.len() == 1 && is_null(&records[0].1) {
        return Err(RcptResult::fail(
            "5.1.10",
            format!("Domain {domain} does not accept mail (null MX)"),
        ));
    }
    records.retain(|(_, h)| !is_null(h));
    if records.is_empty() {
        return Ok(vec![domain.to_string()]);
    }
    records.sort_by_cached_key(|(p, h)| (*p, shuffle_key(seed, h)));
    let mut hosts: Vec<String> = Vec::new();
    for (_, h) in records {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    Ok(hosts)
}

/// A per-seed pseudo-random sort key for a host name.
fn shuffle_key(seed: u64, host: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    host.to_ascii_lowercase().hash(&mut h);
    h.finish()
}

/// `Some(true)` for NXDOMAIN, `Some(false)` for "no records of that type" (NOERROR),
/// `None` for anything else (SERVFAIL, REFUSED, timeouts): those are temporary.
fn not_found(e: &ResolveError) -> Option<bool> {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain => Some(true),
            ResponseCode::NoError => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn lookup_failed(name: &str, kind: &str, e: &ResolveError) -> RcptResult {
    RcptResult::defer(
        "4.4.3",
        format!("Host or domain name lookup failed: {name} type={kind}: {e}"),
    )
}

#[cfg(test)]
pub(crate) mod dns_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sloop_common::spool::status::Outcome;

    #[test]
    fn mx_records_are_ordered_and_deduplicated() {
        let r = MxAnswer::Records(vec![
            (20, "b.test.".into()),
            (10, "A.test.".into()),
            (20, "a.test".into()),
        ]);
        assert_eq!(order_mx("d.test", r, 7).unwrap(), vec!["a.test", "b.test"]);
    }

    #[test]
    fn equal_preferences_are_spread_but_preference_wins() {
        let answer = || {
            MxAnswer::Records(vec![
                (10, "a.test".into()),
                (10, "b.test".into()),
                (5, "first.test".into()),
                (20, "last.test".into()),
            ])
        };
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            let hosts = order_mx("d.test", answer(), seed).unwrap();
            assert_eq!(hosts.len(), 4);
            assert_eq!(
                (hosts[0].as_str(), hosts[3].as_str()),
                ("first.test", "last.test")
            );
            seen.insert(hosts[1].clone());
        }
        assert_eq!(seen.len(), 2, "both equal-preference hosts get to go first");
    }

    #[test]
    fn implicit_mx_null_mx_and_nxdomain() {
        assert_eq!(
            order_mx("d.test", MxAnswer::NoRecords, 7).unwrap(),
            vec!["d.test"]
        );
        let null = order_mx("d.test", MxAnswer::Records(vec![(0, ".".into())]), 7).unwrap_err();
        assert_eq!((null.outcome, null.dsn.as_str()), (Outcome::Fail, "5.1.10"));
        let nx = order_mx("d.test", MxAnswer::NxDomain, 7).unwrap_err();
        assert_eq!((nx.outcome, nx.dsn.as_str()), (Outcome::Fail, "5.1.2"));
    }

    #[test]
    fn ip_literals_need_no_dns() {
        let mut r = HopResolver::default();
        let hop = NextHop::Relay {
            host: sloop_common::config::HostPort {
                host: "127.0.0.1".into(),
                port: 2526,
            },
            source: "route",
        };
        let c = r.candidates(&hop).unwrap();
        assert_eq!(c[0].relay(), "127.0.0.1[127.0.0.1]:2526");
        assert!(r.dns.is_none());
    }
}
