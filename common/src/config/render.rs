//! Renders the parameter table as the packaged sample config (`etc/sloop.toml`) and as
//! the reference page (`docs/configuration.md`). Both files are checked against these
//! renderings by tests, so the table stays the one source of truth.

use super::choice::Choice;
use super::hooks::{HookSocket, HooksConfig};
use super::params::{self, Fill, Kind, Param, PARAMS, SECTIONS};
use super::sections::TlsLevel;
use super::values::format_duration;

/// Values the packaged config (the Debian package's /etc/sloop/sloop.toml) sets
/// differently from the built-in defaults: safe on a fresh machine, like Debian's
/// other MTAs in their "local only" setup (docs/packaging.md). An entry whose key is
/// not declared in the table is not rendered.
const PACKAGED: &[(&str, &str)] = &[
    ("server.user", "\"sloop\""),
    ("server.drop_group", "\"sloopdrop\""),
    ("server.bin_dir", "\"/usr/lib/sloop\""),
    ("smtpd.listen", "[\"127.0.0.1:25\", \"[::1]:25\"]"),
    ("domains.local", "[\"@hostname\"]"),
    ("local.aliases", "\"/etc/aliases\""),
    ("local.system_users", "true"),
    ("local.system_mailbox", "\"mbox\""),
    ("log.target", "\"syslog\""),
];

/// Example values shown (commented out) in the sample for the `[[policy]]` and
/// `[[milter]]` tables, where a key has no default or the default depends on another
/// key; the packaged config has no hooks.
const EXAMPLES: &[(&str, &str)] = &[
    ("policy.name", "\"postgrey\""),
    ("policy.socket", "\"inet:127.0.0.1:10023\""),
    ("policy.on_error", "\"tempfail\""),
    ("milter.name", "\"opendkim\""),
    ("milter.socket", "\"unix:/run/opendkim/opendkim.sock\""),
];

/// The keys of `section`, in table order.
fn keys_of(section: &str) -> impl Iterator<Item = &'static Param> + '_ {
    PARAMS
        .iter()
        .filter(move |p| p.key.split('.').next() == Some(section))
}

/// A key as written inside its table (`name` for `policy.name`).
fn short(p: &Param) -> &'static str {
    p.key.split_once('.').map(|(_, k)| k).unwrap_or(p.key)
}

/// The default of `p` as the reference shows it: a TOML literal, or words.
pub(super) fn shown_default(p: &Param, code: fn(&str) -> String) -> String {
    if p.default.contains("@hostname") {
        "the machine's name".to_string()
    } else if p.default == params::REQUIRED {
        "required".to_string()
    } else if p.default == params::DEFAULT_BY_STAGE {
        format!(
            "{} at connect and helo, else {}",
            code("\"shutdown\""),
            code("\"tempfail\"")
        )
    } else {
        code(p.default)
    }
}

