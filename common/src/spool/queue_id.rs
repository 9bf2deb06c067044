//! Queue IDs: unique across processes and restarts, and sortable by arrival time.
//!
//! An ID is 22 upper-case hex digits: 13 of microseconds since the Unix epoch, 6 of the
//! creating process's pid, 3 of a per-process counter. Two processes never share a pid
//! at the same time, one process never repeats a (microsecond, counter) pair, and the
//! spool creates the file with `O_EXCL`, so a clash (a clock stepped back) is detected
//! and a new ID taken instead of overwriting.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of every queue ID.
pub const ID_LEN: usize = 22;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A queue ID known to be well formed (so safe as a file name), cheap to copy and hash.
///
/// Made by [`QueueId::new`] or checked by [`QueueId::parse`]; code that moves messages
/// around takes this type rather than a bare string, so a name that is not an ID (a
/// stray file in a queue directory, `../x`) never reaches a path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId([u8; ID_LEN]);

impl QueueId {
    /// A new, unique ID.
    pub fn new() -> QueueId {
        let s = new_id();
        QueueId::parse(&s).unwrap_or(QueueId([b'0'; ID_LEN]))
    }

    /// `s` as an ID, or `None` when it does not have the shape of one.
    pub fn parse(s: &str) -> Option<QueueId> {
        if !is_valid(s) {
            return None;
        }
        let mut b = [0u8; ID_LEN];
        b.copy_from_slice(s.as_bytes());
        Some(QueueId(b))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored (parse checks them).
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// Arrival time embedded in the ID, in seconds since the epoch.
    pub fn timestamp(&self) -> u64 {
        timestamp(self.as_str()).unwrap_or(0)
    }
}

impl Default for QueueId {
    fn default() -> QueueId {
        QueueId::new()
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

impl PartialEq<str> for QueueId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// A new queue ID, as text.
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

    #[test]
    fn typed_ids_round_trip_and_refuse_non_ids() {
        let id = QueueId::new();
        assert_eq!(QueueId::parse(id.as_str()), Some(id));
        assert_eq!(id.to_string().len(), ID_LEN);
        assert!(id.timestamp() > 1_700_000_000);
        assert!(QueueId::new() > id, "sorted by arrival");
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789abcdef012345",
            "0123456789ABCDEF01234",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
    }
}
