//! Adopting the descriptors `sloopd` passes down (`SLOOP_LISTEN_FDS`,
//! `SLOOP_STATUS_FD`, see `sloop_common::pool_proto`).
//!
//! This is the one module of the smtpd with `unsafe`: turning an inherited descriptor
//! number into an owned handle cannot be expressed safely. Each number is checked
//! before it is adopted: not a standard stream, not named twice (two owners of one
//! descriptor would close it twice), open, and of the kind its variable promises
//! (`fstat`: a listening stream socket, or a pipe for the status channel). A check
//! that fails is a [`FdError`] naming the descriptor; the worker then refuses to start.
//! Adopted descriptors are marked close-on-exec so the queue program the worker runs
//! never inherits a listening socket or the status pipe.
#![allow(unsafe_code)]

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{fstat, SFlag};
use std::fmt;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What an inherited descriptor is supposed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A listening TCP socket (`SLOOP_LISTEN_FDS`).
    Listener,
    /// The write end of the status pipe (`SLOOP_STATUS_FD`).
    StatusPipe,
    /// The datagram socket on which the busy acceptor hands over connections
    /// (`SLOOP_HANDOFF_FD`).
    HandoffSocket,
    /// The sealed memory file with the TLS material (`SLOOP_TLS_FD`).
    TlsBundle,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Listener => "listening socket",
            Kind::StatusPipe => "status pipe",
            Kind::HandoffSocket => "hand-off socket",
            Kind::TlsBundle => "TLS material file",
        })
    }
}

/// Why an inherited descriptor cannot be adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdError {
    StandardStream {
        fd: RawFd,
        kind: Kind,
    },
    PassedTwice {
        fd: RawFd,
        first: Kind,
        again: Kind,
    },
    NotOpen {
        fd: RawFd,
        kind: Kind,
        errno: nix::errno::Errno,
    },
    WrongKind {
        fd: RawFd,
        kind: Kind,
        found: &'static str,
    },
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdError::StandardStream { fd, kind } => {
                write!(f, "{kind}: descriptor {fd} is a standard stream")
            }
            FdError::PassedTwice { fd, first, again } => write!(
                f,
                "{again}: descriptor {fd} passed twice (already the {first})"
            ),
            FdError::NotOpen { fd, kind, errno } => {
                write!(f, "{kind}: descriptor {fd} is not open: {errno}")
            }
            FdError::WrongKind { fd, kind, found } => {
                write!(f, "{kind}: descriptor {fd} is not a {kind} but {found}")
            }
        }
    }
}

impl std::error::Error for FdError {}

/// Adopts inherited descriptors, each number at most once.
#[derive(Debug, Default)]
pub struct Adopter {
    taken: Vec<(RawFd, Kind)>,
}

impl Adopter {
    /// Takes ownership of inherited descriptor `fd`, which must be a `kind`.
    pub fn adopt(&mut self, fd: RawFd, kind: Kind) -> Result<OwnedFd, FdError> {
        if fd < 3 {
            return Err(FdError::StandardStream { fd, kind });
        }
        if let Some(&(_, first)) = self.taken.iter().find(|(n, _)| *n == fd) {
            return Err(FdError::PassedTwice {
                fd,
                first,
                again: kind,
            });
        }
        fcntl(fd, FcntlArg::F_GETFD).map_err(|errno| FdError::NotOpen { fd, kind, errno })?;
        // SAFETY: `fd` is open (F_GETFD succeeded); the borrow lives only for the checks
        // below, while nothing else in this process owns or closes it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        check_kind(borrowed, fd, kind)?;
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|errno| FdError::NotOpen {
            fd,
            kind,
            errno,
        })?;
        self.taken.push((fd, kind));
        // SAFETY: `fd` is open, was handed to this process by its parent for exactly
        // this use, and is adopted once (`taken` refuses a second adoption), at
        // start-up, before any other code could have taken ownership of it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Checks with `fstat` (and `SO_ACCEPTCONN` for a socket) that `fd` is a `kind`.
fn check_kind(borrowed: BorrowedFd<'_>, fd: RawFd, kind: Kind) -> Result<(), FdError> {
    let st = fstat(fd).map_err(|errno| FdError::NotOpen { fd, kind, errno })?;
    let ty = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let wrong = |found| Err(FdError::WrongKind { fd, kind, found });
    match kind {
        Kind::Listener if ty != SFlag::S_IFSOCK => wrong(type_name(ty)),
        Kind::Listener => match getsockopt(&borrowed, sockopt::AcceptConn) {
            Ok(true) => Ok(()),
            _ => wrong("a socket that is not listening"),
        },
        Kind::StatusPipe if ty == SFlag::S_IFIFO => Ok(()),
        Kind::StatusPipe => wrong(type_name(ty)),
        Kind::HandoffSocket if ty != SFlag::S_IFSOCK => wrong(type_name(ty)),
        Kind::TlsBundle if ty == SFlag::S_IFREG => Ok(()),
        Kind::TlsBundle => wrong(type_name(ty)),
        Kind::HandoffSocket => match getsockopt(&borrowed, sockopt::SockType) {
            Ok(nix::sys::socket::SockType::Datagram) => Ok(()),
            _ => wrong("a socket that is not a datagram socket"),
        },
    }
}

fn type_name(ty: SFlag) -> &'static str {
    match ty {
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFIFO => "a pipe",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFDIR => "a directory",
        _ => "another kind of file",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn adopts_each_descriptor_once_and_checks_its_kind() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l = listener.into_raw_fd();
        let (r, w) = nix::unistd::pipe().unwrap();
        let w = w.into_raw_fd();
        let mut a = Adopter::default();
        assert!(matches!(
            a.adopt(w, Kind::Listener),
            Err(FdError::WrongKind { .. })
        ));
        let owned_l = a.adopt(l, Kind::Listener).unwrap();
        assert!(matches!(
            a.adopt(l, Kind::StatusPipe),
            Err(FdError::PassedTwice { .. })
        ));
        assert!(matches!(
            a.adopt(l, Kind::Listener),
            Err(FdError::PassedTwice { .. })
        ));
        let owned_w = a.adopt(w, Kind::StatusPipe).unwrap();
        assert!(matches!(
            a.adopt(1, Kind::StatusPipe),
            Err(FdError::StandardStream { .. })
        ));
        // A connected (not listening) socket is not a listener.
        let s = std::net::TcpStream::connect(
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap(),
        )
        .unwrap();
        let e = a.adopt(s.as_raw_fd(), Kind::Listener).unwrap_err();
        assert!(e.to_string().contains("not listening"), "{e}");
        drop((owned_l, owned_w, r));
    }
}
