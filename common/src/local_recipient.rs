//! Which local mailbox, alias or nothing a recipient address means.
//!
//! One function, [`classify`], used by the smtpd at RCPT time (accept or `550 5.1.1`,
//! so nothing is bounced later: no backscatter) and by `sloop-deliver local` to find
//! the mailbox. Domains compare case-insensitively; local-parts are folded to lower
//! case; `user+tag` falls back to `user` (`local.recipient_delimiter`). Aliases apply to
//! every local domain, as in the classic `/etc/aliases`.
//!
//! With `local.system_users`, a local-part naming a local account (`getpwnam`, after
//! the aliases and the virtual mailboxes, with the extension dropped) is that account
//! ([`LocalVerdict::Account`]), in every local domain, as Postfix's `local` does for
//! `mydestination`.
//!
//! Local-parts become directory names, so [`safe_local_part`] refuses anything that
//! could leave the mailbox root (`/`, `..`, leading dot, NUL, control characters).

use crate::aliases::Aliases;
use crate::Config;

/// What a recipient address is to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalVerdict {
    /// The domain is not one of `domains.local`.
    NotLocal,
    /// An alias (`name` is the matching alias name, lower case).
    Alias { name: String },
    /// A virtual mailbox: `<mailbox_root>/<domain>/<user>/Maildir`.
    Mailbox { domain: String, user: String },
    /// A local account (`local.system_users`): `/var/mail/<user>` or `~<user>/Maildir`.
    Account { user: String },
    /// A local domain, but no such mailbox or alias (550 5.1.1).
    Unknown,
    /// A local-part that cannot name a mailbox safely (550 5.1.3).
    Invalid(UnsafeName),
}

/// Classifies `address` (`local@domain`, without angle brackets).
pub fn classify(cfg: &Config, aliases: &Aliases, address: &str) -> LocalVerdict {
    let Some((local, domain)) = address.rsplit_once('@') else {
        // A bare local-part (from an alias) means the first local domain.
        return match cfg.local_domains.first() {
            Some(d) => classify(cfg, aliases, &format!("{address}@{d}")),
            None => LocalVerdict::NotLocal,
        };
    };
    let domain = domain.to_ascii_lowercase();
    if !cfg.is_local_domain(&domain) {
        return LocalVerdict::NotLocal;
    }
    let local = local.to_lowercase();
    let base = strip_extension(&local, cfg.local.recipient_delimiter);
    for name in [local.as_str(), base] {
        if aliases.contains(name) {
            return LocalVerdict::Alias {
                name: name.to_string(),
            };
        }
    }
    // An explicit entry for the whole local-part wins; otherwise the extension is
    // dropped (`user+tag` -> `user`), for explicit entries and `@domain` wildcards alike.
    let listed = |user: &str| {
        cfg.local
            .mailboxes
            .iter()
            .any(|m| match m.rsplit_once('@') {
                Some((u, d)) => d == domain && (u.is_empty() || u.to_lowercase() == user),
                None => false,
            })
    };
    let explicit = |user: &str| {
        cfg.local
            .mailboxes
            .iter()
            .any(|m| m.to_lowercase() == format!("{user}@{domain}"))
    };
    let user = if explicit(&local) {
        Some(local.as_str())
    } else {
        listed(base).then_some(base)
    };
    if let Some(user) = user {
        return match safe_local_part(user) {
            Ok(user) => LocalVerdict::Mailbox { domain, user },
            Err(e) => LocalVerdict::Invalid(e),
        };
    }
    if cfg.local.system_users {
        for name in [local.as_str(), base] {
            if safe_local_part(name).is_ok() && account_exists(name) {
                return LocalVerdict::Account {
                    user: name.to_string(),
                };
            }
        }
    }
    LocalVerdict::Unknown
}

/// True when `name` is a local account (`getpwnam`); a lookup error counts as "no".
pub fn account_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// `user+tag` -> `user` (the whole part when there is no delimiter or nothing before it).
pub fn strip_extension(local: &str, delimiter: Option<char>) -> &str {
    match delimiter.and_then(|d| local.find(d)) {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

/// Why a name from an address cannot be one directory component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeName {
    Empty,
    /// Longer than the limit (64 octets for a local-part, 255 for a domain).
    TooLong {
        limit: usize,
    },
    LeadingDot,
    /// `/`, `\`, NUL or another control character.
    BadCharacter,
}

impl std::fmt::Display for UnsafeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnsafeName::Empty => f.write_str("empty"),
            UnsafeName::TooLong { limit } => write!(f, "longer than {limit} octets"),
            UnsafeName::LeadingDot => f.write_str("starts with a dot"),
            UnsafeName::BadCharacter => {
                f.write_str("contains '/', '\\', NUL or a control character")
            }
        }
    }
}

