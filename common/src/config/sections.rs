//! The typed sections of a validated [`super::Config`]: what the programs read.

use super::values::{AccessRule, HostPort};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub run_dir: PathBuf,
    pub user: String,
    /// Group of sloop-drop, owner group of `maildrop/` and `public/`.
    pub drop_group: String,
    /// Directory of the sloop-* programs; `None` means "next to the running program".
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewline {
    Reject,
    Normalize,
}

#[derive(Debug, Clone)]
pub struct SmtpdConfig {
    pub listen: Vec<SocketAddr>,
    /// The greeting text after `220 `, already rendered with the host name.
    pub greeting: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_errors: u32,
    pub junk_command_limit: u32,
    pub max_received_headers: usize,
    pub bare_newline: BareNewline,
    pub min_idle: usize,
    pub max_processes: usize,
    pub max_use: u64,
    pub max_per_client: usize,
    pub connect_timeout: Duration,
    pub reverse_dns: bool,
    pub dns_timeout: Duration,
    pub command_timeout: Duration,
    pub idle_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub watchdog_grace: Duration,
    pub access: Vec<AccessRule>,
    /// The qmail-queue compatible program; `None` means sloop-queue from the bin dir.
    pub queue_program: Option<PathBuf>,
    pub queue_timeout: Duration,
    pub overload_idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxFormat {
    Maildir,
    Mbox,
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub mailbox_root: PathBuf,
    pub mailboxes: Vec<String>,
    pub aliases: Option<PathBuf>,
    pub recipient_delimiter: Option<char>,
    pub mailbox_format: MailboxFormat,
    /// Deliver to local accounts (`getpwnam`) of the local domains.
    pub system_users: bool,
    /// The mailbox of a local account.
    pub system_mailbox: MailboxFormat,
    /// Where local accounts' mbox files live (`/var/mail`).
    pub mail_spool_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub smarthost: Option<HostPort>,
    pub routes: BTreeMap<String, HostPort>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub max_lifetime: Duration,
    /// `None` when delay warnings are off.
    pub delay_warning: Option<Duration>,
    pub scan_interval: Duration,
    pub max_active: usize,
    pub local_concurrency: usize,
    pub remote_concurrency: usize,
    pub destination_concurrency: usize,
    pub delivery_timeout: Duration,
    /// Free octets the spool's file system must keep (0 in the file: resolved at load
    /// to 1.5 times `smtpd.max_message_size`).
    pub min_free: u64,
}

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub stop_timeout: Duration,
    pub restart_min: Duration,
    pub restart_max: Duration,
    pub startup_crash_pause: Duration,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Syslog,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: log::LevelFilter,
    pub target: LogTarget,
    /// The syslog facility code (RFC 5424 numbering: mail = 2).
    pub facility: u8,
    pub syslog_socket: PathBuf,
}

/// The syslog facility code of a `log.facility` word (validated by the table).
pub fn facility_code(word: &str) -> u8 {
    match word {
        "user" => 1,
        "daemon" => 3,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => 2,
    }
}
/// Which SMTP service a listening socket provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenRole {
    /// `smtpd.listen`: the MX role (port 25): STARTTLS offered when a certificate is
    /// configured, AUTH only with `auth.offer_on_smtpd`.
    Smtp,
    /// `submission.listen` (port 587): STARTTLS, then AUTH before MAIL.
    Submission,
    /// `submissions.listen` (port 465): implicit TLS, then AUTH before MAIL.
    Submissions,
}

impl ListenRole {
    /// The name used in logs and the config (`smtpd`, `submission`, `submissions`).
    pub fn name(self) -> &'static str {
        match self {
            ListenRole::Smtp => "smtpd",
            ListenRole::Submission => "submission",
            ListenRole::Submissions => "submissions",
        }
    }

    /// True for the submission roles, where AUTH is required before MAIL.
    pub fn requires_auth(self) -> bool {
        self != ListenRole::Smtp
    }
}

/// Outbound TLS levels (Postfix's `smtp_tls_security_level` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsLevel {
    None,
    May,
    Encrypt,
    Verify,
}

impl TlsLevel {
    pub fn parse(s: &str) -> Option<TlsLevel> {
        match s {
            "none" => Some(TlsLevel::None),
            "may" => Some(TlsLevel::May),
            "encrypt" => Some(TlsLevel::Encrypt),
            "verify" => Some(TlsLevel::Verify),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TlsLevel::None => "none",
            TlsLevel::May => "may",
            TlsLevel::Encrypt => "encrypt",
            TlsLevel::Verify => "verify",
        }
    }
}

/// Outbound TLS (`remote.tls`, `remote.tls_policy`, `remote.ca_file`).
#[derive(Debug, Clone)]
pub struct RemoteTlsConfig {
    pub level: TlsLevel,
    /// Lower-case domain -> level.
    pub policy: BTreeMap<String, TlsLevel>,
    pub ca_file: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
}

impl RemoteTlsConfig {
    /// The level for mail to `domain`.
    pub fn level_for(&self, domain: &str) -> TlsLevel {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.policy.get(&d).copied().unwrap_or(self.level)
    }
}

/// The PROXY protocol listeners (`smtpd.proxy_*`).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub trusted: Vec<ipnet::IpNet>,
    pub timeout: Duration,
}

/// A certificate chain and its private key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The configured pairs (RSA or only pair first, then the ECDSA pair); empty: no TLS.
    pub pairs: Vec<CertKeyFiles>,
    pub handshake_timeout: Duration,
    pub session_tickets: bool,
    pub ticket_rotation: Duration,
}

impl TlsConfig {
    /// True when a certificate is configured.
    pub fn enabled(&self) -> bool {
        !self.pairs.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthBackend {
    None,
    File,
    Dovecot,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub backend: AuthBackend,
    pub password_file: Option<PathBuf>,
    pub dovecot_socket: Option<PathBuf>,
    pub offer_on_smtpd: bool,
    /// user (lower case) -> addresses (`a@b`) or `@domain` wildcards (lower case).
    pub senders: BTreeMap<String, Vec<String>>,
    pub max_failures: u32,
    pub failure_window: Duration,
    pub failure_delay: Duration,
}
