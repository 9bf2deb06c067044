//! Walks a parsed TOML file against the parameter table, collecting every issue with
//! its file, key and line, and returning each value typed (or its default when bad).
//!
//! The methods that read each kind of value are in `reader_kinds.rs`. A reader
//! method takes the key's declaration (`&'static Param`, so a key the table
//! does not declare cannot be asked for) and reads one kind of value; asked for a key
//! of another kind it records an internal error instead of guessing, which the unit
//! tests turn into a failure.

use super::params::{self, Param, SECTIONS};
use super::render::kind_name;
use super::values;
use super::{Config, ConfigError, ConfigIssue};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

    /// The value of `p` as written, or its default. Records the effective value.
    pub(super) fn raw(&mut self, p: &'static Param) -> toml::Value {
        let (section, name) = p.key.split_once('.').unwrap_or(("", p.key));
        let given = self.table.get(section).and_then(|s| s.get(name)).cloned();
        let value = match given {
            Some(v) => v,
            None => {
                self.defaulted.push(p.key);
                default_value(p)
            }
        };
        self.effective.insert(p.key, value.to_string());
        value
    }

    /// Records that `p` was read by a method for another kind of value: Sloop's own
    /// bug, not the operator's, reported as such (the unit test that loads an empty
    /// file reads every key and fails on it).
    pub(super) fn mismatch(&mut self, p: &Param, read_as: &str) {
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            key: p.key.to_string(),
            line: None,
            found: format!(
                "an internal error: the key is declared as {} but read as {read_as}",
                kind_name(p.kind)
            ),
            expected: "a parameter table that agrees with its reader (a Sloop bug: please \
                       report it)"
                .to_string(),
        });
    }

    pub(super) fn bad(&mut self, key: &str, value: &toml::Value, expected: impl Into<String>) {
        self.issue(key, show(value), expected.into());
    }

    pub(super) fn str_of(&mut self, key: &str, value: &toml::Value) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.bad(key, value, "a string");
                None
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

/// The integer types `Kind::Int` keys fill; the table's bounds keep values in range,
/// and a value past the type's range (which the bounds exclude) saturates.
pub(super) trait FromInt {
    fn from_int(n: u64) -> Self;
}

impl FromInt for u64 {
    fn from_int(n: u64) -> u64 {
        n
    }
}

impl FromInt for u32 {
    fn from_int(n: u64) -> u32 {
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

impl FromInt for usize {
    fn from_int(n: u64) -> usize {
        usize::try_from(n).unwrap_or(usize::MAX)
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

pub(super) fn default_str(param: &Param) -> String {
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
