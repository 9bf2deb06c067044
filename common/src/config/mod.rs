//! Sloop's configuration: one TOML file, parsed and validated into a typed [`Config`] at
//! load, so nothing reads raw settings during a session (SEED.md, "where the error
//! boundaries go").
//!
//! Every key is declared once in [`params::PARAMS`] with its kind, default and doc. The
//! loader walks the file against that table and collects **every** problem (syntax,
//! unknown keys, wrong types, out-of-range values, missing files, cross-key rules) into
//! one [`ConfigError`], each naming the file, the dotted key, the line where known, the
//! value found and what is expected. A setting that is omitted takes its default.
//!
//! Relative paths in the file are taken relative to the file's own directory, so a
//! checkout's `etc/dev.toml` works from any working directory.

pub mod params;
mod render;
pub mod values;

pub use render::{render_docs, render_sample};
pub use values::{AccessAction, AccessRule, HostPort};

use ipnet::IpNet;
use params::{Kind, Param, PARAMS, SECTIONS};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Sloop looks for its config when neither `-c` nor `SLOOP_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sloop/sloop.toml";

/// The config path a command should use: `-c FILE`, else `$SLOOP_CONFIG`, else the
/// packaged default.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match std::env::var_os("SLOOP_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    pub key: String,
    pub line: Option<usize>,
    pub found: String,
    pub expected: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(
            f,
            ": {}: found {}; expected {}",
            self.key, self.found, self.expected
        )
    }
}

/// Why a config could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but is invalid; every problem is listed.
    Invalid(Vec<ConfigIssue>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "{}: cannot read config file: {source}", file.display())
            }
            ConfigError::Invalid(issues) => {
                write!(
                    f,
                    "invalid configuration ({} error{}):",
                    issues.len(),
                    if issues.len() == 1 { "" } else { "s" }
                )?;
                for i in issues {
                    write!(f, "\n  {i}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub run_dir: PathBuf,
    pub user: String,
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
}

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub stop_timeout: Duration,
    pub restart_min: Duration,
    pub restart_max: Duration,
    pub startup_crash_pause: Duration,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub file: PathBuf,
    pub server: ServerConfig,
    pub smtpd: SmtpdConfig,
    /// Local domains, lower case.
    pub local_domains: Vec<String>,
    pub local: LocalConfig,
    pub relay_networks: Vec<IpNet>,
    pub remote: RemoteConfig,
    pub queue: QueueConfig,
    pub supervisor: SupervisorConfig,
    pub log_level: log::LevelFilter,
    /// Every key with its effective value (TOML syntax), for `sloop config check --show`.
    pub effective: BTreeMap<&'static str, String>,
    /// Keys that were omitted and took their default.
    pub defaulted: Vec<&'static str>,
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse(file, &text)
    }

    /// Validates `text` as if read from `file` (used by tests and `load`).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut r = Reader::new(file, text)?;
        let hostname = r.hostname("server.hostname");
        let greeting_raw = r.text("smtpd.greeting");
        let greeting = greeting_raw.replace("{hostname}", &hostname);
        let server = ServerConfig {
            spool_dir: r.path("server.spool_dir"),
            run_dir: r.path("server.run_dir"),
            user: r.string("server.user"),
            bin_dir: r.opt_path("server.bin_dir"),
            hostname,
        };
        let smtpd = SmtpdConfig {
            listen: r.listen("smtpd.listen"),
            greeting,
            max_message_size: r.size("smtpd.max_message_size"),
            max_recipients: r.int("smtpd.max_recipients") as usize,
            max_line_length: r.int("smtpd.max_line_length") as usize,
            max_errors: r.int("smtpd.max_errors") as u32,
            max_received_headers: r.int("smtpd.max_received_headers") as usize,
            bare_newline: if r.string("smtpd.bare_newline") == "normalize" {
                BareNewline::Normalize
            } else {
                BareNewline::Reject
            },
            min_idle: r.int("smtpd.min_idle") as usize,
            max_processes: r.int("smtpd.max_processes") as usize,
            max_use: r.int("smtpd.max_use"),
            max_per_client: r.int("smtpd.max_per_client") as usize,
            connect_timeout: r.duration("smtpd.connect_timeout"),
            reverse_dns: r.boolean("smtpd.reverse_dns"),
            dns_timeout: r.duration("smtpd.dns_timeout"),
            command_timeout: r.duration("smtpd.command_timeout"),
            idle_timeout: r.duration("smtpd.idle_timeout"),
            data_timeout: r.duration("smtpd.data_timeout"),
            session_timeout: r.duration("smtpd.session_timeout"),
            watchdog_grace: r.duration("smtpd.watchdog_grace"),
            access: r.access("smtpd.access"),
            queue_program: r.opt_path("smtpd.queue_program"),
            queue_timeout: r.duration("smtpd.queue_timeout"),
        };
        let local_domains = r.strings("domains.local");
        let local = LocalConfig {
            mailbox_root: r.path("local.mailbox_root"),
            mailboxes: r.strings("local.mailboxes"),
            aliases: r.opt_path("local.aliases"),
            recipient_delimiter: r.string("local.recipient_delimiter").chars().next(),
            mailbox_format: if r.string("local.mailbox_format") == "mbox" {
                MailboxFormat::Mbox
            } else {
                MailboxFormat::Maildir
            },
        };
        let relay_networks = r.cidrs("relay.networks");
        let remote = RemoteConfig {
            smarthost: r.hostport("remote.smarthost"),
            routes: r.routes("remote.routes"),
            connect_timeout: r.duration("remote.connect_timeout"),
            command_timeout: r.duration("remote.command_timeout"),
            data_timeout: r.duration("remote.data_timeout"),
        };
        let delay_warning = r.duration("queue.delay_warning");
        let queue = QueueConfig {
            retry_min: r.duration("queue.retry_min"),
            retry_max: r.duration("queue.retry_max"),
            max_lifetime: r.duration("queue.max_lifetime"),
            delay_warning: (!delay_warning.is_zero()).then_some(delay_warning),
            scan_interval: r.duration("queue.scan_interval"),
            max_active: r.int("queue.max_active") as usize,
            local_concurrency: r.int("queue.local_concurrency") as usize,
            remote_concurrency: r.int("queue.remote_concurrency") as usize,
            destination_concurrency: r.int("queue.destination_concurrency") as usize,
            delivery_timeout: r.duration("queue.delivery_timeout"),
        };
        let supervisor = SupervisorConfig {
            stop_timeout: r.duration("supervisor.stop_timeout"),
            restart_min: r.duration("supervisor.restart_min"),
            restart_max: r.duration("supervisor.restart_max"),
            startup_crash_pause: r.duration("supervisor.startup_crash_pause"),
        };
        let log_level = r.level("log.level");
        let cfg = Config {
            file: file.to_path_buf(),
            server,
            smtpd,
            local_domains,
            local,
            relay_networks,
            remote,
            queue,
            supervisor,
            log_level,
            effective: BTreeMap::new(),
            defaulted: Vec::new(),
        };
        r.cross_checks(&cfg);
        let (effective, defaulted) = r.finish()?;
        Ok(Config {
            effective,
            defaulted,
            ..cfg
        })
    }

    /// True when `domain` (any case) is one of `domains.local`.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The directory holding the sloop-* programs.
    pub fn bin_dir(&self) -> PathBuf {
        if let Some(d) = &self.server.bin_dir {
            return d.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("/usr/sbin"))
    }

    /// Path of the sloop program `name` (such as `sloop-queue`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// The effective config as TOML, every key shown.
    pub fn render_effective(&self) -> String {
        let mut out = format!("# effective configuration of {}\n", self.file.display());
        for (section, _) in SECTIONS {
            out.push_str(&format!("\n[{section}]\n"));
            for p in PARAMS
                .iter()
                .filter(|p| p.key.split('.').next() == Some(section))
            {
                let name = p.key.split_once('.').map(|(_, k)| k).unwrap_or(p.key);
                let value = self.effective.get(p.key).cloned().unwrap_or_default();
                let mark = if self.defaulted.contains(&p.key) {
                    "  # default"
                } else {
                    ""
                };
                out.push_str(&format!("{name} = {value}{mark}\n"));
            }
        }
        out
    }
}

/// The machine's host name, or `localhost` when it cannot be read.
pub fn machine_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| values::parse_hostname(&h).ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Walks a parsed file against the parameter table, collecting issues.
struct Reader<'a> {
    file: PathBuf,
    base: PathBuf,
    text: &'a str,
    table: toml::Table,
    issues: Vec<ConfigIssue>,
    effective: BTreeMap<&'static str, String>,
    defaulted: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(file: &Path, text: &'a str) -> Result<Reader<'a>, ConfigError> {
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let line = e.span().map(|s| line_of(text, s.start));
                return Err(ConfigError::Invalid(vec![ConfigIssue {
                    file: file.to_path_buf(),
                    key: "(syntax)".to_string(),
                    line,
                    found: e.message().trim().to_string(),
                    expected: "valid TOML".to_string(),
                }]));
            }
        };
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut r = Reader {
            file: file.to_path_buf(),
            base,
            text,
            table,
            issues: Vec::new(),
            effective: BTreeMap::new(),
            defaulted: Vec::new(),
        };
        r.check_unknown();
        Ok(r)
    }

    fn check_unknown(&mut self) {
        let mut unknown = Vec::new();
        for (section, value) in &self.table {
            match value {
                toml::Value::Table(t) if SECTIONS.iter().any(|(s, _)| s == section) => {
                    for key in t.keys() {
                        let dotted = format!("{section}.{key}");
                        if params::find(&dotted).is_none() {
                            unknown.push(dotted);
                        }
                    }
                }
                toml::Value::Table(_) => unknown.push(section.clone()),
                _ => unknown.push(section.clone()),
            }
        }
        for key in unknown {
            let expected = match key.split_once('.') {
                Some((s, _)) => format!("one of the keys of [{s}] (see docs/configuration.md)"),
                None => format!(
                    "a known section: {}",
                    SECTIONS
                        .iter()
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.issue(&key, "an unknown key".to_string(), expected);
        }
    }

    fn issue(&mut self, key: &str, found: String, expected: String) {
        let line = locate(self.text, key);
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            key: key.to_string(),
            line,
            found,
            expected,
        });
    }

    /// The raw value of `key`, or its default. Records the effective value.
    fn raw(&mut self, key: &'static str) -> (Param, toml::Value) {
        let param = match params::find(key) {
            Some(p) => *p,
            // A key asked for by the code but not declared is our own bug; it is caught
            // by the unit test that loads an empty file.
            None => Param {
                key,
                kind: Kind::Bool,
                default: "false",
                doc: "",
            },
        };
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        let given = self.table.get(section).and_then(|s| s.get(name)).cloned();
        let value = match given {
            Some(v) => v,
            None => {
                self.defaulted.push(key);
                default_value(&param)
            }
        };
        self.effective.insert(key, value.to_string());
        (param, value)
    }

    fn bad(&mut self, key: &'static str, value: &toml::Value, expected: impl Into<String>) {
        self.issue(key, show(value), expected.into());
    }

    fn str_of(&mut self, key: &'static str, value: &toml::Value) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.bad(key, value, "a string");
                None
            }
        }
    }

    fn string(&mut self, key: &'static str) -> String {
        let (param, value) = self.raw(key);
        let Some(s) = self.str_of(key, &value) else {
            return default_str(&param);
        };
        match param.kind {
            Kind::Choice(words) if !words.contains(&s.as_str()) => {
                self.bad(key, &value, format!("one of: {}", words.join(", ")));
                default_str(&param)
            }
            Kind::Text { max } => match values::check_text(&s, max) {
                Ok(()) => s,
                Err(e) => {
                    self.bad(key, &value, e);
                    default_str(&param)
                }
            },
            Kind::User
                if !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
            {
                self.bad(key, &value, "a user name (letters, digits, _ - .) or empty");
                String::new()
            }
            _ => s,
        }
    }

    fn text(&mut self, key: &'static str) -> String {
        self.string(key)
    }

    fn hostname(&mut self, key: &'static str) -> String {
        let (_, value) = self.raw(key);
        let Some(s) = self.str_of(key, &value) else {
            return machine_hostname();
        };
        if s == "@hostname" {
            return machine_hostname();
        }
        match values::parse_hostname(&s) {
            Ok(h) => h,
            Err(e) => {
                self.bad(key, &value, e);
                machine_hostname()
            }
        }
    }

    fn resolve(&self, s: &str) -> PathBuf {
        let p = PathBuf::from(s);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn opt_path(&mut self, key: &'static str) -> Option<PathBuf> {
        let (param, value) = self.raw(key);
        self.path_of(key, &param, &value)
    }

    fn path_of(
        &mut self,
        key: &'static str,
        param: &Param,
        value: &toml::Value,
    ) -> Option<PathBuf> {
        let s = self.str_of(key, value)?;
        if s.is_empty() {
            return None;
        }
        if s.contains('\0') {
            self.bad(key, value, "a path without NUL");
            return None;
        }
        let path = self.resolve(&s);
        if matches!(param.kind, Kind::Path { must_exist: true }) && !path.is_file() {
            let why = match std::fs::metadata(&path) {
                Ok(_) => "is not a regular file".to_string(),
                Err(e) => e.to_string(),
            };
            self.issue(
                key,
                format!("{} ({why})", path.display()),
                "an existing, readable file".to_string(),
            );
        }
        Some(path)
    }

    /// A path that must be set (a directory Sloop needs).
    fn path(&mut self, key: &'static str) -> PathBuf {
        let (param, value) = self.raw(key);
        match self.path_of(key, &param, &value) {
            Some(p) => p,
            None => {
                if value.as_str() == Some("") {
                    self.bad(key, &value, "a directory path");
                }
                PathBuf::from(default_str(&param))
            }
        }
    }

    fn boolean(&mut self, key: &'static str) -> bool {
        let (_, value) = self.raw(key);
        match value.as_bool() {
            Some(b) => b,
            None => {
                self.bad(key, &value, "true or false");
                false
            }
        }
    }

    fn int(&mut self, key: &'static str) -> u64 {
        let (param, value) = self.raw(key);
        let Kind::Int { min, max } = param.kind else {
            return 0;
        };
        match value.as_integer() {
            Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => n as u64,
            _ => {
                self.bad(key, &value, format!("a whole number from {min} to {max}"));
                min
            }
        }
    }

    fn size(&mut self, key: &'static str) -> u64 {
        let (param, value) = self.raw(key);
        let Kind::Size { min, max } = param.kind else {
            return 0;
        };
        let parsed = match &value {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            toml::Value::String(s) => values::parse_size(s),
            _ => Err("a size such as 25M".to_string()),
        };
        match parsed {
            Ok(n) if n >= min && n <= max => n,
            Ok(_) => {
                self.bad(key, &value, format!("a size from {min} to {max} bytes"));
                min
            }
            Err(e) => {
                self.bad(key, &value, e);
                min
            }
        }
    }

    fn duration(&mut self, key: &'static str) -> Duration {
        let (param, value) = self.raw(key);
        let Kind::Duration { min, max } = param.kind else {
            return Duration::ZERO;
        };
        let parsed = match value.as_str() {
            Some(s) => values::parse_duration(s),
            None => Err("a duration string with a unit, such as \"30s\"".to_string()),
        };
        match parsed {
            Ok(d) if d.as_millis() as u64 >= min && d.as_millis() as u64 <= max => d,
            Ok(_) => {
                let range = format!(
                    "a duration from {} to {}",
                    values::format_duration(Duration::from_millis(min)),
                    values::format_duration(Duration::from_millis(max))
                );
                self.bad(key, &value, range);
                Duration::from_millis(min.max(1))
            }
            Err(e) => {
                self.bad(key, &value, e);
                Duration::from_millis(min.max(1))
            }
        }
    }

    fn list(&mut self, key: &'static str) -> Vec<(toml::Value, String)> {
        let (_, value) = self.raw(key);
        let Some(items) = value.as_array() else {
            self.bad(key, &value, "a list of strings, such as [\"a\", \"b\"]");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item.as_str() {
                Some(s) => out.push((item.clone(), s.to_string())),
                None => self.bad(key, item, "a list of strings"),
            }
        }
        out
    }

    fn parsed_list<T>(
        &mut self,
        key: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (raw, s) in self.list(key) {
            match parse(&s) {
                Ok(v) => out.push(v),
                Err(e) => self.bad(key, &raw, e),
            }
        }
        out
    }

    fn strings(&mut self, key: &'static str) -> Vec<String> {
        let (param, _) = match params::find(key) {
            Some(p) => (*p, ()),
            None => return Vec::new(),
        };
        match param.kind {
            Kind::DomainList => self.parsed_list(key, values::parse_hostname),
            Kind::MailboxList => self.parsed_list(key, values::parse_mailbox),
            _ => self.list(key).into_iter().map(|(_, s)| s).collect(),
        }
    }

    fn listen(&mut self, key: &'static str) -> Vec<SocketAddr> {
        self.parsed_list(key, values::parse_listen)
    }

    fn cidrs(&mut self, key: &'static str) -> Vec<IpNet> {
        self.parsed_list(key, values::parse_cidr)
    }

    fn access(&mut self, key: &'static str) -> Vec<AccessRule> {
        self.parsed_list(key, values::parse_access_rule)
    }

    fn hostport(&mut self, key: &'static str) -> Option<HostPort> {
        let (_, value) = self.raw(key);
        let s = self.str_of(key, &value)?;
        if s.is_empty() {
            return None;
        }
        match values::parse_hostport(&s) {
            Ok(h) => Some(h),
            Err(e) => {
                self.bad(key, &value, e);
                None
            }
        }
    }

    fn routes(&mut self, key: &'static str) -> BTreeMap<String, HostPort> {
        let (_, value) = self.raw(key);
        let Some(table) = value.as_table() else {
            self.bad(key, &value, "a table of domain = \"host:port\"");
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (domain, target) in table {
            let d = values::parse_hostname(domain);
            let t = target.as_str().map(values::parse_hostport);
            match (d, t) {
                (Ok(d), Some(Ok(t))) => {
                    out.insert(d, t);
                }
                (Err(e), _) => self.issue(key, format!("domain {domain:?}"), e),
                (_, Some(Err(e))) => self.bad(key, target, e),
                (_, None) => self.bad(key, target, "a string \"host:port\""),
            }
        }
        out
    }

    fn level(&mut self, key: &'static str) -> log::LevelFilter {
        let (_, value) = self.raw(key);
        let parsed = value
            .as_str()
            .and_then(|s| match s.to_ascii_lowercase().as_str() {
                "off" => Some(log::LevelFilter::Off),
                "error" => Some(log::LevelFilter::Error),
                "warn" | "warning" => Some(log::LevelFilter::Warn),
                "info" => Some(log::LevelFilter::Info),
                "debug" => Some(log::LevelFilter::Debug),
                "trace" => Some(log::LevelFilter::Trace),
                _ => None,
            });
        parsed.unwrap_or_else(|| {
            self.bad(key, &value, "one of: error, warn, info, debug, trace, off");
            log::LevelFilter::Info
        })
    }

    /// Rules between keys.
    fn cross_checks(&mut self, cfg: &Config) {
        if cfg.queue.retry_min > cfg.queue.retry_max {
            let found = values::format_duration(cfg.queue.retry_min);
            self.issue(
                "queue.retry_min",
                found,
                "at most queue.retry_max".to_string(),
            );
        }
        if cfg.supervisor.restart_min > cfg.supervisor.restart_max {
            let found = values::format_duration(cfg.supervisor.restart_min);
            self.issue(
                "supervisor.restart_min",
                found,
                "at most supervisor.restart_max".to_string(),
            );
        }
        if cfg.smtpd.min_idle > cfg.smtpd.max_processes {
            self.issue(
                "smtpd.min_idle",
                cfg.smtpd.min_idle.to_string(),
                "at most smtpd.max_processes".to_string(),
            );
        }
        if cfg.smtpd.dns_timeout > cfg.smtpd.connect_timeout {
            let found = values::format_duration(cfg.smtpd.dns_timeout);
            self.issue(
                "smtpd.dns_timeout",
                found,
                "at most smtpd.connect_timeout".to_string(),
            );
        }
        for mailbox in &cfg.local.mailboxes {
            let domain = mailbox.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !cfg.is_local_domain(domain) {
                self.issue(
                    "local.mailboxes",
                    format!("{mailbox:?}"),
                    format!("an address in one of domains.local ({domain} is not listed)"),
                );
            }
        }
        if cfg.smtpd.greeting.len() > 400 {
            self.issue(
                "smtpd.greeting",
                "a greeting longer than 400 octets once {hostname} is filled in".to_string(),
                "a shorter greeting".to_string(),
            );
        }
    }

    fn finish(self) -> Result<(BTreeMap<&'static str, String>, Vec<&'static str>), ConfigError> {
        if self.issues.is_empty() {
            Ok((self.effective, self.defaulted))
        } else {
            Err(ConfigError::Invalid(self.issues))
        }
    }
}

fn default_value(param: &Param) -> toml::Value {
    // Defaults are TOML literals; a unit test checks that every one parses.
    let doc = format!("v = {}", param.default);
    doc.parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or(toml::Value::String(String::new()))
}

fn default_str(param: &Param) -> String {
    default_value(param)
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn show(value: &toml::Value) -> String {
    let s = value.to_string();
    if s.len() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line that sets `dotted` (`section.key`), either as `key = ` inside
/// `[section]` or as `section.key = ` at the top. Returns the section header's line
/// for an unknown section, `None` when the key is not written in the file.
fn locate(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = match dotted.split_once('.') {
        Some((s, k)) => (s, Some(k)),
        None => (dotted, None),
    };
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h.trim_end_matches(']').trim().trim_matches('"').to_string();
            if key.is_none() && current == section {
                return Some(i + 1);
            }
            continue;
        }
        let Some((lhs, _)) = t.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"');
        let full = if current.is_empty() {
            lhs.to_string()
        } else {
            format!("{current}.{lhs}")
        };
        if full == dotted || (key.is_none() && full.starts_with(&format!("{section}."))) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests;
