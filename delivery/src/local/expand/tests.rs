//! Alias expansion tests: lists, commands, files, forwards, loops, depth, includes
//! and their trust, path tricks in members.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use sloop_common::spool::status::Outcome;
use std::path::Path;

struct Trust(Vec<PathBuf>);

/// Listed files are trusted; their members run as uid 1000.
impl TrustPolicy for Trust {
    fn privileges(&self, path: &Path, _facts: Option<FileFacts>) -> Option<u32> {
        self.0.iter().any(|p| p == path).then_some(1000)
    }
}

fn config(mailboxes: &str) -> Config {
    let text = format!(
        "[domains]\nlocal = [\"d.test\", \"e.test\"]\n[local]\nmailbox_root = \"/tmp/x\"\nmailboxes = {mailboxes}\n"
    );
    Config::parse(Path::new("/tmp/sloop-expand-test.toml"), &text).unwrap()
}

fn aliases(text: &str) -> Aliases {
    Aliases::parse(text, Path::new("/etc/aliases")).unwrap()
}

fn expand(cfg: &Config, a: &Aliases, trust: &[&str], rcpt: &str) -> Expansion {
    let trust = Trust(trust.iter().map(PathBuf::from).collect());
    Expander {
        cfg,
        aliases: a,
        trust: &trust,
    }
    .expand(rcpt)
}

fn mb(user: &str, domain: &str) -> Target {
    mailbox(domain.into(), user.into())
}

#[test]
fn lists_commands_files_and_forwards() {
    let cfg = config("[\"@d.test\", \"bob@e.test\"]");
    let a = aliases("team: alice, Bob@E.test, carol@far.test, \"|/bin/true\", /var/mail/x\n");
    let e = expand(&cfg, &a, &["/etc/aliases"], "team+tag@d.test");
    assert!(e.problems.is_empty(), "{:?}", e.problems);
    assert_eq!(
        e.targets,
        vec![
            mb("alice", "d.test"),
            mb("bob", "e.test"),
            Target::Forward("carol@far.test".into()),
            Target::Command {
                command: "/bin/true".into(),
                uid: 1000
            },
            Target::File {
                path: "/var/mail/x".into(),
                uid: 1000
            },
        ]
    );
}

#[test]
fn unknown_members_of_a_list_are_reported() {
    let cfg = config("[\"alice@d.test\"]");
    let a = aliases("team: alice, nobody\n");
    let e = expand(&cfg, &a, &[], "team@d.test");
    assert_eq!(e.targets, vec![mb("alice", "d.test")]);
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].dsn, "5.1.1");
}

#[test]
fn loops_end() {
    let cfg = config("[\"alice@d.test\"]");
    let a = aliases("a: b\nb: a\n");
    let e = expand(&cfg, &a, &[], "a@d.test");
    assert!(e.targets.is_empty());
    assert_eq!(e.problems[0].dsn, "5.4.6");
    // An alias naming itself delivers to its own mailbox too.
    let a = aliases("alice: alice, x@far.test\n");
    let e = expand(&cfg, &a, &[], "alice@d.test");
    assert_eq!(
        e.targets,
        vec![mb("alice", "d.test"), Target::Forward("x@far.test".into())]
    );
    assert!(e.problems.is_empty());
}

#[test]
fn deep_nesting_stops() {
    let cfg = config("[\"@d.test\"]");
    let text: String = (0..30).map(|i| format!("a{i}: a{}\n", i + 1)).collect();
    let e = expand(&cfg, &aliases(&text), &[], "a0@d.test");
    assert!(e.targets.is_empty());
    assert_eq!(e.problems[0].dsn, "5.4.6");
}

#[test]
fn includes_are_read_once_and_trusted_only_when_safe() {
    let dir = std::env::temp_dir().join(format!("sloop-expand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inc = dir.join("list");
    std::fs::write(
        &inc,
        format!(
            "alice, \"|/bin/echo pwned\"\n/etc/passwd\n:include:{}\n",
            inc.display()
        ),
    )
    .unwrap();
    let cfg = config("[\"@d.test\"]");
    let a = aliases(&format!("l: :include:{}\n", inc.display()));
    // Include not trusted: its address is used; its command, file and nested include
    // are refused.
    let e = expand(&cfg, &a, &["/etc/aliases"], "l@d.test");
    assert_eq!(e.targets, vec![mb("alice", "d.test")]);
    assert_eq!(e.problems.len(), 3);
    assert!(e.problems.iter().all(|p| p.dsn == "5.7.1"));
    // Aliases file untrusted: its include is not even read.
    let inc_s = inc.to_str().unwrap();
    let e = expand(&cfg, &a, &[inc_s], "l@d.test");
    assert!(e.targets.is_empty());
    assert_eq!(e.problems.len(), 1);
    // Both trusted: the targets are kept (the file target is confined later) and the
    // include naming itself is read once.
    let e = expand(&cfg, &a, &["/etc/aliases", inc_s], "l@d.test");
    assert_eq!(e.targets.len(), 3);
    assert!(e.problems.is_empty(), "{:?}", e.problems);
    // A missing include defers.
    let a = aliases("l: :include:/nonexistent/sloop-list\n");
    let e = expand(&cfg, &a, &["/etc/aliases"], "l@d.test");
    assert_eq!(e.problems[0].outcome, Outcome::Defer);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn path_tricks_in_alias_members_are_refused() {
    let cfg = config("[\"@d.test\"]");
    let a = aliases("x: ../../etc, a/b@d.test, .hidden\n");
    let e = expand(&cfg, &a, &["/etc/aliases"], "x@d.test");
    assert!(e.targets.is_empty(), "{:?}", e.targets);
    assert_eq!(e.problems.len(), 3);
    assert!(
        e.problems.iter().all(|p| p.dsn == "5.1.3"),
        "{:?}",
        e.problems
    );
}

#[test]
fn privileges_follow_the_owner_of_the_source() {
    let f = |uid, mode| FileFacts { uid, mode };
    // As root: the owner's uid (root is mapped to nobody when the command runs).
    assert_eq!(run_as_for(f(0, 0o100644), 0, &[]), Some(0));
    assert_eq!(run_as_for(f(1000, 0o100600), 0, &[]), Some(1000));
    // Group- or world-writable: refused whoever owns it.
    assert_eq!(run_as_for(f(0, 0o100664), 0, &[]), None);
    assert_eq!(run_as_for(f(0, 0o100646), 0, &[]), None);
    // Unprivileged agent (uid 500): trusted owners only, and it runs as itself.
    assert_eq!(run_as_for(f(0, 0o100644), 500, &[0, 500]), Some(500));
    assert_eq!(run_as_for(f(1000, 0o100644), 500, &[0, 500]), None);
}

#[test]
fn forward_files_must_be_the_accounts_own() {
    let f = |uid, mode| FileFacts { uid, mode };
    assert!(forward_usable(f(1000, 0o100644), 1000).is_ok());
    assert!(
        forward_usable(f(0, 0o100644), 1000).is_err(),
        "root's file in a user's home"
    );
    assert!(forward_usable(f(1001, 0o100644), 1000).is_err());
    let e = forward_usable(f(1000, 0o100666), 1000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("world-writable"), "{e}");
}

#[test]
fn backslash_names_the_mailbox_without_expansion() {
    let cfg = config("[\"@d.test\"]");
    let a = aliases("alice: \\alice, x@far.test\n");
    let e = expand(&cfg, &a, &[], "alice@d.test");
    assert_eq!(
        e.targets,
        vec![mb("alice", "d.test"), Target::Forward("x@far.test".into())]
    );
}
