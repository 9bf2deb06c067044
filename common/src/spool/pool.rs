//! Recycled queue files: `free/` holds finished queue files whose inodes are kept for
//! the next commit instead of being freed and allocated again.
//!
//! Why: creating a file costs an inode allocation and removing it an inode (and block)
//! free; on ext4 without a journal the allocator also skips every inode freed in the
//! last 60 seconds (360 while its inode-table block is dirty), probing the inode
//! table for each, so at a thousand messages a second each create scanned thousands
//! of inodes (a third of the smtpd's CPU and half of the delivery agents' in `perf`;
//! docs/benchmarks.md). A recycled file keeps its
//! inode and its blocks, so a commit overwrites it instead.
//!
//! - The queue manager, when a message is done, renames its file into one of the
//!   subdirectories `free/0` .. `free/f` in turn (named by its old queue ID) instead
//!   of unlinking it, while the pool has fewer than [`POOL_MAX_FILES`] files and
//!   holds fewer octets than [`POOL_MAX_BYTES`] and than a [`POOL_FREE_SHARE`]th of
//!   the file system's free space, and the message is at most [`POOL_MAX_FILE_SIZE`]
//!   octets; otherwise it unlinks it. When free space shrinks below what the pool may
//!   hold, its next count gives the surplus back (unlinks pooled files).
//! - Anyone short of space ([`release`]: the smtpd at MAIL FROM, `sloop-sendmail`,
//!   below `queue.min_free`) unlinks pooled files first: they are garbage by
//!   definition, and the space they hold is the first to give back.
//! - A writer claims a file where it lies: it opens `free/<d>/<name>`, takes an
//!   exclusive non-blocking `flock(2)` on it, and checks that the name still leads to
//!   that inode (a writer that committed it renamed it away before unlocking). Of two
//!   writers racing for a name one gets the lock, the other tries another. It then
//!   writes from offset 0, truncates to the new length and fsyncs, exactly as for a new
//!   file, and its commit renames `free/<d>/<name>` straight to `incoming/<id>` before
//!   the lock is let go. The commit point is unchanged (the rename into `incoming/`
//!   after the fsync), and the claim costs no rename: renames across directories
//!   serialize on a file-system-wide lock, and the claim rename was a tenth of the
//!   smtpd's CPU in `perf`.
//!
//! Crash safety: a file in `free/` is garbage whatever its content, so a writer that
//! dies mid-write leaves nothing to clean (its lock dies with it); nothing but a lock
//! holder writes into or renames a file out of `free/`, and [`release`] unlinks only
//! files it could lock. `free/` is never fsync'd: after a crash a recycled file may come back in
//! `active/` (the message is delivered again, as when an unlink is lost) or, on a file
//! system without a journal, be left for fsck, as any unlink in flight would be.

use super::Spool;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// At most this many files wait in `free/` (the queue manager unlinks beyond it).
pub const POOL_MAX_FILES: usize = 2048;

/// Messages larger than this are unlinked, never pooled.
pub const POOL_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// At most this much disk is held by `free/`.
pub const POOL_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The pool never holds more than this fraction (1/N) of the free space on the spool's
/// file system: on a shared `/var` recycling must not starve other programs.
pub const POOL_FREE_SHARE: u64 = 10;

/// `free/` is split into this many subdirectories (`free/0` .. `free/f`), filled in
/// turn: a writer claims from the one its pid points at and moves on only when that
/// is empty, so concurrent writers seldom race for a name, and each directory stays
/// small enough to list cheaply.
pub const POOL_DIRS: usize = 16;

/// Names read per listing of a subdirectory.
const NAMES_PER_READ: usize = 64;

/// How long the queue manager trusts its count of `free/` before counting again.
const RECOUNT: Duration = Duration::from_secs(1);

/// How long a writer that found every subdirectory empty creates new files without
/// looking again.
const EMPTY_PAUSE: Duration = Duration::from_millis(500);

const DIR_NAMES: [&str; POOL_DIRS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
];

/// The subdirectory `i` of `free/`.
pub fn pool_dir(spool: &Spool, i: usize) -> PathBuf {
    spool.free_dir().join(DIR_NAMES[i % POOL_DIRS])
}

/// What a writer remembers between commits (in its spool handle's state): the names it
/// listed and not claimed yet, and from which subdirectory.
pub(crate) struct Names {
    dir: usize,
    names: Vec<String>,
    /// Every subdirectory was empty at the last look: no claims until then.
    empty_until: Option<Instant>,
    /// xorshift state: writers sharing a subdirectory list the same names, so each
    /// picks at random rather than all taking the same one.
    rng: u64,
}

