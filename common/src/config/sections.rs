//! The typed sections of a validated [`super::Config`]: what the programs read.
//!
//! Each field is filled by the parameter table (`params.rs`), which names the field
//! beside the key. `Default` gives the blank a config is filled into before the table
//! is read; a default that matters is the key's, in the table, never these.

use super::choice::choice;
use super::values::{AccessRule, HostPort};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
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

choice! {
    /// What a bare CR or LF inside DATA gets (`smtpd.bare_newline`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum BareNewline {
        /// Refused with `554 5.6.x`.
        #[default]
        Reject = "reject",
        /// Stored as CRLF.
        Normalize = "normalize",
    }
}

#[derive(Debug, Clone, Default)]
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

choice! {
    /// A mailbox format (`local.mailbox_format`, `local.system_mailbox`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum MailboxFormat {
        #[default]
        Maildir = "maildir",
        Mbox = "mbox",
    }
}

#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone, Default)]
pub struct RemoteConfig {
    pub smarthost: Option<HostPort>,
    pub routes: BTreeMap<String, HostPort>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
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
    /// Added to the nice value of `sloop-qmgr` (and so of its workers) at its start.
    pub nice: u32,
    /// Free octets the spool's file system must keep (0 in the file: resolved at load
    /// to 1.5 times `smtpd.max_message_size`).
    pub min_free: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SupervisorConfig {
    pub stop_timeout: Duration,
    pub restart_min: Duration,
    pub restart_max: Duration,
    pub startup_crash_pause: Duration,
}

choice! {
    /// Where log lines go (`log.target`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum LogTarget {
        #[default]
        Stderr = "stderr",
        Syslog = "syslog",
    }
}

choice! {
    /// A syslog facility (`log.facility`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Facility {
        Mail = "mail",
        Daemon = "daemon",
        User = "user",
        Local0 = "local0",
        Local1 = "local1",
        Local2 = "local2",
        Local3 = "local3",
        Local4 = "local4",
        Local5 = "local5",
        Local6 = "local6",
        Local7 = "local7",
    }
}

impl Facility {
    /// The facility code (RFC 5424 numbering: mail = 2).
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: log::LevelFilter,
    pub target: LogTarget,
    pub facility: Facility,
    pub syslog_socket: PathBuf,
    /// The first part of each program's syslog name (`sloop` in `sloop/smtpd`).
    pub syslog_name: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: log::LevelFilter::Off,
            target: LogTarget::default(),
            facility: Facility::Mail,
            syslog_socket: PathBuf::new(),
            syslog_name: String::new(),
        }
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

choice! {
    /// Outbound TLS levels (Postfix's `smtp_tls_security_level` words), weakest first.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
    pub enum TlsLevel {
        None = "none",
        #[default]
        May = "may",
        Encrypt = "encrypt",
        Verify = "verify",
    }
}

/// Outbound TLS (`remote.tls`, `remote.tls_policy`, `remote.ca_file`).
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// The configured pairs (RSA or only pair first, then the ECDSA pair); empty: no TLS.
    /// Made at load from the four file keys below, each given with its partner.
    pub pairs: Vec<CertKeyFiles>,
    /// `tls.cert_file`, as configured.
    pub cert_file: Option<PathBuf>,
    /// `tls.key_file`.
    pub key_file: Option<PathBuf>,
    /// `tls.ecdsa_cert_file`.
    pub ecdsa_cert_file: Option<PathBuf>,
    /// `tls.ecdsa_key_file`.
    pub ecdsa_key_file: Option<PathBuf>,
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

choice! {
    /// Where AUTH checks passwords (`auth.backend`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum AuthBackend {
        /// AUTH not offered.
        #[default]
        None = "none",
        /// `auth.password_file`.
        File = "file",
        /// Dovecot's auth server on `auth.dovecot_socket`.
        Dovecot = "dovecot",
    }
}

#[derive(Debug, Clone, Default)]
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