/// The tables of an array section as TOML, for `render_effective`: each hook's keys
/// in table order, each value shown by the key's entry (`Fill::Policy`/`Milter`).
pub(super) fn hook_tables(section: &str, hooks: &HooksConfig) -> String {
    let mut tables: Vec<Vec<(&str, String)>> = Vec::new();
    if section == "policy" {
        for hook in &hooks.policies {
            tables.push(
                keys_of(section)
                    .filter_map(|p| match p.fill {
                        Fill::Policy { show, .. } => Some((short(p), show(hook))),
                        _ => None,
                    })
                    .collect(),
            );
        }
    } else {
        for hook in &hooks.milters {
            tables.push(
                keys_of(section)
                    .filter_map(|p| match p.fill {
                        Fill::Milter { show, .. } => Some((short(p), show(hook))),
                        _ => None,
                    })
                    .collect(),
            );
        }
    }
    let mut out = String::new();
    if tables.is_empty() {
        out.push_str(&format!("\n# [[{section}]]: none\n"));
    }
    for table in tables {
        out.push_str(&format!("\n[[{section}]]\n"));
        for (key, value) in table {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// A typed value as a TOML value that reads back to it (for hooks in the effective
/// config).
pub(super) trait ToToml {
    fn to_toml(&self) -> String;
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl ToToml for String {
    fn to_toml(&self) -> String {
        toml_string(self)
    }
}

impl ToToml for HookSocket {
    fn to_toml(&self) -> String {
        toml_string(&self.to_string())
    }
}

impl ToToml for std::time::Duration {
    fn to_toml(&self) -> String {
        toml_string(&format_duration(*self))
    }
}

impl ToToml for bool {
    fn to_toml(&self) -> String {
        self.to_string()
    }
}

impl ToToml for u32 {
    fn to_toml(&self) -> String {
        self.to_string()
    }
}

impl<T: Choice> ToToml for T {
    fn to_toml(&self) -> String {
        toml_string(self.word())
    }
}

impl<T: Choice> ToToml for Vec<T> {
    fn to_toml(&self) -> String {
        let words: Vec<String> = self.iter().map(|w| toml_string(w.word())).collect();
        format!("[{}]", words.join(", "))
    }
}

/// The packaged `etc/sloop.toml`: every key present, commented, with FHS paths.
pub fn render_sample() -> String {
    let mut out = String::from(
        "# /etc/sloop/sloop.toml: Sloop's configuration.\n\
         # Every key is shown with its default; `sloop config check` validates this file,\n\
         # and docs/configuration.md explains each key. Generated by `sloop config sample`.\n",
    );
    for (section, about) in SECTIONS {
        if params::is_array_section(section) {
            out.push_str(&format!(
                "\n# {about}\n# An example; uncomment to use, one table per {}:\n#[[{section}]]\n",
                if *section == "policy" {
                    "service"
                } else {
                    "filter"
                }
            ));
            for p in keys_of(section) {
                let value = match EXAMPLES.iter().find(|(k, _)| *k == p.key) {
                    Some((_, v)) => v,
                    None => p.default,
                };
                out.push_str(&format!("# {}\n#{} = {value}\n", p.doc, short(p)));
            }
            continue;
        }
        out.push_str(&format!("\n# {about}\n[{section}]\n"));
        for p in PARAMS
            .iter()
            .filter(|p| p.key.split('.').next() == Some(section))
        {
            let name = p.key.split_once('.').map(|(_, k)| k).unwrap_or(p.key);
            out.push_str(&format!("# {}\n", p.doc));
            match PACKAGED.iter().find(|(k, _)| *k == p.key) {
                Some((_, v)) => out.push_str(&format!("{name} = {v}\n")),
                None if p.default.contains("@hostname") => {
                    out.push_str(&format!("#{name} = \"mail.example.com\"\n"))
                }
                None => out.push_str(&format!("{name} = {}\n", p.default)),
            }
        }
    }
    out
}

/// The reference page of every key.
pub fn render_docs() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `common/src/config/params.rs` by `sloop config docs`; a test checks\n\
         this file is fresh. Sloop reads one TOML file: `-c FILE`, else `$SLOOP_CONFIG`, else\n\
         `/etc/sloop/sloop.toml`. Unknown keys are errors; omitted keys take the default below.\n\
         Relative paths are relative to the config file's directory. Sizes take units\n\
         (`512K`, `25M`, `1G`); durations need one (`100ms`, `30s`, `5m`, `4h`, `5d`, `1w`).\n\
         `sloop config check [-c FILE] [--show]` validates a file and lists every error with\n\
         file, key, line, the value found and what is expected.\n\
         \n\
         Each key below is one entry of the parameter table (name, type, default, meaning\n\
         and the field it fills); `docs/architecture.md` (Configuration) says how to add one.\n",
    );
    for (section, about) in SECTIONS {
        let header = if params::is_array_section(section) {
            format!(
                "[[{section}]]\n\n{about} Each key below is written inside a `[[{section}]]` \
                 table (`{section}.name` is its `name`); docs/filters.md shows examples."
            )
        } else {
            format!("[{section}]\n\n{about}")
        };
        out.push_str(&format!(
            "\n## {header}\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n"
        ));
        for p in keys_of(section) {
            let default = shown_default(p, |s| format!("`{s}`"));
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                p.key,
                kind_name(p.kind),
                default,
                p.doc.replace('|', "\\|")
            ));
        }
    }
    out
}

pub(super) fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Hostname => "host name".into(),
        Kind::Text { max } => format!("text (≤ {max} octets)"),
        Kind::Path { must_exist: true } => "path to an existing file".into(),
        Kind::Path { must_exist: false } => "path".into(),
        Kind::User => "user or group name".into(),
        Kind::Bool => "boolean".into(),
        Kind::Int { min, max } => format!("integer {min}..{max}"),
        Kind::Size { .. } => "size".into(),
        Kind::Duration { .. } => "duration".into(),
        Kind::Choice(words) => words.join(" \\| "),
        Kind::ListenList => "list of addr:port".into(),
        Kind::CidrList => "list of CIDR".into(),
        Kind::DomainList => "list of domains".into(),
        Kind::MailboxList => "list of addresses".into(),
        Kind::AccessList => "list of \"CIDR action\"".into(),
        Kind::HostPort => "host:port".into(),
        Kind::RouteTable => "table domain = host:port".into(),
        Kind::LogLevel => "log level".into(),
        Kind::SendersTable => "table user = list of addresses".into(),
        Kind::TlsPolicyTable => format!("table domain = {}", TlsLevel::WORDS.join(" \\| ")),
        Kind::HookName => "name".into(),
        Kind::LogName => "name (letters, digits, _ . -)".into(),
        Kind::HookSocket => "unix:/path \\| inet:host:port".into(),
        Kind::HookListeners { .. } => "list of listeners".into(),
        Kind::AccessRules => "list of \"PATTERN ACTION [TEXT]\"".into(),
    }
}