/// A recycled file claimed by this writer, still named `path` in `free/` and locked
/// until the claim is dropped, which the commit does only after renaming it into the
/// queue.
pub(crate) struct Claim {
    pub(crate) path: PathBuf,
    /// The lock, held on a second descriptor of the open file handed to the writer, so
    /// the writer may close its descriptor (after the fsync) and the lock lasts until
    /// the rename is done.
    _lock: Flock<File>,
}

/// Takes a recycled file from `free/` (see the module doc): open for writing at
/// offset 0, with its claim. `None` when the pool is empty or every claim failed: the
/// caller then creates a new file.
///
/// A name that is gone or locked (another writer has it) is passed over for another
/// of the listing; after two misses in a row the subdirectory is listed again, and
/// after six the caller creates a new file. An empty subdirectory passes the claim on to the next one; each is tried
/// once.
pub(crate) fn claim(spool: &Spool) -> Option<(File, Claim)> {
    let mut guard = spool
        .writer_state()
        .pool
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.is_none() {
        *guard = Some(Names {
            dir: std::process::id() as usize % POOL_DIRS,
            names: Vec::new(),
            empty_until: None,
            // xorshift needs a state other than zero.
            rng: super::queue_id::process_seed() | 1,
        });
    }
    let state = guard.as_mut()?;
    if state.empty_until.is_some_and(|t| Instant::now() < t) {
        return None;
    }
    let mut stale = 0;
    let mut empty = 0;
    while stale < 6 && empty < POOL_DIRS {
        let dir = pool_dir(spool, state.dir);
        if state.names.is_empty() {
            state.names = read_names(&dir);
            if state.names.is_empty() {
                empty += 1;
                state.dir = (state.dir + 1) % POOL_DIRS;
                if empty == POOL_DIRS {
                    state.empty_until = Some(Instant::now() + EMPTY_PAUSE);
                }
                continue;
            }
        }
        let pick = (next(&mut state.rng) % state.names.len() as u64) as usize;
        let path = dir.join(state.names.swap_remove(pick));
        match lock_in_place(&path) {
            Some((file, lock)) => return Some((file, Claim { path, _lock: lock })),
            // Busy (another writer holds it) or gone: try another name of the listing,
            // and list again after two misses in a row.
            None => {
                stale += 1;
                if stale % 2 == 0 {
                    state.names.clear();
                }
            }
        }
    }
    None
}

/// Opens the pooled file `path` for writing and locks it, if no one else holds it and
/// the name still leads to the inode opened (never through a symlink).
fn lock_in_place(path: &Path) -> Option<(File, Flock<File>)> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let lock = Flock::lock(file.try_clone().ok()?, FlockArg::LockExclusiveNonblock).ok()?;
    let opened = file.metadata().ok()?;
    let named = fs::symlink_metadata(path).ok()?;
    if !opened.is_file() || opened.ino() != named.ino() || opened.dev() != named.dev() {
        return None;
    }
    Some((file, lock))
}

/// Forgets what `spool`'s handle listed and any pause (tests that refill the pool).
#[cfg(test)]
pub(crate) fn forget_listing(spool: &Spool) {
    forget_names(spool);
}

/// Forgets the names this handle listed (after it unlinked pooled files itself).
fn forget_names(spool: &Spool) {
    *spool
        .writer_state()
        .pool
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
}

/// Up to `NAMES_PER_READ` names from one subdirectory of `free/`.
fn read_names(dir: &Path) -> Vec<String> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| super::queue_id::is_valid(n))
        .take(NAMES_PER_READ)
        .collect()
}

/// xorshift64.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// The queue manager's side: retires finished queue files into `free/` or unlinks them.
#[derive(Debug, Default)]
pub struct Recycler {
    /// Files in `free/` at the last count plus those put there since: an upper bound,
    /// as writers only ever take files out.
    estimate: usize,
    /// Likewise for the octets they hold.
    estimate_bytes: u64,
    counted: Option<Instant>,
    /// Octets the pool may hold, from the free space at the last count.
    budget: u64,
    /// The subdirectory the next file goes to.
    next_dir: usize,
}

impl Recycler {
    pub fn new() -> Recycler {
        Recycler::default()
    }

