//! The spool: one directory tree, one file per message, and the state of a message is
//! the directory its file is in (qmail INTERNALS; docs/architecture.md §3).
//!
//! ```text
//! spool/
//!   tmp/        queue files being written by sloop-queue (removed at qmgr start once
//!               their writer is dead)
//!   incoming/   committed, not yet picked up; the rename into here is the commit point
//!   active/     the queue manager is working on these
//!   deferred/   waiting for their next attempt (the file's mtime is that time)
//!   hold/       put on hold by an operator
//!   status/     per-recipient results of each message, an append-only log (status.rs)
//!   free/0..f/  finished queue files kept for reuse by the next commit (pool.rs)
//!   trigger     FIFO: a byte after each commit wakes the queue manager
//!   maildrop/   local submissions written by sloop-drop, taken by sloop-pickup
//!   public/     pickup FIFO and showq socket, reachable by the submission group
//!   corrupt/    maildrop files that did not pass sloop-pickup's checks
//!   lock/workers  held (shared) by every delivery worker while it runs (workers.rs)
//! ```
//!
//! Owners and modes are in [`LAYOUT`] and docs/security.md; `sloopd` applies them.
//!
//! A queue file is the message followed by its envelope (envelope.rs), written and
//! fsync'd once, so a commit costs one file fsync and one directory fsync. Every move
//! between states is one `rename(2)` followed by an fsync of the target directory.

pub mod envelope;
pub mod inject;
pub mod maildrop;
pub mod pool;
pub mod queue_id;
pub mod space;
pub mod status;
pub mod workers;
pub mod writer;

pub use envelope::{Envelope, EnvelopeError, Recipient, Ret};
pub use inject::{commit, InjectError};
pub use queue_id::QueueId;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The states a committed message can be in, one directory each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    Incoming,
    Active,
    Deferred,
    Hold,
}

impl QueueState {
    pub const ALL: [QueueState; 4] = [
        QueueState::Incoming,
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Hold,
    ];

    /// The directory name under the spool.
    pub fn dir(self) -> &'static str {
        match self {
            QueueState::Incoming => "incoming",
            QueueState::Active => "active",
            QueueState::Deferred => "deferred",
            QueueState::Hold => "hold",
        }
    }
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// The group an entry of the layout belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutGroup {
    /// The spool owner's group (`server.user`'s).
    Owner,
    /// The local submission group (`server.drop_group`).
    Drop,
}

/// One entry of the spool layout: a path relative to the spool (a parent comes before
/// its children), what it is, its mode and its group. Every entry is owned by the
/// spool owner; the spool root itself is root's, mode [`ROOT_MODE`].
#[derive(Debug, Clone, Copy)]
pub struct LayoutEntry {
    pub name: &'static str,
    pub kind: crate::secure_fs::EntryKind,
    pub mode: u32,
    pub group: LayoutGroup,
}

/// Mode of the spool root (owner root when `sloopd` runs as root).
pub const ROOT_MODE: u32 = 0o755;

const fn entry(
    name: &'static str,
    kind: crate::secure_fs::EntryKind,
    mode: u32,
    group: LayoutGroup,
) -> LayoutEntry {
    LayoutEntry {
        name,
        kind,
        mode,
        group,
    }
}

use crate::secure_fs::EntryKind::{Dir, Fifo};
use LayoutGroup::{Drop as DropGroup, Owner};

/// The spool's fixed entries (docs/security.md, "The spool").
pub const LAYOUT: &[LayoutEntry] = &[
    entry("tmp", Dir, 0o700, Owner),
    entry("incoming", Dir, 0o700, Owner),
    entry("active", Dir, 0o700, Owner),
    entry("deferred", Dir, 0o700, Owner),
    entry("hold", Dir, 0o700, Owner),
    entry("status", Dir, 0o700, Owner),
    entry("corrupt", Dir, 0o700, Owner),
    entry("free", Dir, 0o700, Owner),
    entry("free/0", Dir, 0o700, Owner),
    entry("free/1", Dir, 0o700, Owner),
    entry("free/2", Dir, 0o700, Owner),
    entry("free/3", Dir, 0o700, Owner),
    entry("free/4", Dir, 0o700, Owner),
    entry("free/5", Dir, 0o700, Owner),
    entry("free/6", Dir, 0o700, Owner),
    entry("free/7", Dir, 0o700, Owner),
    entry("free/8", Dir, 0o700, Owner),
    entry("free/9", Dir, 0o700, Owner),
    entry("free/a", Dir, 0o700, Owner),
    entry("free/b", Dir, 0o700, Owner),
    entry("free/c", Dir, 0o700, Owner),
    entry("free/d", Dir, 0o700, Owner),
    entry("free/e", Dir, 0o700, Owner),
    entry("free/f", Dir, 0o700, Owner),
    entry("trigger", Fifo, 0o600, Owner),
    entry("lock", Dir, 0o700, Owner),
    entry("maildrop", Dir, 0o1730, DropGroup),
    entry("public", Dir, 0o710, DropGroup),
    entry("public/pickup", Fifo, 0o620, DropGroup),
];

