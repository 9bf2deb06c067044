//! Free space on the spool's file system (`statvfs(2)`), and the decision whether a
//! new message may be accepted (`queue.min_free`, in Postfix's `queue_minfree` spirit:
//! by default 1.5 times `smtpd.max_message_size`).
//!
//! Free space is what an unprivileged writer may use (`f_bavail`), since the daemons
//! run as `server.user`. A `statvfs` failure is reported to the caller, which treats it
//! as "unknown" and accepts (a check that cannot run must not stop all mail; the write
//! itself still fails cleanly with 451 when the disk is really full).

use std::io;
use std::path::Path;

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
