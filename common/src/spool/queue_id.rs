//! Queue IDs: unique across processes and restarts, and sortable by arrival time.
//!
//! An ID is 22 upper-case hex digits: 13 of microseconds since the Unix epoch, 6 of the
//! creating process's pid, 3 of a per-process counter. Two processes never share a pid
//! at the same time, one process never repeats a (microsecond, counter) pair, and the
//! spool creates the file with `O_EXCL`, so a clash (a clock stepped back) is detected
//! and a new ID taken instead of overwriting.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of every queue ID.
pub const ID_LEN: usize = 22;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new queue ID.
pub fn new_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let pid = own_pid_field();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff;
    format!("{:013X}{:06X}{:03X}", micros & 0x1f_ffff_ffff_ffff, pid, n)
}

/// This process's pid as an ID carries it (the low 24 bits).
pub fn own_pid_field() -> u32 {
    std::process::id() & 0xff_ffff
}

/// Time and pid, as IDs are made of: a value that differs between processes and
/// starts, to seed the pseudo-random choices that spread work (nothing secret).
pub fn process_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// True when `s` has the shape of a queue ID (so it is safe as a file name).
pub fn is_valid(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// The pid embedded in an ID (the process that created it).
pub fn creator_pid(id: &str) -> Option<u32> {
    if !is_valid(id) {
        return None;
    }
    u32::from_str_radix(&id[13..19], 16).ok()
}

/// Arrival time embedded in an ID, in seconds since the epoch.
pub fn timestamp(id: &str) -> Option<u64> {
    if !is_valid(id) {
        return None;
    }
    u64::from_str_radix(&id[..13], 16)
        .ok()
        .map(|us| us / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_unique_and_sorted() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        assert!(ids.iter().all(|i| is_valid(i)));
        assert_eq!(creator_pid(&ids[0]), Some(std::process::id() & 0xff_ffff));
        assert!(timestamp(&ids[0]).unwrap_or(0) > 1_700_000_000);
        assert!(!is_valid("../../etc/passwd"));
        assert!(!is_valid("0123456789abcdef012345"));
    }
}
