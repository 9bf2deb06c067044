//! The listening sockets `sloopd` holds for the smtpd pool (docs/architecture.md §1, §4).
//!
//! Every `smtpd.listen` address is bound by the supervisor before any child starts, with
//! `SO_REUSEADDR` and a deep backlog, so a port stays bound (and connections queue in
//! the kernel) while workers are restarted. The descriptors are close-on-exec except
//! while an smtpd worker is being spawned ([`Listeners::inheritable`]), so only smtpd
//! workers inherit them; their numbers reach the worker in `SLOOP_LISTEN_FDS`
//! (pool_proto.rs). On reload, [`Listeners::reconcile`] binds added addresses and closes
//! removed ones.
//!
//! What can go wrong: an address in use or not permitted (bind fails; at start-up the
//! caller refuses to start, on reload the old set is kept for that address and the
//! error is returned for logging).

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6,
};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Connections the kernel queues per listener while every worker is busy.
pub const BACKLOG: i32 = 1024;

/// A failure to bind one address.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub step: &'static str,
    pub source: nix::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {}: {} failed: {}",
            self.addr,
            self.step,
            self.source.desc()
        )
    }
}

impl std::error::Error for BindError {}

/// The bound listeners, in `smtpd.listen` order.
#[derive(Debug, Default)]
pub struct Listeners {
    bound: Vec<(SocketAddr, TcpListener)>,
}

impl Listeners {
    /// Binds every address; fails on the first that cannot be bound.
    pub fn bind_all(addrs: &[SocketAddr]) -> Result<Listeners, BindError> {
        let mut bound = Vec::with_capacity(addrs.len());
        for addr in addrs {
            bound.push((*addr, bind_one(*addr)?));
        }
        Ok(Listeners { bound })
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.bound.iter().map(|(a, _)| *a).collect()
    }

    /// The listening sockets.
    pub fn iter(&self) -> impl Iterator<Item = &TcpListener> {
        self.bound.iter().map(|(_, l)| l)
    }

    /// The descriptors as `SLOOP_LISTEN_FDS` wants them: `3,4`.
    pub fn fd_list(&self) -> String {
        let fds: Vec<String> = self
            .bound
            .iter()
            .map(|(_, l)| l.as_raw_fd().to_string())
            .collect();
        fds.join(",")
    }

    /// Makes the descriptors inheritable (or close-on-exec again).
    pub fn inheritable(&self, yes: bool) -> nix::Result<()> {
        for (_, l) in &self.bound {
            set_inheritable(l.as_raw_fd(), yes)?;
        }
        Ok(())
    }

    /// Moves to the address list `wanted`: keeps sockets already bound, binds new ones,
    /// closes the ones no longer listed. Returns the addresses that could not be bound.
    pub fn reconcile(&mut self, wanted: &[SocketAddr]) -> Vec<BindError> {
        let mut old = std::mem::take(&mut self.bound);
        let mut errors = Vec::new();
        for addr in wanted {
            if let Some(i) = old.iter().position(|(a, _)| a == addr) {
                self.bound.push(old.swap_remove(i));
                continue;
            }
            match bind_one(*addr) {
                Ok(l) => self.bound.push((*addr, l)),
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Closes every listener (on shutdown: stop accepting new connections here).
    pub fn close_all(&mut self) {
        self.bound.clear();
    }
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
pub fn set_inheritable(fd: RawFd, yes: bool) -> nix::Result<()> {
    let flags = if yes {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(|_| ())
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |step: &'static str| move |source| BindError { addr, step, source };
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd =
        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(err("socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err("setsockopt(SO_REUSEADDR)"))?;
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(err("setsockopt(V6ONLY)"))?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))
        }
    }
    .map_err(err("bind"))?;
    let backlog = Backlog::new(BACKLOG).map_err(err("listen"))?;
    listen(&fd, backlog).map_err(err("listen"))?;
    let l = TcpListener::from(fd);
    // Workers and the busy acceptor (acceptor.rs) all accept from it: never block.
    l.set_nonblocking(true).map_err(|e| {
        err("fcntl(O_NONBLOCK)")(nix::Error::from_raw(e.raw_os_error().unwrap_or(0)))
    })?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::net::TcpStream;

    fn cloexec(fd: RawFd) -> bool {
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn binds_accepts_and_toggles_inheritance() {
        let l = Listeners::bind_all(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let fd = l.bound[0].1.as_raw_fd();
        assert_eq!(l.fd_list(), fd.to_string());
        assert!(
            cloexec(fd),
            "close-on-exec unless a worker is being spawned"
        );
        l.inheritable(true).unwrap();
        assert!(!cloexec(fd));
        l.inheritable(false).unwrap();
        assert!(cloexec(fd));
        let port = l.bound[0].1.local_addr().unwrap().port();
        TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn a_port_in_use_is_reported_with_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = Listeners::bind_all(&[addr]).unwrap_err();
        assert_eq!(e.addr, addr);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn reconcile_keeps_binds_and_closes() {
        // A free port, bound again at once; another test may take it in between, so
        // a few tries.
        let (a_addr, mut l) = (0..20)
            .find_map(|_| {
                let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let a_addr = a.local_addr().unwrap();
                drop(a);
                Listeners::bind_all(&[a_addr]).ok().map(|l| (a_addr, l))
            })
            .expect("a free port within 20 tries");
        let kept_fd = l.bound[0].1.as_raw_fd();
        let b_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(l.reconcile(&[b_addr, a_addr]).is_empty());
        assert_eq!(l.addrs(), vec![b_addr, a_addr]);
        assert_eq!(l.bound[1].1.as_raw_fd(), kept_fd);
        assert!(l.reconcile(&[b_addr]).is_empty());
        assert_eq!(l.addrs(), vec![b_addr]);
        assert!(
            TcpStream::connect(a_addr).is_err(),
            "removed address closed"
        );
    }
}
