//! What `sloopd` prepares before it starts children: the spool layout, the run
//! directory and the mailbox root (owned by `server.user` when one is set and we are
//! root), the unprivileged credentials children run with, and the pid file.
//!
//! What can go wrong: a directory cannot be created or chowned, the user does not
//! exist, the pid file cannot be written. Each is a [`SetupError`] naming the path or
//! user; `main` turns it into a log line and an exit code. A pid file left behind by a
//! crash is simply overwritten; on exit it is removed only if it still names us.

use nix::unistd::{chown, Gid, Uid, User};
use sloop_common::spool::{pool, Spool};
use sloop_common::Config;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A failure while preparing to run.
#[derive(Debug)]
pub enum SetupError {
    Dir {
        path: PathBuf,
        source: String,
    },
    Chown {
        path: PathBuf,
        source: nix::Error,
    },
    NoSuchUser(String),
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Dir { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            SetupError::Chown { path, source } => {
                write!(f, "cannot chown {}: {}", path.display(), source.desc())
            }
            SetupError::NoSuchUser(u) => write!(f, "server.user: no such user {u:?}"),
            SetupError::PidFile { path, source } => {
                write!(f, "cannot write pid file {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for SetupError {}

/// The user and group children run as, when privileges are to be dropped.
pub fn credentials(cfg: &Config) -> Result<Option<(Uid, Gid)>, SetupError> {
    if cfg.server.user.is_empty() {
        return Ok(None);
    }
    if !Uid::effective().is_root() {
        // The caller says so in the log (see `user_note`).
        return Ok(None);
    }
    match User::from_name(&cfg.server.user) {
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        _ => Err(SetupError::NoSuchUser(cfg.server.user.clone())),
    }
}

/// A warning for the log when `server.user` is set but cannot be applied.
pub fn user_note(cfg: &Config, creds: Option<(Uid, Gid)>) -> Option<String> {
    (!cfg.server.user.is_empty() && creds.is_none()).then(|| {
        format!(
            "server.user={} ignored: sloopd is not running as root",
            cfg.server.user
        )
    })
}

/// Creates the spool layout, the run dir and the mailbox root; hands them to the
/// unprivileged user when there is one.
pub fn prepare_dirs(cfg: &Config, creds: Option<(Uid, Gid)>) -> Result<(), SetupError> {
    let spool = Spool::new(&cfg.server.spool_dir);
    spool.ensure_layout().map_err(|e| SetupError::Dir {
        path: cfg.server.spool_dir.clone(),
        source: e.to_string(),
    })?;
    for dir in [&cfg.server.run_dir, &cfg.local.mailbox_root] {
        std::fs::create_dir_all(dir).map_err(|e| SetupError::Dir {
            path: dir.clone(),
            source: e.to_string(),
        })?;
    }
    let Some((uid, gid)) = creds else {
        return Ok(());
    };
    let mut owned = vec![
        cfg.server.spool_dir.clone(),
        cfg.server.run_dir.clone(),
        cfg.local.mailbox_root.clone(),
    ];
    // The layout's own entries (state directories, status/, tmp/, trigger FIFO); the
    // message files inside are written by the children themselves.
    if let Ok(rd) = std::fs::read_dir(&cfg.server.spool_dir) {
        owned.extend(rd.flatten().map(|e| e.path()));
    }
    // And the pool's subdirectories (free/0..f), where the children move finished files.
    owned.extend((0..pool::POOL_DIRS).map(|i| pool::pool_dir(&spool, i)));
    for path in owned {
        chown(&path, Some(uid), Some(gid)).map_err(|source| SetupError::Chown { path, source })?;
    }
    Ok(())
}

/// The pid file `<run_dir>/sloopd.pid`, removed on drop if it still names this process.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes the current pid (via a temporary file and a rename, so readers never see
    /// a partial file).
    pub fn create(run_dir: &Path) -> Result<PidFile, SetupError> {
        let path = run_dir.join("sloopd.pid");
        let pid = std::process::id();
        let tmp = run_dir.join(format!(".sloopd.pid.{pid}"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{pid}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            SetupError::PidFile {
                path: path.clone(),
                source,
            }
        })?;
        Ok(PidFile { path, pid })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .map(|s| s.trim() == self.pid.to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Raises the soft limit on open descriptors to the hard limit (each connection the
/// busy acceptor holds is one descriptor; children inherit the limit). Returns the
/// soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return hard,
            Err(e) => log::warn!("cannot raise the descriptor limit from {soft} to {hard}: {e}"),
        }
    }
    soft
}

/// How many connections the busy acceptor may hold with `fd_limit` descriptors: all
/// but a reserve for `sloopd`'s own files, pipes and children.
pub fn acceptor_cap(fd_limit: u64) -> usize {
    const RESERVE: u64 = 256;
    const MOST: u64 = 100_000;
    fd_limit.saturating_sub(RESERVE).clamp(16, MOST) as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sloopd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_pid_file_names_us_and_goes_away() {
        let d = temp_dir("pid");
        let pf = PidFile::create(&d).unwrap();
        let text = std::fs::read_to_string(pf.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let path = pf.path().to_path_buf();
        drop(pf);
        assert!(!path.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_pid_file_rewritten_by_someone_else_is_left_alone() {
        let d = temp_dir("pid-other");
        let pf = PidFile::create(&d).unwrap();
        std::fs::write(pf.path(), "1\n").unwrap();
        let path = pf.path().to_path_buf();
        drop(pf);
        assert!(path.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn directories_are_created() {
        let d = temp_dir("dirs");
        let cfg_text = format!(
            "[server]\nspool_dir = \"{0}/spool\"\nrun_dir = \"{0}/run\"\n\
             [local]\nmailbox_root = \"{0}/mail\"\n",
            d.display()
        );
        let cfg = Config::parse(&d.join("sloop.toml"), &cfg_text).unwrap();
        assert_eq!(credentials(&cfg).unwrap(), None);
        prepare_dirs(&cfg, None).unwrap();
        for sub in [
            "spool/incoming",
            "spool/deferred",
            "spool/free/f",
            "run",
            "mail",
        ] {
            assert!(d.join(sub).is_dir(), "{sub}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_unprivileged_user_owns_every_spool_directory_it_writes() {
        use std::os::unix::fs::MetadataExt;
        if !Uid::effective().is_root() {
            return; // chown needs root; CI runs the tests as root.
        }
        let d = temp_dir("owned");
        let cfg_text = format!(
            "[server]\nspool_dir = \"{0}/spool\"\nrun_dir = \"{0}/run\"\n\
             [local]\nmailbox_root = \"{0}/mail\"\n",
            d.display()
        );
        let cfg = Config::parse(&d.join("sloop.toml"), &cfg_text).unwrap();
        let (uid, gid) = (Uid::from_raw(65534), Gid::from_raw(65534));
        prepare_dirs(&cfg, Some((uid, gid))).unwrap();
        for sub in [
            "spool",
            "spool/tmp",
            "spool/incoming",
            "spool/free",
            "spool/free/0",
            "spool/free/f",
        ] {
            let m = std::fs::metadata(d.join(sub)).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{sub}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