    /// Takes the queue file `path` of message `id` (`size` octets of message) out of
    /// the queue: into `free/` when it is small and the pool has room, else unlinked.
    /// The caller fsyncs the directory `path` was in, as for an unlink.
    pub fn retire(&mut self, spool: &Spool, path: &Path, id: &str, size: u64) -> io::Result<()> {
        if size <= POOL_MAX_FILE_SIZE && self.has_room(spool, size) {
            let dir = pool_dir(spool, self.next_dir);
            self.next_dir = (self.next_dir + 1) % POOL_DIRS;
            // A failed rename (no `free/` in an old spool, say) falls back to unlinking.
            if fs::rename(path, dir.join(id)).is_ok() {
                self.estimate += 1;
                self.estimate_bytes += size;
                return Ok(());
            }
        }
        fs::remove_file(path)
    }

    fn has_room(&mut self, spool: &Spool, size: u64) -> bool {
        if self.counted.is_none_or(|t| t.elapsed() >= RECOUNT) {
            self.recount(spool);
        }
        self.estimate < POOL_MAX_FILES && self.estimate_bytes + size <= self.budget
    }

    /// Counts the files in `free/` and their octets (unreadable entries count as full).
    fn recount(&mut self, spool: &Spool) {
        let (mut files, mut bytes) = (0, 0);
        for i in 0..POOL_DIRS {
            let Ok(dir) = fs::read_dir(pool_dir(spool, i)) else {
                continue;
            };
            for entry in dir {
                files += 1;
                bytes += entry
                    .and_then(|e| e.metadata())
                    .map_or(POOL_MAX_FILE_SIZE, |m| m.len());
            }
        }
        self.estimate = files;
        self.estimate_bytes = bytes;
        self.counted = Some(Instant::now());
        // The pool's own files are not free space, but they could be: count them in.
        self.budget = match super::space::free_bytes(spool.root()) {
            Ok(free) => pool_budget(free.saturating_add(bytes)),
            Err(_) => 0,
        };
        if bytes > self.budget {
            let freed = release(spool, bytes - self.budget);
            self.estimate_bytes = bytes.saturating_sub(freed);
        }
    }
}

/// What the pool may hold with `free` octets free (its own files included).
pub fn pool_budget(free: u64) -> u64 {
    (free / POOL_FREE_SHARE).min(POOL_MAX_BYTES)
}

