//! The commit: how a message enters the queue (docs/architecture.md §3, invariant 1).
//!
//! 1. claim a recycled file in `free/` (locked where it lies, pool.rs), or create
//!    `tmp/<id>` with `O_EXCL` (a clash takes a new ID; run as root, the file is given
//!    to the owner of `tmp/`);
//! 2. stream the message into it, refusing more than the size limit;
//! 3. obtain the envelope (given up front by [`commit`], or read only now by
//!    [`commit_streaming`], as qmail-queue reads fd 1 after fd 0), append it as the
//!    trailer, then `fsync` the file;
//! 4. `rename` it to `incoming/<id>` and `fsync` `incoming/`: **the commit point**.
//!    A claimed file is renamed from `free/` directly, still under its lock. A
//!    message a filter put on hold (`Envelope::hold`) goes to `hold/` instead: the
//!    queue manager never sees it until an operator releases it;
//! 5. poke the trigger FIFO.
//!
//! Any failure before step 4 removes the temporary file (a claimed file stays in the
//! pool, garbage as before), so no partial message is ever visible; a crash before
//! step 4 leaves only a `tmp/` file that the queue manager removes, or a pool file. A
//! crash after the rename but before the directory fsync can lose the message only
//! together with the caller's acknowledgement, which waits for our return.

use super::{
    ctx, fsync_dir, pool, queue_id, Envelope, EnvelopeError, QueueState, Spool, SpoolError,
};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a message was not committed, with its retry class.
#[derive(Debug)]
pub enum InjectError {
    /// The message is larger than allowed (permanent).
    TooLarge { limit: u64 },
    /// The envelope cannot be stored (permanent).
    Envelope(EnvelopeError),
    /// Reading the message failed (temporary).
    ReadMessage(io::Error),
    /// The spool could not be written (temporary).
    Spool(SpoolError),
}

impl InjectError {
    /// True when retrying the same message cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            InjectError::TooLarge { .. }
                | InjectError::Envelope(EnvelopeError::Format(_) | EnvelopeError::AddressTooLong)
        )
    }
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::TooLarge { limit } => {
                write!(f, "message larger than the limit of {limit} octets")
            }
            InjectError::Envelope(e) => write!(f, "{e}"),
            InjectError::ReadMessage(e) => write!(f, "cannot read message: {e}"),
            InjectError::Spool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InjectError {}

impl From<SpoolError> for InjectError {
    fn from(e: SpoolError) -> Self {
        InjectError::Spool(e)
    }
}

/// Commits `message` with `envelope` (whose `id`, `arrival` and `size` are filled in
/// here) into `spool`, and returns the queue ID. `max_size` of 0 means no limit.
pub fn commit<R: Read>(
    spool: &Spool,
    message: &mut R,
    envelope: Envelope,
    max_size: u64,
) -> Result<String, InjectError> {
    envelope.validate().map_err(InjectError::Envelope)?;
    commit_streaming(spool, message, || Ok(envelope), max_size, None)
}

/// The commit for callers whose envelope arrives after the message (the qmail-queue
/// contract: message on fd 0 read to EOF first, then the envelope on fd 1).
///
/// The message streams into `tmp/`; then `envelope_fn` is called (its error, or an
/// envelope that fails validation, removes the temporary file and is returned as
/// [`InjectError::Envelope`]); then the trailer is appended, the file fsync'd, renamed
/// into `incoming/` (never replacing a file there) and the directory fsync'd.
/// `preset_id`, when it is a valid queue ID not already in the spool, is used as the ID
/// (the smtpd names the message in its `Received` header before queueing); otherwise a
/// new ID is taken.
pub fn commit_streaming<R: Read>(
    spool: &Spool,
    message: &mut R,
    envelope_fn: impl FnOnce() -> Result<Envelope, EnvelopeError>,
    max_size: u64,
    preset_id: Option<&str>,
) -> Result<String, InjectError> {
    commit_with(spool, preset_id, |file, recycled, id, path| {
        write_and_sync(file, recycled, message, envelope_fn, id, max_size, path)
    })
}

