//! Alias expansion: from one envelope recipient to the set of things to deliver to.
//!
//! [`Expander::expand`] classifies the address (common/src/local_recipient.rs) and
//! follows aliases recursively: a local name or local address is expanded again, an
//! address in another domain becomes a forward, `|command` and `/path/file` become
//! targets, `:include:/path` is read and its values expanded in turn. Loop protection:
//! each alias name and include file is expanded once per recipient (an alias that
//! lists itself delivers to its own mailbox, as in Postfix), and nesting stops at
//! [`MAX_DEPTH`].
//!
//! Trust and privileges: `|command`, `/path/file` and `:include:` members are honoured
//! only from a file that no one but its owner can write (mode without group/other
//! write, taken from `fstat` on the descriptor it was read through), and they carry
//! the uid they are to run as ([`TrustPolicy`]): when the agent runs as root (it can
//! switch users), the owner of the file they came from (Postfix: the aliases file's
//! owner; a root-owned source means `nobody`, applied when delivering); when it
//! cannot switch, only files owned by root, its own user or `server.user` count, and
//! their commands run as the agent itself. From any other source they fail with
//! 5.7.1, so a user who can write an include file cannot make the mail system run
//! commands, write files, or read other files as address lists.
//!
//! Local accounts (`local.system_users`): an account's `~/.forward` (opened with
//! `O_NOFOLLOW`, owned by the account, not group- or world-writable) replaces its
//! mailbox: its addresses are expanded again, its commands and files run as the
//! account, `\user` (or the account's own name) is its mailbox without further
//! forwarding. `:include:` is not honoured from a `.forward` (it would be read with
//! the agent's rights). A `.forward` that is a symlink or has the wrong owner or mode
//! defers the recipient with a line saying so; it is never followed.
//!
//! Problems with one member are collected (5.1.1 unknown, 5.1.3 bad local-part, 5.4.6
//! loop, 5.7.1 untrusted, 4.3.0 unreadable include) alongside the targets found.

use crate::result::RcptResult;
use sloop_common::aliases::{read_include, AliasTarget, Aliases, FileFacts};
use sloop_common::local_recipient::{classify, strip_extension, LocalVerdict};
use sloop_common::Config;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Deepest alias nesting followed.
pub const MAX_DEPTH: usize = 20;

/// One thing a recipient expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A virtual mailbox; `address` is `user@domain` for `Delivered-To`.
    Mailbox {
        domain: String,
        user: String,
        address: String,
    },
    /// A local account's mailbox (`local.system_users`); `address` as for `Mailbox`.
    Account { user: String, address: String },
    /// An address outside the local domains: forwarded by re-injection.
    Forward(String),
    /// `|command`, run as `uid` (0: `nobody`, see privs.rs).
    Command { command: String, uid: u32 },
    /// `/path/file`, appended to as `uid` (0: `nobody`).
    File { path: PathBuf, uid: u32 },
}

/// Everything one recipient expands to.
#[derive(Debug, Default)]
pub struct Expansion {
    pub targets: Vec<Target>,
    /// Members that cannot be delivered, with why.
    pub problems: Vec<RcptResult>,
}

/// Decides whether a file is a trusted source of commands, files and includes, and as
/// which uid they run. `facts` is `None` when the file's owner is unknown.
pub trait TrustPolicy {
    fn privileges(&self, path: &Path, facts: Option<FileFacts>) -> Option<u32>;
}

/// The standard rule (see the module doc).
#[derive(Debug, Clone)]
pub struct OwnerTrust {
    /// Owners accepted when the agent cannot switch users.
    pub uids: Vec<u32>,
    /// The agent's own uid; 0 means it can switch users.
    pub euid: u32,
}

impl OwnerTrust {
    pub fn from_config(cfg: &Config) -> OwnerTrust {
        let euid = nix::unistd::geteuid().as_raw();
        let mut uids = vec![0, euid];
        if !cfg.server.user.is_empty() {
            if let Ok(Some(u)) = nix::unistd::User::from_name(&cfg.server.user) {
                uids.push(u.uid.as_raw());
            }
        }
        OwnerTrust { uids, euid }
    }
}

impl TrustPolicy for OwnerTrust {
    fn privileges(&self, _path: &Path, facts: Option<FileFacts>) -> Option<u32> {
        run_as_for(facts?, self.euid, &self.uids)
    }
}

/// As which uid members of a file with `facts` run, for an agent running as `euid`
/// (`uids`: the owners trusted when it cannot switch users); `None`: refused.
pub fn run_as_for(facts: FileFacts, euid: u32, uids: &[u32]) -> Option<u32> {
    if facts.shared_writable() {
        return None;
    }
    if euid == 0 {
        return Some(facts.uid);
    }
    uids.contains(&facts.uid).then_some(euid)
}

