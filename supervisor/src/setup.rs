//! What `sloopd` prepares before it starts children: the spool layout, the run
//! directory and the mailbox root with the owners and modes of docs/security.md, the
//! unprivileged credentials children run with, and the pid file.
//!
//! `sloopd` runs as root, and the directories it sets up are written by the
//! unprivileged `server.user`: so it changes owners and modes only on the names it
//! knows (the spool's [`LAYOUT`], `clients/` in the run directory), each through a
//! descriptor opened relative to its parent with `O_NOFOLLOW` (`secure_fs`). A symlink
//! in place of one of those names is an error; anything else in the spool is never
//! looked at. The spool root and the run directory are root's, so nothing running as
//! `server.user` can plant a name where `sloopd` creates one (the pid file).
//!
//! What can go wrong: a directory cannot be created, opened or changed (a symlink, a
//! file where a directory belongs), the user does not exist, the pid file cannot be
//! written. Each is a [`SetupError`] naming the path or user; `main` turns it into a log
//! line and an exit code. A pid file left behind by a crash is simply replaced; on exit
//! it is removed only if it still names us.

use nix::unistd::{Gid, Group, Uid, User};
use sloop_common::pool_state::{RUN_CLIENTS, RUN_PRIVATE};
use sloop_common::secure_fs::{self, EntryKind};
use sloop_common::spool::{LayoutGroup, LAYOUT, ROOT_MODE};
use sloop_common::Config;
use std::fmt;
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the run directory and of the spool root (both root's).
const RUN_DIR_MODE: u32 = 0o755;
/// Mode of directories only the unprivileged user uses.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the pid file.
const PID_FILE_MODE: u32 = 0o644;

/// A failure while preparing to run.
#[derive(Debug)]
pub enum SetupError {
    Layout {
        path: PathBuf,
        source: std::io::Error,
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
            SetupError::Layout { path, source } => {
                write!(f, "cannot set up {}: {source}", path.display())
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

/// The local submission group (`server.drop_group`), when it exists.
pub fn drop_gid(cfg: &Config) -> Option<Gid> {
    if cfg.server.drop_group.is_empty() {
        return None;
    }
    Group::from_name(&cfg.server.drop_group)
        .ok()
        .flatten()
        .map(|g| g.gid)
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

/// A warning for the log when privileges are dropped but the submission group is
/// missing: then only root and the spool owner can submit local mail.
pub fn drop_group_note(cfg: &Config, creds: Option<(Uid, Gid)>) -> Option<String> {
    (creds.is_some() && drop_gid(cfg).is_none()).then(|| {
        format!(
            "server.drop_group={:?}: no such group; local users other than root cannot \
             submit mail with sendmail until it exists (groupadd it and reload)",
            cfg.server.drop_group
        )
    })
}

/// Creates the spool layout, the run dir and the mailbox root, and gives each entry
/// the owner and mode of docs/security.md (owners only when `creds` is set).
pub fn prepare_dirs(cfg: &Config, creds: Option<(Uid, Gid)>) -> Result<(), SetupError> {
    let drop = creds.and(drop_gid(cfg));
    prepare_spool(&cfg.server.spool_dir, creds, drop)?;
    prepare_run_dir(&cfg.server.run_dir, creds)?;
    prepare_mailbox_root(&cfg.local.mailbox_root, creds)
}

/// root:root for the entries that stay root's, when we hand anything out at all.
fn root_owner(creds: Option<(Uid, Gid)>) -> Option<(Uid, Gid)> {
    creds.map(|_| (Uid::from_raw(0), Gid::from_raw(0)))
}

fn layout_err(path: &Path) -> impl Fn(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Layout {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents, which come from root's config) with `mode` when
/// missing, and opens it without following a symlink.
fn make_and_open(dir: &Path, mode: u32) -> Result<File, SetupError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(layout_err(dir))?;
    secure_fs::open_dir(dir).map_err(layout_err(dir))
}

fn prepare_spool(
    root: &Path,
    creds: Option<(Uid, Gid)>,
    drop: Option<Gid>,
) -> Result<(), SetupError> {
    let root_dir = make_and_open(root, ROOT_MODE)?;
    secure_fs::set_owner_mode(&root_dir, root_owner(creds), ROOT_MODE).map_err(layout_err(root))?;
    let mut dirs: Vec<(&str, File)> = Vec::new();
    for e in LAYOUT {
        let path = root.join(e.name);
        let (parent, leaf) = match e.name.rsplit_once('/') {
            Some((p, leaf)) => match dirs.iter().find(|(n, _)| *n == p) {
                Some((_, f)) => (f, leaf),
                None => continue, // LAYOUT lists parents first; a test checks it.
            },
            None => (&root_dir, e.name),
        };
        let f = secure_fs::ensure_at(parent, leaf, e.kind, e.mode).map_err(layout_err(&path))?;
        let owner = creds.map(|(uid, gid)| match e.group {
            LayoutGroup::Owner => (uid, gid),
            LayoutGroup::Drop => (uid, drop.unwrap_or(gid)),
        });
        secure_fs::set_owner_mode(&f, owner, e.mode).map_err(layout_err(&path))?;
        if e.kind == EntryKind::Dir {
            dirs.push((e.name, f));
        }
    }
    root_dir.sync_all().map_err(layout_err(root))
}

/// The run directory stays root's (the pid file lives there); `clients/` (per-client
/// session slots) and `private/` (state the unprivileged daemons share: AUTH failure
/// counts, the low-spool marker) inside it are `server.user`'s.
fn prepare_run_dir(run_dir: &Path, creds: Option<(Uid, Gid)>) -> Result<(), SetupError> {
    let dir = make_and_open(run_dir, RUN_DIR_MODE)?;
    secure_fs::set_owner_mode(&dir, root_owner(creds), RUN_DIR_MODE)
        .map_err(layout_err(run_dir))?;
    for name in [RUN_CLIENTS, RUN_PRIVATE] {
        let path = run_dir.join(name);
        let f = secure_fs::ensure_at(&dir, name, EntryKind::Dir, PRIVATE_DIR_MODE)
            .map_err(layout_err(&path))?;
        secure_fs::set_owner_mode(&f, creds, PRIVATE_DIR_MODE).map_err(layout_err(&path))?;
    }
    Ok(())
}

/// The root of the virtual Maildirs belongs to the unprivileged user. Its mode is set
/// when we create it; an existing one keeps the mode its operator gave it.
fn prepare_mailbox_root(dir: &Path, creds: Option<(Uid, Gid)>) -> Result<(), SetupError> {
    let existed = dir.exists();
    let f = make_and_open(dir, PRIVATE_DIR_MODE)?;
    let mode = if existed {
        f.metadata().map_err(layout_err(dir))?.permissions().mode() & 0o7777
    } else {
        PRIVATE_DIR_MODE
    };
    secure_fs::set_owner_mode(&f, creds, mode).map_err(layout_err(dir))
}

/// The pid file `<run_dir>/sloopd.pid`, removed on drop if it still names this process.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes the current pid via a temporary file created with `O_CREAT | O_EXCL |
    /// O_NOFOLLOW` and a rename (which replaces a name, never follows it), so readers
    /// never see a partial file.
    pub fn create(run_dir: &Path) -> Result<PidFile, SetupError> {
        let path = run_dir.join("sloopd.pid");
        let pid = std::process::id();
        let tmp = run_dir.join(format!(".sloopd.pid.{pid}"));
        let write = || -> std::io::Result<()> {
            // Left by a crash of a process with our pid; the run directory is root's,
            // so nobody else can have planted it.
            let _ = std::fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(PID_FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.set_permissions(Permissions::from_mode(PID_FILE_MODE))?;
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
        let cfg = config(&d);
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

    fn config(d: &Path) -> Config {
        let cfg_text = format!(
            "[server]\nspool_dir = \"{0}/spool\"\nrun_dir = \"{0}/run\"\n\
             [local]\nmailbox_root = \"{0}/mail\"\n",
            d.display()
        );
        Config::parse(&d.join("sloop.toml"), &cfg_text).unwrap()
    }

    #[test]
    fn the_layout_lists_parents_before_children() {
        for (i, e) in LAYOUT.iter().enumerate() {
            if let Some((parent, _)) = e.name.rsplit_once('/') {
                assert!(LAYOUT[..i].iter().any(|p| p.name == parent), "{}", e.name);
            }
        }
    }

    #[test]
    fn modes_are_explicit_whatever_the_umask() {
        use std::os::unix::fs::MetadataExt;
        let d = temp_dir("modes");
        let cfg = config(&d);
        prepare_dirs(&cfg, None).unwrap();
        let mode = |sub: &str| std::fs::metadata(d.join(sub)).unwrap().mode() & 0o7777;
        assert_eq!(mode("spool"), 0o755);
        assert_eq!(mode("spool/incoming"), 0o700);
        assert_eq!(mode("spool/status"), 0o700);
        assert_eq!(mode("spool/free/3"), 0o700);
        assert_eq!(mode("spool/trigger"), 0o600);
        assert_eq!(mode("spool/maildrop"), 0o1730);
        assert_eq!(mode("spool/public"), 0o710);
        assert_eq!(mode("spool/public/pickup"), 0o620);
        assert_eq!(mode("run"), 0o755);
        assert_eq!(mode("run/clients"), 0o700);
        let pf = PidFile::create(&d.join("run")).unwrap();
        assert_eq!(mode("run/sloopd.pid"), 0o644);
        drop(pf);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_planted_in_place_of_a_layout_entry_is_refused_not_followed() {
        use std::os::unix::fs::MetadataExt;
        let d = temp_dir("planted");
        let cfg = config(&d);
        prepare_dirs(&cfg, None).unwrap();
        let victim = d.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, Permissions::from_mode(0o751)).unwrap();
        std::fs::remove_dir(d.join("spool/free/7")).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("spool/free/7")).unwrap();
        let e = prepare_dirs(&cfg, None).unwrap_err();
        assert!(e.to_string().contains("free/7"), "{e}");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o751);
        // A name the layout does not know is never looked at.
        std::fs::remove_file(d.join("spool/free/7")).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("spool/evil")).unwrap();
        prepare_dirs(&cfg, None).unwrap();
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o751);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_unprivileged_user_owns_what_it_writes_and_root_keeps_the_rest() {
        use std::os::unix::fs::MetadataExt;
        if !Uid::effective().is_root() {
            return; // chown needs root; CI runs the tests as root.
        }
        let d = temp_dir("owned");
        let cfg = config(&d);
        let (uid, gid) = (Uid::from_raw(65534), Gid::from_raw(65534));
        prepare_dirs(&cfg, Some((uid, gid))).unwrap();
        let owner = |sub: &str| {
            let m = std::fs::metadata(d.join(sub)).unwrap();
            (m.uid(), m.gid())
        };
        for sub in [
            "spool/tmp",
            "spool/incoming",
            "spool/free",
            "spool/free/0",
            "spool/free/f",
            "spool/trigger",
            "spool/corrupt",
            "run/clients",
            "mail",
        ] {
            assert_eq!(owner(sub), (65534, 65534), "{sub}");
        }
        assert_eq!(owner("spool"), (0, 0));
        assert_eq!(owner("run"), (0, 0));
        assert_eq!(owner("spool/maildrop").0, 65534);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
