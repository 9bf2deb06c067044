//! Reading the filter hooks: the `[access]` lists and the `[[policy]]` and `[[milter]]`
//! arrays of tables. Every problem is named by its entry, counting from 1
//! (`policy[2].stage`, `access.sender[3]`), with the line where it can be found.

use super::hooks::{
    AccessEntry, AccessList, AccessRules, HookListener, HookSocket, HookStage, HooksConfig,
    MilterHook, OnError, PolicyHook,
};
use super::params::{self, Kind, Param};
use super::reader::{default_value, locate, show, show_key, Reader};
use super::values::{self, Expected};
use std::path::PathBuf;
use std::time::Duration;

/// Longest hook name.
const NAME_MAX: usize = 64;

/// Longest `unix:` socket path (`sun_path` is 108 octets with its NUL).
const SUN_PATH_MAX: usize = 107;

/// One table of an array section, as written.
struct Entry {
    section: &'static str,
    /// Counting from 1.
    n: usize,
    table: toml::Table,
}

impl Reader<'_> {
    /// `[access]`, `[[policy]]` and `[[milter]]`.
    pub(super) fn hooks(&mut self) -> HooksConfig {
        let access = AccessRules {
            client: self.access_list("access.client", AccessList::Client),
            helo: self.access_list("access.helo", AccessList::Helo),
            sender: self.access_list("access.sender", AccessList::Sender),
            recipient: self.access_list("access.recipient", AccessList::Recipient),
        };
        let policy_entries = self.entries("policy");
        let milter_entries = self.entries("milter");
        let policies: Vec<PolicyHook> = policy_entries
            .iter()
            .filter_map(|e| self.policy(e))
            .collect();
        let milters: Vec<MilterHook> = milter_entries
            .iter()
            .filter_map(|e| self.milter(e))
            .collect();
        self.unique_names(&policy_entries);
        self.unique_names(&milter_entries);
        HooksConfig {
            policies,
            milters,
            access,
        }
    }

    fn access_list(&mut self, key: &'static str, list: AccessList) -> Vec<AccessEntry> {
        let (_, value) = self.raw(key);
        let Some(items) = value.as_array() else {
            self.bad(
                key,
                &value,
                "a list of \"PATTERN ACTION [TEXT]\" strings, such as [\"192.0.2.0/24 reject\"]",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let parsed = match item.as_str() {
                Some(s) => AccessEntry::parse(list, s),
                None => Err(Expected("a string \"PATTERN ACTION [TEXT]\"".to_string())),
            };
            match parsed {
                Ok(e) => out.push(e),
                Err(e) => {
                    let line = locate_element(self.source(), key, item);
                    self.issue_at(format!("{key}[{}]", i + 1), line, show(item), e.0);
                }
            }
        }
        out
    }

    /// The tables of an array section; anything else written under its name is an issue.
    fn entries(&mut self, section: &'static str) -> Vec<Entry> {
        let expected =
            format!(
            "[[{section}]] tables, one per {} (an array of tables: the header has two brackets)",
            if section == "policy" { "service" } else { "filter" }
        );
        let value = match self.section(section) {
            None => return Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(toml::Value::Table(_)) => {
                let line = locate(self.source(), section);
                self.issue_at(
                    section.to_string(),
                    line,
                    format!("a single [{section}] table"),
                    expected,
                );
                return Vec::new();
            }
            Some(other) => {
                let line = locate(self.source(), section);
                self.issue_at(section.to_string(), line, show(&other), expected);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in value.into_iter().enumerate() {
            let n = i + 1;
            match item {
                toml::Value::Table(table) => {
                    let entry = Entry { section, n, table };
                    self.unknown_keys(&entry);
                    out.push(entry);
                }
                other => {
                    let line = locate_entry(self.source(), section, n, None);
                    self.issue_at(
                        format!("{section}[{n}]"),
                        line,
                        show(&other),
                        expected.clone(),
                    );
                }
            }
        }
        out
    }

    fn unknown_keys(&mut self, e: &Entry) {
        let known: Vec<&str> = params::PARAMS
            .iter()
            .filter_map(|p| p.key.strip_prefix(e.section)?.strip_prefix('.'))
            .collect();
        let unknown: Vec<String> = e
            .table
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            let line = locate_entry(self.source(), e.section, e.n, Some(&key))
                .or_else(|| locate_entry(self.source(), e.section, e.n, None));
            self.issue_at(
                format!("{}[{}].{}", e.section, e.n, show_key(&key)),
                line,
                "an unknown key".to_string(),
                format!(
                    "one of the keys of [[{}]]: {} (see docs/configuration.md)",
                    e.section,
                    known.join(", ")
                ),
            );
        }
    }

    fn policy(&mut self, e: &Entry) -> Option<PolicyHook> {
        let name = self.hook_name(e);
        let socket = self.hook_socket(e);
        let stage = match self.word(e, "stage").as_str() {
            "connect" => HookStage::Connect,
            "helo" => HookStage::Helo,
            "mail" => HookStage::Mail,
            "data" => HookStage::Data,
            "eom" => HookStage::Eom,
            _ => HookStage::Rcpt,
        };
        let timeout = self.entry_duration(e, "timeout");
        let tries = self.entry_int(e, "tries") as u32;
        let on_error = match e.table.get("on_error") {
            None => OnError::default_for(stage),
            Some(_) => on_error(&self.word(e, "on_error")),
        };
        let listeners = self.listeners(e);
        Some(PolicyHook {
            name: name?,
            socket: socket?,
            stage,
            timeout,
            tries,
            on_error,
            listeners,
        })
    }

    fn milter(&mut self, e: &Entry) -> Option<MilterHook> {
        let name = self.hook_name(e);
        let socket = self.hook_socket(e);
        let on_error = on_error(&self.word(e, "on_error"));
        let connect_timeout = self.entry_duration(e, "connect_timeout");
        let command_timeout = self.entry_duration(e, "command_timeout");
        let content_timeout = self.entry_duration(e, "content_timeout");
        let listeners = self.listeners(e);
        let reuse = self.entry_bool(e, "reuse");
        Some(MilterHook {
            name: name?,
            socket: socket?,
            on_error,
            connect_timeout,
            command_timeout,
            content_timeout,
            listeners,
            reuse,
        })
    }

    fn entry_issue(&mut self, e: &Entry, key: &str, found: String, expected: impl Into<String>) {
        let line = locate_entry(self.source(), e.section, e.n, Some(key))
            .or_else(|| locate_entry(self.source(), e.section, e.n, None));
        self.issue_at(
            format!("{}[{}].{key}", e.section, e.n),
            line,
            found,
            expected.into(),
        );
    }

    /// The declaration of `section.key` and the value written, or the default.
    fn entry_value(&self, e: &Entry, key: &str) -> (Param, Option<toml::Value>) {
        let dotted = format!("{}.{key}", e.section);
        let param = params::find(&dotted).copied().unwrap_or(Param {
            key: "",
            kind: Kind::Bool,
            default: params::REQUIRED,
            doc: "",
        });
        let value = match e.table.get(key) {
            Some(v) => Some(v.clone()),
            None if param.default == params::REQUIRED => None,
            None => Some(default_value(&param)),
        };
        (param, value)
    }

    fn entry_str(&mut self, e: &Entry, key: &str) -> Option<(toml::Value, String)> {
        let (param, value) = self.entry_value(e, key);
        let Some(value) = value else {
            let what = match param.kind {
                Kind::HookSocket => {
                    "a socket such as \"unix:/run/x.sock\" or \"inet:127.0.0.1:10023\""
                }
                _ => "a name such as \"postgrey\" (letters, digits, _ . -)",
            };
            self.entry_issue(e, key, "nothing (the key is required)".to_string(), what);
            return None;
        };
        match value.as_str() {
            Some(s) => Some((value.clone(), s.to_string())),
            None => {
                self.entry_issue(e, key, show(&value), "a string");
                None
            }
        }
    }

    fn hook_name(&mut self, e: &Entry) -> Option<String> {
        let (value, s) = self.entry_str(e, "name")?;
        if valid_name(&s) {
            Some(s)
        } else {
            self.entry_issue(
                e,
                "name",
                show(&value),
                format!(
                    "a name of letters, digits, _ . - (at most {NAME_MAX}), such as \"postgrey\""
                ),
            );
            None
        }
    }

    fn hook_socket(&mut self, e: &Entry) -> Option<HookSocket> {
        let (value, s) = self.entry_str(e, "socket")?;
        let parsed = parse_socket(&s).and_then(|socket| match socket {
            HookSocket::Unix(p) => {
                let p = self.resolve(&p.to_string_lossy());
                if p.as_os_str().len() > SUN_PATH_MAX {
                    Err(Expected(format!(
                        "a unix socket path of at most {SUN_PATH_MAX} octets (the kernel's limit)"
                    )))
                } else {
                    Ok(HookSocket::Unix(p))
                }
            }
            inet => Ok(inet),
        });
        match parsed {
            Ok(socket) => Some(socket),
            Err(why) => {
                self.entry_issue(e, "socket", show(&value), why.0);
                None
            }
        }
    }

    /// A `Kind::Choice` key; the default when it is bad.
    fn word(&mut self, e: &Entry, key: &str) -> String {
        let (param, value) = self.entry_value(e, key);
        let Kind::Choice(words) = param.kind else {
            return String::new();
        };
        let fallback = || {
            default_value(&param)
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let Some(value) = value else {
            return fallback();
        };
        match value.as_str() {
            Some(s) if words.contains(&s) => s.to_string(),
            _ => {
                self.entry_issue(
                    e,
                    key,
                    show(&value),
                    format!("one of: {}", words.join(", ")),
                );
                fallback()
            }
        }
    }

    fn entry_duration(&mut self, e: &Entry, key: &str) -> Duration {
        let (param, value) = self.entry_value(e, key);
        let Kind::Duration { min, max } = param.kind else {
            return Duration::ZERO;
        };
        let fallback = || {
            default_value(&param)
                .as_str()
                .and_then(|s| values::parse_duration(s).ok())
                .unwrap_or(Duration::from_millis(min.max(1)))
        };
        let Some(value) = value else {
            return fallback();
        };
        let parsed = match value.as_str() {
            Some(s) => values::parse_duration(s),
            None => Err(Expected(
                "a duration string with a unit, such as \"5s\"".to_string(),
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
                self.entry_issue(e, key, show(&value), range);
                fallback()
            }
            Err(why) => {
                self.entry_issue(e, key, show(&value), why.0);
                fallback()
            }
        }
    }

    fn entry_bool(&mut self, e: &Entry, key: &str) -> bool {
        let (param, value) = self.entry_value(e, key);
        let fallback = || default_value(&param).as_bool().unwrap_or(false);
        let Some(value) = value else {
            return fallback();
        };
        match value.as_bool() {
            Some(b) => b,
            None => {
                self.entry_issue(e, key, show(&value), "true or false");
                fallback()
            }
        }
    }

    fn entry_int(&mut self, e: &Entry, key: &str) -> u64 {
        let (param, value) = self.entry_value(e, key);
        let Kind::Int { min, max } = param.kind else {
            return 0;
        };
        let fallback = || default_value(&param).as_integer().map_or(min, |n| n as u64);
        let Some(value) = value else {
            return fallback();
        };
        match value.as_integer() {
            Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => n as u64,
            _ => {
                self.entry_issue(
                    e,
                    key,
                    show(&value),
                    format!("a whole number from {min} to {max}"),
                );
                fallback()
            }
        }
    }

    fn listeners(&mut self, e: &Entry) -> Vec<HookListener> {
        let (param, value) = self.entry_value(e, "listeners");
        let Kind::HookListeners { local } = param.kind else {
            return Vec::new();
        };
        let words: &[&str] = if local {
            &["smtpd", "submission", "submissions", "local"]
        } else {
            &["smtpd", "submission", "submissions"]
        };
        let expected = format!("a non-empty list of: {}", words.join(", "));
        let defaults = || {
            default_value(&param)
                .as_array()
                .map(|a| a.iter().filter_map(|v| listener(v.as_str()?)).collect())
                .unwrap_or_default()
        };
        let Some(value) = value else {
            return defaults();
        };
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            self.entry_issue(e, "listeners", show(&value), expected);
            return defaults();
        };
        let mut out = Vec::new();
        for item in items {
            match item
                .as_str()
                .filter(|s| words.contains(s))
                .and_then(listener)
            {
                Some(l) if !out.contains(&l) => out.push(l),
                Some(_) => {}
                None => {
                    let why = if item.as_str() == Some("local") {
                        "one of smtpd, submission, submissions (mail injected with sendmail has \
                         no SMTP session for a policy service to check)"
                            .to_string()
                    } else {
                        format!("one of: {}", words.join(", "))
                    };
                    self.entry_issue(e, "listeners", show(item), why);
                }
            }
        }
        out
    }

    /// Each name once per section; a later table with a name already used is the
    /// one reported (whether or not the rest of either table is valid).
    fn unique_names(&mut self, entries: &[Entry]) {
        let names: Vec<(usize, &str)> = entries
            .iter()
            .filter_map(|e| {
                let name = e.table.get("name")?.as_str()?;
                valid_name(name).then_some((e.n, name))
            })
            .collect();
        let mut dups = Vec::new();
        for (i, (n, name)) in names.iter().enumerate() {
            if let Some((first, _)) = names[..i].iter().find(|(_, other)| other == name) {
                dups.push((*n, *first, name.to_string()));
            }
        }
        let Some(section) = entries.first().map(|e| e.section) else {
            return;
        };
        for (n, first, name) in dups {
            let e = Entry {
                section,
                n,
                table: toml::Table::new(),
            };
            self.entry_issue(
                &e,
                "name",
                format!("{name:?}, the name of {section}[{first}] too"),
                format!("a name no other [[{section}]] table has"),
            );
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn on_error(word: &str) -> OnError {
    match word {
        "accept" => OnError::Accept,
        "reject" => OnError::Reject,
        "shutdown" => OnError::Shutdown,
        _ => OnError::Tempfail,
    }
}

fn listener(word: &str) -> Option<HookListener> {
    match word {
        "smtpd" => Some(HookListener::Smtpd),
        "submission" => Some(HookListener::Submission),
        "submissions" => Some(HookListener::Submissions),
        "local" => Some(HookListener::Local),
        _ => None,
    }
}

/// `unix:/path` (a relative path is left for the reader to resolve), `inet:host:port`,
/// `inet:[v6]:port`.
pub(super) fn parse_socket(s: &str) -> Result<HookSocket, Expected> {
    let expected = "\"unix:/path\" or \"inet:host:port\" (\"inet:[::1]:port\" for IPv6)";
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() || path.contains('\0') {
            return Err(Expected(format!("{expected}, with a path after unix:")));
        }
        return Ok(HookSocket::Unix(PathBuf::from(path)));
    }
    let Some(rest) = s.strip_prefix("inet:") else {
        return Err(Expected(expected.to_string()));
    };
    if let Some((port, host)) = rest.split_once('@') {
        if port.parse::<u16>().is_ok() {
            return Err(Expected(format!(
                "inet:{host}:{port} (the milter's own PORT@HOST is written HOST:PORT here, as in Postfix)"
            )));
        }
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once("]:") else {
            return Err(Expected(expected.to_string()));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Expected(format!(
                "{expected}: an IPv6 address in the brackets"
            )));
        }
        (addr.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(Expected(format!(
                    "{expected}: an IPv6 address goes in brackets"
                )))
            }
            Some((host, port)) if host.parse::<std::net::Ipv4Addr>().is_ok() => {
                (host.to_string(), port)
            }
            Some((host, port)) => match values::parse_hostname(host) {
                Ok(h) => (h, port),
                Err(_) => return Err(Expected(format!("{expected}: a host name or address"))),
            },
            None => return Err(Expected(format!("{expected}: a port after the host"))),
        }
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(HookSocket::Inet { host, port }),
        _ => Err(Expected(format!("{expected}: a port from 1 to 65535"))),
    }
}

/// The line of the `n`th (from 1) `[[section]]` header, or of `key = ` inside that
/// table when `key` is given and written. `None` when the tables are not written as
/// headers (an inline array) or the key is not in the table.
fn locate_entry(text: &str, section: &str, n: usize, key: Option<&str>) -> Option<usize> {
    let mut seen = 0;
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = false;
            if let Some(h) = t.strip_prefix("[[") {
                let name = h.split("]]").next().unwrap_or("").trim().trim_matches('"');
                if name == section {
                    seen += 1;
                    if seen == n {
                        if key.is_none() {
                            return Some(i + 1);
                        }
                        inside = true;
                    }
                }
            }
            continue;
        }
        if !inside {
            continue;
        }
        let Some((lhs, _)) = t.split_once('=') else {
            continue;
        };
        if Some(lhs.trim().trim_matches('"')) == key {
            return Some(i + 1);
        }
    }
    None
}

/// The line of one element of a list `key` (`section.key`): the first line from the
/// key's own that holds the element as written, else the key's line.
fn locate_element(text: &str, key: &str, item: &toml::Value) -> Option<usize> {
    let start = locate(text, key)?;
    let written = item.to_string();
    let found = text
        .lines()
        .enumerate()
        .skip(start - 1)
        .take_while(|(i, l)| *i + 1 == start || !l.trim_start().starts_with('['))
        .find(|(_, l)| l.contains(&written))
        .map(|(i, _)| i + 1);
    Some(found.unwrap_or(start))
}
