//! In-process access rules (`[access]`): lists of `PATTERN ACTION [TEXT]` on the
//! client, the HELO name, the sender and each recipient, the first match winning.
//!
//! No I/O and bounded time: a check walks one list once, and every comparison is
//! linear in the value (regular expressions come from the `regex` crate, which
//! guarantees linear-time matching, and are compiled once per worker into
//! [`AccessTables`] under a size limit). So a rule holds however the filter daemons
//! behave: a broken policy service can neither open a relay nor let a listed sender
//! through. The configuration loader has already checked every pattern; docs/filters.md
//! describes the syntax and where the rules sit among the other checks.

use ipnet::IpNet;
use sloop_common::config::{
    compile_access_regex, AccessEntry, AccessList, AccessPattern, AccessRules, AccessVerdict,
};
use std::fmt;
use std::net::IpAddr;

/// What a rule is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// The connecting client: its address, and its name when one was found and
    /// verified (forward-confirmed reverse DNS); `None` (or `unknown`, as the smtpd
    /// names such a client) otherwise.
    Client { addr: IpAddr, name: Option<&'a str> },
    /// The HELO/EHLO argument as the client sent it.
    Helo(&'a str),
    /// A MAIL FROM or RCPT TO address without the angle brackets; the null sender is
    /// the empty string.
    Address(&'a str),
}

/// A rule that could not be prepared (the loader checks every pattern with the same
/// compiler, so this means the rules did not come from a validated configuration).
#[derive(Debug)]
pub struct AccessError {
    pub list: AccessList,
    /// Counting from 1, as in the configuration error (`access.sender[3]`).
    pub index: usize,
    pub source: regex::Error,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access.{}[{}]: bad regular expression: {}",
            self.list.name(),
            self.index,
            self.source.to_string().replace('\n', " ")
        )
    }
}

impl std::error::Error for AccessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One pattern, ready to match.
#[derive(Debug, Clone)]
enum Matcher {
    /// A name (client name, HELO name), or for an address list the domain exactly.
    Name(String),
    /// `user@domain`: the local part exactly, the domain without case.
    Address {
        local: String,
        domain: String,
    },
    /// `.domain`: that name or domain, or one below it.
    Domain(String),
    Cidr(IpNet),
    /// Anchored at both ends, without case.
    Regex(regex::Regex),
}

/// One list of rules, compiled.
#[derive(Debug, Clone)]
pub struct AccessTable {
    list: AccessList,
    entries: Vec<(Matcher, AccessVerdict)>,
}

impl AccessTable {
    /// Compiles `list`; an error names the entry's position (from 1).
    fn new(list: AccessList, rules: &[AccessEntry]) -> Result<AccessTable, (usize, regex::Error)> {
        let entries = rules
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Ok((
                    matcher(&e.pattern).map_err(|err| (i + 1, err))?,
                    e.verdict.clone(),
                ))
            })
            .collect::<Result<_, _>>()?;
        Ok(AccessTable { list, entries })
    }

    /// The verdict of the first rule that matches `subject`, if any. A subject of
    /// another kind than the list's (an address asked of the HELO list) matches nothing.
    pub fn check(&self, subject: Subject<'_>) -> Option<&AccessVerdict> {
        let fits = match subject {
            Subject::Client { .. } => self.list == AccessList::Client,
            Subject::Helo(_) => self.list == AccessList::Helo,
            Subject::Address(_) => self.list.is_address(),
        };
        if !fits {
            return None;
        }
        self.entries
            .iter()
            .find(|(m, _)| matches(m, subject))
            .map(|(_, v)| v)
    }

    /// True when the list has no rules.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The four lists of `[access]`, compiled once per worker (a clone shares the
/// compiled patterns' programs).
#[derive(Debug, Clone)]
pub struct AccessTables {
    client: AccessTable,
    helo: AccessTable,
    sender: AccessTable,
    recipient: AccessTable,
}

impl AccessTables {
    /// Compiles every list of `rules`.
    pub fn new(rules: &AccessRules) -> Result<AccessTables, AccessError> {
        let build = |list: AccessList| {
            AccessTable::new(list, rules.list(list)).map_err(|(index, source)| AccessError {
                list,
                index,
                source,
            })
        };
        Ok(AccessTables {
            client: build(AccessList::Client)?,
            helo: build(AccessList::Helo)?,
            sender: build(AccessList::Sender)?,
            recipient: build(AccessList::Recipient)?,
        })
    }

    /// The compiled `list`.
    pub fn table(&self, list: AccessList) -> &AccessTable {
        match list {
            AccessList::Client => &self.client,
            AccessList::Helo => &self.helo,
            AccessList::Sender => &self.sender,
            AccessList::Recipient => &self.recipient,
        }
    }

