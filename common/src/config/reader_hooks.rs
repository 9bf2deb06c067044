//! Reading the filter hooks: the `[access]` lists and the `[[policy]]` and `[[milter]]`
//! arrays of tables. Every problem is named by its entry, counting from 1
//! (`policy[2].stage`, `access.sender[3]`), with the line where it can be found.

use super::choice::Choice;
use super::hooks::{
    AccessEntry, AccessList, HookListener, HookSocket, HookStage, MilterHook, OnError, PolicyHook,
};
use super::params::{self, Fill, Kind, Param};
use super::reader::{default_str, default_value, locate, show, show_key, FromInt, Reader};
use super::values::{self, Expected, NAME_MAX};
use std::path::PathBuf;
use std::time::Duration;

/// Longest `unix:` socket path (`sun_path` is 108 octets with its NUL).
const SUN_PATH_MAX: usize = 107;

/// One table of an array section, as written.
pub(super) struct Entry {
    section: &'static str,
    /// Counting from 1.
    n: usize,
    table: toml::Table,
}

impl Reader<'_> {
    /// The `[[policy]]` and `[[milter]]` tables, in file order.
    pub(super) fn hook_tables(&mut self) -> (Vec<PolicyHook>, Vec<MilterHook>) {
        let policy_entries = self.entries("policy");
        let milter_entries = self.entries("milter");
        let policies: Vec<PolicyHook> = policy_entries.iter().map(|e| self.policy(e)).collect();
        let milters: Vec<MilterHook> = milter_entries.iter().map(|e| self.milter(e)).collect();
        self.unique_names(&policy_entries);
        self.unique_names(&milter_entries);
        (policies, milters)
    }

    /// A `Kind::AccessRules` key of `[access]`: the rules of `list`.
    pub(super) fn access_rules(&mut self, p: &'static Param, list: AccessList) -> Vec<AccessEntry> {
        if p.kind != Kind::AccessRules {
            self.mismatch(p, "access rules");
            return Vec::new();
        }
        let key = p.key;
        let value = self.raw(p);
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

    /// The hook of one `[[policy]]` table: each key of the section read by its fill.
    /// A required key missing or a bad value leaves a placeholder in the hook and an
    /// issue, so the config is refused and the placeholder never reaches a program.
    fn policy(&mut self, e: &Entry) -> PolicyHook {
        let mut hook = PolicyHook {
            name: String::new(),
            socket: HookSocket::Unix(PathBuf::new()),
            stage: HookStage::Rcpt,
            timeout: Duration::ZERO,
            tries: 0,
            on_error: OnError::Tempfail,
            listeners: Vec::new(),
        };
        for p in params::PARAMS {
            if let Fill::Policy { read, .. } = p.fill {
                read(self, e, p, &mut hook);
            }
        }
        hook
    }

    /// The hook of one `[[milter]]` table (as [`Reader::policy`]).
    fn milter(&mut self, e: &Entry) -> MilterHook {
        let mut hook = MilterHook {
            name: String::new(),
            socket: HookSocket::Unix(PathBuf::new()),
            on_error: OnError::Tempfail,
            connect_timeout: Duration::ZERO,
            command_timeout: Duration::ZERO,
            content_timeout: Duration::ZERO,
            listeners: Vec::new(),
            reuse: false,
        };
        for p in params::PARAMS {
            if let Fill::Milter { read, .. } = p.fill {
                read(self, e, p, &mut hook);
            }
        }
        hook
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

    /// The value of `p` written in the table, or its default (`None` when the key is
    /// required and missing); `None` as well, with an internal error, when `p` is not
    /// of a kind `ok` accepts (Sloop's own bug, which the unit tests report).
    fn entry_value(
        &mut self,
        e: &Entry,
        p: &'static Param,
        read_as: &str,
        ok: fn(Kind) -> bool,
    ) -> Option<Option<toml::Value>> {
        if !ok(p.kind) {
            self.mismatch(p, read_as);
            return None;
        }
        Some(match e.table.get(short(p)) {
            Some(v) => Some(v.clone()),
            None if p.default == params::REQUIRED => None,
            None => Some(default_value(p)),
        })
    }

    fn entry_str(&mut self, e: &Entry, p: &'static Param) -> Option<(toml::Value, String)> {
        let key = short(p);
        let value = self.entry_value(e, p, "a name or socket", |k| {
            matches!(k, Kind::HookName | Kind::HookSocket)
        })?;
        let Some(value) = value else {
            let what = match p.kind {
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

    /// A `Kind::HookName` key (empty when missing or bad, with an issue).
    pub(super) fn hook_name(&mut self, e: &Entry, p: &'static Param) -> String {
        let Some((value, s)) = self.entry_str(e, p) else {
            return String::new();
        };
        if values::is_name(&s) {
            s
        } else {
            self.entry_issue(
                e,
                short(p),
                show(&value),
                format!(
                    "a name of letters, digits, _ . - (at most {NAME_MAX}), such as \"postgrey\""
                ),
            );
            String::new()
        }
    }

    /// A `Kind::HookSocket` key (an empty path when missing or bad, with an issue).
    pub(super) fn hook_socket(&mut self, e: &Entry, p: &'static Param) -> HookSocket {
        let Some((value, s)) = self.entry_str(e, p) else {
            return HookSocket::Unix(PathBuf::new());
        };
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
            Ok(socket) => socket,
            Err(why) => {
                self.entry_issue(e, short(p), show(&value), why.0);
                HookSocket::Unix(PathBuf::new())
            }
        }
    }

    /// A `Kind::Choice` key of an entry, as the enum whose words the table declares;
    /// the default when it is bad.
    pub(super) fn entry_choice<T: Choice>(&mut self, e: &Entry, p: &'static Param) -> T {
        let Some(value) = self.entry_value(
            e,
            p,
            "a choice",
            |k| matches!(k, Kind::Choice(words) if words == T::WORDS),
        ) else {
            return T::FIRST;
        };
        let key = short(p);
        let fallback = T::from_word(&default_str(p)).unwrap_or(T::FIRST);
        let Some(value) = value else {
            return fallback;
        };
        match value.as_str().and_then(T::from_word) {
            Some(v) => v,
            None => {
                self.entry_issue(
                    e,
                    key,
                    show(&value),
                    format!("one of: {}", T::WORDS.join(", ")),
                );
                fallback
            }
        }
    }

    /// `policy.on_error`: as written, else what the hook's stage (read before it, as
    /// the table declares it first) calls for.
    pub(super) fn policy_on_error(
        &mut self,
        e: &Entry,
        p: &'static Param,
        stage: HookStage,
    ) -> OnError {
        if e.table.contains_key(short(p)) {
            self.entry_choice(e, p)
        } else {
            OnError::default_for(stage)
        }
    }

    /// A `Kind::Bool` key of an entry.
    pub(super) fn entry_bool(&mut self, e: &Entry, p: &'static Param) -> bool {
        let Some(value) = self.entry_value(e, p, "true or false", |k| matches!(k, Kind::Bool))
        else {
            return false;
        };
        let fallback = || default_value(p).as_bool().unwrap_or(false);
        let Some(value) = value else {
            return fallback();
        };
        match value.as_bool() {
            Some(b) => b,
            None => {
                self.entry_issue(e, short(p), show(&value), "true or false");
                fallback()
            }
        }
    }

    /// A `Kind::Duration` key of an entry.
    pub(super) fn entry_duration(&mut self, e: &Entry, p: &'static Param) -> Duration {
        let Some(value) =
            self.entry_value(e, p, "a duration", |k| matches!(k, Kind::Duration { .. }))
        else {
            return Duration::ZERO;
        };
        let Kind::Duration { min, max } = p.kind else {
            return Duration::ZERO;
        };
        let (key, param) = (short(p), p);
        let fallback = || {
            default_value(param)
                .as_str()
                .and_then(|s| values::parse_duration(s).ok())
                .unwrap_or(Duration::from_millis(min.max(1)))
        };
        let Some(value) = value else {
            return fallback();
        };
        match values::duration_within(&value, min, max, "5s") {
            Ok(d) => d,
            Err(why) => {
                self.entry_issue(e, key, show(&value), why.0);
                fallback()
            }
        }
    }

    /// A `Kind::Int` key of an entry, as the integer type of its field.
    pub(super) fn entry_int<T: FromInt>(&mut self, e: &Entry, p: &'static Param) -> T {
        T::from_int(self.entry_u64(e, p))
    }

    fn entry_u64(&mut self, e: &Entry, p: &'static Param) -> u64 {
        let Some(value) =
            self.entry_value(e, p, "a whole number", |k| matches!(k, Kind::Int { .. }))
        else {
            return 0;
        };
        let Kind::Int { min, max } = p.kind else {
            return 0;
        };
        let (key, param) = (short(p), p);
        let fallback = || default_value(param).as_integer().map_or(min, |n| n as u64);
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

    /// A `Kind::HookListeners` key: which mail the hook sees, each listener once.
    pub(super) fn listeners(&mut self, e: &Entry, p: &'static Param) -> Vec<HookListener> {
        let Some(value) = self.entry_value(e, p, "a list of listeners", |k| {
            matches!(k, Kind::HookListeners { .. })
        }) else {
            return Vec::new();
        };
        let (key, param) = (short(p), p);
        let Kind::HookListeners { local } = param.kind else {
            return Vec::new();
        };
        let listener =
            |w: &str| HookListener::from_word(w).filter(|l| local || *l != HookListener::Local);
        let words: Vec<&str> = HookListener::WORDS
            .iter()
            .copied()
            .filter(|w| listener(w).is_some())
            .collect();
        let expected = format!("a non-empty list of: {}", words.join(", "));
        let defaults = || {
            default_value(param)
                .as_array()
                .map(|a| a.iter().filter_map(|v| listener(v.as_str()?)).collect())
                .unwrap_or_default()
        };
        let Some(value) = value else {
            return defaults();
        };
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            self.entry_issue(e, key, show(&value), expected);
            return defaults();
        };
        let mut out = Vec::new();
        for item in items {
            match item.as_str().and_then(listener) {
                Some(l) if !out.contains(&l) => out.push(l),
                Some(_) => {}
                None => {
                    let named = item.as_str().and_then(HookListener::from_word);
                    let why = if named == Some(HookListener::Local) {
                        format!(
                            "one of {} (mail injected with sendmail has no SMTP session for a \
                             policy service to check)",
                            words.join(", ")
                        )
                    } else {
                        format!("one of: {}", words.join(", "))
                    };
                    self.entry_issue(e, key, show(item), why);
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
                values::is_name(name).then_some((e.n, name))
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

/// A key as written inside its table (`stage` for `policy.stage`).
fn short(p: &Param) -> &'static str {
    p.key.split_once('.').map_or(p.key, |(_, k)| k)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use std::path::Path;

    #[test]
    fn an_entry_key_read_as_another_kind_is_an_internal_error() {
        let text = "[[policy]]\nname = \"a\"\nsocket = \"unix:/s\"\n";
        let mut r = Reader::new(Path::new("/etc/sloop/test.toml"), text, true).expect("reader");
        let e = Entry {
            section: "policy",
            n: 1,
            table: toml::Table::new(),
        };
        let find = |k: &str| params::find(k).expect("declared");
        assert_eq!(r.entry_int::<u32>(&e, find("policy.name")), 0);
        assert_eq!(r.entry_duration(&e, find("policy.tries")), Duration::ZERO);
        // The words of policy.stage are not those of OnError.
        let _: OnError = r.entry_choice(&e, find("policy.stage"));
        let Err(ConfigError::Invalid(found)) = r.finish() else {
            panic!("internal errors must be reported");
        };
        let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["policy.name", "policy.tries", "policy.stage"]);
        assert!(found
            .iter()
            .all(|i| i.found.starts_with("an internal error")));
    }
}