/// An error touching the spool, with the path involved.
#[derive(Debug)]
pub struct SpoolError {
    pub path: PathBuf,
    pub action: &'static str,
    pub source: io::Error,
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for SpoolError {}

/// Attaches a path and an action to an I/O error.
pub(crate) fn ctx<T>(r: io::Result<T>, action: &'static str, path: &Path) -> Result<T, SpoolError> {
    r.map_err(|source| SpoolError {
        path: path.to_path_buf(),
        action,
        source,
    })
}

/// A handle on a spool directory.
///
/// Clones share one [`WriterState`]: what a writing process remembers between commits
/// (the open trigger FIFO, the recycling pool's names, the low-space state, whether the
/// layout was checked). A long-lived process keeps one handle (the smtpd worker's is in
/// its `Policy`); a fresh handle starts with nothing remembered.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    state: std::sync::Arc<WriterState>,
}

/// What one process remembers about a spool between its writes, so that a busy writer
/// does not open the FIFO, list `free/` or check the layout for every message.
#[derive(Default)]
pub struct WriterState {
    /// The trigger FIFO, open for writing (see [`Spool::poke`]).
    trigger: std::sync::Mutex<Option<File>>,
    /// The names listed in `free/` and not claimed yet (pool.rs).
    pool: std::sync::Mutex<Option<pool::Names>>,
    /// The last free-space view: 0 unknown, 1 enough, 2 low (space.rs).
    space_seen: std::sync::atomic::AtomicU8,
    /// The layout was checked (and created where missing) since the last failure.
    layout_checked: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for WriterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterState").finish_non_exhaustive()
    }
}

impl Spool {
    pub fn new(root: impl Into<PathBuf>) -> Spool {
        Spool {
            root: root.into(),
            state: std::sync::Arc::default(),
        }
    }