/// The commit for a message already in memory (the smtpd's in-process commit): as
/// [`commit`], but the octets and the trailer go to the file in one `writev` with no
/// intermediate buffer. `preset_id` as for [`commit_streaming`].
pub fn commit_bytes(
    spool: &Spool,
    message: &[u8],
    envelope: Envelope,
    max_size: u64,
    preset_id: Option<&str>,
) -> Result<String, InjectError> {
    let size = message.len() as u64;
    if max_size > 0 && size > max_size {
        return Err(InjectError::TooLarge { limit: max_size });
    }
    envelope.validate().map_err(InjectError::Envelope)?;
    commit_with(spool, preset_id, |mut file, recycled, id, path| {
        let state = target_state(&envelope);
        let trailer = stamp(envelope, id, size).to_trailer();
        ctx(
            write_all_vectored(&mut file, message, &trailer),
            "write",
            path,
        )?;
        sync(file, recycled, size + trailer.len() as u64, path)?;
        Ok(state)
    })
}

/// Steps 1, 4 and 5 around `write`, which fills and fsyncs the file (step 2 and 3)
/// given the file, whether it was recycled, the message's ID and the file's path.
fn commit_with(
    spool: &Spool,
    preset_id: Option<&str>,
    write: impl FnOnce(File, bool, &str, &Path) -> Result<QueueState, InjectError>,
) -> Result<String, InjectError> {
    // The temporary file is always named with an ID of this process, so `clean_tmp` can
    // tell from its name whether its writer is dead; the preset ID names the result.
    let (own_id, file, claim) = create_tmp(spool)?;
    let id = preset_id
        .filter(|id| usable_preset(spool, id))
        .map(str::to_string)
        .unwrap_or(own_id);
    let recycled = claim.is_recycled();
    let state = match write(file, recycled, &id, claim.path()) {
        Ok(state) => state,
        Err(e) => {
            claim.abandon();
            return Err(e);
        }
    };
    let dst = spool.path(state, &id);
    if let Err(e) = ctx(rename_noreplace(claim.path(), &dst), "rename", claim.path()) {
        claim.abandon();
        return Err(e.into());
    }
    // The rename is done: a pooled file's lock may go.
    drop(claim);
    fsync_dir(&spool.state_dir(state))?;
    if state == QueueState::Incoming {
        spool.poke();
    }
    Ok(id)
}

/// Where a message is being written: a new `tmp/<id>`, or a recycled file claimed in
/// `free/` (whose lock the value holds).
enum Target {
    New(PathBuf),
    Recycled(pool::Claim),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::New(p) => p,
            Target::Recycled(c) => &c.path,
        }
    }

    fn is_recycled(&self) -> bool {
        matches!(self, Target::Recycled(_))
    }

    /// After a failure: a new file is removed; a recycled one stays in the pool, which
    /// holds garbage by definition, and is unlocked.
    fn abandon(self) {
        if let Target::New(p) = self {
            let _ = fs::remove_file(p);
        }
    }
}

/// Where a committed message goes: `hold/` when a filter held it, else `incoming/`.
fn target_state(env: &Envelope) -> QueueState {
    if env.hold.is_some() {
        QueueState::Hold
    } else {
        QueueState::Incoming
    }
}

/// A preset ID is used when it is valid and not in the spool already. An ID this process
/// made itself (the smtpd's in-process commit) is unique by construction (time, pid,
/// counter: queue_id.rs), so the four lookups are spared; the rename into `incoming/`
/// still never replaces a file.
fn usable_preset(spool: &Spool, id: &str) -> bool {
    if !queue_id::is_valid(id) {
        return false;
    }
    queue_id::creator_pid(id) == Some(queue_id::own_pid_field()) || spool.find(id).is_none()
}

/// Fills in what the spool decides: the ID, the arrival time and the size.
pub(crate) fn stamp(mut env: Envelope, id: &str, size: u64) -> Envelope {
    env.id = id.to_string();
    env.arrival = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    env.size = size;
    env
}

/// Cuts a recycled file to `len` (its old content may have been longer), then fsyncs.
fn sync(file: File, recycled: bool, len: u64, path: &Path) -> Result<(), InjectError> {
    if recycled {
        ctx(file.set_len(len), "truncate", path)?;
    }
    ctx(file.sync_all(), "fsync", path)?;
    Ok(())
}

