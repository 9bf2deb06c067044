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
//! Trust rule: `|command`, `/path/file` and `:include:` targets are honoured only when
//! every file on their path (the aliases file and each include) is *trusted*: owned by
//! root, by the worker's own user or by `server.user`, and not group- or
//! world-writable. From any other source they fail with 5.7.1, so a user who can write
//! an include file cannot make the mail system run commands, write files, or read
//! other files as address lists; only its plain addresses are used. File targets must
//! also lie under `local.mailbox_root` (checked when delivering, local/mod.rs).
//!
//! Problems with one member are collected (5.1.1 unknown, 5.1.3 bad local-part, 5.4.6
//! loop, 5.7.1 untrusted, 4.3.0 unreadable include) alongside the targets found.

use crate::result::RcptResult;
use sloop_common::aliases::{read_include, AliasTarget, Aliases};
use sloop_common::local_recipient::{classify, strip_extension, LocalVerdict};
use sloop_common::Config;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
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
    /// An address outside the local domains: forwarded by re-injection.
    Forward(String),
    Command(String),
    File(PathBuf),
}

/// Everything one recipient expands to.
#[derive(Debug, Default)]
pub struct Expansion {
    pub targets: Vec<Target>,
    /// Members that cannot be delivered, with why.
    pub problems: Vec<RcptResult>,
}

/// Decides whether a file is a trusted source of commands and file targets.
pub trait TrustPolicy {
    fn trusted(&self, path: &Path) -> bool;
}

/// The standard rule: owner root, our euid or `server.user`; no group/other write.
#[derive(Debug, Clone)]
pub struct OwnerTrust {
    pub uids: Vec<u32>,
}

impl OwnerTrust {
    pub fn from_config(cfg: &Config) -> OwnerTrust {
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        if !cfg.server.user.is_empty() {
            if let Ok(Some(u)) = nix::unistd::User::from_name(&cfg.server.user) {
                uids.push(u.uid.as_raw());
            }
        }
        OwnerTrust { uids }
    }
}

impl TrustPolicy for OwnerTrust {
    fn trusted(&self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(m) => self.uids.contains(&m.uid()) && m.mode() & 0o022 == 0,
            Err(_) => false,
        }
    }
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
    out: Expansion,
}

impl Expander<'_> {
    /// Expands `address` (an envelope recipient of the local transport).
    pub fn expand(&self, address: &str) -> Expansion {
        let mut w = Walk {
            seen_aliases: HashSet::new(),
            seen_includes: HashSet::new(),
            out: Expansion::default(),
        };
        let trusted = match &self.aliases.file {
            Some(f) => self.trust.trusted(f),
            None => false,
        };
        self.visit(address, 0, trusted, &mut w);
        let mut unique = Vec::new();
        for t in w.out.targets.drain(..) {
            if !unique.contains(&t) {
                unique.push(t);
            }
        }
        w.out.targets = unique;
        w.out
    }

    fn visit(&self, address: &str, depth: usize, trusted: bool, w: &mut Walk) {
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
            LocalVerdict::Alias { name } => self.visit_alias(address, &name, depth, trusted, w),
        }
    }

    fn visit_alias(&self, address: &str, name: &str, depth: usize, trusted: bool, w: &mut Walk) {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .or_else(|| self.cfg.local_domains.first().cloned())
            .unwrap_or_default();
        if !w.seen_aliases.insert(name.to_string()) {
            self.revisit(address, w);
            return;
        }
        let Some(targets) = self.aliases.get(name) else {
            return;
        };
        for t in targets {
            self.visit_target(t, &domain, depth + 1, trusted, w);
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
            _ => w.out.problems.push(RcptResult::fail(
                "5.4.6",
                format!("alias loop through {address}"),
            )),
        }
    }

    fn visit_target(
        &self,
        t: &AliasTarget,
        domain: &str,
        depth: usize,
        trusted: bool,
        w: &mut Walk,
    ) {
        match t {
            AliasTarget::Address(a) if a.contains('@') => self.visit(a, depth, trusted, w),
            AliasTarget::Address(a) => self.visit(&format!("{a}@{domain}"), depth, trusted, w),
            AliasTarget::Command(c) if trusted => w.out.targets.push(Target::Command(c.clone())),
            AliasTarget::File(p) if trusted => w.out.targets.push(Target::File(p.clone())),
            AliasTarget::Command(_) | AliasTarget::File(_) => {
                w.out.problems.push(RcptResult::fail(
                    "5.7.1",
                    "command or file target from an untrusted aliases source refused",
                ))
            }
            AliasTarget::Include(p) if trusted => self.visit_include(p, domain, depth, w),
            AliasTarget::Include(p) => w.out.problems.push(RcptResult::fail(
                "5.7.1",
                format!(
                    ":include:{} from an untrusted aliases source refused",
                    p.display()
                ),
            )),
        }
    }

    fn visit_include(&self, path: &Path, domain: &str, depth: usize, w: &mut Walk) {
        if !w.seen_includes.insert(path.to_path_buf()) {
            return;
        }
        let trusted = self.trust.trusted(path);
        match read_include(path) {
            Ok(targets) => {
                for t in &targets {
                    self.visit_target(t, domain, depth + 1, trusted, w);
                }
            }
            Err(e) => w.out.problems.push(RcptResult::defer(
                "4.3.0",
                format!("cannot use include file: {e}"),
            )),
        }
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
