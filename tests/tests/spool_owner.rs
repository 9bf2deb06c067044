//! The spool module owns the on-disk protocol: no code outside `common/src/spool/`
//! renames, fsyncs, sets times on or appends to files in the spool
//! (docs/architecture.md, "The queue manager"). This scans the source tree for the
//! raw calls that do so (calling the spool module's own functions, such as
//! `Spool::move_to`, is how the rest of the code changes the spool). The mailbox writers of local delivery and the supervisor's pid
//! file work outside the spool and are listed by name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// The calls that change a spool on disk.
const CALLS: &[&str] = &[
    "rename(",
    "renameat",
    "sync_all(",
    "sync_data(",
    "fsync_dir(",
    "set_modified(",
    "set_times(",
    ".append(true)",
];

/// Files outside the spool module allowed to make such calls, and why.
const OUTSIDE_THE_SPOOL: &[&str] = &[
    // Mailboxes: Maildir and mbox writes under local.mailbox_root.
    "delivery/src/local/maildir.rs",
    "delivery/src/local/mbox.rs",
    // Local accounts' mailboxes (/var/mail/USER, ~/Maildir), written as the account.
    "delivery/src/local/account.rs",
    // sloopd's pid file in server.run_dir.
    "supervisor/src/setup.rs",
    // sloopd's status file (pool, overload) in server.run_dir.
    "common/src/pool_state.rs",
    // The AUTH password file (auth.password_file), rewritten by `sloop passwd`.
    "common/src/passwd.rs",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)]` modules.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = line.split("//").next().unwrap_or("");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn only_the_spool_module_changes_the_spool() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["common", "smtpd", "queue-manager", "delivery", "supervisor"] {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 20, "the source tree was not found");
    let mut offenders = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.starts_with("common/src/spool/") || OUTSIDE_THE_SPOOL.contains(&rel.as_str()) {
            continue;
        }
        let text = code(&std::fs::read_to_string(f).unwrap());
        for (n, line) in text.lines().enumerate() {
            for call in CALLS {
                if line.contains(call) {
                    offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "spool changes outside common/src/spool/ (route them through the spool's \
         executor, spool/writer.rs):\n{}",
        offenders.join("\n")
    );
}
