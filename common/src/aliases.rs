//! The aliases file, in the classic `/etc/aliases` syntax (aliases(5)).
//!
//! ```text
//! # comment
//! postmaster: root
//! team:       alice, bob@example.net,
//!             "|/usr/bin/procmail -m /etc/procmailrc",
//!             /var/mail/archive.mbox, :include:/etc/sloop/team.list
//! ```
//!
//! A name is a local-part (matched case-insensitively in every local domain); a line
//! starting with white space continues the previous entry; values are separated by
//! commas outside double quotes. A value is an address (a local name or `user@domain`),
//! a `|command`, an absolute `/path/file`, or `:include:/path` (a file of values).
//! `\name` is the local mailbox of `name` with no further alias or `.forward`
//! expansion (used in `.forward` files: `\alice, alice@elsewhere.example`).
//! The smtpd uses this to accept recipients; `sloop-deliver local` expands it.
//! Problems are reported with file and line, all at once.
//!
//! Files are read once through one descriptor and their owner and mode taken from
//! `fstat` on that descriptor ([`FileFacts`]), never from a second look by path;
//! `:include:` and `.forward` files are opened with `O_NOFOLLOW` ([`read_include`]).

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What `fstat` said about a file we read, on the descriptor we read it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    pub uid: u32,
    pub mode: u32,
}

impl FileFacts {
    /// Writable by group or others: anyone but the owner could have put lines in it.
    pub fn shared_writable(self) -> bool {
        self.mode & 0o022 != 0
    }
}

/// Reads `path` through one descriptor; `nofollow` refuses a symlink (`ELOOP`). The
/// file must be a regular file of at most 1 MiB.
pub fn read_file(path: &Path, nofollow: bool) -> Result<(String, FileFacts), AliasError> {
    let err = |source: std::io::Error| AliasError::Read {
        file: path.to_path_buf(),
        source,
    };
    let flags = if nofollow { libc::O_NOFOLLOW } else { 0 };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => err(std::io::Error::other(
                "is a symbolic link; refused (O_NOFOLLOW)",
            )),
            _ => err(e),
        })?;
    let meta = file.metadata().map_err(err)?;
    if !meta.file_type().is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes).map_err(err)?;
    let text =
        String::from_utf8(bytes).map_err(|_| err(std::io::Error::other("not valid UTF-8 text")))?;
    Ok((
        text,
        FileFacts {
            uid: meta.uid(),
            mode: meta.mode(),
        },
    ))
}

/// One destination of an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasTarget {
    /// A local name or a full address.
    Address(String),
    /// `|command`: the message is piped to `/bin/sh -c command`.
    Command(String),
    /// `/path/file`: the message is appended mbox-style.
    File(PathBuf),
    /// `:include:/path`: more targets, read from that file at expansion time.
    Include(PathBuf),
    /// `\name`: the local mailbox of `name`, without further expansion.
    Local(String),
}

/// A problem in an aliases file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasIssue {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for AliasIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Why an aliases file could not be used.
#[derive(Debug)]
pub enum AliasError {
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    Invalid(Vec<AliasIssue>),
}

