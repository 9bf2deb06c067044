//! Adopting the descriptors `sloopd` passes down (`SLOOP_LISTEN_FDS`,
//! `SLOOP_STATUS_FD`, see `sloop_common::pool_proto`).
//!
//! This is the one module of the smtpd with `unsafe`: turning an inherited descriptor
//! number into an owned handle cannot be expressed safely. Each number is checked to be
//! open first, adopted once at start-up, and marked close-on-exec so the queue program
//! the worker runs never inherits a listening socket or the status pipe.
#![allow(unsafe_code)]

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of inherited descriptor `fd`.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream"),
        ));
    }
    fcntl(fd, FcntlArg::F_GETFD).map_err(|e| io::Error::other(format!("descriptor {fd}: {e}")))?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| io::Error::other(format!("descriptor {fd}: {e}")))?;
    // SAFETY: `fd` is open (F_GETFD succeeded), was handed to this process by its
    // parent for exactly this use, and is adopted once, at start-up, before any other
    // code could have taken ownership of it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
