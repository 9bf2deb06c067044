//! The commit: how a message enters the queue (ARCHITECTURE.md §3, invariant 1).
//!
//! 1. create `tmp/<id>` with `O_EXCL` (a clash takes a new ID);
//! 2. stream the message into it, refusing more than the size limit;
//! 3. obtain the envelope (given up front by [`commit`], or read only now by
//!    [`commit_streaming`], as qmail-queue reads fd 1 after fd 0), append it as the
//!    trailer, then `fsync` the file;
//! 4. `rename` it to `incoming/<id>` and `fsync` `incoming/`: **the commit point**;
//! 5. poke the trigger FIFO.
//!
//! Any failure before step 4 removes the temporary file, so no partial message is ever
//! visible; a crash before step 4 leaves only a `tmp/` file that the queue manager
//! removes. A crash after the rename but before the directory fsync can lose the
//! message only together with the caller's acknowledgement, which waits for our return.

use super::{ctx, fsync_dir, queue_id, Envelope, EnvelopeError, QueueState, Spool, SpoolError};
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
    // The temporary file is always named with an ID of this process, so `clean_tmp` can
    // tell from its name whether its writer is dead; the preset ID names the result.
    let (own_id, tmp_path, file) = create_tmp(spool)?;
    let id = preset_id
        .filter(|id| queue_id::is_valid(id) && spool.find(id).is_none())
        .map(str::to_string)
        .unwrap_or(own_id);
    let result = write_and_sync(file, message, envelope_fn, &id, max_size, &tmp_path);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    let dst = spool.path(QueueState::Incoming, &id);
    if let Err(e) = ctx(rename_noreplace(&tmp_path, &dst), "rename", &tmp_path) {
        let _ = fs::remove_file(&tmp_path);
        return Err(e.into());
    }
    fsync_dir(&spool.state_dir(QueueState::Incoming))?;
    spool.poke();
    Ok(id)
}

/// `rename(2)` that never replaces an existing queue file (`RENAME_NOREPLACE`; plain
/// rename on file systems without it, where the ID's uniqueness is the guard).
fn rename_noreplace(src: &Path, dst: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, src, None, dst, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => fs::rename(src, dst),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Creates `tmp/<id>` exclusively with a new ID (a clash takes another).
fn create_tmp(spool: &Spool) -> Result<(String, PathBuf, File), InjectError> {
    let mut last_err = None;
    for _ in 0..16 {
        let id = queue_id::new_id();
        let path = spool.tmp_dir().join(&id);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((id, path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(ctx(Err(e), "create", &path)?),
        }
    }
    let err = last_err.unwrap_or_else(|| io::Error::other("queue ID clash"));
    Err(ctx(Err(err), "create", &spool.tmp_dir())?)
}

fn write_and_sync<R: Read>(
    file: File,
    message: &mut R,
    envelope_fn: impl FnOnce() -> Result<Envelope, EnvelopeError>,
    id: &str,
    max_size: u64,
    path: &Path,
) -> Result<(), InjectError> {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let size = copy_limited(message, &mut out, max_size, path)?;
    let mut env = envelope_fn().map_err(InjectError::Envelope)?;
    env.validate().map_err(InjectError::Envelope)?;
    env.id = id.to_string();
    env.arrival = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    env.size = size;
    ctx(out.write_all(&env.to_trailer()), "write", path)?;
    let file = out.into_inner().map_err(|e| {
        InjectError::Spool(SpoolError {
            path: path.to_path_buf(),
            action: "write",
            source: e.into_error(),
        })
    })?;
    ctx(file.sync_all(), "fsync", path)?;
    Ok(())
}

/// Copies `message` to `out`, refusing more than `max_size` octets (0: no limit).
/// Returns the number of octets copied.
fn copy_limited<R: Read, W: Write>(
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
