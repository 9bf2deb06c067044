//! The reader's methods, one per kind of value in the parameter table. Each takes the
//! key's declaration, checks that it is of the method's kind (a mismatch is recorded
//! as an internal error, see `Reader::mismatch`), reads the value written or the
//! default, and returns it typed; a bad value is recorded with the key, the value and
//! what is expected, and a fallback is returned so the walk goes on.

use super::choice::Choice;
use super::params::{Kind, Param};
use super::reader::{default_str, FromInt, Reader};
use super::render::kind_name;
use super::values::{self, AccessRule, HostPort};
use super::{machine_hostname, HOSTNAME_TOKEN};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

impl Reader<'_> {
    /// A `Kind::Text` key.
    pub(super) fn text(&mut self, p: &'static Param) -> String {
        let Kind::Text { max } = p.kind else {
            self.mismatch(p, "text");
            return String::new();
        };
        let value = self.raw(p);
        let Some(s) = self.str_of(p.key, &value) else {
            return default_str(p);
        };
        match values::check_text(&s, max) {
            Ok(()) => s,
            Err(e) => {
                self.bad(p.key, &value, e);
                default_str(p)
            }
        }
    }

    /// A `Kind::User` key.
    pub(super) fn user(&mut self, p: &'static Param) -> String {
        if p.kind != Kind::User {
            self.mismatch(p, "a user name");
            return String::new();
        }
        let value = self.raw(p);
        let Some(s) = self.str_of(p.key, &value) else {
            return default_str(p);
        };
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            s
        } else {
            self.bad(
                p.key,
                &value,
                "a user or group name (letters, digits, _ - .) or empty",
            );
            String::new()
        }
    }

    /// A `Kind::LogName` key: 1 to 64 letters, digits, `_`, `.`, `-` (a `/`, space or
    /// `[` would break the `name/program[pid]:` tag log readers parse).
    pub(super) fn log_name(&mut self, p: &'static Param) -> String {
        if p.kind != Kind::LogName {
            self.mismatch(p, "a log name");
            return default_str(p);
        }
        let value = self.raw(p);
        let Some(s) = self.str_of(p.key, &value) else {
            return default_str(p);
        };
        if values::is_name(&s) {
            s
        } else {
            self.bad(
                p.key,
                &value,
                "a name of 1 to 64 letters, digits, _ - . such as \"sloop\" or \"postfix\"",
            );
            default_str(p)
        }
    }

    /// A `Kind::Choice` key, as the enum whose words the table declares for it.
    pub(super) fn choice<T: Choice>(&mut self, p: &'static Param) -> T {
        let fallback = |p: &Param| T::from_word(&default_str(p)).unwrap_or(T::FIRST);
        match p.kind {
            Kind::Choice(words) if words == T::WORDS => {}
            _ => {
                self.mismatch(p, &format!("one of: {}", T::WORDS.join(", ")));
                return T::FIRST;
            }
        }
        let value = self.raw(p);
        let Some(s) = self.str_of(p.key, &value) else {
            return fallback(p);
        };
        match T::from_word(&s) {
            Some(v) => v,
            None => {
                self.bad(p.key, &value, format!("one of: {}", T::WORDS.join(", ")));
                fallback(p)
            }
        }
    }

    /// A `Kind::Hostname` key; `@hostname` is the machine's name.
    pub(super) fn hostname(&mut self, p: &'static Param) -> String {
        if p.kind != Kind::Hostname {
            self.mismatch(p, "a host name");
            return machine_hostname();
        }
        let value = self.raw(p);
        let Some(s) = self.str_of(p.key, &value) else {
            return machine_hostname();
        };
        if s == HOSTNAME_TOKEN {
            return machine_hostname();
        }
        match values::parse_hostname(&s) {
            Ok(h) => h,
            Err(e) => {
                self.bad(p.key, &value, e);
                machine_hostname()
            }
        }
    }

    /// A `Kind::Path` key that may be empty (`None`).
    pub(super) fn opt_path(&mut self, p: &'static Param) -> Option<PathBuf> {
        let Kind::Path { must_exist } = p.kind else {
            self.mismatch(p, "a path");
            return None;
        };
        let value = self.raw(p);
        self.path_of(p.key, must_exist, &value)
    }

    fn path_of(&mut self, key: &str, must_exist: bool, value: &toml::Value) -> Option<PathBuf> {
        let s = self.str_of(key, value)?;
        if s.is_empty() {
            return None;
        }
        if s.contains('\0') {
            self.bad(key, value, "a path without NUL");
            return None;
        }
        let path = self.resolve(&s);
        if self.checking_files() && must_exist && !path.is_file() {
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

    /// A `Kind::Path` key that must be set (a directory Sloop needs).
    pub(super) fn path(&mut self, p: &'static Param) -> PathBuf {
        let Kind::Path { must_exist } = p.kind else {
            self.mismatch(p, "a path");
            return PathBuf::new();
        };
        let value = self.raw(p);
        match self.path_of(p.key, must_exist, &value) {
            Some(path) => path,
            None => {
                if value.as_str() == Some("") {
                    self.bad(p.key, &value, "a directory path");
                }
                PathBuf::from(default_str(p))
            }
        }
    }

    /// A `Kind::Bool` key.
    pub(super) fn boolean(&mut self, p: &'static Param) -> bool {
        if p.kind != Kind::Bool {
            self.mismatch(p, "true or false");
            return false;
        }
        let value = self.raw(p);
        match value.as_bool() {
            Some(b) => b,
            None => {
                self.bad(p.key, &value, "true or false");
                false
            }
        }
    }

    /// A `Kind::Int` key, as the integer type of the field it fills (the table's
    /// bounds keep it in range).
    pub(super) fn int<T: FromInt>(&mut self, p: &'static Param) -> T {
        let Kind::Int { min, max } = p.kind else {
            self.mismatch(p, "a whole number");
            return T::from_int(0);
        };
        let value = self.raw(p);
        T::from_int(match value.as_integer() {
            Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => n as u64,
            _ => {
                self.bad(p.key, &value, format!("a whole number from {min} to {max}"));
                min
            }
        })
    }

    /// A `Kind::Size` key, in octets.
    pub(super) fn size(&mut self, p: &'static Param) -> u64 {
        let Kind::Size { min, max } = p.kind else {
            self.mismatch(p, "a size");
            return 0;
        };
        let value = self.raw(p);
        let parsed = match &value {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            toml::Value::String(s) => values::parse_size(s),
            _ => Err(values::Expected("a size such as 25M".to_string())),
        };
        match parsed {
            Ok(n) if n >= min && n <= max => n,
            Ok(_) => {
                self.bad(p.key, &value, format!("a size from {min} to {max} bytes"));
                min
            }
            Err(e) => {
                self.bad(p.key, &value, e);
                min
            }
        }
    }

    /// A `Kind::Duration` key.
    pub(super) fn duration(&mut self, p: &'static Param) -> Duration {
        let Kind::Duration { min, max } = p.kind else {
            self.mismatch(p, "a duration");
            return Duration::ZERO;
        };
        let value = self.raw(p);
        match values::duration_within(&value, min, max, "30s") {
            Ok(d) => d,
            Err(e) => {
                self.bad(p.key, &value, e);
                Duration::from_millis(min.max(1))
            }
        }
    }

    /// The strings of a list key (each item checked to be a string).
    fn list(&mut self, p: &'static Param) -> Vec<(toml::Value, String)> {
        let value = self.raw(p);
        let Some(items) = value.as_array() else {
            self.bad(p.key, &value, "a list of strings, such as [\"a\", \"b\"]");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item.as_str() {
                Some(s) => out.push((item.clone(), s.to_string())),
                None => self.bad(p.key, item, "a list of strings"),
            }
        }
        out
    }

    /// A list key of `kind`, each item parsed by `parse`.
    fn parsed_list<T>(
        &mut self,
        p: &'static Param,
        kind: Kind,
        parse: fn(&str) -> Result<T, values::Expected>,
    ) -> Vec<T> {
        if p.kind != kind {
            self.mismatch(p, &kind_name(kind));
            return Vec::new();
        }
        let mut out = Vec::new();
        for (raw, s) in self.list(p) {
            match parse(&s) {
                Ok(v) => out.push(v),
                Err(e) => self.bad(p.key, &raw, e),
            }
        }
        out
    }

    /// A `Kind::DomainList` key, lower case; `@hostname` is kept for the caller.
    pub(super) fn domains(&mut self, p: &'static Param) -> Vec<String> {
        self.parsed_list(p, Kind::DomainList, |s| {
            if s == HOSTNAME_TOKEN {
                Ok(s.to_string())
            } else {
                values::parse_hostname(s)
            }
        })
    }

    /// A `Kind::MailboxList` key.
    pub(super) fn mailboxes(&mut self, p: &'static Param) -> Vec<String> {
        self.parsed_list(p, Kind::MailboxList, values::parse_mailbox)
    }

    /// A `Kind::ListenList` key.
    pub(super) fn listen(&mut self, p: &'static Param) -> Vec<SocketAddr> {
        self.parsed_list(p, Kind::ListenList, values::parse_listen)
    }

    /// A `Kind::CidrList` key.
    pub(super) fn cidrs(&mut self, p: &'static Param) -> Vec<IpNet> {
        self.parsed_list(p, Kind::CidrList, values::parse_cidr)
    }

    /// A `Kind::AccessList` key.
    pub(super) fn access(&mut self, p: &'static Param) -> Vec<AccessRule> {
        self.parsed_list(p, Kind::AccessList, values::parse_access_rule)
    }

    /// A `Kind::HostPort` key; empty is `None`.
    pub(super) fn hostport(&mut self, p: &'static Param) -> Option<HostPort> {
        if p.kind != Kind::HostPort {
            self.mismatch(p, "host:port");
            return None;
        }
        let value = self.raw(p);
        let s = self.str_of(p.key, &value)?;
        if s.is_empty() {
            return None;
        }
        match values::parse_hostport(&s) {
            Ok(h) => Some(h),
            Err(e) => {
                self.bad(p.key, &value, e);
                None
            }
        }
    }

    /// A `Kind::RouteTable` key.
    pub(super) fn routes(&mut self, p: &'static Param) -> BTreeMap<String, HostPort> {
        if p.kind != Kind::RouteTable {
            self.mismatch(p, "a table of domain = host:port");
            return BTreeMap::new();
        }
        let key = p.key;
        let value = self.raw(p);
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

    /// A `Kind::LogLevel` key.
    pub(super) fn level(&mut self, p: &'static Param) -> log::LevelFilter {
        if p.kind != Kind::LogLevel {
            self.mismatch(p, "a log level");
            return log::LevelFilter::Info;
        }
        let value = self.raw(p);
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
            self.bad(
                p.key,
                &value,
                "one of: error, warn, info, debug, trace, off",
            );
            log::LevelFilter::Info
        })
    }
}
