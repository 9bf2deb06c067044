//! The filter hooks' configuration types: `[[policy]]` (Postfix policy delegation),
//! `[[milter]]` (milter protocol 6) and `[access]` (in-process access rules).
//!
//! The types are fixed here; the reader (`reader_hooks.rs`) fills them from the file
//! and validates each entry with an error naming the file, the entry (`policy[2].stage`)
//! and the fix. docs/filters.md describes what each hook does at run time.

use super::choice::choice;
use super::values::{self, Expected};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

choice! {
    /// The SMTP stage a hook runs at.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum HookStage {
        /// After accept, before the greeting.
        Connect = "connect",
        /// HELO or EHLO.
        Helo = "helo",
        /// MAIL FROM.
        Mail = "mail",
        /// Each RCPT TO.
        Rcpt = "rcpt",
        /// The DATA (or first BDAT) command, before the message.
        Data = "data",
        /// The end of the message, before the commit.
        Eom = "eom",
    }
}

impl HookStage {
    /// True at connect and helo, where the session has no transaction yet.
    pub fn is_session_phase(self) -> bool {
        matches!(self, HookStage::Connect | HookStage::Helo)
    }
}

choice! {
    /// What a failed hook (unreachable, silent, garbage, illegal answer) makes of the
    /// stage.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum OnError {
        /// Go on as if the hook had said nothing.
        Accept = "accept",
        /// `451 4.3.5` (at connect: `421 4.3.5` and close).
        Tempfail = "tempfail",
        /// `554 5.3.5` / `550 5.3.5`.
        Reject = "reject",
        /// `421 4.3.5` and close the session.
        Shutdown = "shutdown",
    }
}

impl OnError {
    /// The default for a hook at `stage`: `shutdown` at connect and helo, `tempfail`
    /// in the message phases.
    pub fn default_for(stage: HookStage) -> OnError {
        if stage.is_session_phase() {
            OnError::Shutdown
        } else {
            OnError::Tempfail
        }
    }
}

/// Where a hook service listens: `unix:/path` or `inet:host:port` (`inet:[::1]:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSocket {
    Unix(PathBuf),
    Inet { host: String, port: u16 },
}

impl std::fmt::Display for HookSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookSocket::Unix(p) => write!(f, "unix:{}", p.display()),
            HookSocket::Inet { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            HookSocket::Inet { host, port } => write!(f, "inet:{host}:{port}"),
        }
    }
}

choice! {
    /// Which mail a hook sees: a listener role, or `local` (mail injected with
    /// `sendmail`, committed by `sloop-pickup`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum HookListener {
        Smtpd = "smtpd",
        Submission = "submission",
        Submissions = "submissions",
        Local = "local",
    }
}

impl HookListener {
    /// The hook listener of an SMTP listener role.
    pub fn of_role(role: super::ListenRole) -> HookListener {
        match role {
            super::ListenRole::Smtp => HookListener::Smtpd,
            super::ListenRole::Submission => HookListener::Submission,
            super::ListenRole::Submissions => HookListener::Submissions,
        }
    }
}

/// One `[[policy]]` table: a Postfix policy delegation service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHook {
    /// Unique among the `[[policy]]` tables; names the service in logs.
    pub name: String,
    pub socket: HookSocket,
    pub stage: HookStage,
    /// Per try; clipped by the phase deadline.
    pub timeout: Duration,
    /// Tries per request (a try fails on connect error, timeout or EOF).
    pub tries: u32,
    pub on_error: OnError,
    /// Which listeners' sessions are checked (default: `smtpd` only).
    pub listeners: Vec<HookListener>,
}

/// One `[[milter]]` table: a milter (protocol 6) filter, asked in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterHook {
    /// Unique among the `[[milter]]` tables; names the filter in logs.
    pub name: String,
    pub socket: HookSocket,
    pub on_error: OnError,
    /// Connecting and negotiating.
    pub connect_timeout: Duration,
    /// Each event but the message content.
    pub command_timeout: Duration,
    /// Each message content event (headers, body chunks, end of message).
    pub content_timeout: Duration,
    /// Which mail the filter sees (default: `smtpd`, `submission`, `submissions`).
    pub listeners: Vec<HookListener>,
    /// Keep the connection for the worker's next session (`SMFIC_QUIT_NC`).
    pub reuse: bool,
}

/// What an in-process access rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPattern {
    /// A whole value: a name (client name, HELO name; lower case, compared without
    /// case), an address `user@domain` (the domain compared without case, the local part
    /// exactly), or for the sender and recipient lists a bare `domain`, which matches
    /// the address's domain exactly.
    Exact(String),
    /// `.example.com`: the name, or the address's domain, is `example.com` or one below
    /// it (stored lower case, without the leading dot).
    Domain(String),
    /// A client address in a network (a bare address is a one-host network).
    Cidr(ipnet::IpNet),
    /// `/regex/`: a regular expression matching the whole value, without case, in linear
    /// time (the `regex` crate); the source without the slashes, checked at load.
    Pattern(String),
}

