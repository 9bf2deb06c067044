//! Free space on the spool's file system (`statvfs(2)`), and the decision whether a
//! new message may be accepted (`queue.min_free`, in Postfix's `queue_minfree` spirit:
//! by default 1.5 times `smtpd.max_message_size`).
//!
//! [`ensure_room`] is asked by the smtpd at MAIL FROM (`452 4.3.1 Insufficient system
//! storage` when there is no room, also for a declared SIZE that would cross the line)
//! and by `sloop-sendmail` before it reads a message. Short of room, it first gives
//! back the recycling pool's files (pool.rs) and looks again. The log says when the
//! spool goes below `queue.min_free` and when it comes back, once per change for all
//! processes together: the first process to see a change creates or removes the marker
//! `<run_dir>/private/spool-low` and only the one that succeeds logs it.
//!
//! Free space is what an unprivileged writer may use (`f_bavail`), since the daemons
//! run as `server.user`. A `statvfs` failure is reported to the caller, which treats it
//! as "unknown" and accepts (a check that cannot run must not stop all mail; the write
//! itself still fails cleanly with 451 when the disk is really full).

use super::Spool;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Name of the marker kept in `server.run_dir` while the spool is below `min_free`.
pub const LOW_MARKER: &str = "spool-low";

/// What [`ensure_room`] found.
#[derive(Debug)]
pub enum Room {
    /// Enough free space.
    Enough,
    /// Not enough: `free` octets free (after giving the pool back).
    Short { free: u64 },
    /// `statvfs` failed: unknown (the caller accepts).
    Unknown(io::Error),
}

/// Whether a message of `declared` octets (0: unknown) may be accepted into `spool`
/// keeping `min_free` free; gives the pool back first when short.
pub fn ensure_room(spool: &Spool, run_dir: &Path, min_free: u64, declared: u64) -> Room {
    let mut free = match free_bytes(spool.root()) {
        Ok(f) => f,
        Err(e) => return Room::Unknown(e),
    };
    if !room_for(free, min_free, declared) {
        let want = min_free.saturating_add(declared).saturating_sub(free);
        if super::pool::release(spool, want) > 0 {
            free = free_bytes(spool.root()).unwrap_or(free);
        }
    }
    note(spool, run_dir, free < min_free, free, min_free);
    if room_for(free, min_free, declared) {
        Room::Enough
    } else {
        Room::Short { free }
    }
}

/// Logs a change of the low-space state, once for all processes. The handle's state
/// keeps its last view (0 unknown, 1 enough, 2 low), so an unchanged state costs no
/// file operation.
fn note(spool: &Spool, run_dir: &Path, low: bool, free: u64, min_free: u64) {
    let now = if low { 2 } else { 1 };
    if spool.writer_state().space_seen.swap(now, Ordering::Relaxed) == now {
        return;
    }
    let marker = run_dir
        .join(crate::pool_state::RUN_PRIVATE)
        .join(LOW_MARKER);
    if low {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
        if created {
            log::warn!(
                "spool file system below queue.min_free: {} free, {} wanted; new mail \
                 gets 452 4.3.1 Insufficient system storage until space is freed",
                human(free),
                human(min_free)
            );
        }
    } else if std::fs::remove_file(&marker).is_ok() {
        log::info!(
            "spool file system has room again: {} free (queue.min_free {}); accepting mail",
            human(free),
            human(min_free)
        );
    }
}

/// Free octets available to unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Whether a message of `declared` octets (0 when unknown) may come in with `free`
/// octets left and `min_free` to keep: the free space must stay at or above
/// `min_free` once the message is written.
pub fn room_for(free: u64, min_free: u64, declared: u64) -> bool {
    free >= min_free.saturating_add(declared)
}

/// `12.3 MiB`-style rendering for logs and `sloop status`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn room_keeps_min_free_after_the_message() {
        assert!(room_for(100, 50, 0));
        assert!(room_for(100, 50, 50));
        assert!(!room_for(100, 50, 51));
        assert!(!room_for(49, 50, 0));
        assert!(!room_for(10, u64::MAX, 1));
    }

    #[test]
    fn free_space_of_a_real_directory_and_names() {
        assert!(free_bytes(Path::new("/")).is_ok());
        assert!(free_bytes(Path::new("/nonexistent/dir")).is_err());
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(25 * 1024 * 1024), "25.0 MiB");
    }
}