    /// Checks the layout (creating what is missing) unless this handle already did
    /// since its last [`forget_layout`](Self::forget_layout).
    pub fn ensure_layout_once(&self) -> Result<(), SpoolError> {
        use std::sync::atomic::Ordering;
        if self.state.layout_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.exists() {
            self.ensure_layout()?;
        }
        self.state.layout_checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the next [`ensure_layout_once`](Self::ensure_layout_once) check again
    /// (after a failed commit: the layout may have been removed).
    pub fn forget_layout(&self) {
        self.state
            .layout_checked
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the layout is taken as checked (for tests of the callers).
    pub fn layout_checked(&self) -> bool {
        self.state
            .layout_checked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn writer_state(&self) -> &WriterState {
        &self.state
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn status_dir(&self) -> PathBuf {
        self.root.join("status")
    }

    /// Recycled queue files waiting for a writer (pool.rs).
    pub fn free_dir(&self) -> PathBuf {
        self.root.join("free")
    }

    pub fn state_dir(&self, state: QueueState) -> PathBuf {
        self.root.join(state.dir())
    }

    /// Path of message `id` in `state`.
    pub fn path(&self, state: QueueState, id: &str) -> PathBuf {
        self.state_dir(state).join(id)
    }

    pub fn trigger_path(&self) -> PathBuf {
        self.root.join("trigger")
    }

    /// Local submissions waiting for sloop-pickup (maildrop.rs).
    pub fn maildrop_dir(&self) -> PathBuf {
        self.root.join("maildrop")
    }

    /// Maildrop files that did not pass sloop-pickup's checks.
    pub fn corrupt_dir(&self) -> PathBuf {
        self.root.join("corrupt")
    }

    /// The FIFO that wakes sloop-pickup.
    pub fn pickup_fifo(&self) -> PathBuf {
        self.root.join("public").join("pickup")
    }

    /// The socket on which sloop-pickup answers queue listings (`mailq`).
    pub fn showq_socket(&self) -> PathBuf {
        self.root.join("public").join("showq")
    }

    /// Creates the directories and FIFOs of [`LAYOUT`] where missing (idempotent), each
    /// with its mode whatever the umask. Owners are `sloopd`'s business (it runs this
    /// layout through `secure_fs` instead); existing entries are left as they are.
    pub fn ensure_layout(&self) -> Result<(), SpoolError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(ROOT_MODE)
            .create(&self.root);
        ctx(made, "create directory", &self.root)?;
        for e in LAYOUT {
            let path = self.root.join(e.name);
            let created = match e.kind {
                Dir => match fs::DirBuilder::new().mode(e.mode).create(&path) {
                    Ok(()) => true,
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(err) => return ctx(Err(err), "create directory", &path),
                },
                Fifo => {
                    let mode = nix::sys::stat::Mode::from_bits_truncate(e.mode);
                    match nix::unistd::mkfifo(&path, mode) {
                        Ok(()) => true,
                        Err(nix::errno::Errno::EEXIST) => false,
                        Err(err) => return ctx(Err(io::Error::from(err)), "create FIFO", &path),
                    }
                }
            };
            if created {
                let perms = fs::Permissions::from_mode(e.mode);
                ctx(fs::set_permissions(&path, perms), "set the mode of", &path)?;
            }
        }
        fsync_dir(&self.root)
    }

    /// True when the layout exists (used by tools to give a clear error).
    pub fn exists(&self) -> bool {
        QueueState::ALL.iter().all(|s| self.state_dir(*s).is_dir())
    }

    /// Where message `id` is now, if anywhere.
    pub fn find(&self, id: &str) -> Option<(QueueState, PathBuf)> {
        if !queue_id::is_valid(id) {
            return None;
        }
        QueueState::ALL
            .iter()
            .map(|s| (*s, self.path(*s, id)))
            .find(|(_, p)| p.exists())
    }

    /// IDs in `state`, sorted (so oldest first).
    pub fn list(&self, state: QueueState) -> Result<Vec<String>, SpoolError> {
        let dir = self.state_dir(state);
        let mut ids = Vec::new();
        for entry in ctx(fs::read_dir(&dir), "read directory", &dir)? {
            let entry = ctx(entry, "read directory", &dir)?;
            if let Some(name) = entry.file_name().to_str() {
                if queue_id::is_valid(name) {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Moves `id` from one state to another: rename, then fsync the target directory.
    pub fn move_to(&self, id: &str, from: QueueState, to: QueueState) -> Result<(), SpoolError> {
        let src = self.path(from, id);
        let dst = self.path(to, id);
        ctx(fs::rename(&src, &dst), "rename", &src)?;
        fsync_dir(&self.state_dir(to))
    }

    /// Reads the envelope of the queue file at `path`.
    pub fn read_envelope(path: &Path) -> Result<Envelope, EnvelopeError> {
        let mut f =
            File::open(path).map_err(|e| EnvelopeError::Io(format!("{}: {e}", path.display())))?;
        Envelope::read_from(&mut f)
    }

    /// Removes a message for good: the queue file first (the message is gone once it is),
    /// then its status log.
    pub fn remove(&self, state: QueueState, id: &str) -> Result<(), SpoolError> {
        let path = self.path(state, id);
        ctx(fs::remove_file(&path), "remove", &path)?;
        fsync_dir(&self.state_dir(state))?;
        status::remove(self, id)
    }

    /// Writes one byte to the trigger FIFO without blocking. No reader, a full FIFO or a
    /// missing FIFO are not errors: the queue manager also scans periodically.
    ///
    /// The FIFO stays open in this handle's state for the next poke (a busy smtpd pokes
    /// once per message); a write that finds no reader (`EPIPE`: the queue manager
    /// restarted, or the FIFO was replaced) drops it and opens the FIFO again once.
    pub fn poke(&self) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut cached = self
            .state
            .trigger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..2 {
            if cached.is_none() {
                let opened = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(self.trigger_path());
                match opened {
                    Ok(f) => *cached = Some(f),
                    Err(_) => return,
                }
            }
            let Some(f) = cached.as_mut() else {
                return;
            };
            match f.write(b"!") {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => *cached = None,
                _ => return,
            }
        }
    }

    /// Removes `tmp/` files whose writer is no longer running, or that are older than
    /// `max_age` whatever their writer. Returns how many were removed.
    pub fn clean_tmp(&self, max_age: std::time::Duration) -> Result<usize, SpoolError> {
        let dir = self.tmp_dir();
        let mut removed = 0;
        for entry in ctx(fs::read_dir(&dir), "read directory", &dir)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let writer_alive = queue_id::creator_pid(&name).map(pid_alive).unwrap_or(false);
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map(|age| age > max_age)
                .unwrap_or(false);
            if (!writer_alive || old) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// True when a process with this pid exists (or may: `EPERM` counts as alive).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Gives `file`, just created in `dir`, the owner of `dir` when we run as root (a
/// delivery worker started as root for system users), so the queue manager, which
/// owns the spool, can still read and append to it. A no-op for everyone else.
pub(crate) fn own_like_dir(file: &File, dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let m = fs::metadata(dir)?;
    nix::unistd::fchown(
        file.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(m.uid())),
        Some(nix::unistd::Gid::from_raw(m.gid())),
    )
    .map_err(io::Error::from)
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    let f = ctx(File::open(dir), "open directory", dir)?;
    ctx(f.sync_all(), "fsync directory", dir)
}

/// The message content of a queue file: a reader limited to the message octets.
pub fn open_message(path: &Path) -> Result<(Envelope, io::Take<File>), EnvelopeError> {
    use std::io::{Seek, SeekFrom};
    let mut f =
        File::open(path).map_err(|e| EnvelopeError::Io(format!("{}: {e}", path.display())))?;
    let env = Envelope::read_from(&mut f)?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| EnvelopeError::Io(e.to_string()))?;
    let size = env.size;
    Ok((env, io::Read::take(f, size)))
}

#[cfg(test)]
mod tests;