/// What an in-process access rule does to a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessVerdict {
    /// Skip the external policy services at this stage (relaying rules still apply).
    Accept,
    /// `554`/`550 5.7.1` with the text, or a default text.
    Reject(Option<String>),
    /// `450`/`421 4.7.1` with the text, or a default text.
    Tempfail(Option<String>),
    /// Accept, but the message goes to `hold/` with the reason.
    Hold(Option<String>),
    /// Accept and drop the message (logged).
    Discard(Option<String>),
}

/// One access rule: the first matching rule of a list wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub pattern: AccessPattern,
    pub verdict: AccessVerdict,
}

/// `[access]`: rules on the client (address or name), HELO name, sender and recipient,
/// evaluated before any external hook of the same stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub client: Vec<AccessEntry>,
    pub helo: Vec<AccessEntry>,
    pub sender: Vec<AccessEntry>,
    pub recipient: Vec<AccessEntry>,
}

/// All filter configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HooksConfig {
    pub policies: Vec<PolicyHook>,
    pub milters: Vec<MilterHook>,
    pub access: AccessRules,
}

impl HooksConfig {
    /// The policy services that check `listener`'s sessions at `stage`, in table order.
    pub fn policies_at(
        &self,
        listener: HookListener,
        stage: HookStage,
    ) -> impl Iterator<Item = &PolicyHook> {
        self.policies
            .iter()
            .filter(move |p| p.stage == stage && p.listeners.contains(&listener))
    }

    /// The milters that see `listener`'s mail, in table order.
    pub fn milters_for(&self, listener: HookListener) -> impl Iterator<Item = &MilterHook> {
        self.milters
            .iter()
            .filter(move |m| m.listeners.contains(&listener))
    }
}

/// The four lists of `[access]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessList {
    Client,
    Helo,
    Sender,
    Recipient,
}

impl AccessList {
    /// The key in `[access]`.
    pub fn name(self) -> &'static str {
        match self {
            AccessList::Client => "client",
            AccessList::Helo => "helo",
            AccessList::Sender => "sender",
            AccessList::Recipient => "recipient",
        }
    }

    /// True for the lists of addresses (sender, recipient).
    pub fn is_address(self) -> bool {
        matches!(self, AccessList::Sender | AccessList::Recipient)
    }
}

/// Longest text an access rule may give its reply (the reply line stays well under the
/// 512 octets of RFC 5321 with code and enhanced code in front).
pub const ACCESS_TEXT_MAX: usize = 300;

/// Bound on the compiled size of one access rule's regular expression, so a rule
/// cannot make a worker's memory or a match's time grow out of proportion.
pub const ACCESS_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles the source of an [`AccessPattern::Pattern`] the one way the loader checks
/// it and the workers use it: anchored at both ends, without case, size-bounded.
pub fn compile_access_regex(source: &str) -> Result<regex::Regex, regex::Error> {
    let build = |s: &str| {
        regex::RegexBuilder::new(s)
            .case_insensitive(true)
            .size_limit(ACCESS_REGEX_SIZE_LIMIT)
            .dfa_size_limit(ACCESS_REGEX_SIZE_LIMIT)
            .build()
    };
    // The source alone first: only a pattern that is valid by itself is balanced, so
    // wrapping it cannot be escaped (`a)|(b` would otherwise unanchor the match).
    build(source)?;
    build(&format!("^(?:{source})$"))
}

impl AccessEntry {
    /// Parses one entry of the `list` of `[access]`: `PATTERN ACTION [TEXT]`.
    pub fn parse(list: AccessList, s: &str) -> Result<AccessEntry, Expected> {
        let s = s.trim();
        let (pattern, rest) = split_pattern(s)?;
        let pattern = parse_pattern(list, pattern)?;
        let rest = rest.trim_start();
        let (action, text) = match rest.split_once(char::is_whitespace) {
            Some((a, t)) => (a, t.trim()),
            None => (rest, ""),
        };
        let text = if text.is_empty() {
            None
        } else {
            if text.len() > ACCESS_TEXT_MAX || !text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                return Err(Expected(format!(
                    "a reply text of printable ASCII, at most {ACCESS_TEXT_MAX} octets"
                )));
            }
            Some(text.to_string())
        };
        let verdict = match action.to_ascii_lowercase().as_str() {
            "accept" if text.is_some() => {
                return Err(Expected(
                    "accept without a text (only reject, tempfail, hold and discard take one)"
                        .to_string(),
                ))
            }
            "accept" => AccessVerdict::Accept,
            "reject" => AccessVerdict::Reject(text),
            "tempfail" => AccessVerdict::Tempfail(text),
            "hold" => AccessVerdict::Hold(text),
            "discard" => AccessVerdict::Discard(text),
            "" => {
                return Err(Expected(format!(
                    "\"PATTERN ACTION [TEXT]\" with an action after the pattern: {ACTIONS}"
                )))
            }
            _ => return Err(Expected(format!("an action: {ACTIONS}"))),
        };
        Ok(AccessEntry { pattern, verdict })
    }
}

const ACTIONS: &str = "accept, reject, tempfail, hold or discard";

