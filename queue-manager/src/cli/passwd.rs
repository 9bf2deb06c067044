//! `sloop passwd add|delete|list`: manages `auth.password_file` (docs/sloop.8.md).
//!
//! `add USER` reads the password from the first line of standard input (so it never
//! shows in `ps` or the shell history), hashes it with argon2id and adds or replaces
//! the user's line. Every change rewrites the file atomically (`sloop_common::passwd`).
//! A new file is made mode 0640, owned by root and the group of `server.user` when run
//! as root (the smtpd workers run as that user and read it); an existing file keeps its
//! owner and mode.

use super::queue_view::write_out;
use super::ToolError;
use sloop_common::config::Config;
use sloop_common::exitcode::{EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOUSER};
use sloop_common::passwd::{self, Entry};
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One `sloop passwd` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswdAction {
    Add(String),
    Delete(String),
    List,
}

fn file_of(cfg: &Config) -> Result<PathBuf, ToolError> {
    cfg.auth.password_file.clone().ok_or_else(|| {
        ToolError::new(
            EX_CONFIG,
            format!("{}: auth.password_file is not set", cfg.file.display()),
        )
    })
}

fn load(path: &Path) -> Result<Vec<Entry>, ToolError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    passwd::load(path).map_err(|e| ToolError::new(EX_DATAERR, e.to_string()))
}

/// Runs `action`; `input` is where `add` reads the password.
pub fn run(
    cfg: &Config,
    action: &PasswdAction,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), ToolError> {
    let path = file_of(cfg)?;
    let mut entries = load(&path)?;
    match action {
        PasswdAction::List => {
            let mut text = String::new();
            for e in &entries {
                text.push_str(&format!("{} {}\n", e.user, passwd::scheme(&e.hash)));
            }
            write_out(out, &text)
        }
        PasswdAction::Delete(user) => {
            let before = entries.len();
            entries.retain(|e| !e.user.eq_ignore_ascii_case(user));
            if entries.len() == before {
                return Err(ToolError::new(
                    EX_NOUSER,
                    format!("{}: no such user: {user}", path.display()),
                ));
            }
            save(cfg, &path, &entries)?;
            write_out(out, &format!("deleted {user}\n"))
        }
        PasswdAction::Add(user) => {
            if !passwd::valid_user(user) {
                return Err(ToolError::new(
                    EX_DATAERR,
                    passwd::PasswdError::BadUser(user.clone()).to_string(),
                ));
            }
            let mut line = String::new();
            input
                .read_line(&mut line)
                .map_err(|e| ToolError::new(EX_IOERR, format!("standard input: {e}")))?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(ToolError::new(
                    EX_DATAERR,
                    "no password on standard input (one line expected)",
                ));
            }
            let hash = passwd::hash_new(password.as_bytes())
                .map_err(|e| ToolError::new(EX_IOERR, e.to_string()))?;
            let replaced = match entries
                .iter_mut()
                .find(|e| e.user.eq_ignore_ascii_case(user))
            {
                Some(e) => {
                    e.hash = hash;
                    true
                }
                None => {
                    entries.push(Entry {
                        user: user.clone(),
                        hash,
                    });
                    false
                }
            };
            save(cfg, &path, &entries)?;
            let what = if replaced { "updated" } else { "added" };
            write_out(out, &format!("{what} {user}\n"))
        }
    }
}

/// Writes the file: an existing one keeps its owner and mode, a new one is 0640
/// root:<group of server.user> when we are root.
fn save(cfg: &Config, path: &Path, entries: &[Entry]) -> Result<(), ToolError> {
    let (mode, owner) = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(ToolError::new(
                EX_IOERR,
                format!(
                    "{}: is a symbolic link; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Ok(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
        Err(_) => {
            let group = if nix::unistd::geteuid().is_root() && !cfg.server.user.is_empty() {
                nix::unistd::User::from_name(&cfg.server.user)
                    .ok()
                    .flatten()
                    .map(|u| (0, u.gid.as_raw()))
            } else {
                None
            };
            (0o640, group)
        }
    };
    let owner = owner.filter(|_| nix::unistd::geteuid().is_root());
    passwd::write_atomically(path, &passwd::render(entries), mode, owner)
        .map_err(|e| ToolError::new(EX_IOERR, e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn add_list_delete() {
        let dir = std::env::temp_dir().join(format!("sloop-passwd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = "[auth]\nbackend = \"file\"\npassword_file = \"users\"\n";
        std::fs::write(dir.join("sloop.toml"), text).unwrap();
        // The file does not exist yet: the config names it and `add` creates it.
        assert!(sloop_common::config::Config::load(&dir.join("sloop.toml")).is_err());
        let cfg = sloop_common::config::Config::load_unchecked(&dir.join("sloop.toml")).unwrap();
        let mut out = Vec::new();
        run(
            &cfg,
            &PasswdAction::Add("alice".into()),
            &mut &b"pw\n"[..],
            &mut out,
        )
        .unwrap();
        run(
            &cfg,
            &PasswdAction::Add("bob".into()),
            &mut &b"x\n"[..],
            &mut out,
        )
        .unwrap();
        run(
            &cfg,
            &PasswdAction::Add("alice".into()),
            &mut &b"pw2\n"[..],
            &mut out,
        )
        .unwrap();
        let entries = passwd::load(&dir.join("users")).unwrap();
        assert!(passwd::check(&entries, "alice", b"pw2"));
        assert!(!passwd::check(&entries, "alice", b"pw"));
        let mut listing = Vec::new();
        run(&cfg, &PasswdAction::List, &mut &b""[..], &mut listing).unwrap();
        assert_eq!(
            String::from_utf8(listing).unwrap(),
            "alice argon2id\nbob argon2id\n"
        );
        run(
            &cfg,
            &PasswdAction::Delete("BOB".into()),
            &mut &b""[..],
            &mut out,
        )
        .unwrap();
        let e = run(
            &cfg,
            &PasswdAction::Delete("bob".into()),
            &mut &b""[..],
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.code, EX_NOUSER);
        let e = run(
            &cfg,
            &PasswdAction::Add("carol".into()),
            &mut &b"\n"[..],
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.code, EX_DATAERR);
        let e = run(
            &cfg,
            &PasswdAction::Add("a:b".into()),
            &mut &b"x\n"[..],
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.code, EX_DATAERR);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
