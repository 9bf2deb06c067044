//! Sloop's configuration: one TOML file, parsed and validated into a typed [`Config`] at
//! load, so nothing reads raw settings during a session (docs/invariants.md, "where the error
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

pub mod hooks;
mod man;
pub mod params;
mod reader;
mod reader_hooks;
mod reader_tls;
mod render;
mod sections;
pub mod values;

pub use hooks::{
    compile_access_regex, AccessEntry, AccessList, AccessPattern, AccessRules, AccessVerdict,
    HookListener, HookSocket, HookStage, HooksConfig, MilterHook, OnError, PolicyHook,
};
pub use man::render_man;
pub use render::{render_docs, render_sample};
pub use sections::*;
pub use values::{AccessAction, AccessRule, HostPort};

use ipnet::IpNet;
use params::{PARAMS, SECTIONS};
use reader::Reader;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where Sloop looks for its config when neither `-c` nor `SLOOP_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sloop/sloop.toml";

/// Environment variable through which a parent passes the config text it validated,
/// so a child started later (a replacement worker) runs on exactly that configuration
/// even if the file has since been edited into an invalid state (docs/invariants.md G6).
pub const ENV_CONFIG_TEXT: &str = "SLOOP_CONFIG_TEXT";

/// Environment variable naming the file [`ENV_CONFIG_TEXT`] was read from.
pub const ENV_CONFIG_TEXT_FILE: &str = "SLOOP_CONFIG_TEXT_FILE";

/// The `domains.local` entry that stands for `server.hostname`.
pub const HOSTNAME_TOKEN: &str = "@hostname";

/// Longest config text passed through the environment (Linux caps one string at 128 KiB).
const MAX_INHERITED_TEXT: usize = 100 * 1024;

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
    /// `submission.listen` (port 587).
    pub submission_listen: Vec<std::net::SocketAddr>,
    /// `submissions.listen` (port 465).
    pub submissions_listen: Vec<std::net::SocketAddr>,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub proxy: ProxyConfig,
    /// Outbound TLS policy.
    pub remote_tls: RemoteTlsConfig,
    pub remote: RemoteConfig,
    pub queue: QueueConfig,
    pub supervisor: SupervisorConfig,
    pub log_level: log::LevelFilter,
    pub log: LogConfig,
    /// `[[policy]]`, `[[milter]]` and `[access]`.
    pub hooks: HooksConfig,
    /// Every key with its effective value (TOML syntax), for `sloop config check --show`.
    pub effective: BTreeMap<&'static str, String>,
    /// Keys that were omitted and took their default.
    pub defaulted: Vec<&'static str>,
    /// The text this config was parsed from (passed to children, see [`ENV_CONFIG_TEXT`]).
    pub text: String,
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

    /// At a child's start: the config text its parent validated (in
    /// [`ENV_CONFIG_TEXT`]) when there is one, else the file. Files the config names
    /// (aliases, queue program) are not required to exist: the parent checked them, and
    /// the programs handle one going missing at run time.
    ///
    /// The text is bound to the file it was read from ([`ENV_CONFIG_TEXT_FILE`]): a
    /// program pointed at another file (by `-c`, or by a queue-program wrapper that sets
    /// its own `SLOOP_CONFIG`) reads that file instead.
    pub fn load_inherited(file: &Path) -> Result<Config, ConfigError> {
        let bound = std::env::var_os(ENV_CONFIG_TEXT_FILE).map(PathBuf::from);
        match std::env::var(ENV_CONFIG_TEXT) {
            Ok(text) if !text.is_empty() && bound.as_deref() == Some(file) => {
                Config::parse_with(file, &text, false)
            }
            _ => Config::load(file),
        }
    }

    /// Reads and validates `file` without requiring the files it names to exist (for
    /// `sloop passwd`, which creates `auth.password_file`).
    pub fn load_unchecked(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse_with(file, &text, false)
    }

    /// Makes `cmd` start on exactly this configuration: `SLOOP_CONFIG` names the file
    /// and [`ENV_CONFIG_TEXT`] carries the validated text.
    pub fn pass_to(&self, cmd: &mut std::process::Command) {
        cmd.env("SLOOP_CONFIG", &self.file);
        if self.text.len() <= MAX_INHERITED_TEXT && !self.text.contains('\0') {
            cmd.env(ENV_CONFIG_TEXT, &self.text)
                .env(ENV_CONFIG_TEXT_FILE, &self.file);
        } else {
            cmd.env_remove(ENV_CONFIG_TEXT)
                .env_remove(ENV_CONFIG_TEXT_FILE);
        }
    }

    /// Validates `text` as if read from `file` (used by tests and `load`).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(file, text, true)
    }

    fn parse_with(file: &Path, text: &str, check_files: bool) -> Result<Config, ConfigError> {
        let mut r = Reader::new(file, text, check_files)?;
        let hostname = r.hostname("server.hostname");
        let greeting_raw = r.text("smtpd.greeting");
        let greeting = greeting_raw.replace("{hostname}", &hostname);
        let server = ServerConfig {
            spool_dir: r.path("server.spool_dir"),
            run_dir: r.path("server.run_dir"),
            user: r.string("server.user"),
            drop_group: r.string("server.drop_group"),
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
            junk_command_limit: r.int("smtpd.junk_command_limit") as u32,
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
            overload_idle_timeout: r.duration("smtpd.overload_idle_timeout"),
        };
        let local_domains: Vec<String> = r
            .strings("domains.local")
            .into_iter()
            .map(|d| {
                if d == HOSTNAME_TOKEN {
                    server.hostname.clone()
                } else {
                    d
                }
            })
            .collect();
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
            system_users: r.boolean("local.system_users"),
            system_mailbox: if r.string("local.system_mailbox") == "maildir" {
                MailboxFormat::Maildir
            } else {
                MailboxFormat::Mbox
            },
            mail_spool_dir: r.path("local.mail_spool_dir"),
        };
        let relay_networks = r.cidrs("relay.networks");
        let submission_listen = r.listen("submission.listen");
        let submissions_listen = r.listen("submissions.listen");
        let tls = r.tls();
        let auth = r.auth();
        let proxy = r.proxy();
        let remote_tls = r.remote_tls();
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
            min_free: match r.size("queue.min_free") {
                0 => smtpd.max_message_size.saturating_mul(3) / 2,
                n => n,
            },
        };
        let supervisor = SupervisorConfig {
            stop_timeout: r.duration("supervisor.stop_timeout"),
            restart_min: r.duration("supervisor.restart_min"),
            restart_max: r.duration("supervisor.restart_max"),
            startup_crash_pause: r.duration("supervisor.startup_crash_pause"),
        };
        let hooks = r.hooks();
        let log_level = r.level("log.level");
        let log = LogConfig {
            level: log_level,
            target: if r.string("log.target") == "syslog" {
                LogTarget::Syslog
            } else {
                LogTarget::Stderr
            },
            facility: facility_code(&r.string("log.facility")),
            syslog_socket: r.path("log.syslog_socket"),
        };
        let cfg = Config {
            file: file.to_path_buf(),
            server,
            smtpd,
            local_domains,
            local,
            relay_networks,
            submission_listen,
            submissions_listen,
            tls,
            auth,
            proxy,
            remote_tls,
            remote,
            queue,
            supervisor,
            log_level,
            log,
            hooks,
            effective: BTreeMap::new(),
            defaulted: Vec::new(),
            text: text.to_string(),
        };
        r.cross_checks(&cfg);
        r.tls_cross_checks(&cfg);
        let (effective, defaulted) = r.finish()?;
        Ok(Config {
            effective,
            defaulted,
            ..cfg
        })
    }

    /// Checks the tables the config names (the aliases file) parse. `sloopd` runs this
    /// at start and on reload and `sloop config check` runs it too; children do not (a
    /// broken aliases file must not stop a worker from starting: the smtpd answers 451
    /// for local recipients and local delivery defers until it is fixed).
    pub fn check_tables(&self) -> Result<(), ConfigError> {
        let Some(path) = self.local.aliases.as_ref().filter(|p| p.is_file()) else {
            return Ok(());
        };
        let issue = |line: Option<usize>, found: String| ConfigIssue {
            file: path.clone(),
            key: "local.aliases".to_string(),
            line,
            found,
            expected: "an aliases file in aliases(5) syntax (name: value, value, ...)".to_string(),
        };
        match crate::aliases::Aliases::load(path) {
            Ok(_) => Ok(()),
            Err(crate::aliases::AliasError::Read { source, .. }) => Err(ConfigError::Invalid(
                vec![issue(None, format!("an unreadable file ({source})"))],
            )),
            Err(crate::aliases::AliasError::Invalid(list)) => Err(ConfigError::Invalid(
                list.into_iter()
                    .map(|i| issue(Some(i.line), i.message))
                    .collect(),
            )),
        }
    }

    /// Every listening address with its role: `smtpd.listen`, then `submission.listen`,
    /// then `submissions.listen`, then `smtpd.proxy_listen` (the MX role behind a proxy).
    pub fn all_listen(&self) -> Vec<(std::net::SocketAddr, ListenRole)> {
        let mut out: Vec<_> = self
            .smtpd
            .listen
            .iter()
            .map(|a| (*a, ListenRole::Smtp))
            .collect();
        out.extend(
            self.submission_listen
                .iter()
                .map(|a| (*a, ListenRole::Submission)),
        );
        out.extend(
            self.submissions_listen
                .iter()
                .map(|a| (*a, ListenRole::Submissions)),
        );
        out.extend(self.proxy.listen.iter().map(|a| (*a, ListenRole::Smtp)));
        out
    }

    /// True when `local` (a connection's local address) is on `smtpd.proxy_listen`
    /// (exactly, or a wildcard address of the same family and port).
    pub fn is_proxy_listener(&self, local: std::net::SocketAddr) -> bool {
        self.proxy.listen.iter().any(|a| {
            *a == local
                || (a.port() == local.port()
                    && a.ip().is_unspecified()
                    && a.is_ipv4() == local.is_ipv4())
        })
    }

    /// The role of the listener a connection arrived on, from the connection's local
    /// address: an exact match, else a wildcard address (`0.0.0.0`, `[::]`) of the same
    /// family and port; `Smtp` when none matches.
    pub fn role_of(&self, local: std::net::SocketAddr) -> ListenRole {
        let all = self.all_listen();
        all.iter()
            .find(|(a, _)| *a == local)
            .or_else(|| {
                all.iter().find(|(a, _)| {
                    a.port() == local.port()
                        && a.ip().is_unspecified()
                        && a.is_ipv4() == local.is_ipv4()
                })
            })
            .map(|(_, r)| *r)
            .unwrap_or(ListenRole::Smtp)
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

    /// The effective config as TOML, every key shown; it loads back to the same
    /// configuration (`[[policy]]` and `[[milter]]` tables included).
    pub fn render_effective(&self) -> String {
        let mut out = format!("# effective configuration of {}\n", self.file.display());
        for (section, _) in SECTIONS {
            if params::is_array_section(section) {
                out.push_str(&render::hook_tables(section, &self.hooks));
                continue;
            }
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hooks;
