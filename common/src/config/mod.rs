//! Sloop's configuration: one TOML file, parsed and validated into a typed [`Config`] at
//! load, so nothing reads raw settings during a session (docs/invariants.md, "where the error
//! boundaries go").
//!
//! Every key is declared once in [`params::PARAMS`] with its kind, default, doc and the
//! field it fills; a key with a fixed set of words reads into an enum declared with
//! its words (`choice.rs`). The loader walks that table and collects **every** problem (syntax,
//! unknown keys, wrong types, out-of-range values, missing files, cross-key rules) into
//! one [`ConfigError`], each naming the file, the dotted key, the line where known, the
//! value found and what is expected. A setting that is omitted takes its default.
//!
//! Relative paths in the file are taken relative to the file's own directory, so a
//! checkout's `etc/dev.toml` works from any working directory.

pub mod choice;
pub mod hooks;
mod man;
pub mod params;
mod reader;
mod reader_hooks;
mod reader_kinds;
mod reader_tls;
mod render;
mod sections;
pub mod values;

pub use choice::Choice;
pub use hooks::{
    compile_access_regex, AccessEntry, AccessList, AccessPattern, AccessRules, AccessVerdict,
    HookListener, HookSocket, HookStage, HooksConfig, MilterHook, OnError, PolicyHook,
};
pub use man::render_man;
pub use render::{render_docs, render_sample};
pub use sections::*;
pub use values::{AccessAction, AccessRule, HostPort};

use ipnet::IpNet;
use params::{Fill, PARAMS, SECTIONS};
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
        let mut cfg = Config::blank(file, text);
        for p in PARAMS {
            if let Fill::Field(fill) = p.fill {
                fill(&mut r, p, &mut cfg);
            }
        }
        (cfg.hooks.policies, cfg.hooks.milters) = r.hook_tables();
        cfg.complete(&mut r);
        r.cross_checks(&cfg);
        r.tls_cross_checks(&cfg);
        (cfg.effective, cfg.defaulted) = r.finish()?;
        Ok(cfg)
    }

    /// The config before the table is read: every field is then filled by its key.
    fn blank(file: &Path, text: &str) -> Config {
        Config {
            file: file.to_path_buf(),
            server: ServerConfig::default(),
            smtpd: SmtpdConfig::default(),
            local_domains: Vec::new(),
            local: LocalConfig::default(),
            relay_networks: Vec::new(),
            submission_listen: Vec::new(),
            submissions_listen: Vec::new(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            proxy: ProxyConfig::default(),
            remote_tls: RemoteTlsConfig::default(),
            remote: RemoteConfig::default(),
            queue: QueueConfig::default(),
            supervisor: SupervisorConfig::default(),
            log_level: log::LevelFilter::Off,
            log: LogConfig::default(),
            hooks: HooksConfig::default(),
            effective: BTreeMap::new(),
            defaulted: Vec::new(),
            text: text.to_string(),
        }
    }

    /// The values made from several keys, once every key is read: the greeting with
    /// the host name, `@hostname` among the local domains, `queue.min_free = 0`, the
    /// TLS certificate pairs.
    fn complete(&mut self, r: &mut Reader) {
        self.smtpd.greeting = self
            .smtpd
            .greeting
            .replace("{hostname}", &self.server.hostname);
        for d in &mut self.local_domains {
            if *d == HOSTNAME_TOKEN {
                d.clone_from(&self.server.hostname);
            }
        }
        if self.queue.min_free == 0 {
            self.queue.min_free = self.smtpd.max_message_size.saturating_mul(3) / 2;
        }
        r.tls_pairs(&mut self.tls);
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