impl fmt::Display for AliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasError::Read { file, source } => {
                write!(f, "cannot read {}: {source}", file.display())
            }
            AliasError::Invalid(issues) => {
                write!(f, "invalid aliases file:")?;
                for i in issues {
                    write!(f, "\n  {i}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for AliasError {}

/// A parsed aliases table.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    map: HashMap<String, Vec<AliasTarget>>,
    /// The file it came from (for include paths and messages).
    pub file: Option<PathBuf>,
    /// Its owner and mode, from `fstat` on the descriptor it was read through.
    pub facts: Option<FileFacts>,
}

impl Aliases {
    /// No aliases at all.
    pub fn empty() -> Aliases {
        Aliases::default()
    }

    /// Reads and parses `path` (the operator names it in the config, so a symlink is
    /// followed; owner and mode are those of the file read).
    pub fn load(path: &Path) -> Result<Aliases, AliasError> {
        let (text, facts) = read_file(path, false)?;
        let mut a = Aliases::parse(&text, path)?;
        a.facts = Some(facts);
        Ok(a)
    }

    /// The table named by the config (`local.aliases`), or an empty one.
    pub fn from_config(cfg: &crate::Config) -> Result<Aliases, AliasError> {
        match &cfg.local.aliases {
            Some(p) => Aliases::load(p),
            None => Ok(Aliases::empty()),
        }
    }

    /// Parses the text of an aliases file.
    pub fn parse(text: &str, file: &Path) -> Result<Aliases, AliasError> {
        let mut map: HashMap<String, Vec<AliasTarget>> = HashMap::new();
        let mut issues = Vec::new();
        for (line, entry) in logical_lines(text) {
            let issue = |message: String| AliasIssue {
                file: file.to_path_buf(),
                line,
                message,
            };
            let Some((name, values)) = split_entry(&entry) else {
                issues.push(issue(format!(
                    "expected \"name: value, ...\", found {:?}",
                    clip(&entry)
                )));
                continue;
            };
            let name = name.trim().trim_matches('"').to_lowercase();
            if name.is_empty() || name.contains(|c: char| c.is_control() || c == '@') {
                issues.push(issue(format!("bad alias name {name:?}")));
                continue;
            }
            match parse_values(values) {
                Ok(targets) if targets.is_empty() => {
                    issues.push(issue(format!("alias {name:?} has no value")))
                }
                Ok(targets) => {
                    if let std::collections::hash_map::Entry::Vacant(e) = map.entry(name.clone()) {
                        e.insert(targets);
                    } else {
                        issues.push(issue(format!("alias {name:?} is defined twice")));
                    }
                }
                Err(e) => issues.push(issue(format!("alias {name:?}: {e}"))),
            }
        }
        if issues.is_empty() {
            Ok(Aliases {
                map,
                file: Some(file.to_path_buf()),
                facts: None,
            })
        } else {
            Err(AliasError::Invalid(issues))
        }
    }

    /// The targets of alias `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[AliasTarget]> {
        self.map.get(&name.to_lowercase()).map(Vec::as_slice)
    }

    /// Every alias name (lower case), in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Reads an `:include:` or `.forward` file with `O_NOFOLLOW`: its targets, and its
/// owner and mode from `fstat` on the descriptor read.
pub fn read_include(path: &Path) -> Result<(Vec<AliasTarget>, FileFacts), AliasError> {
    let (text, facts) = read_file(path, true)?;
    Ok((parse_list(&text, path)?, facts))
}

/// Parses the text of an include or `.forward` file: values separated by commas or
/// newlines, `#` comments.
pub fn parse_list(text: &str, path: &Path) -> Result<Vec<AliasTarget>, AliasError> {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_values(line) {
            Ok(v) => out.extend(v),
            Err(e) => issues.push(AliasIssue {
                file: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            }),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(AliasError::Invalid(issues))
    }
}

/// Joins continuation lines; yields (first line number, text) per entry.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim_start().starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(raw.trim());
                continue;
            }
        }
        out.push((i + 1, raw.trim().to_string()));
    }
    out
}

fn split_entry(entry: &str) -> Option<(&str, &str)> {
    if let Some(rest) = entry.strip_prefix('"') {
        let end = rest.find('"')?;
        let after = rest[end + 1..].trim_start().strip_prefix(':')?;
        return Some((&rest[..end], after));
    }
    entry.split_once(':')
}

/// Why one alias value (or a value list) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadValue {
    UnbalancedQuote,
    ControlCharacter,
    EmptyCommand,
    RelativeInclude(PathBuf),
    BadAddress(String),
    BadLocalName(String),
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::UnbalancedQuote => f.write_str("unbalanced double quote"),
            BadValue::ControlCharacter => f.write_str("value contains a control character"),
            BadValue::EmptyCommand => f.write_str("empty command"),
            BadValue::RelativeInclude(p) => write!(
                f,
                ":include: needs an absolute path, found {:?}",
                p.display()
            ),
            BadValue::BadAddress(v) => write!(f, "bad address {v:?}"),
            BadValue::BadLocalName(v) => write!(f, "bad local name {v:?}"),
        }
    }
}

