//! Failed AUTH attempts per client address, counted across every worker of the pool.
//!
//! The counts live in `<run_dir>/private/auth-failures`: one line per failure, `<address>
//! <unix time>`, kept under an exclusive `flock` while read and rewritten. Entries older
//! than `auth.failure_window` are dropped on every update and the file holds at most
//! [`MAX_ENTRIES`] lines (the oldest go first), so it stays small whatever an attacker
//! does. The file is opened without following symlinks and created mode 0600. An error
//! (the run directory unwritable) is returned to the caller, which refuses the attempt
//! with a temporary failure: a broken counter narrows access, never widens it.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Most failure records kept.
pub const MAX_ENTRIES: usize = 10_000;

/// The recent failures of `ip` (those newer than `now - window`).
pub fn count(run_dir: &Path, ip: IpAddr, now: i64, window: i64) -> io::Result<u32> {
    with_file(run_dir, |text| {
        let entries = parse(text);
        let n = recent(&entries, ip, now, window);
        (None, n)
    })
}

/// Records one failure of `ip`; returns its recent failures including this one.
pub fn record(run_dir: &Path, ip: IpAddr, now: i64, window: i64) -> io::Result<u32> {
    with_file(run_dir, |text| {
        let mut entries = parse(text);
        entries.retain(|(_, t)| *t > now - window);
        entries.push((ip, now));
        if entries.len() > MAX_ENTRIES {
            let drop = entries.len() - MAX_ENTRIES;
            entries.drain(..drop);
        }
        let n = recent(&entries, ip, now, window);
        (Some(render(&entries)), n)
    })
}

fn recent(entries: &[(IpAddr, i64)], ip: IpAddr, now: i64, window: i64) -> u32 {
    entries
        .iter()
        .filter(|(a, t)| *a == ip && *t > now - window)
        .count() as u32
}

/// Lines that do not parse are dropped (the file is ours; damage is not fatal).
fn parse(text: &str) -> Vec<(IpAddr, i64)> {
    text.lines()
        .filter_map(|l| {
            let (a, t) = l.split_once(' ')?;
            Some((a.parse().ok()?, t.trim().parse().ok()?))
        })
        .collect()
}

fn render(entries: &[(IpAddr, i64)]) -> String {
    let mut out = String::with_capacity(entries.len() * 24);
    for (a, t) in entries {
        out.push_str(&format!("{a} {t}\n"));
    }
    out
}

/// Runs `f` on the file's text under an exclusive lock; writes back what it returns.
fn with_file<T>(run_dir: &Path, f: impl FnOnce(&str) -> (Option<String>, T)) -> io::Result<T> {
    let path = run_dir
        .join(sloop_common::pool_state::RUN_PRIVATE)
        .join("auth-failures");
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut file =
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let (new_text, out) = f(&text);
    if let Some(t) = new_text {
        file.seek(SeekFrom::Start(0))?;
        file.set_len(0)?;
        file.write_all(t.as_bytes())?;
    }
    // The lock goes with the descriptor.
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn failures_count_per_address_within_the_window() {
        let dir = std::env::temp_dir().join(format!("sloop-authfail-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("private")).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(count(&dir, a, 1000, 60).unwrap(), 0);
        assert_eq!(record(&dir, a, 1000, 60).unwrap(), 1);
        assert_eq!(record(&dir, a, 1010, 60).unwrap(), 2);
        assert_eq!(record(&dir, b, 1010, 60).unwrap(), 1);
        assert_eq!(count(&dir, a, 1020, 60).unwrap(), 2);
        assert_eq!(
            count(&dir, a, 1065, 60).unwrap(),
            1,
            "the first one aged out"
        );
        assert_eq!(record(&dir, a, 2000, 60).unwrap(), 1);
        let text = std::fs::read_to_string(dir.join("private").join("auth-failures")).unwrap();
        assert_eq!(
            text, "192.0.2.1 2000\n",
            "old entries are dropped on update"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_lines_are_ignored() {
        assert_eq!(parse("junk\n1.2.3.4 x\n1.2.3.4 5\n").len(), 1);
    }
}
