//! The filter hooks' configuration types: `[[policy]]` (Postfix policy delegation),
//! `[[milter]]` (milter protocol 6) and `[access]` (in-process access rules).
//!
//! The types are fixed here; the reader (`reader_hooks.rs`) fills them from the file
//! and validates each entry with an error naming the file, the entry (`policy[2].stage`)
//! and the fix. docs/filters.md describes what each hook does at run time.

use std::path::PathBuf;
use std::time::Duration;

/// The SMTP stage a hook runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookStage {
    /// After accept, before the greeting.
    Connect,
    /// HELO or EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// Each RCPT TO.
    Rcpt,
    /// The DATA (or first BDAT) command, before the message.
    Data,
    /// The end of the message, before the commit.
    Eom,
}

impl HookStage {
    /// The config word (`connect`, `helo`, `mail`, `rcpt`, `data`, `eom`).
    pub fn name(self) -> &'static str {
        match self {
            HookStage::Connect => "connect",
            HookStage::Helo => "helo",
            HookStage::Mail => "mail",
            HookStage::Rcpt => "rcpt",
            HookStage::Data => "data",
            HookStage::Eom => "eom",
        }
    }

    /// True at connect and helo, where the session has no transaction yet.
    pub fn is_session_phase(self) -> bool {
        matches!(self, HookStage::Connect | HookStage::Helo)
    }
}

/// What a failed hook (unreachable, silent, garbage, illegal answer) makes of the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Go on as if the hook had said nothing.
    Accept,
    /// `451 4.3.5` (at connect: `421 4.3.5` and close).
    Tempfail,
    /// `554 5.3.5` / `550 5.3.5`.
    Reject,
    /// `421 4.3.5` and close the session.
    Shutdown,
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

    /// The config word.
    pub fn name(self) -> &'static str {
        match self {
            OnError::Accept => "accept",
            OnError::Tempfail => "tempfail",
            OnError::Reject => "reject",
            OnError::Shutdown => "shutdown",
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

/// Which mail a hook sees: a listener role, or `local` (mail injected with `sendmail`,
/// committed by `sloop-pickup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookListener {
    Smtpd,
    Submission,
    Submissions,
    Local,
}

impl HookListener {
    /// The config word.
    pub fn name(self) -> &'static str {
        match self {
            HookListener::Smtpd => "smtpd",
            HookListener::Submission => "submission",
            HookListener::Submissions => "submissions",
            HookListener::Local => "local",
        }
    }

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
}

/// What an in-process access rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPattern {
    /// The whole value, compared without case (an address, a HELO name, an IP address).
    Exact(String),
    /// `example.com` or `.example.com`: the domain (of an address, or the name itself)
    /// is that domain or one below it.
    Domain(String),
    /// A client address in a network.
    Cidr(ipnet::IpNet),
    /// `/regex/`: an anchored regular expression (linear time), checked at load.
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