/// Splits off the pattern: `/regex/` up to the first unescaped `/` followed by a space
/// or the end (a `/` followed by a space inside the regex is written `\/`), else the
/// first word.
fn split_pattern(s: &str) -> Result<(&str, &str), Expected> {
    if let Some(body) = s.strip_prefix('/') {
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'/' if bytes.get(i + 1).is_none_or(u8::is_ascii_whitespace) => {
                    return Ok((&s[..i + 2], &body[i + 1..]));
                }
                _ => i += 1,
            }
        }
        return Err(Expected(
            "a /regex/ closed by a / before the action (such as \"/^mx[0-9]+\\.example$/ reject\")"
                .to_string(),
        ));
    }
    match s.split_once(char::is_whitespace) {
        Some((p, rest)) => Ok((p, rest)),
        None if s.is_empty() => Err(Expected(format!(
            "\"PATTERN ACTION [TEXT]\", such as \"192.0.2.0/24 reject\" (actions: {ACTIONS})"
        ))),
        None => Ok((s, "")),
    }
}

fn parse_pattern(list: AccessList, p: &str) -> Result<AccessPattern, Expected> {
    let what = match list {
        AccessList::Client => {
            "an address or CIDR network, a host name, .domain (that name and below) or /regex/"
        }
        AccessList::Helo => "a name, an address literal [192.0.2.1], .domain or /regex/",
        AccessList::Sender | AccessList::Recipient => {
            "user@domain, domain (that domain exactly), .domain (that domain and below) or /regex/"
        }
    };
    let bad = |why: &str| Expected(format!("a pattern: {what}{why}"));
    if let Some(source) = p.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
        if source.is_empty() {
            return Err(bad(" (the regex is empty)"));
        }
        return match compile_access_regex(source) {
            Ok(_) => Ok(AccessPattern::Pattern(source.to_string())),
            Err(e) => Err(Expected(format!(
                "a valid regular expression between the slashes ({})",
                one_line(&e.to_string())
            ))),
        };
    }
    if let Some(domain) = p.strip_prefix('.') {
        let domain = values::parse_hostname(domain).map_err(|_| bad(""))?;
        return Ok(AccessPattern::Domain(domain));
    }
    let network = p.parse::<IpAddr>().is_ok() || p.parse::<ipnet::IpNet>().is_ok();
    if list == AccessList::Client && (network || p.contains([':', '/'])) {
        return values::parse_cidr(p)
            .map(AccessPattern::Cidr)
            .map_err(|_| bad(" (a CIDR network such as 192.0.2.0/24)"));
    }
    if network {
        return Err(bad(" (addresses and networks are for access.client)"));
    }
    if let Some((local, domain)) = p.rsplit_once('@') {
        if !list.is_address() {
            return Err(bad(
                " (user@domain is for access.sender and access.recipient)",
            ));
        }
        if local.is_empty() {
            return Err(bad(" (write the domain without @)"));
        }
        if local.len() > 64 || local.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad(""));
        }
        let domain = values::parse_hostname(domain).map_err(|_| bad(""))?;
        return Ok(AccessPattern::Exact(format!("{local}@{domain}")));
    }
    if list == AccessList::Helo {
        if let Some(inner) = p.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let literal = match inner.get(..5) {
                Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
                    inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
                }
                _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
            };
            return if literal {
                Ok(AccessPattern::Exact(p.to_ascii_lowercase()))
            } else {
                Err(bad(""))
            };
        }
    }
    let name = values::parse_hostname(p).map_err(|_| bad(""))?;
    Ok(AccessPattern::Exact(name))
}

/// An error text on one line (the regex crate's messages span several).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl std::fmt::Display for AccessPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessPattern::Exact(s) => f.write_str(s),
            AccessPattern::Domain(d) => write!(f, ".{d}"),
            AccessPattern::Cidr(n) => write!(f, "{n}"),
            AccessPattern::Pattern(p) => write!(f, "/{p}/"),
        }
    }
}

impl AccessVerdict {
    /// The action word.
    pub fn name(&self) -> &'static str {
        match self {
            AccessVerdict::Accept => "accept",
            AccessVerdict::Reject(_) => "reject",
            AccessVerdict::Tempfail(_) => "tempfail",
            AccessVerdict::Hold(_) => "hold",
            AccessVerdict::Discard(_) => "discard",
        }
    }

    /// The text the rule gives, if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            AccessVerdict::Accept => None,
            AccessVerdict::Reject(t)
            | AccessVerdict::Tempfail(t)
            | AccessVerdict::Hold(t)
            | AccessVerdict::Discard(t) => t.as_deref(),
        }
    }
}

/// The entry as written in the config (`PATTERN ACTION [TEXT]`); parses back equal.
impl std::fmt::Display for AccessEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pattern, self.verdict.name())?;
        if let Some(t) = self.verdict.text() {
            write!(f, " {t}")?;
        }
        Ok(())
    }
}

impl AccessRules {
    /// The entries of `list`.
    pub fn list(&self, list: AccessList) -> &[AccessEntry] {
        match list {
            AccessList::Client => &self.client,
            AccessList::Helo => &self.helo,
            AccessList::Sender => &self.sender,
            AccessList::Recipient => &self.recipient,
        }
    }
}