impl std::error::Error for UnsafeName {}

/// The local-part as a safe directory name (lower case), or why it is not one.
pub fn safe_local_part(local: &str) -> Result<String, UnsafeName> {
    safe_name(local, 64)
}

/// `name` (a local-part or a domain) as one safe directory component, lower case:
/// not empty, at most `limit` octets, no leading dot, no `/`, `\`, NUL or control
/// character.
pub fn safe_name(name: &str, limit: usize) -> Result<String, UnsafeName> {
    if name.is_empty() {
        return Err(UnsafeName::Empty);
    }
    if name.len() > limit {
        return Err(UnsafeName::TooLong { limit });
    }
    if name.starts_with('.') {
        return Err(UnsafeName::LeadingDot);
    }
    if name.contains(['/', '\\', '\0']) || name.chars().any(char::is_control) {
        return Err(UnsafeName::BadCharacter);
    }
    Ok(name.to_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::path::Path;

    fn cfg() -> Config {
        let text = "[domains]\nlocal = [\"example.test\", \"catch.test\"]\n[local]\nmailboxes = [\"alice@example.test\", \"@catch.test\"]\n";
        Config::parse(Path::new("/t.toml"), text).unwrap()
    }

    #[test]
    fn verdicts() {
        let cfg = cfg();
        let aliases = Aliases::parse("postmaster: alice\n", Path::new("/a")).unwrap();
        let c = |a: &str| classify(&cfg, &aliases, a);
        assert_eq!(
            c("Alice@EXAMPLE.test"),
            LocalVerdict::Mailbox {
                domain: "example.test".into(),
                user: "alice".into()
            }
        );
        assert_eq!(
            c("alice+news@example.test"),
            LocalVerdict::Mailbox {
                domain: "example.test".into(),
                user: "alice".into()
            }
        );
        assert_eq!(c("bob@example.test"), LocalVerdict::Unknown);
        assert_eq!(
            c("PostMaster@catch.test"),
            LocalVerdict::Alias {
                name: "postmaster".into()
            }
        );
        assert_eq!(
            c("anyone+tag@catch.test"),
            LocalVerdict::Mailbox {
                domain: "catch.test".into(),
                user: "anyone".into()
            },
            "the extension is dropped in a wildcard domain too"
        );
        assert_eq!(
            c("anyone@catch.test"),
            LocalVerdict::Mailbox {
                domain: "catch.test".into(),
                user: "anyone".into()
            }
        );
        assert_eq!(c("x@elsewhere.test"), LocalVerdict::NotLocal);
        assert!(matches!(
            c("../../etc@catch.test"),
            LocalVerdict::Invalid(_)
        ));
        assert!(matches!(c("a/b@catch.test"), LocalVerdict::Invalid(_)));
        assert!(matches!(c(".hidden@catch.test"), LocalVerdict::Invalid(_)));
    }

    #[test]
    fn local_accounts_when_system_users_is_on() {
        let text = "[domains]\nlocal = [\"example.test\"]\n[local]\nsystem_users = true\nmailboxes = [\"alice@example.test\"]\n";
        let cfg = Config::parse(Path::new("/t.toml"), text).unwrap();
        let aliases = Aliases::parse("postmaster: root\n", Path::new("/a")).unwrap();
        let c = |a: &str| classify(&cfg, &aliases, a);
        let root = LocalVerdict::Account {
            user: "root".into(),
        };
        assert_eq!(c("root@example.test"), root);
        assert_eq!(c("ROOT+cron@Example.Test"), root);
        assert_eq!(c("root"), root, "a bare name is the first local domain");
        assert_eq!(
            c("postmaster@example.test"),
            LocalVerdict::Alias {
                name: "postmaster".into()
            }
        );
        assert!(matches!(
            c("alice@example.test"),
            LocalVerdict::Mailbox { .. }
        ));
        assert_eq!(
            c("no-such-account-here@example.test"),
            LocalVerdict::Unknown
        );
        assert_eq!(
            classify(&cfg_off(), &aliases, "root@example.test"),
            LocalVerdict::Unknown
        );
    }

    fn cfg_off() -> Config {
        Config::parse(
            Path::new("/t.toml"),
            "[domains]\nlocal = [\"example.test\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn safe_names() {
        assert!(safe_local_part("a\0b").is_err());
        assert!(safe_local_part("a\nb").is_err());
        assert!(safe_local_part(&"x".repeat(65)).is_err());
        assert_eq!(safe_local_part("Üser"), Ok("üser".into()));
    }
}
