//! Why an existing file in a user's domain (a mailbox, a `.forward`) is not used: the
//! text goes into the log and the delivery's defer reason.

use std::fmt;

/// A file a local delivery refuses to read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// Not a regular file (a directory, a device, a FIFO).
    NotRegular,
    /// More than one hard link: another name could be a file the user may not write.
    HardLinks(u64),
    /// Owned by someone other than the account.
    Owner { owner: u32, account: u32 },
    /// Writable by its group or by everyone (`mode` are the permission bits).
    SharedWritable { mode: u32 },
}

impl fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileRefusal::NotRegular => f.write_str("is not a regular file"),
            FileRefusal::HardLinks(n) => write!(f, "has {n} hard links"),
            FileRefusal::Owner { owner, account } => write!(
                f,
                "is owned by uid {owner}, not by the account (uid {account})"
            ),
            FileRefusal::SharedWritable { mode } => {
                write!(f, "is group- or world-writable (mode {mode:o})")
            }
        }
    }
}

impl std::error::Error for FileRefusal {}