/// Unlinks pooled files until at least `want` octets are freed or the pool is empty;
/// returns the octets freed. Safe against concurrent claims: a file a writer holds is
/// skipped (we lock each file before its unlink), one unlinked first is not found by
/// the claimer, which tries another.
pub fn release(spool: &Spool, want: u64) -> u64 {
    let mut freed = 0;
    for i in 0..POOL_DIRS {
        let dir = pool_dir(spool, i);
        let Ok(listing) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            if freed >= want {
                return freed;
            }
            // A file a writer is filling is not the pool's to give back.
            let path = entry.path();
            let Some((file, _lock)) = lock_in_place(&path) else {
                continue;
            };
            let len = file.metadata().map_or(0, |m| m.len());
            if fs::remove_file(&path).is_ok() {
                freed += len.max(1);
            }
        }
    }
    if freed > 0 {
        forget_names(spool);
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::queue_id;
    use std::io::Write;

    fn spool(name: &str) -> Spool {
        let dir = std::env::temp_dir().join(format!("sloop-pool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spool = Spool::new(dir);
        spool.ensure_layout().unwrap();
        spool
    }

    fn pooled(spool: &Spool) -> usize {
        (0..POOL_DIRS)
            .map(|i| fs::read_dir(pool_dir(spool, i)).unwrap().count())
            .sum()
    }

    fn put(spool: &Spool, body: &[u8]) -> PathBuf {
        let path = spool.tmp_dir().join(queue_id::new_id());
        fs::File::create(&path).unwrap().write_all(body).unwrap();
        path
    }

    #[test]
    fn a_retired_file_keeps_its_inode_for_the_next_claim() {
        use std::os::unix::fs::MetadataExt;
        let spool = spool("inode");
        let path = put(&spool, b"old content");
        let ino = fs::metadata(&path).unwrap().ino();
        let id = path.file_name().unwrap().to_str().unwrap().to_string();
        Recycler::new().retire(&spool, &path, &id, 11).unwrap();
        assert!(!path.exists());
        assert_eq!(pooled(&spool), 1);

        let (f, c) = claim(&spool).expect("a pooled file is claimed");
        assert_eq!(f.metadata().unwrap().ino(), ino);
        assert_eq!(
            fs::metadata(&c.path).unwrap().ino(),
            ino,
            "claimed where it lies"
        );
        // Held: no second claim, and the pool's listing has nothing else.
        forget_listing(&spool);
        assert!(claim(&spool).is_none());
        drop((f, c));
        // Let go (a failed commit): claimable again.
        forget_listing(&spool);
        let (_f, c) = claim(&spool).expect("an abandoned claim returns to the pool");
        assert_eq!(fs::metadata(&c.path).unwrap().ino(), ino);
    }

    #[test]
    fn large_files_and_a_full_pool_are_unlinked() {
        let spool = spool("unlink");
        let mut r = Recycler::new();
        let big = put(&spool, b"x");
        let id = big.file_name().unwrap().to_str().unwrap().to_string();
        r.retire(&spool, &big, &id, POOL_MAX_FILE_SIZE + 1).unwrap();
        assert!(!big.exists());
        assert_eq!(pooled(&spool), 0);

        r.estimate = POOL_MAX_FILES;
        r.counted = Some(Instant::now());
        let full = put(&spool, b"x");
        let id = full.file_name().unwrap().to_str().unwrap().to_string();
        r.retire(&spool, &full, &id, 1).unwrap();
        assert!(!full.exists());
        assert_eq!(pooled(&spool), 0);
        // Room for files but not for their octets: unlinked too.
        r.estimate = 0;
        r.estimate_bytes = POOL_MAX_BYTES;
        let small = put(&spool, b"x");
        let id = small.file_name().unwrap().to_str().unwrap().to_string();
        r.retire(&spool, &small, &id, 1).unwrap();
        assert!(!small.exists());
        assert_eq!(pooled(&spool), 0);
    }

    #[test]
    fn the_pool_holds_a_small_share_of_free_space_and_gives_it_back() {
        assert_eq!(pool_budget(100 * 1024 * 1024), 10 * 1024 * 1024);
        assert_eq!(pool_budget(10 * POOL_MAX_BYTES * 10), POOL_MAX_BYTES);
        assert_eq!(pool_budget(5), 0);
        let spool = spool("release");
        let mut r = Recycler::new();
        for _ in 0..3 {
            let path = put(&spool, b"0123456789");
            let id = path.file_name().unwrap().to_str().unwrap().to_string();
            r.retire(&spool, &path, &id, 10).unwrap();
        }
        assert_eq!(pooled(&spool), 3);
        assert_eq!(release(&spool, 15), 20, "whole files, until enough");
        assert_eq!(pooled(&spool), 1);
        assert_eq!(release(&spool, u64::MAX), 10);
        assert_eq!(pooled(&spool), 0);
        assert_eq!(release(&spool, 1), 0);
        // A recount that finds more pooled than the share of free space allows gives
        // the surplus back.
        let path = put(&spool, b"x");
        let id = path.file_name().unwrap().to_str().unwrap().to_string();
        fs::rename(&path, pool_dir(&spool, 0).join(&id)).unwrap();
        r.budget = 0;
        r.recount(&spool);
        if r.budget == 0 {
            assert_eq!(pooled(&spool), 0);
        }
    }

    #[test]
    fn a_claimed_file_is_neither_claimed_again_nor_released() {
        let spool = spool("held");
        let path = put(&spool, b"pooled");
        let id = path.file_name().unwrap().to_str().unwrap().to_string();
        Recycler::new().retire(&spool, &path, &id, 6).unwrap();
        let (mut f, c) = claim(&spool).expect("claimed");
        assert_eq!(
            release(&spool, u64::MAX),
            0,
            "a held file is not given back"
        );
        assert!(c.path.exists());
        // Written and renamed into the queue, then let go: the name is gone, so a
        // writer that opened it before cannot take it any more.
        f.write_all(b"new message").unwrap();
        let stale = OpenOptions::new().write(true).open(&c.path).unwrap();
        let queued = spool.tmp_dir().join("queued");
        fs::rename(&c.path, &queued).unwrap();
        drop((f, c));
        assert!(Flock::lock(stale, FlockArg::LockExclusiveNonblock).is_ok());
        assert!(lock_in_place(&pool_dir(&spool, 0).join(&id)).is_none());
        assert_eq!(fs::read(&queued).unwrap(), b"new message");
        assert_eq!(pooled(&spool), 0);
    }

    #[test]
    fn a_symlink_in_the_pool_is_never_claimed() {
        let spool = spool("symlink");
        let victim = spool.tmp_dir().join("victim");
        fs::write(&victim, b"not ours").unwrap();
        let name = queue_id::new_id();
        std::os::unix::fs::symlink(&victim, pool_dir(&spool, 3).join(&name)).unwrap();
        assert!(claim(&spool).is_none());
        assert_eq!(fs::read(&victim).unwrap(), b"not ours");
    }
}
