//! Walks a parsed TOML file against the parameter table, collecting every issue with
//! its file, key and line, and returning each value typed (or its default when bad).

use super::params::{self, Kind, Param, SECTIONS};
use super::values::{self, AccessRule, HostPort};
use super::{machine_hostname, Config, ConfigError, ConfigIssue};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) struct Reader<'a> {
    file: PathBuf,
    base: PathBuf,
    text: &'a str,
    table: toml::Table,
    issues: Vec<ConfigIssue>,
    effective: BTreeMap<&'static str, String>,
    defaulted: Vec<&'static str>,
    /// Whether files the config names must exist now (off for an inherited config,
    /// which its parent has already checked: a file removed since must not stop a
    /// child from starting).
    check_files: bool,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        file: &Path,
        text: &'a str,
        check_files: bool,
    ) -> Result<Reader<'a>, ConfigError> {
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
            check_files,
        };
        r.check_unknown();
        Ok(r)
    }

    pub(super) fn check_unknown(&mut self) {
        let mut unknown = Vec::new();
        let mut misshapen = Vec::new();
        for (section, value) in &self.table {
            match value {
                // `[[policy]]` and `[[milter]]` tables are read, and their keys checked,
                // entry by entry (reader_hooks.rs).
                _ if params::is_array_section(section) => {}
                toml::Value::Table(t) if SECTIONS.iter().any(|(s, _)| s == section) => {
                    for key in t.keys() {
                        let dotted = format!("{section}.{key}");
                        if params::find(&dotted).is_none() {
                            let shown = format!("{section}.{}", show_key(key));
                            unknown.push((dotted, shown, Some(section)));
                        }
                    }
                }
                other if SECTIONS.iter().any(|(s, _)| s == section) => {
                    let found = match other {
                        toml::Value::Array(_) => format!("[[{section}]] (an array of tables)"),
                        v => show(v),
                    };
                    misshapen.push((section.clone(), found));
                }
                _ => unknown.push((section.clone(), show_key(section), None)),
            }
        }
        for (section, found) in misshapen {
            self.issues.push(ConfigIssue {
                file: self.file.clone(),
                key: show_key(&section),
                line: locate(self.text, &section),
                found,
                expected: format!("one [{section}] table (single brackets) of its keys"),
            });
        }
        for (key, shown, section) in unknown {
            let expected = match section {
                Some(s) => format!("one of the keys of [{s}] (see docs/configuration.md)"),
                None => format!(
                    "a known section: {}",
                    SECTIONS
                        .iter()
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.issues.push(ConfigIssue {
                file: self.file.clone(),
                key: shown,
                line: locate(self.text, &key),
                found: "an unknown key".to_string(),
                expected,
            });
        }
    }

    /// The file's text (to locate entries of arrays of tables).
    pub(super) fn source(&self) -> &'a str {
        self.text
    }

    /// The value of a whole top-level section, as written.
    pub(super) fn section(&self, name: &str) -> Option<toml::Value> {
        self.table.get(name).cloned()
    }

    /// Records an issue whose line the caller located.
    pub(super) fn issue_at(
        &mut self,
        key: String,
        line: Option<usize>,
        found: String,
        expected: String,
    ) {
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            key,
            line,
            found,
            expected,
        });
    }

    /// Whether files the config names must exist now (see the field).
    pub(super) fn checking_files(&self) -> bool {
        self.check_files
    }

    pub(super) fn issue(&mut self, key: &str, found: String, expected: String) {
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
    pub(super) fn raw(&mut self, key: &'static str) -> (Param, toml::Value) {
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

    pub(super) fn bad(
        &mut self,
        key: &'static str,
        value: &toml::Value,
        expected: impl Into<String>,
    ) {
        self.issue(key, show(value), expected.into());
    }

    pub(super) fn str_of(&mut self, key: &'static str, value: &toml::Value) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.bad(key, value, "a string");
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &'static str) -> String {
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
                self.bad(
                    key,
                    &value,
                    "a user or group name (letters, digits, _ - .) or empty",
                );
                String::new()
            }
            _ => s,
        }
    }

    pub(super) fn text(&mut self, key: &'static str) -> String {
        self.string(key)
    }

    pub(super) fn hostname(&mut self, key: &'static str) -> String {
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

    pub(super) fn resolve(&self, s: &str) -> PathBuf {
        let p = PathBuf::from(s);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn opt_path(&mut self, key: &'static str) -> Option<PathBuf> {
        let (param, value) = self.raw(key);
        self.path_of(key, &param, &value)
    }

    pub(super) fn path_of(
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
        if self.check_files
            && matches!(param.kind, Kind::Path { must_exist: true })
            && !path.is_file()
        {
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
    pub(super) fn path(&mut self, key: &'static str) -> PathBuf {
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

    pub(super) fn boolean(&mut self, key: &'static str) -> bool {
        let (_, value) = self.raw(key);
        match value.as_bool() {
            Some(b) => b,
            None => {
                self.bad(key, &value, "true or false");
                false
            }
        }
    }

    pub(super) fn int(&mut self, key: &'static str) -> u64 {
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

    pub(super) fn size(&mut self, key: &'static str) -> u64 {
        let (param, value) = self.raw(key);
        let Kind::Size { min, max } = param.kind else {
            return 0;
        };
        let parsed = match &value {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            toml::Value::String(s) => values::parse_size(s),
            _ => Err(values::Expected("a size such as 25M".to_string())),
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

    pub(super) fn duration(&mut self, key: &'static str) -> Duration {
        let (param, value) = self.raw(key);
        let Kind::Duration { min, max } = param.kind else {
            return Duration::ZERO;
        };
        let parsed = match value.as_str() {
            Some(s) => values::parse_duration(s),
            None => Err(values::Expected(
                "a duration string with a unit, such as \"30s\"".to_string(),
            )),
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

    pub(super) fn list(&mut self, key: &'static str) -> Vec<(toml::Value, String)> {
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

    pub(super) fn parsed_list<T>(
        &mut self,
        key: &'static str,
        parse: fn(&str) -> Result<T, values::Expected>,
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

    pub(super) fn strings(&mut self, key: &'static str) -> Vec<String> {
        let (param, _) = match params::find(key) {
            Some(p) => (*p, ()),
            None => return Vec::new(),
        };
        match param.kind {
            Kind::DomainList => self.parsed_list(key, |s| {
                if s == super::HOSTNAME_TOKEN {
                    Ok(s.to_string())
                } else {
                    values::parse_hostname(s)
                }
            }),
            Kind::MailboxList => self.parsed_list(key, values::parse_mailbox),
            _ => self.list(key).into_iter().map(|(_, s)| s).collect(),
        }
    }

    pub(super) fn listen(&mut self, key: &'static str) -> Vec<SocketAddr> {
        self.parsed_list(key, values::parse_listen)
    }

    pub(super) fn cidrs(&mut self, key: &'static str) -> Vec<IpNet> {
        self.parsed_list(key, values::parse_cidr)
    }

    pub(super) fn access(&mut self, key: &'static str) -> Vec<AccessRule> {
        self.parsed_list(key, values::parse_access_rule)
    }

    pub(super) fn hostport(&mut self, key: &'static str) -> Option<HostPort> {
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

    pub(super) fn routes(&mut self, key: &'static str) -> BTreeMap<String, HostPort> {
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
                (Err(e), _) => self.issue(key, format!("domain {domain:?}"), e.into()),
                (_, Some(Err(e))) => self.bad(key, target, e),
                (_, None) => self.bad(key, target, "a string \"host:port\""),
            }
        }
        out
    }

    pub(super) fn level(&mut self, key: &'static str) -> log::LevelFilter {
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
    pub(super) fn cross_checks(&mut self, cfg: &Config) {
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
        if cfg.queue.min_free < cfg.smtpd.max_message_size {
            self.issue(
                "queue.min_free",
                cfg.queue.min_free.to_string(),
                "0 (1.5 times smtpd.max_message_size) or at least smtpd.max_message_size, \
                 so that one more message always fits"
                    .to_string(),
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

    /// The effective values, or every issue in the order of the file (issues with no
    /// line, such as cross-key rules on omitted keys, last).
    pub(super) fn finish(
        mut self,
    ) -> Result<(BTreeMap<&'static str, String>, Vec<&'static str>), ConfigError> {
        if self.issues.is_empty() {
            Ok((self.effective, self.defaulted))
        } else {
            self.issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
            Err(ConfigError::Invalid(self.issues))
        }
    }
}

pub(super) fn default_value(param: &Param) -> toml::Value {
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

/// A value as shown in an error: one line (strings use Rust escapes, so a CR/LF in a
/// greeting shows as `\r\n`), at most 80 characters.
pub(super) fn show(value: &toml::Value) -> String {
    let s = match value {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string().replace(['\r', '\n'], " "),
    };
    if s.len() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A key name as shown in a message: bare when TOML allows it bare, else quoted with
/// escapes, so an empty name (`[""]`, found by fuzzing) shows as `""`, never as nothing.
pub(super) fn show_key(name: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.is_empty() && name.chars().all(bare) {
        name.to_string()
    } else {
        format!("{name:?}")
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
pub(super) fn locate(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = match dotted.split_once('.') {
        Some((s, k)) => (s, Some(k)),
        None => (dotted, None),
    };
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            // `[section]`, or `[[section]]` for an array of tables.
            current = h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .trim_matches('"')
                .to_string();
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