/// Whether a `.forward` with `facts` may be used for the account `uid`.
pub fn forward_usable(facts: FileFacts, uid: u32) -> Result<(), super::refusal::FileRefusal> {
    use super::refusal::FileRefusal;
    if facts.uid != uid {
        return Err(FileRefusal::Owner {
            owner: facts.uid,
            account: uid,
        });
    }
    if facts.shared_writable() {
        return Err(FileRefusal::SharedWritable {
            mode: facts.mode & 0o7777,
        });
    }
    Ok(())
}

/// Expands recipients against one config and aliases table.
pub struct Expander<'a> {
    pub cfg: &'a Config,
    pub aliases: &'a Aliases,
    pub trust: &'a dyn TrustPolicy,
}

struct Walk {
    seen_aliases: HashSet<String>,
    seen_includes: HashSet<PathBuf>,
    /// Accounts whose `.forward` was read (met again: their mailbox).
    seen_forwards: HashSet<String>,
    out: Expansion,
}

/// Where the member being expanded came from.
#[derive(Debug, Clone, Copy)]
struct Source {
    /// `Some(uid)`: commands and files are honoured and run as `uid`.
    run_as: Option<u32>,
    /// Whether `:include:` is honoured (not from a `.forward`).
    includes: bool,
}

impl Expander<'_> {
    /// Expands `address` (an envelope recipient of the local transport).
    pub fn expand(&self, address: &str) -> Expansion {
        let mut w = Walk {
            seen_aliases: HashSet::new(),
            seen_includes: HashSet::new(),
            seen_forwards: HashSet::new(),
            out: Expansion::default(),
        };
        let run_as = match &self.aliases.file {
            Some(f) => self.trust.privileges(f, self.aliases.facts),
            None => None,
        };
        let src = Source {
            run_as,
            includes: run_as.is_some(),
        };
        self.visit(address, 0, src, &mut w);
        let mut unique = Vec::new();
        for t in w.out.targets.drain(..) {
            if !unique.contains(&t) {
                unique.push(t);
            }
        }
        w.out.targets = unique;
        w.out
    }

    fn visit(&self, address: &str, depth: usize, src: Source, w: &mut Walk) {
        if depth > MAX_DEPTH {
            w.out.problems.push(RcptResult::fail(
                "5.4.6",
                format!("alias expansion of {address} is nested too deeply"),
            ));
            return;
        }
        match classify(self.cfg, self.aliases, address) {
            LocalVerdict::NotLocal => w.out.targets.push(Target::Forward(address.to_string())),
            LocalVerdict::Unknown => w.out.problems.push(RcptResult::fail(
                "5.1.1",
                format!("unknown user: {address}"),
            )),
            LocalVerdict::Invalid(e) => w.out.problems.push(RcptResult::fail(
                "5.1.3",
                format!("bad address {address:?}: {e}"),
            )),
            LocalVerdict::Mailbox { domain, user } => {
                let user = self.base_mailbox(&domain, user);
                w.out.targets.push(mailbox(domain, user))
            }
            LocalVerdict::Alias { name } => self.visit_alias(address, &name, depth, src, w),
            LocalVerdict::Account { user } => self.visit_account(address, &user, depth, w),
        }
    }

    /// A local account: its `.forward` when it has a usable one, else its mailbox.
    fn visit_account(&self, address: &str, user: &str, depth: usize, w: &mut Walk) {
        let domain = domain_of(address, self.cfg);
        if !w.seen_forwards.insert(user.to_string()) {
            w.out.targets.push(account(user, &domain));
            return;
        }
        let pw = match nix::unistd::User::from_name(user) {
            Ok(Some(pw)) => pw,
            Ok(None) => {
                return w.out.problems.push(RcptResult::defer(
                    "4.3.0",
                    format!("local account {user} vanished during delivery"),
                ))
            }
            Err(e) => {
                return w.out.problems.push(RcptResult::defer(
                    "4.3.0",
                    format!("cannot look up local account {user}: {e}"),
                ))
            }
        };
        let path = pw.dir.join(".forward");
        let (targets, facts) = match read_include(&path) {
            Ok(found) => found,
            Err(sloop_common::aliases::AliasError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                w.out.targets.push(account(user, &domain));
                return;
            }
            Err(e) => {
                log::warn!("refusing {} of {user}: {e}", path.display());
                return w.out.problems.push(RcptResult::defer(
                    "4.3.0",
                    format!("cannot use ~{user}/.forward: {e}"),
                ));
            }
        };
        if let Err(why) = forward_usable(facts, pw.uid.as_raw()) {
            log::warn!("refusing {} of {user}: it {why}", path.display());
            return w.out.problems.push(RcptResult::defer(
                "4.7.0",
                format!("~{user}/.forward {why}; refused"),
            ));
        }
        if targets.is_empty() {
            w.out.targets.push(account(user, &domain));
            return;
        }
        let src = Source {
            run_as: Some(pw.uid.as_raw()),
            includes: false,
        };
        for t in &targets {
            self.visit_target(t, &domain, depth + 1, src, w);
        }
    }

    fn visit_alias(&self, address: &str, name: &str, depth: usize, src: Source, w: &mut Walk) {
        let domain = domain_of(address, self.cfg);
        if !w.seen_aliases.insert(name.to_string()) {
            self.revisit(address, w);
            return;
        }
        let Some(targets) = self.aliases.get(name) else {
            return;
        };
        for t in targets {
            self.visit_target(t, &domain, depth + 1, src, w);
        }
    }

    /// `user+tag` delivers to `user` when `user` is itself a mailbox (classify finds
    /// `user+tag` first in a domain that accepts every local-part).
    fn base_mailbox(&self, domain: &str, user: String) -> String {
        let base = strip_extension(&user, self.cfg.local.recipient_delimiter);
        if base == user {
            return user;
        }
        match classify(self.cfg, &Aliases::empty(), &format!("{base}@{domain}")) {
            LocalVerdict::Mailbox { user: b, .. } => b,
            _ => user,
        }
    }

    /// An alias met again: its own mailbox if it has one, else a loop.
    fn revisit(&self, address: &str, w: &mut Walk) {
        match classify(self.cfg, &Aliases::empty(), address) {
            LocalVerdict::Mailbox { domain, user } => w.out.targets.push(mailbox(domain, user)),
            LocalVerdict::Account { user } => {
                let domain = domain_of(address, self.cfg);
                w.out.targets.push(account(&user, &domain))
            }
            _ => w.out.problems.push(RcptResult::fail(
                "5.4.6",
                format!("alias loop through {address}"),
            )),
        }
    }

    fn visit_target(&self, t: &AliasTarget, domain: &str, depth: usize, src: Source, w: &mut Walk) {
        let refuse = |w: &mut Walk, what: String| {
            w.out.problems.push(RcptResult::fail(
                "5.7.1",
                format!("{what} from an untrusted source refused"),
            ))
        };
        match t {
            AliasTarget::Address(a) if a.contains('@') => self.visit(a, depth, src, w),
            AliasTarget::Address(a) => self.visit(&format!("{a}@{domain}"), depth, src, w),
            AliasTarget::Local(name) => self.visit_local(name, domain, w),
            AliasTarget::Command(c) => match src.run_as {
                Some(uid) => w.out.targets.push(Target::Command {
                    command: c.clone(),
                    uid,
                }),
                None => refuse(w, "command target".to_string()),
            },
            AliasTarget::File(p) => match src.run_as {
                Some(uid) => w.out.targets.push(Target::File {
                    path: p.clone(),
                    uid,
                }),
                None => refuse(w, "file target".to_string()),
            },
            AliasTarget::Include(p) if src.includes => self.visit_include(p, domain, depth, w),
            AliasTarget::Include(p) => refuse(w, format!(":include:{}", p.display())),
        }
    }

    /// `\name`: the mailbox of `name`, without aliases or `.forward`.
    fn visit_local(&self, name: &str, domain: &str, w: &mut Walk) {
        let address = format!("{name}@{domain}");
        match classify(self.cfg, &Aliases::empty(), &address) {
            LocalVerdict::Mailbox { domain, user } => w.out.targets.push(mailbox(domain, user)),
            LocalVerdict::Account { user } => w.out.targets.push(account(&user, domain)),
            LocalVerdict::Invalid(e) => w.out.problems.push(RcptResult::fail(
                "5.1.3",
                format!("bad address {address:?}: {e}"),
            )),
            _ => w.out.problems.push(RcptResult::fail(
                "5.1.1",
                format!("unknown user: {address}"),
            )),
        }
    }

    fn visit_include(&self, path: &Path, domain: &str, depth: usize, w: &mut Walk) {
        if !w.seen_includes.insert(path.to_path_buf()) {
            return;
        }
        match read_include(path) {
            Ok((targets, facts)) => {
                let run_as = self.trust.privileges(path, Some(facts));
                let src = Source {
                    run_as,
                    includes: run_as.is_some(),
                };
                for t in &targets {
                    self.visit_target(t, domain, depth + 1, src, w);
                }
            }
            Err(e) => {
                log::warn!("cannot use include file: {e}");
                w.out.problems.push(RcptResult::defer(
                    "4.3.0",
                    format!("cannot use include file: {e}"),
                ))
            }
        }
    }
}

/// The domain of `address`, or the first local domain for a bare name.
fn domain_of(address: &str, cfg: &Config) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .or_else(|| cfg.local_domains.first().cloned())
        .unwrap_or_default()
}

fn account(user: &str, domain: &str) -> Target {
    Target::Account {
        user: user.to_string(),
        address: format!("{user}@{domain}"),
    }
}

fn mailbox(domain: String, user: String) -> Target {
    Target::Mailbox {
        address: format!("{user}@{domain}"),
        domain,
        user,
    }
}

#[cfg(test)]
mod tests;