/// Splits values at commas outside quotes and classifies each.
fn parse_values(values: &str) -> Result<Vec<AliasTarget>, BadValue> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in values.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(BadValue::UnbalancedQuote);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(classify_value)
        .collect()
}

fn classify_value(v: &str) -> Result<AliasTarget, BadValue> {
    let unq = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    };
    if unq.contains(['\0', '\r', '\n']) {
        return Err(BadValue::ControlCharacter);
    }
    if let Some(cmd) = unq.strip_prefix('|') {
        if cmd.trim().is_empty() {
            return Err(BadValue::EmptyCommand);
        }
        return Ok(AliasTarget::Command(cmd.trim().to_string()));
    }
    if let Some(path) = unq.strip_prefix(":include:") {
        let path = PathBuf::from(path.trim());
        if !path.is_absolute() {
            return Err(BadValue::RelativeInclude(path));
        }
        return Ok(AliasTarget::Include(path));
    }
    if unq.starts_with('/') {
        return Ok(AliasTarget::File(PathBuf::from(unq)));
    }
    if let Some(name) = unq.strip_prefix('\\') {
        if name.is_empty() || name.contains(['@', '/', ' ']) {
            return Err(BadValue::BadLocalName(clip(v)));
        }
        return Ok(AliasTarget::Local(name.to_lowercase()));
    }
    if unq.chars().any(|c| c.is_whitespace() || c.is_control()) && !v.starts_with('"') {
        return Err(BadValue::BadAddress(clip(v)));
    }
    Ok(AliasTarget::Address(unq.to_string()))
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn classic_syntax() {
        let text = "# c\nPostmaster: root\nteam: alice, bob@example.net,\n  \"|/usr/bin/procmail -a x,y\",\n\t/var/mail/archive, :include:/etc/sloop/team.list\n\"odd name\": carol\n";
        let a = Aliases::parse(text, Path::new("/etc/aliases")).unwrap();
        assert_eq!(
            a.get("postmaster"),
            Some(&[AliasTarget::Address("root".into())][..])
        );
        let team = a.get("TEAM").unwrap();
        assert_eq!(team.len(), 5);
        assert_eq!(
            team[2],
            AliasTarget::Command("/usr/bin/procmail -a x,y".into())
        );
        assert_eq!(team[3], AliasTarget::File("/var/mail/archive".into()));
        assert_eq!(team[4], AliasTarget::Include("/etc/sloop/team.list".into()));
        assert!(a.contains("odd name"));
    }

    #[test]
    fn forward_files_and_symlinks() {
        let list = parse_list(
            "# mine\n\\alice, alice@elsewhere.example\n\"|/usr/bin/vacation alice\"\n",
            Path::new("/home/alice/.forward"),
        )
        .unwrap();
        assert_eq!(
            list,
            vec![
                AliasTarget::Local("alice".into()),
                AliasTarget::Address("alice@elsewhere.example".into()),
                AliasTarget::Command("/usr/bin/vacation alice".into()),
            ]
        );
        let dir = std::env::temp_dir().join(format!("sloop-alias-nf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join("real");
        std::fs::write(&real, "bob\n").unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (t, facts) = read_include(&real).unwrap();
        assert_eq!(t, vec![AliasTarget::Address("bob".into())]);
        assert_eq!(facts.uid, nix::unistd::geteuid().as_raw());
        let e = read_include(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(read_include(&dir).is_err(), "a directory is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn problems_are_all_reported_with_lines() {
        let text =
            "good: x\nno colon here\nempty:\ngood: y\nq: \"unbalanced\nrel: :include:relative\n";
        let Err(AliasError::Invalid(issues)) = Aliases::parse(text, Path::new("/a")) else {
            panic!("should fail")
        };
        let lines: Vec<usize> = issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    }
}
