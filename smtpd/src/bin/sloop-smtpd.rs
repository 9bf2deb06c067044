//! `sloop-smtpd`: one prefork SMTP worker, started by `sloopd` (see the library docs).
//!
//! `sloop-smtpd [-c FILE]`: loads and validates the config (invalid: exit 78, nothing is
//! served), loads the aliases (unusable: local recipients get 451), adopts
//! `SLOOP_LISTEN_FDS` and `SLOOP_STATUS_FD`, and runs the accept loop until `max_use`, a signal, or the supervisor going away.
//!
//! `sloop-smtpd [-c FILE] --inetd`: serves one session on standard input and output
//! (a socket from inetd, or pipes for dialogue tests) and exits. The client address is
//! the socket's peer; on a pipe it is `0.0.0.0`, which no default rule trusts.

use sloop_common::exitcode::{EX_CONFIG, EX_OSERR, EX_USAGE};
use sloop_common::pool_proto::{
    handoff_fd_from_env, listen_fds_from_env, status_fd_from_env, BadFdVar,
};
use sloop_smtpd::conn::Conn;
use sloop_smtpd::fds::FdError;
use sloop_smtpd::fds::{Adopter, Kind};
use sloop_smtpd::session::Policy;
use sloop_smtpd::watchdog::Watchdog;
use sloop_smtpd::worker::{StopFlags, Worker};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;

/// Why the worker cannot serve: the program's one funnel to an exit code.
#[derive(Debug)]
enum Failure {
    /// Started without the listening sockets `sloopd` passes.
    NoListeners,
    /// SLOOP_LISTEN_FDS or SLOOP_STATUS_FD is not a list of numbers.
    Environment(BadFdVar),
    /// An inherited descriptor failed its checks.
    Descriptor(FdError),
    /// A listening socket could not be made non-blocking.
    Listener {
        fd: i32,
        source: io::Error,
    },
    /// Standard input/output (`--inetd`) could not be used.
    Stdio(io::Error),
    Signals(io::Error),
    Watchdog(io::Error),
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::NoListeners => EX_USAGE,
            _ => EX_OSERR,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoListeners => f.write_str(
                "no listening sockets (SLOOP_LISTEN_FDS): sloop-smtpd is started by sloopd",
            ),
            Failure::Environment(e) => write!(f, "{e}"),
            Failure::Descriptor(e) => write!(f, "{e}"),
            Failure::Listener { fd, source } => write!(f, "listening socket {fd}: {source}"),
            Failure::Stdio(e) => write!(f, "standard streams: {e}"),
            Failure::Signals(e) => write!(f, "signals: {e}"),
            Failure::Watchdog(e) => write!(f, "watchdog thread: {e}"),
        }
    }
}

fn main() {
    sloop_common::secure_fs::restrict_umask();
    std::process::exit(run());
}

fn run() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inetd = args.iter().any(|a| a == "--inetd");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--inetd").collect();
    let cli = match rest.as_slice() {
        [] => None,
        [flag, file] if *flag == "-c" => Some(PathBuf::from(file)),
        _ => {
            eprintln!("usage: sloop-smtpd [-c FILE] [--inetd]  (started by sloopd)");
            return EX_USAGE;
        }
    };
    let path = sloop_common::config::resolve_path(cli.as_deref());
    let cfg = match sloop_common::Config::load_inherited(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sloop-smtpd: {e}");
            return EX_CONFIG;
        }
    };
    sloop_common::logging::init_with("sloop-smtpd", "smtpd", &cfg.log);
    std::panic::set_hook(Box::new(|info| {
        log::error!("panic: {}", info.to_string().replace('\n', " "));
    }));
    // A broken aliases file must not stop the port from answering (G1): local
    // recipients get 451 until it is fixed and the workers are restarted.
    // The TLS material is read (and its descriptor closed) before anything is served.
    let tls = match sloop_smtpd::tls::TlsContext::load(&cfg) {
        Ok(t) => t,
        Err(e) => {
            log::error!("{e}");
            return EX_CONFIG;
        }
    };
    let mut policy = match sloop_common::aliases::Aliases::from_config(&cfg) {
        Ok(a) => Policy::new(cfg, a),
        Err(e) => {
            let why = e.to_string().replace('\n', " ");
            log::error!("{why}; local recipients get 451 4.3.0 until it is fixed");
            Policy::without_aliases(cfg, e)
        }
    };
    policy.tls = tls;
    let result = if inetd {
        standalone(&policy)
    } else {
        start(policy)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    }
}

/// One session on stdin/stdout.
fn standalone(policy: &Policy) -> Result<(), Failure> {
    let mut conn = Conn::stdio().map_err(Failure::Stdio)?;
    let peer = nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(0)
        .ok()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let watchdog = Watchdog::spawn(policy.cfg.smtpd.watchdog_grace).map_err(Failure::Watchdog)?;
    sloop_smtpd::serve::serve(policy, &mut conn, peer, &watchdog);
    Ok(())
}

fn start(policy: Policy) -> Result<(), Failure> {
    let fds = listen_fds_from_env().map_err(Failure::Environment)?;
    if fds.is_empty() {
        return Err(Failure::NoListeners);
    }
    let mut adopter = Adopter::default();
    let mut listeners = Vec::new();
    for fd in fds {
        let owned = adopter
            .adopt(fd, Kind::Listener)
            .map_err(Failure::Descriptor)?;
        let l = TcpListener::from(owned);
        l.set_nonblocking(true)
            .map_err(|source| Failure::Listener { fd, source })?;
        listeners.push(l);
    }
    let status = match status_fd_from_env().map_err(Failure::Environment)? {
        Some(fd) => Some(std::fs::File::from(
            adopter
                .adopt(fd, Kind::StatusPipe)
                .map_err(Failure::Descriptor)?,
        )),
        None => None,
    };
    let handoff = match handoff_fd_from_env() {
        Some(fd) => Some(
            adopter
                .adopt(fd, Kind::HandoffSocket)
                .map_err(Failure::Descriptor)?,
        ),
        None => None,
    };
    let flags = StopFlags::register().map_err(Failure::Signals)?;
    sloop_smtpd::overload::install(&policy.cfg.server.run_dir).map_err(Failure::Signals)?;
    // The watchdog thread must not take the overload signal meant to break a read.
    let watchdog =
        sloop_smtpd::overload::without_signal(|| Watchdog::spawn(policy.cfg.smtpd.watchdog_grace))
            .map_err(Failure::Watchdog)?;
    Worker {
        policy,
        listeners,
        status,
        handoff,
        watchdog,
    }
    .run(&flags);
    Ok(())
}