    /// The first matching rule of `list` for `subject`.
    pub fn check(&self, list: AccessList, subject: Subject<'_>) -> Option<&AccessVerdict> {
        self.table(list).check(subject)
    }

    /// `access.client` for a client at `addr` with the verified `name`, if any.
    pub fn client(&self, addr: IpAddr, name: Option<&str>) -> Option<&AccessVerdict> {
        self.client.check(Subject::Client { addr, name })
    }

    /// `access.helo` for the HELO/EHLO argument.
    pub fn helo(&self, name: &str) -> Option<&AccessVerdict> {
        self.helo.check(Subject::Helo(name))
    }

    /// `access.sender` for the MAIL FROM address ("" for the null sender).
    pub fn sender(&self, address: &str) -> Option<&AccessVerdict> {
        self.sender.check(Subject::Address(address))
    }

    /// `access.recipient` for one RCPT TO address.
    pub fn recipient(&self, address: &str) -> Option<&AccessVerdict> {
        self.recipient.check(Subject::Address(address))
    }

    /// True when no list has a rule.
    pub fn is_empty(&self) -> bool {
        [&self.client, &self.helo, &self.sender, &self.recipient]
            .iter()
            .all(|t| t.is_empty())
    }
}

/// The first rule of `list` matching `subject`, compiling any regular expression on
/// the way: for a one-off check. Workers build [`AccessTables`] once instead. A pattern
/// that does not compile (impossible for rules from a loaded configuration) never
/// matches.
pub fn check<'l>(list: &'l [AccessEntry], subject: Subject<'_>) -> Option<&'l AccessVerdict> {
    list.iter()
        .find(|e| matcher(&e.pattern).is_ok_and(|m| matches(&m, subject)))
        .map(|e| &e.verdict)
}

fn matcher(pattern: &AccessPattern) -> Result<Matcher, regex::Error> {
    Ok(match pattern {
        AccessPattern::Exact(s) => match s.rsplit_once('@') {
            Some((local, domain)) => Matcher::Address {
                local: local.to_string(),
                domain: domain.to_string(),
            },
            None => Matcher::Name(s.to_string()),
        },
        AccessPattern::Domain(d) => Matcher::Domain(d.to_string()),
        AccessPattern::Cidr(net) => Matcher::Cidr(*net),
        AccessPattern::Pattern(p) => Matcher::Regex(compile_access_regex(p)?),
    })
}

fn matches(m: &Matcher, subject: Subject<'_>) -> bool {
    match subject {
        Subject::Client { addr, name } => {
            let addr = unmapped(addr);
            // `unknown` is the name sloop-smtpd gives a client without one.
            let name = name
                .map(trim_dot)
                .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("unknown"));
            match m {
                Matcher::Cidr(net) => net.contains(&addr),
                Matcher::Name(n) => name.is_some_and(|name| name.eq_ignore_ascii_case(n)),
                Matcher::Domain(d) => name.is_some_and(|name| in_domain(name, d)),
                Matcher::Regex(re) => {
                    name.is_some_and(|name| re.is_match(name)) || re.is_match(&addr.to_string())
                }
                Matcher::Address { .. } => false,
            }
        }
        Subject::Helo(helo) => match m {
            Matcher::Name(n) => trim_dot(helo).eq_ignore_ascii_case(n),
            Matcher::Domain(d) => in_domain(trim_dot(helo), d),
            Matcher::Regex(re) => re.is_match(helo),
            Matcher::Cidr(_) | Matcher::Address { .. } => false,
        },
        Subject::Address(address) => {
            let (local, domain) = match address.rsplit_once('@') {
                Some((l, d)) => (l, Some(trim_dot(d))),
                None => (address, None),
            };
            match m {
                Matcher::Address {
                    local: l,
                    domain: d,
                } => domain.is_some_and(|domain| local == l && domain.eq_ignore_ascii_case(d)),
                Matcher::Name(d) => domain.is_some_and(|domain| domain.eq_ignore_ascii_case(d)),
                Matcher::Domain(d) => domain.is_some_and(|domain| in_domain(domain, d)),
                Matcher::Regex(re) => re.is_match(address),
                Matcher::Cidr(_) => false,
            }
        }
    }
}

/// `name` is `domain` or below it, without case.
fn in_domain(name: &str, domain: &str) -> bool {
    let (n, d) = (name.as_bytes(), domain.as_bytes());
    if n.len() == d.len() {
        return n.eq_ignore_ascii_case(d);
    }
    n.len() > d.len()
        && n[n.len() - d.len() - 1] == b'.'
        && n[n.len() - d.len()..].eq_ignore_ascii_case(d)
}

fn trim_dot(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

/// An IPv4 client seen on an IPv6 socket (`::ffff:192.0.2.1`) is an IPv4 client.
fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