/// Writes `a` then `b` with as few `writev(2)` calls as the kernel allows.
fn write_all_vectored(file: &mut File, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = match file.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

/// `rename(2)` that never replaces an existing queue file (`RENAME_NOREPLACE`; plain
/// rename on file systems without it, where the ID's uniqueness is the guard).
pub(crate) fn rename_noreplace(src: &Path, dst: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, src, None, dst, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => fs::rename(src, dst),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Claims a recycled file in `free/` or creates `tmp/<id>` exclusively, with a new ID
/// (a clash takes another). The file is the one to write from offset 0; a recycled
/// file's old content must be cut off after the new.
fn create_tmp(spool: &Spool) -> Result<(String, File, Target), InjectError> {
    let mut id = queue_id::new_id();
    if let Some((file, c)) = pool::claim(spool) {
        return Ok((id, file, Target::Recycled(c)));
    }
    let mut path = spool.tmp_dir().join(&id);
    let mut last_err = None;
    for _ in 0..16 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                if let Err(e) = give_to_spool_owner(&f, spool) {
                    let _ = fs::remove_file(&path);
                    return Err(ctx(Err(e), "chown", &path)?);
                }
                return Ok((id, f, Target::New(path)));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last_err = Some(e);
                id = queue_id::new_id();
                path = spool.tmp_dir().join(&id);
            }
            Err(e) => return Err(ctx(Err(e), "create", &path)?),
        }
    }
    let err = last_err.unwrap_or_else(|| io::Error::other("queue ID clash"));
    Err(ctx(Err(err), "create", &spool.tmp_dir())?)
}

/// Run as root (a script calling `sloop-queue`, or `sloopd`'s children when no
/// `server.user` is set), gives a new queue file to the owner of `tmp/`, so every queue
/// file belongs to the spool owner whoever wrote it (docs/security.md). A no-op for
/// every other caller, and when the spool is root's.
fn give_to_spool_owner(file: &File, spool: &Spool) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let dir = fs::symlink_metadata(spool.tmp_dir())?;
    if dir.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(dir.uid()), Some(dir.gid()))
}

fn write_and_sync<R: Read>(
    file: File,
    recycled: bool,
    message: &mut R,
    envelope_fn: impl FnOnce() -> Result<Envelope, EnvelopeError>,
    id: &str,
    max_size: u64,
    path: &Path,
) -> Result<QueueState, InjectError> {
    let mut state = QueueState::Incoming;
    let (file, len) = write_queue_file(
        file,
        message,
        || {
            let env = envelope_fn()?;
            state = target_state(&env);
            Ok(env)
        },
        id,
        max_size,
        path,
    )?;
    sync(file, recycled, len, path)?;
    Ok(state)
}

/// Writes the queue file format into `file`: the message from `message` (at most
/// `max_size` octets), then the envelope `envelope_fn` gives, validated and stamped with
/// `id` and the size, as the trailer. Nothing is synced; returns the file and the
/// number of octets written. Shared by the commit and the maildrop writer.
pub(crate) fn write_queue_file<R: Read>(
    file: File,
    message: &mut R,
    envelope_fn: impl FnOnce() -> Result<Envelope, EnvelopeError>,
    id: &str,
    max_size: u64,
    path: &Path,
) -> Result<(File, u64), InjectError> {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let size = copy_limited(message, &mut out, max_size, path)?;
    let env = envelope_fn().map_err(InjectError::Envelope)?;
    env.validate().map_err(InjectError::Envelope)?;
    let trailer = stamp(env, id, size).to_trailer();
    ctx(out.write_all(&trailer), "write", path)?;
    let file = out.into_inner().map_err(|e| {
        InjectError::Spool(SpoolError {
            path: path.to_path_buf(),
            action: "write",
            source: e.into_error(),
        })
    })?;
    Ok((file, size + trailer.len() as u64))
}

/// Copies `message` to `out`, refusing more than `max_size` octets (0: no limit).
/// Returns the number of octets copied.
pub(crate) fn copy_limited<R: Read, W: Write>(
    message: &mut R,
    out: &mut W,
    max_size: u64,
    path: &Path,
) -> Result<u64, InjectError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = match message.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InjectError::ReadMessage(e)),
        };
        size += n as u64;
        if max_size > 0 && size > max_size {
            return Err(InjectError::TooLarge { limit: max_size });
        }
        ctx(out.write_all(&buf[..n]), "write", path)?;
    }
    Ok(size)
}
