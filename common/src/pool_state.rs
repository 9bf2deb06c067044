//! Two small files `sloopd` keeps in `server.run_dir` about its smtpd pool.
//!
//! - `overload` exists only while the pool is overloaded (every worker busy at
//!   `smtpd.max_processes`). Lines: `since <unix seconds>`, then one `over <address>`
//!   per client address that holds more than its share of busy workers. Workers read
//!   it when `sloopd` sends them `SIGWINCH` (pool_proto.rs): in overload a session
//!   waiting for a command gets `smtpd.overload_idle_timeout`, and one from an address
//!   listed `over` gets [`OVER_SHARE_IDLE`] (its idle sessions are cut first).
//! - `sloopd.status`: the pool's counts for `sloop status`, rewritten at most once a
//!   second while they change; `key=value` lines.
//!
//! Both are written to a temporary name and renamed, so a reader sees a whole file or
//! the previous one. Parsing is lenient: an unknown or malformed line is skipped (the
//! reader may be older or newer than the writer); a file that cannot be read means "no
//! overload" to a worker, which then keeps its normal timeouts.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the overload file in `server.run_dir`.
pub const OVERLOAD_FILE: &str = "overload";
/// The run directory's subdirectory of per-client session slots (`server.user`'s).
pub const RUN_CLIENTS: &str = "clients";
/// The run directory's subdirectory of state the unprivileged daemons share
/// (`server.user`'s; the run directory itself is root's): AUTH failure counts, the
/// low-spool marker.
pub const RUN_PRIVATE: &str = "private";
/// Name of the status file in `server.run_dir`.
pub const STATUS_FILE: &str = "sloopd.status";
/// Silence after which a session from an address over its share is cut in overload.
pub const OVER_SHARE_IDLE: Duration = Duration::from_secs(1);

/// What the overload file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overload {
    /// Unix seconds when the overload began.
    pub since: u64,
    /// Addresses holding more than their share of busy workers.
    pub over_share: Vec<IpAddr>,
}

impl Overload {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!("since {}\n", self.since);
        for ip in &self.over_share {
            s.push_str(&format!("over {ip}\n"));
        }
        s
    }

    /// Reads the text back; unknown lines are skipped.
    pub fn parse(text: &str) -> Overload {
        let mut o = Overload::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("since", v)) => o.since = v.trim().parse().unwrap_or(0),
                Some(("over", v)) => o.over_share.extend(v.trim().parse::<IpAddr>().ok()),
                _ => {}
            }
        }
        o
    }

    /// Reads `<run_dir>/overload`: `None` when there is no overload (or the file
    /// cannot be read).
    pub fn read(run_dir: &Path) -> Option<Overload> {
        let text = std::fs::read_to_string(run_dir.join(OVERLOAD_FILE)).ok()?;
        Some(Overload::parse(&text))
    }
}

/// The pool as `sloop status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// `sloopd`'s pid.
    pub pid: u32,
    /// Unix seconds of the last update.
    pub updated: u64,
    pub busy: usize,
    pub idle: usize,
    pub starting: usize,
    pub retiring: usize,
    /// `smtpd.max_processes`.
    pub limit: usize,
    /// Unix seconds since when the pool is overloaded; `None` when it is not.
    pub overload_since: Option<u64>,
    /// Connections the busy acceptor holds for a worker.
    pub waiting: usize,
    /// Connections the busy acceptor answered with 421 4.3.2 since sloopd started.
    pub refused_busy: u64,
}

impl PoolStatus {
    /// The file's text.
    pub fn render(&self) -> String {
        let since = self
            .overload_since
            .map_or_else(|| "-".to_string(), |t| t.to_string());
        format!(
            "pid={}\nupdated={}\nbusy={}\nidle={}\nstarting={}\nretiring={}\nlimit={}\n\
             overload_since={since}\nwaiting={}\nrefused_busy={}\n",
            self.pid,
            self.updated,
            self.busy,
            self.idle,
            self.starting,
            self.retiring,
            self.limit,
            self.waiting,
            self.refused_busy
        )
    }

    /// Reads the text back; unknown or malformed lines are skipped.
    pub fn parse(text: &str) -> PoolStatus {
        let mut p = PoolStatus::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let n = v.trim().parse::<u64>().ok();
            let count = n.map(|n| n as usize);
            match k {
                "pid" => p.pid = n.unwrap_or(0) as u32,
                "updated" => p.updated = n.unwrap_or(0),
                "busy" => p.busy = count.unwrap_or(0),
                "idle" => p.idle = count.unwrap_or(0),
                "starting" => p.starting = count.unwrap_or(0),
                "retiring" => p.retiring = count.unwrap_or(0),
                "limit" => p.limit = count.unwrap_or(0),
                "overload_since" => p.overload_since = n,
                "waiting" => p.waiting = count.unwrap_or(0),
                "refused_busy" => p.refused_busy = n.unwrap_or(0),
                _ => {}
            }
        }
        p
    }
}

/// Writes `text` to `<dir>/<name>` through a temporary name and a rename (mode 0644:
/// workers running as another user read it). Not fsync'd: the files describe a
/// running process and mean nothing after a crash.
pub fn write_atomically(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overload_round_trips_and_skips_garbage() {
        let o = Overload {
            since: 1_700_000_000,
            over_share: vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()],
        };
        assert_eq!(Overload::parse(&o.render()), o);
        let odd = "since 5\nover not-an-ip\nnew-key 1\nover 10.0.0.1\n";
        let got = Overload::parse(odd);
        assert_eq!(got.since, 5);
        assert_eq!(got.over_share, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn status_round_trips() {
        let s = PoolStatus {
            pid: 42,
            updated: 7,
            busy: 100,
            idle: 0,
            starting: 0,
            retiring: 1,
            limit: 100,
            overload_since: Some(6),
            waiting: 3,
            refused_busy: 9,
        };
        assert_eq!(PoolStatus::parse(&s.render()), s);
        let calm = PoolStatus {
            overload_since: None,
            ..s
        };
        assert_eq!(PoolStatus::parse(&calm.render()), calm);
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("pool-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, OVERLOAD_FILE, "since 1\n").unwrap();
        write_atomically(&dir, OVERLOAD_FILE, "since 2\nover 127.0.0.9\n").unwrap();
        let o = Overload::read(&dir).unwrap();
        assert_eq!(o.since, 2);
        assert_eq!(o.over_share.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Overload::read(&dir), None);
    }
}
